"""Per-step steering logic without an engine: the runtime's slots and index, and the model
runner V2 ModelState driven with vLLM's own InputBatch/InputBuffers (V2 can't run on CPU)."""
from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from persona_steer.store import VectorStore
from persona_steer.vector_format import SteeringVector
from steering_plugin.model import SteeringBuffers
from steering_plugin.runtime import SteeringRuntime

HIDDEN, LAYERS, SLOTS, MAX_TOKENS = 8, 3, 5, 64


def fake_model(tmp_path):
    store = VectorStore(tmp_path)
    for name, layer, value in [("a", 0, 1.0), ("b", 2, 10.0)]:
        store.save(SteeringVector.build("persona", name, {layer: torch.full((HIDDEN,), value)},
                                        model="m"))
    hf = SimpleNamespace(num_hidden_layers=LAYERS, hidden_size=HIDDEN, steering_store=str(tmp_path),
                         steering_model_id="m", steering_scale=1.0, steering_max_weight=10.0,
                         steering_layers="all", steering_cap_layers=[1], steering_cap_percentile=25)
    model = nn.Module()
    model.model = nn.Module()
    model.model.steer_buffers = SteeringBuffers(hf, dtype=torch.float32, slots=SLOTS, max_tokens=MAX_TOKENS)
    return model, hf


def params(**personas):
    return SimpleNamespace(extra_args={"steering": {"personas": personas}} if personas else None)


def test_slots_index_and_table(tmp_path):
    model, hf = fake_model(tmp_path)
    rt = SteeringRuntime(model, hf)
    inner = model.model.steer_buffers
    rt.begin_step(["r1", "r2", "r3", "r4"], np.array([3, 1, 2, 1]),
                  [params(a=1.0), None, params(b=0.5), params(a=1.0)])
    idx = inner.steer_index[:7].tolist()
    s1, s3 = idx[0], idx[4]
    assert idx == [s1, s1, s1, 0, s3, s3, s1] and s1 != s3 and 0 not in (s1, s3)
    assert torch.equal(inner.steer_table[0, s1], torch.ones(HIDDEN))       # a at layer 0
    assert torch.equal(inner.steer_table[2, s3], torch.full((HIDDEN,), 5.0))  # 0.5 * b
    assert not inner.steer_table[:, 0].any(), "row 0 must stay zeros"
    # next step: r1 keeps its slot, padding beyond the live tokens is reset to slot 0
    rt.begin_step(["r1"], np.array([1]), [params(a=1.0)])
    assert inner.steer_index[0].item() == s1
    assert not inner.steer_index[1:7].any()
    assert set(rt.entries) == {"r1"}


def test_unresolvable_request_fails_alone_for_this_step(tmp_path):
    model, hf = fake_model(tmp_path)
    rt = SteeringRuntime(model, hf)
    rt.begin_step(["x", "y"], np.array([2, 2]), [params(gone=1.0), params(a=1.0)])
    assert model.model.steer_buffers.steer_index[:2].tolist() == [0, 0]
    assert model.model.steer_buffers.steer_index[2].item() != 0
    assert set(rt.step_failures) == {"x"} and "gone" in rt.step_failures["x"]
    # still in the batch (async scheduling runs it once more): still reported, never steered
    rt.begin_step(["y", "x"], np.array([1, 1]), [params(a=1.0), params(gone=1.0)])
    assert set(rt.step_failures) == {"x"} and model.model.steer_buffers.steer_index[1].item() == 0
    rt.begin_step(["y"], np.array([1]), [params(a=1.0)])
    assert rt.step_failures == {} and rt.failed == {}


def pinned(hashes, **personas):
    return SimpleNamespace(extra_args={"steering": {"personas": personas, "hashes": hashes}})


