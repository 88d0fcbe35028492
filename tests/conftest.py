"""Shared session fixtures: ONE real server per test session, reused by every area.

Fixtures
  tiny_model      path of the tiny random Qwen3 (built once into .cache/models/tiny).
  server          the live server: `persona-steer --config <tmp>/config.yaml serve` started as a
                  subprocess on 127.0.0.1:<free port> with the tiny model, a temporary vector
                  store and jobs folder. Yields a `LiveServer`:
                    .base_url / .url   "http://127.0.0.1:<port>"
                    .config_path       the temp config.yaml it runs with
                    .vectors_dir       its vector store (write safetensors here or use the API)
                    .jobs_dir, .datasets_dir, .log_path, .model_id (= the tiny model's path),
                    .api_key (None: the key is off by default), .startup_health (what /health
                    answered while the engine was starting), .pid
                    .get/.post/... are httpx shortcuts on the base URL.
                  Extraction jobs run small (4 questions, 16 new tokens) to keep tests fast;
                  paths.cache is a fresh temp folder (no extraction checkpoints reused).
                  Killed (whole process group) at the end of the session.
  steer_vectors   puts random persona/trait vectors that fit the served model into its store:
                  personas "alpha" (all layers), "beta" (layers 1,2), "gamma" (layer 2);
                  trait "calm" (layers 1,2). Don't delete or overwrite these; make your own
                  with `make_vector(...)` for tests that change the store.
  (autouse)       the repository's own vector store (vectors/) is the same after the session
                  as before it: tests write to temporary stores only.
Helpers
  make_vector(kind, name, model_id, layers, seed, norm) -> SteeringVector (seeded random rows).
  set_api_key(server, key)  rotate a live server's API key (config edit + SIGHUP), None turns it off.
  live_server(root, model, overrides=None)  context manager: another server configured like
                  `server`, on another model and/or with config overrides ({"server":
                  {"shutdown_grace_s": 5}}), for tests that need an engine of their own.
  spawn_server(root, model, overrides=None)  the same, started and not waited for (tests of
                  servers that fail to start).
Attaching: with $PERSONA_STEER_TEST_ATTACH (a LiveServer as JSON, `LiveServer.to_json()`) the
`server` fixture reuses that running server instead of starting one: the SDK contract tests run
again under the other openai major that way (tests/clients/test_sdk_majors.py).
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import httpx
import pytest
import torch
import yaml

from persona_steer.config import PROJECT_ROOT
from persona_steer.vector_format import SteeringVector

TINY_HIDDEN, TINY_LAYERS = 256, 4
STARTUP_TIMEOUT_S = 420
ATTACH_ENV = "PERSONA_STEER_TEST_ATTACH"


# Fixtures that start a vLLM engine, or a server on one, or hand one out. A test that uses any
# of them, directly or through another fixture, is marked `engine` at collection, so
# `make test-fast` (`-m "not engine"`) leaves it out. `live` reaches `server` through
# request.getfixturevalue, which the fixture closure does not see, so it is named here too.
# A test that starts an engine in its own body marks itself (`pytestmark = pytest.mark.engine`).
ENGINE_FIXTURES = frozenset({
    "server", "steer_vectors", "live",                       # tests/conftest.py, tests/clients
    "defaults_server", "disk_server", "auto_len_server",     # tests/server
    "grace_server", "w4a16_server",
    "plugin_env", "stock_llm",                               # tests/plugin
    "ext_llm",                                               # tests/extraction
    "toy_server", "first_run",                               # tests/toy
})


@pytest.hookimpl(tryfirst=True)     # before pytest's own -m filter reads the markers
def pytest_collection_modifyitems(config, items):
    for item in items:
        if ENGINE_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.engine)


def _store_snapshot(root: Path) -> list[tuple[str, int, int]]:
    return sorted((str(f.relative_to(root)), f.stat().st_size, f.stat().st_mtime_ns)
                  for f in root.rglob("*") if f.is_file()) if root.exists() else []


@pytest.fixture(scope="session", autouse=True)
def repo_store_untouched():
    """A test that writes into the repository's vectors/ (say, a server started on the repo's
    config) would leave files a user's `make serve` then serves; fail the session instead."""
    root = PROJECT_ROOT / "vectors"
    before = _store_snapshot(root)
    yield
    after = _store_snapshot(root)
    assert after == before, f"tests changed {root}: {sorted(set(after) ^ set(before))[:10]}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_vector(kind: str, name: str, model_id: str, layers: list[int], seed: int,
                norm: float = 4.0, hidden: int = TINY_HIDDEN,
                description: str = "") -> SteeringVector:
    g = torch.Generator().manual_seed(seed)
    rows = {}
    for layer in layers:
        v = torch.randn(hidden, generator=g)
        rows[layer] = v / v.norm() * norm
    return SteeringVector.build(kind, name, rows, model=model_id,
                                description=description or f"random test {kind} {name}",
                                metadata={"method": "random (tests)", "seed": seed})


