"""Per-step steering state of one worker: requests -> slots -> the model's static buffers.

Runner-agnostic: the V1 hook (`runner_v1`) and the V2 ModelState (`model_state_v2`) both call
`SteeringRuntime.begin_step(req_ids, num_scheduled_tokens, params, live)` before each forward.

Per step:
  1. a request seen for the first time has its SteeringSpec (from SamplingParams.extra_args)
     resolved into a key (spec + the vectors' content hashes) and a delta [layers, hidden];
  2. each distinct key in the batch gets a slot 1..max_num_seqs; a slot keeps its key across
     steps so its table rows are written only when a new config takes it over;
  3. the per-token slot index is written in place: np.repeat(slot_per_request, tokens_per_request).

Content-addressed: front-end admission (`steering_plugin.admission`, the one validator) pins
each vector's content hash in extra_args; a worker applies exactly that content or fails the
request. Vectors are cached by hash, so every rank and every step of a request use the
same bytes, and a file rewritten after admission cannot change a running request.

Lifetime of a delta: it is referenced by every live request (admitted, not finished, preempted
included) that uses it and is never dropped while referenced; only unreferenced deltas are
cached, at most _MAX_CACHED_DELTAS of them, least recently released first out.

A request whose steering cannot be applied (vector gone or changed since admission, corrupt
file) runs this one step on slot 0, is reported in `step_failures`, and the scheduler finishes
it with an error (`steering_plugin.failures`); the engine and the other requests go on. Under
pipeline parallelism each stage resolves requests itself and passes its failures on to the next
stage (`steering_plugin.pipeline`), so the last stage reports them all.
"""
from __future__ import annotations

import logging
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch

from persona_steer.resolve import ModelShape, cap_table_from_axis, load_checked
from persona_steer.steering_spec import SteeringSpec, parse_extra_args
from persona_steer.store import VectorStore
from persona_steer.vector_format import AXIS_NAME, SteeringVector, combine
from steering_plugin.monitor_runtime import MonitorRuntime

log = logging.getLogger("steering_plugin")

_MAX_CACHED_DELTAS = 256     # unreferenced deltas kept for reuse
_MAX_CACHED_VECTORS = 256    # vector contents kept by hash (a few per vector name at most)


UPSTREAM_FAILURE = ("an earlier pipeline stage could not apply this request's steering as admitted "
                    "(a vector changed or unreadable since; that worker's log has the reason); "
                    "send the request again")


class SteeringFailure(RuntimeError):
    """This request's steering cannot be applied as admitted; the request fails, alone."""


@dataclass(frozen=True)
class _Entry:
    key: tuple          # (spec, sorted (kind/name, hash) pairs) -> identifies the table contents
    spec: SteeringSpec


def pinned_hashes(extra_args: Any) -> dict[str, str] | None:
    """The content hashes the front end pinned at admission ("kind/name" -> hash), if any."""
    if not isinstance(extra_args, dict):
        return None
    body = extra_args.get("steering")
    hashes = body.get("hashes") if isinstance(body, dict) else extra_args.get("steer_hashes")
    return dict(hashes) if isinstance(hashes, dict) else None


