"""Concurrency, a crowd with a disconnect storm, client disconnects, API key on/off (SIGHUP
reload, same engine)."""
from __future__ import annotations

import asyncio
import json
import socket
import time
import warnings

import httpx
import openai
import pytest

from tests.conftest import set_api_key

MSG = [{"role": "user", "content": "Tell me a story about the sea."}]

CONFIGS = [{}, {"persona": "alpha"}, {"persona": "beta"}, {"persona": "gamma"},
           {"blend": {"alpha": 0.5, "beta": 0.5}}, {"blend": {"alpha": 0.7, "gamma": -0.4}},
           {"persona": "alpha", "traits": {"calm": 0.8}}, {"traits": {"calm": -1.0}}]


def _cfg(i):
    c = dict(CONFIGS[i % len(CONFIGS)])
    if i >= len(CONFIGS) and c:             # vary strengths across the 32 requests
        c = {**c, "strength": round(0.4 + 0.1 * (i // len(CONFIGS)), 2)} if "persona" in c else c
    return c


def test_32_concurrent_streams_equal_their_solo_runs(server, steer_vectors):
    n_tokens = 10

    async def run():
        client = openai.AsyncOpenAI(base_url=server.base_url + "/v1", api_key="x",
                                    max_retries=0, timeout=600)

        async def one(i, stream):
            kw = dict(model=server.model_id, messages=MSG, max_tokens=n_tokens, temperature=0,
                      extra_body=_cfg(i) or None)
            if not stream:
                r = await client.chat.completions.create(**kw)
                return r.choices[0].message.content
            s = await client.chat.completions.create(stream=True, **kw)
            return "".join([c.choices[0].delta.content or "" async for c in s if c.choices])

        solo = [await one(i, False) for i in range(32)]              # one at a time
        together = await asyncio.gather(*(one(i, True) for i in range(32)))
        await client.close()
        return solo, together

    solo, together = asyncio.run(run())
    assert len(together) == 32
    assert together == solo
    assert len(set(solo)) >= len(CONFIGS) - 1      # the configs really differ


def test_crowd_with_a_disconnect_storm(server, steer_vectors):
    """benchmarks/crowd.py, short: 18 streaming clients with mixed personas, strengths, blends,
    traits and plain requests for 8 s; halfway, a third of them drop mid-stream out of a long
    request. No errors, every answer equal to the same request run alone, and the engine aborts
    exactly the dropped requests (persona_steer_aborted_total), then runs nothing."""
    from benchmarks.crowd import run_crowd
    res = asyncio.run(run_crowd(server.base_url, clients=18, seconds=8, log=lambda *_: None))
    assert not res.errors, res.errors[:5]
    assert not res.mismatches, res.mismatches[:5]
    assert len(res.streams) >= 12, res.report()
    assert len({s.text for s in res.streams}) > 4          # the mix really differs
    assert res.dropped == 6
    assert res.aborted == res.dropped, res.report()
    wait_idle(server)


def status(server):
    return httpx.get(server.base_url + "/api/status", timeout=30).json()


def wait_idle(server, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = status(server)
        if st["running_requests"] == 0 and st["in_flight"] == 0:
            return st
        time.sleep(0.2)
    raise AssertionError(f"requests still running: {status(server)}")


def metric(server, name: str) -> float:
    text = httpx.get(server.base_url + "/metrics", timeout=30).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name))


# 16 samples (the API's maximum n) x 2000 tokens (ignore_eos): far more work than the first
# chunk read before the client goes away, so the request is still running when it disconnects.
LONG = {"messages": MSG, "max_tokens": 2000, "temperature": 1.0, "n": 16, "seed": 3,
        "ignore_eos": True}


def in_up_to_three_attempts(server, attempt, tries: int = 3) -> None:
    """Runs `attempt` (-> (passed, detail)) until it passes, at most `tries` times. Why: in
    about half of the fresh-clone full-suite runs on the 2-core machine, one attempt found the
    whole request generated and no abort. The cause was vLLM's spinning engine core keeping this
    process off the CPU (fixed by steering_plugin/cpu_wait.py; docs/steering.md,
    "The CPU wait"). The close now waits on a condition (the first event, or the request counted
    running), but a busy machine can still deschedule this client for the ~25 s the request
    takes between that condition and the close; the retry is for that case only. Each attempt
    starts from an idle server; a broken abort path fails all three.
    Every attempt's result is in the failure message, with event-loop stalls (the watchdog)."""
    failures = []
    for _ in range(tries):
        stalls = metric(server, "persona_steer_event_loop_stalls_total")
        passed, detail = attempt()
        if passed:
            if failures:    # shown in pytest's warnings summary: is the retry still needed?
                warnings.warn(f"passed after {len(failures)} failed attempt(s): {failures}")
            return
        failures.append({**detail, "event loop stalled":
                         metric(server, "persona_steer_event_loop_stalls_total") > stalls})
    raise AssertionError(f"{failures}\n{server.log_tail(120)}")


def post_and_leave(server, body: dict, *, after_first_event: bool) -> None:
    """POST on a raw connection and close it: after the first SSE event, or once /api/status
    counts it running (it needs about 25 s on the tiny model). A raw socket, so that the close
    is exactly when and what the test says, whatever an HTTP client does."""
    data = json.dumps(body).encode()
    url = httpx.URL(server.base_url)
    sock = socket.create_connection((url.host, url.port), timeout=120)
    try:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: test\r\n"
                     b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                     % len(data) + data)
        if after_first_event:
            got = b""
            while b"\ndata: " not in got and b"\r\ndata: " not in got:
                chunk = sock.recv(4096)
                assert chunk, f"the server closed first: {got[:300]!r}"
                got += chunk
            assert got.startswith(b"HTTP/1.1 200"), got[:300]
        else:
            deadline = time.monotonic() + 120
            while status(server)["running_requests"] == 0:
                assert time.monotonic() < deadline, "the request never started running"
                time.sleep(0.05)
    finally:
        sock.close()


def disconnect_attempt(server, body: dict, *, after_first_event: bool):
    wait_idle(server)
    aborted = metric(server, "persona_steer_aborted_total")
    tokens0 = metric(server, "persona_steer_completion_tokens_total")
    post_and_leave(server, body, after_first_event=after_first_event)
    # the connection is closed here, long before 32,000 tokens
    assert wait_idle(server)["running_requests"] == 0
    used = metric(server, "persona_steer_completion_tokens_total") - tokens0
    # not a synchronisation: a second of quiet in which an aborted request must count nothing
    time.sleep(1.0)
    later = metric(server, "persona_steer_completion_tokens_total") - tokens0
    # the tokens tell which way it went wrong, if it does: all 32,000 (the disconnect went
    # unnoticed) or a few (the request ended without being counted as aborted)
    counted = metric(server, "persona_steer_aborted_total") == aborted + 1
    return counted and used < 16 * 2000 and later == used, {"tokens": used, "counted": counted}


def test_stream_disconnect_aborts_engine_request(server, steer_vectors):
    body = {**LONG, "stream": True, "persona": "alpha", "model": server.model_id}
    in_up_to_three_attempts(server, lambda: disconnect_attempt(server, body,
                                                               after_first_event=True))


def test_non_stream_disconnect_aborts_too(server, steer_vectors):
    in_up_to_three_attempts(server, lambda: disconnect_attempt(server, LONG,
                                                               after_first_event=False))


def test_api_key_on_and_off(server, steer_vectors):
    url = server.base_url
    assert httpx.get(url + "/v1/models").status_code == 200
    set_api_key(server, "sekret-123")
    try:
        for method, path in [("GET", "/v1/models"), ("GET", "/api/status"), ("GET", "/metrics"),
                             ("POST", "/v1/chat/completions"), ("GET", "/api/personas"),
                             ("POST", "/api/steering-scale"), ("GET", "/api/jobs")]:
            r = httpx.request(method, url + path, json={}, timeout=30)
            assert r.status_code == 401, (path, r.text)
            assert r.json()["error"]["type"] == "authentication_error"
            r = httpx.request(method, url + path, json={},
                              headers={"Authorization": "Bearer wrong"}, timeout=30)
            assert r.status_code == 401
        assert httpx.get(url + "/health").status_code == 200           # never needs the key
        assert httpx.get(url + "/").status_code == 200                 # the page itself
        client = openai.OpenAI(base_url=url + "/v1", api_key="sekret-123", max_retries=0)
        r = client.chat.completions.create(model=server.model_id, messages=MSG, max_tokens=2,
                                           extra_body={"persona": "alpha", "ignore_eos": True})
        assert r.usage.completion_tokens == 2
        bad = openai.OpenAI(base_url=url + "/v1", api_key="nope", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()
        ws_url = url.replace("http://", "ws://") + "/ws/chat"
        denied, allowed = asyncio.run(_ws_auth(ws_url))
        assert denied["type"] == "error" and denied["error"]["code"] == "invalid_api_key"
        assert allowed["type"] == "start"
    finally:
        set_api_key(server, None)
    assert httpx.get(url + "/v1/models").status_code == 200


async def _ws_auth(ws_url):
    import json

    import websockets
    async with websockets.connect(ws_url) as ws:
        denied = json.loads(await ws.recv())
    async with websockets.connect(ws_url + "?api_key=sekret-123") as ws:
        await ws.send(json.dumps({"message": "hi", "max_tokens": 2}))
        allowed = json.loads(await ws.recv())
        while json.loads(await ws.recv())["type"] != "done":
            pass
    return denied, allowed
