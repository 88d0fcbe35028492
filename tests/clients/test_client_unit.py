"""Unit tests of clients.client pieces that need no server (error mapping, SSE parsing, fields)."""
from __future__ import annotations

import asyncio
import json
import socket

import httpx
import openai
import pytest

from clients.client import (AsyncPersonaSteerClient, Job, PersonaSteerClient, PersonaSteerError,
                            ServerUnreachable, SteeringRequest, _convert_openai_error,
                            _error_from_body, _iter_sse, _steering_body)
from persona_steer.job_states import TERMINAL


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_error_body_fields_are_kept():
    err = _error_from_body(404, {"error": {"message": "unknown persona 'x' (available: a)",
                                           "type": "not_found_error", "param": "persona",
                                           "code": "persona_not_found"}})
    assert (err.status, err.param, err.type, err.code) == (404, "persona", "not_found_error",
                                                           "persona_not_found")
    assert str(err) == "HTTP 404: unknown persona 'x' (available: a) (param: persona)"


def test_error_body_fallbacks():
    assert _error_from_body(422, {"detail": "bad"}).message == "bad"
    assert _error_from_body(500, "not json", "boom").message == "boom"
    assert _error_from_body(400, {"error": "plain"}).message == "plain"


def test_openai_status_error_is_converted():
    req = httpx.Request("POST", "http://x/v1/chat/completions")
    resp = httpx.Response(400, request=req, json={"error": {
        "message": "traits.formal=99.0 is beyond the allowed bound ±10.0", "type": "invalid_request_error",
        "param": "traits.formal", "code": "invalid_steering"}})
    sdk_err = openai.BadRequestError("x", response=resp, body=resp.json()["error"])
    err = _convert_openai_error(sdk_err, "http://x")
    assert err.status == 400 and err.param == "traits.formal"
    assert "beyond the allowed bound" in err.message


def test_openai_connection_error_is_unreachable():
    sdk_err = openai.APIConnectionError(request=httpx.Request("GET", "http://x"))
    err = _convert_openai_error(sdk_err, "http://127.0.0.1:9")
    assert isinstance(err, ServerUnreachable)
    assert str(err).startswith("no server reachable at http://127.0.0.1:9")


def test_sse_parsing():
    lines = [": comment", "event: progress", 'data: {"status": "running", "progress": 0.5}', "",
             "data: plain text", "", 'data: {"a":', "data: 1}", ""]
    events = list(_iter_sse(iter(lines)))
    assert events == [{"status": "running", "progress": 0.5, "event": "progress"},
                      {"data": "plain text"}, {"a": 1}]


def test_steering_body_only_given_and_checked():
    assert _steering_body(None, {}) == {}
    want = {"persona": "pirate", "strength": 0.5, "traits": {"formal": -1.0}, "safety": False}
    steering = SteeringRequest("pirate", strength=0.5, traits={"formal": -1}, safety=False)
    assert _steering_body(steering, {}) == want
    assert _steering_body({"persona": "pirate", "strength": 0.5, "traits": {"formal": -1},
                           "safety": False}, {}) == want
    # the keyword form docs/python.md shows is taken out of the other options
    options = {"persona": "pirate", "strength": 0.5, "traits": {"formal": -1}, "safety": False,
               "max_tokens": 8}
    assert _steering_body(None, options) == want and options == {"max_tokens": 8}
    with pytest.raises(PersonaSteerError, match="traits.formal must be finite"):
        _steering_body(SteeringRequest(traits={"formal": float("nan")}), {})
    with pytest.raises(PersonaSteerError, match="strength must be a number"):
        _steering_body(None, {"persona": "a", "strength": "high"})
    with pytest.raises(PersonaSteerError, match="not both"):
        _steering_body(steering, {"persona": "robot"})
    with pytest.raises(PersonaSteerError, match="unknown steering fields: weight"):
        _steering_body({"weight": 1}, {})


def test_steering_request_has_the_servers_fields():
    # one list of a request's steering fields: the client's type and the server's schema
    from dataclasses import fields
    from server.schemas import SteeringFields
    assert [f.name for f in fields(SteeringRequest)] == list(SteeringFields.model_fields)


