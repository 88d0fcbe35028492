"""Monitor readings in responses: per generated token, one z-score per monitored name, and a
summary (mean, last, min, max) of the answer so far (docs/monitoring.md).

The engine sends one row of z-scores per generated token (steering_plugin.monitor_channel);
`MonitorTrack` keeps one answer's readings and shapes them per response and per chunk:
    {"pirate": {"tokens": [0.1, 2.3, ...], "mean": 1.2, "last": 2.3, "min": 0.1, "max": 2.3}}
In a streamed chunk `tokens` holds the chunk's tokens only and the summary covers the answer so
far; in a whole response both cover the whole answer.
"""
from __future__ import annotations

from typing import Any, Optional

from steering_plugin.monitor_channel import monitor_rows

_DIGITS = 4


class MonitorTrack:
    def __init__(self, names: tuple[str, ...]):
        self.names = names
        self.values: list[list[float]] = [[] for _ in names]

    def take(self, output: Any, n_tokens: int) -> list[list[float]]:
        """This output's rows, as many as it has tokens (a stop string may drop the last)."""
        rows = (monitor_rows(output) or [])[:n_tokens]
        for row in rows:
            for col, value in zip(self.values, row):
                col.append(round(float(value), _DIGITS))
        return rows

    def body(self, new: Optional[list[list[float]]] = None) -> dict:
        """The readings of `new` rows (a chunk), or of the whole answer, with its summary."""
        out = {}
        for j, (name, col) in enumerate(zip(self.names, self.values)):
            tokens = col if new is None else [round(float(r[j]), _DIGITS) for r in new]
            out[name] = {"tokens": tokens, **summary(col)}
        return out


def summary(values: list[float]) -> dict:
    if not values:
        return {"mean": None, "last": None, "min": None, "max": None}
    return {"mean": round(sum(values) / len(values), _DIGITS), "last": values[-1],
            "min": min(values), "max": max(values)}


def track_for(names: tuple[str, ...]) -> Optional[MonitorTrack]:
    return MonitorTrack(names) if names else None
