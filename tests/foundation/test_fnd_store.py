"""Vector format and store: round trips, atomic saves, name rules, bad tensors, corrupt files,
content hashes, compatibility checks, delete/clear."""
from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import save as st_save

from persona_steer.atomic import atomic_path, atomic_write_bytes
from persona_steer.store import VectorNotFound, VectorStore
from persona_steer.vector_format import (FORMAT_VERSION, REQUIRED_METADATA, SteeringVector,
                                         VectorFormatError, combine, validate_name)

from .conftest import make_vec


@pytest.fixture
def store(tmp_path):
    return VectorStore(tmp_path / "vectors")


def _raw_file(path, tensors, metadata):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(st_save(tensors, metadata=metadata))


def _meta(name="x", kind="persona", hidden=8, **kw):
    m = dict(kind=kind, name=name, description="", model="m", hidden_size=str(hidden),
             format_version=FORMAT_VERSION)
    m.update(kw)
    return m


# --- round trips --------------------------------------------------------------------------------
def test_save_load_roundtrip(store):
    vec = make_vec(metadata={"method": "mean-diff", "norms": {"1": 2.5}})
    path = store.save(vec)
    assert path == store.root / "personas" / "pirate.safetensors"
    back = store.load("persona", "pirate")
    assert torch.equal(back.vectors, vec.vectors) and torch.equal(back.layers, vec.layers)
    assert back.vectors.dtype == torch.float32 and back.layers.dtype == torch.int64
    assert back.metadata == vec.metadata
    for key in REQUIRED_METADATA:
        assert key in back.metadata
    assert back.metadata["hidden_size"] == "8" and back.metadata["format_version"] == FORMAT_VERSION
    assert back.meta_json("norms") == {"1": 2.5} and back.meta_json("method") == "mean-diff"
    assert back.per_layer().keys() == {1, 2}
    assert store.names("persona") == ["pirate"] and store.names("trait") == []
    entries = store.list()
    assert [(e.kind, e.name, e.layers, e.hidden_size) for e in entries] == [("persona", "pirate", [1, 2], 8)]
    assert entries[0].to_dict()["content_hash"] == vec.content_hash()


def test_bytes_roundtrip_and_file_is_plain_safetensors(store):
    from safetensors import safe_open
    vec = make_vec(kind="trait", name="formal", layers=(0, 3))
    path = store.save(vec)
    with safe_open(str(path), "pt") as f:       # any safetensors reader sees the contract
        assert set(f.keys()) == {"vectors", "layers"}
        assert f.metadata()["kind"] == "trait"
        assert f.get_tensor("layers").tolist() == [0, 3]
    again = SteeringVector.from_bytes(vec.to_bytes())
    assert torch.equal(again.vectors, vec.vectors)


def test_axis_roundtrip_with_baseline(store):
    baseline = torch.ones(2, 8)
    axis = make_vec(kind="axis", name="assistant_axis", extra={"baseline": baseline},
                    metadata={"projection_stats": {"1": {"percentiles": {"25": 1.0}}}})
    path = store.save(axis)
    assert path == store.root / "assistant_axis.safetensors"
    back = store.load("axis", "assistant_axis")
    assert torch.equal(back.extra["baseline"], baseline)
    assert store.names("axis") == ["assistant_axis"]
    with pytest.raises(VectorFormatError, match="always named 'assistant_axis'"):
        store.path_for("axis", "other")


def test_info(store):
    store.save(make_vec(metadata={"questions": ["q1", "q2"]}))
    info = store.info("persona", "pirate")
    assert info["layers"] == [1, 2] and info["hidden_size"] == 8
    assert info["metadata"]["questions"] == ["q1", "q2"]
    assert len(info["norms"]) == 2 and all(n > 0 for n in info["norms"])


def test_reload_after_overwrite_with_same_shape(store):
    store.save(make_vec(seed=1))
    first = store.load("persona", "pirate")
    store.save(make_vec(seed=2))                   # same size file, possibly same mtime tick
    second = store.load("persona", "pirate")
    assert not torch.equal(first.vectors, second.vectors)
    assert torch.equal(second.vectors, make_vec(seed=2).vectors)


