"""`equalize_norms` / `persona-steer equalize`: each vector gets the set's mean norm per layer,
directions and other metadata are kept, bad input writes nothing. `--by tuned`
(compare_tuned / equalize_tuned): which persona is stronger from the tuned strengths; with
--write the tuned ones are rescaled to one strength and push as before; refusals write nothing."""
from __future__ import annotations

import json

import pytest
import torch

from extraction.equalize import (NotTunedError, compare_tuned, equalize_norms, equalize_tuned,
                                 format_tuned)
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


# ------------------------------------------------------------------------------ by tuned strength
def _tune(store, name, strength, layers=(0, 2)):
    """Give a stored vector a tuned setting as `persona-steer tune` writes it."""
    v = store.load("persona", name)
    table = [{"layers": list(layers), "strength": s, "expression": 50.0, "coherence": 90.0,
              "current": False} for s in (0.5, strength, 4.0)]
    store.save(v.with_recommendation(list(layers), strength,
                                     {"scorer": "marker", "table": table}))


def test_compare_tuned_reports_which_is_stronger_and_writes_nothing(store):
    _tune(store, "a", 0.5)
    _tune(store, "b", 2.0, layers=(2,))
    before = _snapshot(store.root)
    cmp = compare_tuned(store)                       # no names: every persona in the store
    assert cmp.common_strength == pytest.approx(1.0)   # geometric mean of 0.5 and 2.0
    assert [r.name for r in cmp.rows] == ["a", "b", "c"]          # strongest first, untuned last
    a, b, c = cmp.rows
    assert (a.strength, a.relative, a.layers) == (0.5, 2.0, [0, 2])
    assert (b.strength, b.relative, b.layers) == (2.0, 0.5, [2])
    assert (c.strength, c.relative) == (None, None)
    assert not cmp.written and _snapshot(store.root) == before
    d = cmp.to_dict()
    assert d["by"] == "tuned" and d["strengths"][2] == {
        "name": "c", "tuned": False, "recommended_strength": None, "recommended_layers": None,
        "relative_strength": None, "factor": None}
    assert [r.name for r in compare_tuned(store, ["c", "b"]).rows] == ["b", "c"]
    text = format_tuned(cmp)
    assert "common 1 / own" in text and "(untuned)" in text
    assert [line.split()[0] for line in text.splitlines()[2:]] == ["a", "b", "c"]


def test_equalize_tuned_keeps_each_push_and_gives_one_strength(store):
    _tune(store, "a", 0.5)
    _tune(store, "b", 2.0, layers=(2,))
    before = {n: store.load("persona", n) for n in "abc"}
    hashes = {n: store.content_hash("persona", n) for n in "abc"}
    cmp = equalize_tuned(store, ["a", "b", "c"])
    assert cmp.written and {r.name: r.factor for r in cmp.rows} == {"a": 0.5, "b": 2.0, "c": None}
    after = {n: store.load("persona", n) for n in "abc"}
    for n, s in (("a", 0.5), ("b", 2.0)):
        # at the common strength (1.0) the rows push exactly as the old rows did at their own
        assert after[n].recommended_strength() == 1.0
        assert torch.allclose(after[n].vectors * 1.0, before[n].vectors * s, rtol=1e-6)
        assert after[n].recommended_layers() == before[n].recommended_layers()
        assert after[n].meta_json("tuned_equalized_with") == ["a", "b"]
        assert after[n].meta_json("separation") == {"0": 1.5, "1": 2.0, "2": 2.5}
        # the stored tune table is in the new units: its picked row is at the common strength
        tuning = after[n].meta_json("tuning")
        assert [r["strength"] for r in tuning["table"]] == pytest.approx([0.5 / s, 1.0, 4.0 / s])
        assert tuning["rescaled_by"] == s and tuning["scorer"] == "marker"
        vn = after[n].meta_json("vector_norm")
        assert vn["0"] == pytest.approx(float(after[n].vectors[0].norm()), rel=1e-3)
        assert vn["1"] == 7.0
        # the content hash follows the rows: the file's hash is the new rows' hash
        assert store.content_hash("persona", n) == after[n].content_hash() != hashes[n]
    assert store.content_hash("persona", "c") == hashes["c"]          # untuned: untouched
    assert torch.equal(after["c"].vectors, before["c"].vectors)
    again = equalize_tuned(store, ["a", "b", "c"])                   # a second run changes nothing
    assert {r.name: r.factor for r in again.rows if r.factor is not None} == {"a": 1.0, "b": 1.0}
    assert compare_tuned(store).common_strength == 1.0


@pytest.mark.parametrize("setup, names, error, message", [
    ("none", None, NotTunedError, "no persona in the store has been tuned"),
    ("none", ["a", "b"], NotTunedError, "no persona among a, b has been tuned .*run `persona-steer tune` first"),
    ("one", None, ExtractionInputError, "needs at least two tuned personas; tuned: a"),
    ("model", None, ExtractionInputError, "different models"),
    ("one", ["a", "nobody"], VectorNotFound, "unknown persona 'nobody'"),
])
def test_tuned_refusals_write_nothing(store, setup, names, error, message):
    if setup in ("one", "model"):
        _tune(store, "a", 0.5)
    if setup == "model":
        _save(store, "d", [torch.ones(16), torch.ones(16)], model="other")
        _tune(store, "d", 1.0)
    before = _snapshot(store.root)
    with pytest.raises(error, match=message):
        equalize_tuned(store, names)
    if setup != "one" or names:         # one tuned persona can still be reported
        with pytest.raises(error, match=message):
            compare_tuned(store, names)
    assert _snapshot(store.root) == before


def test_empty_store_is_refused(tmp_path):
    with pytest.raises(NotTunedError, match="there are no personas to compare"):
        compare_tuned(VectorStore(tmp_path / "empty"))


def test_cli_by_tuned(store, capsys, monkeypatch):
    for key in [k for k in __import__("os").environ if k.startswith("PERSONA_STEER_")]:
        monkeypatch.delenv(key)
    argv = ["--set", f"paths.vectors={store.root}", "equalize", "--by", "tuned"]
    before = _snapshot(store.root)
    assert main(argv) == 2                                # nothing tuned: one line, nothing written
    err = capsys.readouterr().err
    assert err.startswith("error: no persona in the store has been tuned") and err.count("\n") == 1
    assert main(argv[:2] + ["equalize", "a", "b", "--write"]) == 2     # --write is for --by tuned
    assert capsys.readouterr().err.startswith("error: --write is for --by tuned")
    assert _snapshot(store.root) == before
    _tune(store, "a", 0.5)
    _tune(store, "b", 2.0)
    assert main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("personas by tuned strength") and len(out) == 5
    assert out[2].split()[:3] == ["a", "0.5", "2.000"] and out[4].split()[1:] == ["-", "-", "(untuned)"]
    assert main(argv + ["--write"]) == 0
    out = capsys.readouterr().out
    assert "each now has recommended_strength 1" in out
    assert [store.load("persona", n).recommended_strength() for n in "abc"] == [1.0, 1.0, None]
