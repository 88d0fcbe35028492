"""Pipeline parallelism: a request whose steering fails on an earlier stage fails on the last one.

Each stage steers only its own layers and resolves each request's vectors itself (by the pinned
content hashes), so a stage can fail a request that the others applied. Only the last stage's
ModelRunnerOutput reaches the scheduler (`steering_plugin.failures`), and a stage must never wait
for a later one (the later one is still receiving the previous step: a collective between stages
would stall or deadlock the pipeline). So failures travel forward with the data the stages send
each other anyway: a non-last stage adds the ids of this step's failed requests to the
IntermediateTensors it returns (vLLM's worker sends them to the next stage with the residual
stream), and the next stage takes them out before its runner reads the rest and fails those
requests too (`SteeringRuntime.upstream_failed`). The ids are a JSON list as a uint8 tensor on the
CPU (sent over the stages' CPU group); the tensor-parallel ranks of a stage agree on their
failures first (`runtime._tp_agreement`), so each rank sends the same bytes.

Live monitoring's readings travel the same way: a stage reads only the monitored columns whose
layer it runs (the others read 0 there), so a non-last stage sends this step's raw rows per
request (`MonitorRuntime.raw`, JSON in a uint8 tensor like the ids) and the next stage adds them
to its own before the last one turns them into z-scores; a name whose layer runs on an earlier
stage reads what that stage measured.

`install()` wraps `execute_model` of both model runners in memory at plugin registration, like
`runner_v1`; with one stage it passes straight through.
"""
from __future__ import annotations

import functools
import json

import torch

KEY = "steering_failed_ids"
MONITOR_KEY = "steering_monitor_raw"
_MARK = "_persona_steer_pipeline"


def install() -> None:
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner
    _wrap_execute_model(GPUModelRunner)
    try:   # model runner V2 (GPU); its module needs Triton, absent on CPU hosts
        from vllm.v1.worker.gpu.model_runner import GPUModelRunner as V2Runner
    except Exception:
        return
    _wrap_execute_model(V2Runner)


def _pipeline_stages() -> int:
    from vllm.distributed import get_pp_group
    return get_pp_group().world_size


def _wrap_execute_model(cls) -> None:
    original = cls.execute_model
    if getattr(original, _MARK, False):
        return

    @functools.wraps(original)
    def execute_model(self, scheduler_output, intermediate_tensors=None, *args, **kwargs):
        if _pipeline_stages() <= 1:
            return original(self, scheduler_output, intermediate_tensors, *args, **kwargs)
        from vllm.sequence import IntermediateTensors

        from steering_plugin.runtime import runtime_for
        rt = runtime_for(self.get_model(), self.model_config.hf_config)
        upstream = take_failed_ids(intermediate_tensors)
        readings = take_readings(intermediate_tensors)
        monitor = getattr(rt, "monitor", None)
        if rt is not None:
            rt.upstream_failed = upstream
        if monitor is not None:
            monitor.upstream = readings
        out = original(self, scheduler_output, intermediate_tensors, *args, **kwargs)
        if rt is not None and isinstance(out, IntermediateTensors):
            from vllm.distributed import get_tp_group
            tp = get_tp_group().world_size
            out.tensors[KEY] = encode_ids(rt.step_failures, tp)
            if monitor is not None:        # this stage's rows, plus the earlier stages'
                out.tensors[MONITOR_KEY] = encode_json(
                    {rid: row.tolist() for rid, row in monitor.raw().items()}, tp)
        return out

    setattr(execute_model, _MARK, True)
    cls.execute_model = execute_model


def encode_json(value, tp_size: int = 1) -> torch.Tensor:
    """A JSON value as a uint8 CPU tensor (keys sorted: every rank of a stage sends the same
    bytes). Its length is kept indivisible by the TP size: vLLM splits a divisible tensor across
    the TP ranks and gathers it on the device group, which a CPU tensor cannot use on GPUs."""
    raw = json.dumps(value, sort_keys=True).encode()
    if tp_size > 1 and len(raw) % tp_size == 0:
        raw += b" "     # JSON allows trailing whitespace
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8)


def decode_json(tensor: torch.Tensor):
    return json.loads(bytes(tensor.cpu().numpy().tobytes()).decode())


def encode_ids(ids, tp_size: int = 1) -> torch.Tensor:
    """Request ids as a uint8 CPU tensor (sorted, see `encode_json`)."""
    return encode_json(sorted(ids), tp_size)


def decode_ids(tensor: torch.Tensor) -> set[str]:
    return set(decode_json(tensor))


def take_failed_ids(intermediate_tensors) -> set[str]:
    """Remove our entry from the received tensors (the runner copies every received entry into
    buffers of its own, which have no slot for it) and return the ids it carried."""
    tensors = getattr(intermediate_tensors, "tensors", None)   # waits for an async receive
    if not isinstance(tensors, dict) or KEY not in tensors:
        return set()
    return decode_ids(tensors.pop(KEY))


def take_readings(intermediate_tensors) -> dict[str, list[float]]:
    """Remove the earlier stages' monitor rows from the received tensors and return them."""
    tensors = getattr(intermediate_tensors, "tensors", None)
    if not isinstance(tensors, dict) or MONITOR_KEY not in tensors:
        return {}
    return decode_json(tensors.pop(MONITOR_KEY))
