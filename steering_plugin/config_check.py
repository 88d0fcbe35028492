"""vLLM features the steering plugin refuses at start, in one line, rather than steer wrongly.

The per-token slot index is written once per step, from offset 0, in the batch's token order
(`runtime.SteeringRuntime.begin_step`). Features that lay tokens out differently, or whose ranks
could not agree on a request's steering (`runtime._tp_agreement`, `pipeline`), are refused when
the steered model is built (in every worker, so the engine fails to start with this message). docs/vllm-features.md lists them all.
"""
from __future__ import annotations

from typing import Any


class SteeringConfigError(ValueError):
    """An engine setting the steering plugin cannot follow; the engine must not start."""


def refusals(vllm_config: Any) -> list[str]:
    """Why this engine config can't run steering (empty: it can)."""
    out = []
    spec = getattr(vllm_config, "speculative_config", None)
    if spec is not None and getattr(spec, "enable_adaptive_verification", False):
        out.append("adaptive draft verification (speculative_config.enable_adaptive_verification) "
                   "re-lays the tokens on the GPU after the steering index is written")
    par = getattr(vllm_config, "parallel_config", None)
    if par is not None and (getattr(par, "enable_dbo", False)
                            or getattr(par, "ubatch_size", 0) > 1):
        out.append("dual-batch overlap / micro-batching (enable_dbo, ubatch_size) runs the model "
                   "once per token slice, and every slice would read the first slice's slots")
    if (par is not None and getattr(par, "pipeline_parallel_size", 1) > 1
            and getattr(par, "distributed_executor_backend", None) == "external_launcher"):
        out.append("pipeline parallelism under the external_launcher backend (torchrun): its "
                   "stages send inside the runner, past the hook that passes steering failures "
                   "on to the last stage (the mp and ray executors are supported)")
    return out


def check_config(vllm_config: Any) -> None:
    reasons = refusals(vllm_config)
    if reasons:
        raise SteeringConfigError("steering cannot run with " + "; nor with ".join(reasons))
