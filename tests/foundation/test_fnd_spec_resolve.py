"""Per-request steering spec (nested and flat extra_args) and resolving it against the store."""
from __future__ import annotations

import pytest
import torch

from persona_steer.resolve import (AdmissionError, ModelShape, admit, axis_thresholds, cap_table,
                                   cap_table_from_axis, content_hashes, load_checked, spec_delta)
from persona_steer.steering_spec import (SteeringSpec, SteeringSpecError, build_spec,
                                         parse_extra_args, parse_pairs_text)
from persona_steer.store import VectorNotFound, VectorStore
from persona_steer.vector_format import VectorFormatError

from .conftest import make_vec

NESTED = {"steering": {"personas": {"pirate": 0.5, "robot": 0.3}, "traits": {"formal": -0.3},
                       "scale": 2.0, "safety": True}}
FLAT = {"steer_blend": "robot:0.3,pirate:0.5", "steer_traits": "formal:-0.3",
        "steer_scale": "2.0", "steer_safety": "true"}


# --- parsing -----------------------------------------------------------------------------------
def test_nested_form():
    spec = parse_extra_args(NESTED, max_weight=10)
    assert spec.personas == (("pirate", 0.5), ("robot", 0.3))
    assert spec.traits == (("formal", -0.3),)
    assert spec.scale == 2.0 and spec.safety is True
    assert spec.required_vectors() == [("persona", "pirate"), ("persona", "robot"),
                                       ("trait", "formal"), ("axis", "assistant_axis")]


def test_flat_form_equals_nested():
    flat = parse_extra_args(FLAT, max_weight=10)
    assert flat == parse_extra_args(NESTED, max_weight=10)


def test_flat_single_persona_gets_strength_or_default():
    spec = parse_extra_args({"steer_persona": "pirate", "steer_strength": 0.7})
    assert spec.personas == (("pirate", 0.7),) and spec.scale is None and spec.safety is False
    assert parse_extra_args({"steer_persona": "pirate"}).personas == (("pirate", 1.0),)
    assert build_spec(persona="pirate", default_strength=2.5).personas == (("pirate", 2.5),)
    # persona plus blend: the persona's strength adds to its blend weight
    both = parse_extra_args({"steer_persona": "pirate", "steer_strength": 1,
                             "steer_blend": "pirate:0.5,robot:0.25"})
    assert both.personas == (("pirate", 1.5), ("robot", 0.25))


def test_flat_safety_values():
    for raw, want in [(True, True), ("on", True), ("1", True), (1, True), (False, False),
                      ("false", False), ("no", False), (0, False)]:
        assert parse_extra_args({"steer_persona": "a", "steer_safety": raw}).safety is want


def test_no_steering_gives_none():
    assert parse_extra_args(None) is None
    assert parse_extra_args({}) is None
    assert parse_extra_args({"other_plugin": 1}) is None
    assert parse_extra_args({"steering": None}) is None


def test_round_trip_through_extra_args():
    spec = build_spec(persona="pirate", strength=0.5, traits={"calm": 1}, scale=1.5, safety=True)
    assert parse_extra_args(spec.to_extra_args()) == spec
    assert spec.to_dict() == {"personas": {"pirate": 0.5}, "traits": {"calm": 1.0},
                              "scale": 1.5, "safety": True}
    assert SteeringSpec().to_dict(default_scale=3.0)["scale"] == 3.0


def test_noop():
    assert build_spec().is_noop
    assert build_spec(blend={"a": 0}).is_noop
    assert not build_spec(blend={"a": 0.1}).is_noop
    assert not build_spec(safety=True).is_noop


BAD_WEIGHTS = [float("nan"), float("inf"), float("-inf"), "abc", True, None, [1], 10.5, -11]


@pytest.mark.parametrize("w", BAD_WEIGHTS, ids=repr)
def test_bad_weights_refused(w):
    with pytest.raises(SteeringSpecError) as e:
        parse_extra_args({"steering": {"personas": {"pirate": w}}}, max_weight=10)
    assert e.value.param == "blend.pirate"
    with pytest.raises(SteeringSpecError) as e:
        parse_extra_args({"steering": {"traits": {"calm": w}}}, max_weight=10)
    assert e.value.param == "traits.calm"
    if w is None:   # an absent strength means the default strength
        return
    with pytest.raises(SteeringSpecError) as e:
        parse_extra_args({"steer_persona": "pirate", "steer_strength": w}, max_weight=10)
    assert e.value.param == "strength"


@pytest.mark.parametrize("text", ["pirate:nan", "pirate:inf", "pirate:11", "pirate:x", "pirate"])
def test_bad_flat_weight_text_refused(text):
    with pytest.raises(SteeringSpecError, match="blend"):
        parse_extra_args({"steer_blend": text}, max_weight=10)
    with pytest.raises(SteeringSpecError, match="traits"):
        parse_extra_args({"steer_traits": text}, max_weight=10)


