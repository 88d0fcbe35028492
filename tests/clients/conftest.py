"""Helpers for the client/CLI tests: the live server (the session fixture of tests/conftest.py),
running the CLI as a subprocess, and making uploadable vectors for the served model."""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from persona_steer.config import PROJECT_ROOT
from persona_steer.vector_format import SteeringVector

CLI = Path(sys.executable).parent / "persona-steer"
if not CLI.exists():
    CLI = PROJECT_ROOT / ".venv" / "bin" / "persona-steer"


@dataclass
class Live:
    url: str
    api_key: str | None = None


@pytest.fixture(scope="session")
def live(request) -> Live:
    """The session's real server (tests/conftest.py), with its seeded personas and trait.

    PERSONA_STEER_TEST_SERVER=<url> reuses an already running real server instead (handy while
    developing; its store must hold the same seeded vectors as `steer_vectors`)."""
    url = os.environ.get("PERSONA_STEER_TEST_SERVER")
    if url:
        return Live(url.rstrip("/"), os.environ.get("PERSONA_STEER_TEST_API_KEY") or None)
    server = request.getfixturevalue("server")
    request.getfixturevalue("steer_vectors")
    return Live(server.base_url.rstrip("/"), server.api_key)


@pytest.fixture(scope="session")
def client(live):
    from clients.client import PersonaSteerClient
    with PersonaSteerClient(live.url, api_key=live.api_key) as c:
        yield c


def cli_env(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERSONA_STEER_")}
    env.update({"NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "200"})
    env.update(extra or {})
    return env


def run_cli(live: Live, *args: str, input: str | None = None, url: bool = True,
            timeout: int = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [str(CLI), *args]
    if url:
        cmd += ["--url", live.url]
        if live.api_key:
            cmd += ["--api-key", live.api_key]
    return subprocess.run(cmd, capture_output=True, text=True, env=cli_env(env), input=input,
                          cwd=str(PROJECT_ROOT), timeout=timeout)


def vector_bytes(client, kind: str, name: str, seed: int = 0, scale: float = 0.5,
                 metadata: dict | None = None) -> bytes:
    """A random vector that fits the served model (hidden size, layers, model id)."""
    st = client.status()
    g = torch.Generator().manual_seed(seed)
    layers = st.get("steerable_layers") or list(range(st["num_layers"]))
    per_layer = {int(l): torch.randn(st["hidden_size"], generator=g) * scale for l in layers}
    vec = SteeringVector.build(kind, name, per_layer, model=st["model"],
                               description=f"{name}: uploaded by the client tests",
                               metadata=metadata)
    return vec.to_bytes()
