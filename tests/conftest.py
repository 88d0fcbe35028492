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
                  servers that fail to start, or several servers started at once);
                  wait_healthy(live) then waits for one, live.process.stop() stops one.
Attaching: with $PERSONA_STEER_TEST_ATTACH (a LiveServer as JSON, `LiveServer.to_json()`) the
`server` fixture reuses that running server instead of starting one: the SDK contract tests run
again under the other openai major that way (tests/clients/test_sdk_majors.py).
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import httpx
import pytest
import torch
import yaml

from persona_steer import server_process
from persona_steer.config import PROJECT_ROOT
from persona_steer.server_process import cli_command as _cli, free_port, server_env  # noqa: F401
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
    "toy_server", "first_run", "toy_monitor_server",         # tests/toy
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

    @property
    def process(self) -> server_process.ServerProcess:
        return server_process.ServerProcess(self.proc, self.base_url, self.log_path)

    def log_tail(self, n: int = 60) -> str:
        return self.process.log_tail(n)


@pytest.fixture(scope="session")
def tiny_model() -> str:
    from persona_steer.testmodels import build_random_qwen3
    return str(build_random_qwen3(PROJECT_ROOT / ".cache" / "models" / "tiny", "tiny"))


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


def spawn_server(root: Path, model: str, overrides: dict | None = None,
                 command: list[str] | None = None) -> LiveServer:
    """Start (don't wait for) `persona-steer --config <root>/config.yaml serve` configured by
    `write_server_config` (persona_steer.server_process.spawn). Its stdout and stderr go to
    .log_path. `command`: another way to start it, given the config's path as `--config` after
    it (e.g. `python -m server`)."""
    cfg = write_server_config(root, model, overrides)
    url = f"http://127.0.0.1:{cfg['server']['port']}"
    launched = server_process.spawn(root / "config.yaml", url, root / "server.log",
                                    command=command)
    return LiveServer(url, root / "config.yaml", root / "vectors", root / "jobs",
                      root / "datasets", launched.log_path, model, launched.proc,
                      api_key=cfg["server"].get("api_key"))


@contextlib.contextmanager
def live_server(root: Path, model: str, overrides: dict | None = None,
                command: list[str] | None = None) -> Iterator[LiveServer]:
    """`spawn_server(...)`, then wait until /health is 200 and yield; stopped at the end."""
    live = spawn_server(root, model, overrides, command)
    try:
        wait_healthy(live)
        yield live
    finally:
        live.process.stop()


def wait_healthy(live: LiveServer, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
    """Wait until a spawned server's /health is 200 (what it answered meanwhile goes to
    .startup_health); raises with its log's tail if it exits or is not healthy in time. Spawn
    several with `spawn_server` first to start them at once."""
    live.process.wait_healthy(timeout_s,
                              on_answer=lambda *answer: live.startup_health.append(answer))


@pytest.fixture(scope="session")
def server(tmp_path_factory, tiny_model) -> LiveServer:
    if os.environ.get(ATTACH_ENV):
        yield LiveServer.from_json(os.environ[ATTACH_ENV])
        return
    with live_server(tmp_path_factory.mktemp("server"), tiny_model) as live:
        yield live


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