def test_bound_applies_to_strength_plus_blend():
    with pytest.raises(SteeringSpecError, match="beyond the allowed bound"):
        build_spec(persona="a", strength=6, blend={"a": 6}, max_weight=10)
    assert build_spec(persona="a", strength=6, blend={"a": 6}).personas == (("a", 12.0),)


@pytest.mark.parametrize("name", ["../x", "Pirate", "a" * 65, "a b", "", 3])
def test_bad_names_refused(name):
    with pytest.raises(SteeringSpecError, match="invalid name"):
        parse_extra_args({"steering": {"personas": {name: 1.0}}})
    if isinstance(name, str) and name:
        with pytest.raises(SteeringSpecError, match="invalid name"):
            parse_extra_args({"steer_persona": name})
        with pytest.raises(SteeringSpecError, match="invalid name"):
            parse_extra_args({"steer_traits": f"{name}:1"})


@pytest.mark.parametrize("args,match", [
    ({"steering": "pirate"}, "must be an object"),
    ({"steering": {"personas": ["pirate"]}}, "name: weight"),
    ({"steering": {"persona": "pirate"}}, "unknown steering keys: persona"),
    ({"steering": {"personas": {"a": 1}, "safety": "maybe"}}, "safety must be true or false"),
    ({"steering": {"personas": {"a": 1}, "safety": "false"}}, None),
    ({"steer_persona": "a", "steer_safety": "maybe"}, "steer_safety must be true or false"),
    ({"steer_persona": "a", "steer_safety": 2}, "steer_safety must be true or false"),
    ({"steer_persona": "a", "steer_scale": "big"}, "steering_scale must be a number"),
    ({"steer_persona": "a", "steer_scale": "nan"}, "steering_scale must be finite"),
])
def test_malformed_requests(args, match):
    if match is None:   # a real boolean-ish string is read as what it says, not bool("false")
        assert parse_extra_args(args).safety is False
        return
    with pytest.raises(SteeringSpecError, match=match):
        parse_extra_args(args)


def test_parse_pairs_text():
    assert parse_pairs_text(" a:0.5, b:-1 ,") == {"a": 0.5, "b": -1.0}
    with pytest.raises(SteeringSpecError, match="name:weight"):
        parse_pairs_text("a=1")


# --- cache keys --------------------------------------------------------------------------------
HASHES = {"persona/pirate": "h1", "persona/robot": "h2", "trait/formal": "h3",
          "axis/assistant_axis": "h4"}


def test_cache_key_equal_for_equal_configs():
    a = parse_extra_args(NESTED)
    b = parse_extra_args(FLAT)
    c = parse_extra_args({"steering": {"traits": {"formal": -0.3}, "safety": True, "scale": 2,
                                       "personas": {"robot": 0.3, "pirate": 0.5}}})
    keys = {s.cache_key(dict(reversed(list(HASHES.items()))), 1.0) for s in (a, b, c)}
    assert len(keys) == 1 and keys.pop().startswith("steer-")
    # no explicit scale == the configured default
    assert (build_spec(persona="pirate").cache_key({"persona/pirate": "h"}, 1.0)
            == build_spec(persona="pirate", scale=1.0).cache_key({"persona/pirate": "h"}, 1.0))


def test_cache_key_differs_for_different_configs():
    base = parse_extra_args(NESTED)
    key = base.cache_key(HASHES, 1.0)
    variants = [
        parse_extra_args({"steering": {**NESTED["steering"], "scale": 2.5}}),
        parse_extra_args({"steering": {**NESTED["steering"], "safety": False}}),
        parse_extra_args({"steering": {**NESTED["steering"], "personas": {"pirate": 0.5}}}),
        parse_extra_args({"steering": {**NESTED["steering"], "personas": {"pirate": 0.5, "robot": 0.31}}}),
        parse_extra_args({"steering": {**NESTED["steering"], "traits": {"formal": 0.3}}}),
        parse_extra_args({"steering": {**NESTED["steering"], "traits": {}, "personas": {
            "pirate": 0.5, "robot": 0.3, "formal": -0.3}}}),   # same name as persona, not trait
    ]
    others = [v.cache_key(HASHES, 1.0) for v in variants]
    assert key not in others and len(set(others)) == len(others)
    assert base.cache_key({**HASHES, "persona/pirate": "changed"}, 1.0) != key   # new content
    no_scale = build_spec(persona="pirate")
    assert no_scale.cache_key({}, 1.0) != no_scale.cache_key({}, 2.0)           # default scale


