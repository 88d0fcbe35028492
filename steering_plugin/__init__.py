"""vLLM general plugin: a steerable Qwen3 architecture, selected per engine with
`hf_overrides={"architectures": ["SteerQwen3ForCausalLM"], ...}` (see steering_plugin.engine).

`register()` is the `vllm.general_plugins` entry point; vLLM calls it in every process
(API server, engine core, workers), so it must be idempotent and cheap.
"""
from __future__ import annotations

ARCH = "SteerQwen3ForCausalLM"


def register() -> None:
    from vllm import ModelRegistry

    if ARCH not in ModelRegistry.get_supported_archs():
        ModelRegistry.register_model(ARCH, "steering_plugin.model:SteerQwen3ForCausalLM")
    from steering_plugin import admission, cpu_wait, failures, monitor_channel, pipeline, runner_v1
    admission.install()   # front end: validate steering, pin vector hashes, salt the cache key
    runner_v1.install()   # workers (V1 runner): per-token slot index before each forward
    failures.install()    # a request whose steering can't be applied fails alone, with a reason
    pipeline.install()    # pipeline parallel: such failures travel on to the last stage
    monitor_channel.install()   # live monitoring readings: worker -> scheduler -> server
    cpu_wait.install()    # CPU hosts: engine core and worker sleep, not spin, between steps
