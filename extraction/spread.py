"""The per-token spread of ordinary assistant answers along a persona's or trait's vector.

Live monitoring turns a projection into a z-score, (projection - mean) / std, so that 0 reads "as
the assistant usually is" (docs/monitoring.md). Extraction records that mean and std with each
persona and trait, in the format's `projection_stats` (persona_steer/vector_format.py): for every
stored layer, the projections onto the unit row of the assistant rollouts (the job's assistant
system prompts, no steering), one per response token, taken at the position whose logits chose
that token, which is where the engine reads.

    token_spreads(ex, vecs, prompts, questions) -> per vector {"<layer>": {"mean", "std", "count"}}
    restamp(settings, targets)                 records it for vectors already saved

Re-stamping the toy model's shipped demo vectors (cheap: a six-layer model on the CPU; the
rollouts come from the cache when the demo's extraction left them there):

    python -m extraction.spread --toy
"""
from __future__ import annotations

import argparse
import json
import tempfile
from typing import Any, Callable, Optional

import torch

from persona_steer.config import Settings
from persona_steer.store import VectorStore
from persona_steer.vector_format import SteeringVector

from extraction.pipeline import ExtractionInputError, Extractor, JobOptions, Reporter

# what a vector records of its extraction that decides its assistant rollouts
ROLLOUT_KEYS = ("max_new_tokens", "temperature", "seed", "quantization", "dtype", "rollout_backend",
                "quality_filter")


def spread_stats(projections: torch.Tensor) -> Optional[dict[str, Any]]:
    """{"mean", "std", "count"} of per-token projections; None when they cannot give a spread
    (fewer than two tokens, or all equal)."""
    p = projections.double().reshape(-1)
    if p.numel() < 2:
        return None
    std = float(p.std())
    if not std > 0 or not torch.isfinite(p).all():
        return None
    return {"mean": round(float(p.mean()), 6), "std": round(std, 6), "count": int(p.numel())}


def assistant_samples(ex: Extractor, prompts: list[str], questions: list[str]) -> list[tuple]:
    """(prompt ids, response ids) of the assistant rollouts (made now unless cached)."""
    cells = ex.make_cells({"assistant": prompts}, questions)
    if not all(ex._rollout_path(c).exists() for c in cells):    # the job's own run made them
        ex.ensure_rollouts(cells)
        ex.close()     # frees a rollout engine before the HF model loads, as Extractor.run does
    return [(s["prompt_ids"], s["response_ids"]) for c in cells for s in ex.load_rollouts(c)
            if s.get("keep", True)]


def token_spreads(ex: Extractor, vecs: list[SteeringVector], prompts: list[str],
                  questions: list[str]) -> list[dict[str, dict[str, Any]]]:
    """Per vector, per stored layer, the spread of assistant tokens' projections onto its unit
    row: {"<layer>": {"mean", "std", "count"}}. One teacher-forced pass serves every vector."""
    from extraction.activations import collect_token_projections, num_layers
    samples = assistant_samples(ex, prompts, questions)
    if not samples or not vecs:
        return [{} for _ in vecs]
    units = torch.zeros(num_layers(ex.hf), vecs[0].hidden_size, len(vecs))   # [L, H, vectors]
    for k, vec in enumerate(vecs):
        for layer, row in vec.per_layer().items():
            units[layer, :, k] = row.float() / row.float().norm().clamp_min(1e-12)
    ex.rep.start("projections", len(samples), "assistant token projections")
    proj = collect_token_projections(ex.hf, samples, ex.pad_id, units, ex.opts.batch_size,
                                     on_batch=lambda n: ex.rep.advance(n), offset=1)
    ex.rep.close()
    out = []
    for k, vec in enumerate(vecs):
        stats = {str(layer): spread_stats(proj[layer][:, k] if proj[layer].dim() == 2
                                          else proj[layer])      # no response tokens at all
                 for layer in sorted(vec.per_layer())}
        out.append({key: v for key, v in stats.items() if v is not None})
    return out