# --- resolve -------------------------------------------------------------------------------------
@pytest.fixture
def store(tmp_path):
    s = VectorStore(tmp_path)
    s.save(make_vec(name="pirate", layers=(1, 2), seed=1))
    s.save(make_vec(name="robot", layers=(0, 2), seed=2))
    s.save(make_vec(kind="trait", name="formal", layers=(2, 3), seed=3))
    return s


SHAPE = ModelShape(hidden_size=8, num_layers=4, model_id="test/model")


def test_delta_equals_manual_sum(store):
    spec = parse_extra_args({"steering": {"personas": {"pirate": 0.5, "robot": -0.25},
                                          "traits": {"formal": 2.0}, "scale": 1.5}})
    delta = spec_delta(spec, store, SHAPE, default_scale=1.0)
    p, r, f = (store.load(k, n).per_layer() for k, n in
               [("persona", "pirate"), ("persona", "robot"), ("trait", "formal")])
    want = torch.zeros(4, 8)
    want[0] = 1.5 * (-0.25 * r[0])
    want[1] = 1.5 * (0.5 * p[1])
    want[2] = 1.5 * (0.5 * p[2] - 0.25 * r[2] + 2.0 * f[2])
    want[3] = 1.5 * (2.0 * f[3])
    assert delta.shape == (4, 8) and delta.dtype == torch.float32
    assert torch.allclose(delta, want, atol=1e-6)


def test_single_persona_is_strength_times_vector(store):
    spec = parse_extra_args({"steer_persona": "pirate", "steer_strength": 0.75})
    delta = spec_delta(spec, store, SHAPE, default_scale=2.0)    # no scale in request: default
    p = store.load("persona", "pirate").per_layer()
    assert torch.allclose(delta[1], 2.0 * 0.75 * p[1]) and torch.allclose(delta[2], 1.5 * p[2])
    assert not delta[0].any() and not delta[3].any()             # layers not in the file: zero


def test_layers_outside_steerable_set_refused(store):
    shape = ModelShape(8, 4, None, steerable_layers=(1, 2))
    spec_delta(build_spec(persona="pirate"), store, shape, 1.0)   # fits
    with pytest.raises(VectorFormatError, match=r"trait 'formal' uses layers \[3\], which this engine"):
        spec_delta(build_spec(traits={"formal": 1}), store, shape, 1.0)


def test_model_mismatch_refused(store):
    with pytest.raises(VectorFormatError, match="hidden_size 8, the served model has 16"):
        load_checked(store, "persona", "pirate", ModelShape(16, 4))
    with pytest.raises(VectorFormatError, match="served model is 'other/model'"):
        load_checked(store, "persona", "pirate", ModelShape(8, 4, "other/model"))
    with pytest.raises(VectorFormatError, match="uses layer 2, the served model has 2 layers"):
        load_checked(store, "persona", "pirate", ModelShape(8, 2))
    with pytest.raises(VectorNotFound, match="unknown persona 'ghost'"):
        spec_delta(build_spec(persona="ghost"), store, SHAPE, 1.0)


def test_content_hashes(store):
    spec = build_spec(persona="pirate", traits={"formal": 1})
    hashes = content_hashes(spec, store, SHAPE)
    assert hashes == {"persona/pirate": store.content_hash("persona", "pirate"),
                      "trait/formal": store.content_hash("trait", "formal")}
    with pytest.raises(VectorNotFound, match="unknown axis"):
        content_hashes(build_spec(persona="pirate", safety=True), store, SHAPE)


def _axis(stats):
    return make_vec(kind="axis", name="assistant_axis", layers=(1, 2),
                    metadata={"projection_stats": stats} if stats is not None else None)


def test_axis_thresholds_interpolate():
    axis = _axis({"1": {"percentiles": {"10": 1.0, "25": 2.5, "50": 4.0}, "mean": 3},
                  "2": {"percentiles": {"25": -1.0, "75": 1.0}}})
    assert axis_thresholds(axis, 25) == {1: 2.5, 2: -1.0}
    t = axis_thresholds(axis, 30)
    assert t[1] == pytest.approx(2.5 + 1.5 * 5 / 25) and t[2] == pytest.approx(-1.0 + 2.0 * 5 / 50)
    assert axis_thresholds(axis, 0) == {1: 1.0, 2: -1.0}        # clamps below
    assert axis_thresholds(axis, 100) == {1: 4.0, 2: 1.0}       # and above


