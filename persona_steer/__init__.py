"""persona-steer: per-request persona steering for an OpenAI-compatible vLLM server.

The Python API (persona_steer.api, documented there): `extract_persona`, `save_vector`,
`steer` (a context manager for transformers models), `load_hf_model`, and `load_config`.
They are imported on first use, so `import persona_steer` stays light.
"""
from __future__ import annotations

import importlib
from typing import Any

_API = {"extract_persona": "persona_steer.api", "save_vector": "persona_steer.api",
        "steer": "persona_steer.api", "load_hf_model": "persona_steer.api",
        "load_config": "persona_steer.config"}
__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'persona_steer' has no attribute '{name}'")
