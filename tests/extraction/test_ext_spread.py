"""Personas and traits record their own per-token spread at extraction (`projection_stats`), the
scale of live monitoring's z-scores: the statistics, the format's checks, the content hash, the
reader (`monitor_direction`) and real extractions on the tiny model (HF backend, no engine)."""
from __future__ import annotations

import json

import pytest
import torch

from extraction.jobs import run_persona_job, run_trait_job
from extraction.spread import restamp, spread_stats
from persona_steer.resolve import monitor_direction
from persona_steer.store import VectorStore
from persona_steer.vector_format import AXIS_NAME, SteeringVector, VectorFormatError
from tests.extraction.conftest import ext_settings

OVR = {"extraction.num_questions": 2, "extraction.temperature": 0.0, "extraction.batch_size": 4,
       "extraction.max_new_tokens": 5, "extraction.target_layers": [1, 2]}


def vec(kind="persona", layers=(1, 2), meta=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    return SteeringVector.build(kind, "v", {l: torch.randn(8, generator=g) for l in layers},
                                model="m", metadata=meta or {})


def test_spread_stats():
    got = spread_stats(torch.tensor([1.0, 2.0, 3.0, 6.0]))
    assert got == {"mean": 3.0, "std": pytest.approx(2.160247, abs=1e-6), "count": 4}
    assert spread_stats(torch.tensor([1.0])) is None           # one token: no spread
    assert spread_stats(torch.full((5,), 2.0)) is None         # all equal: no spread


def test_stats_round_trip_and_leave_the_hash_alone(tmp_path):
    plain = vec()
    stats = {"1": {"mean": 0.5, "std": 2.0, "count": 40}, "2": {"mean": -1.0, "std": 0.25, "count": 40}}
    stamped = plain.with_projection_stats(stats)
    assert stamped.content_hash() == plain.content_hash()      # rows only: no new cache keys
    store = VectorStore(tmp_path)
    store.save(stamped)
    back = store.load("persona", "v")
    assert back.meta_json("projection_stats") == stats and torch.equal(back.vectors, plain.vectors)
    assert store.content_hash("persona", "v") == plain.content_hash()


@pytest.mark.parametrize("stats,needle", [
    ({}, "non-empty JSON object"),
    ([1, 2], "non-empty JSON object"),
    ({"x": {"mean": 0, "std": 1, "count": 3}}, "not a layer index"),
    ({"1": {"mean": 0, "std": 1}}, "mean, std and count"),
    ({"1": {"mean": "NaN", "std": 1, "count": 3}}, "mean, std and count"),
    ({"1": {"mean": 0, "std": 0, "count": 3}}, "std > 0"),
    ({"1": {"mean": 0, "std": 1, "count": 1}}, "count >= 2"),
    ({"1": {"mean": 0, "std": 1, "count": 2.5}}, "whole count"),
])
def test_bad_stats_are_refused(stats, needle):
    with pytest.raises(VectorFormatError, match=needle):
        vec(meta={"projection_stats": stats})
    with pytest.raises(VectorFormatError, match=needle):
        vec(kind="trait").with_projection_stats(stats)


def test_axis_stats_stay_capping_s_to_check():
    # an axis's entries may hold percentiles only (capping reads and checks them)
    vec(kind="axis", meta={"projection_stats": {"1": {"percentiles": {"25": 1.0}}}})


def test_monitor_direction_uses_own_stats_and_old_files_fall_back():
    axis = SteeringVector.build(
        "axis", AXIS_NAME, {l: torch.ones(8) for l in (1, 2)}, model="m",
        metadata={"projection_stats": {str(l): {"mean": 2.0, "std": 4.0} for l in (1, 2)}})
    old = vec(meta={"separation": {"1": 1.0, "2": 3.0}})
    assert monitor_direction(old, axis).spread == "axis"
    new = old.with_projection_stats({"1": {"mean": 9.0, "std": 9.0, "count": 9},
                                     "2": {"mean": 0.5, "std": 1.5, "count": 30}})
    d = monitor_direction(new, axis)
    assert d.layer == 2 and d.spread == "own" and (d.mean, d.std) == (0.5, 1.5)


def _reference_spread(settings, vec, model_path):
    """The spread computed independently: HF `hidden_states` (layer L's output is entry L+1),
    every assistant rollout token's predicting position, the unit row."""
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
    rolls = list((settings.path("cache") / "extraction").glob("*/rollouts/*.json"))
    samples = [s for f in rolls if json.loads(f.read_text())["group"] == "assistant"
               for s in json.loads(f.read_text())["samples"]]
    out = {}
    for layer, row in vec.per_layer().items():
        unit = row / row.norm()
        proj = []
        for s in samples:
            ids = torch.tensor([s["prompt_ids"] + s["response_ids"]])
            with torch.no_grad():
                hs = model(input_ids=ids, output_hidden_states=True).hidden_states[layer + 1][0]
            p, r = len(s["prompt_ids"]), len(s["response_ids"])
            proj.append(hs[p - 1:p - 1 + r] @ unit)
        out[layer] = torch.cat(proj)
    return out


def test_extraction_records_the_assistant_spread_and_restamp_recomputes_it(tmp_path, tiny_model):
    s = ext_settings(tmp_path, **OVR)
    persona = run_persona_job(s, "pirate", archetype="pirate", rollout_backend="hf")
    stats = persona.meta_json("projection_stats")
    assert set(stats) == {"1", "2"}
    ref = _reference_spread(s, persona, tiny_model)
    for layer, p in ref.items():
        assert stats[str(layer)]["count"] == p.numel() > 2
        assert stats[str(layer)]["mean"] == pytest.approx(float(p.mean()), abs=1e-3)
        assert stats[str(layer)]["std"] == pytest.approx(float(p.std()), rel=1e-3)
    trait = run_trait_job(s, "calm", "angry", rollout_backend="hf")
    tstats = trait.meta_json("projection_stats")
    assert set(tstats) == {"1", "2"} and all(e["std"] > 0 for e in tstats.values())
    assert tstats["1"]["count"] == stats["1"]["count"]       # the same assistant tokens

    # an older file without the field gets the same numbers back; its hash does not move
    store = VectorStore(s.path("vectors"))
    meta = {k: v for k, v in persona.metadata.items() if k != "projection_stats"}
    store.save(SteeringVector(persona.kind, persona.name, persona.vectors, persona.layers, meta))
    assert store.load("persona", "pirate").meta_json("projection_stats") is None
    got = restamp(s, [("persona", "pirate")])
    assert got["persona/pirate"] == stats
    assert store.load("persona", "pirate").content_hash() == persona.content_hash()
