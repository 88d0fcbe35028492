"""`equalize_norms` / `persona-steer equalize`: each vector gets the set's mean norm per layer,
directions and other metadata are kept, bad input writes nothing."""
from __future__ import annotations

import json

import pytest
import torch

from extraction.equalize import equalize_norms
from extraction.pipeline import ExtractionInputError
from persona_steer.cli import main
from persona_steer.store import VectorNotFound, VectorStore
from persona_steer.vector_format import SteeringVector

LAYERS = [0, 2]


def _save(store, name, rows, kind="persona", model="m"):
    store.save(SteeringVector.build(kind, name, dict(zip(LAYERS, rows)), model=model,
                                    description=f"{name} desc",
                                    metadata={"separation": {"0": 1.5, "1": 2.0, "2": 2.5},
                                              "vector_norm": {"0": 0.0, "1": 7.0, "2": 0.0}}))


@pytest.fixture()
def store(tmp_path):
    s = VectorStore(tmp_path / "vectors")
    g = torch.Generator().manual_seed(0)
    for name, scale in (("a", 1.0), ("b", 3.0), ("c", 0.5)):
        _save(s, name, [torch.randn(16, generator=g) * scale, torch.randn(16, generator=g) * 2 * scale])
    return s


def _snapshot(root):
    return sorted((p.name, p.read_bytes()) for p in root.rglob("*.safetensors"))


def test_each_layer_gets_the_mean_norm_and_keeps_its_direction(store):
    before = {n: store.load("persona", n) for n in "abc"}
    done = equalize_norms(store, ["a", "b", "c"])
    assert [e.name for e in done] == ["a", "b", "c"]
    after = {n: store.load("persona", n) for n in "abc"}
    for i, layer in enumerate(LAYERS):
        target = sum(float(before[n].vectors[i].norm()) for n in "abc") / 3
        for e in done:
            n = e.name
            assert float(after[n].vectors[i].norm()) == pytest.approx(target, rel=1e-5)
            cos = torch.nn.functional.cosine_similarity(after[n].vectors[i], before[n].vectors[i], dim=0)
            assert float(cos) == pytest.approx(1.0, abs=1e-6)
            assert e.scales[layer] == pytest.approx(target / float(before[n].vectors[i].norm()), rel=1e-3)
    b = after["b"]
    assert b.layers.tolist() == LAYERS and b.description == "b desc" and b.model == "m"
    assert b.meta_json("separation") == {"0": 1.5, "1": 2.0, "2": 2.5}
    assert b.meta_json("norm_equalized_with") == ["a", "b", "c"]
    vn = b.meta_json("vector_norm")
    assert vn["1"] == 7.0                       # a layer the file does not store: untouched
    assert vn["0"] == pytest.approx(float(b.vectors[0].norm()), rel=1e-3)


def test_running_it_again_changes_nothing(store):
    equalize_norms(store, ["a", "b"])
    again = equalize_norms(store, ["a", "b"])
    assert all(f == pytest.approx(1.0, abs=1e-4) for e in again for f in e.scales.values())
    assert store.load("persona", "c").meta_json("norm_equalized_with") is None   # not in the set


@pytest.mark.parametrize("setup, names, message", [
    (None, ["a"], "at least two vectors"),
    (None, ["a", "a"], "at least two vectors"),
    ("layers", ["a", "d"], "equalize vectors extracted at the same layers"),
    ("model", ["a", "d"], "different models"),
    ("zero", ["a", "d"], "all-zero layer row"),
])
def test_bad_input_writes_nothing(store, setup, names, message):
    if setup == "layers":
        store.save(SteeringVector.build("persona", "d", {0: torch.ones(16), 1: torch.ones(16)}, model="m"))
    elif setup == "model":
        _save(store, "d", [torch.ones(16), torch.ones(16)], model="other")
    elif setup == "zero":
        _save(store, "d", [torch.ones(16), torch.zeros(16)])
    before = _snapshot(store.root)
    with pytest.raises(ExtractionInputError, match=message):
        equalize_norms(store, names)
    assert _snapshot(store.root) == before


def test_missing_vector_is_named_and_nothing_written(store):
    before = _snapshot(store.root)
    with pytest.raises(VectorNotFound, match="unknown persona 'nobody'"):
        equalize_norms(store, ["a", "nobody"])
    assert _snapshot(store.root) == before


def test_cli(store, capsys, monkeypatch):
    for key in [k for k in __import__("os").environ if k.startswith("PERSONA_STEER_")]:
        monkeypatch.delenv(key)
    argv = ["--set", f"paths.vectors={store.root}"]
    assert main(argv + ["equalize", "a", "b", "c"]) == 0
    out = capsys.readouterr().out
    assert "personas rescaled to their mean norm at layers [0, 2]" in out
    assert out.count("\n") == 4 and "  b " in out
    norms = [float(store.load("persona", n).vectors[0].norm()) for n in "abc"]
    assert max(norms) - min(norms) < 1e-3 * max(norms)
    before = _snapshot(store.root)
    for bad, msg in ((["a"], "error: equalizing needs at least two vectors"),
                     (["a", "../x"], "error: invalid name '../x'"),
                     (["a", "zzz"], "error: unknown persona 'zzz' (available: a, b, c)")):
        assert main(argv + ["equalize"] + bad) == 2
        err = capsys.readouterr().err
        assert err.startswith(msg), err
        assert err.count("\n") == 1
    assert _snapshot(store.root) == before
    info = json.loads(json.dumps(store.info("persona", "a")))
    assert info["metadata"]["norm_equalized_with"] == ["a", "b", "c"]