def test_worker_applies_exactly_the_admitted_content_or_fails(tmp_path):
    model, hf = fake_model(tmp_path)
    store = VectorStore(tmp_path)
    old_hash = store.content_hash("persona", "a")
    rt = SteeringRuntime(model, hf)
    rt.begin_step(["r1"], np.array([1]), [pinned({"persona/a": old_hash}, a=1.0)])
    s1 = model.model.steer_buffers.steer_index[0].item()
    assert torch.equal(model.model.steer_buffers.steer_table[0, s1], torch.ones(HIDDEN))
    # the file is rewritten after r1 and r2 were admitted with the old hash
    store.save(SteeringVector.build("persona", "a", {0: torch.full((HIDDEN,), 7.0)}, model="m"))
    new_hash = store.content_hash("persona", "a")
    rt.begin_step(["r1", "r2", "r3"], np.array([1, 1, 1]),
                  [pinned({"persona/a": old_hash}, a=1.0), pinned({"persona/a": old_hash}, a=2.0),
                   pinned({"persona/a": new_hash}, a=1.0)])
    s1, s2, s3 = model.model.steer_buffers.steer_index[:3].tolist()
    # r2: old content by hash, from the worker's content-addressed cache (as every rank would)
    assert torch.equal(model.model.steer_buffers.steer_table[0, s2], torch.full((HIDDEN,), 2.0))
    assert torch.equal(model.model.steer_buffers.steer_table[0, s3], torch.full((HIDDEN,), 7.0))
    assert rt.step_failures == {}
    # a fresh worker (or another rank) never saw the old content: it fails r4, alone
    rt2 = SteeringRuntime(model, hf)
    rt2.begin_step(["r4", "r5"], np.array([1, 1]),
                   [pinned({"persona/a": old_hash}, a=1.0), pinned({"persona/a": new_hash}, a=1.0)])
    assert set(rt2.step_failures) == {"r4"} and "changed on disk" in rt2.step_failures["r4"]
    assert model.model.steer_buffers.steer_index[0].item() == 0 and model.model.steer_buffers.steer_index[1].item() != 0


def test_ranks_agree_on_failures(tmp_path):
    model, hf = fake_model(tmp_path)
    seen = []

    def other_rank_failed_the_first(ok):     # what the TP all-reduce would return
        seen.append(list(ok))
        return [False] + ok[1:]

    rt = SteeringRuntime(model, hf, agree=other_rank_failed_the_first)
    rt.begin_step(["r1", "r2"], np.array([1, 1]), [params(a=1.0), params(b=1.0)])
    assert seen == [[True, True]]
    assert set(rt.step_failures) == {"r1"} and "tensor-parallel" in rt.step_failures["r1"]
    assert model.model.steer_buffers.steer_index[0].item() == 0 and model.model.steer_buffers.steer_index[1].item() != 0
    rt.begin_step(["r1", "r2"], np.array([1, 1]), [params(a=1.0), params(b=1.0)])
    assert len(seen) == 1, "agreement runs only in steps that resolve new requests"


def test_live_request_keeps_its_delta_past_the_cache_bound(tmp_path):
    """Issue 24: with a bound of 2 unused deltas, 30 short requests with distinct weights go
    through while a long one runs; the long one's delta and slot stay right every step."""
    model, hf = fake_model(tmp_path)
    rt = SteeringRuntime(model, hf)
    rt.max_unused = 2
    table, index = model.model.steer_buffers.steer_table, model.model.steer_buffers.steer_index
    for i in range(30):
        short = f"s{i}"
        rt.begin_step(["long", short], np.array([1, 1]), [params(b=0.9), params(a=0.01 * (i + 1))])
        sl, ss = index[:2].tolist()
        assert torch.equal(table[2, sl], torch.full((HIDDEN,), 9.0)), f"step {i}"
        assert torch.allclose(table[0, ss], torch.full((HIDDEN,), 0.01 * (i + 1)))
        assert len(rt.unused) <= 2 and len(rt.deltas) <= 2 + 2
    # the long request, unscheduled for a while (still live), comes back with its delta
    for i in range(5):
        rt.begin_step([f"t{i}"], np.array([1]), [params(a=-0.5 - i)], live=["long"])
    rt.begin_step(["long"], np.array([3]), [params(b=0.9)])
    s = index[0].item()
    assert index[:3].tolist() == [s] * 3 and torch.equal(table[2, s], torch.full((HIDDEN,), 9.0))
    # it finishes: now its delta is unused, and the bound applies to it too
    for i in range(3):
        rt.begin_step([f"u{i}"], np.array([1]), [params(a=0.3 + i)])
    assert not any(k[0].personas == (("b", 0.9),) for k in rt.deltas)


