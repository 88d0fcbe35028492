"""Throughput of the HTTP server: 32 concurrent streaming chat requests, unsteered vs each with
its own steering config (32 distinct blends), through the real server and the openai SDK.

    python benchmarks/server_load.py                 # starts a server on builtin:tiny (CPU)
    python benchmarks/server_load.py --url URL [--api-key K] [--model-id ID]

Prints tokens/s for both and the ratio steered/unsteered (target: close to 1), plus the mean
time to first token. Random vectors are written into a temporary store when it starts its own
server; with --url it uploads them (named bench_*) and deletes them afterwards.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import local_server  # noqa: E402  (after the path insert)


def rand_vec(name, model_id, hidden, layers, seed):
    import torch

    from persona_steer.vector_format import SteeringVector
    g = torch.Generator().manual_seed(seed)
    rows = {}
    for l in layers:
        v = torch.randn(hidden, generator=g)
        rows[l] = v / v.norm() * 4.0
    return SteeringVector.build("persona", name, rows, model=model_id, description="bench")


def start_server(tmp: Path):
    t0 = time.monotonic()
    proc, url = local_server.start_server(tmp)
    print(f"server ready in {time.monotonic() - t0:.1f} s (process start to /health 200)")
    return proc, url, local_server.tiny_model()


async def run_batch(url, key, model_id, configs, max_tokens):
    import openai
    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key=key or "x", max_retries=0,
                                timeout=1200)
    msgs = [{"role": "user", "content": "Tell me a long story about the sea."}]

    async def one(cfg):
        t0 = time.perf_counter()
        ttft, n = None, 0
        s = await client.chat.completions.create(
            model=model_id, messages=msgs, max_tokens=max_tokens, temperature=0, stream=True,
            stream_options={"include_usage": True}, extra_body={**cfg, "ignore_eos": True})
        async for c in s:
            if c.choices and c.choices[0].delta.content and ttft is None:
                ttft = time.perf_counter() - t0
            if c.usage:
                n = c.usage.completion_tokens
        return n, ttft or 0.0

    t0 = time.perf_counter()
    res = await asyncio.gather(*(one(c) for c in configs))
    wall = time.perf_counter() - t0
    await client.close()
    toks = sum(n for n, _ in res)
    return toks / wall, sum(t for _, t in res) / len(res), toks


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url")
    ap.add_argument("--api-key")
    ap.add_argument("--model-id")
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    proc = None
    tmpdir = tempfile.TemporaryDirectory()
    tmp = Path(tmpdir.name)
    try:
        if a.url:
            url = a.url.rstrip("/")
        else:
            proc, url, _ = start_server(tmp)
        headers = {"Authorization": f"Bearer {a.api_key}"} if a.api_key else {}
        st = httpx.get(url + "/api/status", headers=headers, timeout=30).json()
        model_id = a.model_id or st["model"]
        layers = st["steerable_layers"] or list(range(st["num_layers"]))
        names = []
        for i in range(4):
            vec = rand_vec(f"bench_{i}", model_id, st["hidden_size"], layers, 1000 + i)
            r = httpx.put(f"{url}/api/personas/bench_{i}/vector", content=vec.to_bytes(),
                          headers=headers, timeout=60)
            r.raise_for_status()
            names.append(f"bench_{i}")
        n = a.requests
        plain = [{} for _ in range(n)]
        steered = [{"blend": {names[i % 4]: round(0.2 + 0.05 * i, 3),
                              names[(i + 1) % 4]: round(-0.3 + 0.02 * i, 3)}} for i in range(n)]
        asyncio.run(run_batch(url, a.api_key, model_id, plain[:4], 8))          # warm up
        best = {}
        for _ in range(a.rounds):
            for label, cfgs in (("unsteered", plain), ("steered", steered)):
                tps, ttft, toks = asyncio.run(run_batch(url, a.api_key, model_id, cfgs,
                                                        a.max_tokens))
                if tps > best.get(label, (0,))[0]:
                    best[label] = (tps, ttft, toks)
        for label, (tps, ttft, toks) in best.items():
            print(f"{label:10s} {n} concurrent streams: {tps:8.1f} tokens/s  "
                  f"mean TTFT {ttft * 1000:7.1f} ms  ({toks} tokens)")
        print(f"ratio steered/unsteered throughput ({n} distinct configs): "
              f"{best['steered'][0] / best['unsteered'][0]:.3f}")
        for name in names:
            httpx.delete(f"{url}/api/personas/{name}", headers=headers, timeout=30)
    finally:
        if proc is not None:
            local_server.stop_server(proc)
        tmpdir.cleanup()


if __name__ == "__main__":
    main()
