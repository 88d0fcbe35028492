"""The REST API (personas/traits CRUD, load/unload, upload/download, similarity, equalize, status,
steering scale, /api/chat), curl SSE framing and the WebSocket chat."""
from __future__ import annotations

import asyncio
import json
import subprocess

import pytest
import websockets

from persona_steer.vector_format import SteeringVector
from tests.conftest import make_vector

MSG = [{"role": "user", "content": "Tell me about the weather today."}]


@pytest.fixture(scope="module")
def http(server, steer_vectors):
    with server.client() as c:
        yield c


def greedy(http, n=6, **kw):
    r = http.post("/v1/chat/completions",
                  json={"messages": MSG, "max_tokens": n, "temperature": 0, **kw})
    assert r.status_code == 200, r.text
    return r.json()["choices"][0]["message"]["content"]


def test_health_and_status(http, server):
    assert http.get("/health").json() == {"status": "ok", "engine": "ready"}
    st = http.get("/api/status").json()
    assert st["engine"] == "ready" and st["model"] == server.model_id
    assert st["hidden_size"] == 256 and st["num_layers"] == 4
    assert {"alpha", "beta", "gamma"} <= set(st["loaded"]["personas"])
    assert "calm" in st["loaded"]["traits"]
    assert st["running_requests"] == 0 and st["auth"] is False


def test_list_and_info(http):
    personas = {p["name"]: p for p in http.get("/api/personas").json()["personas"]}
    assert personas["beta"]["layers"] == [1, 2] and personas["beta"]["loaded"] is True
    info = http.get("/api/personas/alpha").json()
    assert info["layers"] == [0, 1, 2, 3] and len(info["norms"]) == 4
    assert info["metadata"]["seed"] == 11 and info["metadata"]["kind"] == "persona"
    traits = http.get("/api/traits").json()["traits"]
    calm = [t for t in traits if t["name"] == "calm"]
    assert len(calm) == 1 and calm[0]["layers"] == [1, 2]


def test_upload_use_download_delete_roundtrip(http, server):
    vec = make_vector("persona", "uploaded", server.model_id, [1, 3], seed=99)
    r = http.put("/api/personas/moved/vector", content=vec.to_bytes())
    assert r.status_code == 201, r.text
    assert r.json()["content_hash"] == vec.content_hash()
    assert "persona:moved" in [m["id"] for m in http.get("/v1/models").json()["data"]]
    steered = greedy(http, persona="moved")
    assert steered != greedy(http)
    r = http.get("/api/personas/moved/vector")
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    back = SteeringVector.from_bytes(r.content)
    assert back.name == "moved" and back.content_hash() == vec.content_hash()
    # replacing it (200) changes what the next request gets, without restart
    other = make_vector("persona", "moved", server.model_id, [1, 3], seed=100)
    assert http.put("/api/personas/moved/vector", content=other.to_bytes()).status_code == 200
    assert greedy(http, persona="moved") != steered
    assert http.get("/api/personas/moved").json()["content_hash"] == other.content_hash()
    assert http.delete("/api/personas/moved").json() == {"deleted": "moved", "kind": "persona"}
    r = http.post("/v1/chat/completions",
                  json={"messages": MSG, "max_tokens": 2, "persona": "moved"})
    assert r.status_code == 404
    assert http.delete("/api/personas/moved").status_code == 404


def test_trait_upload_and_delete(http, server):
    vec = make_vector("trait", "brisk", server.model_id, [2], seed=5)
    assert http.put("/api/traits/brisk/vector", content=vec.to_bytes()).status_code == 201
    assert "brisk" in [t["name"] for t in http.get("/api/traits").json()["traits"]]
    assert greedy(http, traits={"brisk": 1.0}) != greedy(http)
    assert http.delete("/api/traits/brisk").status_code == 200
    assert http.post("/v1/chat/completions", json={"messages": MSG, "max_tokens": 2,
                                                   "traits": {"brisk": 1}}).status_code == 404