@dataclass
class LiveServer:
    base_url: str
    config_path: Path
    vectors_dir: Path
    jobs_dir: Path
    datasets_dir: Path
    log_path: Path
    model_id: str
    proc: subprocess.Popen | None     # None when attached to another test run's server
    api_key: str | None = None
    startup_health: list = field(default_factory=list)   # [(status, json)] seen while starting

    _PATHS = ("config_path", "vectors_dir", "jobs_dir", "datasets_dir", "log_path")

    def to_json(self) -> str:
        data = {k: getattr(self, k) for k in ("base_url", "model_id", "api_key", *self._PATHS)}
        return json.dumps({k: str(v) if k in self._PATHS else v for k, v in data.items()})

    @classmethod
    def from_json(cls, text: str) -> "LiveServer":
        data = json.loads(text)
        return cls(**{k: Path(v) if k in cls._PATHS else v for k, v in data.items()}, proc=None)

    @property
    def url(self) -> str:
        return self.base_url

    @property
    def pid(self) -> int:
        return self.proc.pid

    def client(self, **kw) -> httpx.Client:
        kw.setdefault("timeout", 300)
        return httpx.Client(base_url=self.base_url, **kw)

    def get(self, path, **kw):
        with self.client() as c:
            return c.get(path, **kw)

    def post(self, path, **kw):
        with self.client() as c:
            return c.post(path, **kw)

    def put(self, path, **kw):
        with self.client() as c:
            return c.put(path, **kw)

    def delete(self, path, **kw):
        with self.client() as c:
            return c.delete(path, **kw)

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"


@pytest.fixture(scope="session")
def tiny_model() -> str:
    from persona_steer.testmodels import build_random_qwen3
    return str(build_random_qwen3(PROJECT_ROOT / ".cache" / "models" / "tiny", "tiny"))


def _cli() -> list[str]:
    exe = Path(sys.executable).parent / "persona-steer"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "persona_steer.cli"]


