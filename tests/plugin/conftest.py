"""One steering engine per test session (vLLM on CPU, tiny random Qwen3, fp32), plus the HF
reference model and a store of seeded random vectors."""
from __future__ import annotations

import json
import os

import pytest
import torch

from persona_steer.config import load_config
from persona_steer.store import VectorStore
from persona_steer.testmodels import build_random_qwen3
from persona_steer.vector_format import AXIS_NAME, AXIS_PERCENTILES, SteeringVector

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
HIDDEN, LAYERS = 256, 4
CHUNK = 64          # max_num_batched_tokens: long prompts are prefilled in chunks


def rand_rows(seed: int, layers: list[int], norm: float = 6.0) -> dict[int, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    rows = {}
    for layer in layers:
        v = torch.randn(HIDDEN, generator=g)
        rows[layer] = v / v.norm() * norm
    return rows


def make_axis(model_id: str, threshold: float = 3.0) -> SteeringVector:
    rows = rand_rows(99, list(range(LAYERS)), norm=1.0)
    stats = {str(L): {"mean": threshold, "std": 1.0,
                      "percentiles": {str(p): threshold + (p - 25) / 25 for p in AXIS_PERCENTILES}}
             for L in range(LAYERS)}
    return SteeringVector.build("axis", AXIS_NAME, rows, model=model_id,
                                metadata={"projection_stats": stats, "position": "response_mean"})


class PluginEnv:
    def __init__(self, root, model_path):
        self.model_path = model_path
        self.vectors = root / "vectors"
        self.store = VectorStore(self.vectors)
        self.settings = load_config(overrides={
            "model.name": model_path, "paths.vectors": str(self.vectors),
            "model.max_num_seqs": 16, "steering.safety.percentile": 25})
        mid = model_path
        for name, seed, layers in [("first", 1, [0]), ("middle", 2, [2]), ("last", 3, [3]),
                                   ("multi", 4, [0, 1, 3])]:
            self.store.save(SteeringVector.build("persona", name, rand_rows(seed, layers), model=mid))
        self.store.save(SteeringVector.build("trait", "calm", rand_rows(5, [1, 2]), model=mid))
        self.store.save(make_axis(mid))
        self._llm = None
        self._hf = None

    @property
    def llm(self):
        if self._llm is None:
            from vllm import LLM

            from steering_plugin.engine import engine_kwargs
            self._llm = LLM(**engine_kwargs(self.settings, self.model_path, max_model_len=512,
                                            max_num_batched_tokens=CHUNK,
                                            enable_chunked_prefill=True))
        return self._llm

    @property
    def hf(self):
        if self._hf is None:
            from transformers import AutoModelForCausalLM
            self._hf = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=torch.float32).eval()
        return self._hf


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> str:
    from persona_steer.testmodels import default_cache_dir
    return str(build_random_qwen3(default_cache_dir() / "models" / "tiny", "tiny"))


@pytest.fixture(scope="session")
def plugin_env(tmp_path_factory, tiny_model_path):
    env = PluginEnv(tmp_path_factory.mktemp("plugin"), tiny_model_path)
    yield env
    if env._llm is not None:
        env._llm.llm_engine.engine_core.shutdown() if hasattr(env._llm.llm_engine, "engine_core") else None
        del env._llm


@pytest.fixture(scope="module")
def stock_llm(plugin_env):
    """The same checkpoint served by vLLM's own Qwen3ForCausalLM (no plugin architecture)."""
    from vllm import LLM

    from steering_plugin.engine import engine_kwargs
    kw = engine_kwargs(plugin_env.settings, plugin_env.model_path, max_model_len=512,
                       max_num_batched_tokens=CHUNK, enable_chunked_prefill=True)
    kw.pop("hf_overrides")
    llm = LLM(**kw)
    yield llm
    llm.llm_engine.engine_core.shutdown()
