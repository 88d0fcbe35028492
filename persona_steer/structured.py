"""Structured output for a JSON schema as compact JSON (no free whitespace between tokens).

vLLM's `disable_any_whitespace` is engine-wide and cannot be set per request; with free
whitespace a weak model can loop on spaces and newlines and never finish the JSON within its
max_tokens (a judge's verdict then never parses). Used by the server's `response_format:
json_schema` and by extraction's vLLM rollouts.
"""
from __future__ import annotations

import json


def json_schema_constraint(schema: dict):
    """vLLM StructuredOutputsParams for `schema`: an xgrammar grammar without free whitespace,
    or, when xgrammar is missing or does not support the schema (vLLM's own check, which would
    pick another backend for it), the schema itself (vLLM then picks; whitespace allowed)."""
    from vllm.sampling_params import StructuredOutputsParams
    try:
        import xgrammar
        from vllm.v1.structured_output.backend_xgrammar import \
            has_xgrammar_unsupported_json_features
        if has_xgrammar_unsupported_json_features(schema):
            return StructuredOutputsParams(json=schema)
        grammar = xgrammar.Grammar.from_json_schema(json.dumps(schema), any_whitespace=False)
        return StructuredOutputsParams(grammar=str(grammar))
    except Exception:   # noqa: BLE001 - any failure: the plain schema, as before
        return StructuredOutputsParams(json=schema)