def test_save_refuses_overwrite_when_asked(store):
    store.save(make_vec())
    with pytest.raises(FileExistsError, match="already exists"):
        store.save(make_vec(seed=3), overwrite=False)


# --- atomic writes --------------------------------------------------------------------------------
def test_atomic_save_leaves_no_temp_files(store):
    for seed in range(3):
        store.save(make_vec(seed=seed))
    store.save(make_vec(kind="trait", name="calm"))
    assert sorted(p.name for p in (store.root / "personas").iterdir()) == ["pirate.safetensors"]
    assert sorted(p.name for p in (store.root / "traits").iterdir()) == ["calm.safetensors"]
    from persona_steer.atomic import _UMASK
    mode = (store.root / "traits" / "calm.safetensors").stat().st_mode & 0o777
    assert mode == 0o666 & ~_UMASK                  # not mkstemp's 0600


def test_failed_write_keeps_old_file_and_no_temp(tmp_path):
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("crash mid-write")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f.bin"]


# --- names ----------------------------------------------------------------------------------------
BAD_NAMES = ["../evil", "a/b", "..", "Pirate", "a" * 65, "", "a b", "a.b", "pirat\u00e9", "x\x00",
             None, 5]


@pytest.mark.parametrize("name", BAD_NAMES, ids=repr)
def test_bad_names_refused_everywhere(store, name):
    with pytest.raises(VectorFormatError, match="invalid name"):
        validate_name(name)
    with pytest.raises(VectorFormatError, match="invalid name"):
        store.path_for("persona", name)
    with pytest.raises(VectorFormatError, match="invalid name"):
        store.load("trait", name)
    with pytest.raises(VectorFormatError, match="invalid name"):
        store.delete("persona", name)
    with pytest.raises(VectorFormatError):
        make_vec(name=name)
    assert not (store.root.parent / "evil.safetensors").exists()


def test_good_names_accepted(store):
    for name in ["a", "a" * 64, "snake_case-1", "0"]:
        store.save(make_vec(name=name))
    assert len(store.names("persona")) == 4


def test_bad_kind_refused(store):
    with pytest.raises(VectorFormatError, match="invalid kind"):
        store.path_for("personas", "x")
    with pytest.raises(VectorFormatError, match="invalid kind"):
        make_vec(kind="style")


# --- bad tensors ---------------------------------------------------------------------------------
def _vec(vectors, layers, **meta):
    return SteeringVector("persona", "x", vectors, layers, _meta(hidden=vectors.shape[-1], **meta))


@pytest.mark.parametrize("vectors,layers,match", [
    (torch.zeros(2, 8, dtype=torch.float64), torch.tensor([0, 1]), "float32"),
    (torch.zeros(2, 8, dtype=torch.float16), torch.tensor([0, 1]), "float32"),
    (torch.zeros(8), torch.tensor([0]), r"\[n, hidden_size\]"),
    (torch.zeros(0, 8), torch.zeros(0, dtype=torch.int64), "n >= 1"),
    (torch.zeros(2, 8), torch.tensor([0, 1], dtype=torch.int32), "int64"),
    (torch.zeros(2, 8), torch.tensor([0, 1, 2]), "int64 \\[2\\]"),
    (torch.zeros(2, 8), torch.tensor([[0, 1]]), "int64 \\[2\\]"),
    (torch.zeros(2, 8), torch.tensor([1, 1]), "distinct"),
    (torch.zeros(2, 8), torch.tensor([-1, 1]), "non-negative"),
    (torch.tensor([[0.0, float("nan")]]), torch.tensor([0]), "NaN or Inf"),
    (torch.tensor([[0.0, float("inf")]]), torch.tensor([0]), "NaN or Inf"),
    (torch.tensor([[0.0, float("-inf")]]), torch.tensor([0]), "NaN or Inf"),
])
def test_bad_tensors_refused_in_memory_and_on_disk(store, vectors, layers, match):
    with pytest.raises(VectorFormatError, match=match):
        _vec(vectors, layers).validate()
    # the same tensors written by another tool: load refuses, list skips and reports
    hidden = vectors.shape[-1] if vectors.dim() else 0
    _raw_file(store.root / "personas" / "x.safetensors",
              {"vectors": vectors.contiguous(), "layers": layers.contiguous()}, _meta(hidden=hidden))
    with pytest.raises(VectorFormatError, match=match):
        store.load("persona", "x")
    assert store.list() == [] and "persona/x" in store.errors


