"""Sampling defaults: what a request gets for the fields it leaves out.

Like `vllm serve` (model.generation_config: auto), the model's generation_config.json decides,
then OpenAI's values; a request's own value always wins. vLLM's extensions top_k, min_p and
repetition_penalty are accepted and checked. The live test runs its own server on a copy of the
tiny model whose generation_config.json sets top_k 1 (greedy), temperature 0.8 and
max_new_tokens 6."""
from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import httpx
import pytest

from server.generation import OPENAI_SAMPLING_DEFAULTS, Steering, sampling_params

MODEL_DEFAULTS = {"temperature": 0.8, "top_k": 1, "max_new_tokens": 6}


def _req(**fields):
    base = dict(n=1, seed=None, stop=None, ignore_eos=False, response_format=None)
    base.update({k: None for k in OPENAI_SAMPLING_DEFAULTS})
    base.update(fields)
    return SimpleNamespace(**base)


def test_request_then_model_then_openai_defaults():
    unsteered = Steering(spec=None, extra_args=None, applied={})
    p = sampling_params(_req(), 8, unsteered, stream=False, logprobs=None)
    assert (p.temperature, p.top_p, p.top_k, p.min_p) == (1.0, 1.0, 0, 0.0)
    assert (p.presence_penalty, p.frequency_penalty, p.repetition_penalty) == (0.0, 0.0, 1.0)
    model = {"temperature": 0.6, "top_p": 0.95, "top_k": 20, "repetition_penalty": 1.05}
    p = sampling_params(_req(top_p=0.5), 8, unsteered, stream=False, logprobs=None, defaults=model)
    assert (p.temperature, p.top_p, p.top_k, p.repetition_penalty) == (0.6, 0.5, 20, 1.05)
    p = sampling_params(_req(temperature=0.0, top_k=0), 8, unsteered, stream=False, logprobs=None,
                        defaults=model)
    assert p.temperature == 0.0 and p.top_k in (0, -1)       # the request's 0 is not "left out"


@pytest.fixture(scope="module")
def defaults_server(tmp_path_factory, tiny_model):
    from tests.conftest import live_server
    root = tmp_path_factory.mktemp("sampling-defaults")
    model = root / "model"
    shutil.copytree(tiny_model, model)
    gen_path = model / "generation_config.json"
    gen = json.loads(gen_path.read_text())
    gen.update(MODEL_DEFAULTS, do_sample=True)
    gen_path.write_text(json.dumps(gen))
    with live_server(root, str(model)) as live:
        yield live


def _chat(srv, **fields) -> dict:
    body = {"messages": [{"role": "user", "content": "Tell me about the sea."}], **fields}
    return httpx.post(srv.url + "/v1/chat/completions", json=body, timeout=120).json()


def test_model_generation_config_sets_what_a_request_leaves_out(defaults_server):
    srv = defaults_server
    status = httpx.get(srv.url + "/api/status", timeout=30).json()
    assert status["sampling_defaults"] == {"temperature": 0.8, "top_k": 1, "max_tokens": 6}

    # no max_tokens: the model's 6; top_k 1 makes any seed pick the greedy tokens
    a, b = _chat(srv, seed=1), _chat(srv, seed=2)
    assert a["usage"]["completion_tokens"] == 6 and a["choices"][0]["finish_reason"] == "length", a
    greedy = _chat(srv, temperature=0, max_tokens=6)
    text = greedy["choices"][0]["message"]["content"]
    assert a["choices"][0]["message"]["content"] == b["choices"][0]["message"]["content"] == text

    # the request's own values win: max_tokens, and top_k 0 (off) samples at the model's 0.8
    assert _chat(srv, max_tokens=9)["usage"]["completion_tokens"] == 9
    sampled = {_chat(srv, top_k=0, seed=s)["choices"][0]["message"]["content"] for s in (1, 2, 3)}
    assert sampled != {text} and len(sampled) > 1, sampled

    # the completions endpoint takes the same defaults (its max_tokens stays OpenAI's 16)
    r = httpx.post(srv.url + "/v1/completions", json={"prompt": "The sea", "seed": 5},
                   timeout=120).json()
    r2 = httpx.post(srv.url + "/v1/completions", json={"prompt": "The sea", "seed": 6},
                    timeout=120).json()
    assert r["usage"]["completion_tokens"] == 16
    assert r["choices"][0]["text"] == r2["choices"][0]["text"]


@pytest.mark.parametrize("field,value", [("top_k", -5), ("min_p", 1.5), ("repetition_penalty", 0),
                                         ("repetition_penalty", 3)])
def test_bad_vllm_sampling_extensions_are_400(server, field, value):
    r = httpx.post(server.url + "/v1/chat/completions", timeout=60,
                   json={"messages": [{"role": "user", "content": "hi"}], field: value})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == field and err["type"] == "invalid_request_error", err


def test_vllm_extensions_reach_the_engine(server):
    """top_k 1 on the stock-default tiny model equals greedy; the session server's model sets no
    defaults, so its /api/status shows none."""
    assert httpx.get(server.url + "/api/status", timeout=30).json()["sampling_defaults"] == {}
    msgs = [{"role": "user", "content": "Tell me about the sea."}]
    greedy = httpx.post(server.url + "/v1/chat/completions", timeout=60, json={
        "messages": msgs, "max_tokens": 8, "temperature": 0}).json()
    topk1 = httpx.post(server.url + "/v1/chat/completions", timeout=60, json={
        "messages": msgs, "max_tokens": 8, "temperature": 1.0, "top_k": 1, "seed": 3,
        "min_p": 0.1, "repetition_penalty": 1.0}).json()
    assert topk1["choices"][0]["message"]["content"] == greedy["choices"][0]["message"]["content"]


def test_generation_config_setting_reaches_the_engine_args(tmp_path):
    """model.generation_config is vLLM's --generation-config: `vllm` drops the model's defaults
    (the engine's get_diff_sampling_param then returns none); anything else is refused."""
    from persona_steer.config import ConfigError, load_config
    from steering_plugin.engine import engine_kwargs

    for value in ("auto", "vllm"):
        s = load_config(overrides={"model.generation_config": value,
                                   "paths.vectors": str(tmp_path)}, environ={})
        assert engine_kwargs(s, "some/model")["generation_config"] == value
    with pytest.raises(ConfigError, match="generation_config"):
        load_config(overrides={"model.generation_config": "/some/dir"}, environ={})


def test_logit_bias_reaches_the_engine_and_bad_values_are_400(server):
    """OpenAI's logit_bias ({token id: -100..100}): +100 makes greedy pick that token every time,
    -100 bans the token greedy picked first; bad keys, values and out-of-vocab ids are 400."""
    def completion(**fields):
        r = httpx.post(server.url + "/v1/completions", timeout=60, json={
            "prompt": "The sea", "max_tokens": 4, "temperature": 0, "return_token_ids": True,
            **fields})
        assert r.status_code == 200, r.text
        return r.json()["choices"][0]["token_ids"]

    greedy = completion()
    assert completion(logit_bias={"100": 100}) == [100] * 4
    banned = completion(logit_bias={str(greedy[0]): -100})
    assert greedy[0] not in banned, (greedy, banned)

    for bias, needle in (({"abc": 1}, "token ids"), ({"5": 500}, "between -100 and 100"),
                         ({"99999999": 5}, "out-of-vocab")):
        r = httpx.post(server.url + "/v1/chat/completions", timeout=60, json={
            "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "logit_bias": bias})
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["param"].startswith("logit_bias") and needle in err["message"], err
