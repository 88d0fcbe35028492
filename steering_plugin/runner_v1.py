"""Model runner V1 (the only runner on CPU; `VLLM_USE_V2_MODEL_RUNNER=0` on GPU).

V1 has no per-model hook for per-request inputs, so `install()` wraps
`GPUModelRunner._prepare_inputs` (CPUModelRunner inherits it) at plugin registration, in memory:
no vLLM file is changed. After the stock method has laid out the batch, the steering runtime
writes the per-token slot index. Models without steering buffers are untouched.
"""
from __future__ import annotations

import functools

_MARK = "_persona_steer_wrapped"


def install() -> None:
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    original = GPUModelRunner._prepare_inputs
    if getattr(original, _MARK, False):
        return  # idempotent: register() runs in every process, possibly more than once

    @functools.wraps(original)
    def _prepare_inputs(self, scheduler_output, num_scheduled_tokens, *args, **kwargs):
        out = original(self, scheduler_output, num_scheduled_tokens, *args, **kwargs)
        _begin_step(self, num_scheduled_tokens)
        return out

    setattr(_prepare_inputs, _MARK, True)
    GPUModelRunner._prepare_inputs = _prepare_inputs


def _begin_step(runner, num_scheduled_tokens) -> None:
    from steering_plugin.runtime import runtime_for

    model = runner.get_model()
    rt = runtime_for(model, runner.model_config.hf_config)
    if rt is None:
        return
    req_ids = list(runner.input_batch.req_ids)
    params = [runner.requests[r].sampling_params for r in req_ids]
    n = len(req_ids)
    # runner.requests holds every unfinished request, unscheduled and preempted ones included
    rt.begin_step(req_ids, num_scheduled_tokens, params, live=runner.requests.keys(),
                  num_computed=runner.input_batch.num_computed_tokens_cpu[:n],
                  num_prompt=[runner.requests[r].num_prompt_tokens for r in req_ids])
