"""The steering plugin inside a real vLLM engine (CPU, default compilation) vs an HF reference."""
from __future__ import annotations

import math
import shutil

import pytest
import torch

from persona_steer.vector_format import AXIS_NAME, SteeringVector
from steering_plugin.reference import hf_steering, prompt_logprobs
from .conftest import CHUNK, HIDDEN, LAYERS, rand_rows

TOL = 1e-4

try:  # what vLLM raises for a request refused at admission
    from vllm.exceptions import VLLMValidationError as REFUSED
except ImportError:  # pragma: no cover
    REFUSED = ValueError


def steer(personas=None, traits=None, scale=None, safety=False):
    body = {"personas": personas or {}, "traits": traits or {}, "safety": safety}
    if scale is not None:
        body["scale"] = scale
    return {"steering": body}


def prompt_ids(seed: int, n: int) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(10, 400, (n,), generator=g).tolist()


def vllm_prompt_lps(llm, ids, extra_args=None):
    from vllm import SamplingParams
    sp = SamplingParams(max_tokens=1, temperature=0, prompt_logprobs=0, extra_args=extra_args)
    out = llm.generate([{"prompt_token_ids": ids}], [sp], use_tqdm=False)[0]
    return [d[ids[i + 1]].logprob for i, d in enumerate(out.prompt_logprobs[1:])], out


def expected_delta(env, personas=None, traits=None, scale=1.0) -> torch.Tensor:
    """The formula of docs/steering.md, written out independently of the plugin's own code."""
    delta = torch.zeros(LAYERS, HIDDEN)
    for kind, table in (("persona", personas or {}), ("trait", traits or {})):
        for name, w in table.items():
            vec = env.store.load(kind, name)
            for layer, row in vec.per_layer().items():
                delta[layer] += w * row
    return delta * scale


def axis_cap(env):
    axis = env.store.load("axis", AXIS_NAME)
    stats = axis.meta_json("projection_stats")
    return {layer: (row / row.norm(), stats[str(layer)]["percentiles"]["25"])
            for layer, row in axis.per_layer().items()}


def hf_lps(env, ids, delta=None, cap=None):
    with hf_steering(env.hf, delta, cap):
        return prompt_logprobs(env.hf, ids)


def assert_close(a, b, tol=TOL):
    assert len(a) == len(b)
    worst = max(abs(x - y) for x, y in zip(a, b))
    assert worst <= tol, f"max |diff| {worst:.2e} > {tol}"


@pytest.mark.parametrize("name,weight", [("first", 1.5), ("middle", -0.7), ("last", 2.0)])
def test_single_layer_matches_hf_reference(plugin_env, name, weight):
    ids = prompt_ids(1, 40)
    got, _ = vllm_prompt_lps(plugin_env.llm, ids, steer({name: weight}))
    plain = hf_lps(plugin_env, ids)
    want = hf_lps(plugin_env, ids, expected_delta(plugin_env, {name: weight}))
    assert max(abs(x - y) for x, y in zip(want, plain)) > 1e-2, "vector should change the output"
    assert_close(got, want)


def test_multi_layer_multi_vector_blend_matches_hf(plugin_env):
    ids = prompt_ids(2, 48)
    personas, traits, scale = {"multi": 0.5, "middle": -0.8}, {"calm": 1.2}, 0.7
    got, _ = vllm_prompt_lps(plugin_env.llm, ids, steer(personas, traits, scale))
    want = hf_lps(plugin_env, ids, expected_delta(plugin_env, personas, traits, scale))
    assert_close(got, want)


def test_flat_vllm_xargs_form_equals_nested(plugin_env):
    ids = prompt_ids(3, 30)
    nested, _ = vllm_prompt_lps(plugin_env.llm, ids, steer({"first": 1.5, "multi": 0.3},
                                                           {"calm": -0.5}))
    flat, _ = vllm_prompt_lps(plugin_env.llm, ids, {
        "steer_persona": "first", "steer_strength": 1.5, "steer_blend": "multi:0.3",
        "steer_traits": "calm:-0.5"})
    assert flat == nested