def test_metadata_problems():
    v, l = torch.zeros(1, 8), torch.tensor([0])
    with pytest.raises(VectorFormatError, match="lacks required keys: model"):
        m = _meta()
        del m["model"]
        SteeringVector("persona", "x", v, l, m).validate()
    with pytest.raises(VectorFormatError, match="hidden_size=9 but vectors have 8"):
        SteeringVector("persona", "x", v, l, _meta(hidden=9)).validate()
    with pytest.raises(VectorFormatError, match="disagree"):
        SteeringVector("persona", "x", v, l, _meta(name="y")).validate()
    with pytest.raises(VectorFormatError, match="strings to strings"):
        SteeringVector("persona", "x", v, l, {**_meta(), "n": 3}).validate()
    with pytest.raises(VectorFormatError, match="extra tensor 'baseline'"):
        SteeringVector("axis", "assistant_axis", v, l, _meta("assistant_axis", "axis"),
                       {"baseline": torch.zeros(2, 8)}).validate()


def test_build_json_encodes_metadata():
    vec = make_vec(metadata={"questions": ["a"], "n": 3, "created_at": "2026-01-01"})
    assert vec.metadata["questions"] == '["a"]' and vec.metadata["n"] == "3"
    assert vec.metadata["created_at"] == "2026-01-01"


# --- compatibility with the served model ------------------------------------------------------------
def test_check_compatible_names_what_differs():
    vec = make_vec(hidden=8, model="org/model-a", layers=(1, 5))
    vec.check_compatible(8, "org/model-a", 6)
    with pytest.raises(VectorFormatError, match="hidden_size 8, the served model has 256"):
        vec.check_compatible(256, "org/model-a")
    with pytest.raises(VectorFormatError, match="'org/model-a', the served model is 'org/model-b'"):
        vec.check_compatible(8, "org/model-b")
    with pytest.raises(VectorFormatError, match="uses layer 5, the served model has 4 layers"):
        vec.check_compatible(8, None, 4)
    make_vec(model="*").check_compatible(8, "anything")     # '*' means any model


def test_store_save_refuses_incompatible(store):
    with pytest.raises(VectorFormatError, match="hidden_size"):
        store.save(make_vec(hidden=8), hidden_size=16, model="test/model")
    with pytest.raises(VectorFormatError, match="served model is 'other'"):
        store.save(make_vec(hidden=8), hidden_size=8, model="other")
    assert store.names("persona") == []


