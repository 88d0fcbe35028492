"""Why the engine could not start, as one line that names the config key to change.

vLLM's start errors are long (a pydantic dump, a hint about env vars); an operator needs the
cause and the setting. `explain(err, settings)` gives both; unknown errors keep their first line
and point at the model section.
"""
from __future__ import annotations

import re
from typing import Callable, Optional

from persona_steer.config import ConfigError, Settings

MAX_LINE = 400


def _too_long(err: str, s: Settings) -> Optional[str]:
    m = re.search(r"max_model_len \((\d+)\) is greater than the derived max_model_len "
                  r"\((?:max_position_embeddings=)?([\d.]+|None)", err)
    if not m:
        return None
    own = m.group(2)
    own = str(int(float(own))) if own not in ("None",) else "its own length"
    return (f"model.max_model_len={m.group(1)} is longer than the model's context ({own} "
            f"tokens): set model.max_model_len to at most {own}, or to null for the model's own")


def _kv_cache(err: str, s: Settings) -> Optional[str]:
    if "KV cache" not in err or "max seq len" not in err and "memory" not in err:
        return None
    return ("the KV cache cannot hold one sequence of model.max_model_len tokens: lower "
            "model.max_model_len, or give the cache more memory (model.kv_cache_gib on CPU, "
            "model.gpu_memory_utilization on GPU)")


def _core_failed(err: str, s: Settings) -> Optional[str]:
    if "Engine core initialization failed" not in err:
        return None
    return ("the engine core process failed while loading the model (its own error is in the "
            "log above): check model.name, model.dtype, model.max_model_len and memory "
            "(model.kv_cache_gib on CPU, model.gpu_memory_utilization on GPU)")


def _model_missing(err: str, s: Settings) -> Optional[str]:
    hints = ("Repo id must be", "does not appear to have", "is not a local folder",
             "No such file", "not found", "model_type", "model type", "Unrecognized model",
             "not supported", "404 Client Error", "Can't load")
    if not any(h in err for h in hints):
        return None
    return f"cannot load model.name={s.model.name!r}: {_first_line(err)}"


def _dtype(err: str, s: Settings) -> Optional[str]:
    if "dtype" not in err.lower():
        return None
    return f"model.dtype={s.model.dtype!r} cannot be used here: {_first_line(err)}"


RULES: list[Callable[[str, Settings], Optional[str]]] = [
    _too_long, _kv_cache, _core_failed, _dtype, _model_missing]


def _first_line(text: str) -> str:
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    # pydantic's "1 validation error for X" header says nothing; the next line does
    if len(lines) > 1 and re.match(r"\d+ validation errors? for", lines[0]):
        lines = lines[1:]
    line = re.sub(r"^Value error, ", "", lines[0]) if lines else ""
    return line if len(line) <= MAX_LINE else line[:MAX_LINE - 3] + "..."


def explain(err: BaseException, settings: Settings) -> str:
    """One line: what failed and which key to change."""
    text = str(err) or type(err).__name__
    if isinstance(err, ConfigError):    # our own start checks already name the key
        return _first_line(text)
    for rule in RULES:
        line = rule(text, settings)
        if line:
            return line
    return (f"{type(err).__name__}: {_first_line(text)} (check the model section of the "
            f"config: model.name={settings.model.name!r})")
