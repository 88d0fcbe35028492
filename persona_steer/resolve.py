"""Resolve a SteeringSpec against the store for a given model: check, hash, combine.

One path for a request's steering (docs/steering.md, "One request, from HTTP to the layer add"):
  - `ModelShape.from_hf_config` is the one way to describe the served model (hidden size,
    layers, the model id vectors must name, the layers the engine steers); every caller with
    an engine (the server, front-end admission, the workers) builds it from the engine's
    `hf_config`, which `steering_plugin/engine.py` stamps through `hf_overrides`;
  - `admit` is the one validator: it checks every vector a spec reads, pins their content
    hashes and derives the prefix-cache salt. It runs in exactly one place per request, vLLM's
    front end (`steering_plugin/admission.py`), which every entry point passes through (this
    server, `vllm.LLM`, stock vLLM's OpenAI server with `vllm_xargs`). The server only builds
    the spec and maps `AdmissionError` to its HTTP status;
  - the workers (`steering_plugin/runtime.py`) turn an admitted request into per-layer deltas
    with `combine` and the vectors whose pinned hashes they verify, and load capping through
    `cap_table_from_axis`, the one capping-table builder (also behind `cap_table`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch

from persona_steer.config import resolve_layers
from persona_steer.steering_spec import SteeringSpec
from persona_steer.store import VectorNotFound, VectorStore
from persona_steer.vector_format import AXIS_NAME, SteeringVector, VectorFormatError, combine


@dataclass(frozen=True)
class ModelShape:
    hidden_size: int
    num_layers: int
    model_id: str | None = None          # None: don't compare the vector's `model` metadata
    steerable_layers: tuple[int, ...] | None = None   # None: all layers

    @classmethod
    def from_hf_config(cls, hf_config: Any, *, model_id: str | None = None) -> "ModelShape":
        """The served model's shape, from a (vLLM or transformers) `hf_config`. The engine's
        carries `steering_model_id` and `steering_layers` (steering_plugin/engine.py
        `steering_overrides`); a plain model's has neither: no model-id check, every layer
        steerable. `model_id` overrides the config's."""
        text = getattr(hf_config, "get_text_config", lambda: hf_config)()
        num_layers = int(text.num_hidden_layers)
        layers = getattr(hf_config, "steering_layers", None)    # None: all, as the model's buffers
        return cls(hidden_size=int(text.hidden_size), num_layers=num_layers,
                   model_id=model_id if model_id is not None
                   else getattr(hf_config, "steering_model_id", None),
                   steerable_layers=tuple(resolve_layers("all" if layers is None else layers,
                                                         num_layers)))

    def any_layer(self) -> "ModelShape":
        """This shape without the steerable-layers check (a monitored vector may be read at
        any layer)."""
        return replace(self, steerable_layers=None)


def load_checked(store: VectorStore, kind: str, name: str, shape: ModelShape) -> SteeringVector:
    """Load and refuse a vector that does not fit the served model (raises with a clear message)."""
    vec = store.load(kind, name)
    vec.check_compatible(shape.hidden_size, shape.model_id, shape.num_layers)
    if shape.steerable_layers is not None and kind != "axis":
        outside = sorted(set(vec.steered_rows()[0].tolist()) - set(shape.steerable_layers))
        if outside:
            raise VectorFormatError(
                f"{kind} '{name}' uses layers {outside}, which this engine does not steer "
                f"(steering.layers: {list(shape.steerable_layers)})")
    return vec


def default_strength(store: VectorStore, persona: str | None, fallback: float) -> float:
    """The weight a request that names `persona` and no strength gets: the persona's tuned
    `recommended_strength` (persona-steer tune), else `fallback` (steering.default_strength).
    A missing or unreadable persona gets the fallback here and its clear error later."""
    if not persona:
        return fallback
    try:
        tuned = store.load("persona", persona).recommended_strength()
    except (VectorFormatError, VectorNotFound, ValueError):
        return fallback
    return fallback if tuned is None else tuned


def content_hashes(spec: SteeringSpec, store: VectorStore, shape: ModelShape) -> dict[str, str]:
    """{"kind/name": content_hash} for every vector the spec needs; raises on any problem."""
    out = {}
    for kind, name in spec.required_vectors():
        out[f"{kind}/{name}"] = load_checked(store, kind, name, shape).content_hash()
    return out


def spec_delta(spec: SteeringSpec, store: VectorStore, shape: ModelShape,
               default_scale: float) -> torch.Tensor:
    """float32 [num_layers, hidden]: scale * sum_i w_i v_i[L] (the README formula)."""
    weighted = [(load_checked(store, k, n, shape), w) for k, n, w in spec.weighted() if w != 0]
    scale = spec.scale if spec.scale is not None else default_scale
    return combine(weighted, scale, shape.num_layers, shape.hidden_size)


