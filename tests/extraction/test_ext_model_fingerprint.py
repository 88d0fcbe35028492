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
