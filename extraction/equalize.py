"""Put a set of persona vectors on one scale, by their norms or by their tuned strengths.

By norm (`equalize_norms`): at every layer, each vector gets the set's mean norm.

Mean-difference vectors of different personas come out with different lengths (on the toy model
robot's is 0.76 of the six personas' mean at layer 0, shakespearean's 1.24), so one strength
pushes some personas too little and others too far. Rescaling each row to the set's mean norm
keeps every direction and the set's per-layer profile, and makes a strength mean the same push
for every persona in the set (docs/extraction.md, "Equalized norms": measured on the toy model).

By tuned strength (`compare_tuned`, `equalize_tuned`): a norm says how long a vector is, not how
hard it pushes the model's answers. `persona-steer tune` measures that: a vector's
`recommended_strength` is the weight at which it shows most while staying coherent, so a vector
tuned to 0.5 is stronger than one tuned to 2.0. `compare_tuned` reports each vector's tuned
strength and its strength relative to the set (the geometric mean of the tuned strengths over
its own); `equalize_tuned` rescales each tuned vector's rows so that the set's common strength
is every one's tuned strength: a request without a strength steers exactly as before, and one
strength then means the same measured push for each (docs/tuning.md, "Which persona is
stronger"). Untuned vectors have no measurement: they are listed, never changed.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Optional

from extraction.pipeline import ExtractionInputError
from persona_steer.store import VectorStore
from persona_steer.vector_format import (RECOMMENDED_STRENGTH, TUNING, SteeringVector,
                                         validate_name)

# metadata keys that SteeringVector.build sets itself
_BUILT_KEYS = ("kind", "name", "description", "model", "hidden_size", "format_version")


@dataclass
class Equalized:
    name: str
    scales: dict[int, float]       # layer -> factor applied this time


def equalize_norms(store: VectorStore, names: list[str], kind: str = "persona",
                   write: bool = True) -> list[Equalized]:
    """Rescale the named vectors in place (each file written atomically) so that at every layer
    each has the group's mean norm. All vectors must share the model, hidden size and layers.
    Running it again on the same set changes nothing (every factor is 1). `write=False`: the
    factors only, nothing written. Raises ExtractionInputError for a bad set, VectorNotFound for
    a missing name; either writes nothing."""
    names = list(dict.fromkeys(names))            # keep order, drop repeats
    if len(names) < 2:
        raise ExtractionInputError("equalizing needs at least two vectors")
    vecs = [store.load(kind, name) for name in names]      # VectorNotFound names the missing one
    first = vecs[0]
    for v in vecs[1:]:
        if v.layers.tolist() != first.layers.tolist():
            raise ExtractionInputError(
                f"'{v.name}' has layers {v.layers.tolist()}, '{first.name}' has "
                f"{first.layers.tolist()}: equalize vectors extracted at the same layers")
        if v.hidden_size != first.hidden_size or v.model != first.model:
            raise ExtractionInputError(f"'{v.name}' and '{first.name}' come from different models")
    norms = [v.vectors.norm(dim=-1) for v in vecs]          # each [n_layers]
    for v, n in zip(vecs, norms):
        if bool((n == 0).any()):
            raise ExtractionInputError(f"'{v.name}' has an all-zero layer row; it cannot be rescaled")
    target = sum(norms) / len(norms)
    layers = first.layers.tolist()
    done: list[Equalized] = []
    rescaled = []
    for v, n in zip(vecs, norms):
        factor = target / n
        rows = {layer: v.vectors[i] * factor[i] for i, layer in enumerate(layers)}
        meta = {k: val for k, val in v.metadata.items() if k not in _BUILT_KEYS}
        vn = v.meta_json("vector_norm", {})
        vn = dict(vn) if isinstance(vn, dict) else {}
        vn.update({str(layer): round(float(target[i]), 4) for i, layer in enumerate(layers)})
        meta["vector_norm"] = json.dumps(vn)
        meta["norm_equalized_with"] = json.dumps(names)
        rescaled.append(SteeringVector.build(kind, v.name, rows, model=v.model,
                                             description=v.description, metadata=meta,
                                             extra=v.extra))
        done.append(Equalized(v.name, {layer: round(float(factor[i]), 4)
                                       for i, layer in enumerate(layers)}))
    for vec in rescaled if write else ():   # built and validated first: a bad input writes nothing
        store.save(vec)
    return done


# ------------------------------------------------------------------------------ by tuned strength
class NotTunedError(ExtractionInputError):
    """No vector in the set carries a tuned strength: there is nothing to compare."""


@dataclass
class TunedStrength:
    name: str
    strength: Optional[float]       # its recommended_strength (None: never tuned)
    layers: Optional[list[int]]     # its recommended_layers
    relative: Optional[float]       # common / strength: > 1 pushes harder per unit of strength
    factor: Optional[float] = None  # rows multiplied by this (equalize_tuned; None: not changed);
    # strength and relative stay as measured before the rescale: afterwards every tuned one
    # has recommended_strength = common_strength

    def to_dict(self) -> dict:
        return {"name": self.name, "tuned": self.strength is not None,
                "recommended_strength": self.strength, "recommended_layers": self.layers,
                "relative_strength": self.relative, "factor": self.factor}


@dataclass
class TunedComparison:
    kind: str
    common_strength: float          # geometric mean of the tuned strengths
    rows: list[TunedStrength]       # tuned ones strongest first, then the untuned by name
    written: bool = False

    def to_dict(self) -> dict:
        return {"kind": self.kind, "by": "tuned", "common_strength": self.common_strength,
                "written": self.written, "names": [r.name for r in self.rows],
                "strengths": [r.to_dict() for r in self.rows]}


def _tuned_set(store: VectorStore, names: Optional[list[str]], kind: str):
    """(vectors, comparison) for `names` (None or empty: every vector of `kind` in the store).
    Raises NotTunedError when none is tuned, ExtractionInputError for a bad set."""
    where = f"among {', '.join(dict.fromkeys(names))}" if names else "in the store"
    names = list(dict.fromkeys(names or store.names(kind)))
    for name in names:
        validate_name(name)
    if not names:
        raise NotTunedError(f"there are no {kind}s to compare")
    vecs = [store.load(kind, name) for name in names]      # VectorNotFound names the missing one
    tuned = [v for v in vecs if v.recommended_strength() is not None]
    if not tuned:
        raise NotTunedError(
            f"no {kind} {where} has been tuned (no recommended_strength): "
            f"run `persona-steer tune` first, or equalize by norm")
    for v in tuned:
        s = v.recommended_strength()
        if not s > 0:
            raise ExtractionInputError(f"{kind} '{v.name}' has recommended_strength {s:g}; "
                                       f"only positive tuned strengths can be compared")
        if v.model != tuned[0].model:
            raise ExtractionInputError(f"'{v.name}' and '{tuned[0].name}' come from different "
                                       f"models: their tuned strengths are not comparable")
    common = round(math.exp(sum(math.log(v.recommended_strength()) for v in tuned) / len(tuned)), 4)
    rows = [TunedStrength(v.name, v.recommended_strength(), v.recommended_layers(),
                          round(common / v.recommended_strength(), 4)) for v in tuned]
    rows.sort(key=lambda r: (-r.relative, r.name))
    rows += [TunedStrength(v.name, None, None, None) for v in sorted(
        (v for v in vecs if v.recommended_strength() is None), key=lambda v: v.name)]
    return vecs, TunedComparison(kind, common, rows)


def compare_tuned(store: VectorStore, names: Optional[list[str]] = None,
                  kind: str = "persona") -> TunedComparison:
    """Which vector is stronger, from the tuned strengths; writes nothing."""
    return _tuned_set(store, names, kind)[1]


def _rescaled_tuning(raw, factor: float):
    """The stored tune table in the new units: a row's strength s pushes like s / factor now."""
    if not isinstance(raw, dict):
        return raw
    out = dict(raw)
    table = raw.get("table")
    if isinstance(table, list):
        out["table"] = [{**r, "strength": round(r["strength"] / factor, 4)}
                        if isinstance(r, dict) and isinstance(r.get("strength"), (int, float))
                        else r for r in table]
    out["rescaled_by"] = round(factor * float(raw.get("rescaled_by", 1.0)), 6)
    return out


