"""Every error: status and OpenAI error shape; no bad input gives a 500 or a stack trace."""
from __future__ import annotations

import json

import httpx
import pytest

MSG = [{"role": "user", "content": "hi"}]


def assert_error(r: httpx.Response, status: int, *, code: str | None = None,
                 param: str | None = None, contains: str | None = None) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and err["message"]
    assert "Traceback" not in r.text
    if code is not None:
        assert err["code"] == code
    if param is not None:
        assert err["param"] == param
    if contains is not None:
        assert contains in err["message"], err["message"]
    return err


@pytest.fixture(scope="module")
def http(server, steer_vectors):
    with server.client() as c:
        yield c


def chat(http, **kw):
    body = {"messages": MSG, "max_tokens": 2, "temperature": 0, **kw}
    return http.post("/v1/chat/completions", json=body)


def test_engine_not_ready_was_503_during_startup(server):
    starting = [b for s, b in server.startup_health if s == 503]
    assert starting, server.startup_health
    assert starting[0]["error"]["code"] == "engine_not_ready"
    assert starting[0]["error"]["type"] == "service_unavailable"


def test_unknown_persona_lists_available(http):
    err = assert_error(chat(http, persona="nosuch"), 404, code="persona_not_found",
                       contains="nosuch")
    for name in ("alpha", "beta", "gamma"):
        assert name in err["message"]


def test_unknown_trait_and_blend_member(http):
    assert_error(chat(http, traits={"nosuch": 0.5}), 404, code="trait_not_found",
                 contains="calm")
    assert_error(chat(http, blend={"alpha": 0.5, "nosuch": 0.5}), 404, contains="nosuch")


def test_unknown_model_id(http):
    assert_error(chat(http, model="gpt-4"), 404, code="model_not_found", param="model",
                 contains="persona:alpha")
    assert_error(chat(http, model="persona:nosuch"), 404, code="persona_not_found")


@pytest.mark.parametrize("field,value", [
    ("strength", float("nan")), ("strength", float("inf")), ("strength", 1e6),
    ("blend", {"alpha": float("nan")}), ("traits", {"calm": -1e3}),
    ("traits", {"calm": "lots"}),
])
def test_bad_weights_are_400(http, field, value):
    body = {"messages": MSG, "max_tokens": 2, "persona": "alpha", field: value}
    r = http.post("/v1/chat/completions", content=json.dumps(body),
                  headers={"content-type": "application/json"})
    assert_error(r, 400)


@pytest.mark.parametrize("name", ["Alpha", "../etc/passwd", "a b", "x" * 65, ""])
def test_bad_names_are_400(http, name):
    r = chat(http, persona=name) if name else chat(http, blend={name: 1.0})
    assert_error(r, 400, contains="name")


def test_bad_names_in_rest_paths(http):
    assert_error(http.get("/api/personas/Bad%20Name"), 400, code="invalid_name")
    assert_error(http.delete("/api/traits/UPPER"), 400, code="invalid_name")
    assert_error(http.get("/api/personas/nosuch"), 404, code="persona_not_found")


@pytest.mark.parametrize("body,param", [
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "wizard", "content": "x"}]}, "messages.0.role"),
    ({"messages": MSG, "temperature": 5}, "temperature"),
    ({"messages": MSG, "n": 0}, "n"),
    ({"messages": MSG, "max_tokens": 0}, "max_tokens"),
    ({"messages": MSG, "top_logprobs": 99}, "top_logprobs"),
    ({"messages": MSG, "safety": "maybe"}, "safety"),
    ({}, "messages"),
])
def test_request_validation_is_400(http, body, param):
    assert_error(http.post("/v1/chat/completions", json=body), 400, param=param)


def test_invalid_json_is_400(http):
    r = http.post("/v1/chat/completions", content=b"{not json",
                  headers={"content-type": "application/json"})
    assert_error(r, 400, contains="JSON")


def test_context_overflow_is_400(http):
    assert_error(chat(http, max_tokens=10 ** 6), 400, code="context_length_exceeded")


