"""Rollout backends: generate responses to rendered chat prompts, returning exact token ids.

  VLLMBackend    in-process vllm.LLM (pass `llm=` to reuse an engine someone else started)
  HFBackend      transformers generate (machines without vLLM)
  OpenAIBackend  an OpenAI-compatible server (e.g. our own running server): /v1/completions for
                 rollouts, /v1/chat/completions with response_format json_schema for JSON

Every backend returns the prompt's and the response's token ids, so the teacher-forced HF forward
that collects activations runs over the tokens that were actually generated.
"""
from __future__ import annotations

import json
import logging
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

from persona_steer.structured import json_schema_constraint

log = logging.getLogger(__name__)

BACKENDS = ("vllm", "hf", "openai")


def stable_seed(*parts: Any) -> int:
    """A seed that is the same in every process (Python's hash() is salted per process)."""
    return zlib.crc32(json.dumps(parts, sort_keys=True).encode()) & 0x7FFFFFFF


def render_prompt(tokenizer, system: str | None, user: str, enable_thinking: bool | None = None) -> str:
    messages = ([{"role": "system", "content": system}] if system else []) + \
        [{"role": "user", "content": user}]
    kw = {} if enable_thinking is None else {"enable_thinking": enable_thinking}
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **kw)


def encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def vllm_available() -> bool:
    try:
        import vllm  # noqa: F401
        return True
    except Exception:
        return False


class RolloutBackend:
    name = "base"

    def generate(self, prompt_ids: Sequence[list[int]], *, max_new_tokens: int,
                 temperature: float, seeds: Sequence[int]) -> list[list[int]]:
        raise NotImplementedError

    def generate_json(self, prompt_ids: list[int], messages: list[dict], schema: dict, *,
                      max_tokens: int, temperature: float, seed: int) -> str:
        raise NotImplementedError

    def close(self) -> None:
        pass


def _per_request_seeds_ok() -> bool:
    """vLLM 0.32 on CPU crashes the engine ("CPU Generator does not use offset") when a request
    with its own seed has its prefill split into chunks; on CPU, rely on the engine's seed."""
    import torch
    return torch.cuda.is_available()


class VLLMBackend(RolloutBackend):
    name = "vllm"

    def __init__(self, settings, model_path: str, llm=None):
        self._own = llm is None
        if llm is None:
            from vllm import LLM

            from steering_plugin.engine import export_engine_env
            m = settings.model
            export_engine_env(settings)
            llm = LLM(model=model_path, tokenizer=model_path, dtype=m.dtype,
                      max_model_len=m.max_model_len, max_num_seqs=m.max_num_seqs,
                      enforce_eager=m.enforce_eager, gpu_memory_utilization=m.gpu_memory_utilization,
                      seed=settings.extraction.seed)
        self.llm = llm

    def generate(self, prompt_ids, *, max_new_tokens, temperature, seeds):
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        params = [SamplingParams(max_tokens=max_new_tokens, temperature=temperature,
                                 seed=s if _per_request_seeds_ok() else None) for s in seeds]
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompt_ids],
                                 params, use_tqdm=False)
        return [list(o.outputs[0].token_ids) for o in outs]

    def generate_json(self, prompt_ids, messages, schema, *, max_tokens, temperature, seed):
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        sp = SamplingParams(max_tokens=max_tokens, temperature=temperature,
                            seed=seed if _per_request_seeds_ok() else None,
                            structured_outputs=json_schema_constraint(schema))
        out = self.llm.generate([TokensPrompt(prompt_token_ids=list(prompt_ids))], sp, use_tqdm=False)
        return out[0].outputs[0].text

    def close(self):
        if self._own and self.llm is not None:
            import gc
            try:   # stop the engine core process now, not whenever the GC gets to it
                self.llm.llm_engine.engine_core.shutdown()
            except Exception:
                pass
            self.llm = None
            gc.collect()