# --- corrupt files -------------------------------------------------------------------------------
def test_corrupt_file_reported_and_skipped(store):
    store.save(make_vec(name="good"))
    store.save(make_vec(kind="trait", name="calm"))
    personas = store.root / "personas"
    (personas / "garbage.safetensors").write_bytes(b"\x00\x01not a safetensors file")
    good = (personas / "good.safetensors").read_bytes()
    (personas / "truncated.safetensors").write_bytes(good[: len(good) // 2])
    (personas / "empty.safetensors").write_bytes(b"")
    (personas / "folder.safetensors").mkdir()
    _raw_file(personas / "renamed.safetensors", {"vectors": torch.zeros(1, 8), "layers": torch.tensor([0])},
              _meta(name="other"))
    _raw_file(personas / "wrongkind.safetensors", {"vectors": torch.zeros(1, 8), "layers": torch.tensor([0])},
              _meta(name="wrongkind", kind="trait"))
    _raw_file(personas / "notensors.safetensors", {"x": torch.zeros(1)}, _meta(name="notensors"))
    (personas / "Bad Name.safetensors").write_bytes(good)

    entries = store.list()
    assert sorted((e.kind, e.name) for e in entries) == [("persona", "good"), ("trait", "calm")]
    for bad in ["garbage", "truncated", "empty", "folder", "renamed", "wrongkind", "notensors",
                "Bad Name"]:
        assert f"persona/{bad}" in store.errors, bad
    assert "corrupt" in store.errors["persona/garbage"]
    assert "not 'renamed'" in store.errors["persona/renamed"]
    assert "expected 'persona'" in store.errors["persona/wrongkind"]
    assert "'vectors' and 'layers'" in store.errors["persona/notensors"]
    with pytest.raises(VectorFormatError, match=r"persona 'garbage' \(garbage.safetensors\) is corrupt"):
        store.load("persona", "garbage")
    # the rest keeps working
    assert torch.equal(store.load("persona", "good").vectors, make_vec(name="good").vectors)
    # fixing a file clears its error on the next listing
    (personas / "garbage.safetensors").unlink()
    store.list()
    assert "persona/garbage" not in store.errors and "persona/truncated" in store.errors


def test_missing_vector_lists_available(store):
    store.save(make_vec(name="a"))
    store.save(make_vec(name="b"))
    with pytest.raises(VectorNotFound, match=r"unknown persona 'zz' \(available: a, b\)"):
        store.load("persona", "zz")
    with pytest.raises(VectorNotFound, match=r"available: none"):
        store.load("trait", "zz")


# --- content hash --------------------------------------------------------------------------------
def test_content_hash_stable_and_sensitive(store):
    vec = make_vec()
    h = vec.content_hash()
    assert len(h) == 32 and int(h, 16) >= 0
    assert make_vec().content_hash() == h                     # same content, new object
    store.save(vec)
    assert store.content_hash("persona", "pirate") == h         # survives a save/load
    relabeled = make_vec(description="other words", model="other/model",
                         metadata={"created_at": "now"})
    assert relabeled.content_hash() == h                       # metadata does not count
    nudged = make_vec()
    nudged.vectors[0, 3] += 1e-4
    assert nudged.content_hash() != h                          # values do
    moved = make_vec(layers=(1, 3))
    assert moved.content_hash() != h                            # layers do
    assert make_vec(seed=1).content_hash() != h


def test_axis_hash_covers_projection_stats():
    a = make_vec(kind="axis", name="assistant_axis",
                 metadata={"projection_stats": {"1": {"percentiles": {"25": 1.0}}}})
    b = make_vec(kind="axis", name="assistant_axis",
                 metadata={"projection_stats": {"1": {"percentiles": {"25": 2.0}}}})
    assert a.content_hash() != b.content_hash()


# --- delete / clear --------------------------------------------------------------------------------
def test_delete_and_clear(store):
    for n in ["a", "b", "c"]:
        store.save(make_vec(name=n))
    store.save(make_vec(kind="trait", name="t"))
    store.load("persona", "a")
    store.delete("persona", "a")
    assert not store.exists("persona", "a")
    with pytest.raises(VectorNotFound):
        store.load("persona", "a")
    with pytest.raises(VectorNotFound, match="unknown persona 'a'"):
        store.delete("persona", "a")
    assert store.clear("persona") == 2
    assert store.names("persona") == []
    assert store.names("trait") == ["t"]                       # other kinds untouched
    assert store.clear("persona") == 0


# --- combine ------------------------------------------------------------------------------------
def test_combine_refuses_misfit_vectors():
    vec = make_vec(layers=(1, 5))
    with pytest.raises(VectorFormatError, match="uses layer 5, the model has 4 layers"):
        combine([(vec, 1.0)], 1.0, 4, 8)
    with pytest.raises(VectorFormatError, match="hidden_size 8, expected 16"):
        combine([(vec, 1.0)], 1.0, 6, 16)
    with pytest.raises(VectorFormatError, match="not finite"):
        combine([(vec, float("nan"))], 1.0, 6, 8)
    with pytest.raises(VectorFormatError, match="not finite"):
        combine([(vec, 1.0)], float("inf"), 6, 8)
    out = combine([], 2.0, 3, 8)
    assert out.shape == (3, 8) and not out.any()
    assert json.dumps(vec.metadata)  # metadata is plain JSON-able strings
