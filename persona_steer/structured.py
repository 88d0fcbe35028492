"""The one JSON-schema constraint for structured outputs, used by the server's response_format
and by in-process extraction (persona prompts from a description, rollout judging)."""
from __future__ import annotations

import json


def json_schema_constraint(schema: dict):
    """vLLM StructuredOutputsParams for a JSON schema without free whitespace between tokens.
    The engine-wide `disable_any_whitespace` cannot be set per request, and a small model that
    loops on whitespace would otherwise spend its whole token budget before the JSON closes
    (compact JSON is what OpenAI's structured outputs give as well)."""
    from vllm.sampling_params import StructuredOutputsParams
    try:
        import xgrammar
        grammar = xgrammar.Grammar.from_json_schema(json.dumps(schema), any_whitespace=False)
        return StructuredOutputsParams(grammar=str(grammar))
    except Exception:   # xgrammar missing or schema unsupported: let vLLM pick a backend
        return StructuredOutputsParams(json=schema)