def test_capping_matches_hf_and_changes_output(plugin_env):
    ids = prompt_ids(4, 40)
    got, _ = vllm_prompt_lps(plugin_env.llm, ids, steer({"first": 1.0}, safety=True))
    delta = expected_delta(plugin_env, {"first": 1.0})
    want = hf_lps(plugin_env, ids, delta, axis_cap(plugin_env))
    uncapped = hf_lps(plugin_env, ids, delta)
    assert max(abs(x - y) for x, y in zip(want, uncapped)) > 1e-2, "cap should bite"
    assert_close(got, want)
    # capping alone (no vectors) is a steering config too
    got_cap_only, _ = vllm_prompt_lps(plugin_env.llm, ids, steer(safety=True))
    assert_close(got_cap_only, hf_lps(plugin_env, ids, None, axis_cap(plugin_env)))


def test_chunked_prefill_matches_unchunked_reference(plugin_env):
    ids = prompt_ids(5, 3 * CHUNK + 17)   # prefilled in 4 chunks of <= 64 tokens
    personas = {"multi": 0.6}
    got, _ = vllm_prompt_lps(plugin_env.llm, ids, steer(personas, safety=True))
    want = hf_lps(plugin_env, ids, expected_delta(plugin_env, personas), axis_cap(plugin_env))
    assert_close(got, want)


CONFIGS = [
    None,
    steer({"first": 1.5}),
    steer({"multi": 0.5, "middle": -0.8}),
    steer(traits={"calm": -1.0}),
    steer({"first": 1.0}, safety=True),
    steer({"last": 1.0}, scale=2.0),
    steer({"multi": 0.5, "middle": -0.8}),   # same config as #2: must give the same output
]


def _generate(llm, prompts, configs, n_tokens=12):
    from vllm import SamplingParams
    sps = [SamplingParams(max_tokens=n_tokens, temperature=0, logprobs=0, ignore_eos=True,
                          extra_args=c) for c in configs]
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], sps, use_tqdm=False)
    return [(list(o.outputs[0].token_ids),
             [next(iter(d.values())).logprob for d in o.outputs[0].logprobs]) for o in outs]


def test_mixed_batch_each_request_equals_its_solo_run(plugin_env):
    llm = plugin_env.llm
    llm.reset_prefix_cache()
    prompts = [prompt_ids(10 + i, 20 + 3 * i) for i in range(len(CONFIGS))]
    prompts[-1] = prompts[2]
    batch = _generate(llm, prompts, CONFIGS)
    for i, (p, c) in enumerate(zip(prompts, CONFIGS)):
        llm.reset_prefix_cache()
        solo = _generate(llm, [p], [c])[0]
        assert batch[i][0] == solo[0], f"config {i}: tokens differ from solo run"
        assert_close(batch[i][1], solo[1])
    assert batch[2] == batch[-1]
    # the configs really differ from each other
    assert len({tuple(t) for t, _ in batch[:6]}) >= 5


def test_unsteered_is_bit_identical_to_stock_qwen3(plugin_env, stock_llm):
    prompts = [prompt_ids(30 + i, 25 + 5 * i) for i in range(3)]
    mixed = _generate(plugin_env.llm, prompts + prompts[:2], [None, None, None] + CONFIGS[1:3])
    stock = _generate(stock_llm, prompts + prompts[:2], [None] * 5)   # same batch shape
    for a, b in zip(mixed[:3], stock):
        assert a[0] == b[0]
        assert a[1] == b[1], "unsteered logprobs must be bit-identical to the stock model"


def _gen_one(llm, ids, extra_args=None, n_tokens=8):
    """Generation without prompt_logprobs (vLLM skips the prefix cache for those)."""
    from vllm import SamplingParams
    sp = SamplingParams(max_tokens=n_tokens, temperature=0, logprobs=0, ignore_eos=True,
                        extra_args=extra_args)
    out = llm.generate([{"prompt_token_ids": ids}], [sp], use_tqdm=False)[0]
    lps = [next(iter(d.values())).logprob for d in out.outputs[0].logprobs]
    return list(out.outputs[0].token_ids), lps, out.num_cached_tokens or 0


