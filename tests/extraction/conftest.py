"""Extraction test fixtures: small settings on the tiny random Qwen3, one vLLM engine per session.

  ext_settings(root, **overrides) -> Settings   temp datasets/vectors/cache under `root`
                                                (the cache's models/ links to the project's
                                                built models, so the tiny model is built once)
  ext_llm          the session's in-process vllm.LLM on the tiny model (eager, small)
  vllm_root        a root shared by the vLLM job tests (their cells are reused across tests)
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from persona_steer.config import PROJECT_ROOT, load_config

SMALL = {"model.name": "builtin:tiny", "extraction.num_questions": 1,
         "extraction.max_new_tokens": 8, "extraction.batch_size": 8,
         "extraction.target_layers": "all", "model.max_model_len": 512,
         "model.enforce_eager": True, "model.max_num_seqs": 32, "model.quantization": "none"}


def make_root(root: Path) -> Path:
    (root / "cache").mkdir(parents=True, exist_ok=True)
    link = root / "cache" / "models"
    if not link.exists():
        link.symlink_to(PROJECT_ROOT / ".cache" / "models", target_is_directory=True)
    return root


def ext_settings(root: Path, **overrides):
    make_root(root)
    data = dict(SMALL)
    data.update({"paths.datasets": str(root / "datasets"), "paths.vectors": str(root / "vectors"),
                 "paths.cache": str(root / "cache"), "paths.jobs": str(root / "jobs")})
    data.update({k.replace("__", "."): v for k, v in overrides.items()})
    return load_config(PROJECT_ROOT / "config.yaml", overrides=data, environ={})


@pytest.fixture(scope="session")
def tiny_path(tiny_model) -> str:
    return tiny_model


@pytest.fixture(scope="session")
def vllm_root(tmp_path_factory, tiny_model) -> Path:
    from extraction.datasets import init_datasets
    root = make_root(tmp_path_factory.mktemp("extraction_vllm"))
    init_datasets(ext_settings(root))
    return root


@pytest.fixture(scope="session")
def ext_llm(vllm_root, tiny_model):
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from extraction.rollouts import VLLMBackend
    backend = VLLMBackend(ext_settings(vllm_root), tiny_model)
    yield backend.llm
    backend._own = True
    backend.close()
