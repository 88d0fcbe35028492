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
from steering_plugin.model import init_steering_buffers
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
    init_steering_buffers(model.model, hf, dtype=torch.float32, slots=SLOTS, max_tokens=MAX_TOKENS)
    return model, hf


def params(**personas):
    return SimpleNamespace(extra_args={"steering": {"personas": personas}} if personas else None)


def test_slots_index_and_table(tmp_path):
    model, hf = fake_model(tmp_path)
    rt = SteeringRuntime(model, hf)
    inner = model.model
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


def test_unresolvable_request_runs_unsteered_and_is_reported(tmp_path):
    model, hf = fake_model(tmp_path)
    rt = SteeringRuntime(model, hf)
    rt.begin_step(["x", "y"], np.array([2, 2]), [params(gone=1.0), params(a=1.0)])
    assert model.model.steer_index[:2].tolist() == [0, 0]
    assert model.model.steer_index[2].item() != 0
    assert "gone" in rt.status()["errors"]["x"]


def test_more_configs_than_ever_fit_reuses_free_slots(tmp_path):
    model, hf = fake_model(tmp_path)
    rt = SteeringRuntime(model, hf)
    for step in range(20):   # 20 distinct weights over time, never more than 2 per batch
        w1, w2 = 0.1 * (step + 1), -0.1 * step - 0.05
        rt.begin_step([f"p{step}", f"q{step}"], np.array([1, 1]), [params(a=w1), params(a=w2)])
        s = model.model.steer_index[:2].tolist()
        assert s[0] != s[1] and 0 not in s
        assert torch.allclose(model.model.steer_table[0, s[0]], torch.full((HIDDEN,), w1))
        assert torch.allclose(model.model.steer_table[0, s[1]], torch.full((HIDDEN,), w2))


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
    idx = model.model.steer_index[:5].tolist()
    assert idx[:2] == [0, 0] and idx[2] == idx[3] == idx[4] != 0
    assert torch.equal(model.model.steer_table[2, idx[2]], torch.full((HIDDEN,), 10.0))
    state.remove_request("r0")
    assert "r0" not in state.steering_params
    state.prepare_dummy_inputs(2, 5)
    assert not model.model.steer_index.any()
