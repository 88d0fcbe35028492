"""Guards on what the plugin assumes about vLLM's classes (fail here, not at a GPU user's start):
the decoder-layer swap, the parent's __init__ we mirror, the engine settings refused at start,
and the plugin's registration leaving CUDA alone in the API server process."""
from __future__ import annotations

import inspect
import re
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest
from vllm.model_executor.models.qwen2 import Qwen2Model
from vllm.model_executor.models.qwen3 import Qwen3DecoderLayer, Qwen3ForCausalLM, Qwen3Model

from steering_plugin.config_check import SteeringConfigError, check_config, refusals
from steering_plugin.model import SteerQwen3DecoderLayer, SteerQwen3ForCausalLM, SteerQwen3Model


def test_only_the_decoder_layer_is_swapped_and_the_parent_loop_still_calls_it():
    assert SteerQwen3Model.decoder_layer_type is SteerQwen3DecoderLayer
    assert issubclass(SteerQwen3DecoderLayer, Qwen3DecoderLayer)
    assert "forward" not in SteerQwen3Model.__dict__, "keep vLLM's own forward (aux states, PP)"
    # Qwen3Model builds its layers from the class attribute ...
    assert "decoder_layer_type=self.decoder_layer_type" in inspect.getsource(Qwen3Model)
    assert "decoder_layer_type(" in inspect.getsource(Qwen2Model)
    # ... and the parent loop calls each layer as (positions, hidden, residual) -> (hidden, residual)
    loop = inspect.getsource(Qwen2Model.forward)
    assert "hidden_states, residual = layer(positions, hidden_states, residual)" in loop
    params = list(inspect.signature(Qwen3DecoderLayer.forward).parameters)
    assert params == ["self", "positions", "hidden_states", "residual"]


def _assigned(fn) -> set[str]:
    return set(re.findall(r"self\.(\w+)\s*=", inspect.getsource(fn)))


def test_mirrored_init_sets_everything_the_parent_init_sets():
    # Qwen3ForCausalLM.__init__ hard-codes Qwen3Model, so ours repeats its few lines
    missing = _assigned(Qwen3ForCausalLM.__init__) - _assigned(SteerQwen3ForCausalLM.__init__)
    assert not missing, f"vLLM's Qwen3ForCausalLM.__init__ now also sets {missing}"
    assert "Qwen3Model(" in inspect.getsource(Qwen3ForCausalLM.__init__)


def _cfg(spec=None, **parallel):
    par = {"enable_dbo": False, "ubatch_size": 0, "pipeline_parallel_size": 1,
           "tensor_parallel_size": 1, **parallel}
    return SimpleNamespace(speculative_config=spec, parallel_config=SimpleNamespace(**par))


@pytest.mark.parametrize("cfg,words", [
    (_cfg(SimpleNamespace(enable_adaptive_verification=True)), "adaptive draft verification"),
    (_cfg(enable_dbo=True), "dual-batch overlap"),
    (_cfg(ubatch_size=2), "micro-batching"),
    (_cfg(pipeline_parallel_size=2, distributed_executor_backend="external_launcher"),
     "pipeline parallelism under the external_launcher"),
])
def test_layouts_the_index_cannot_follow_are_refused_in_one_line(cfg, words):
    with pytest.raises(SteeringConfigError, match=words) as err:
        check_config(cfg)
    assert "\n" not in str(err.value) and str(err.value).startswith("steering cannot run with ")


def test_supported_settings_pass_and_the_refused_fields_exist_in_vllm():
    from vllm.config import ParallelConfig, SpeculativeConfig
    check_config(_cfg())
    check_config(_cfg(SimpleNamespace(enable_adaptive_verification=False), tensor_parallel_size=4))
    check_config(_cfg(pipeline_parallel_size=2, tensor_parallel_size=2,
                      distributed_executor_backend="mp"))
    assert refusals(SimpleNamespace(speculative_config=None, parallel_config=ParallelConfig())) == []
    fields = set(ParallelConfig.__dataclass_fields__)
    assert {"enable_dbo", "ubatch_size", "pipeline_parallel_size",
            "distributed_executor_backend"} <= fields
    assert "enable_adaptive_verification" in SpeculativeConfig.__dataclass_fields__


def test_registering_the_plugin_does_not_initialise_cuda():
    """The API server process runs register() too; CUDA initialised there would make vLLM fall
    back to spawning workers. Any CUDA initialisation goes through torch.cuda._lazy_init."""
    code = textwrap.dedent("""
        import torch, torch.cuda
        calls = []
        real = torch.cuda._lazy_init
        torch.cuda._lazy_init = lambda: calls.append("init") or real()
        import steering_plugin
        steering_plugin.register()
        steering_plugin.register()          # idempotent
        from vllm.v1.worker.gpu_model_runner import GPUModelRunner
        from vllm.v1.core.sched.scheduler import Scheduler
        assert getattr(GPUModelRunner._prepare_inputs, "_persona_steer_wrapped", False)
        assert getattr(Scheduler.update_from_output, "_persona_steer_failures", False)
        print("cuda init calls:", len(calls), "initialised:", torch.cuda.is_initialized())
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "cuda init calls: 0 initialised: False" in out.stdout
