"""What users of the original system reach for: a per-request `scale`, penalties on /api/chat
and /ws/chat, and `python -m server` as the one-line start (the original's `python web/api.py`)."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import httpx
import pytest
import websockets

from persona_steer.config import PROJECT_ROOT

MSG = [{"role": "user", "content": "Tell me about the weather today."}]


@pytest.fixture(scope="module")
def http(server, steer_vectors):
    with server.client() as c:
        yield c


def v1(http, n=8, **kw):
    r = http.post("/v1/chat/completions", json={"messages": MSG, "max_tokens": n, "temperature": 0, **kw})
    assert r.status_code == 200, r.text
    return r.json()


def text(body) -> str:
    return body["choices"][0]["message"]["content"]


def test_per_request_scale_is_applied_and_echoed(http):
    assert http.get("/api/status").json()["steering_scale"] == 1.0
    try:                          # the server-wide 0.5 gives the reference answer
        http.post("/api/steering-scale", json={"scale": 0.5})
        at_half = text(v1(http, persona="alpha"))
    finally:
        http.post("/api/steering-scale", json={"scale": 1.0})
    body = v1(http, persona="alpha", scale=0.5)
    assert text(body) == at_half and body["steering"]["scale"] == 0.5
    assert text(v1(http, persona="alpha")) != at_half              # the server's 1.0 otherwise
    assert text(v1(http, persona="alpha", scale=0)) == text(v1(http))   # 0 == unsteered
    assert http.get("/api/status").json()["steering_scale"] == 1.0     # one request's only
    r = http.post("/api/chat", json={"message": MSG[0]["content"], "persona": "alpha",
                                     "scale": 0.5, "max_tokens": 8, "temperature": 0})
    assert r.json()["response"] == at_half and r.json()["steering"]["scale"] == 0.5


@pytest.mark.parametrize("scale,needle", [(1e9, "scale=1000000000.0 must be finite and within"),
                                          ("big", "scale")])
def test_bad_scale_is_a_clear_400(http, scale, needle):
    r = http.post("/v1/chat/completions", json={"messages": MSG, "persona": "alpha", "scale": scale})
    assert r.status_code == 400 and needle in r.json()["error"]["message"], r.text
    assert r.json()["error"]["param"] in ("scale", "body.scale")


def _ws_text(server, payload) -> str:
    async def go():
        url = server.base_url.replace("http://", "ws://") + "/ws/chat"
        async with websockets.connect(url) as ws:
            await ws.send(json.dumps(payload))
            out = []
            while True:
                ev = json.loads(await asyncio.wait_for(ws.recv(), 120))
                assert ev["type"] != "error", ev
                if ev["type"] == "done":
                    return "".join(out)
                out.append(ev.get("content", "") if ev["type"] == "delta" else "")
    return asyncio.run(go())


@pytest.mark.parametrize("penalty", ["presence_penalty", "frequency_penalty"])
def test_api_chat_and_ws_chat_apply_penalties(http, server, penalty):
    plain = text(v1(http, n=24, persona="beta"))
    penalized = text(v1(http, n=24, persona="beta", **{penalty: 2.0}))
    assert penalized != plain            # the penalty changes this greedy answer on /v1
    body = {"message": MSG[0]["content"], "persona": "beta", "max_tokens": 24, "temperature": 0}
    r = http.post("/api/chat", json={**body, penalty: 2.0})
    assert r.status_code == 200 and r.json()["response"] == penalized
    assert http.post("/api/chat", json=body).json()["response"] == plain
    assert _ws_text(server, {**body, penalty: 2.0}) == penalized
    bad = http.post("/api/chat", json={**body, penalty: 3})
    assert bad.status_code == 400 and penalty in bad.text


@pytest.mark.engine       # starts a server on its own engine
def test_python_m_server_is_persona_steer_serve(tmp_path, tiny_model):
    from tests.conftest import _cli, live_server
    helps = [subprocess.run(cmd, capture_output=True, text=True, cwd=str(PROJECT_ROOT), timeout=120)
             for cmd in ([sys.executable, "-m", "server", "--help"], _cli() + ["serve", "--help"])]
    assert helps[0].returncode == 0 and helps[0].stdout == helps[1].stdout
    with live_server(tmp_path, tiny_model, command=[sys.executable, "-m", "server"]) as live:
        st = httpx.get(live.base_url + "/api/status", timeout=30).json()
        assert st["engine"] == "ready" and st["model"] == tiny_model
        r = httpx.post(live.base_url + "/v1/chat/completions", timeout=120,
                       json={"messages": MSG, "max_tokens": 4, "temperature": 0})
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 4


def test_api_chat_reads_the_originals_body(http):
    """The original's /api/chat body ({"personas": {...}, "safety_enabled": ...}) steers, as
    `blend` and `safety` do, instead of being silently dropped."""
    body = {"message": MSG[0]["content"], "max_tokens": 8, "temperature": 0}
    ours = http.post("/api/chat", json={**body, "blend": {"alpha": 0.5, "beta": 0.5}}).json()
    theirs = http.post("/api/chat", json={**body, "personas": {"alpha": 0.5, "beta": 0.5},
                                          "safety_enabled": False}).json()
    assert theirs["steering"]["personas"] == {"alpha": 0.5, "beta": 0.5}
    assert theirs["response"] == ours["response"] and theirs["steering"]["safety"] is False
    # both names at once join (blend wins on a shared name): every schema-valid body is accepted
    both = http.post("/api/chat", json={**body, "personas": {"alpha": 1, "beta": 0.2},
                                        "blend": {"beta": 0.5}})
    assert both.status_code == 200, both.text
    assert both.json()["steering"]["personas"] == {"alpha": 1.0, "beta": 0.5}
