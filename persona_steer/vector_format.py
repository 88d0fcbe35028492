"""The vector file format: the public contract every part of the project reads and writes.

One safetensors file per vector:
  tensors   `vectors` float32 [n, hidden_size], `layers` int64 [n]
            (row i is added to the residual stream right after decoder layer layers[i]);
            an axis file may also carry `baseline` float32 [n, hidden_size] (mean assistant
            activation, used by extraction as the persona baseline).
  metadata  str -> str; required: kind, name, description, model, hidden_size, format_version.
            Structured values (lists, per-layer dicts) are JSON strings.
            Tuning (`persona-steer tune`, docs/tuning.md) adds `recommended_layers` (JSON list,
            a subset of `layers`: steering adds only these rows), `recommended_strength` (the
            weight a request that names this persona and no strength gets) and `tuning` (JSON:
            scorer, judge, date, threshold, the sweep's table).
            `projection_stats` (JSON, keyed by layer): per-token projections of ordinary
            assistant answers onto the unit row. The axis records them for every layer with
            percentiles (capping's thresholds, checked where capping reads them); a persona or
            trait records `mean`, `std` and `count` for its stored layers (the scale of live
            monitoring's z-scores), checked here.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from persona_steer.atomic import atomic_write_bytes

if TYPE_CHECKING:  # torch is imported where used, so the CLI and spec parsing start fast
    import torch

FORMAT_VERSION = "1"
KINDS = ("persona", "trait", "axis")
AXIS_NAME = "assistant_axis"
NAME_RE = re.compile(r"^[a-z0-9_-]{1,64}$")
REQUIRED_METADATA = ("kind", "name", "description", "model", "hidden_size", "format_version")
# Percentiles of assistant-response projections recorded in an axis file (for capping).
AXIS_PERCENTILES = (1, 5, 10, 25, 50, 75, 90, 95, 99)
# metadata written by tuning (extraction/tune.py); only persona and trait vectors carry them
RECOMMENDED_LAYERS, RECOMMENDED_STRENGTH, TUNING = "recommended_layers", "recommended_strength", "tuning"
# per-token spread of assistant answers along the vector, per layer (axis: also percentiles)
PROJECTION_STATS = "projection_stats"


class VectorFormatError(ValueError):
    """A vector (file or in memory) breaks the format contract."""


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise VectorFormatError(
            f"invalid name {name!r}: use 1-64 characters from a-z, 0-9, '_' and '-'")
    return name


def validate_kind(kind: str) -> str:
    if kind not in KINDS:
        raise VectorFormatError(f"invalid kind {kind!r}: expected one of {', '.join(KINDS)}")
    return kind


@dataclass
class SteeringVector:
    kind: str
    name: str
    vectors: torch.Tensor                     # float32 [n, hidden]
    layers: torch.Tensor                      # int64 [n]
    metadata: dict[str, str] = field(default_factory=dict)
    extra: dict[str, torch.Tensor] = field(default_factory=dict)  # e.g. axis `baseline`

    @classmethod
    def build(cls, kind: str, name: str, per_layer: dict[int, torch.Tensor], *, model: str,
              description: str = "", metadata: dict[str, Any] | None = None,
              extra: dict[str, torch.Tensor] | None = None) -> "SteeringVector":
        """Build from {layer: vector}; non-string metadata values are JSON-encoded."""
        import torch

        layers = sorted(per_layer)
        vecs = torch.stack([per_layer[i].detach().float().cpu().reshape(-1) for i in layers])
        meta = {k: (v if isinstance(v, str) else json.dumps(v)) for k, v in (metadata or {}).items()}
        meta.update(kind=kind, name=name, description=description, model=model,
                    hidden_size=str(vecs.shape[1]), format_version=FORMAT_VERSION)
        vec = cls(kind, name, vecs.contiguous(), torch.tensor(layers, dtype=torch.int64), meta,
                  {k: v.detach().float().cpu().contiguous() for k, v in (extra or {}).items()})
        vec.validate()
        return vec

    @property
    def hidden_size(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def model(self) -> str:
        return self.metadata.get("model", "")

    @property
    def description(self) -> str:
        return self.metadata.get("description", "")

    def per_layer(self) -> dict[int, torch.Tensor]:
        return {int(layer): self.vectors[i] for i, layer in enumerate(self.layers.tolist())}

    def recommended_layers(self) -> list[int] | None:
        """The tuned layers (a subset of `layers`), or None: steering adds every row."""
        value = self.meta_json(RECOMMENDED_LAYERS)
        return None if value is None else [int(x) for x in value]

    def recommended_strength(self) -> float | None:
        raw = self.metadata.get(RECOMMENDED_STRENGTH)
        return None if raw is None else float(raw)

    def steered_rows(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(layers, vectors) that steering adds: every row, or only those at the tuned
        `recommended_layers` (the file keeps every extracted row, so a new tune can widen)."""
        chosen = self.recommended_layers()
        if chosen is None:
            return self.layers, self.vectors
        wanted = set(chosen)
        keep = [i for i, layer in enumerate(self.layers.tolist()) if layer in wanted]
        return self.layers[keep], self.vectors[keep]

    def with_recommendation(self, layers: list[int], strength: float,
                            tuning: dict[str, Any]) -> "SteeringVector":
        """A copy carrying a tuned setting (the one way tuning writes it); validated."""
        meta = dict(self.metadata)
        meta[RECOMMENDED_LAYERS] = json.dumps(sorted(int(x) for x in layers))
        meta[RECOMMENDED_STRENGTH] = repr(float(strength))
        meta[TUNING] = json.dumps(tuning)
        vec = SteeringVector(self.kind, self.name, self.vectors, self.layers, meta, dict(self.extra))
        vec.validate()
        return vec

    def meta_json(self, key: str, default: Any = None) -> Any:
        raw = self.metadata.get(key)
        if raw is None:
            return default
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return raw

    def content_hash(self) -> str:
        """Hash of what changes the model's output: the steered rows' layers and values (not
        other metadata), so a tuned `recommended_layers` counts and an untuned vector keeps
        the hash it always had. For the axis, its `projection_stats` (the capping thresholds)
        count too. (`recommended_strength` does not: the server turns it into the request's
        weight, which the request's own cache key holds.)
        """
        layers, vectors = self.steered_rows()
        h = hashlib.sha256()
        h.update(layers.contiguous().numpy().tobytes())
        h.update(vectors.detach().contiguous().numpy().tobytes())
        if self.kind == "axis" and "projection_stats" in self.metadata:
            h.update(b"projection_stats")
            h.update(self.metadata["projection_stats"].encode())
        return h.hexdigest()[:32]

    def validate(self) -> None:
        import torch

        validate_kind(self.kind)
        validate_name(self.name)
        v, l = self.vectors, self.layers
        if v.dtype != torch.float32 or v.dim() != 2 or v.shape[0] == 0:
            raise VectorFormatError(
                f"'vectors' must be float32 [n, hidden_size] with n >= 1, got {v.dtype} {list(v.shape)}")
        if l.dtype != torch.int64 or l.dim() != 1 or l.shape[0] != v.shape[0]:
            raise VectorFormatError(
                f"'layers' must be int64 [{v.shape[0]}], got {l.dtype} {list(l.shape)}")
        if (l < 0).any() or len(set(l.tolist())) != l.shape[0]:
            raise VectorFormatError("'layers' must be distinct non-negative layer indices")
        if not torch.isfinite(v).all():
            raise VectorFormatError("'vectors' contains NaN or Inf")
        for key, t in self.extra.items():
            if t.shape != v.shape or not torch.isfinite(t).all():
                raise VectorFormatError(f"extra tensor '{key}' must be finite and shaped like 'vectors'")
        missing = [k for k in REQUIRED_METADATA if k not in self.metadata]
        if missing:
            raise VectorFormatError(f"metadata lacks required keys: {', '.join(missing)}")
        if self.metadata["kind"] != self.kind or self.metadata["name"] != self.name:
            raise VectorFormatError("metadata kind/name disagree with the vector")
        if self.metadata["hidden_size"] != str(v.shape[1]):
            raise VectorFormatError(
                f"metadata hidden_size={self.metadata['hidden_size']} but vectors have {v.shape[1]}")
        if not all(isinstance(k, str) and isinstance(x, str) for k, x in self.metadata.items()):
            raise VectorFormatError("metadata must map strings to strings")
        self._validate_recommendation()
        if self.kind != "axis":
            self._validate_projection_stats()

    def _validate_recommendation(self) -> None:
        if RECOMMENDED_LAYERS in self.metadata:
            chosen = self.meta_json(RECOMMENDED_LAYERS)
            if (not isinstance(chosen, list) or not chosen
                    or not all(isinstance(x, int) and not isinstance(x, bool) for x in chosen)
                    or not set(chosen) <= set(self.layers.tolist())):
                raise VectorFormatError(
                    f"metadata {RECOMMENDED_LAYERS} must be a non-empty JSON list of the vector's "
                    f"layers {self.layers.tolist()}, got {self.metadata[RECOMMENDED_LAYERS]!r}")
        if RECOMMENDED_STRENGTH in self.metadata:
            try:
                value = float(self.metadata[RECOMMENDED_STRENGTH])
            except ValueError:
                value = float("nan")
            if not math.isfinite(value):
                raise VectorFormatError(f"metadata {RECOMMENDED_STRENGTH} must be a finite number, "
                                        f"got {self.metadata[RECOMMENDED_STRENGTH]!r}")

    def _validate_projection_stats(self) -> None:
        """A persona's or trait's spread: {layer: {"mean", "std" > 0, "count" >= 2}} (the axis's,
        with percentiles, are checked by capping's reader). Entries for layers the file does not
        store are allowed and unused (a copy that keeps some rows keeps the metadata)."""
        if PROJECTION_STATS not in self.metadata:
            return
        stats = self.meta_json(PROJECTION_STATS)
        bad = None
        if not isinstance(stats, dict) or not stats:
            bad = "must be a non-empty JSON object keyed by layer"
        else:
            for key, entry in stats.items():
                if not key.isdigit():
                    bad = f"has key {key!r}, not a layer index"
                elif not isinstance(entry, dict) or not all(
                        _finite_number(entry.get(k)) for k in ("mean", "std", "count")):
                    bad = f"layer {key} must hold finite numbers mean, std and count"
                elif entry["std"] <= 0 or entry["count"] < 2 or entry["count"] != int(entry["count"]):
                    bad = f"layer {key} needs std > 0 and a whole count >= 2"
                if bad:
                    break
        if bad:
            raise VectorFormatError(f"metadata {PROJECTION_STATS} {bad}, got "
                                    f"{self.metadata[PROJECTION_STATS][:200]!r}")

    def with_projection_stats(self, stats: dict[str, dict]) -> "SteeringVector":
        """A copy carrying the per-token spread (`projection_stats`); validated. The rows and so
        the content hash stay as they are (a persona's or trait's hash covers its rows only)."""
        meta = dict(self.metadata)
        meta[PROJECTION_STATS] = json.dumps(stats)
        vec = SteeringVector(self.kind, self.name, self.vectors, self.layers, meta, dict(self.extra))
        vec.validate()
        return vec

    def check_compatible(self, hidden_size: int, model: str | None = None,
                         num_layers: int | None = None) -> None:
        """Refuse a vector made for another model (hidden size, model id, layer count)."""
        if self.hidden_size != hidden_size:
            raise VectorFormatError(
                f"{self.kind} '{self.name}' has hidden_size {self.hidden_size}, "
                f"the served model has {hidden_size}")
        if model is not None and self.model not in ("", "*") and self.model != model:
            raise VectorFormatError(
                f"{self.kind} '{self.name}' was extracted from model '{self.model}', "
                f"the served model is '{model}'")
        if num_layers is not None and int(self.layers.max()) >= num_layers:
            raise VectorFormatError(
                f"{self.kind} '{self.name}' uses layer {int(self.layers.max())}, "
                f"the served model has {num_layers} layers")

    # --- bytes / files -------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        from safetensors.torch import save as st_save

        self.validate()
        tensors = {"vectors": self.vectors.contiguous(), "layers": self.layers.contiguous()}
        tensors.update({k: t.contiguous() for k, t in self.extra.items()})
        return st_save(tensors, metadata=dict(self.metadata))

    @classmethod
    def from_bytes(cls, data: bytes, *, expect_kind: str | None = None,
                   expect_name: str | None = None) -> "SteeringVector":
        from safetensors import SafetensorError
        from safetensors.torch import load as st_load

        try:
            tensors = st_load(data)
            meta = _read_metadata(data)
        except (SafetensorError, ValueError, json.JSONDecodeError, OSError) as err:
            raise VectorFormatError(f"not a readable safetensors file: {err}") from None
        if "vectors" not in tensors or "layers" not in tensors:
            raise VectorFormatError("file must contain tensors 'vectors' and 'layers'")
        kind = meta.get("kind", expect_kind or "")
        name = meta.get("name", expect_name or "")
        if expect_kind and kind != expect_kind:
            raise VectorFormatError(f"file says kind '{kind}', expected '{expect_kind}'")
        extra = {k: t for k, t in tensors.items() if k not in ("vectors", "layers")}
        vec = cls(kind, name, tensors["vectors"], tensors["layers"], meta, extra)
        vec.validate()
        return vec

    def save(self, path: str | Path) -> None:
        atomic_write_bytes(path, self.to_bytes())

    @classmethod
    def load(cls, path: str | Path, **kw) -> "SteeringVector":
        return cls.from_bytes(Path(path).read_bytes(), **kw)


