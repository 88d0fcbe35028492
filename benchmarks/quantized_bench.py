"""Quantized vs full-precision serving, steered vs not: weights memory and tokens/s.

    .venv/bin/python benchmarks/quantized_bench.py [--size mid] [--requests 16] [--new-tokens 32]

Runs the steerable engine (steering_plugin.engine.engine_kwargs) twice, each in its own process,
on the same random Qwen3 (`builtin:<size>`) and on its W4A16 checkpoint (`builtin:<size>-w4a16`,
compressed-tensors, served by vLLM's WNA16 kernel), both at bfloat16, eager unless --compile.
For each: the bytes of the weights the engine loads (the checkpoint's tensors, floating ones at
the serving dtype: vLLM's CPU backend repacks weights into buffers that its parameters do not
show, so they are counted from the files), and greedy tokens/s of one batch unsteered and steered
(every layer, a distinct persona per request), best of --repeats. Prints a table and the ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.engine_batch import best_throughput, random_personas, random_prompts  # noqa: E402

VARIANTS = ("full", "w4a16")


def one_variant(a) -> dict:
    import torch
    from vllm import LLM, SamplingParams

    from persona_steer.config import load_config
    from persona_steer.quantized_models import served_weight_bytes
    from persona_steer.testmodels import resolve_model
    from steering_plugin.engine import engine_kwargs

    name = f"builtin:{a.size}" + ("-w4a16" if a.variant == "w4a16" else "")
    model_path = resolve_model(name)
    cfg = json.load(open(os.path.join(model_path, "config.json")))
    n, layers, hidden = a.requests, cfg["num_hidden_layers"], cfg["hidden_size"]
    g = torch.Generator().manual_seed(0)
    vec_dir = str(random_personas(n, layers, hidden, name, g).root)
    settings = load_config(overrides={"model.name": name, "paths.vectors": vec_dir,
                                      "model.dtype": "bfloat16", "model.max_num_seqs": max(n, 8),
                                      "model.enforce_eager": not a.compile})
    llm = LLM(**engine_kwargs(settings, model_path, max_model_len=1024))
    prompts = random_prompts(n, a.prompt_tokens, g)

    def run(steered: bool) -> float:
        sps = [SamplingParams(max_tokens=a.new_tokens, temperature=0, ignore_eos=True,
                              extra_args={"steering": {"personas": {f"p{i}": 1.0}}}
                              if steered else None) for i in range(n)]
        return best_throughput(llm, prompts, sps, a.repeats)[0]

    run(False)   # warm-up
    return {"variant": a.variant, "model": name,
            "weights_bytes": served_weight_bytes(model_path, torch.bfloat16),
            "unsteered": run(False), "steered": run(True)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="mid", choices=["tiny", "mid"])
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--compile", action="store_true",
                    help="torch.compile the engines (default: eager, minutes faster to start)")
    ap.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)   # child process
    a = ap.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    if a.variant:
        print("RESULT " + json.dumps(one_variant(a)), flush=True)
        return
    results = {}
    for variant in VARIANTS:
        out = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--variant", variant],
                             capture_output=True, text=True)
        lines = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
        if not lines:
            sys.exit(f"{variant} run failed:\n{out.stderr[-3000:]}")
        results[variant] = json.loads(lines[-1][7:])
    print(f"\nbuiltin:{a.size}, bfloat16, {'compiled' if a.compile else 'eager'}; "
          f"{a.requests} requests x {a.prompt_tokens} prompt + {a.new_tokens} new tokens, "
          f"greedy, best of {a.repeats}; steered = every layer, a distinct persona per request")
    print(f"  {'':8s} {'weights MiB':>12s} {'unsteered tok/s':>16s} {'steered tok/s':>14s}")
    for v, r in results.items():
        print(f"  {v:8s} {r['weights_bytes'] / 2**20:12.1f} {r['unsteered']:16.1f} "
              f"{r['steered']:14.1f}")
    f, q = results["full"], results["w4a16"]
    print(f"  weights w4a16 / full:              {q['weights_bytes'] / f['weights_bytes']:.3f}")
    print(f"  tok/s w4a16 / full (unsteered):    {q['unsteered'] / f['unsteered']:.3f}")
    print(f"  tok/s steered / unsteered (full):  {f['steered'] / f['unsteered']:.3f}")
    print(f"  tok/s steered / unsteered (w4a16): {q['steered'] / q['unsteered']:.3f}")


if __name__ == "__main__":
    main()