@pytest.mark.parametrize("stats,match", [
    (None, "lacks 'projection_stats'"),
    ({"1": {"percentiles": {"25": 1.0}}}, "no projection statistics for layer 2"),
    ({"1": {"percentiles": {"25": 1.0}}, "2": {"percentiles": {}}}, "layer 2"),
    ({"1": {"percentiles": {"25": 1.0}}, "2": [1, 2]}, "layer 2"),
    ({"1": {"percentiles": {"25": 1.0}}, "2": {"percentiles": {"x": 1}}}, "must map percentile"),
    ({"1": {"percentiles": {"25": 1.0}}, "2": {"percentiles": {"25": "NaN"}}}, "non-finite"),
])
def test_axis_thresholds_bad_stats(stats, match):
    with pytest.raises(VectorFormatError, match=match):
        axis_thresholds(_axis(stats), 25)


# --- one resolution path: the shape, admission, the capping table -----------------------------
def test_model_shape_from_the_engines_hf_config():
    from types import SimpleNamespace
    engine_cfg = SimpleNamespace(hidden_size=8, num_hidden_layers=4, steering_layers=[1, -1],
                                 steering_model_id="test/model")
    assert ModelShape.from_hf_config(engine_cfg) == ModelShape(8, 4, "test/model", (1, 3))
    plain = SimpleNamespace(hidden_size=8, num_hidden_layers=4)      # a transformers model's
    assert ModelShape.from_hf_config(plain) == ModelShape(8, 4, None, (0, 1, 2, 3))
    assert ModelShape.from_hf_config(plain, model_id="m").model_id == "m"
    nested = SimpleNamespace(get_text_config=lambda: plain, steering_layers="all")
    assert ModelShape.from_hf_config(nested) == ModelShape(8, 4, None, (0, 1, 2, 3))
    assert ModelShape(8, 4, "m", (1,)).any_layer() == ModelShape(8, 4, "m", None)


def test_admit_pins_hashes_and_salts_once(store):
    store.save(_axis({"1": {"percentiles": {"25": 1.0}}, "2": {"percentiles": {"25": 2.0}}}))
    spec = build_spec(persona="pirate", traits={"formal": 0.5}, safety=True,
                      monitor=["robot"], scale=1.5)
    got = admit(spec, store, SHAPE, default_scale=1.0, prompt_len=8)
    steer = {"persona/pirate": store.content_hash("persona", "pirate"),
             "trait/formal": store.content_hash("trait", "formal"),
             "axis/assistant_axis": store.content_hash("axis", "assistant_axis")}
    assert got.hashes == steer
    assert got.pinned == {**steer, "persona/robot": store.content_hash("persona", "robot")}
    assert got.salt == spec.cache_key(steer, 1.0)                 # monitored: pinned, not salted
    # the same steering from the flat (stock vLLM) form gets the same salt
    flat = parse_extra_args({"steer_persona": "pirate", "steer_traits": "formal:0.5",
                             "steer_safety": "true", "steer_scale": 1.5})
    assert admit(flat, store, SHAPE, 1.0, 8).salt == got.salt
    monitor_only = admit(build_spec(monitor=["robot"]), store, SHAPE, 1.0, 8)
    assert monitor_only.salt is None and list(monitor_only.pinned) == ["persona/robot"]


@pytest.mark.parametrize("fields,status", [
    (dict(persona="ghost"), ("persona", "persona_not_found", True)),
    (dict(traits={"ghost": 1.0}), ("trait", "trait_not_found", True)),
    (dict(persona="pirate", safety=True), ("safety", "axis_missing", False)),
    (dict(monitor=["ghost"]), ("monitor", "monitor_not_found", True)),
])
def test_admit_errors_name_the_field(store, fields, status):
    with pytest.raises(AdmissionError) as err:
        admit(build_spec(**fields), store, SHAPE, 1.0, 8)
    assert (err.value.param, err.value.code, err.value.not_found) == status
    if status[1] != "axis_missing":
        assert "ghost" in str(err.value)
    else:
        assert "extract-axes" in str(err.value)


def test_admit_refuses_a_misfit_vector(store):
    with pytest.raises(AdmissionError, match="hidden_size 8, the served model has 16") as err:
        admit(build_spec(persona="pirate"), store, ModelShape(16, 4), 1.0, 8)
    assert (err.value.code, err.value.not_found) == ("invalid_vector", False)


def test_cap_table_is_unit_axis_and_threshold(store):
    axis = _axis({"1": {"percentiles": {"25": 1.0}}, "2": {"percentiles": {"25": 2.0}}})
    store.save(axis)
    table = cap_table_from_axis(axis, 25, [0, 2, 3])
    rows = axis.per_layer()
    assert list(table) == [2]                                     # only layers the axis has
    assert torch.equal(table[2][0], rows[2] / rows[2].norm()) and table[2][1] == 2.0
    again = cap_table(store, SHAPE, 25, [0, 2, 3])
    assert list(again) == [2] and torch.equal(again[2][0], table[2][0])
