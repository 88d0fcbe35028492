"""What the engine benchmarks share: random steering vectors, random prompts, a timed batch.

    from benchmarks.engine_batch import random_personas, random_prompts, best_throughput
    store = random_personas(n=32, layers=L, hidden=H, model=model_path, generator=g)
    tps, secs, outs = best_throughput(llm, random_prompts(32, 64, g), sampling_params, repeats=2)
"""
from __future__ import annotations

import tempfile
import time


def random_personas(n: int, layers: int, hidden: int, model: str, generator,
                    scale: float = 0.05, prefix: str = "bench-vectors-"):
    """A fresh VectorStore in a temporary folder holding personas p0..p{n-1}, each a random
    vector at every layer (small, so steered text stays a model's text)."""
    import torch

    from persona_steer.store import VectorStore
    from persona_steer.vector_format import SteeringVector

    store = VectorStore(tempfile.mkdtemp(prefix=prefix))
    for i in range(n):
        rows = {layer: torch.randn(hidden, generator=generator) * scale for layer in range(layers)}
        store.save(SteeringVector.build("persona", f"p{i}", rows, model=model))
    return store


def random_prompts(n: int, tokens: int, generator) -> list[dict]:
    """n prompts of `tokens` random ids each (ids 10..399 exist in every test model's vocabulary)."""
    import torch
    return [{"prompt_token_ids": torch.randint(10, 400, (tokens,), generator=generator).tolist()}
            for _ in range(n)]


def timed_batch(llm, prompts: list[dict], sampling_params) -> tuple[float, list]:
    """Seconds for one generate() of the whole batch, from an empty prefix cache, and its outputs."""
    llm.reset_prefix_cache()
    start = time.perf_counter()
    outs = llm.generate(prompts, sampling_params, use_tqdm=False)
    return time.perf_counter() - start, outs


def best_throughput(llm, prompts: list[dict], sampling_params, repeats: int):
    """(generated tokens/s, seconds, outputs) of the fastest of `repeats` runs of the batch."""
    best, outs = float("inf"), []
    for _ in range(repeats):
        secs, outs = timed_batch(llm, prompts, sampling_params)
        best = min(best, secs)
    return sum(len(o.outputs[0].token_ids) for o in outs) / best, best, outs