def with_spread(ex: Extractor, vec: SteeringVector, prompts: list[str],
                questions: list[str]) -> SteeringVector:
    """`vec` with its `projection_stats` (unchanged when no spread could be measured)."""
    stats = token_spreads(ex, [vec], prompts, questions)[0]
    return vec.with_projection_stats(stats) if stats else vec


def _recorded_prompts(settings: Settings, vec: SteeringVector) -> list[str]:
    from extraction import datasets as ds
    for key in ("baseline_prompts", "assistant_prompts"):
        value = vec.meta_json(key)
        if isinstance(value, list) and value and all(isinstance(x, str) for x in value):
            return value
    return ds.load_assistant_prompts(settings)


def restamp(settings: Settings, targets: list[tuple[str, str]], *,
            progress: Optional[Callable[[dict], None]] = None, **opts: Any) -> dict[str, dict]:
    """Record `projection_stats` in saved personas and traits ((kind, name) in the configured
    store), re-making their assistant rollouts with the options each one recorded (its questions,
    assistant prompts, sampling, seed), so the spread is that of its own extraction. Rows and
    content hashes stay as they are. Returns {"kind/name": stats}."""
    from extraction import datasets as ds
    store = VectorStore(settings.path("vectors"))
    groups: dict[str, list[SteeringVector]] = {}
    for kind, name in targets:
        if kind not in ("persona", "trait"):
            raise ExtractionInputError(f"only personas and traits record a spread, not {kind} '{name}'")
        vec = store.load(kind, name)
        if vec.model != settings.model.name:
            raise ExtractionInputError(f"{kind} '{name}' was extracted from '{vec.model}', the "
                                       f"configured model is '{settings.model.name}'")
        questions = vec.meta_json("questions") or ds.load_questions(settings)
        key = json.dumps([{k: vec.meta_json(k) for k in ROLLOUT_KEYS if k in vec.metadata},
                          questions, _recorded_prompts(settings, vec)], sort_keys=True)
        groups.setdefault(key, []).append(vec)
    done = {}
    for key, vecs in groups.items():
        recorded, questions, prompts = json.loads(key)
        jo = JobOptions.from_settings(settings, {**recorded, "num_questions": len(questions), **opts})
        with Extractor(settings, jo, Reporter(progress, jo.console)) as ex:
            for vec, stats in zip(vecs, token_spreads(ex, vecs, prompts, questions)):
                if stats:
                    store.save(vec.with_projection_stats(stats))
                done[f"{vec.kind}/{vec.name}"] = stats
    return done


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("targets", nargs="*", help="kind/name (e.g. persona/pirate); default: every "
                                               "persona and trait of the store")
    ap.add_argument("--toy", action="store_true",
                    help="the toy model's shipped demo vectors (persona_steer/toy_model/vectors)")
    ap.add_argument("--config", default=None)
    ap.add_argument("-o", "--override", dest="overrides", action="append", default=[],
                    help="config override key=value (repeatable)")
    a = ap.parse_args(argv)
    from persona_steer.config import PROJECT_ROOT, load_config
    with tempfile.TemporaryDirectory() as tmp:
        overrides = list(a.overrides)
        if a.toy:
            from persona_steer.toy_demo import TOY_MODEL, demo_dir
            overrides = [f"model.name={TOY_MODEL}", f"paths.vectors={demo_dir()}",
                         f"paths.datasets={tmp}/datasets",
                         f"paths.cache={PROJECT_ROOT / '.cache'}"] + overrides
        settings = load_config(a.config, overrides=overrides)
        store = VectorStore(settings.path("vectors"))
        targets = [tuple(t.split("/", 1)) for t in a.targets] or \
            [(e.kind, e.name) for e in store.list() if e.kind in ("persona", "trait")]
        for name, stats in restamp(settings, targets, console=True).items():
            print(name, json.dumps(stats))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
