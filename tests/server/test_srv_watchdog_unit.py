"""The event-loop watchdog (server.loop_watchdog): a blocked loop is reported once, with the
stack that blocks it, and counted; a loop that keeps answering is never reported."""
from __future__ import annotations

import asyncio
import time

from server.loop_watchdog import LoopWatchdog


def _blocking_call(seconds: float) -> None:
    time.sleep(seconds)                 # stands for any synchronous work on the loop's thread


def run(block: float, after: float) -> LoopWatchdog:
    calls = []
    dog = LoopWatchdog(after=after, beat=0.02, on_stall=lambda: calls.append(1))

    async def main():
        dog.start()
        await asyncio.sleep(0.1)
        _blocking_call(block)
        await asyncio.sleep(0.2)        # answering again
        await dog.stop()
    asyncio.run(main())
    assert len(calls) == len(dog.stalls)
    return dog


def test_a_blocked_loop_is_reported_once_with_what_blocks_it():
    dog = run(block=0.6, after=0.2)
    assert len(dog.stalls) == 1
    lag, report = dog.stalls[0]
    assert 0.2 < lag < 0.6
    assert "(the event loop)" in report
    assert "_blocking_call" in report and "time.sleep(seconds)" in report
    assert "CPU used during it by thread:" in report and "major page faults:" in report


def test_the_thread_that_burns_cpu_during_a_stall_is_named():
    """A busy thread holding the process (here: the loop's own thread, spinning) shows with its
    CPU time: that tells a GIL holder from a process that got no CPU at all."""
    dog = LoopWatchdog(after=0.3, beat=0.02)

    async def main():
        dog.start()
        await asyncio.sleep(0.6)        # a baseline is taken
        end = time.monotonic() + 0.8
        while time.monotonic() < end:   # busy, on the loop's thread
            pass
        await asyncio.sleep(0.1)
        await dog.stop()
    asyncio.run(main())
    assert len(dog.stalls) == 1
    cpu_line = dog.stalls[0][1].splitlines()[0]
    assert "MainThread" in cpu_line, cpu_line


def test_a_loop_that_keeps_answering_is_not_reported():
    dog = run(block=0.05, after=0.3)
    assert dog.stalls == []