def test_batch_with_more_configs_than_the_cache_holds(tmp_path):
    model, hf = fake_model(tmp_path)
    rt = SteeringRuntime(model, hf)
    rt.max_unused = 1
    weights = [0.5, 1.0, 1.5, 2.0]                       # 4 configs, 4 free slots, cache of 1
    ids = [f"r{i}" for i in range(4)]
    for _ in range(3):
        rt.begin_step(ids, np.array([1, 2, 1, 1]), [params(a=w) for w in weights])
        idx = model.model.steer_buffers.steer_index[:5].tolist()
        per_req = [idx[0], idx[1], idx[3], idx[4]]
        assert idx[1] == idx[2] and len(set(per_req)) == 4 and 0 not in per_req
        for slot, w in zip(per_req, weights):
            assert torch.allclose(model.model.steer_buffers.steer_table[0, slot], torch.full((HIDDEN,), w))


def test_index_copy_never_waits_on_the_device_stream(tmp_path, monkeypatch):
    """On a CUDA device the slot index goes host -> pinned -> device with non_blocking=True
    (async_tensor_h2d's way); on CPU a plain copy."""
    model, hf = fake_model(tmp_path)
    rt = SteeringRuntime(model, hf)
    calls = []

    class FakeCudaIndex:
        is_cuda = True

        def __getitem__(self, sl):
            return self

        def copy_(self, src, non_blocking=False):
            calls.append((src.is_pinned(), non_blocking))

        def zero_(self):
            pass

    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda t: t.clone(), raising=False)
    rt.inner = SimpleNamespace(**{k: getattr(model.model.steer_buffers, k) for k in
                                  ("steer_table", "cap_on", "num_slots")},
                               steer_index=FakeCudaIndex())
    rt._write_index(np.array([1, 1, 0]))
    assert calls == [(False, True)]   # pinned() is faked here (no CUDA); non_blocking is what counts
    rt.inner = model.model.steer_buffers
    rt._write_index(np.array([2, 0]))
    assert model.model.steer_buffers.steer_index[:2].tolist() == [2, 0]


def test_more_configs_than_ever_fit_reuses_free_slots(tmp_path):
    model, hf = fake_model(tmp_path)
    rt = SteeringRuntime(model, hf)
    for step in range(20):   # 20 distinct weights over time, never more than 2 per batch
        w1, w2 = 0.1 * (step + 1), -0.1 * step - 0.05
        rt.begin_step([f"p{step}", f"q{step}"], np.array([1, 1]), [params(a=w1), params(a=w2)])
        s = model.model.steer_buffers.steer_index[:2].tolist()
        assert s[0] != s[1] and 0 not in s
        assert torch.allclose(model.model.steer_buffers.steer_table[0, s[0]], torch.full((HIDDEN,), w1))
        assert torch.allclose(model.model.steer_buffers.steer_table[0, s[1]], torch.full((HIDDEN,), w2))