def load_axis(store: VectorStore, shape: ModelShape) -> SteeringVector:
    return load_checked(store, "axis", AXIS_NAME, shape)


def cap_table(store: VectorStore, shape: ModelShape, percentile: float,
              layers: list[int]) -> dict[int, tuple[torch.Tensor, float]]:
    """`cap_table_from_axis` of the store's assistant axis (checked against `shape`)."""
    return cap_table_from_axis(load_axis(store, shape), percentile, layers)


def cap_table_from_axis(axis: SteeringVector, percentile: float,
                        layers: list[int]) -> dict[int, tuple[torch.Tensor, float]]:
    """Capping as the plugin applies it: {layer: (unit assistant axis, threshold)} for each of
    `layers` the axis file has. The one builder: the workers' `cap_axis`/`cap_thresh` buffers,
    the Python API's hooks and the toy's HF reference all read it."""
    thresholds = axis_thresholds(axis, percentile)
    rows = axis.per_layer()
    return {layer: (rows[layer] / rows[layer].norm().clamp_min(1e-12), thresholds[layer])
            for layer in layers if layer in rows}


def axis_thresholds(axis: SteeringVector, percentile: float) -> dict[int, float]:
    """Per layer, the cap threshold: `percentile` of assistant-response projections onto the
    unit axis, linearly interpolated between the percentiles the axis file records."""
    stats = axis.meta_json("projection_stats")
    if not isinstance(stats, dict):
        raise VectorFormatError("assistant axis lacks 'projection_stats' metadata; re-run extract-axes")
    out = {}
    for layer in axis.layers.tolist():
        entry = stats.get(str(layer))
        if not isinstance(entry, dict) or not isinstance(entry.get("percentiles"), dict) \
                or not entry["percentiles"]:
            raise VectorFormatError(f"assistant axis has no projection statistics for layer {layer}")
        try:
            pts = sorted((float(p), float(v)) for p, v in entry["percentiles"].items())
        except (TypeError, ValueError):
            raise VectorFormatError(
                f"assistant axis projection_stats for layer {layer} must map percentile to "
                f"number, got {entry['percentiles']!r}") from None
        if len({p for p, _ in pts}) != len(pts) or not all(map(math.isfinite, sum(pts, ()))):
            raise VectorFormatError(
                f"assistant axis projection_stats for layer {layer} has repeated or non-finite values")
        out[layer] = _interp(pts, percentile)
    return out


def _interp(points: list[tuple[float, float]], x: float) -> float:
    if x <= points[0][0]:
        return points[0][1]
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return points[-1][1]


# --- monitoring (docs/monitoring.md) ------------------------------------------------------------
class MonitorNameError(KeyError):
    """A monitored name that is no persona, trait or the axis in the store (HTTP 404)."""

    def __init__(self, name: str, available: list[str]):
        self.name, self.available = name, available
        super().__init__(f"monitor: unknown name '{name}' (personas, traits as 'trait:NAME' "
                         f"or bare, and 'assistant_axis'; available: "
                         f"{', '.join(available) or 'none'})")

    def __str__(self) -> str:
        return self.args[0]


def monitor_targets(names: tuple[str, ...], store: VectorStore) -> list[tuple[str, str]]:
    """Each monitored name -> (kind, vector name), in order; a bare name is a persona when the
    store has one by that name, else a trait. Raises MonitorNameError for the first unknown."""
    from persona_steer.steering_spec import split_monitor_name

    out = []
    for label in names:
        kind, name = split_monitor_name(label)
        kinds = (kind,) if kind is not None else ("persona", "trait")
        found = next((k for k in kinds if store.exists(k, name)), None)
        if found is None:
            available = ([f"{n}" for n in store.names("persona")]
                         + [f"trait:{n}" for n in store.names("trait")]
                         + ([AXIS_NAME] if store.exists("axis", AXIS_NAME) else []))
            raise MonitorNameError(label, available)
        out.append((found, name))
    return out


def monitor_hashes(names: tuple[str, ...], store: VectorStore, shape: ModelShape
                   ) -> dict[str, str]:
    """{"kind/name": content hash} of every monitored vector (any layer of the model may be read,
    so the steerable-layers check does not apply)."""
    free = shape.any_layer()
    return {f"{k}/{n}": load_checked(store, k, n, free).content_hash()
            for k, n in monitor_targets(names, store)}


# --- admission: the one check of a request's steering (docs/steering.md) -------------------------
AXIS_MISSING = ("safety (activation capping) needs the assistant axis, and this engine's store "
                "has none: run `persona-steer extract-axes`")