class SteeringRuntime:
    def __init__(self, model: torch.nn.Module, hf_config: Any,
                 agree: Callable[[list[bool]], list[bool]] | None = None):
        self.inner = model.model.steer_buffers           # model.SteeringBuffers
        self.device = self.inner.steer_table.device
        self.dtype = self.inner.steer_table.dtype
        self.store = VectorStore(getattr(hf_config, "steering_store", "vectors"))
        self.shape = ModelShape.from_hf_config(hf_config)   # as admission checked against
        self.default_scale = float(getattr(hf_config, "steering_scale", 1.0))
        self.max_weight = getattr(hf_config, "steering_max_weight", None)
        self.cap_percentile = float(getattr(hf_config, "steering_cap_percentile", 25.0))
        # Ranks of one model must fail the same requests (tensor parallel: each reads files).
        self.agree = agree if agree is not None else _tp_agreement()
        num_slots = self.inner.num_slots
        self.slot_key: list[tuple | None] = [None] * num_slots   # slot 0 is never assigned
        self.key_slot: dict[tuple, int] = {}
        self.entries: dict[str, _Entry | None] = {}             # live req_id -> entry (None: plain)
        self.deltas: dict[tuple, torch.Tensor] = {}             # key -> rows on the device
        self.users: Counter[tuple] = Counter()                  # key -> live requests using it
        self.unused: OrderedDict[tuple, None] = OrderedDict()   # keys with no user, LRU first
        self.vectors: OrderedDict[str, SteeringVector] = OrderedDict()   # content hash -> vector
        self.axis_hash: str | None = None
        self.max_unused = _MAX_CACHED_DELTAS
        self.index_high = 0                                     # tokens written last step
        self.failed: dict[str, str] = {}                        # live req_id -> why it fails
        self.step_failures: dict[str, str] = {}                 # failed requests in this step
        self.upstream_failed: set[str] = set()   # failed on an earlier pipeline stage, this step
        monitor_buffers = getattr(model.model, "monitor_buffers", None)
        self.monitor = (MonitorRuntime(monitor_buffers, self.store, self.shape)
                        if monitor_buffers is not None else None)   # live monitoring, or off

    # --- resolving requests ------------------------------------------------------------
    def _vector(self, kind: str, name: str, want: str | None) -> tuple[SteeringVector, str]:
        if want is not None and want in self.vectors:
            self.vectors.move_to_end(want)
            return self.vectors[want], want
        vec = load_checked(self.store, kind, name, self.shape)
        got = vec.content_hash()
        if want is not None and got != want:
            raise SteeringFailure(
                f"{kind} '{name}' changed on disk after the request was admitted "
                f"(admitted content {want[:12]}, now {got[:12]}); send the request again")
        self.vectors[got] = vec
        while len(self.vectors) > _MAX_CACHED_VECTORS:
            self.vectors.popitem(last=False)
        return vec, got

    def _resolve(self, params: Any) -> _Entry | None:
        extra = getattr(params, "extra_args", None)
        spec = parse_extra_args(extra, self.max_weight)
        if spec is None or spec.is_noop:
            return None
        pinned = pinned_hashes(extra) or {}
        loaded = {f"{k}/{n}": self._vector(k, n, pinned.get(f"{k}/{n}"))
                  for k, n in spec.required_vectors()}
        key = (spec, tuple(sorted((k, h) for k, (_, h) in loaded.items())))
        if key not in self.deltas:
            scale = spec.scale if spec.scale is not None else self.default_scale
            weighted = [(loaded[f"{k}/{n}"][0], w) for k, n, w in spec.weighted() if w != 0]
            delta = combine(weighted, scale, self.shape.num_layers, self.shape.hidden_size)
            self.deltas[key] = delta[list(self.inner.steer_layers)].to(self.device, self.dtype)
            self.unused[key] = None
        axis = loaded.get(f"axis/{AXIS_NAME}")
        if axis is not None:
            self._sync_axis(*axis)
        return _Entry(key, spec)

    def _sync_axis(self, axis: SteeringVector, axis_hash: str) -> None:
        # One axis for the engine: a newer axis takes over capping for every capped request.
        if axis_hash == self.axis_hash:
            return
        table = cap_table_from_axis(axis, self.cap_percentile, list(self.inner.cap_row))
        for layer, r in self.inner.cap_row.items():
            if layer in table:
                unit, threshold = table[layer]
                self.inner.cap_axis[r].copy_(unit.to(self.device, self.dtype))
                self.inner.cap_thresh[r] = float(threshold)
            else:
                self.inner.cap_axis[r].zero_()
                self.inner.cap_thresh[r] = 0.0
        self.axis_hash = axis_hash

    def _admit(self, new: list[tuple[str, Any]]) -> None:
        """Resolve first-seen requests; a failure fails that request only."""
        results: list[tuple[str, _Entry | None, str | None]] = []
        for rid, params in new:
            try:
                entry = self._resolve(params)
                self._admit_monitor(rid, params)
                results.append((rid, entry, None))
            except Exception as err:  # never take the engine down for one request
                results.append((rid, None, str(err) or type(err).__name__))
        if self.agree is not None:
            ok_here = [why is None for _, _, why in results]
            ok_all = self.agree(ok_here)
            results = [(rid, e, why if why is not None or ok else
                        "another tensor-parallel rank could not load this request's steering "
                        "vectors as admitted; send the request again")
                       for (rid, e, why), ok in zip(results, ok_all)]
        for rid, entry, why in results:
            if why is not None:
                self.failed[rid] = why
                if self.monitor is not None:
                    self.monitor.forget(rid)
                log.error("steering for request %s cannot be applied; failing it: %s", rid, why)
                entry = None
            self.entries[rid] = entry
            if entry is not None:
                self._use(entry.key)
        self._trim()   # deltas resolved for requests that then failed

    def _admit_monitor(self, rid: str, params: Any) -> None:
        extra = getattr(params, "extra_args", None)
        if self.monitor is not None:
            self.monitor.admit(rid, params, self.max_weight, pinned_hashes(extra) or {})
            return
        spec = parse_extra_args(extra, self.max_weight)
        if spec is not None and spec.monitor:
            raise SteeringFailure("this engine has live monitoring off "
                                  "(steering.monitor.columns: 0)")

    def _use(self, key: tuple) -> None:
        self.users[key] += 1
        self.unused.pop(key, None)

    def _unuse(self, key: tuple) -> None:
        self.users[key] -= 1
        if self.users[key] > 0:
            return
        del self.users[key]
        self.unused[key] = None
        self._trim()

    def _trim(self) -> None:
        while len(self.unused) > self.max_unused:
            old, _ = self.unused.popitem(last=False)
            del self.deltas[old]
            slot = self.key_slot.pop(old, None)
            if slot is not None:
                self.slot_key[slot] = None

    def _forget(self, live: set[str]) -> None:
        for rid in [r for r in self.entries if r not in live]:
            entry = self.entries.pop(rid)
            self.failed.pop(rid, None)
            if self.monitor is not None:
                self.monitor.forget(rid)
            if entry is not None:
                self._unuse(entry.key)

    # --- per step ------------------------------------------------------------------------
    def begin_step(self, req_ids: Sequence[str], num_scheduled_tokens: np.ndarray,
                   params: Sequence[Any], live: Iterable[str] | None = None,
                   num_computed: Sequence[int] | None = None,
                   num_prompt: Sequence[int] | None = None) -> None:
        """`live`: every request the runner still holds (scheduled this step or not, preempted
        included); a request absent from it has finished and releases its delta.
        `num_computed`/`num_prompt`: per request, tokens computed before this step and the
        prompt's length (positions), for `steer_tokens`; None: the runner cannot tell, and a
        request that steers only part of its tokens fails."""
        n_reqs = len(req_ids)
        self._forget(set(req_ids) | set(live if live is not None else ()))
        new = [(rid, p) for rid, p in zip(req_ids, params) if rid not in self.entries]
        if new:
            self._admit(new)
        for rid in self.upstream_failed.intersection(req_ids):   # steering_plugin.pipeline
            self.failed.setdefault(rid, UPSTREAM_FAILURE)
        self.upstream_failed = set()
        entries = [self.entries[rid] for rid in req_ids]
        self.step_failures = {rid: self.failed[rid] for rid in req_ids if rid in self.failed}

        wanted = {e.key for e in entries if e is not None}
        slots = np.zeros(n_reqs, dtype=np.int64)
        free = [s for s in range(len(self.slot_key) - 1, 0, -1)
                if self.slot_key[s] is None or self.slot_key[s] not in wanted]
        for i, e in enumerate(entries):
            if e is None:
                continue
            slot = self.key_slot.get(e.key)
            if slot is None:
                slot = free.pop()
                old = self.slot_key[slot]
                if old is not None:
                    self.key_slot.pop(old, None)
                self.slot_key[slot] = e.key
                self.key_slot[e.key] = slot
                self.inner.steer_table[:, slot].copy_(self.deltas[e.key])
                self.inner.cap_on[slot] = 1.0 if e.spec.safety else 0.0
            slots[i] = slot

        counts = np.asarray(num_scheduled_tokens[:n_reqs], dtype=np.int64)
        per_token = np.repeat(slots, counts)
        self._limit_tokens(entries, req_ids, counts, per_token, num_computed, num_prompt)
        self._write_index(per_token)
        if self.monitor is not None:
            self.monitor.begin_step(req_ids, counts, set(self.step_failures))

    def _limit_tokens(self, entries, req_ids, counts, per_token, num_computed, num_prompt) -> None:
        """`steer_tokens`: a request steered on part of its tokens (its prompt, its generated
        tokens, its last chat turn on) has the other positions on slot 0 (no delta, no capping).
        The span is by position (SteeringSpec.steered_span), whatever step computes it:
        chunked prefill and preemption recompute give the same positions the same treatment."""
        starts = np.concatenate(([0], np.cumsum(counts)[:-1])) if len(counts) else counts
        for i, e in enumerate(entries):
            if e is None or e.spec.steer_tokens == "all" or counts[i] == 0:
                continue
            if num_computed is None or num_prompt is None:
                self.step_failures[req_ids[i]] = self.failed[req_ids[i]] = (
                    "steer_tokens needs vLLM's V1 model runner (model.model_runner: v1)")
                per_token[starts[i]:starts[i] + counts[i]] = 0
                continue
            first, end = e.spec.steered_span(int(num_prompt[i]))
            pos = int(num_computed[i]) + np.arange(counts[i])
            keep = (pos >= first) if end is None else (pos >= first) & (pos < end)
            seg = per_token[starts[i]:starts[i] + counts[i]]
            seg[~keep] = 0

    def _write_index(self, per_token: np.ndarray) -> None:
        n = per_token.shape[0]
        index = self.inner.steer_index
        host = torch.from_numpy(per_token)
        if index.is_cuda:
            # Stage through pinned memory and copy without waiting for the stream (vLLM's
            # async_tensor_h2d); the caching host allocator keeps the block until the copy ran.
            index[:n].copy_(host.pin_memory(), non_blocking=True)
        else:
            index[:n].copy_(host)
        if self.index_high > n:
            index[n:self.index_high].zero_()  # padded tokens (CUDA graphs) read slot 0
        self.index_high = n

    def reset_index(self, num_tokens: int | None = None) -> None:
        """Dummy/profile runs: every token unsteered."""
        self.inner.steer_index.zero_()
        self.index_high = 0

    def status(self) -> dict:
        return {"cached_configs": len(self.deltas), "unused_configs": len(self.unused),
                "slots_in_use": len(self.key_slot), "axis_loaded": self.axis_hash is not None,
                "failed": dict(self.failed)}


def _tp_agreement() -> Callable[[list[bool]], list[bool]] | None:
    """Under tensor parallelism: AND of each request's 'resolved' flag over the TP ranks (they
    see the same batches, so they call this in the same steps). None with one rank."""
    try:
        from vllm.distributed import get_tp_group
        group = get_tp_group()
    except Exception:       # no distributed state (unit tests, tools)
        return None
    if group.world_size <= 1:
        return None

    def agree(ok: list[bool]) -> list[bool]:
        flags = torch.tensor([0 if x else 1 for x in ok], dtype=torch.int32)
        torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX,
                                     group=group.cpu_group)
        return [int(f) == 0 for f in flags]

    return agree


def runtime_for(model: torch.nn.Module, hf_config: Any) -> SteeringRuntime | None:
    """The model's runtime, created on first use; None for models without steering buffers."""
    if getattr(getattr(model, "model", None), "steer_buffers", None) is None:
        return None
    rt = getattr(model, "steering", None)
    if rt is None:
        rt = SteeringRuntime(model, hf_config)
        model.steering = rt
    return rt