def test_prefix_cache_is_keyed_on_steering(plugin_env):
    llm = plugin_env.llm
    ids = prompt_ids(40, 300)               # several full KV blocks
    cfg = steer({"middle": 1.0})
    llm.reset_prefix_cache()
    cold_tokens, cold_lps, _ = _gen_one(llm, ids, cfg)
    llm.reset_prefix_cache()
    plain_tokens, _, _ = _gen_one(llm, ids, None)            # fills the cache, unsteered
    tokens, lps, cached = _gen_one(llm, ids, cfg)
    assert cached == 0, "a steered request must not reuse blocks computed without steering"
    assert tokens == cold_tokens and lps == cold_lps
    tokens2, lps2, cached2 = _gen_one(llm, ids, cfg)
    assert cached2 > 0, "requests with the same steering config should share cached blocks"
    assert tokens2 == cold_tokens
    assert_close(lps2, cold_lps, 1e-5)
    other_tokens, _, cached3 = _gen_one(llm, ids, steer({"middle": 1.01}))
    assert cached3 == 0, "a different weight is a different cache key"
    plain_tokens2, _, cached4 = _gen_one(llm, ids, None)
    assert cached4 > 0 and plain_tokens2 == plain_tokens


def test_hot_load_change_and_delete_without_restart(plugin_env):
    llm, store = plugin_env.llm, plugin_env.store
    ids = prompt_ids(50, 30)
    base, _ = vllm_prompt_lps(llm, ids)
    store.save(SteeringVector.build("persona", "fresh", rand_rows(60, [1]), model=plugin_env.model_path))
    one, _ = vllm_prompt_lps(llm, ids, steer({"fresh": 1.0}))
    assert max(abs(a - b) for a, b in zip(one, base)) > 1e-2
    assert_close(one, hf_lps(plugin_env, ids, expected_delta(plugin_env, {"fresh": 1.0})))
    store.save(SteeringVector.build("persona", "fresh", rand_rows(61, [2]), model=plugin_env.model_path))
    two, _ = vllm_prompt_lps(llm, ids, steer({"fresh": 1.0}))
    assert_close(two, hf_lps(plugin_env, ids, expected_delta(plugin_env, {"fresh": 1.0})))
    store.delete("persona", "fresh")
    with pytest.raises(REFUSED, match="fresh"):
        vllm_prompt_lps(llm, ids, steer({"fresh": 1.0}))
    still, _ = vllm_prompt_lps(llm, ids)
    assert still == base


@pytest.mark.parametrize("extra,match", [
    (steer({"nobody": 1.0}), "unknown persona 'nobody'.*available: first"),
    (steer({"first": float("nan")}), "finite"),
    (steer({"first": 1e6}), "bound"),
    (steer({"../etc": 1.0}), "invalid name"),
    ({"steering": "pirate"}, "must be an object"),
    ({"steer_blend": "first=1"}, "name:weight"),
])
def test_bad_steering_fails_alone(plugin_env, extra, match):
    ids = prompt_ids(70, 20)
    with pytest.raises(REFUSED, match=match):
        vllm_prompt_lps(plugin_env.llm, ids, extra)
    ok, _ = vllm_prompt_lps(plugin_env.llm, ids, steer({"first": 1.0}))
    assert all(math.isfinite(x) for x in ok)


def test_wrong_hidden_size_and_missing_axis_are_refused(plugin_env):
    store, llm = plugin_env.store, plugin_env.llm
    ids = prompt_ids(71, 20)
    g = torch.Generator().manual_seed(0)
    store.save(SteeringVector.build("persona", "narrow", {1: torch.randn(128, generator=g)},
                                    model=plugin_env.model_path))
    try:
        with pytest.raises(REFUSED, match="hidden_size 128.*256"):
            vllm_prompt_lps(llm, ids, steer({"narrow": 1.0}))
    finally:
        store.delete("persona", "narrow")
    axis_path = store.path_for("axis", AXIS_NAME)
    moved = axis_path.with_suffix(".bak")
    shutil.move(axis_path, moved)
    try:
        with pytest.raises(REFUSED, match="assistant axis"):
            vllm_prompt_lps(llm, ids, steer({"first": 1.0}, safety=True))
    finally:
        shutil.move(moved, axis_path)
    ok, _ = vllm_prompt_lps(llm, ids, steer({"first": 1.0}, safety=True))
    assert len(ok) == len(ids) - 1