def test_v2_model_state_with_vllm_input_batch(tmp_path):
    from vllm.v1.worker.gpu.input_batch import InputBatch, InputBuffers

    from steering_plugin.model_state_v2 import SteeringModelState

    model, hf = fake_model(tmp_path)
    # Bypass DefaultModelState.__init__ (needs a full VllmConfig and a GPU runner); keep
    # the attributes its add/remove/prepare methods read on the plain 1D-positions path.
    state = SteeringModelState.__new__(SteeringModelState)
    state.rope_state = None
    state.prompt_embeds_state = None
    state.supports_mm_inputs = False
    state.steering = SteeringRuntime(model, hf)
    state.steering_params = {}
    state.add_request(0, SimpleNamespace(req_id="r0", sampling_params=params(b=1.0)))
    state.add_request(1, SimpleNamespace(req_id="r1", sampling_params=params()))
    batch = InputBatch.make_dummy(2, 5, InputBuffers(4, MAX_TOKENS, torch.device("cpu")))
    batch = dataclasses.replace(batch, req_ids=["r1", "r0"], num_scheduled_tokens=np.array([2, 3]))
    assert state.prepare_inputs(batch, None) == {}
    idx = model.model.steer_buffers.steer_index[:5].tolist()
    assert idx[:2] == [0, 0] and idx[2] == idx[3] == idx[4] != 0
    assert torch.equal(model.model.steer_buffers.steer_table[2, idx[2]], torch.full((HIDDEN,), 10.0))
    state.remove_request("r0")
    assert "r0" not in state.steering_params
    state.prepare_dummy_inputs(2, 5)
    assert not model.model.steer_buffers.steer_index.any()


def test_failures_ride_on_the_step_output_of_either_runner():
    from vllm.v1.outputs import EMPTY_MODEL_RUNNER_OUTPUT, ModelRunnerOutput

    from steering_plugin.failures import ATTR, attach

    def out():
        return ModelRunnerOutput(req_ids=["a", "b"], req_id_to_index={"a": 0, "b": 1})

    plain, v1_async, v2_async = out(), SimpleNamespace(_model_runner_output=out()), \
        SimpleNamespace(model_runner_output=out())
    for wrapped, inner in [(plain, plain), (v1_async, v1_async._model_runner_output),
                           (v2_async, v2_async.model_runner_output)]:
        attach(wrapped, {"b": "gone"})
        assert getattr(inner, ATTR) == {"b": "gone"}
    attach(EMPTY_MODEL_RUNNER_OUTPUT, {"b": "gone"})
    assert not hasattr(EMPTY_MODEL_RUNNER_OUTPUT, ATTR), "never tag the shared empty output"
    # The worker -> engine core hop pickles the output; deepcopy runs the same __reduce_ex__
    # protocol without a pickle load in the repository (tests/server/test_srv_security.py).
    import copy
    assert getattr(copy.deepcopy(plain), ATTR) == {"b": "gone"}


