"""Warns when the event loop stops answering. While it is blocked nothing else is served: no
disconnect is noticed, /health and /api/status wait. A loop task updates a heartbeat every
0.1 s; a thread logs once per stall, when the heartbeat is older than `after` seconds, with
the stack the loop's thread is running at that moment (what blocks it), and again when the
loop answers again. Stalls are counted in /metrics (persona_steer_event_loop_stalls_total)."""
from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import traceback
from typing import Callable, Optional

log = logging.getLogger("persona_steer.server")


class LoopWatchdog:
    def __init__(self, after: float = 2.0, beat: float = 0.1,
                 on_stall: Optional[Callable[[], None]] = None) -> None:
        self.after, self.beat, self.on_stall = after, beat, on_stall
        self.last = time.monotonic()
        self.stalls: list[tuple[float, str]] = []      # (seconds blocked, stack at the warning)
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
        while not self._stop.wait(self.beat):
            lag = time.monotonic() - self.last
            if stalled_at is None and lag > self.after:
                stalled_at = self.last
                frame = sys._current_frames().get(self._loop_thread)
                stack = "".join(traceback.format_stack(frame)) if frame is not None else "(none)"
                self.stalls.append((lag, stack))
                if self.on_stall is not None:
                    self.on_stall()
                log.warning("event loop blocked for %.1f s so far; its thread is running:\n%s",
                            lag, stack)
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
