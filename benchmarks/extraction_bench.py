"""Extraction speed: vLLM rollouts + one teacher-forced HF forward (this project) versus HF
transformers `generate` + the same hooked forward (the original system's way), same work.

    .venv/bin/python benchmarks/extraction_bench.py                  # 3 personas x 40 q x 64 tok, mid
    .venv/bin/python benchmarks/extraction_bench.py --questions 10 --tokens 32 --model builtin:tiny

Prints both times and the speed-up ratio (engine start-up is printed separately: a server job
reuses the running engine). Not a test: no assertion on time.
"""
from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="builtin:mid")
    ap.add_argument("--personas", default="pirate,robot,shakespearean")
    ap.add_argument("--questions", type=int, default=40)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=8, help="HF generate / forward batch")
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--eager", action="store_true", help="vLLM enforce_eager (no torch.compile)")
    a = ap.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

    import torch

    from extraction.activations import collect_means, load_hf_model
    from extraction.archetypes import ARCHETYPES
    from extraction.rollouts import HFBackend, VLLMBackend, encode, render_prompt, stable_seed
    from persona_steer.config import load_config
    from persona_steer.testmodels import resolve_model

    settings = load_config(overrides={"model.name": a.model, "model.enforce_eager": a.eager,
                                      "model.max_model_len": 1024}, environ={})
    path = resolve_model(a.model)
    model, tok = load_hf_model(path)
    personas = a.personas.split(",")
    from extraction.archetypes import QUESTIONS
    qs = [q for _, q in QUESTIONS][:a.questions]
    prompts, seeds = [], []
    for p in personas:
        variants = ARCHETYPES[p][2]
        for i, q in enumerate(qs):
            prompts.append(encode(tok, render_prompt(tok, variants[i % len(variants)], q)))
            seeds.append(stable_seed(p, i))
    n = len(prompts)
    print(f"model {a.model} (hidden {model.config.hidden_size}, {model.config.num_hidden_layers} "
          f"layers), {len(personas)} personas x {len(qs)} questions = {n} rollouts x "
          f"{a.tokens} new tokens, torch threads {torch.get_num_threads()}", flush=True)

    # Warm-up (first forward / first generate pay one-time costs; neither path should carry them).
    collect_means(model, [(prompts[0], prompts[1][:8])] * 2, tok.pad_token_id, a.batch_size)
    HFBackend(model, tok, a.batch_size).generate(prompts[:a.batch_size], max_new_tokens=2,
                                                 temperature=a.temperature, seeds=seeds)

    # --- this project: vLLM rollouts, then one hooked HF forward over the same tokens ----------
    t0 = time.perf_counter()
    vb = VLLMBackend(settings, path)
    t_start = time.perf_counter() - t0
    t0 = time.perf_counter()
    resp_v = vb.generate(prompts, max_new_tokens=a.tokens, temperature=a.temperature, seeds=seeds)
    t_roll_v = time.perf_counter() - t0
    vb.close()
    t0 = time.perf_counter()
    acts_v = collect_means(model, list(zip(prompts, resp_v)), tok.pad_token_id, a.batch_size)
    t_fwd_v = time.perf_counter() - t0
    ours = t_roll_v + t_fwd_v
    print(f"vLLM: start-up {t_start:.1f} s, rollouts {t_roll_v:.1f} s, forward {t_fwd_v:.1f} s",
          flush=True)

    # --- original way: HF generate (batched), then the same hooked forward --------------------
    hb = HFBackend(model, tok, a.batch_size)
    t0 = time.perf_counter()
    resp_h = hb.generate(prompts, max_new_tokens=a.tokens, temperature=a.temperature, seeds=seeds)
    t_roll_h = time.perf_counter() - t0
    t0 = time.perf_counter()
    acts_h = collect_means(model, list(zip(prompts, resp_h)), tok.pad_token_id, a.batch_size)
    t_fwd_h = time.perf_counter() - t0
    hf = t_roll_h + t_fwd_h

    tok_v, tok_h = sum(map(len, resp_v)), sum(map(len, resp_h))
    assert acts_v["response_mean"].shape == acts_h["response_mean"].shape
    print(f"vLLM engine start-up:            {t_start:8.1f} s (once; a server job reuses it)")
    print(f"vLLM rollouts + HF forward:      {ours:8.1f} s  (rollouts {t_roll_v:.1f} s, "
          f"{tok_v} tokens; forward {t_fwd_v:.1f} s)")
    print(f"HF generate + HF forward:        {hf:8.1f} s  (generate {t_roll_h:.1f} s, "
          f"{tok_h} tokens; forward {t_fwd_h:.1f} s)")
    print(f"speed-up (engine running):       {hf / ours:8.2f}x")
    print(f"speed-up (incl. engine start):   {hf / (ours + t_start):8.2f}x")
    print(f"generation tokens/s: vLLM {tok_v / t_roll_v:.0f}, HF {tok_h / t_roll_h:.0f} "
          f"({(tok_v / t_roll_v) / (tok_h / t_roll_h):.2f}x)")


if __name__ == "__main__":
    main()
