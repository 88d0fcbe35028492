"""The toy model's demo vectors: what `persona-steer serve` puts in an empty store on the toy model.

A new user's first `make serve` should show steering at once, without an extraction step. These
vectors are made by the project's own extraction (HF backend, no server, seeded) at the
recommended setting (extraction.toy.RECOMMENDED): the six personas from their archetype datasets
(equalized), the two trait pairs, and the assistant axis against the six roles (every layer, for
capping). They ship in persona_steer/toy_model/vectors/; `persona-steer toy vectors` rebuilds them.
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Callable

from extraction.toy.eval import PERSONAS, TRAIT_PAIRS
from extraction.toy.train import VECTORS_DIR
from persona_steer.atomic import atomic_write_bytes
from persona_steer.store import VectorStore

TOY_MODEL = "builtin:toy-persona"
# the same personas and trait pairs the proof measures
DEMO_PERSONAS = tuple(PERSONAS)
DEMO_TRAITS = tuple(TRAIT_PAIRS)

log = logging.getLogger("persona_steer.server")


def demo_dir() -> Path:
    from persona_steer.testmodels import TOY_MODEL_DIR
    return Path(TOY_MODEL_DIR) / VECTORS_DIR


def build_demo_vectors(settings, out: Path, *, num_questions: int = 20,
                       log_fn: Callable[[str], None] = print) -> list[str]:
    """Extract the demo set into `out` (a vector store folder); returns what was written."""
    from persona_steer.config import load_config
    from extraction import datasets as ds
    from extraction.equalize import equalize_norms
    from extraction.jobs import run_axis_job, run_persona_job, run_trait_job
    from extraction.toy import RECOMMENDED

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
    return [f"{e.kind}:{e.name}" for e in store.list()]


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
