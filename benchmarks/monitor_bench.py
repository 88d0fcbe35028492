"""Live monitoring's cost, measured against the machine's own noise (random Qwen3, any device).

    .venv/bin/python benchmarks/monitor_bench.py [--rounds 30] [--requests 32] [--names 8]

Two engines side by side (monitoring on, `steering.monitor.columns` 32, and off, columns 0) and
a batch of N requests, run eight ways in every round: on the monitoring engine unsteered,
unsteered again (the A/A control), unsteered with every request monitoring NAMES vectors; on the
engine without monitoring unsteered; and the same four steered. "Engine with/without monitoring"
is what requests that do not ask pay for the engine having monitoring on; "asking / not asking"
what asking costs. The rounds interleave the configurations in a new seeded random order each
round, every measured batch preceded by a short untimed one of the same configuration (the first
batch after the other engine ran is slower: in a fixed order that showed as a 20% A/A gap), and
each ratio is taken within its round, so drift in the machine's load cancels out. Printed per ratio:
the median over rounds and its spread (25th-75th percentile, min-max) beside the A/A control's,
which is what identical work reads as on this machine; a monitoring ratio is only a measured
cost where it leaves the control's spread. Two measures: wall-clock tokens/s, and tokens per
CPU-second of this process and its engine processes (user + system time: on a shared machine the
time others take the cores from the engine shows in the first, much less in the second). The
load average is printed before and after.

Requests that do not monitor run the same compiled forward as those that do (the projections run
for every token, a column with no direction is zeros); only asking adds the per-step read-back.
The engine that waits while the other runs sleeps (`model.cpu_wait_us`), taking no CPU.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.engine_batch import random_personas, random_prompts  # noqa: E402

OFF = " (engine without monitoring)"
CONFIGS = (("unsteered", False, False), ("unsteered A/A", False, False),
           ("unsteered + monitor", False, True), ("unsteered" + OFF, False, False),
           ("steered", True, False), ("steered A/A", True, False),
           ("steered + monitor", True, True), ("steered" + OFF, True, False))
RATIOS = (("unsteered: A/A control", "unsteered A/A", "unsteered"),
          ("unsteered, not asking: engine with/without monitoring", "unsteered", "unsteered" + OFF),
          ("unsteered: asking for the names / not asking", "unsteered + monitor", "unsteered"),
          ("steered: A/A control", "steered A/A", "steered"),
          ("steered, not asking: engine with/without monitoring", "steered", "steered" + OFF),
          ("steered: asking for the names / not asking", "steered + monitor", "steered"))


def quantiles(values: list[float]) -> tuple[float, float, float]:
    """(25th, 50th, 75th percentile); a single value is all three."""
    if len(values) < 2:
        return values[0], values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[1], q[2]


def round_order(round_index: int) -> list[int]:
    """The configurations' order in one round: a seeded shuffle, so no configuration always
    follows the same one (what runs before a batch changes its speed)."""
    import random
    order = list(range(len(CONFIGS)))
    random.Random(round_index).shuffle(order)
    return order


def cpu_seconds() -> float:
    """User + system CPU time of this process and every process under it (the engine's)."""
    import psutil
    me, total = psutil.Process(), 0.0
    for proc in [me] + me.children(recursive=True):
        try:
            t = proc.cpu_times()
        except psutil.Error:          # a process that ended meanwhile
            continue
        total += t.user + t.system
    return total


def summarise(tps: dict[str, list[float]]) -> list[tuple[str, float, float, float, float, float]]:
    """Per ratio: (label, median, p25, p75, min, max) of the per-round ratios."""
    out = []
    for label, top, bottom in RATIOS:
        per_round = [a / b for a, b in zip(tps[top], tps[bottom])]
        p25, med, p75 = quantiles(per_round)
        out.append((label, med, p25, p75, min(per_round), max(per_round)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--names", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--prompt-tokens", type=int, default=64)
    ap.add_argument("--size", default="tiny", choices=["tiny", "mid"])
    ap.add_argument("--columns", type=int, default=32, help="the monitoring engine's columns")
    a = ap.parse_args()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

    from vllm import LLM, SamplingParams

    from persona_steer.config import load_config
    from persona_steer.testmodels import build_random_qwen3, default_cache_dir
    from steering_plugin.engine import engine_kwargs
    from steering_plugin.monitor_channel import monitor_rows

    load_before = os.getloadavg()
    model_path = str(build_random_qwen3(default_cache_dir() / "models" / a.size, a.size))
    from transformers import AutoConfig
    cfg = AutoConfig.from_pretrained(model_path)
    n, L, H = a.requests, cfg.num_hidden_layers, cfg.hidden_size
    g = torch.Generator().manual_seed(0)
    store = random_personas(max(a.names, 1), L, H, model_path, g, prefix="bench-monitor-")
    def engine(columns: int):
        settings = load_config(overrides={"model.name": model_path, "paths.vectors": str(store.root),
                                          "model.max_num_seqs": max(n, 8),
                                          "steering.monitor.columns": columns,
                                          "steering.monitor.max_names": max(a.names, 1)})
        return LLM(**engine_kwargs(settings, model_path, max_model_len=1024))

    llms = {True: engine(a.columns), False: engine(0)}
    prompts = random_prompts(n, a.prompt_tokens, g)
    names = [f"p{i}" for i in range(a.names)]

    def params(steer: bool, monitor: bool, tokens: int = a.new_tokens, count: int = n) -> list:
        body = {}
        if steer:
            body["personas"] = {"p0": 1.0}
        if monitor and a.columns:
            body["monitor"] = names
        return [SamplingParams(max_tokens=tokens, temperature=0, ignore_eos=True,
                               extra_args={"steering": body} if body else None)
                for _ in range(count)]

    batches = {label: params(steer, monitor) for label, steer, monitor in CONFIGS}
    warm_batches = {label: params(steer, monitor, tokens=4, count=min(8, n))
                    for label, steer, monitor in CONFIGS}

    def run(label: str, monitor: bool) -> tuple[float, float]:
        """(tokens per wall second, tokens per CPU second) of one batch."""
        llm = llms[not label.endswith(OFF)]
        llm.generate(prompts[:8], warm_batches[label], use_tqdm=False)    # untimed: wakes it up
        llm.reset_prefix_cache()
        t, c = time.perf_counter(), cpu_seconds()
        outs = llm.generate(prompts, batches[label], use_tqdm=False)
        elapsed, cpu = time.perf_counter() - t, cpu_seconds() - c
        if monitor and a.columns:
            assert all(len(monitor_rows(o) or []) == a.new_tokens for o in outs)
        tokens = sum(len(o.outputs[0].token_ids) for o in outs)
        return tokens / elapsed, tokens / cpu

    for label, _, monitor in CONFIGS:      # warm-up (compile, caches, columns)
        run(label, monitor)
    tps: dict[str, list[float]] = {label: [] for label, _, _ in CONFIGS}
    tpc: dict[str, list[float]] = {label: [] for label, _, _ in CONFIGS}
    loads = []
    for r in range(a.rounds):
        for i in round_order(r):
            label, _, monitor = CONFIGS[i]
            wall, cpu = run(label, monitor)
            tps[label].append(wall)
            tpc[label].append(cpu)
        loads.append(os.getloadavg()[0])
    load_after = os.getloadavg()

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)"
    print(f"\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; device {device}; load average "
          f"(1/5/15 min) before {'/'.join(f'{x:.1f}' for x in load_before)}, after "
          f"{'/'.join(f'{x:.1f}' for x in load_after)}; 1-min load over the rounds "
          f"{min(loads):.1f}-{max(loads):.1f} (median {statistics.median(loads):.1f})")
    print(f"model {a.size}: hidden {H}, {L} layers; {n} requests x {a.prompt_tokens} prompt + "
          f"{a.new_tokens} new tokens, greedy; monitoring {a.names} names (columns {a.columns} vs 0); "
          f"{a.rounds} rounds in shuffled order, one timed batch per configuration per round")
    print("\n| configuration | tok/s (wall), median | 25th-75th pct | tok per CPU-s, median | 25th-75th pct |")
    print("|---|---|---|---|---|")
    for label, _, _ in CONFIGS:
        w, c = quantiles(tps[label]), quantiles(tpc[label])
        print(f"| {label} | {w[1]:.0f} | {w[0]:.0f}-{w[2]:.0f} | {c[1]:.0f} | {c[0]:.0f}-{c[2]:.0f} |")
    for title, values in (("wall-clock tok/s", tps), ("tokens per CPU-second", tpc)):
        print(f"\n| ratio of {title} (per round) | median over rounds | 25th-75th pct | min-max |")
        print("|---|---|---|---|")
        for label, med, p25, p75, lo, hi in summarise(values):
            print(f"| {label} | **{med:.3f}** | {p25:.3f}-{p75:.3f} | {lo:.2f}-{hi:.2f} |")


if __name__ == "__main__":
    main()