def test_greedy_with_n_gives_n_greedy_answers(http):
    """OpenAI accepts n > 1 at temperature 0 (vLLM alone refuses it): every choice is the
    greedy answer."""
    one = chat(http, max_tokens=6, ignore_eos=True)
    three = chat(http, n=3, max_tokens=6, ignore_eos=True)
    assert one.status_code == 200 and three.status_code == 200, three.text
    greedy = one.json()["choices"][0]["message"]["content"]
    assert [c["message"]["content"] for c in three.json()["choices"]] == [greedy] * 3


def test_safety_without_axis_is_a_clear_error(http, server):
    if http.get("/api/status").json()["axis"]:      # another area put an axis in the store
        assert chat(http, safety=True).status_code == 200
        return
    assert_error(chat(http, safety=True), 400, param="safety", code="axis_missing",
                 contains="extract-axes")


def test_body_too_large_is_413(http, server):
    big = "x" * (1048576 + 10)
    r = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": big}]})
    assert_error(r, 413, code="body_too_large")
    # also without Content-Length (chunked upload)
    def gen():
        for _ in range(20):
            yield b"y" * 65536
    r = http.put("/api/personas/bigone/vector", content=gen())
    assert_error(r, 413)


def test_unknown_endpoint_and_method(http):
    assert_error(http.get("/v1/nothing"), 404)
    assert_error(http.get("/v1/chat/completions"), 405)


def test_bad_uploads_are_400(http, server):
    assert_error(http.put("/api/personas/junk/vector", content=b"not safetensors"), 400,
                 code="invalid_vector")
    assert_error(http.put("/api/personas/junk/vector", content=b""), 400)
    from tests.conftest import make_vector
    wrong_hidden = make_vector("persona", "junk", server.model_id, [0], 1, hidden=64)
    err = assert_error(http.put("/api/personas/junk/vector", content=wrong_hidden.to_bytes()),
                       400, contains="hidden_size")
    other_model = make_vector("persona", "junk", "some/other-model", [0], 1)
    assert_error(http.put("/api/personas/junk/vector", content=other_model.to_bytes()), 400,
                 contains="other-model")
    too_deep = make_vector("persona", "junk", server.model_id, [9], 1)
    assert_error(http.put("/api/personas/junk/vector", content=too_deep.to_bytes()), 400,
                 contains="layer")
    trait = make_vector("trait", "junk", server.model_id, [0], 1)
    assert_error(http.put("/api/personas/junk/vector", content=trait.to_bytes()), 400,
                 contains="kind")
    assert http.get("/api/personas/junk").status_code == 404


def test_job_input_errors(http):
    assert_error(http.post("/api/personas", json={"name": "Bad Name", "description": "x"}), 400,
                 code="invalid_name")
    assert_error(http.post("/api/personas", json={"name": "ok"}), 400)
    assert_error(http.post("/api/personas", json={"name": "ok", "description": "  "}), 400)
    assert_error(http.post("/api/personas", json={"name": "alpha", "description": "a pirate"}),
                 409, code="already_exists")
    assert_error(http.post("/api/traits", json={"word": "happy", "opposite": "Happy"}), 400)
    assert_error(http.post("/api/traits", json={"word": "happy"}), 400, param="opposite")
    assert_error(http.get("/api/jobs/nosuchjob"), 404, code="job_not_found")


def test_steering_scale_bounds(http):
    assert_error(http.post("/api/steering-scale", json={"scale": "big"}), 400)
    assert_error(http.post("/api/steering-scale", json={"scale": 1e9}), 400)


def test_errors_are_counted_in_metrics(http):
    text = http.get("/metrics").text
    assert 'persona_steer_errors_total{status="404"}' in text
    assert 'persona_steer_errors_total{status="400"}' in text


def test_unknown_archetype_is_400_with_the_list(http):
    err = assert_error(http.post("/api/personas", json={"name": "newp", "archetype": "nosuch"}),
                       400, code="unknown_archetype", param="archetype")
    assert "pirate" in err["message"]
