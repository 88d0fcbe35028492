"""Monitoring and steer_tokens in the one resolution path (no engine): spec fields, salts,
name resolution, the reading's layer and spread, and the worker's column table."""
from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from persona_steer.resolve import (ModelShape, MonitorNameError, monitor_direction, monitor_layer,
                                   monitor_targets)
from persona_steer.steering_spec import SteeringSpecError, build_spec, parse_extra_args
from persona_steer.store import VectorStore
from persona_steer.vector_format import AXIS_NAME, SteeringVector

H = 8


def vec(kind, name, layers, meta=None, extra=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    return SteeringVector.build(kind, name, {l: torch.randn(H, generator=g) for l in layers},
                                model="m", metadata=meta or {}, extra=extra)


@pytest.fixture()
def store(tmp_path):
    s = VectorStore(tmp_path / "v")
    s.save(vec("persona", "pirate", [0, 1, 2], {"separation": {"0": 1.0, "1": 3.0, "2": 2.0},
                                                "position": "response_mean"}))
    s.save(vec("trait", "formal", [1, 2], seed=1))
    s.save(vec("trait", "pirate", [1], seed=2))           # same name as a persona
    stats = {str(l): {"mean": 2.0, "std": 4.0, "percentiles": {"25": 1.0}} for l in range(3)}
    s.save(vec("axis", AXIS_NAME, [0, 1, 2], {"projection_stats": stats}, seed=3,
               extra={"baseline_response_mean": torch.ones(3, H)}))
    return s


def test_monitor_stays_out_of_equality_and_salt_steer_tokens_goes_in():
    a = build_spec(persona="p", monitor=["p", "assistant_axis"])
    b = build_spec(persona="p")
    assert a == b and hash(a) == hash(b) and a.cache_key({}, 1.0) == b.cache_key({}, 1.0)
    g = build_spec(persona="p", steer_tokens="generated")
    assert g != b and g.cache_key({}, 1.0) != b.cache_key({}, 1.0)
    assert build_spec(persona="p", steer_tokens="prompt").cache_key({}, 1.0) != g.cache_key({}, 1.0)
    back = parse_extra_args(build_spec(persona="p", monitor=["x", "trait:y"],
                                       steer_tokens="prompt").to_extra_args())
    assert back.monitor == ("x", "trait:y") and back.steer_tokens == "prompt"
    flat = parse_extra_args({"steer_monitor": "x, assistant_axis", "steer_tokens": "generated"})
    assert flat.monitor == ("x", AXIS_NAME) and flat.is_noop and flat.needs_engine_args


@pytest.mark.parametrize("kw,needle", [({"monitor": ["a"] * 1 + [f"n{i}" for i in range(8)]},
                                        "at most 8"),
                                       ({"monitor": ["Bad!"]}, "invalid name"),
                                       ({"monitor": "x", "steer_tokens": "some"}, "steer_tokens")])
def test_bad_monitor_and_steer_tokens_are_refused(kw, needle):
    with pytest.raises(SteeringSpecError, match=needle):
        build_spec(max_monitor=8, **kw)


def test_names_resolve_persona_first_then_trait_and_unknown_names_itself(store):
    got = monitor_targets(("pirate", "formal", "trait:pirate", AXIS_NAME), store)
    assert got == [("persona", "pirate"), ("trait", "formal"), ("trait", "pirate"),
                   ("axis", AXIS_NAME)]
    with pytest.raises(MonitorNameError, match="unknown name 'ghost'"):
        monitor_targets(("pirate", "ghost"), store)


def test_reading_layer_and_spread(store):
    pirate, axis = store.load("persona", "pirate"), store.load("axis", AXIS_NAME)
    assert monitor_layer(pirate) == 1                              # best separation
    d = monitor_direction(pirate, axis)
    unit = pirate.per_layer()[1] / pirate.per_layer()[1].norm()
    assert d.spread == "axis" and d.std == 4.0
    assert d.mean == pytest.approx(float(torch.ones(H) @ unit), abs=1e-5)
    own = monitor_direction(axis, None)
    assert own.spread == "own" and (own.mean, own.std) == (2.0, 4.0)
    assert monitor_direction(store.load("trait", "formal"), None).spread == "none"


def test_worker_columns_are_shared_freed_and_bounded(store):
    from steering_plugin.monitor import MonitorBuffers
    from steering_plugin.monitor_runtime import MonitorFailure, MonitorRuntime
    buf = MonitorBuffers(num_layers=3, hidden=H, columns=2, max_tokens=16, first_layer=0,
                         dtype=torch.float32, steer=types.SimpleNamespace(cap_row={}),
                         layers=range(3))
    rt = MonitorRuntime(buf, store, ModelShape(H, 3, "m"))

    def params(*names):
        return types.SimpleNamespace(extra_args={"steering": {"monitor": list(names)}})
    rt.admit("a", params("pirate", "formal"), None, {})
    rt.admit("b", params("formal"), None, {})          # shares formal's column
    assert sorted(rt.users.values()) == [1, 2]
    with pytest.raises(MonitorFailure, match="at most 2"):
        rt.admit("c", params(AXIS_NAME), None, {})
    rt.forget("a")
    rt.admit("c", params(AXIS_NAME), None, {})         # pirate's column taken over
    col = int(rt.req_cols["c"][0])
    assert int((buf.mon_dirs[:, col].abs().sum(-1) > 0).sum()) == 1   # one layer only
    # read: z of the last scheduled token of each monitored request
    rt.begin_step(["b", "x", "c"], np.array([3, 2, 1]), set())
    assert rt.step == [("b", 2), ("c", 5)]
    buf.mon_out[:6] = torch.arange(12, dtype=torch.float32).reshape(6, 2)
    out = rt.read()
    bcol = int(rt.req_cols["b"][0])
    assert out["b"][0] == pytest.approx((float(buf.mon_out[2, bcol]) - rt.mean[bcol]) / rt.std[bcol])


def test_server_track_shapes_chunks_and_the_whole_answer():
    from server.monitoring import MonitorTrack, track_for
    from steering_plugin.monitor_channel import KEY

    def output(rows):
        return types.SimpleNamespace(ec_transfer_params={KEY: rows})
    t = MonitorTrack(("a", "b"), capping=True)
    first = t.take(output([[1.0, -1.0, 0.0], [3.0, 0.5, 2.0]]), 2)
    chunk = t.fields(first)
    assert chunk["monitor"]["a"] == {"tokens": [1.0, 3.0], "mean": 2.0, "last": 3.0,
                                     "min": 1.0, "max": 3.0}
    assert chunk["capping"] == {"capped_tokens": 1, "positions": [1]}
    later = t.take(output([[2.0, 0.0, 1.0], [9.0, 9.0, 9.0]]), 1)   # a stop string cut one token
    assert t.fields(later)["capping"] == {"capped_tokens": 2, "positions": [2]}
    whole = t.fields()
    assert whole["monitor"]["b"]["tokens"] == [-1.0, 0.5, 0.0]
    assert whole["capping"]["positions"] == [1, 2]
    plain = types.SimpleNamespace(spec=None, monitor=())
    assert track_for(plain) is None
    capped = types.SimpleNamespace(spec=types.SimpleNamespace(safety=True), monitor=())
    assert track_for(capped).fields() == {"capping": {"capped_tokens": 0, "positions": []}}
    assert track_for(capped, n=2) is None


def test_a_reused_column_is_not_evicted_by_the_same_requests_new_name(store):
    from steering_plugin.monitor import MonitorBuffers
    from steering_plugin.monitor_runtime import MonitorRuntime
    buf = MonitorBuffers(num_layers=3, hidden=H, columns=2, max_tokens=16, first_layer=0,
                         dtype=torch.float32, steer=types.SimpleNamespace(cap_row={}),
                         layers=range(3))
    rt = MonitorRuntime(buf, store, ModelShape(H, 3, "m"))
    formal = store.load("trait", "formal").content_hash()
    pins = {"trait/formal": formal}

    def params(*names):
        return types.SimpleNamespace(extra_args={"steering": {"monitor": list(names)}})
    rt.admit("a", params("formal"), None, pins)
    rt.admit("c", params(AXIS_NAME), None, {})
    rt.forget("a")
    rt.forget("c")                                  # formal's column is the LRU unused one
    rt.admit("b", params("pirate", "formal"), None, pins)
    assert len(set(rt.req_cols["b"].tolist())) == 2
    assert rt.col_key[int(rt.req_cols["b"][1])] == ("trait", "formal", formal)
