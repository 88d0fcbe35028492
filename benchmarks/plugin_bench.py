"""Steering throughput, side by side in one run (mid-size random Qwen3 on whatever device vLLM has).

    .venv/bin/python benchmarks/plugin_bench.py [--requests 32] [--new-tokens 64] [--skip-hf]

Prints, on the same engine settings:
  1. a batch of N steered requests (vectors at every layer) vs the same batch unsteered;
  2. the batch with 1, 8 and N distinct steering configs;
  3. the original system's way (HF transformers generate + forward hooks, one config at a time)
     for the same N mixed-persona requests, and the plugin's speed-up over it.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.engine_batch import best_throughput, random_personas, random_prompts  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--prompt-tokens", type=int, default=64)
    ap.add_argument("--size", default="mid", choices=["tiny", "mid"])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--skip-hf", action="store_true")
    a = ap.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")

    from vllm import LLM, SamplingParams

    from persona_steer.config import load_config
    from persona_steer.testmodels import build_random_qwen3, default_cache_dir
    from steering_plugin.engine import engine_kwargs
    from steering_plugin.reference import hf_steering

    model_path = str(build_random_qwen3(default_cache_dir() / "models" / a.size, a.size))
    from transformers import AutoConfig
    cfg = AutoConfig.from_pretrained(model_path)
    n, L, H = a.requests, cfg.num_hidden_layers, cfg.hidden_size
    g = torch.Generator().manual_seed(0)
    store = random_personas(n, L, H, model_path, g)
    vec_dir = str(store.root)
    settings = load_config(overrides={"model.name": model_path, "paths.vectors": vec_dir,
                                      "model.max_num_seqs": max(n, 8)})
    llm = LLM(**engine_kwargs(settings, model_path, max_model_len=1024))
    prompts = random_prompts(n, a.prompt_tokens, g)

    def run(configs):
        sps = [SamplingParams(max_tokens=a.new_tokens, temperature=0, ignore_eos=True,
                              extra_args=None if c is None else
                              {"steering": {"personas": {f"p{c}": 1.0}}}) for c in configs]
        return best_throughput(llm, prompts, sps, a.repeats)

    run([None] * n)  # warm-up (compile, caches)
    plain_tps, _, _ = run([None] * n)
    rows = [("unsteered", plain_tps)]
    results = {}
    for k in (1, 8, n):
        tps, secs, outs = run([i % k for i in range(n)])
        results[k] = (tps, secs, outs)
        rows.append((f"steered, {k} distinct configs", tps))
    print(f"\nmodel {a.size}: hidden {H}, {L} layers (all steered); {n} requests x "
          f"{a.prompt_tokens} prompt + {a.new_tokens} new tokens; best of {a.repeats}")
    for label, tps in rows:
        print(f"  {label:32s} {tps:10.1f} tok/s")
    print(f"  ratio steered(1 config)/unsteered      {results[1][0] / plain_tps:.3f}")
    print(f"  ratio {n} configs / 1 config            {results[n][0] / results[1][0]:.3f}")

    if a.skip_hf:
        return
    from transformers import AutoModelForCausalLM

    from persona_steer.vector_format import combine
    hf = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    t = time.perf_counter()
    hf_tokens = 0
    with torch.no_grad():
        for i, p in enumerate(prompts):   # one steering config at a time, as the original does
            delta = combine([(store.load("persona", f"p{i}"), 1.0)], 1.0, L, H)
            with hf_steering(hf, delta):
                ids = torch.tensor([p["prompt_token_ids"]])
                out = hf.generate(ids, max_new_tokens=a.new_tokens, min_new_tokens=a.new_tokens,
                                  do_sample=False)
            hf_tokens += out.shape[1] - ids.shape[1]
    hf_secs = time.perf_counter() - t
    vllm_secs = results[n][1]
    print(f"  HF generate + hooks, one config at a time: {hf_tokens / hf_secs:10.1f} tok/s "
          f"({hf_secs:.1f} s)")
    print(f"  speed-up of the plugin ({n} configs in one batch) over HF: {hf_secs / vllm_secs:.1f}x")


if __name__ == "__main__":
    main()
