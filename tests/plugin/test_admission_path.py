"""One steering resolution path: a request from this server and a stock-style request (`LLM`,
`extra_args` only) both pass vLLM's real InputProcessor, where admission alone checks the
vectors, pins their hashes and salts the prefix cache; the server adds none of its own."""
from __future__ import annotations

from types import SimpleNamespace

from persona_steer import resolve
from persona_steer.steering_spec import build_spec
from .test_steering_engine import _gen_one, prompt_ids


def _server_request(plugin_env, **fields):
    """What the server sends the engine for these API fields (its own functions, its state)."""
    from server.generation import engine_prompt, resolve_steering, sampling_params
    from server.state import ServerState

    state = ServerState(plugin_env.settings)
    body = {"persona": None, "strength": None, "blend": None, "traits": None, "scale": None,
            "safety": None, "monitor": None, "steer_tokens": None, **fields}
    steering = resolve_steering(state, SimpleNamespace(**body))
    req = SimpleNamespace(n=1, seed=None, stop=None, ignore_eos=True, response_format=None,
                          temperature=0.0, top_p=None, top_k=None, min_p=None,
                          presence_penalty=None, frequency_penalty=None,
                          repetition_penalty=None, logit_bias=None)
    params = sampling_params(req, 4, steering, stream=False, logprobs=1)
    return steering, params, engine_prompt


def _admitted(llm, ids, params, rid):
    """The engine request vLLM's front end builds (our admission wrapper included)."""
    engine = llm.llm_engine
    return engine.input_processor.process_inputs(
        rid, {"prompt_token_ids": ids}, params, supported_tasks=engine.get_supported_tasks())


def test_admission_alone_pins_and_salts_and_stock_requests_get_the_same(plugin_env):
    from vllm import SamplingParams

    llm = plugin_env.llm
    hf = llm.llm_engine.vllm_config.model_config.hf_config
    shape = resolve.ModelShape.from_hf_config(hf)
    assert shape == resolve.ModelShape(256, 4, plugin_env.model_path, (0, 1, 2, 3))
    ids = prompt_ids(90, 300)                           # several full KV blocks

    steering, params, engine_prompt = _server_request(
        plugin_env, persona="multi", strength=0.7, traits={"calm": -0.4}, safety=True)
    # the server builds the spec, nothing else: no hashes, no salt
    assert "hashes" not in params.extra_args["steering"]
    assert "cache_salt" not in engine_prompt(ids)

    server_req = _admitted(llm, ids, params, "server-form")
    spec = build_spec(persona="multi", strength=0.7, traits={"calm": -0.4}, safety=True,
                      scale=plugin_env.settings.steering.steering_scale)
    want = resolve.admit(spec, plugin_env.store, shape, 1.0, len(ids))
    content = {f"{k}/{n}": plugin_env.store.load(k, n).content_hash()
               for k, n in [("persona", "multi"), ("trait", "calm"), ("axis", "assistant_axis")]}
    assert want.pinned == want.hashes == content
    assert server_req.sampling_params.extra_args["steering"]["hashes"] == content
    assert server_req.cache_salt == want.salt and want.salt.startswith("steer-")

    flat = {"steer_persona": "multi", "steer_strength": 0.7, "steer_traits": "calm:-0.4",
            "steer_safety": True}
    stock_req = _admitted(llm, ids, SamplingParams(max_tokens=4, extra_args=flat), "stock-form")
    assert stock_req.sampling_params.extra_args["steer_hashes"] == content
    assert stock_req.cache_salt == server_req.cache_salt

    # the engine agrees: the stock form reuses the blocks the server's form computed
    llm.reset_prefix_cache()
    server_tokens, _, _ = _gen_one(llm, ids, steering.extra_args)
    stock_tokens, _, cached = _gen_one(llm, ids, flat)
    assert cached > 0, "the same steering must share cached blocks whichever form it came in"
    assert stock_tokens == server_tokens
    plain_tokens, _, plain_cached = _gen_one(llm, ids, None)
    assert plain_cached == 0, "an unsteered request must not reuse the steered blocks"


def test_server_form_errors_come_from_admission(plugin_env):
    """An unknown persona passes the server's spec building and is refused at admission, with
    the cause our server maps to a 404 naming it."""
    from vllm.exceptions import VLLMValidationError

    from server.errors import to_api_error
    from server.generation import engine_error

    llm = plugin_env.llm
    _, params, _ = _server_request(plugin_env, persona="nobody")
    try:
        _admitted(llm, prompt_ids(91, 10), params, "unknown")
    except VLLMValidationError as err:
        refused = err
    else:
        raise AssertionError("admission let an unknown persona through")
    assert isinstance(refused.__cause__, resolve.AdmissionError)
    api = engine_error(refused)
    assert (api.status, api.code, api.param) == (404, "persona_not_found", "persona")
    assert "nobody" in api.message and "first" in api.message
    assert to_api_error(refused.__cause__).status == 404