class AdmissionError(ValueError):
    """A request's steering cannot be admitted. `param` names the request field, `code` the
    OpenAI-style error code, `not_found` marks a name the store lacks (HTTP 404, else 400)."""

    def __init__(self, message: str, param: str | None, code: str, not_found: bool = False):
        super().__init__(message)
        self.param, self.code, self.not_found = param, code, not_found


@dataclass(frozen=True)
class Admission:
    """What admission fixed for one request."""
    hashes: dict[str, str]     # "kind/name" -> content hash of each vector the steering reads
    pinned: dict[str, str]     # those and the monitored vectors': what every worker must apply
    salt: str | None           # prefix-cache salt; None: the request steers nothing


def admit(spec: SteeringSpec, store: VectorStore, shape: ModelShape,
          default_scale: float, prompt_len: int) -> Admission:
    """Check every vector `spec` steers with or monitors against the served model, pin their
    content hashes, and derive the prefix-cache salt (full config + steering vectors' hashes +,
    when only part of the tokens are steered, the steered span of this `prompt_len`-token prompt;
    monitored vectors are pinned but stay out of the salt: reading changes no output).
    Raises AdmissionError naming the field and the problem."""
    try:
        monitored = monitor_hashes(spec.monitor, store, shape)
        hashes = {} if spec.is_noop else content_hashes(spec, store, shape)
    except MonitorNameError as err:
        raise AdmissionError(str(err), "monitor", "monitor_not_found", not_found=True) from err
    except VectorNotFound as err:
        if err.kind == "axis":
            raise AdmissionError(AXIS_MISSING, "safety", "axis_missing") from err
        raise AdmissionError(str(err), err.kind, f"{err.kind}_not_found", not_found=True) from err
    except VectorFormatError as err:
        raise AdmissionError(str(err), None, "invalid_vector") from err
    salt = None if spec.is_noop else spec.positioned_salt(
        spec.cache_key(hashes, default_scale), prompt_len)
    return Admission(hashes, {**monitored, **hashes}, salt)


@dataclass(frozen=True)
class MonitorDirection:
    """What the engine reads for one monitored vector: z = (h[layer] . unit - mean) / std."""
    layer: int
    unit: torch.Tensor          # float32 [hidden]
    mean: float
    std: float
    spread: str                 # where mean/std came from: "own" | "axis" | "none"


def monitor_layer(vec: SteeringVector) -> int:
    """The stored layer where the vector separates best (extraction's `separation`), else the
    last stored layer."""
    layers = vec.layers.tolist()
    sep = vec.meta_json("separation")
    if isinstance(sep, dict):
        scored = [(float(sep[str(l)]), l) for l in layers
                  if isinstance(sep.get(str(l)), (int, float)) and math.isfinite(sep[str(l)])]
        if scored:
            return max(scored)[1]
    return layers[-1]


def _layer_stats(vec: SteeringVector | None, layer: int) -> tuple[float, float] | None:
    stats = vec.meta_json("projection_stats") if vec is not None else None
    entry = stats.get(str(layer)) if isinstance(stats, dict) else None
    if isinstance(entry, dict):
        mean, std = entry.get("mean"), entry.get("std")
        if isinstance(mean, (int, float)) and isinstance(std, (int, float)) and std > 0 \
                and math.isfinite(mean) and math.isfinite(std):
            return float(mean), float(std)
    return None


def monitor_direction(vec: SteeringVector, axis: SteeringVector | None) -> MonitorDirection:
    """The layer, unit vector and the spread that turn a projection into a z-score.

    The spread is the vector's own `projection_stats` at that layer (per-token projections of
    ordinary assistant answers, recorded at extraction: extraction/spread.py for personas and
    traits, `extract-axes` for the axis) when it has them. Files made before that (or imported)
    fall back: the assistant's mean is the axis file's assistant baseline projected on the unit
    vector, and the spread is the axis's per-token std at that layer (the assistant's typical
    per-token spread at that depth); without an axis file the raw projection is returned
    (mean 0, std 1)."""
    layer = monitor_layer(vec)
    row = vec.per_layer()[layer].float()
    unit = row / row.norm().clamp_min(1e-12)
    own = _layer_stats(vec, layer)
    if own is not None:
        return MonitorDirection(layer, unit, own[0], own[1], "own")
    axis_stats = _layer_stats(axis, layer)
    if axis is not None and axis_stats is not None:
        key = f"baseline_{vec.metadata.get('position', '')}"
        base = axis.extra.get(key, axis.extra.get("baseline"))
        rows = axis.layers.tolist()
        mean = float(base[rows.index(layer)].float() @ unit) if base is not None \
            and layer in rows else 0.0
        return MonitorDirection(layer, unit, mean, axis_stats[1], "axis")
    return MonitorDirection(layer, unit, 0.0, 1.0, "none")
