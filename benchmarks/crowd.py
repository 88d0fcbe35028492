"""A crowd: many concurrent streaming clients with mixed requests (plain, personas, strengths,
blends, traits, safety) for a while, with a disconnect storm in the middle.

    python benchmarks/crowd.py                       # starts a server on builtin:toy-persona
    python benchmarks/crowd.py --clients 64 --seconds 120
    python benchmarks/crowd.py --url URL [--api-key K]

Each client loops: pick a greedy request (its config and prompt by client and turn), stream it,
record time to first token and tokens. Every distinct request is first run alone, one at a time;
every answer in the crowd must equal its solo answer. Halfway through, every third client sends a
long request (thousands of tokens), reads its first chunk and drops the connection; the server
must abort those engine requests (persona_steer_aborted_total rises by exactly that many) while
the others go on unaffected. Prints errors, mismatches, p50/p99 time to first token and tokens/s;
exits 1 if any check fails. tests/server/test_srv_load.py runs a short one on the session server.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PROMPTS = ["Tell me about the sea.", "What do you think of the weather today?",
           "Describe your morning.", "How should I cook rice?"]
MAX_TOKENS = 24
STORM_TOKENS = 4000


def request_mix(status: dict) -> list[dict]:
    """Steering configs from what the server has: plain, each persona, a stronger persona, a
    blend, traits, and safety (when the store has the assistant axis)."""
    personas = status["available"]["personas"][:4]
    traits = status["available"]["traits"][:2]
    mix: list[dict] = [{}]
    mix += [{"persona": p} for p in personas]
    if personas:
        mix.append({"persona": personas[0], "strength": 0.6})
    if len(personas) >= 2:
        mix.append({"blend": {personas[0]: 0.5, personas[1]: -0.3}})
    if traits:
        mix.append({"traits": {traits[0]: 0.8}})
        if personas:
            mix.append({"persona": personas[-1], "traits": {traits[-1]: -0.6}})
    if status.get("axis"):
        mix.append({"safety": True})
        if personas:
            mix.append({"persona": personas[0], "safety": True})
    return mix


@dataclass
class Stream:
    text: str = ""
    ttft: float | None = None
    tokens: int = 0
    seconds: float = 0.0


@dataclass
class CrowdResult:
    clients: int
    seconds: float
    streams: list[Stream] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)
    dropped: int = 0
    aborted: float = 0.0            # persona_steer_aborted_total, after minus before
    abort_seconds: float | None = None   # storm to the last of its aborts counted

    @property
    def ok(self) -> bool:
        return not self.errors and not self.mismatches and self.aborted == self.dropped

    def report(self) -> str:
        ttfts = sorted(s.ttft for s in self.streams if s.ttft is not None)
        toks = sum(s.tokens for s in self.streams)
        per = [s.tokens / s.seconds for s in self.streams if s.seconds > 0 and s.tokens]

        def pct(p):
            return ttfts[min(len(ttfts) - 1, int(p * len(ttfts)))] * 1000 if ttfts else float("nan")
        return "\n".join([
            f"{self.clients} clients, {self.seconds:.0f} s: {len(self.streams)} streams, "
            f"{len(self.errors)} errors, {len(self.mismatches)} answers unequal to their solo run",
            f"time to first token: p50 {pct(0.50):.0f} ms, p99 {pct(0.99):.0f} ms",
            f"tokens/s: {toks / self.seconds:.1f} in all, "
            f"{statistics.median(per) if per else 0:.1f} per stream (median)",
            f"disconnect storm: {self.dropped} clients dropped mid-stream, "
            f"{self.aborted:.0f} engine requests aborted"
            + (f" (all counted {self.abort_seconds:.1f} s after the storm)"
               if self.abort_seconds is not None else "")])


async def metric(http: httpx.AsyncClient, name: str) -> float:
    text = (await http.get("/metrics")).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name))


async def stream_chat(http: httpx.AsyncClient, body: dict, *, drop_after_first: bool = False
                      ) -> Stream:
    """One streamed chat completion; raises on any error (HTTP status, error event, no
    [DONE]). With drop_after_first, closes the connection after the first content chunk."""
    out, t0, done = Stream(), time.perf_counter(), False
    async with http.stream("POST", "/v1/chat/completions", json={
            **body, "stream": True, "stream_options": {"include_usage": True}}) as r:
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {(await r.aread())[:300]!r}")
        async for line in r.aiter_lines():
            if not line.startswith("data: "):
                continue
            data = line[6:]
            if data == "[DONE]":
                done = True
                break
            chunk = json.loads(data)
            if "error" in chunk:
                raise RuntimeError(f"error event: {chunk['error']}")
            for c in chunk.get("choices") or []:
                piece = c["delta"].get("content") or ""
                if piece and out.ttft is None:
                    out.ttft = time.perf_counter() - t0
                out.text += piece
            if chunk.get("usage"):
                out.tokens = chunk["usage"]["completion_tokens"]
            if drop_after_first and out.ttft is not None:
                return out          # leaving the block closes the connection mid-stream
    if not done:
        raise RuntimeError("stream ended without [DONE]")
    out.seconds = time.perf_counter() - t0
    return out


def body_for(model: str, cfg: dict, prompt: str, max_tokens: int = MAX_TOKENS) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens, "temperature": 0, **cfg}


async def run_crowd(url: str, *, clients: int, seconds: float, api_key: str | None = None,
                    storm_at: float = 0.5, max_tokens: int = MAX_TOKENS,
                    log=print) -> CrowdResult:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    limits = httpx.Limits(max_connections=clients + 8, max_keepalive_connections=clients + 8)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=600,
                                 limits=limits) as http:
        status = (await http.get("/api/status")).json()
        model, mix = status["model"], request_mix(status)
        requests = [(c, p) for c in range(len(mix)) for p in range(len(PROMPTS))]
        log(f"{len(mix)} configs x {len(PROMPTS)} prompts; running each alone first ...")
        solo = {}
        for c, p in requests:
            solo[c, p] = (await stream_chat(http, body_for(model, mix[c], PROMPTS[p],
                                                           max_tokens))).text
        res = CrowdResult(clients, seconds)
        aborted0 = await metric(http, "persona_steer_aborted_total")
        start = time.monotonic()
        end, storm = start + seconds, start + seconds * storm_at
        storm_tokens = min(STORM_TOKENS, (status.get("max_model_len") or 2048) - 64)

        async def client(i: int) -> None:
            turn = 0
            while time.monotonic() < end:
                if i % 3 == 0 and time.monotonic() >= storm:   # a third drop out, mid-stream
                    c = i % len(mix)
                    body = {**body_for(model, mix[c], PROMPTS[0], storm_tokens),
                            "ignore_eos": True}
                    try:
                        await stream_chat(http, body, drop_after_first=True)
                        res.dropped += 1
                    except Exception as err:
                        res.errors.append(f"client {i} (storm): {err!r}")
                    return
                c, p = requests[(i * 7 + turn * 5) % len(requests)]
                turn += 1
                try:
                    s = await stream_chat(http, body_for(model, mix[c], PROMPTS[p], max_tokens))
                except Exception as err:
                    res.errors.append(f"client {i} {mix[c]}: {err!r}")
                    continue
                res.streams.append(s)
                if s.text != solo[c, p]:
                    res.mismatches.append(f"client {i} {mix[c]} {PROMPTS[p]!r}: "
                                          f"{s.text!r} != solo {solo[c, p]!r}")

        async def storm_aborts(storm_clients) -> None:
            """From the last drop: how long until the engine has aborted them all."""
            await asyncio.gather(*storm_clients)
            t0 = time.monotonic()
            while time.monotonic() - t0 < 120:
                if await metric(http, "persona_steer_aborted_total") - aborted0 >= res.dropped:
                    res.abort_seconds = time.monotonic() - t0
                    return
                await asyncio.sleep(0.2)

        tasks = [asyncio.create_task(client(i)) for i in range(clients)]
        await asyncio.gather(storm_aborts([t for i, t in enumerate(tasks) if i % 3 == 0]),
                             *tasks)
        res.seconds = time.monotonic() - start
        res.aborted = await metric(http, "persona_steer_aborted_total") - aborted0
        return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url")
    ap.add_argument("--api-key")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--max-tokens", type=int, default=MAX_TOKENS)
    a = ap.parse_args()
    proc, tmpdir = None, tempfile.TemporaryDirectory()
    try:
        if a.url:
            url = a.url.rstrip("/")
        else:
            from benchmarks import local_server
            t0 = time.monotonic()
            proc, url = local_server.start_server(Path(tmpdir.name), name="builtin:toy-persona")
            print(f"server on the toy model ready in {time.monotonic() - t0:.0f} s")
        res = asyncio.run(run_crowd(url, clients=a.clients, seconds=a.seconds,
                                    api_key=a.api_key, max_tokens=a.max_tokens))
        print(res.report())
        for line in (res.errors + res.mismatches)[:10]:
            print("  " + line)
        print("PASS" if res.ok else "FAIL")
        sys.exit(0 if res.ok else 1)
    finally:
        if proc is not None:
            from benchmarks import local_server
            local_server.stop_server(proc)
        tmpdir.cleanup()


if __name__ == "__main__":
    main()
