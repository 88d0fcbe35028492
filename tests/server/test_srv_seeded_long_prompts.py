"""Seeded requests with long prompts, several at once: on CPU vLLM 0.32 a seeded request whose
prefill is split into chunks kills the engine (CPU torch.Generator has no set_offset), so the
plugin's engine settings schedule prompts whole there. The server must keep serving."""
from __future__ import annotations

import asyncio

import openai


def test_concurrent_seeded_long_prompts_keep_the_engine_alive(server, steer_vectors):
    words = " ".join(f"w{i}" for i in range(350))   # ~1,350 tokens on the tiny tokenizer

    async def run():
        client = openai.AsyncOpenAI(base_url=server.base_url + "/v1", api_key="x",
                                    max_retries=0, timeout=600)

        async def one(seed):
            r = await client.completions.create(model=server.model_id, prompt=words, max_tokens=4,
                                                temperature=1.0, seed=seed,
                                                extra_body={"persona": "alpha"})
            return r.choices[0].text

        try:
            return await asyncio.gather(*(one(s) for s in (1, 2, 3, 1)))
        finally:
            await client.close()

    texts = asyncio.run(run())
    assert texts[0] == texts[3], "same seed, same prompt and steering: same sample"
    assert server.get("/health").status_code == 200
    r = server.post("/v1/completions", json={"prompt": "hello", "max_tokens": 2})
    assert r.status_code == 200, r.text
