"""Issue 24 through the real server: many distinct blends beside a running long request, and a
request whose steering can no longer be applied in the worker failing alone.
(benchmarks/blend_flood.py pushes 10,000 blends the same way.)"""
from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from persona_steer.store import VectorStore
from tests.conftest import make_vector

MSG = [{"role": "user", "content": "Tell me about the sea."}]
N_BLENDS = 300          # more than the runtime's 256 cached deltas


@pytest.fixture(scope="module")
def store(server):
    st = VectorStore(server.vectors_dir)
    for kind, name, layers, seed in [("persona", "pirate24", [1, 2], 241),
                                     ("trait", "formal24", [2, 3], 242)]:
        if not st.exists(kind, name):
            st.save(make_vector(kind, name, server.model_id, layers, seed))
    return st


async def _chunks(resp):
    """Parsed SSE data events of an OpenAI-style stream, without the final [DONE]."""
    async for line in resp.aiter_lines():
        if line.startswith("data: ") and line != "data: [DONE]":
            yield json.loads(line[len("data: "):])


def _status(server):
    return httpx.get(server.base_url + "/api/status", timeout=30).json()


def test_distinct_blends_beside_a_long_stream_leave_the_engine_serving(server, store):
    long_body = {"model": server.model_id, "messages": MSG, "persona": "pirate24",
                 "strength": 0.9, "max_tokens": 1900, "ignore_eos": True, "temperature": 0,
                 "stream": True}

    async def run():
        async with httpx.AsyncClient(base_url=server.base_url, timeout=600) as client:
            state = {"tokens": 0, "finish": None, "error": None}
            started = asyncio.Event()

            async def long_stream():
                async with client.stream("POST", "/v1/chat/completions", json=long_body) as r:
                    assert r.status_code == 200
                    async for c in _chunks(r):
                        if "error" in c:
                            state["error"] = c["error"]
                            continue
                        for ch in c["choices"]:
                            if ch["delta"].get("content"):
                                state["tokens"] += 1
                                started.set()
                            state["finish"] = ch.get("finish_reason") or state["finish"]
                started.set()

            long_task = asyncio.create_task(long_stream())
            await started.wait()
            sem = asyncio.Semaphore(20)

            async def short(i):
                async with sem:
                    r = await client.post("/v1/completions", json={
                        "model": server.model_id, "prompt": f"Item {i}:", "max_tokens": 2,
                        "temperature": 0, "traits": {"formal24": round(0.001 * i, 3)}})
                    return r.status_code, r.json()

            shorts = await asyncio.gather(*(short(i) for i in range(1, N_BLENDS + 1)))
            long_running_after_shorts = not long_task.done()
            await long_task
            return shorts, long_running_after_shorts, state

    shorts, long_was_running, state = asyncio.run(run())
    bad = [(code, body) for code, body in shorts if code != 200]
    assert not bad, f"{len(bad)} short requests failed, first: {bad[0]}\n{server.log_tail()}"
    assert all(body["choices"][0]["finish_reason"] == "length" for _, body in shorts)
    assert long_was_running, "the long stream ended before the blends were through"
    assert state["error"] is None, state["error"]
    assert state["finish"] == "length"
    r = server.post("/v1/completions", json={"model": server.model_id, "prompt": "After:",
                                             "max_tokens": 3, "persona": "pirate24"})
    assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] == "length"
    assert server.get("/health").status_code == 200


def test_vector_changed_or_removed_after_admission_fails_that_request_alone(server, store):
    """64 long unsteered streams fill every engine slot (max_num_seqs 64); two steered requests
    are admitted (their vector hashes pinned) and wait; one vector is rewritten and the other
    deleted; when the long streams go, the worker finds both changed and fails exactly those
    two requests, with their reason, while the engine keeps serving."""
    store.save(make_vector("persona", "shifty24", server.model_id, [1], 243))
    store.save(make_vector("persona", "gone24", server.model_id, [2], 244))
    n_fill = 64
    fill = {"model": server.model_id, "prompt": "Fill:", "max_tokens": 1500, "ignore_eos": True,
            "temperature": 0, "stream": True}

    async def run():
        async with httpx.AsyncClient(base_url=server.base_url, timeout=600,
                                     limits=httpx.Limits(max_connections=100)) as client:
            running = [asyncio.Event() for _ in range(n_fill)]
            release = asyncio.Event()

            async def filler(i):
                async with client.stream("POST", "/v1/completions", json=fill) as r:
                    async for _ in _chunks(r):
                        running[i].set()
                        if release.is_set():
                            return          # leaving the stream aborts the request

            fillers = [asyncio.create_task(filler(i)) for i in range(n_fill)]
            await asyncio.gather(*(e.wait() for e in running))
            base = _status(server)["running_requests"]
            assert base == n_fill, base

            async def steered(persona):
                r = await client.post("/v1/completions", json={
                    "model": server.model_id, "prompt": "Waiting:", "max_tokens": 4,
                    "temperature": 0, "persona": persona})
                return r.status_code, r.json()

            waiting = [asyncio.create_task(steered(p)) for p in ("shifty24", "gone24")]
            while _status(server)["running_requests"] < n_fill + 2:   # both admitted
                await asyncio.sleep(0.05)
            assert not any(t.done() for t in waiting)
            store.save(make_vector("persona", "shifty24", server.model_id, [1], 245))
            store.delete("persona", "gone24")
            release.set()
            await asyncio.gather(*fillers)
            return await asyncio.gather(*waiting)

    (code1, body1), (code2, body2) = asyncio.run(run())
    assert code1 == 500 and body1["error"]["code"] == "steering_failed", body1
    assert "persona 'shifty24' changed on disk after the request was admitted" \
        in body1["error"]["message"]
    assert code2 == 500 and body2["error"]["code"] == "steering_failed", body2
    assert "unknown persona 'gone24'" in body2["error"]["message"]
    r = server.post("/v1/completions", json={"model": server.model_id, "prompt": "Again:",
                                             "max_tokens": 3, "persona": "shifty24"})
    assert r.status_code == 200, r.text          # the new content, admitted fresh, works
    assert server.get("/health").status_code == 200