class HFBackend(RolloutBackend):
    name = "hf"

    def __init__(self, model, tokenizer, batch_size: int = 8):
        self.model, self.tok, self.batch_size = model, tokenizer, batch_size

    def _eos_ids(self) -> list[int]:
        ids = {self.tok.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")}
        gc = getattr(self.model, "generation_config", None)
        eos = getattr(gc, "eos_token_id", None)
        ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        return sorted(i for i in ids if isinstance(i, int) and i >= 0)

    def _run(self, prompts: Sequence[list[int]], max_new_tokens: int, temperature: float,
             seed: int) -> list[list[int]]:
        import torch
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, p in enumerate(prompts):           # left padding for generation
            ids[i, width - len(p):] = torch.tensor(p)
            mask[i, width - len(p):] = 1
        dev = next(self.model.parameters()).device
        torch.manual_seed(seed)
        eos = self._eos_ids()
        kw: dict[str, Any] = dict(max_new_tokens=max_new_tokens, pad_token_id=pad,
                                  eos_token_id=eos)
        if temperature > 0:
            kw.update(do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
        else:
            kw.update(do_sample=False)
        with torch.no_grad():
            out = self.model.generate(input_ids=ids.to(dev), attention_mask=mask.to(dev), **kw)
        res = []
        for row in out[:, width:].tolist():
            toks = []
            for t in row:
                toks.append(t)
                if t in eos:
                    break
            res.append(toks)
        return res

    def generate(self, prompt_ids, *, max_new_tokens, temperature, seeds):
        out: list[list[int]] = []
        for i in range(0, len(prompt_ids), self.batch_size):
            out += self._run(prompt_ids[i:i + self.batch_size], max_new_tokens, temperature,
                             seeds[i])
        return out

    def generate_json(self, prompt_ids, messages, schema, *, max_tokens, temperature, seed):
        # transformers has no grammar-constrained decoding: plain generation, then validation.
        toks = self._run([prompt_ids], max_tokens, temperature, seed)[0]
        return self.tok.decode(toks, skip_special_tokens=True)


def threaded_client(concurrency: int, **kwargs):
    """One httpx.Client shared by `concurrency` threads, with a connection and a keep-alive slot
    for each. With httpx's default of 20 keep-alive connections, more threads than that make
    the pool close "surplus" idle connections, and one it just handed to another thread can be
    closed while that thread reads from it: `httpx.ReadError: [Errno 9] Bad file descriptor`
    (httpcore 1.0 counts every connection, not the idle ones, so it happens at any load above
    20; a busy machine widens the window between the handing out and the close)."""
    import httpx
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return httpx.Client(limits=limits, **kwargs)


class OpenAIBackend(RolloutBackend):
    """Rollouts through an OpenAI-compatible server (our own server's engine, or stock vLLM)."""
    name = "openai"

    def __init__(self, base_url: str, tokenizer, api_key: str | None = None,
                 model: str | None = None, concurrency: int = 16, timeout: float = 600.0):
        if not base_url:
            raise ValueError("rollout_backend 'openai' needs base_url")
        base = base_url.rstrip("/")
        self.base = base if base.endswith("/v1") else base + "/v1"
        self.tok = tokenizer
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = threaded_client(concurrency, timeout=timeout, headers=headers)
        self.concurrency = concurrency
        self.model = model or self._first_model()

    def _first_model(self) -> str:
        r = self.http.get(f"{self.base}/models")
        r.raise_for_status()
        return r.json()["data"][0]["id"]

    def _post(self, route: str, body: dict) -> dict:
        r = self.http.post(f"{self.base}/{route}", json=body)
        if r.status_code >= 400:
            raise RuntimeError(f"{route} returned HTTP {r.status_code}: {r.text[:200]}")
        return r.json()

    def _one(self, prompt: list[int], max_new_tokens: int, temperature: float, seed: int) -> list[int]:
        # A per-request seed makes the rollouts, and so the vectors, independent of how the
        # server batches them (the server schedules prompts whole on CPU, where that matters).
        body = {"model": self.model, "prompt": list(prompt), "max_tokens": max_new_tokens,
                "temperature": temperature, "seed": seed, "return_token_ids": True,
                "skip_special_tokens": False}
        choice = self._post("completions", body)["choices"][0]
        if choice.get("token_ids") is not None:
            return list(choice["token_ids"])
        return encode(self.tok, choice.get("text") or "")   # server without token ids

    def generate(self, prompt_ids, *, max_new_tokens, temperature, seeds):
        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(lambda a: self._one(a[0], max_new_tokens, temperature, a[1]),
                                 zip(prompt_ids, seeds)))

    def generate_json(self, prompt_ids, messages, schema, *, max_tokens, temperature, seed):
        body = {"model": self.model, "messages": messages, "max_tokens": max_tokens,
                "temperature": temperature,
                "response_format": {"type": "json_schema",
                                    "json_schema": {"name": "output", "schema": schema}}}
        return self._post("chat/completions", body)["choices"][0]["message"].get("content") or ""

    def close(self):
        self.http.close()