def _finite_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _read_metadata(data: bytes) -> dict[str, str]:
    """safetensors.torch.load drops metadata; read it from the header directly."""
    if len(data) < 8:
        raise ValueError("file too short")
    n = int.from_bytes(data[:8], "little")
    if n <= 0 or 8 + n > len(data):
        raise ValueError("bad header length")
    header = json.loads(data[8:8 + n])
    return dict(header.get("__metadata__") or {})


def combine(weighted: list[tuple[SteeringVector, float]], scale: float,
            num_layers: int, hidden_size: int) -> torch.Tensor:
    """The steering formula: delta[L] = scale * sum_i w_i * v_i[L]; zeros where no file has L.

    Returns float32 [num_layers, hidden_size]. Used by the plugin and by HF reference code.
    """
    import torch

    delta = torch.zeros(num_layers, hidden_size, dtype=torch.float32)
    if not math.isfinite(scale):
        raise VectorFormatError(f"steering scale {scale} is not finite")
    for vec, weight in weighted:
        if not math.isfinite(weight):
            raise VectorFormatError(f"weight for '{vec.name}' is not finite")
        if vec.hidden_size != hidden_size:
            raise VectorFormatError(f"{vec.kind} '{vec.name}' has hidden_size {vec.hidden_size}, "
                                    f"expected {hidden_size}")
        if int(vec.layers.max()) >= num_layers:
            raise VectorFormatError(f"{vec.kind} '{vec.name}' uses layer {int(vec.layers.max())}, "
                                    f"the model has {num_layers} layers")
        layers, rows = vec.steered_rows()
        delta.index_add_(0, layers, rows * float(weight))
    return delta * float(scale)
