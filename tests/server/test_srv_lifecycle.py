"""The process's life against real servers of its own: the engine core killed mid-stream (the
stream ends with engine_dead, /health says dead, the process exits 1), SIGTERM with streams in
flight (new requests and /health 503 'stopping', a short stream finishes, one past
server.shutdown_grace_s ends with an error event and [DONE], exit 0), and model.max_model_len
taken from the model when the config leaves it out (docs/operations.md)."""
from __future__ import annotations

import json
import os
import signal
import threading
import time

import httpx
import psutil
import pytest

from tests.conftest import live_server

EXIT_BOUND_S = 120       # how long a stopping server may take to be gone (engine shutdown included)
LONG = {"max_tokens": 4000, "ignore_eos": True, "temperature": 0}


class Stream:
    """One streamed chat completion read in a thread: .events (parsed JSON, or "[DONE]")."""

    def __init__(self, srv, **fields):
        self.srv, self.events, self.status = srv, [], None
        self.first = threading.Event()
        self.body = {"messages": [{"role": "user", "content": "Tell me a long story."}],
                     "stream": True, **fields}
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        headers = {"Authorization": f"Bearer {self.srv.api_key}"} if self.srv.api_key else {}
        try:
            with httpx.stream("POST", self.srv.url + "/v1/chat/completions", json=self.body,
                              headers=headers, timeout=300) as r:
                self.status = r.status_code
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        data = line[6:]
                        self.events.append(data if data == "[DONE]" else json.loads(data))
                        self.first.set()
        except httpx.HTTPError as err:      # a cut connection: what must not happen
            self.events.append(f"transport error: {err!r}")
        finally:
            self.first.set()

    def join(self):
        self.thread.join(timeout=EXIT_BOUND_S)
        assert not self.thread.is_alive(), "the stream never ended"
        return self.events

    @property
    def text(self) -> str:
        return "".join(c["choices"][0]["delta"].get("content") or ""
                       for c in self.events if isinstance(c, dict) and c.get("choices"))


def engine_core(pid: int) -> psutil.Process:
    for child in psutil.Process(pid).children(recursive=True):
        with_title = " ".join([child.name()] + child.cmdline())
        if "EngineCore" in with_title:
            return child
    raise AssertionError("no EngineCore process under the server")


def health_until(srv, status: str) -> dict | None:
    """/health polled until its status is `status` (the body), or the process is gone (None)."""
    while srv.proc.poll() is None:
        try:
            r = httpx.get(srv.url + "/health", timeout=5)
        except httpx.TransportError:     # closing its port: it is about to be gone
            time.sleep(0.05)
            continue
        if r.json().get("status") == status:
            assert r.status_code == 503
            return r.json()
    return None


@pytest.fixture(scope="module")
def auto_len_server(tmp_path_factory, tiny_model):
    """model.max_model_len: null, the shipped default (the tiny model's own context is 4096)."""
    with live_server(tmp_path_factory.mktemp("auto-len"), tiny_model,
                     {"model": {"max_model_len": None}}) as live:
        yield live


def test_max_model_len_defaults_to_the_models_own(auto_len_server):
    srv = auto_len_server
    assert srv.get("/api/status").json()["max_model_len"] == 4096
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5000}
    r = srv.post("/v1/chat/completions", json=body)
    assert r.status_code == 400 and "context length 4096" in r.json()["error"]["message"]
    # a prompt longer than the old default (2048) is served
    r = srv.post("/v1/completions", json={"prompt": [7] * 3000, "max_tokens": 1})
    assert r.status_code == 200 and r.json()["usage"]["prompt_tokens"] == 3000, r.text


def test_killed_engine_core_ends_streams_and_the_process(auto_len_server):
    srv = auto_len_server
    streams = [Stream(srv, **LONG), Stream(srv, **{**LONG, "temperature": 1.0, "seed": 3})]
    for stream in streams:
        assert stream.first.wait(120) and stream.status == 200, stream.events
    engine_core(srv.pid).kill()
    for stream in streams:
        events = stream.join()
        assert events[-1] == "[DONE]", events[-3:]
        error = events[-2]
        assert set(error) == {"error"} and error["error"]["code"] == "engine_dead", error
        assert "supervisor" in error["error"]["message"]
    dead = health_until(srv, "dead")             # None if it exited before a probe saw it
    if dead is not None:
        assert dead["engine"] == "dead" and dead["error"]["code"] == "engine_dead"
        try:                                     # no new work is let in meanwhile
            r = srv.post("/v1/chat/completions", json={"messages": [{"role": "user",
                                                                     "content": "hi"}]})
            assert r.status_code == 503 and r.json()["error"]["code"] == "engine_dead"
        except httpx.TransportError:
            pass                                 # already gone
    assert srv.proc.wait(timeout=EXIT_BOUND_S) == 1
    assert "error: engine dead:" in srv.log_tail(20)


@pytest.fixture(scope="module")
def grace_server(tmp_path_factory, tiny_model):
    with live_server(tmp_path_factory.mktemp("grace"), tiny_model,
                     {"server": {"shutdown_grace_s": 5, "api_key": "k-grace"},
                      "model": {"max_model_len": None}}) as live:
        yield live


def test_sigterm_drains_then_exits_0(grace_server):
    srv = grace_server
    auth = {"Authorization": "Bearer k-grace"}
    long = Stream(srv, **LONG)
    short = Stream(srv, max_tokens=8, ignore_eos=True, temperature=0)
    assert long.first.wait(120) and short.first.wait(120)
    os.kill(srv.pid, signal.SIGTERM)       # the server process only, as Kubernetes and KillMode=mixed do
    stopping = health_until(srv, "stopping")
    assert stopping is not None and stopping["error"]["code"] == "server_stopping"
    refused = httpx.post(srv.url + "/v1/chat/completions", headers=auth, timeout=30,
                         json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "server_stopping"
    # the short stream ran to its own end
    events = short.join()
    assert events[-1] == "[DONE]" and events[-2]["choices"][0]["finish_reason"] == "length"
    # the long one was still running at the grace bound: an error event, then [DONE]
    events = long.join()
    assert events[-1] == "[DONE]", events[-3:]
    assert events[-2]["error"]["code"] == "server_shutting_down", events[-2]
    assert "server.shutdown_grace_s" in events[-2]["error"]["message"]
    assert len(long.text) > 0 and not any(isinstance(e, str) and e.startswith("transport")
                                          for e in events)
    assert srv.proc.wait(timeout=EXIT_BOUND_S) == 0, srv.log_tail()
