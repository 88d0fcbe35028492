"""Rollouts through an OpenAI-compatible server (the project's running server, shared session
fixture): the job reuses the serving engine instead of starting a second one."""
from __future__ import annotations

import json

import httpx
import pytest

from extraction.jobs import ExtractionError, run_persona_job, run_trait_job
from persona_steer.store import VectorStore
from tests.extraction.conftest import ext_settings


def test_trait_through_server(server, tmp_path):
    s = ext_settings(tmp_path, **{"model.name": server.model_id, "extraction.temperature": 0.0})
    vec = run_trait_job(s, "gloomy", "cheerful", rollout_backend="openai",
                        base_url=server.base_url + "/v1")
    assert vec.metadata["rollout_backend"] == "openai" and vec.metadata["model"] == server.model_id
    assert VectorStore(tmp_path / "vectors").load("trait", "gloomy").content_hash() == \
        vec.content_hash()
    # The activations ran over exactly the tokens the server generated: one rollout file per
    # prompt, the word's and its opposite's, and the assistant's (monitoring's spread reads them)
    files = list((tmp_path / "cache").glob("extraction/*/rollouts/*.json"))
    prompts = [json.loads(vec.metadata[k]) for k in ("prompts", "opposite_prompts", "assistant_prompts")]
    assert len(files) == sum(map(len, prompts)) == 16
    sample = json.loads(files[0].read_text())["samples"][0]
    r = httpx.post(server.base_url + "/v1/completions", timeout=120, json={
        "model": server.model_id, "prompt": sample["prompt_ids"], "max_tokens": 8,
        "temperature": 0.0, "return_token_ids": True, "skip_special_tokens": False})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["token_ids"] == sample["response_ids"]


def test_sampled_rollouts_through_server_are_reproducible(server, tmp_path):
    """Each rollout carries its own seed, so the same sampled job on an empty cache gives the
    same vector however the server batches the rollouts (without seeds they follow the
    engine's random state, which other requests move)."""
    hashes = []
    for run in ("a", "b"):
        s = ext_settings(tmp_path / run, **{"model.name": server.model_id,
                                            "extraction.temperature": 1.0})
        vec = run_trait_job(s, "gloomy", "cheerful", rollout_backend="openai",
                            base_url=server.base_url + "/v1")
        hashes.append(vec.content_hash())
    assert hashes[0] == hashes[1]


def test_description_through_server_fails_clearly(server, tmp_path):
    # no template fallback (config.yaml ships one): the model's own failure must surface
    s = ext_settings(tmp_path, **{"model.name": server.model_id,
                                  "extraction.writer.fallback": "none"})
    with pytest.raises(ExtractionError, match="^the served model did not write 5 usable system prompts "
                                              "for 'grump' after 3 attempts"):
        run_persona_job(s, "grump", description="a grumpy old lighthouse keeper",
                        rollout_backend="openai", base_url=server.base_url)
    assert not (tmp_path / "vectors").exists() or not list((tmp_path / "vectors").rglob("*.*"))


def test_unreachable_server_is_a_clear_error(tmp_path):
    s = ext_settings(tmp_path)
    with pytest.raises(ExtractionError, match="^rollouts failed \\(openai\\): "):
        run_trait_job(s, "calm", "angry", rollout_backend="openai",
                      base_url="http://127.0.0.1:9/v1", openai_model="x")
