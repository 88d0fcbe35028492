"""Two server replicas on the toy model, sharing one vector store, behind Debian's nginx running
deploy/nginx.conf (rendered for this test's loopback ports: tests/nginx_balancer.py).

The replicas start in parallel, once for the module (each start is minutes on a loaded
machine). What is checked: SSE events pass through nginx as they are made, a persona uploaded through the balancer steers the same on both replicas, a scale change
and an unload made through the balancer reach both (persona_steer/shared_state.py), and killing
one replica mid-stream fails only the streams it was serving (the client's read ends with an
error, no [DONE]) while the survivor's streams finish and new requests go to the survivor.
The kill is the last test: it leaves one replica.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import time

import httpx
import pytest

from persona_steer.shared_state import POLL_S
from persona_steer.toy_demo import demo_dir
from tests.conftest import free_port, spawn_server, wait_healthy
from tests.nginx_balancer import UPSTREAM_HEADER, nginx_binary, running_nginx

pytestmark = [pytest.mark.engine,
              pytest.mark.skipif(nginx_binary() is None, reason="nginx is not installed "
                                 "(scripts/setup.sh installs it)")]

MODEL = "builtin:toy-persona"
FOLLOW_BOUND_S = POLL_S + 10   # the documented bound, plus slack for a loaded machine
PROMPT = [{"role": "user", "content": "Tell me about the sea."}]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("replicas")
    shared = root / "shared-vectors"
    overrides = {"paths": {"vectors": str(shared)},          # one store for both
                 "model": {"name": MODEL, "kv_cache_gib": 1, "max_num_seqs": 8,
                           "max_model_len": 2048, "dtype": "float32"}}
    replicas = {}
    try:
        for name in ("steer-a", "steer-b"):                  # started together ...
            (root / name).mkdir()
            replicas[name] = spawn_server(root / name, MODEL, overrides)
        for live in replicas.values():                       # ... then waited for
            wait_healthy(live)
        ports = {name: int(live.base_url.rsplit(":", 1)[1]) for name, live in replicas.items()}
        with running_nginx(root / "nginx", ports, free_port()) as lb_url:
            yield {"lb": lb_url, "replicas": replicas, "root": root,
                   "by_port": {p: n for n, p in ports.items()}}
    finally:
        for live in replicas.values():
            live.process.stop()


def served_by(cluster, response: httpx.Response) -> str:
    """The replica that answered (the last upstream nginx tried)."""
    last = response.headers[UPSTREAM_HEADER].split(",")[-1].strip()
    return cluster["by_port"][int(last.rsplit(":", 1)[1])]


def chat(url: str, **extra) -> dict:
    body = {"model": MODEL, "messages": PROMPT, "max_tokens": 24, "temperature": 0, **extra}
    r = httpx.post(url + "/v1/chat/completions", json=body, timeout=300)
    assert r.status_code == 200, r.text
    return r.json()


def wait_for(check, what: str, bound_s: float = FOLLOW_BOUND_S):
    deadline = time.monotonic() + bound_s
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {bound_s}s")
        time.sleep(0.1)


def stream_body(max_tokens: int) -> dict:
    return {"model": MODEL, "messages": PROMPT, "max_tokens": max_tokens, "stream": True,
            "temperature": 0, "ignore_eos": True}


def test_sse_streams_pass_through_unbuffered(cluster):
    """Events reach the client as the replica makes them: the first one arrives while the
    replica is still generating the reply, and the rest come in many separate reads, not in a
    few large ones."""
    running_at_first = None
    events_per_read: list[int] = []
    with httpx.Client(timeout=300) as c, c.stream("POST", cluster["lb"] + "/v1/chat/completions",
                                                  json=stream_body(600)) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        replica = cluster["replicas"][served_by(cluster, r)]
        for chunk in r.iter_bytes():
            events = chunk.count(b"data: ")
            if events and running_at_first is None:
                status = httpx.get(replica.base_url + "/api/status", timeout=60).json()
                running_at_first = status["running_requests"]
            events_per_read.append(events)
        assert chunk.rstrip().endswith(b"data: [DONE]")
    assert running_at_first == 1, "the first event came only after the reply was done"
    total = sum(events_per_read)
    assert total > 100 and len([n for n in events_per_read if n]) > total / 4, events_per_read


def test_a_persona_uploaded_through_the_balancer_steers_on_both_replicas(cluster):
    data = (demo_dir() / "personas" / "pirate.safetensors").read_bytes()
    r = httpx.put(cluster["lb"] + "/api/personas/lb-pirate/vector", content=data, timeout=60)
    assert r.status_code in (200, 201), r.text
    urls = [live.base_url for live in cluster["replicas"].values()]
    plain = [chat(u)["choices"][0]["message"]["content"] for u in urls]
    steered = [chat(u, persona="lb-pirate", strength=2.0)["choices"][0]["message"]["content"]
               for u in urls]
    assert plain[0] == plain[1] and steered[0] == steered[1], (plain, steered)
    assert steered[0] != plain[0], "the persona changed nothing"
    for u in urls:
        names = [p["name"] for p in httpx.get(u + "/api/personas", timeout=30).json()["personas"]]
        assert "lb-pirate" in names


def test_a_scale_change_and_an_unload_reach_both_replicas(cluster):
    urls = [live.base_url for live in cluster["replicas"].values()]
    lb = cluster["lb"]
    plain = chat(urls[0])["choices"][0]["message"]["content"]
    try:
        r = httpx.post(lb + "/api/steering-scale", json={"scale": 0.0}, timeout=30)
        assert r.status_code == 200 and r.json()["steering_scale"] == 0.0, r.text
        for u in urls:
            wait_for(lambda: httpx.get(u + "/api/steering-scale", timeout=30)
                     .json()["steering_scale"] == 0.0, f"scale 0 on {u}")
            # scale 0: the persona is applied with weight 0, so the reply is the plain one
            got = chat(u, persona="lb-pirate", strength=2.0)["choices"][0]["message"]["content"]
            assert got == plain, u
    finally:
        httpx.post(lb + "/api/steering-scale", json={"scale": 1.0}, timeout=30)
    for u in urls:
        wait_for(lambda: httpx.get(u + "/api/steering-scale", timeout=30)
                 .json()["steering_scale"] == 1.0, f"scale 1 on {u}")

    r = httpx.post(lb + "/api/personas/lb-pirate/unload", timeout=30)
    assert r.status_code == 200, r.text
    body = {"model": MODEL, "messages": PROMPT, "max_tokens": 4, "persona": "lb-pirate"}
    for u in urls:
        refused = wait_for(lambda: (lambda r: r if r.status_code != 200 else None)(
            httpx.post(u + "/v1/chat/completions", json=body, timeout=60)), f"unload on {u}")
        assert refused.status_code == 404 and "load it" in refused.json()["error"]["message"]
    assert httpx.post(lb + "/api/personas/lb-pirate/load", timeout=30).status_code == 200
    for u in urls:
        wait_for(lambda: httpx.post(u + "/v1/chat/completions", json=body,
                                    timeout=60).status_code == 200, f"load on {u}")


def test_killing_one_replica_fails_only_its_streams_and_the_survivor_takes_new_requests(cluster):
    with contextlib.ExitStack() as stack:
        client = stack.enter_context(httpx.Client(timeout=300))
        streams = []        # (replica, response, lines iterator)
        for _ in range(4):  # least_conn spreads them: two on each replica
            r = stack.enter_context(client.stream("POST", cluster["lb"] + "/v1/chat/completions",
                                                  json=stream_body(1500)))
            assert r.status_code == 200
            lines = r.iter_lines()
            first = next(line for line in lines if line.startswith("data: "))
            assert json.loads(first[6:])["choices"]
            streams.append((served_by(cluster, r), r, lines))
        on = {name: sum(1 for s in streams if s[0] == name) for name in cluster["by_port"].values()}
        assert all(on.values()), on
        victim = "steer-a"
        proc = cluster["replicas"][victim].proc
        os.killpg(proc.pid, signal.SIGKILL)          # a crash: the replica and its engine
        proc.wait(timeout=60)

        for name, r, lines in streams:
            events, error = [], None
            try:
                events = [line for line in lines if line.startswith("data: ")]
            except httpx.HTTPError as err:       # the body ended before its end (no last chunk)
                error = err
            if name == victim:
                assert error is not None and "[DONE]" not in [e[6:] for e in events], name
                assert isinstance(error, (httpx.RemoteProtocolError, httpx.ReadError)), error
            else:
                assert error is None and events[-1] == "data: [DONE]", name

    for _ in range(4):                          # new requests: all answered, by the survivor
        r = httpx.post(cluster["lb"] + "/v1/chat/completions", timeout=300,
                       json={"model": MODEL, "messages": PROMPT, "max_tokens": 4})
        assert r.status_code == 200, r.text
        assert served_by(cluster, r) == "steer-b"
