"""clients.client against the live server: sync, async and streaming chat with steering,
completions, vectors CRUD, transfer and equalizing, jobs over SSE, and the server's errors as
exceptions."""
from __future__ import annotations

import asyncio

import pytest

from clients.client import AsyncPersonaSteerClient, PersonaSteerError, SteeringRequest
from tests.clients.conftest import vector_bytes

GREEDY = {"max_tokens": 8, "temperature": 0, "seed": 0}


@pytest.mark.sdk_contract
def test_models_and_status(client):
    ids = [m["id"] for m in client.models()]
    assert client.default_model() == client.status()["model"]
    assert "persona:alpha" in ids and client.default_model() in ids


@pytest.mark.sdk_contract
def test_chat_steering_is_echoed_and_stream_matches(client):
    resp = client.chat("Tell me about the sea", persona="alpha", strength=0.5,
                       traits={"calm": -0.4}, **GREEDY)
    assert resp.steering["personas"] == {"alpha": 0.5}
    assert resp.steering["traits"] == {"calm": -0.4}
    text = resp.choices[0].message.content
    pieces = list(client.chat_stream("Tell me about the sea", persona="alpha", strength=0.5,
                                     traits={"calm": -0.4}, **GREEDY))
    assert "".join(p.content for p in pieces) == text
    assert pieces[-1].finish_reason in ("length", "stop") or any(p.finish_reason for p in pieces)
    assert any(p.steering for p in pieces)
    assert any(p.usage is not None for p in pieces)          # stream_options include_usage
    plain = client.chat_text("Tell me about the sea", **GREEDY)
    assert plain != text, "steering with a strong random vector changes the greedy reply"


@pytest.mark.sdk_contract
def test_completions(client):
    resp = client.complete("Once upon a time", persona="beta", **GREEDY)
    assert resp.choices[0].text is not None and resp.steering["personas"] == {"beta": 1.0}
    streamed = "".join(p.content for p in client.complete("Once upon a time", persona="beta",
                                                          stream=True, **GREEDY))
    assert streamed == resp.choices[0].text


@pytest.mark.sdk_contract
def test_errors_become_exceptions(client):
    with pytest.raises(PersonaSteerError) as info:
        client.chat("hi", persona="nobody", **GREEDY)
    err = info.value
    assert err.status == 404 and "unknown persona 'nobody'" in err.message
    assert "alpha" in err.message and err.param
    with pytest.raises(PersonaSteerError) as info:
        list(client.chat_stream("hi", traits={"calm": 1e6}, **GREEDY))
    assert info.value.status == 400 and "beyond the allowed bound" in info.value.message
    with pytest.raises(PersonaSteerError) as info:
        client.get_vector("trait", "nobody")
    assert info.value.status == 404 and info.value.type == "not_found_error"
    with pytest.raises(PersonaSteerError) as info:
        client.set_steering_scale(1e6)
    assert info.value.status == 400 and info.value.param == "scale"


def test_vector_download_upload_roundtrip(client):
    data = client.download_vector("persona", "gamma")
    assert data[:8] and len(data) > 256 * 4
    try:
        client.upload_vector("persona", "gamma_copy", data)
        info = client.get_vector("persona", "gamma_copy")
        assert info["content_hash"] == client.get_vector("persona", "gamma")["content_hash"]
        a = client.chat_text("Hello", persona="gamma", **GREEDY)
        b = client.chat_text("Hello", persona="gamma_copy", **GREEDY)
        assert a == b
        client.unload_vector("persona", "gamma_copy")
        assert "gamma_copy" not in client.status()["loaded"]["personas"]
        client.load_vector("persona", "gamma_copy")
        assert "gamma_copy" in client.status()["loaded"]["personas"]
    finally:
        client.delete_vector("persona", "gamma_copy")
    assert "gamma_copy" not in [p["name"] for p in client.list_personas()]
    with pytest.raises(PersonaSteerError) as info:
        client.upload_vector("persona", "bad", b"not a safetensors file")
    assert info.value.status == 400


def test_equalize_sync_and_async(client, live):
    try:
        client.upload_vector("persona", "eq_one", vector_bytes(client, "persona", "eq_one", seed=1, scale=0.2))
        client.upload_vector("persona", "eq_two", vector_bytes(client, "persona", "eq_two", seed=2, scale=0.6))
        out = client.equalize(["eq_one", "eq_two"])
        assert out["names"] == ["eq_one", "eq_two"]
        assert all(f > 1.5 for f in out["factors"]["eq_one"].values())
        one, two = (client.get_vector("persona", n)["norms"] for n in ("eq_one", "eq_two"))
        assert one == pytest.approx(two, rel=1e-3)

        async def go():
            async with AsyncPersonaSteerClient(live.url, api_key=live.api_key) as c:
                again = await c.equalize(["eq_one", "eq_two"])
                try:
                    await c.equalize(["eq_one"])
                except PersonaSteerError as err:
                    return again, err
            return again, None
        again, err = asyncio.run(go())
        assert all(f == pytest.approx(1.0, abs=1e-3) for fs in again["factors"].values() for f in fs.values())
        assert err is not None and err.status == 400 and err.param == "names"
    finally:
        for name in ("eq_one", "eq_two"):
            client.delete_vector("persona", name)


def test_job_events_and_cancel(client):
    job = client.create_trait("breezy", "stuffy", name="client_job_cancel")
    assert job.id and job.status in ("queued", "running")
    seen = []
    for event in client.job_events(job.id):
        seen.append(event)
        if len(seen) == 1:
            client.cancel_job(job.id)
    assert seen[-1]["status"] == "cancelled"
    final = client.wait_job(job.id)
    assert final.finished and final.status == "cancelled"
    assert "client_job_cancel" not in [t["name"] for t in client.list_traits()]


@pytest.mark.sdk_contract
def test_async_client(live):
    async def go():
        async with AsyncPersonaSteerClient(live.url, api_key=live.api_key) as c:
            st = await c.status()
            alpha = SteeringRequest(persona="alpha")     # the object form; sync uses keywords
            resp = await c.chat("Tell me about the sea", alpha, **GREEDY)
            pieces = [p async for p in c.chat_stream("Tell me about the sea", alpha, **GREEDY)]
            traits = await c.list_vectors("trait")
            comp = await c.complete("Once", persona="alpha", **GREEDY)
            try:
                await c.chat("hi", persona="nobody", **GREEDY)
            except PersonaSteerError as err:
                missing = err
            return st, resp, pieces, traits, comp, missing
    st, resp, pieces, traits, comp, missing = asyncio.run(go())
    assert st["engine"] == "ready"
    assert "".join(p.content for p in pieces) == resp.choices[0].message.content
    assert "calm" in [t["name"] for t in traits]
    assert comp.choices[0].text is not None
    assert missing.status == 404
