"""Live monitoring through the real server (session server, tiny model, random vectors): the
`monitor` field on /v1/chat/completions, /v1/completions, /api/chat and /ws/chat, and its errors."""
from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import websockets

MSG = [{"role": "user", "content": "Tell me about the sea."}]
NAMES = ["alpha", "trait:calm", "gamma"]


@pytest.fixture(scope="module")
def http(server, steer_vectors):
    with httpx.Client(base_url=server.base_url, timeout=180) as c:
        yield c


def chat(http, **kw):
    body = {"messages": MSG, "max_tokens": 12, "temperature": 0, "ignore_eos": True, **kw}
    r = http.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def _check_summary(reading):
    t = reading["tokens"]
    assert reading["last"] == t[-1] and reading["min"] == min(t) and reading["max"] == max(t)
    assert reading["mean"] == pytest.approx(sum(t) / len(t), abs=1e-3)


def test_chat_returns_a_reading_per_generated_token_and_name(http):
    body = chat(http, monitor=NAMES, persona="beta")
    mon = body["choices"][0]["monitor"]
    assert list(mon) == NAMES
    for name in NAMES:
        assert len(mon[name]["tokens"]) == body["usage"]["completion_tokens"] == 12
        _check_summary(mon[name])
    assert "monitor" not in chat(http)["choices"][0]        # no field without the request's ask


def test_stream_chunks_carry_the_same_readings(http):
    whole = chat(http, monitor=NAMES)["choices"][0]["monitor"]
    got = {n: [] for n in NAMES}
    last = None
    with http.stream("POST", "/v1/chat/completions", json={
            "messages": MSG, "max_tokens": 12, "temperature": 0, "ignore_eos": True,
            "stream": True, "monitor": NAMES}) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            for c in json.loads(line[6:])["choices"]:
                if "monitor" in c:
                    last = c["monitor"]
                    for n in NAMES:
                        got[n] += c["monitor"][n]["tokens"]
    for n in NAMES:
        assert got[n] == pytest.approx(whole[n]["tokens"], abs=1e-3)
        assert last[n]["mean"] == pytest.approx(whole[n]["mean"], abs=1e-3)


def test_completions_monitor_each_prompt(http):
    r = http.post("/v1/completions", json={"prompt": ["Once upon", "The sea"], "max_tokens": 5,
                                           "temperature": 0, "ignore_eos": True,
                                           "monitor": ["alpha"]})
    assert r.status_code == 200, r.text
    for c in r.json()["choices"]:
        assert len(c["monitor"]["alpha"]["tokens"]) == 5


def test_steering_toward_a_vector_raises_its_reading(http):
    plain = chat(http, monitor=["gamma"])["choices"][0]["monitor"]["gamma"]["mean"]
    steered = chat(http, monitor=["gamma"], persona="gamma", strength=2.0)
    assert steered["choices"][0]["monitor"]["gamma"]["mean"] > plain + 0.5


def test_unknown_name_is_a_404_naming_it(http):
    r = http.post("/v1/chat/completions", json={"messages": MSG, "monitor": ["alpha", "nope"]})
    assert r.status_code == 404 and "'nope'" in r.json()["error"]["message"], r.text
    assert r.json()["error"]["param"] == "monitor"


def test_too_many_names_is_a_400_naming_the_limit(http):
    names = [f"n{i}" for i in range(9)]
    r = http.post("/v1/chat/completions", json={"messages": MSG, "monitor": names})
    assert r.status_code == 400 and "at most 8" in r.json()["error"]["message"], r.text


def test_n_above_one_is_refused_with_monitor(http):
    r = http.post("/v1/chat/completions", json={"messages": MSG, "monitor": ["alpha"], "n": 2})
    assert r.status_code == 400 and r.json()["error"]["param"] == "monitor", r.text


def test_api_chat_and_ws_chat_return_readings(http, server):
    body = {"message": MSG[0]["content"], "max_tokens": 8, "temperature": 0, "ignore_eos": True,
            "monitor": ["alpha", "gamma"]}
    r = http.post("/api/chat", json=body)
    assert r.status_code == 200, r.text
    whole = r.json()["monitor"]
    assert len(whole["alpha"]["tokens"]) == 8

    async def go():
        url = server.base_url.replace("http://", "ws://") + "/ws/chat"
        async with websockets.connect(url) as ws:
            await ws.send(json.dumps(body))
            live = []
            while True:
                ev = json.loads(await asyncio.wait_for(ws.recv(), 120))
                assert ev["type"] != "error", ev
                if ev["type"] == "monitor":
                    live += ev["monitor"]["alpha"]["tokens"]
                if ev["type"] == "done":
                    return live, ev["monitor"]
    live, done = asyncio.run(go())
    assert live == pytest.approx(whole["alpha"]["tokens"], abs=1e-3)
    assert done["gamma"]["tokens"] == pytest.approx(whole["gamma"]["tokens"], abs=1e-3)


def test_steer_tokens_changes_the_answer_and_is_echoed(http):
    outs = {m: chat(http, persona="alpha", strength=3.0, steer_tokens=m, logprobs=True)
            for m in ("all", "generated", "prompt")}
    assert outs["generated"]["steering"]["steer_tokens"] == "generated"
    lps = {m: [t["logprob"] for t in o["choices"][0]["logprobs"]["content"]]
           for m, o in outs.items()}
    assert lps["all"] != lps["generated"] and lps["all"] != lps["prompt"]
    r = http.post("/v1/chat/completions", json={"messages": MSG, "steer_tokens": "some"})
    assert r.status_code == 400