def test_unload_and_load(http):
    r = http.post("/api/personas/gamma/unload")
    try:
        assert r.json() == {"name": "gamma", "kind": "persona", "loaded": False}
        r = http.post("/v1/chat/completions",
                      json={"messages": MSG, "max_tokens": 2, "persona": "gamma"})
        assert r.status_code == 404 and "not loaded" in r.json()["error"]["message"]
        assert r.json()["error"]["code"] == "persona_not_loaded"
        assert "gamma" not in http.get("/api/status").json()["loaded"]["personas"]
        assert "persona:gamma" not in [m["id"] for m in http.get("/v1/models").json()["data"]]
    finally:
        assert http.post("/api/personas/gamma/load").json()["loaded"] is True
    assert greedy(http, persona="gamma")
    assert http.post("/api/personas/nosuch/load").status_code == 404


def test_similarity_matrix(http):
    r = http.get("/api/vectors/similarity", params={"layer": 2}).json()
    names = r["names"]
    assert {"alpha", "beta", "gamma"} <= set(names)
    m = r["matrix"]
    assert len(m) == len(names) and all(len(row) == len(names) for row in m)
    for i in range(len(names)):
        assert abs(m[i][i] - 1.0) < 1e-6
        for j in range(len(names)):
            assert abs(m[i][j] - m[j][i]) < 1e-9 and -1 <= m[i][j] <= 1
    r0 = http.get("/api/vectors/similarity", params={"layer": 0}).json()
    assert "alpha" in r0["names"] and "beta" in r0["missing"]
    assert http.get("/api/vectors/similarity", params={"layer": 99}).status_code == 400


def test_equalize_rescales_on_the_server_and_generation_follows(http, server):
    """POST /api/vectors/equalize: both personas get the mean norm per layer, the next request
    steers with the rewritten file, and bad sets are OpenAI-style errors that change nothing."""
    small = make_vector("persona", "eq-small", server.model_id, [1, 2], seed=5, norm=2.0)
    large = make_vector("persona", "eq-large", server.model_id, [1, 2], seed=6, norm=8.0)
    # what equalizing must make of eq-small: the same direction at norm 5, uploaded separately
    ref = make_vector("persona", "eq-ref", server.model_id, [1, 2], seed=5, norm=5.0)
    odd = make_vector("persona", "eq-odd", server.model_id, [0, 1], seed=7)
    try:
        for v in (small, large, ref, odd):
            assert http.put(f"/api/personas/{v.name}/vector", content=v.to_bytes()).status_code == 201
        # write false: the factors a rewrite would apply, nothing written
        r = http.post("/api/vectors/equalize", json={"names": ["eq-small", "eq-large"], "write": False})
        assert r.status_code == 200 and r.json()["written"] is False, r.text
        assert r.json()["factors"]["eq-small"]["1"] == pytest.approx(2.5, rel=1e-3)
        assert [round(n, 3) for n in http.get("/api/personas/eq-small").json()["norms"]] == [2.0, 2.0]
        before = greedy(http, n=8, persona="eq-small")
        r = http.post("/api/vectors/equalize", json={"names": ["eq-small", "eq-large"]})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["kind"] == "persona" and body["names"] == ["eq-small", "eq-large"]
        assert body["written"] is True
        assert body["factors"]["eq-small"]["1"] == pytest.approx(2.5, rel=1e-3)
        assert body["factors"]["eq-large"]["2"] == pytest.approx(0.625, rel=1e-3)
        for name in ("eq-small", "eq-large"):
            norms = http.get(f"/api/personas/{name}").json()["norms"]
            assert [round(n, 3) for n in norms] == [5.0, 5.0], norms
        after = greedy(http, n=8, persona="eq-small")
        assert after == greedy(http, n=8, persona="eq-ref")
        assert after != before
        hashes = {n: http.get(f"/api/personas/{n}").json()["content_hash"] for n in ("eq-small", "eq-large")}
        for bad, status, needle in (
                ({"names": ["eq-small"]}, 400, "names"),
                ({"names": ["eq-small", "../x"]}, 400, "invalid name '../x'"),
                ({"names": ["eq-small", "nobody"]}, 404, "unknown persona 'nobody'"),
                ({"names": ["eq-small", "eq-odd"]}, 400, "same layers"),
                ({"names": ["eq-small", "eq-large"], "kind": "axis"}, 400, "kind")):
            r = http.post("/api/vectors/equalize", json=bad)
            assert r.status_code == status, (bad, r.text)
            assert needle in r.json()["error"]["message"], r.json()
        assert hashes == {n: http.get(f"/api/personas/{n}").json()["content_hash"]
                          for n in ("eq-small", "eq-large")}
    finally:
        for name in ("eq-small", "eq-large", "eq-ref", "eq-odd"):
            http.delete(f"/api/personas/{name}")