def test_job_from_dict_reads_the_servers_record():
    # a record as server/jobs.py writes it; POST answers wrap it in {"job": ...}
    rec = {"id": "j1", "status": "failed", "error": "OSError: out of memory",
           "progress": {"stage": "rollouts", "done": 3, "total": 10, "message": "question 3"}}
    job = Job.from_dict(rec)
    assert job.finished and job.failed and job.error == "OSError: out of memory"
    assert job.progress == 0.3 and job.message == "rollouts · question 3"
    running = Job.from_dict({"job": {"id": "j2", "status": "running", "progress": {}}})
    assert running.id == "j2" and not running.finished and running.progress is None
    assert [Job.from_dict({"id": "j", "status": s}).finished for s in TERMINAL] == [True] * 3
    assert not Job.from_dict({"id": "j", "status": "succeeded"}).failed


def test_sync_and_async_clients_have_the_same_methods():
    def public(cls):
        return {n for n in dir(cls) if not n.startswith("_")} - {"close", "aclose"}
    assert public(PersonaSteerClient) == public(AsyncPersonaSteerClient)


def test_unreachable_server_raises_clear_error():
    url = f"http://127.0.0.1:{free_port()}"
    with PersonaSteerClient(url) as c:
        with pytest.raises(ServerUnreachable, match=f"no server reachable at {url}"):
            c.status()
        with pytest.raises(ServerUnreachable, match="no server reachable"):
            c.chat("hi", model="m")


def test_bad_url_and_kind():
    with pytest.raises(PersonaSteerError, match="must start with http"):
        PersonaSteerClient("localhost:8000")
    with PersonaSteerClient("http://127.0.0.1:9") as c:
        with pytest.raises(PersonaSteerError, match="kind must be 'persona' or 'trait'"):
            c.delete_vector("axis", "x")
        with pytest.raises(PersonaSteerError, match="exactly one of description or archetype"):
            c.create_persona("x")


def test_api_key_is_sent_as_bearer_by_both_transports():
    with PersonaSteerClient("http://127.0.0.1:9", api_key="s3cret") as c:
        assert c.http.headers["Authorization"] == "Bearer s3cret"
        assert c.openai.api_key == "s3cret"
        assert str(c.openai.base_url) == "http://127.0.0.1:9/v1/"
    with PersonaSteerClient("http://127.0.0.1:9") as c:
        assert "Authorization" not in c.http.headers


def _job_server(request: httpx.Request) -> httpx.Response:
    """A stand-in for the job routes (server/routes_jobs.py): the events stream, then the record."""
    rec = {"id": "j1", "status": "running", "progress": {"stage": "load"}, "error": None}
    if request.url.path == "/api/jobs/j1/events":
        events = [("running", rec), ("progress", {**rec, "progress": {"stage": "save", "done": 1,
                                                                      "total": 2}}),
                  ("succeeded", {**rec, "status": "succeeded"})]
        body = "".join(f"event: {e}\ndata: {json.dumps(r)}\n\n" for e, r in events)
        return httpx.Response(200, text=body, headers={"content-type": "text/event-stream"})
    if request.url.path == "/api/jobs/j1":
        return httpx.Response(200, json={**rec, "status": "succeeded"})
    return httpx.Response(404, json={"error": {"message": "unknown job", "param": "id"}})


def test_wait_job_and_errors_on_both_clients():
    # the one method spec, sent by each client's transport
    seen_sync, seen_async = [], []
    with PersonaSteerClient("http://test") as c:
        c.http = httpx.Client(base_url="http://test", transport=httpx.MockTransport(_job_server))
        final = c.wait_job("j1", on_event=lambda j: seen_sync.append((j.status, j.progress)))
        with pytest.raises(PersonaSteerError, match="unknown job") as missing:
            c.job("nope")

    async def go():
        async with AsyncPersonaSteerClient("http://test") as c:
            c.http = httpx.AsyncClient(base_url="http://test",
                                       transport=httpx.MockTransport(_job_server))
            events = [e async for e in c.job_events("j1")]
            return events, await c.wait_job("j1", on_event=lambda j: seen_async.append(
                (j.status, j.progress)))
    events, final_async = asyncio.run(go())
    assert final.status == final_async.status == "succeeded" and final.finished
    assert seen_sync == seen_async == [("running", None), ("running", 0.5), ("succeeded", None)]
    assert [e["event"] for e in events] == ["running", "progress", "succeeded"]
    assert missing.value.status == 404 and missing.value.param == "id"
