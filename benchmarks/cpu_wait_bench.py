"""CPU hosts: vLLM's spinning wait between the engine core and its worker, versus the plugin's
short sleep (`model.cpu_wait_us`), side by side in one run.

    .venv/bin/python benchmarks/cpu_wait_bench.py                 # builtin:tiny, 3 rounds
    .venv/bin/python benchmarks/cpu_wait_bench.py --rounds 5 --tokens 1000 --wait-us 50

Starts two servers on the tiny random Qwen3, one with `cpu_wait_us: 0` (vLLM's own spin) and one
with the given wait, each in its own session as a deployment would be. Rounds alternate between
them. Each round sends one batch request (n sequences x tokens, ignore_eos) to each server
alone, then another while two busy bystander processes run in this script's session (one per
core here: say a client, a test runner, a build beside the server) that record their longest
time off the CPU and their share of a core. Prints, for both: tokens/s and engine CPU seconds
per 1000 tokens (alone), tokens/s beside the bystanders with their longest time off the CPU and
mean CPU share; then the throughput ratio (alone).
Not a test: no assertion on time.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

BYSTANDERS = 2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.local_server import start_server, tiny_model  # noqa: E402  (after sys.path)

BYSTANDER = """
import sys, time
end = time.monotonic() + float(sys.argv[1])
t0 = prev = time.monotonic(); c0 = time.process_time(); worst = 0.0
while prev < end:
    now = time.monotonic(); worst = max(worst, now - prev); prev = now
print(f"{worst:.3f} {(time.process_time() - c0) / (prev - t0):.3f}")
"""


def engine_pids(proc: subprocess.Popen) -> list[int]:
    """The server's child processes (engine core, worker): same session as the server."""
    sid, pids = os.getsid(proc.pid), []
    for p in os.listdir("/proc"):
        if p.isdigit() and int(p) != proc.pid:
            try:
                if os.getsid(int(p)) == sid:
                    pids.append(int(p))
            except OSError:
                pass
    return pids


def cpu_seconds(pids: list[int]) -> float:
    tick, total = os.sysconf("SC_CLK_TCK"), 0
    for p in pids:
        try:
            f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
            total += int(f[11]) + int(f[12])
        except OSError:
            pass
    return total / tick


def one_round(url: str, model_id: str, pids: list[int], n: int, tokens: int,
              bystanders: int) -> dict:
    body = {"model": model_id, "prompt": "Tell me a long story about the sea.", "n": n,
            "max_tokens": tokens, "ignore_eos": True, "temperature": 1.0}
    est = max(5.0, n * tokens / 400)          # the bystander watches about as long as the batch
    bys = [subprocess.Popen([sys.executable, "-c", BYSTANDER, str(est)], stdout=subprocess.PIPE,
                            text=True) for _ in range(bystanders)]
    c0, t0 = cpu_seconds(pids), time.monotonic()
    r = httpx.post(url + "/v1/completions", json=body, timeout=1200)
    wall, cpu = time.monotonic() - t0, cpu_seconds(pids) - c0
    r.raise_for_status()
    toks = r.json()["usage"]["completion_tokens"]
    seen = [[float(x) for x in b.communicate()[0].split()] for b in bys] or [[0.0, 0.0]]
    return {"tok_s": toks / wall, "cpu_per_1k": cpu / toks * 1000,
            "gap_max": max(g for g, _ in seen), "share": sum(c for _, c in seen) / len(seen)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--n", type=int, default=16, help="sequences per batch request")
    ap.add_argument("--tokens", type=int, default=500)
    ap.add_argument("--wait-us", type=float, default=20.0)
    a = ap.parse_args()
    model = tiny_model()
    names = {"spin (cpu_wait_us 0)": 0.0, f"sleep (cpu_wait_us {a.wait_us:g})": a.wait_us}
    servers = {}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for i, (name, us) in enumerate(names.items()):
                proc, url = start_server(Path(tmp) / f"s{i}", cpu_wait_us=us)
                servers[name] = (proc, url, engine_pids(proc))
                print(f"{name}: ready, engine pids {servers[name][2]}", flush=True)
            for name, (_, url, pids) in servers.items():      # warm-up, not counted
                one_round(url, model, pids, 2, 16, 0)
            results = {name: [] for name in names}
            crowded = {name: [] for name in names}
            for r in range(a.rounds):
                for name, (_, url, pids) in servers.items():
                    res = one_round(url, model, pids, a.n, a.tokens, 0)
                    results[name].append(res)
                    busy = one_round(url, model, pids, a.n, a.tokens, BYSTANDERS)
                    crowded[name].append(busy)
                    print(f"round {r + 1} {name}: alone {res['tok_s']:.0f} tok/s, engine CPU "
                          f"{res['cpu_per_1k']:.2f} s/1k tok; beside {BYSTANDERS} busy processes "
                          f"{busy['tok_s']:.0f} tok/s, they were off the CPU up to "
                          f"{busy['gap_max']:.3f} s", flush=True)
        finally:
            for proc, _, _ in servers.values():
                with contextlib.suppress(OSError):
                    os.killpg(proc.pid, signal.SIGTERM)
            for proc, _, _ in servers.values():
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=30)
    print(f"\n{a.rounds} rounds of n={a.n} x {a.tokens} tokens (tiny model):")
    summary = {}
    for name, rows in results.items():
        tok = sum(x["tok_s"] for x in rows) / len(rows)
        cpu = sum(x["cpu_per_1k"] for x in rows) / len(rows)
        gap = max(x["gap_max"] for x in crowded[name])
        share = sum(x["share"] for x in crowded[name]) / len(rows)
        busy_tok = sum(x["tok_s"] for x in crowded[name]) / len(rows)
        summary[name] = tok
        print(f"  {name:24s} {tok:7.0f} tok/s   engine CPU {cpu:5.2f} s/1k tok   "
              f"beside the bystanders {busy_tok:5.0f} tok/s, they were off the CPU up to "
              f"{gap:.2f} s, {share:.0%} of a core each")
    spin, sleep = summary.values()
    print(f"  throughput ratio sleep/spin (alone): {sleep / spin:.3f}")


if __name__ == "__main__":
    main()
