"""Monitor readings and capping counts in responses (docs/monitoring.md).

The engine sends one row per generated token (steering_plugin.monitor_channel): the z-score of
each monitored name, then, for a request with safety on, how many capped layers lifted that
token. `MonitorTrack` keeps one answer's rows and shapes the fields merged into a choice:
    "monitor": {"pirate": {"tokens": [0.1, 2.3, ...], "mean": 1.2, "last": 2.3, "min": 0.1, "max": 2.3}}
    "capping": {"capped_tokens": 3, "positions": [0, 4, 5]}
In a streamed chunk `tokens` and `positions` cover the chunk's tokens only and the summaries the
answer so far; in a whole response all of them cover the whole answer.
"""
from __future__ import annotations

from typing import Any, Optional

from steering_plugin.monitor_channel import monitor_rows

_DIGITS = 4


class MonitorTrack:
    def __init__(self, names: tuple[str, ...], capping: bool):
        self.names, self.capping = names, capping
        self.values: list[list[float]] = [[] for _ in names]
        self.capped: list[int] = []          # answer positions capping lifted
        self.count = 0                       # tokens seen

    def take(self, output: Any, n_tokens: int) -> list[list[float]]:
        """This output's rows, as many as it has tokens (a stop string may drop the last)."""
        rows = (monitor_rows(output) or [])[:n_tokens]
        for row in rows:
            for col, value in zip(self.values, row):
                col.append(round(float(value), _DIGITS))
            if self.capping and len(row) > len(self.names) and row[-1] > 0:
                self.capped.append(self.count)
            self.count += 1
        return rows

    def fields(self, new: Optional[list[list[float]]] = None) -> dict:
        """Fields for a choice: the readings of `new` rows (a chunk), or of the whole answer."""
        out: dict[str, Any] = {}
        if self.names:
            out["monitor"] = {
                name: {"tokens": col if new is None else
                       [round(float(r[j]), _DIGITS) for r in new], **summary(col)}
                for j, (name, col) in enumerate(zip(self.names, self.values))}
        if self.capping:
            first = 0 if new is None else self.count - len(new)
            out["capping"] = {"capped_tokens": len(self.capped),
                              "positions": [p for p in self.capped if p >= first]}
        return out


def summary(values: list[float]) -> dict:
    if not values:
        return {"mean": None, "last": None, "min": None, "max": None}
    return {"mean": round(sum(values) / len(values), _DIGITS), "last": values[-1],
            "min": min(values), "max": max(values)}


def track_for(steering: Any, n: int = 1) -> Optional[MonitorTrack]:
    """A track for a request that monitors names or has safety capping on; else None. With
    n > 1 (no monitoring then) capping is not counted: vLLM hands one choice's rows only."""
    capping = bool(steering.spec is not None and steering.spec.safety and n == 1)
    return MonitorTrack(steering.monitor, capping) if steering.monitor or capping else None
