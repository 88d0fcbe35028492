"""A request whose steering cannot be applied fails alone, with its reason, instead of running
unsteered or taking the engine down.

vLLM 0.32 has one per-request failure path: the scheduler finishes a request with
`RequestStatus.FINISHED_ERROR` (finish_reason "error"; used for grammar and KV-load failures).
The worker finds the failure, the scheduler (engine core process) owns the request, and the
ModelRunnerOutput of the step travels between them (same process, or pickled from the output
rank), so:
  - worker side: the runner's `sample_tokens` (V1 and V2) tags the step's ModelRunnerOutput with
    `{req_id: reason}` from the steering runtime (`SteeringRuntime.step_failures`);
  - scheduler side: `Scheduler.update_from_output` first finishes those requests with
    FINISHED_ERROR (so the token they sampled this step is dropped like an aborted request's),
    then adds an output with finish_reason "error" and the reason in `stop_reason`
    ("steering: ...") for their clients. The server turns that into an error for the client.
Both are wrapped in memory at plugin registration, like `runner_v1`; nothing else changes.
"""
from __future__ import annotations

import functools
import logging

log = logging.getLogger("steering_plugin")

_MARK = "_persona_steer_failures"
ATTR = "steering_failures"          # ModelRunnerOutput attribute: {req_id: reason}
REASON_PREFIX = "steering: "        # stop_reason of a request failed by us


def install() -> None:
    _install_scheduler()
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner
    _wrap_sample_tokens(GPUModelRunner)
    try:   # model runner V2 (GPU); its module needs Triton, absent on CPU hosts
        from vllm.v1.worker.gpu.model_runner import GPUModelRunner as V2Runner
    except Exception:
        return
    _wrap_sample_tokens(V2Runner)


def _wrap_sample_tokens(cls) -> None:
    original = cls.sample_tokens
    if getattr(original, _MARK, False):
        return

    @functools.wraps(original)
    def sample_tokens(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        rt = getattr(self.get_model(), "steering", None)
        if rt is not None and rt.step_failures:
            attach(out, rt.step_failures)
        return out

    setattr(sample_tokens, _MARK, True)
    cls.sample_tokens = sample_tokens


def attach(out, failures: dict[str, str]) -> None:
    """Tag the ModelRunnerOutput inside `out` (plain, or wrapped by an async output)."""
    from vllm.v1.outputs import ModelRunnerOutput

    for inner in (out, getattr(out, "_model_runner_output", None),   # V1 async
                  getattr(out, "model_runner_output", None)):        # V2 async
        if isinstance(inner, ModelRunnerOutput) and inner.req_ids:   # never the shared EMPTY one
            setattr(inner, ATTR, dict(failures))
            return


def _install_scheduler() -> None:
    from vllm.v1.core.sched.scheduler import Scheduler

    original = Scheduler.update_from_output
    if getattr(original, _MARK, False):
        return

    @functools.wraps(original)
    def update_from_output(self, scheduler_output, model_runner_output):
        failures = getattr(model_runner_output, ATTR, None)
        failed = fail_requests(self, failures) if failures else []
        outputs = original(self, scheduler_output, model_runner_output)
        if failed:
            add_error_outputs(outputs, failed)
        return outputs

    setattr(update_from_output, _MARK, True)
    Scheduler.update_from_output = update_from_output


def fail_requests(scheduler, failures: dict[str, str]) -> list:
    """Finish the still-running requests among `failures` with FINISHED_ERROR."""
    from vllm.v1.request import RequestStatus

    for req_id, reason in failures.items():
        request = scheduler.requests.get(req_id)
        if request is not None and not request.is_finished():
            request.stop_reason = REASON_PREFIX + reason
            log.error("request %s failed: steering could not be applied: %s", req_id, reason)
    return scheduler.finish_requests(list(failures), RequestStatus.FINISHED_ERROR)


def add_error_outputs(outputs: dict, requests: list) -> None:
    from vllm.v1.engine import EngineCoreOutput, EngineCoreOutputs

    for request in requests:
        eco = outputs.get(request.client_index)
        if eco is None:
            eco = outputs[request.client_index] = EngineCoreOutputs(outputs=[])
        eco.outputs.append(EngineCoreOutput(
            request_id=request.request_id, new_token_ids=[],
            finish_reason=request.get_finished_reason(), stop_reason=request.stop_reason,
            events=request.take_events(), trace_headers=request.trace_headers))
