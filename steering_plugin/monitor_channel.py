"""How each step's monitor readings travel from the worker to the server, in band with tokens.

Three hops, each a wrap of one vLLM method at plugin registration (like `failures`):
  1. worker: the runner's `sample_tokens` (V1 and V2) reads this step's readings
     (`MonitorRuntime.read`, one row per monitored request: the position that produced the
     token sampled this step) and tags the step's ModelRunnerOutput with `{req_id: row}`
     (attribute `steering_monitor`; the output reaches the scheduler in process or pickled);
  2. engine core: `Scheduler.update_from_output` puts the rows of each request's new tokens into
     that request's EngineCoreOutput, under `ec_transfer_params["persona_steer_monitor"]` (the one
     per-request dict field that vLLM's front end copies onto RequestOutput each step; it is
     otherwise used only with an encoder-cache connector, which this text-only model never has).
     A streamed (DELTA) request gets each step's rows; any other request has its rows kept on
     the scheduler's Request and sent once, with the finishing output (vLLM's front end only
     passes the final output on for those);
  3. front end: `RequestOutput.add` concatenates the rows when vLLM merges outputs that a slow
     consumer had not read yet, so no step's rows are lost.
The server reads `monitor_rows(output)` and keeps as many rows as the output has tokens (a stop
string may cut the last ones). Rows are lists of float z-scores, in the request's name order.
"""
from __future__ import annotations

import functools
from typing import Any

KEY = "persona_steer_monitor"
ATTR = "steering_monitor"          # ModelRunnerOutput attribute: {req_id: row}
_MARK = "_persona_steer_monitor"
_ROWS = "_persona_steer_monitor_rows"   # scheduler Request attribute (non-streamed requests)


def install() -> None:
    _install_scheduler()
    _install_request_output()
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
        monitor = getattr(rt, "monitor", None)
        if monitor is not None and monitor.step:
            rows = monitor.read()
            if rows:
                attach(out, {rid: row.tolist() for rid, row in rows.items()})
        return out

    setattr(sample_tokens, _MARK, True)
    cls.sample_tokens = sample_tokens


def attach(out, rows: dict[str, list[float]]) -> None:
    from vllm.v1.outputs import ModelRunnerOutput

    for inner in (out, getattr(out, "_model_runner_output", None),   # V1 async
                  getattr(out, "model_runner_output", None)):        # V2 async
        if isinstance(inner, ModelRunnerOutput) and inner.req_ids:
            setattr(inner, ATTR, rows)
            return


def _install_scheduler() -> None:
    from vllm.v1.core.sched.scheduler import Scheduler

    original = Scheduler.update_from_output
    if getattr(original, _MARK, False):
        return

    @functools.wraps(original)
    def update_from_output(self, scheduler_output, model_runner_output):
        rows = getattr(model_runner_output, ATTR, None)
        # finished requests leave self.requests inside the original: look them up first
        requests = {rid: self.requests.get(rid) for rid in rows} if rows else {}
        outputs = original(self, scheduler_output, model_runner_output)
        if rows:
            route_rows(outputs, rows, requests)
        return outputs

    setattr(update_from_output, _MARK, True)
    Scheduler.update_from_output = update_from_output


def route_rows(outputs: dict, rows: dict[str, list[float]], requests: dict) -> None:
    from vllm.sampling_params import RequestOutputKind

    for eco_batch in outputs.values():
        for eco in eco_batch.outputs:
            request = requests.get(eco.request_id)
            row = rows.get(eco.request_id)
            if request is None or row is None:
                continue
            # one row per new token (speculative decoding: the last position's row for each)
            new = [row] * len(eco.new_token_ids)
            params = request.sampling_params
            if params is not None and params.output_kind == RequestOutputKind.DELTA:
                send = new
            else:
                kept = getattr(request, _ROWS, None)
                if kept is None:
                    kept = []
                    setattr(request, _ROWS, kept)
                kept.extend(new)
                if eco.finish_reason is None:
                    continue
                send = kept
            if send:
                eco.ec_transfer_params = {**(eco.ec_transfer_params or {}), KEY: send}


def _install_request_output() -> None:
    from vllm.outputs import RequestOutput

    original = RequestOutput.add
    if getattr(original, _MARK, False):
        return

    @functools.wraps(original)
    def add(self, next_output, aggregate: bool) -> None:
        before = monitor_rows(self) if aggregate else None
        original(self, next_output, aggregate)
        if before:
            after = monitor_rows(self) or []
            self.ec_transfer_params = {**(self.ec_transfer_params or {}), KEY: before + after}

    setattr(add, _MARK, True)
    RequestOutput.add = add


def monitor_rows(output: Any) -> list[list[float]] | None:
    """The monitor rows a RequestOutput carries (None: none)."""
    params = getattr(output, "ec_transfer_params", None)
    rows = params.get(KEY) if isinstance(params, dict) else None
    return list(rows) if rows else None
