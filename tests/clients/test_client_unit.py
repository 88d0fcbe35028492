"""Unit tests of clients.client pieces that need no server (error mapping, SSE parsing, fields)."""
from __future__ import annotations

import socket

import httpx
import openai
import pytest

from clients.client import (Job, PersonaSteerClient, PersonaSteerError, ServerUnreachable,
                            _convert_openai_error, _error_from_body, _iter_sse, steering_fields)


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


def test_steering_fields_only_given_and_checked():
    assert steering_fields() == {}
    assert steering_fields("pirate", strength=0.5, traits={"formal": -1}, safety=False) == {
        "persona": "pirate", "strength": 0.5, "traits": {"formal": -1.0}, "safety": False}
    with pytest.raises(PersonaSteerError, match="traits.formal must be finite"):
        steering_fields(traits={"formal": float("nan")})
    with pytest.raises(PersonaSteerError, match="strength must be a number"):
        steering_fields("a", strength="high")


def test_job_from_dict():
    job = Job.from_dict({"id": "j1", "status": "failed", "progress": 0.3,
                         "error": {"message": "out of memory"}})
    assert job.finished and job.failed and job.error == "out of memory" and job.progress == 0.3
    assert not Job.from_dict({"job": {"id": "j2", "status": "running"}}).finished


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
