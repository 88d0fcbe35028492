"""On CPU, wait for the other engine process by sleeping briefly, not by spinning.

vLLM's engine core and its worker pass each step through a shared-memory ring
(`shm_broadcast.MessageQueue`). A reader that read within the last second waits for the next
message in a loop of `sched_yield()`: on a GPU host that costs one of many cores; on a small CPU
host it is a whole core taken from the model, the API server and everyone else. Measured here
(2 cores, kernel 6.18, autogroup scheduling): during a generation the engine core spun at ~90%
of a core and the worker ran at ~100% of the other, and processes outside the server's session
(a client, the test runner) got no CPU for up to 7 s at a time. A client's WebSocket stop or its
disconnect then reached the server only after the whole reply was generated.

`install()` replaces that yield with a sleep of `STEERING_CPU_WAIT_US` microseconds (engine_kwargs
sets it from `model.cpu_wait_us`; 0 keeps vLLM's spin). A sleeping reader leaves the core to
others; it notices the next message about that much later, plus the time to get a core back on
a busy machine (benchmarks/cpu_wait_bench.py measures both ways).
"""
from __future__ import annotations

import os
import time

ENV = "STEERING_CPU_WAIT_US"


def wait_seconds() -> float:
    """The configured sleep in seconds; 0 when unset, empty, invalid or not positive."""
    try:
        us = float(os.environ.get(ENV, "") or 0)
    except ValueError:
        return 0.0
    return us / 1e6 if us > 0 else 0.0


def install() -> bool:
    """Patch vLLM's shared-memory queue wait on CPU hosts; True when patched. Idempotent."""
    seconds = wait_seconds()
    if seconds <= 0:
        return False
    try:
        from vllm.platforms import current_platform
        if not current_platform.is_cpu():
            return False
        from vllm.distributed.device_communicators import shm_broadcast
    except Exception:   # another vLLM layout: leave vLLM's own wait in place
        return False
    if not hasattr(shm_broadcast, "sched_yield"):
        return False

    def sleep_briefly() -> None:
        time.sleep(seconds)

    already = getattr(shm_broadcast.sched_yield, "steering_cpu_wait", None) == seconds
    sleep_briefly.steering_cpu_wait = seconds  # marks the patch (tests, idempotence)
    shm_broadcast.sched_yield = sleep_briefly
    if not already:
        from vllm.logger import init_logger   # vLLM's handlers: the line names the process
        init_logger("vllm.steering_plugin").info(
            "steering plugin: between steps this process sleeps %g us instead of spinning "
            "(model.cpu_wait_us)", seconds * 1e6)
    return True