def equalize_tuned(store: VectorStore, names: Optional[list[str]] = None,
                   kind: str = "persona") -> TunedComparison:
    """Rescale every tuned vector of the set in place (each file written atomically) by
    strength / common strength, and store the common strength as its recommended_strength:
    at that strength each pushes as hard as it did at its own tuned strength. Untuned vectors
    are left alone. Needs two tuned vectors; running it again changes nothing (every factor
    is 1). Raises like compare_tuned; a bad set writes nothing."""
    vecs, cmp = _tuned_set(store, names, kind)
    tuned = [r for r in cmp.rows if r.strength is not None]
    if len(tuned) < 2:
        raise ExtractionInputError(
            f"equalizing by tuned strength needs at least two tuned {kind}s; tuned: "
            f"{', '.join(r.name for r in tuned)}")
    by_name = {v.name: v for v in vecs}
    names_tuned = [r.name for r in tuned]
    rescaled = []
    for r in tuned:
        v = by_name[r.name]
        factor = r.strength / cmp.common_strength
        rows = {layer: row * factor for layer, row in v.per_layer().items()}
        meta = {k: val for k, val in v.metadata.items() if k not in _BUILT_KEYS}
        meta[RECOMMENDED_STRENGTH] = repr(float(cmp.common_strength))
        if TUNING in meta:
            meta[TUNING] = json.dumps(_rescaled_tuning(v.meta_json(TUNING), factor))
        vn = v.meta_json("vector_norm", {})
        vn = dict(vn) if isinstance(vn, dict) else {}
        vn.update({str(layer): round(float(row.norm()), 4) for layer, row in rows.items()})
        meta["vector_norm"] = json.dumps(vn)
        meta["tuned_equalized_with"] = json.dumps(names_tuned)
        rescaled.append(SteeringVector.build(kind, v.name, rows, model=v.model,
                                             description=v.description, metadata=meta,
                                             extra=v.extra))
        r.factor = round(factor, 4)
    for vec in rescaled:        # built and validated first: a bad input writes nothing
        store.save(vec)
    cmp.written = True
    return cmp


def format_tuned(cmp: TunedComparison) -> str:
    """The "which is stronger" table (the CLI prints it)."""
    lines = [f"{cmp.kind}s by tuned strength (recommended_strength; relative = common "
             f"{cmp.common_strength:g} / own: above 1 pushes harder per unit of strength)",
             f"  {'name':20s} {'tuned':>8s} {'relative':>8s} {'layers':14s}"
             + ("  factor" if cmp.written else "")]
    for r in cmp.rows:
        if r.strength is None:
            lines.append(f"  {r.name:20s} {'-':>8s} {'-':>8s} {'(untuned)':14s}")
            continue
        layers = ",".join(map(str, r.layers)) if r.layers else "all"
        lines.append(f"  {r.name:20s} {r.strength:8g} {r.relative:8.3f} {layers:14s}"
                     + (f"  {r.factor:.4f}" if cmp.written and r.factor is not None else ""))
    if cmp.written:
        lines.append(f"  tuned {cmp.kind}s rescaled: each now has recommended_strength "
                     f"{cmp.common_strength:g}")
    return "\n".join(line.rstrip() for line in lines)