def test_failures_of_an_earlier_pipeline_stage_fail_the_request_on_the_next(tmp_path, monkeypatch):
    """Pipeline parallel: each stage resolves requests itself; what one stage fails travels to the
    next inside the IntermediateTensors it sends (steering_plugin.pipeline), so the last stage,
    whose output reaches the scheduler, reports it. Two stages driven through the real wrapper."""
    from vllm.sequence import IntermediateTensors

    from steering_plugin import pipeline
    from steering_plugin.runtime import UPSTREAM_FAILURE, runtime_for

    monkeypatch.setattr(pipeline, "_pipeline_stages", lambda: 2)
    import vllm.distributed
    monkeypatch.setattr(vllm.distributed, "get_tp_group", lambda: SimpleNamespace(world_size=1))
    received = []

    class Stage:   # the parts of a model runner the wrapper and the V1 hook touch
        def __init__(self, model, hf, last):
            self.model, self.model_config, self.last = model, SimpleNamespace(hf_config=hf), last

        def get_model(self):
            return self.model

        def execute_model(self, scheduler_output, intermediate_tensors=None):
            if intermediate_tensors is not None:
                received.append(set(intermediate_tensors.tensors))
            self.model.steering.begin_step(*scheduler_output)   # what _prepare_inputs does
            if self.last:
                return None
            return IntermediateTensors({"hidden_states": torch.zeros(2, HIDDEN),
                                        "residual": torch.zeros(2, HIDDEN)})

    monkeypatch.setattr(Stage, "execute_model", Stage.execute_model)   # undone after the test
    pipeline._wrap_execute_model(Stage)
    first_model, hf = fake_model(tmp_path)
    last_model, _ = fake_model(tmp_path)
    first, last = Stage(first_model, hf, last=False), Stage(last_model, hf, last=True)
    for model in (first_model, last_model):
        runtime_for(model, hf)   # created here so the test can point one at another store
    # the first stage reads another store, where "a" is missing: it fails r1 (the last one can't)
    first_model.steering.store = VectorStore(tmp_path / "elsewhere")
    step = (["r1", "r2"], np.array([1, 1]), [params(a=1.0), None])
    sent = first.execute_model(step)
    assert set(first_model.steering.step_failures) == {"r1"}
    assert pipeline.decode_ids(sent.tensors[pipeline.KEY]) == {"r1"}
    last.execute_model(step, IntermediateTensors(dict(sent.tensors)))
    assert received == [{"hidden_states", "residual"}], "the runner never sees our entry"
    assert last_model.steering.step_failures == {"r1": UPSTREAM_FAILURE}
    # the next step (r1 still scheduled until the scheduler has seen the failure): still failed
    sent = first.execute_model(step)
    last.execute_model(step, IntermediateTensors(dict(sent.tensors)))
    assert set(last_model.steering.step_failures) == {"r1"}
    # r1 finished: nothing failed is carried any more
    step = (["r2"], np.array([1]), [None])
    sent = first.execute_model(step)
    assert pipeline.decode_ids(sent.tensors[pipeline.KEY]) == set()
    last.execute_model(step, IntermediateTensors(dict(sent.tensors)))
    assert last_model.steering.step_failures == {} and last_model.steering.failed == {}


def test_pipeline_failure_ids_are_the_same_bytes_on_every_rank():
    from steering_plugin.pipeline import decode_ids, encode_ids
    a, b = encode_ids({"req-2", "req-10", "x"}), encode_ids(["x", "req-10", "req-2"])
    assert a.dtype == torch.uint8 and torch.equal(a, b)
    assert decode_ids(a) == {"req-2", "req-10", "x"} and decode_ids(encode_ids(set())) == set()
    # never divisible by the TP size: vLLM would split it and gather it on the device group
    for ids in (set(), {"a"}, {"ab"}, {"abc", "d"}):
        for tp in (2, 3, 4):
            t = encode_ids(ids, tp)
            assert t.numel() % tp != 0 and decode_ids(t) == ids


