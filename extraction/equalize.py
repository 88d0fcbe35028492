"""Put a set of persona vectors on one scale: at every layer, each vector gets the set's mean norm.

Mean-difference vectors of different personas come out with different lengths (on the toy model
robot's is 0.76 of the six personas' mean at layer 0, shakespearean's 1.24), so one strength
pushes some personas too little and others too far. Rescaling each row to the set's mean norm
keeps every direction and the set's per-layer profile, and makes a strength mean the same push
for every persona in the set (docs/extraction.md, "Equalized norms": measured on the toy model).
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from extraction.pipeline import ExtractionInputError
from persona_steer.store import VectorStore
from persona_steer.vector_format import SteeringVector

# metadata keys that SteeringVector.build sets itself
_BUILT_KEYS = ("kind", "name", "description", "model", "hidden_size", "format_version")


@dataclass
class Equalized:
    name: str
    scales: dict[int, float]       # layer -> factor applied this time


def equalize_norms(store: VectorStore, names: list[str], kind: str = "persona") -> list[Equalized]:
    """Rescale the named vectors in place (each file written atomically) so that at every layer
    each has the group's mean norm. All vectors must share the model, hidden size and layers.
    Running it again on the same set changes nothing (every factor is 1). Raises
    ExtractionInputError for a bad set, VectorNotFound for a missing name; either writes nothing."""
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
    for vec in rescaled:        # built and validated first: a bad input writes nothing
        store.save(vec)
    return done