def test_equalize_by_tuned_strength_reports_rescales_and_refuses(http, server):
    """POST /api/vectors/equalize with by "tuned": which persona is stronger from the tuned
    strengths; write rescales the tuned ones to one strength, so a request with no strength
    steers exactly as before; a set with nothing tuned is an OpenAI-style 400 that changes
    nothing."""
    weak = make_vector("persona", "tq-weak", server.model_id, [1, 2], seed=11)
    strong = make_vector("persona", "tq-strong", server.model_id, [1, 2], seed=12)
    plain = make_vector("persona", "tq-plain", server.model_id, [1, 2], seed=13)
    tuned = {"tq-weak": weak.with_recommendation([1, 2], 2.0, {"scorer": "test"}),
             "tq-strong": strong.with_recommendation([2], 0.5, {"scorer": "test"})}
    names = ["tq-weak", "tq-strong", "tq-plain"]
    try:
        assert http.put("/api/personas/tq-plain/vector", content=plain.to_bytes()).status_code == 201
        # nothing tuned yet (the session's alpha and beta never are): refused, nothing written
        for body in ({"by": "tuned", "names": ["tq-plain", "alpha"]},
                     {"by": "tuned", "names": ["tq-plain", "alpha"], "write": True}):
            r = http.post("/api/vectors/equalize", json=body)
            assert r.status_code == 400, r.text
            err = r.json()["error"]
            assert err["code"] == "not_tuned" and err["param"] == "names"
            assert err["message"].startswith("no persona among tq-plain, alpha has been tuned")
        for v in tuned.values():
            assert http.put(f"/api/personas/{v.name}/vector", content=v.to_bytes()).status_code == 201
        before = {n: greedy(http, n=8, persona=n) for n in tuned}      # at each tuned strength
        hashes = {n: http.get(f"/api/personas/{n}").json()["content_hash"] for n in names}
        r = http.post("/api/vectors/equalize", json={"by": "tuned", "names": names})
        assert r.status_code == 200, r.text
        report = r.json()
        assert report["by"] == "tuned" and report["written"] is False
        assert report["common_strength"] == 1.0 and report["names"] == ["tq-strong", "tq-weak", "tq-plain"]
        rows = {e["name"]: e for e in report["strengths"]}
        assert rows["tq-strong"]["recommended_strength"] == 0.5
        assert rows["tq-strong"]["relative_strength"] == 2.0 and rows["tq-weak"]["relative_strength"] == 0.5
        assert rows["tq-plain"]["tuned"] is False and rows["tq-plain"]["relative_strength"] is None
        assert hashes == {n: http.get(f"/api/personas/{n}").json()["content_hash"] for n in names}

        r = http.post("/api/vectors/equalize", json={"by": "tuned", "names": names, "write": True})
        assert r.status_code == 200, r.text
        assert r.json()["written"] is True
        assert {e["name"]: e["factor"] for e in r.json()["strengths"]} == {
            "tq-strong": 0.5, "tq-weak": 2.0, "tq-plain": None}
        listed = {e["name"]: e for e in http.get("/api/personas").json()["personas"]}
        assert listed["tq-weak"]["recommended"] == {"layers": [1, 2], "strength": 1.0}
        assert listed["tq-strong"]["recommended"] == {"layers": [2], "strength": 1.0}
        for n in tuned:         # new rows, new hash; the stored file hashes to what is listed
            info = http.get(f"/api/personas/{n}").json()
            assert info["content_hash"] != hashes[n]
            got = SteeringVector.from_bytes(http.get(f"/api/personas/{n}/vector").content)
            assert got.content_hash() == info["content_hash"] == listed[n]["content_hash"]
        assert http.get("/api/personas/tq-plain").json()["content_hash"] == hashes["tq-plain"]
        # at the common strength each pushes as it did at its own tuned strength
        assert {n: greedy(http, n=8, persona=n) for n in tuned} == before
        # norm mode's own rule stays: it needs the names
        r = http.post("/api/vectors/equalize", json={})
        assert r.status_code == 400, r.text
        assert "equalizing by norm needs at least two names" in r.json()["error"]["message"]
    finally:
        for name in names:
            http.delete(f"/api/personas/{name}")


