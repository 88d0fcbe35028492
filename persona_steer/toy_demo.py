"""What the running server needs of the shipped toy model: its name, its measured steering
setting, its demo vectors and their demo defaults.

A new user's first `persona-steer serve` on the toy model should show steering at once, without
an extraction step, so an empty store gets the demo vectors shipped in
persona_steer/toy_model/vectors/. They are made by the toy tooling (toy/demo.py,
`persona-steer toy vectors` rebuilds them); this module is the runtime half and imports none of it.
"""
from __future__ import annotations

import functools
import json
import logging
from pathlib import Path

from persona_steer.atomic import atomic_write_bytes
from persona_steer.store import VectorStore
from persona_steer.testmodels import TOY_MODEL_DIR
from persona_steer.toy_language import PERSONAS

TOY_MODEL = "builtin:toy-persona"
VECTORS_DIR = "vectors"         # the demo vectors' folder inside the model folder
DEFAULTS_FILE = "demo_defaults.json"   # per persona: recommended strength and decoding
# what a persona's demo defaults may set: the steering strength and OpenAI decoding fields
DEFAULT_FIELDS = ("strength", "temperature")
# the toy model's six personas and its two trait pairs (persona_steer.toy_language): what the
# shipped vectors hold and what the toy proof measures
DEMO_PERSONAS = tuple(PERSONAS)
DEMO_TRAITS = (("formal", "casual"), ("enthusiastic", "gloomy"))
# The steering setting chosen by measurement on the shipped model (the sweep of `persona-steer toy
# eval`, docs/toy-model.md): response-mean vectors on the first three of its six layers, strength
# 0.9 (config.yaml says the same). It was 1.0 until the archetype datasets' six toy personas got
# the original system's adjectives: the vectors extracted from those prompts point the same way
# (cosine 0.96-0.99) but are about 7% longer after equalizing, and at 1.0 drill sergeant's steered
# answers looped (coherence 0.3-0.4); 0.9 is the old push again and meets every target of the proof.
# Runtime code reads it (a vector extracted on the toy model carries it: extraction.jobs), so it
# lives here and the toy tooling imports it.
RECOMMENDED = dict(position="response_mean", layers="0,1,2", layer_list=[0, 1, 2], strength=0.9)

log = logging.getLogger("persona_steer.server")


def demo_dir() -> Path:
    return Path(TOY_MODEL_DIR) / VECTORS_DIR


def seed_demo_vectors(settings, store: VectorStore) -> int:
    """On the toy model with an empty store, copy the shipped demo vectors into it (once).
    Returns how many files were copied; a store that has any persona, trait or axis is left
    alone, and so is any other model. `server.demo_vectors: off` turns this off."""
    if settings.server.demo_vectors != "auto" or settings.model.name != TOY_MODEL:
        return 0
    if store.names("persona") or store.names("trait") or store.exists("axis", "assistant_axis"):
        return 0
    src = demo_dir()
    files = sorted(src.rglob("*.safetensors"))
    for f in files:                           # atomic: a reader never sees half a file
        atomic_write_bytes(store.root / f.relative_to(src), f.read_bytes())
    if files:
        log.info("empty vector store on the toy model: added its %d demo vectors to %s "
                 "(server.demo_vectors: off to skip)", len(files), store.root)
    return len(files)



def demo_default_strengths() -> dict[str, float]:
    """{persona: strength} as measured into the toy model's demo_defaults.json (stamped into the
    shipped demo vectors as their recommended_strength by toy.demo.stamp_recommended)."""
    data = json.loads((Path(TOY_MODEL_DIR) / DEFAULTS_FILE).read_text())
    return {name: float(v["strength"]) for name, v in data["personas"].items()
            if isinstance(v, dict) and "strength" in v}


@functools.lru_cache(maxsize=1)
def _demo_defaults() -> dict[str, dict]:
    """{persona: {"strength", "temperature", "content_hash" of the shipped vector they were measured on}}."""
    try:
        data = json.loads((Path(TOY_MODEL_DIR) / DEFAULTS_FILE).read_text())
        shipped = VectorStore(demo_dir())
        return {name: {**{k: float(v[k]) for k in DEFAULT_FIELDS if k in v},
                       "content_hash": shipped.content_hash("persona", name)}
                for name, v in data["personas"].items() if isinstance(v, dict)}
    except Exception as err:        # a broken file must not stop the server: no defaults
        log.warning("the toy model's %s is unusable (%s): no recommended defaults", DEFAULTS_FILE, err)
        return {}


def recommended(model_name: str, kind: str, name: str, content_hash: str) -> dict[str, float] | None:
    """The recommended defaults for one vector on the served model: {"strength": .., "temperature": ..},
    or None. Today only the toy model's shipped demo personas have them (measured by
    toy/defaults.py into the model folder's demo_defaults.json), and only while the
    vector is the shipped one (same content hash): a re-extracted 'pirate' gets none. Clients
    show them and send them until their user chooses otherwise; the API applies nothing itself."""
    if model_name != TOY_MODEL or kind != "persona":
        return None
    d = _demo_defaults().get(name)
    if d is None or d["content_hash"] != content_hash:
        return None
    return {k: d[k] for k in DEFAULT_FIELDS if k in d}
