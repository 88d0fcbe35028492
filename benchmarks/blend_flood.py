"""Issue 24 at full size: many distinct steering blends through the server while a long steered
stream keeps running, then check the server still serves.

    python benchmarks/blend_flood.py                    # starts a server on the tiny model (CPU)
    python benchmarks/blend_flood.py --url URL [--api-key K] [--blends 10000] [--concurrency 20]

One long streamed chat (persona at strength 0.9, ignore_eos, as many tokens as the context
allows) runs the whole time; when it reaches its length another starts, so a long request is
always live. Meanwhile `--blends` short completions go through, each with its own trait weight
(`traits: {trait: 0.0001 * i}`: every one a distinct config). Prints how many failed, how the
long streams ended, blends per second, and /health at the end. Exits 1 on any failure.
Vectors are random (bench_flood_*); with --url they are uploaded and deleted afterwards.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import local_server  # noqa: E402  (after the path insert)

PERSONA, TRAIT = "bench_flood_pirate", "bench_flood_formal"


def rand_vec(kind, name, model_id, hidden, layers, seed):
    import torch

    from persona_steer.vector_format import SteeringVector
    g = torch.Generator().manual_seed(seed)
    rows = {}
    for layer in layers:
        v = torch.randn(hidden, generator=g)
        rows[layer] = v / v.norm() * 4.0
    return SteeringVector.build(kind, name, rows, model=model_id, description="bench")


async def flood(url, headers, model_id, n_blends, concurrency, long_tokens):
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=1200,
                                 limits=httpx.Limits(max_connections=concurrency + 8)) as client:
        done = asyncio.Event()
        longs: list[dict] = []

        async def one_long():
            rec = {"tokens": 0, "finish": None, "error": None, "status": None}
            longs.append(rec)
            body = {"model": model_id, "messages": [{"role": "user", "content": "Sing."}],
                    "persona": PERSONA, "strength": 0.9, "max_tokens": long_tokens,
                    "ignore_eos": True, "temperature": 0, "stream": True}
            async with client.stream("POST", "/v1/chat/completions", json=body) as r:
                rec["status"] = r.status_code
                async for line in r.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    c = json.loads(line[6:])
                    if "error" in c:
                        rec["error"] = c["error"]
                    for ch in c.get("choices", []):
                        rec["tokens"] += bool(ch["delta"].get("content"))
                        rec["finish"] = ch.get("finish_reason") or rec["finish"]

        async def long_loop():
            while not done.is_set():
                await one_long()
                if longs[-1]["error"] or longs[-1]["status"] != 200:
                    return

        long_task = asyncio.create_task(long_loop())
        while not longs or longs[0]["tokens"] == 0:          # the long stream is running
            await asyncio.sleep(0.05)
        sem = asyncio.Semaphore(concurrency)
        failures: list = []
        sent = 0

        async def short(i):
            nonlocal sent
            async with sem:
                r = await client.post("/v1/completions", json={
                    "model": model_id, "prompt": f"Item {i}:", "max_tokens": 1,
                    "temperature": 0, "traits": {TRAIT: round(0.0001 * i, 4)}})
                sent += 1
                if r.status_code != 200:
                    failures.append((i, r.status_code, r.text[:300]))
                if sent % 1000 == 0:
                    print(f"  {sent} blends, {len(failures)} failed, "
                          f"long streams so far: {len(longs)}", flush=True)

        t0 = time.perf_counter()
        await asyncio.gather(*(short(i) for i in range(1, n_blends + 1)))
        wall = time.perf_counter() - t0
        long_alive = not long_task.done()
        done.set()
        await long_task
        return failures, longs, wall, long_alive


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url")
    ap.add_argument("--api-key")
    ap.add_argument("--model-id")
    ap.add_argument("--blends", type=int, default=10_000)
    ap.add_argument("--concurrency", type=int, default=20)
    ap.add_argument("--long-tokens", type=int, default=1900)
    a = ap.parse_args()
    proc = None
    tmpdir = tempfile.TemporaryDirectory()
    uploaded = []
    try:
        if a.url:
            url = a.url.rstrip("/")
        else:
            proc, url = local_server.start_server(Path(tmpdir.name), max_model_len=2048,
                                                  dtype="float32")
        headers = {"Authorization": f"Bearer {a.api_key}"} if a.api_key else {}
        st = httpx.get(url + "/api/status", headers=headers, timeout=30).json()
        model_id = a.model_id or st["model"]
        layers = st["steerable_layers"] or list(range(st["num_layers"]))
        for kind, name, seed in (("persona", PERSONA, 241), ("trait", TRAIT, 242)):
            vec = rand_vec(kind, name, model_id, st["hidden_size"], layers, seed)
            httpx.put(f"{url}/api/{kind}s/{name}/vector", content=vec.to_bytes(),
                      headers=headers, timeout=60).raise_for_status()
            uploaded.append((kind, name))
        failures, longs, wall, long_alive = asyncio.run(
            flood(url, headers, model_id, a.blends, a.concurrency, a.long_tokens))
        health = httpx.get(url + "/health", headers=headers, timeout=30)
        after = httpx.post(url + "/v1/completions", headers=headers, timeout=120, json={
            "model": model_id, "prompt": "After:", "max_tokens": 3, "persona": PERSONA})
        long_ok = all(r["status"] == 200 and r["error"] is None for r in longs) and all(
            r["finish"] == "length" for r in longs[:-1])
        print(f"{a.blends} distinct blends in {wall:.1f} s ({a.blends / wall:.1f} blends/s), "
              f"{len(failures)} failed")
        for f in failures[:5]:
            print("  failed:", f)
        ends = ", ".join(f"{n} x {end}" for end, n in Counter(
            f"{r['finish']} after {r['tokens']} content chunks" for r in longs).items())
        print(f"long streams: {len(longs)} ({ends}); one still running when the last blend "
              f"finished: {long_alive}; all clean: {long_ok}")
        print(f"/health after: {health.status_code}; steered completion after: {after.status_code}")
        ok = not failures and long_ok and long_alive and health.status_code == 200 \
            and after.status_code == 200
        print("RESULT:", "server kept serving" if ok else "FAILED")
        sys.exit(0 if ok else 1)
    finally:
        if a.url:
            for kind, name in uploaded:
                httpx.delete(f"{url}/api/{kind}s/{name}", headers=headers, timeout=30)
        if proc is not None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        tmpdir.cleanup()


if __name__ == "__main__":
    main()