def write_server_config(root: Path, model: str, overrides: dict | None = None) -> dict:
    """<root>/config.yaml for a test server: `model`, a free port, temp stores under root;
    `overrides` ({"server": {"api_key": "k"}, ...}) are merged in. Returns the config."""
    port = free_port()
    cfg = {
        "model": {"name": model, "kv_cache_gib": 1, "max_num_seqs": 64,
                  "max_model_len": 2048, "dtype": "float32"},
        "server": {"host": "127.0.0.1", "port": port, "api_key": None,
                   "cors_origins": ["*"], "max_body_bytes": 1048576},
        "extraction": {"num_questions": 4, "max_new_tokens": 16, "batch_size": 8},
        "paths": {"vectors": str(root / "vectors"), "jobs": str(root / "jobs"),
                  "datasets": str(root / "datasets"), "cache": str(root / "cache")},
    }
    for section, values in (overrides or {}).items():
        cfg.setdefault(section, {}).update(values)
    (root / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    (root / "vectors" / "personas").mkdir(parents=True)
    (root / "vectors" / "traits").mkdir(parents=True)
    return cfg


def server_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERSONA_STEER_")}
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    return env


def spawn_server(root: Path, model: str, overrides: dict | None = None,
                 command: list[str] | None = None) -> LiveServer:
    """Start (don't wait for) `persona-steer --config <root>/config.yaml serve` configured by
    `write_server_config`. Its stdout and stderr go to .log_path. `command`: another way to
    start it, given the config's path as `--config` after it (e.g. `python -m server`)."""
    cfg = write_server_config(root, model, overrides)
    config_path, port = root / "config.yaml", cfg["server"]["port"]
    log_path = root / "server.log"
    with open(log_path, "wb") as log:
        argv = (_cli() + ["--config", str(config_path), "serve"] if command is None
                else [*command, "--config", str(config_path)])
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=server_env(),
                                cwd=str(PROJECT_ROOT), start_new_session=True)
    return LiveServer(f"http://127.0.0.1:{port}", config_path, root / "vectors", root / "jobs",
                      root / "datasets", log_path, model, proc,
                      api_key=cfg["server"].get("api_key"))


@contextlib.contextmanager
def live_server(root: Path, model: str, overrides: dict | None = None,
                command: list[str] | None = None) -> Iterator[LiveServer]:
    """`spawn_server(...)`, then wait until /health is 200 and yield; stopped at the end."""
    live = spawn_server(root, model, overrides, command)
    proc = live.proc
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}:\n{live.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not healthy after {STARTUP_TIMEOUT_S}s:\n"
                                   f"{live.log_tail()}")
            try:
                r = httpx.get(live.base_url + "/health", timeout=5)
                body = r.json() if r.headers.get("content-type", "").startswith(
                    "application/json") else r.text
                live.startup_health.append((r.status_code, body))
                if r.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        yield live
    finally:
        _stop(proc)


@pytest.fixture(scope="session")
def server(tmp_path_factory, tiny_model) -> LiveServer:
    if os.environ.get(ATTACH_ENV):
        yield LiveServer.from_json(os.environ[ATTACH_ENV])
        return
    with live_server(tmp_path_factory.mktemp("server"), tiny_model) as live:
        yield live


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)   # engine core / workers in the same group
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


def set_api_key(server: LiveServer, key: str | None) -> None:
    """Rotate a running server's key as an operator does: edit its config, send SIGHUP, and wait
    until /api/status says the key is (or is not) in force."""
    cfg = yaml.safe_load(server.config_path.read_text())
    cfg["server"]["api_key"] = key
    server.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    os.kill(server.pid, signal.SIGHUP)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if httpx.get(server.base_url + "/api/status", timeout=10,
                     headers={"Authorization": f"Bearer {key}"} if key else {}
                     ).json().get("auth") == (key is not None):
            return
        time.sleep(0.2)
    raise AssertionError("key reload not applied")


STEER_PERSONAS = {"alpha": ([0, 1, 2, 3], 11), "beta": ([1, 2], 12), "gamma": ([2], 13)}
STEER_TRAITS = {"calm": ([1, 2], 21)}


@pytest.fixture(scope="session")
def steer_vectors(server) -> dict:
    """Random vectors in the live server's store (see module docstring). Returns their names."""
    from persona_steer.store import VectorStore
    store = VectorStore(server.vectors_dir)
    for name, (layers, seed) in STEER_PERSONAS.items():
        if not store.exists("persona", name):
            store.save(make_vector("persona", name, server.model_id, layers, seed))
    for name, (layers, seed) in STEER_TRAITS.items():
        if not store.exists("trait", name):
            store.save(make_vector("trait", name, server.model_id, layers, seed))
    return {"personas": sorted(STEER_PERSONAS), "traits": sorted(STEER_TRAITS)}
