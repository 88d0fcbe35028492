"""Per-step monitoring state of one worker: monitored names -> columns of `MonitorBuffers`,
and the readings of each step's sampled positions, read back as z-scores.

A request that asks `monitor: [...]` gets, at its first step, one column per name: the column's
direction is the name's unit vector at the layer where it separates best
(`persona_steer.resolve.monitor_direction`), keyed by content hash so equal names share a
column across requests. Columns stay with their key while any live request uses them; unused
ones keep their contents for reuse and are taken over least recently released first. A request
that finds no free column, or whose vector changed after admission, fails alone (through the
steering failure path, `steering_plugin.failures`).

Per step, `begin_step` notes the batch position of each monitored request's last scheduled token
(the position whose logits give the token sampled this step); after the forward, `read()` gathers
those rows of `mon_out` in one copy and returns {req_id: float32 [names]} of
(projection - mean) / std, the assistant's spread recorded at extraction.
"""
from __future__ import annotations

from collections import Counter, OrderedDict
from typing import Any, Sequence

import numpy as np
import torch

from persona_steer.resolve import (ModelShape, MonitorDirection, load_checked, monitor_direction,
                                   monitor_targets)
from persona_steer.steering_spec import parse_extra_args
from persona_steer.store import VectorStore
from persona_steer.vector_format import AXIS_NAME, SteeringVector


class MonitorFailure(RuntimeError):
    """The request's monitoring cannot be set up; the request fails, alone."""


class MonitorRuntime:
    def __init__(self, buffers, store: VectorStore, shape: ModelShape):
        self.buf = buffers                                   # monitor.MonitorBuffers
        self.store = store
        self.shape = shape.any_layer()          # a monitored vector may be read at any layer
        k = buffers.columns
        self.col_key: list[tuple | None] = [None] * k
        self.key_col: dict[tuple, int] = {}
        self.users: Counter[int] = Counter()                 # column -> live requests using it
        self.unused: OrderedDict[int, None] = OrderedDict((c, None) for c in range(k))
        self.mean = np.zeros(k, dtype=np.float32)
        self.std = np.ones(k, dtype=np.float32)
        self.req_cols: dict[str, np.ndarray] = {}            # live monitored req_id -> columns
        self.capped: set[str] = set()                        # live requests with safety on
        self.step: list[tuple[str, int]] = []                # (req_id, token position) this step
        self.upstream: dict[str, list[float]] = {}           # earlier pipeline stages' raw rows

    # --- requests ----------------------------------------------------------------------------
    def admit(self, rid: str, params: Any, max_weight: float | None, pinned: dict) -> None:
        spec = parse_extra_args(getattr(params, "extra_args", None), max_weight)
        if spec is None or not (spec.monitor or spec.safety):
            return
        if spec.safety:        # its rows end with the token's count of capped layers
            self.capped.add(rid)
        if len(spec.monitor) > self.buf.columns:
            raise MonitorFailure(f"monitor asks for {len(spec.monitor)} names; this engine reads "
                                 f"at most {self.buf.columns} at once")
        wanted = []
        for kind, name in monitor_targets(spec.monitor, self.store):
            want = pinned.get(f"{kind}/{name}")
            if want is not None and (kind, name, want) in self.key_col:
                wanted.append(((kind, name, want), None))    # in a column already: no read
                continue
            vec = load_checked(self.store, kind, name, self.shape)
            got = vec.content_hash()
            if want is not None and got != want:
                raise MonitorFailure(f"{kind} '{name}' changed on disk after the request was "
                                     f"admitted; send the request again")
            wanted.append(((kind, name, got), vec))
        need = [key for key, _ in wanted if key not in self.key_col]
        keep = {key for key, _ in wanted}
        free = [c for c in self.unused if self.col_key[c] not in keep]   # LRU first
        if len(set(need)) > len(free):
            raise MonitorFailure(f"the engine reads at most {self.buf.columns} monitored vectors "
                                 f"at once and the running requests hold them all; send it again")
        axis = self._axis() if need else None
        cols = []
        for key, vec in wanted:
            col = self.key_col.get(key)
            if col is None:
                col = free.pop(0)
                self._assign(col, key, monitor_direction(vec, axis))
            self.users[col] += 1
            self.unused.pop(col, None)
            cols.append(col)
        self.req_cols[rid] = np.asarray(cols, dtype=np.int64)

    def _axis(self) -> SteeringVector | None:
        try:
            return load_checked(self.store, "axis", AXIS_NAME, self.shape) \
                if self.store.exists("axis", AXIS_NAME) else None
        except Exception:          # a bad axis file only loses the fallback spread
            return None

    def _assign(self, col: int, key: tuple, d: MonitorDirection) -> None:
        old = self.col_key[col]
        if old is not None:
            self.key_col.pop(old, None)
        self.col_key[col], self.key_col[key] = key, col
        dirs = self.buf.mon_dirs
        dirs[:, col].zero_()
        dirs[d.layer, col].copy_(d.unit.to(dirs.device, dirs.dtype))
        self.mean[col], self.std[col] = d.mean, d.std

    def forget(self, rid: str) -> None:
        self.capped.discard(rid)
        cols = self.req_cols.pop(rid, None)
        if cols is None:
            return
        for col in cols.tolist():
            self.users[col] -= 1
            if self.users[col] <= 0:
                del self.users[col]
                self.unused[col] = None

    # --- per step ----------------------------------------------------------------------------
    def begin_step(self, req_ids: Sequence[str], num_scheduled_tokens: np.ndarray,
                   skip: set[str]) -> None:
        self.step = []
        if not self.req_cols:
            return
        ends = np.cumsum(np.asarray(num_scheduled_tokens[:len(req_ids)], dtype=np.int64)) - 1
        self.step = [(rid, int(ends[i])) for i, rid in enumerate(req_ids)
                     if rid in self.req_cols and rid not in skip]

    def raw(self) -> dict[str, np.ndarray]:
        """This step's raw readings per monitored request: its columns' projections (name order),
        then, with safety on, its count of capped layers; plus what earlier pipeline stages read
        (`upstream`, set by steering_plugin.pipeline): a column's direction is non-zero only at
        its one layer, which one stage runs, so the stages' rows add up to the whole reading.
        Ends the step's readings (a second call returns {})."""
        step, upstream = self.step, self.upstream
        self.step, self.upstream = [], {}
        if not step:
            return {}
        pos = torch.tensor([p for _, p in step], dtype=torch.long)
        pos = pos.to(self.buf.mon_out.device)
        both = torch.cat([self.buf.mon_out.index_select(0, pos),
                          self.buf.cap_hits.index_select(0, pos).unsqueeze(-1)], dim=-1)
        rows = both.cpu().numpy()                            # one copy back per step
        out = {}
        for i, (rid, _) in enumerate(step):
            row = rows[i, self.req_cols[rid]]
            if rid in self.capped:
                row = np.append(row, rows[i, -1])
            earlier = upstream.get(rid)
            if earlier is not None and len(earlier) == len(row):
                row = row + np.asarray(earlier, dtype=np.float32)
            out[rid] = row.astype(np.float32)
        return out

    def read(self) -> dict[str, np.ndarray]:
        """z-scores of this step's sampled positions, per monitored request (then, with safety
        on, the count of capped layers)."""
        out = {}
        for rid, row in self.raw().items():
            cols = self.req_cols[rid]
            z = ((row[:len(cols)] - self.mean[cols]) / self.std[cols]).astype(np.float32)
            out[rid] = np.append(z, row[len(cols):]) if rid in self.capped else z
        return out
