"""Preempted requests keep their steering (issue 24): a real engine with a KV cache too small
for its batch preempts and recomputes requests; each steered request must still produce exactly
what it produces alone. Its own small engine (16 KV blocks of 32 tokens, 8 sequences)."""
from __future__ import annotations

import pytest

from .conftest import CHUNK
from .test_steering_engine import prompt_ids, steer

CONFIGS = [steer({"first": 1.5}), None, steer({"multi": 0.5, "middle": -0.8}),
           steer(traits={"calm": -1.0}), steer({"first": 1.0}, safety=True),
           steer({"last": 1.0}, scale=2.0), steer({"first": 1.5}), steer({"middle": 0.3})]
N_TOKENS = 120


@pytest.fixture(scope="module")
def tight_llm(plugin_env):
    from vllm import LLM

    from steering_plugin.engine import engine_kwargs
    llm = LLM(**engine_kwargs(plugin_env.settings, plugin_env.model_path, max_model_len=256,
                              max_num_seqs=8, block_size=32, num_gpu_blocks_override=16,
                              max_num_batched_tokens=CHUNK, enable_chunked_prefill=True,
                              enable_prefix_caching=False, disable_log_stats=False))
    yield llm
    llm.llm_engine.engine_core.shutdown()


def _run(llm, prompts, configs):
    from vllm import SamplingParams
    sps = [SamplingParams(max_tokens=N_TOKENS, temperature=0, ignore_eos=True, extra_args=c)
           for c in configs]
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], sps, use_tqdm=False)
    return [list(o.outputs[0].token_ids) for o in outs]


def _preemptions(llm) -> float:
    return sum(m.value for m in llm.get_metrics() if m.name == "vllm:num_preemptions")


def test_preempted_requests_keep_their_steering(tight_llm):
    prompts = [prompt_ids(80 + i, 30 + 2 * i) for i in range(len(CONFIGS))]
    before = _preemptions(tight_llm)
    together = _run(tight_llm, prompts, CONFIGS)
    assert _preemptions(tight_llm) > before, "the KV cache was meant to force preemption"
    for i, (p, c) in enumerate(zip(prompts, CONFIGS)):
        assert together[i] == _run(tight_llm, [p], [c])[0], f"request {i} ({c}) changed"
    assert len({tuple(t) for t in together}) >= 6, "the configs really differ"