def test_steering_scale_changes_output_and_is_echoed(http):
    base = greedy(http, persona="alpha")
    try:
        assert http.post("/api/steering-scale", json={"scale": 0.0}).json() == {"steering_scale": 0.0}
        assert greedy(http, persona="alpha") == greedy(http)      # scale 0 == unsteered
        assert http.post("/api/steering-scale", json={"scale": 0.5}).status_code == 200
        r = http.post("/v1/chat/completions", json={"messages": MSG, "max_tokens": 6,
                                                    "temperature": 0, "persona": "alpha"}).json()
        assert r["steering"]["scale"] == 0.5
        assert http.get("/api/status").json()["steering_scale"] == 0.5
    finally:
        http.post("/api/steering-scale", json={"scale": 1.0})
    assert greedy(http, persona="alpha") == base


def test_api_chat_matches_openai_chat(http):
    r = http.post("/api/chat", json={"message": "Tell me about the weather today.",
                                     "persona": "beta", "max_tokens": 6, "temperature": 0})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["response"] == greedy(http, persona="beta")
    assert body["steering"]["personas"] == {"beta": 1.0}
    assert body["usage"]["completion_tokens"] == 6 and body["finish_reason"] == "length"
    assert http.post("/api/chat", json={"persona": "beta"}).status_code == 400


def test_curl_sse_framing(server, http):
    body = {"messages": MSG, "max_tokens": 4, "temperature": 0, "stream": True,
            "persona": "alpha", "stream_options": {"include_usage": True}}
    out = subprocess.run(["curl", "-sN", "--max-time", "120", server.base_url +
                          "/v1/chat/completions", "-H", "content-type: application/json",
                          "-d", json.dumps(body)], capture_output=True, text=True, timeout=150)
    assert out.returncode == 0, out.stderr
    raw = out.stdout
    assert raw.endswith("data: [DONE]\n\n")
    events = raw.split("\n\n")[:-1]
    assert all(e.startswith("data: ") and "\n" not in e for e in events), events
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[0]["steering"]["personas"] == {"alpha": 1.0}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == greedy(http, n=4, persona="alpha")
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 4
    assert all("usage" in c for c in chunks)
    # an error after the stream would start is still a proper HTTP error
    bad = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                          server.base_url + "/v1/chat/completions", "-H",
                          "content-type: application/json", "-d",
                          json.dumps({**body, "persona": "nosuch"})],
                         capture_output=True, text=True, timeout=60)
    assert bad.stdout == "404"


def ws_url(server, path="/ws/chat"):
    return server.base_url.replace("http://", "ws://") + path


async def ws_chat(url, payload, headers=None):
    events = []
    async with websockets.connect(url, additional_headers=headers) as ws:
        await ws.send(json.dumps(payload))
        while True:
            ev = json.loads(await asyncio.wait_for(ws.recv(), 120))
            events.append(ev)
            if ev["type"] in ("done", "error"):
                return events


