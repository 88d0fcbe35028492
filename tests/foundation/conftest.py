"""Shared helpers for the foundation tests (config, vector format, store, spec, importers)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from persona_steer.config import PROJECT_ROOT
from persona_steer.vector_format import SteeringVector

CLI = Path(sys.executable).parent / "persona-steer"
if not CLI.exists():
    CLI = PROJECT_ROOT / ".venv" / "bin" / "persona-steer"


def make_vec(kind: str = "persona", name: str = "pirate", layers=(1, 2), hidden: int = 8,
             seed: int = 0, model: str = "test/model", **kw) -> SteeringVector:
    g = torch.Generator().manual_seed(seed)
    per_layer = {layer: torch.randn(hidden, generator=g) for layer in layers}
    kw.setdefault("description", f"{name} test vector")
    return SteeringVector.build(kind, name, per_layer, model=model, **kw)


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None,
            timeout: int = 120) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith("PERSONA_STEER_")}  # no stray overrides from the caller
    full_env.update(env or {})
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, env=full_env,
                          cwd=str(cwd or PROJECT_ROOT), timeout=timeout)


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """The tiny random Qwen3, built once into the project cache (shared with builtin:tiny)."""
    from persona_steer.testmodels import build_random_qwen3
    return build_random_qwen3(PROJECT_ROOT / ".cache" / "models" / "tiny", "tiny", 0)
