"""Live monitoring's cost, side by side in one run (random Qwen3 on whatever device vLLM has).

    .venv/bin/python benchmarks/monitor_bench.py [--requests 32] [--names 8] [--new-tokens 64]

One engine (monitoring on, `steering.monitor.columns` 32), a batch of N requests, four ways:
unsteered, unsteered + monitoring NAMES vectors, steered, steered + monitoring. Prints tokens/s
of each and the ratios with/without monitoring (1.00 = no cost). Requests that do not monitor
run the same compiled forward as those that do (the projections run for every token), so the
"unsteered" row is also what monitoring-on costs requests that do not ask; compare it with an
engine built with columns 0 (`--columns 0`, a second run) for the buffers' own cost.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--names", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--prompt-tokens", type=int, default=64)
    ap.add_argument("--size", default="tiny", choices=["tiny", "mid"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--columns", type=int, default=32)
    a = ap.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

    from vllm import LLM, SamplingParams

    from persona_steer.config import load_config
    from persona_steer.store import VectorStore
    from persona_steer.testmodels import build_random_qwen3, default_cache_dir
    from persona_steer.vector_format import SteeringVector
    from steering_plugin.engine import engine_kwargs
    from steering_plugin.monitor_channel import monitor_rows

    model_path = str(build_random_qwen3(default_cache_dir() / "models" / a.size, a.size))
    from transformers import AutoConfig
    cfg = AutoConfig.from_pretrained(model_path)
    n, L, H = a.requests, cfg.num_hidden_layers, cfg.hidden_size
    store = VectorStore(tempfile.mkdtemp(prefix="bench-monitor-"))
    g = torch.Generator().manual_seed(0)
    for i in range(max(a.names, 1)):
        rows = {layer: torch.randn(H, generator=g) * 0.05 for layer in range(L)}
        store.save(SteeringVector.build("persona", f"p{i}", rows, model=model_path))
    settings = load_config(overrides={"model.name": model_path, "paths.vectors": str(store.root),
                                      "model.max_num_seqs": max(n, 8),
                                      "steering.monitor.columns": a.columns,
                                      "steering.monitor.max_names": max(a.names, 1)})
    llm = LLM(**engine_kwargs(settings, model_path, max_model_len=1024))
    prompts = [{"prompt_token_ids": torch.randint(10, 400, (a.prompt_tokens,), generator=g).tolist()}
               for _ in range(n)]
    names = [f"p{i}" for i in range(a.names)]

    def run(steer: bool, monitor: bool):
        body = {}
        if steer:
            body["personas"] = {"p0": 1.0}
        if monitor and a.columns:
            body["monitor"] = names
        sps = [SamplingParams(max_tokens=a.new_tokens, temperature=0, ignore_eos=True,
                              extra_args={"steering": body} if body else None) for _ in range(n)]
        best = float("inf")
        for _ in range(a.repeats):
            llm.reset_prefix_cache()
            t = time.perf_counter()
            outs = llm.generate(prompts, sps, use_tqdm=False)
            best = min(best, time.perf_counter() - t)
        if monitor and a.columns:
            assert all(len(monitor_rows(o) or []) == a.new_tokens for o in outs)
        return sum(len(o.outputs[0].token_ids) for o in outs) / best

    run(False, True)   # warm-up (compile, caches)
    tps = {(s, m): run(s, m) for s in (False, True) for m in (False, True)}
    print(f"\nmodel {a.size}: hidden {H}, {L} layers; {n} requests x {a.prompt_tokens} prompt + "
          f"{a.new_tokens} new tokens; monitoring {a.names} names (columns {a.columns}); "
          f"best of {a.repeats}; device {torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'}")
    for (s, m), v in tps.items():
        print(f"  {'steered' if s else 'unsteered':9s} {'+ monitor' if m else '         '}  "
              f"{v:9.1f} tok/s")
    for s in (False, True):
        print(f"  ratio with/without monitoring ({'steered' if s else 'unsteered'}): "
              f"{tps[(s, True)] / tps[(s, False)]:.2f}")


if __name__ == "__main__":
    main()
