"""Warns when the event loop stops answering. While it is blocked nothing else is served: no
disconnect is noticed, /health and /api/status wait. A loop task updates a heartbeat every
0.1 s; a thread logs once per stall, when the heartbeat is older than `after` seconds, with
the stack of every thread at that moment and the CPU time each thread used since the last
check before the stall (a thread that burned the stall's length held the process, e.g. the GIL;
none means the whole process waited: paging, or no CPU), and again when the loop answers again.
Stalls are counted in /metrics (persona_steer_event_loop_stalls_total)."""
from __future__ import annotations

import asyncio
import logging
import os
import resource
import sys
import threading
import time
import traceback
from typing import Callable, Optional

log = logging.getLogger("persona_steer.server")
KEEP_STALLS = 20


def thread_cpu() -> dict[int, float]:
    """{native thread id: CPU seconds} of this process's threads (Linux /proc; else empty)."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    out: dict[int, float] = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[int(tid)] = (int(fields[11]) + int(fields[12])) / tick     # utime + stime
        except (OSError, IndexError, ValueError):
            pass
    return out


def describe_stall(before: dict[int, float], majflt_before: int, loop_thread: int) -> str:
    after = thread_cpu()
    names = {t.native_id: t.name for t in threading.enumerate()}
    used = sorted(((after[t] - before.get(t, 0.0), t) for t in after), reverse=True)
    cpu = ", ".join(f"{names.get(t, f'thread {t}')} {s:.1f}s" for s, t in used[:5] if s >= 0.05)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_majflt - majflt_before
    frames = sys._current_frames()
    stacks = []
    for t in threading.enumerate():
        frame = frames.get(t.ident)
        if frame is None or t.ident == threading.get_ident():
            continue
        mark = " (the event loop)" if t.ident == loop_thread else ""
        stacks.append(f"--- {t.name}{mark}\n" + "".join(traceback.format_stack(frame)[-8:]))
    return (f"CPU used during it by thread: {cpu or 'none over 0.05 s'}; major page faults: "
            f"{faults}\n" + "".join(stacks))


class LoopWatchdog:
    def __init__(self, after: float = 2.0, beat: float = 0.1,
                 on_stall: Optional[Callable[[], None]] = None) -> None:
        self.after, self.beat, self.on_stall = after, beat, on_stall
        self.last = time.monotonic()
        # (seconds blocked, report) of the latest stalls; bounded for a server that runs for weeks
        self.stalls: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._task: Optional[asyncio.Task] = None
        self._thread: Optional[threading.Thread] = None
        self._loop_thread = 0

    async def _heartbeat(self) -> None:
        while True:
            self.last = time.monotonic()
            await asyncio.sleep(self.beat)

    def _watch(self) -> None:
        stalled_at: Optional[float] = None
        cpu, checked = thread_cpu(), time.monotonic()
        majflt = resource.getrusage(resource.RUSAGE_SELF).ru_majflt
        while not self._stop.wait(self.beat):
            lag = time.monotonic() - self.last
            if stalled_at is None and lag > self.after:
                stalled_at = self.last
                report = describe_stall(cpu, majflt, self._loop_thread)
                self.stalls.append((lag, report))
                del self.stalls[:-KEEP_STALLS]
                if self.on_stall is not None:
                    self.on_stall()
                log.warning("event loop blocked for %.1f s so far. %s", lag, report)
            elif stalled_at is None and time.monotonic() - checked >= 0.5:
                # the baseline a stall is measured from: at most 0.5 s old when it starts
                cpu, checked = thread_cpu(), time.monotonic()
                majflt = resource.getrusage(resource.RUSAGE_SELF).ru_majflt
            elif stalled_at is not None and lag <= self.after:
                log.warning("event loop answering again after %.1f s blocked",
                            self.last - stalled_at)
                stalled_at = None

    def start(self) -> None:
        """Call from the loop's thread, inside the running loop."""
        self._loop_thread = threading.get_ident()
        self.last = time.monotonic()
        self._task = asyncio.get_running_loop().create_task(self._heartbeat())
        self._thread = threading.Thread(target=self._watch, name="loop-watchdog", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
