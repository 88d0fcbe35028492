"""How callers build a steerable vLLM engine: one function that turns Settings into engine kwargs.

    from vllm import LLM                       # or AsyncEngineArgs(**kw) for AsyncLLM
    llm = LLM(**engine_kwargs(settings, model_path))

Steering settings reach every worker through `hf_overrides` (they land on `hf_config`).
"""
from __future__ import annotations

import os
from typing import Any

from persona_steer.config import ConfigError, Settings
from persona_steer.devices import check_engine_device, vllm_platform
from persona_steer.quantization import engine_quantization
from steering_plugin import ARCH, cpu_wait


def steering_overrides(settings: Settings, model_id: str | None = None) -> dict[str, Any]:
    s = settings.steering
    return {
        "architectures": [ARCH],
        "steering_store": str(settings.path("vectors").resolve()),
        "steering_model_id": model_id if model_id is not None else settings.model.name,
        "steering_layers": s.layers,
        "steering_scale": s.steering_scale,
        "steering_max_weight": s.max_weight,
        "steering_cap_layers": s.safety.layers,
        "steering_cap_percentile": s.safety.percentile,
        "steering_monitor_columns": max(s.monitor.columns, 0),   # live monitoring (monitor.py)
        "steering_monitor_max_names": s.monitor.max_names,
    }


RUNNER_ENV = "VLLM_USE_V2_MODEL_RUNNER"


def export_engine_env(settings: Settings) -> None:
    """Settings that vLLM's engine core and worker processes read from the environment (they
    inherit it): the CPU KV cache size, the plugin's CPU wait (steering_plugin.cpu_wait), and
    the model runner (`model.model_runner`: V1, the path the tests run, unless told otherwise)."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(settings.model.kv_cache_gib))
    os.environ[cpu_wait.ENV] = str(settings.model.cpu_wait_us)
    runner = settings.model.model_runner
    if runner != "auto":   # auto: vLLM's own choice, or the variable as the environment sets it
        os.environ[RUNNER_ENV] = "1" if runner == "v2" else "0"
    _export_cpu_binding(settings.model.tensor_parallel_size * settings.model.pipeline_parallel_size)


CPU_BIND_ENV = "VLLM_CPU_OMP_THREADS_BIND"
_BOUND_HERE_ENV = "PERSONA_STEER_CPU_BIND"   # the binding we exported (children inherit both)


def _export_cpu_binding(workers: int) -> None:
    """CPU, several workers: export a thread binding unless the environment brings its own; a later
    engine of another size (tests, reloads, child processes) gets its own or vLLM's default."""
    current = os.environ.get(CPU_BIND_ENV)
    if current is not None and current != os.environ.get(_BOUND_HERE_ENV):
        return
    if workers > 1 and _on_cpu():
        os.environ[CPU_BIND_ENV] = os.environ[_BOUND_HERE_ENV] = cpu_thread_binding(workers)
    else:
        os.environ.pop(CPU_BIND_ENV, None)
        os.environ.pop(_BOUND_HERE_ENV, None)


def cpu_thread_binding(workers: int) -> str:
    """CPU: one core list per worker process for `VLLM_CPU_OMP_THREADS_BIND` ("0|1", "0,1|2,3").
    vLLM's own "auto" gives each worker a NUMA node of its own and refuses to start with fewer
    nodes than workers (one-socket machines); this splits the usable cores evenly instead."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < workers:
        raise ConfigError(f"model.tensor_parallel_size x pipeline_parallel_size = {workers} worker "
                          f"processes, but this process may only use {len(cores)} CPU cores")
    per = len(cores) // workers
    return "|".join(",".join(map(str, cores[i * per:(i + 1) * per])) for i in range(workers))


def engine_kwargs(settings: Settings, model_path: str, **extra: Any) -> dict[str, Any]:
    """Keyword arguments for `vllm.LLM(...)` / `AsyncEngineArgs(...)` with steering enabled.

    Quantization (persona_steer.quantization): a pre-quantized checkpoint is left to vLLM to
    detect from its config.json, as `vllm serve` does; `model.quantization: 4bit|8bit` asks for
    vLLM's in-flight quantization (GPU). What this machine cannot run is refused here, in one
    line, before any weights load."""
    m = settings.model
    check_engine_device(m.device)
    if m.pipeline_parallel_size > 1 and m.enforce_eager and _on_cpu():
        # vLLM 0.32's CPU worker skips its warm-up when eager with a fixed KV cache size, and that
        # warm-up allocates the buffers later stages receive into: their first request crashes.
        raise ConfigError("model.enforce_eager: true cannot run with model.pipeline_parallel_size "
                          "> 1 on CPU (vLLM 0.32's CPU worker then never allocates the pipeline "
                          "buffers); set enforce_eager: false")
    quantization = engine_quantization(settings, model_path, vllm_platform())
    export_engine_env(settings)
    kw: dict[str, Any] = dict(
        model=model_path,
        tokenizer=model_path,
        dtype=m.dtype,
        max_model_len=m.max_model_len,
        max_num_seqs=m.max_num_seqs,
        enforce_eager=m.enforce_eager,
        enable_prefix_caching=True,
        gpu_memory_utilization=m.gpu_memory_utilization,
        tensor_parallel_size=m.tensor_parallel_size,
        pipeline_parallel_size=m.pipeline_parallel_size,
        hf_overrides=steering_overrides(settings),
        seed=settings.extraction.seed,
        generation_config=m.generation_config,
        **quantization,
    )
    if _on_cpu():
        # vLLM 0.32 on CPU kills the engine when a request with its own `seed` has its prefill
        # split into chunks (the runner rewinds the request's torch.Generator with set_offset,
        # which CPU generators lack). Scheduling every prompt whole avoids partial prefills.
        # (max_model_len None: vLLM sizes the batch to the model's own length itself)
        kw.update(enable_chunked_prefill=False)
        if m.max_model_len is not None:
            kw.update(max_num_batched_tokens=max(m.max_model_len, 2048))
    kw.update(extra)
    return kw


def _on_cpu() -> bool:
    return vllm_platform() == "cpu"
