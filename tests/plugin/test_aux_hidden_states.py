"""EAGLE-3 and the other methods that collect auxiliary hidden states run vLLM's own
`Qwen2Model.forward`, which collects them around each layer call. With only the decoder layer
swapped, the steered model built by vLLM's classes must return (hidden, aux) when aux layers are
set, and the aux state after a steered layer must carry the steering. Built in a fresh process
(it initialises torch.distributed for one rank), eager, on CPU, with random weights and
attention replaced by a stand-in (no KV cache here); the layer loop, norms, MLPs are vLLM's."""
from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.conftest import free_port

SCRIPT = textwrap.dedent("""
    import sys, torch
    from vllm.config import ModelConfig, VllmConfig, set_current_vllm_config
    from vllm.distributed import init_distributed_environment, initialize_model_parallel
    from vllm.forward_context import set_forward_context
    from vllm.model_executor.model_loader.utils import process_weights_after_loading
    import steering_plugin
    steering_plugin.register()
    from steering_plugin.model import SteerQwen3DecoderLayer, SteerQwen3ForCausalLM

    path, port = sys.argv[1], sys.argv[2]
    mc = ModelConfig(model=path, dtype="float32", max_model_len=256, enforce_eager=True,
                     hf_overrides={"architectures": ["SteerQwen3ForCausalLM"],
                                   "steering_store": "/nonexistent", "steering_layers": "all",
                                   "steering_cap_layers": []})
    cfg = VllmConfig(model_config=mc)
    torch.manual_seed(0)
    with set_current_vllm_config(cfg):
        init_distributed_environment(1, 0, f"tcp://127.0.0.1:{port}", 0, "gloo")
        initialize_model_parallel(1, 1)
        m = SteerQwen3ForCausalLM(vllm_config=cfg)
        for p in m.parameters():
            torch.nn.init.normal_(p, std=0.05)
        process_weights_after_loading(m, mc, torch.device("cpu"))
    inner, bufs = m.model, m.model.steer_buffers

    class QOnly(torch.nn.Module):   # attention without a KV cache reads no metadata: a stand-in
        def forward(self, q, k, v, *args, **kwargs):
            return q

    for layer in inner.layers:
        layer.self_attn.attn = QOnly()
    assert all(type(l) is SteerQwen3DecoderLayer and l.steer_buffers is bufs for l in inner.layers)
    ids, pos = torch.randint(0, 100, (6,)), torch.arange(6)

    def run():
        with set_current_vllm_config(cfg), set_forward_context(None, cfg):
            return m(ids, pos)

    plain = run()
    assert isinstance(plain, torch.Tensor)
    inner.aux_hidden_state_layers = (1, 3)       # after layer 0 and after layer 2
    hidden, aux = run()
    assert len(aux) == 2 and torch.equal(hidden, plain)
    delta = torch.randn(bufs.steer_table.shape[-1])
    bufs.steer_table[0, 1] = delta              # layer 0, slot 1
    bufs.steer_index[:6] = torch.tensor([1, 1, 1, 0, 0, 1])
    s_hidden, s_aux = run()
    diff = s_aux[0] - aux[0]
    steered = torch.tensor([1, 1, 1, 0, 0, 1], dtype=torch.bool)
    assert torch.allclose(diff[steered], delta.expand(4, -1), atol=1e-5), diff
    assert not diff[~steered].any(), "unsteered tokens must be untouched"
    assert not torch.equal(s_hidden, hidden)
    print("OK")
""")


def test_aux_hidden_states_are_collected_and_carry_the_steering(tiny_model):
    out = subprocess.run([sys.executable, "-c", SCRIPT, tiny_model, str(free_port())],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0 and "OK" in out.stdout, out.stdout[-2000:] + out.stderr[-4000:]
