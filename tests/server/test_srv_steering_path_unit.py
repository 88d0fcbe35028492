"""The server's share of a request's steering, without an engine: it builds the spec and
extra_args only; front-end admission (steering_plugin.admission, the real function) pins the
hashes and the salt, the same for the server's request and a stock-style flat one, and its
refusals come back as the server's HTTP errors."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from persona_steer import resolve
from persona_steer.config import load_config
from persona_steer.steering_spec import build_spec
from persona_steer.store import VectorStore
from persona_steer.vector_format import AXIS_NAME, SteeringVector

HIDDEN, LAYERS, MODEL = 8, 4, "test/model"


def _vec(kind, name, layers, seed, **kw):
    g = torch.Generator().manual_seed(seed)
    return SteeringVector.build(kind, name, {L: torch.randn(HIDDEN, generator=g) for L in layers},
                                model=MODEL, **kw)


@pytest.fixture
def env(tmp_path):
    from server.state import ServerState
    from steering_plugin.engine import steering_overrides

    settings = load_config(overrides={"model.name": MODEL, "paths.vectors": str(tmp_path)})
    store = VectorStore(tmp_path)
    store.save(_vec("persona", "pirate", [1, 2], 1))
    store.save(_vec("trait", "formal", [2, 3], 2))
    stats = {str(L): {"percentiles": {"25": 1.0}} for L in range(LAYERS)}
    store.save(_vec("axis", AXIS_NAME, range(LAYERS), 3, metadata={"projection_stats": stats}))
    # the engine's hf_config as the engine stamps it (hf_overrides) on the model's own config
    hf = SimpleNamespace(hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                         **steering_overrides(settings))
    state = ServerState(settings)
    state.shape = resolve.ModelShape.from_hf_config(hf)
    return SimpleNamespace(state=state, store=store, hf=hf)


def _fields(**kw):
    base = dict(persona=None, strength=None, blend=None, traits=None, scale=None, safety=None,
                monitor=None, steer_tokens=None)
    return SimpleNamespace(**{**base, **kw})


def _params(steering):
    from server.generation import sampling_params
    req = SimpleNamespace(n=1, seed=None, stop=None, ignore_eos=False, response_format=None,
                          temperature=0.0, top_p=None, top_k=None, min_p=None,
                          presence_penalty=None, frequency_penalty=None, repetition_penalty=None,
                          logit_bias=None)
    return sampling_params(req, 4, steering, stream=False, logprobs=None)


def _admit(hf, params):
    from steering_plugin import admission
    request = SimpleNamespace(sampling_params=params, cache_salt=None, prompt_token_ids=[1, 2],
                              prompt_embeds=None)
    admission.admit(hf, request)
    return request


def test_server_sends_the_spec_and_admission_alone_pins_and_salts(env):
    from server.generation import engine_prompt, resolve_steering

    steering = resolve_steering(env.state, _fields(persona="pirate", strength=0.5,
                                                   traits={"formal": -0.3}, safety=True))
    assert steering.steered and "hashes" not in steering.extra_args["steering"]
    assert engine_prompt([1, 2]) == {"prompt_token_ids": [1, 2]}        # no salt from the server
    server_req = _admit(env.hf, _params(steering))

    spec = build_spec(persona="pirate", strength=0.5, traits={"formal": -0.3}, safety=True,
                      scale=env.state.scale)
    want = resolve.admit(spec, env.store, env.state.shape, env.hf.steering_scale, prompt_len=2)
    assert want.hashes == {"persona/pirate": env.store.content_hash("persona", "pirate"),
                           "trait/formal": env.store.content_hash("trait", "formal"),
                           f"axis/{AXIS_NAME}": env.store.content_hash("axis", AXIS_NAME)}
    assert server_req.sampling_params.extra_args["steering"]["hashes"] == want.pinned
    assert server_req.cache_salt == want.salt is not None

    flat = SimpleNamespace(extra_args={"steer_persona": "pirate", "steer_strength": 0.5,
                                       "steer_traits": "formal:-0.3", "steer_safety": "true"})
    stock_req = _admit(env.hf, flat)
    assert stock_req.sampling_params.extra_args["steer_hashes"] == want.pinned
    assert stock_req.cache_salt == server_req.cache_salt


def test_unsteered_and_monitor_only_requests(env):
    from server.generation import resolve_steering

    plain = resolve_steering(env.state, _fields())
    assert plain.extra_args is None and not plain.steered
    watch = resolve_steering(env.state, _fields(monitor=["pirate"]))
    assert not watch.steered and watch.monitor == ("pirate",)
    req = _admit(env.hf, _params(watch))
    assert req.cache_salt is None      # reading changes no output: no salt, the pin only
    assert req.sampling_params.extra_args["steering"]["hashes"] == {
        "persona/pirate": env.store.content_hash("persona", "pirate")}


@pytest.mark.parametrize("fields,status,code,param,listed", [
    (dict(persona="ghost"), 404, "persona_not_found", "persona", "pirate"),
    (dict(traits={"ghost": 1.0}), 404, "trait_not_found", "trait", "formal"),
    (dict(persona="pirate", monitor=["ghost"]), 404, "monitor_not_found", "monitor", "pirate"),
])
def test_admission_refusals_become_the_servers_http_errors(env, fields, status, code, param,
                                                           listed):
    from vllm.exceptions import VLLMValidationError

    from server.generation import engine_error, resolve_steering

    steering = resolve_steering(env.state, _fields(**fields))     # the server lets it through
    with pytest.raises(VLLMValidationError) as refused:
        _admit(env.hf, _params(steering))
    api = engine_error(refused.value)
    assert (api.status, api.code, api.param) == (status, code, param)
    assert "ghost" in api.message and listed in api.message      # names it, lists what exists


def test_safety_without_axis_and_monitoring_off(env):
    from vllm.exceptions import VLLMValidationError

    from server.generation import engine_error, resolve_steering

    env.store.delete("axis", AXIS_NAME)
    with pytest.raises(VLLMValidationError) as refused:
        _admit(env.hf, _params(resolve_steering(env.state, _fields(persona="pirate",
                                                                   safety=True))))
    api = engine_error(refused.value)
    assert (api.status, api.code, api.param) == (400, "axis_missing", "safety")
    assert "extract-axes" in api.message
    env.hf.steering_monitor_columns = 0
    with pytest.raises(VLLMValidationError) as refused:
        _admit(env.hf, _params(resolve_steering(env.state, _fields(monitor=["pirate"]))))
    api = engine_error(refused.value)
    assert (api.status, api.code, api.param) == (400, "monitor_off", "monitor")
