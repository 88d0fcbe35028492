"""Per-step steering state of one worker: requests -> slots -> the model's static buffers.

Runner-agnostic: the V1 hook (`runner_v1`) and the V2 ModelState (`model_state_v2`) both call
`SteeringRuntime.begin_step(req_ids, num_scheduled_tokens, params)` before each forward.

Per step:
  1. each request's SteeringSpec (from SamplingParams.extra_args) is resolved once into a key
     (spec + the vectors' content hashes) and a delta [num_layers, hidden] (cached per key);
  2. each distinct key in the batch gets a slot 1..max_num_seqs; a slot keeps its key across
     steps so its table rows are written only when a new config takes it over;
  3. the per-token slot index is written in place: np.repeat(slot_per_request, tokens_per_request).
Vectors come from the store folder on demand, so a vector saved after start is usable by the next
request and a changed file is picked up by its new content hash (hot load without restart).
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from persona_steer.resolve import ModelShape, axis_thresholds, content_hashes, load_axis, spec_delta
from persona_steer.steering_spec import SteeringSpec, parse_extra_args
from persona_steer.store import VectorStore

log = logging.getLogger("steering_plugin")

_MAX_CACHED_DELTAS = 256


@dataclass(frozen=True)
class _Entry:
    key: tuple          # (spec, hashes) -> identifies the table contents
    spec: SteeringSpec


class SteeringRuntime:
    def __init__(self, model: torch.nn.Module, hf_config: Any):
        self.inner = model.model                         # SteerQwen3Model with the buffers
        self.device = self.inner.steer_table.device
        self.dtype = self.inner.steer_table.dtype
        self.store = VectorStore(getattr(hf_config, "steering_store", "vectors"))
        self.shape = ModelShape(
            hidden_size=hf_config.hidden_size, num_layers=hf_config.num_hidden_layers,
            model_id=getattr(hf_config, "steering_model_id", None),
            steerable_layers=tuple(self.inner.steer_layers))
        self.default_scale = float(getattr(hf_config, "steering_scale", 1.0))
        self.max_weight = getattr(hf_config, "steering_max_weight", None)
        self.cap_percentile = float(getattr(hf_config, "steering_cap_percentile", 25.0))
        num_slots = self.inner.num_slots
        self.slot_key: list[tuple | None] = [None] * num_slots   # slot 0 is never assigned
        self.key_slot: dict[tuple, int] = {}
        self.entries: dict[str, _Entry | None] = {}             # req_id -> entry (None: plain)
        self.deltas: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self.axis_hash: str | None = None
        self.index_high = 0                                     # tokens written last step
        self.errors: dict[str, str] = {}                        # req_id -> why it runs unsteered

    # --- resolving requests ------------------------------------------------------------
    def _entry(self, req_id: str, params: Any) -> _Entry | None:
        if req_id in self.entries:
            return self.entries[req_id]
        entry = None
        try:
            spec = parse_extra_args(getattr(params, "extra_args", None), self.max_weight)
            if spec is not None and not spec.is_noop:
                hashes = content_hashes(spec, self.store, self.shape)
                key = (spec, tuple(sorted(hashes.items())))
                if spec.safety:
                    self._sync_axis(hashes["axis/assistant_axis"])
                if key not in self.deltas:
                    delta = spec_delta(spec, self.store, self.shape, self.default_scale)
                    rows = delta[list(self.inner.steer_layers)]
                    self.deltas[key] = rows.to(self.device, self.dtype)
                    while len(self.deltas) > _MAX_CACHED_DELTAS:
                        old, _ = self.deltas.popitem(last=False)
                        self._release(old)
                entry = _Entry(key, spec)
        except Exception as err:  # never take the engine down for one request
            # The server (and the validating logits processor on stock vLLM) refuse bad
            # requests before they get here; this covers a file deleted in between.
            self.errors[req_id] = str(err)
            log.error("steering for request %s could not be applied, running it unsteered: %s",
                      req_id, err)
        self.entries[req_id] = entry
        return entry

    def _sync_axis(self, axis_hash: str) -> None:
        if axis_hash == self.axis_hash:
            return
        axis = load_axis(self.store, self.shape)
        thresholds = axis_thresholds(axis, self.cap_percentile)
        rows = axis.per_layer()
        for layer, r in self.inner.cap_row.items():
            if layer in rows:
                unit = rows[layer] / rows[layer].norm().clamp_min(1e-12)
                self.inner.cap_axis[r].copy_(unit.to(self.device, self.dtype))
                self.inner.cap_thresh[r] = float(thresholds[layer])
            else:
                self.inner.cap_axis[r].zero_()
                self.inner.cap_thresh[r] = 0.0
        self.axis_hash = axis_hash

    def _release(self, key: tuple) -> None:
        slot = self.key_slot.pop(key, None)
        if slot is not None:
            self.slot_key[slot] = None

    # --- per step ------------------------------------------------------------------------
    def begin_step(self, req_ids: Sequence[str], num_scheduled_tokens: np.ndarray,
                   params: Sequence[Any]) -> None:
        n_reqs = len(req_ids)
        entries = [self._entry(rid, p) for rid, p in zip(req_ids, params)]
        # Forget requests that left the batch (a preempted one is re-resolved from cache).
        live = set(req_ids)
        for rid in [r for r in self.entries if r not in live]:
            del self.entries[rid]
            self.errors.pop(rid, None)

        wanted = {e.key for e in entries if e is not None}
        slots = np.zeros(n_reqs, dtype=np.int64)
        free = [s for s in range(1, len(self.slot_key))
                if self.slot_key[s] is None or self.slot_key[s] not in wanted]
        for i, e in enumerate(entries):
            if e is None:
                continue
            slot = self.key_slot.get(e.key)
            if slot is None:
                slot = free.pop(0)
                old = self.slot_key[slot]
                if old is not None:
                    self.key_slot.pop(old, None)
                self.slot_key[slot] = e.key
                self.key_slot[e.key] = slot
                self.inner.steer_table[:, slot].copy_(self.deltas[e.key])
                self.inner.cap_on[slot] = 1.0 if e.spec.safety else 0.0
            slots[i] = slot

        per_token = np.repeat(slots, np.asarray(num_scheduled_tokens[:n_reqs], dtype=np.int64))
        n = per_token.shape[0]
        index = self.inner.steer_index
        index[:n].copy_(torch.from_numpy(per_token), non_blocking=False)
        if self.index_high > n:
            index[n:self.index_high].zero_()  # padded tokens (CUDA graphs) read slot 0
        self.index_high = n

    def reset_index(self, num_tokens: int | None = None) -> None:
        """Dummy/profile runs: every token unsteered."""
        self.inner.steer_index.zero_()
        self.index_high = 0

    def status(self) -> dict:
        return {"cached_configs": len(self.deltas), "slots_in_use": len(self.key_slot),
                "axis_loaded": self.axis_hash is not None, "errors": dict(self.errors)}


def runtime_for(model: torch.nn.Module, hf_config: Any) -> SteeringRuntime | None:
    """The model's runtime, created on first use; None for models without steering buffers."""
    inner = getattr(model, "model", None)
    if inner is None or not hasattr(inner, "steer_table"):
        return None
    rt = getattr(model, "steering", None)
    if rt is None:
        rt = SteeringRuntime(model, hf_config)
        model.steering = rt
    return rt
