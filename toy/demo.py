"""Building the toy model's demo vectors (`persona-steer toy vectors`).

They are made by the project's own extraction (HF backend, no server, seeded) at the
recommended setting (persona_steer.toy_demo.RECOMMENDED): the six personas from their archetype datasets
(equalized), the two trait pairs, and the assistant axis against the six roles (every layer, for
capping). They ship in persona_steer/toy_model/vectors/; what the server does with them (seeding
an empty store) is persona_steer/toy_demo.py.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable

from persona_steer.store import VectorStore
from persona_steer.toy_demo import DEMO_PERSONAS, DEMO_TRAITS, RECOMMENDED, TOY_MODEL


def build_demo_vectors(settings, out: Path, *, num_questions: int = 20,
                       log_fn: Callable[[str], None] = print) -> list[str]:
    """Extract the demo set into `out` (a vector store folder); returns what was written."""
    from persona_steer.config import load_config
    from extraction import datasets as ds
    from extraction.equalize import equalize_norms
    from extraction.jobs import run_axis_job, run_persona_job, run_trait_job

    out = Path(out)
    with tempfile.TemporaryDirectory() as tmp:
        base = [f"model.name={TOY_MODEL}", f"paths.vectors={out}", f"paths.datasets={tmp}/datasets",
                f"paths.cache={settings.path('cache')}", "extraction.seed=0",
                f"extraction.position={RECOMMENDED['position']}"]
        steer = load_config(None, overrides=base + [
            f"extraction.target_layers=[{RECOMMENDED['layers']}]"], environ={})
        every = load_config(None, overrides=base + ["extraction.target_layers=all"], environ={})
        ds.init_datasets(steer)
        opts = dict(num_questions=num_questions, rollout_backend="hf", console=False)
        run_axis_job(every, roles=list(DEMO_PERSONAS), **opts)
        log_fn("assistant axis (against the six roles, every layer)")
        for p in DEMO_PERSONAS:
            run_persona_job(steer, p, archetype=p, **opts)
            log_fn(f"persona {p}")
        for word, opposite in DEMO_TRAITS:
            run_trait_job(steer, word, opposite, **opts)
            log_fn(f"trait {word} (opposite {opposite})")
    equalize_norms(VectorStore(out), list(DEMO_PERSONAS))
    log_fn("personas equalized")
    store = VectorStore(out)
    stamp_recommended(store)
    log_fn("recommended setting stored with each persona and trait")
    return [f"{e.kind}:{e.name}" for e in store.list()]


def stamp_recommended(store: VectorStore) -> int:
    """Store the toy model's measured setting (persona_steer.toy_demo.RECOMMENDED, from `persona-steer
    toy eval`'s sweep) with each demo persona and trait, as `persona-steer tune` would: the toy
    model carries its own setting, so the global config can default to a real model's.
    A persona measured by `python -m toy.defaults` (demo_defaults.json: the strength
    that keeps both the persona and the topic) gets that strength; the rest get RECOMMENDED's."""
    from persona_steer.toy_demo import demo_default_strengths
    measured = demo_default_strengths()
    names = [("persona", p) for p in DEMO_PERSONAS] + [("trait", w) for w, _ in DEMO_TRAITS]
    for kind, name in names:
        strength = measured.get(name, RECOMMENDED["strength"]) if kind == "persona" \
            else RECOMMENDED["strength"]
        source = ("persona_steer/toy_model/demo_defaults.json (python -m toy.defaults)"
                  if kind == "persona" and name in measured else
                  "persona_steer.toy_demo.RECOMMENDED: the sweep of `persona-steer toy eval` (docs/toy-model.md)")
        vec = store.load(kind, name)
        store.save(vec.with_recommendation(RECOMMENDED["layer_list"], strength,
                                           {"scorer": "marker", "source": source}))
    return len(names)