def test_websocket_chat_streams_and_matches(server, http):
    events = asyncio.run(ws_chat(ws_url(server), {
        "message": "Tell me about the weather today.", "persona": "alpha", "max_tokens": 6,
        "temperature": 0}))
    assert events[0]["type"] == "start" and events[0]["steering"]["personas"] == {"alpha": 1.0}
    assert events[-1]["type"] == "done" and events[-1]["usage"]["completion_tokens"] == 6
    text = "".join(e.get("content", "") for e in events if e["type"] == "delta")
    assert text == greedy(http, persona="alpha")
    assert sum(e["type"] == "delta" for e in events) >= 2


def test_websocket_errors_keep_the_socket_open(server):
    async def go():
        async with websockets.connect(ws_url(server)) as ws:
            await ws.send("not json")
            e1 = json.loads(await ws.recv())
            await ws.send(json.dumps({"message": "hi", "persona": "nosuch"}))
            e2 = json.loads(await ws.recv())
            await ws.send(json.dumps({"message": "hi", "max_tokens": 0}))
            e3 = json.loads(await ws.recv())
            # the stop is sent once the reply is streaming (its first delta has arrived), with
            # ~2000 tokens still to come: the stop reaches the server while the reply is in
            # flight, whatever the scheduler does with this process before it sends
            await ws.send(json.dumps({"message": "hi", "max_tokens": 2000,
                                      "temperature": 0, "ignore_eos": True}))
            seen = [json.loads(await asyncio.wait_for(ws.recv(), 120))]
            while seen[-1]["type"] not in ("delta", "done", "error"):
                seen.append(json.loads(await asyncio.wait_for(ws.recv(), 120)))
            await ws.send(json.dumps({"type": "stop"}))
            while seen[-1]["type"] not in ("stopped", "done", "error"):
                seen.append(json.loads(await asyncio.wait_for(ws.recv(), 120)))
            # the socket still serves a whole reply after the stop (ignore_eos: the random model
            # may sample its end token early; a CI run once saw this reply end after 1 token)
            await ws.send(json.dumps({"message": "hi", "max_tokens": 4, "ignore_eos": True}))
            after = [json.loads(await asyncio.wait_for(ws.recv(), 120))]
            while after[-1]["type"] not in ("done", "error"):
                after.append(json.loads(await asyncio.wait_for(ws.recv(), 120)))
            return e1, e2, e3, seen, after
    e1, e2, e3, seen, after = asyncio.run(go())
    assert e1["type"] == "error" and "JSON" in e1["error"]["message"]
    assert e2["type"] == "error" and e2["error"]["code"] == "persona_not_found"
    assert e3["type"] == "error" and e3["error"]["param"] == "max_tokens"
    assert seen[-1]["type"] == "stopped", f"the stop did not take: {seen[-3:]}"
    assert sum(e["type"] == "delta" for e in seen) < 2000
    assert after[-1]["type"] == "done" and after[-1]["usage"]["completion_tokens"] == 4


def test_cors_preflight_and_headers(http):
    r = http.options("/v1/chat/completions", headers={
        "Origin": "http://example.test", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] in ("*", "http://example.test")
    assert "POST" in r.headers["access-control-allow-methods"]
    r = http.get("/v1/models", headers={"Origin": "http://example.test"})
    assert r.headers["access-control-allow-origin"] in ("*", "http://example.test")


def test_web_page_is_served(http):
    r = http.get("/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert "<html" in r.text.lower() or "<!doctype" in r.text.lower()
    assert http.get("/.hidden").status_code == 404


def test_metrics_count_steered_and_unsteered(http):
    greedy(http, persona="alpha")
    greedy(http)
    text = http.get("/metrics").text

    def value(prefix):
        return sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines() if l.startswith(prefix))
    assert value('persona_steer_requests_total{endpoint="chat",steered="true"}') >= 1
    assert value('persona_steer_requests_total{endpoint="chat",steered="false"}') >= 1
    assert value('persona_steer_completion_tokens_total{steered="true"}') >= 6
    assert value('persona_steer_prompt_tokens_total{steered="false"}') >= 1
    assert "vllm:" in text          # the engine's own metrics are exported too