def test_monitor_readings_of_an_earlier_pipeline_stage_reach_the_last(tmp_path, monkeypatch):
    """Pipeline parallel: a stage projects only on its own layers, so a monitored name whose layer
    runs on an earlier stage would read 0 on the last; its raw rows travel on inside the
    IntermediateTensors (steering_plugin.pipeline) and the last stage reads the whole value.
    Stage 1 runs layers 0-1 ("a" reads at layer 0), stage 2 layer 2 ("b" at layer 2)."""
    from vllm.sequence import IntermediateTensors

    from steering_plugin import pipeline
    from steering_plugin.monitor import MonitorBuffers
    from steering_plugin.runtime import runtime_for

    monkeypatch.setattr(pipeline, "_pipeline_stages", lambda: 2)
    import vllm.distributed
    monkeypatch.setattr(vllm.distributed, "get_tp_group", lambda: SimpleNamespace(world_size=1))
    g = torch.Generator().manual_seed(3)
    stream = {layer: torch.randn(3, HIDDEN, generator=g) + 1.0 for layer in range(LAYERS)}

    class Stage:   # a runner whose forward records the monitor projections of its own layers
        def __init__(self, model, hf, layers, last):
            self.model, self.model_config = model, SimpleNamespace(hf_config=hf)
            self.layers, self.last = layers, last

        def get_model(self):
            return self.model

        def execute_model(self, scheduler_output, intermediate_tensors=None):
            self.model.steering.begin_step(*scheduler_output)
            zero = torch.zeros(3, HIDDEN)
            for layer in self.layers:
                self.model.model.monitor_buffers.record(layer, stream[layer], zero, zero)
            if self.last:
                return None
            return IntermediateTensors({"hidden_states": zero, "residual": zero})

    monkeypatch.setattr(Stage, "execute_model", Stage.execute_model)   # undone after the test
    pipeline._wrap_execute_model(Stage)
    stages = []
    for layers, last in ((range(0, 2), False), (range(2, 3), True)):
        model, hf = fake_model(tmp_path)
        model.model.monitor_buffers = MonitorBuffers(
            num_layers=LAYERS, hidden=HIDDEN, columns=4, max_tokens=MAX_TOKENS,
            first_layer=layers[0], dtype=torch.float32, steer=model.model.steer_buffers,
            layers=layers)
        runtime_for(model, hf)
        stages.append(Stage(model, hf, list(layers), last))
    first, last = stages
    store = VectorStore(tmp_path)
    unit = {n: v.vectors[0] / v.vectors[0].norm() for n in "ab" for v in [store.load("persona", n)]}
    # r1 monitors both names; r2 nothing; r1's sampled position is its last token (index 1)
    mon = SimpleNamespace(extra_args={"steering": {"monitor": ["a", "b"]}})
    step = (["r1", "r2"], np.array([2, 1]), [mon, None])
    sent = first.execute_model(step)
    carried = pipeline.decode_json(sent.tensors[pipeline.MONITOR_KEY])
    assert set(carried) == {"r1"} and carried["r1"][1] == 0.0   # "b" is not on this stage
    last.execute_model(step, IntermediateTensors(dict(sent.tensors)))
    got = last.model.steering.monitor.read()["r1"]
    want = [float(stream[0][1] @ unit["a"]), float(stream[2][1] @ unit["b"])]   # no axis: raw
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert abs(want[0]) > 0.1, "the earlier stage's reading is not a zero by chance"
    # without the carried rows the last stage alone reads 0 for "a" (what this fixes)
    first.execute_model(step)
    last.execute_model(step, IntermediateTensors({"hidden_states": torch.zeros(3, HIDDEN)}))
    assert last.model.steering.monitor.read()["r1"][0] == 0.0


def test_partial_steer_tokens_mask_positions_across_steps(tmp_path):
    """steer_tokens by position, whatever step computes it: a last_turn request prefilled in two
    chunks then decoding, next to a generated one, an "all" one and another last_turn one with
    the same vectors (the two last_turn requests share a slot: where a request starts steering
    is not part of its config)."""
    model, hf = fake_model(tmp_path)
    rt = SteeringRuntime(model, hf)
    idx = model.model.steer_buffers.steer_index

    def req(mode=None, start=None):
        body = {"personas": {"a": 1.0}}
        if mode:
            body["steer_tokens"] = mode
        if start is not None:
            body["steer_start"] = start
        return SimpleNamespace(extra_args={"steering": body})
    ps = [req("last_turn", 5), req("generated"), req(), req("last_turn", 2)]
    ids = ["turn", "gen", "all", "turn2"]
    # step 1: prompts of 8, 4, 3, 3 tokens; "turn" prefills its first 4 only
    rt.begin_step(ids, np.array([4, 4, 3, 3]), ps, num_computed=[0, 0, 0, 0],
                  num_prompt=[8, 4, 3, 3])
    got = idx[:14].tolist()
    a, t = got[8], got[13]
    assert 0 not in (a, t) and a != t and len(rt.key_slot) == 3
    assert got == [0] * 4 + [0] * 4 + [a] * 3 + [0, 0, t]
    # step 2: the rest of "turn"'s prompt (positions 4..7, steered from 5), the others decode
    rt.begin_step(ids, np.array([4, 1, 1, 1]), ps, num_computed=[4, 4, 3, 3],
                  num_prompt=[8, 4, 3, 3])
    g = idx[4].item()
    assert idx[:7].tolist() == [0, t, t, t, g, a, t] and g not in (0, a, t)
