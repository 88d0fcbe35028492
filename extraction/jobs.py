"""The extraction jobs' Python API (what the server's job worker and the CLI call).

    run_axis_job(settings, progress=None, **opts) -> Path             (vectors/assistant_axis.safetensors)
    run_persona_job(settings, name, *, archetype=None, description=None, progress=None, **opts)
        -> SteeringVector                                             (saved in vectors/personas/)
    run_trait_job(settings, word, opposite, *, name=None, progress=None, **opts)
        -> SteeringVector                                             (saved in vectors/traits/)

`progress` is an optional callable receiving dict(stage=str, done=int, total=int, message=str);
stages: load, describe, rollouts, activations, projections, save.
Common opts (all optional):
    rollout_backend   "vllm" (in-process vllm.LLM) | "hf" (transformers generate) |
                      "openai" (an OpenAI-compatible server: base_url, api_key, openai_model)
                      default: llm given -> vllm; base_url given -> openai; else config
                      extraction.use_vllm (auto: vllm if importable, else hf)
    llm               an existing vllm.LLM to reuse for rollouts
    base_url, api_key, openai_model   for "openai" (e.g. the running server's http://host:port)
    num_questions, max_new_tokens, temperature, batch_size, position, seed, quantization, dtype,
    quality_filter, quality_threshold (override config), enable_thinking (chat template kwarg),
    console (tqdm bars on stderr)
Errors: ExtractionInputError (bad input; checked before any work, nothing is written),
ExtractionError (the job failed). Both have one-line messages.
Activations always come from one teacher-forced HF forward over the rollout tokens, through
forward hooks on model.model.layers[L]. Each vector is written once, atomically, at the end.
"""
from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from persona_steer.config import ConfigError, Settings, resolve_layers
from persona_steer.store import VectorStore
from persona_steer.toy_demo import RECOMMENDED, TOY_MODEL
from persona_steer.vector_format import (AXIS_NAME, AXIS_PERCENTILES, SteeringVector,
                                         VectorFormatError, validate_name)

from extraction import datasets as ds
from extraction.archetypes import trait_prompts
from extraction.pipeline import (ExtractionError, ExtractionInputError, Extractor, JobOptions,
                                 Reporter)
from extraction.spread import with_spread

Progress = Optional[Callable[[dict], None]]
POSITIONS = ("response_mean", "last_prompt")

__all__ = ["run_axis_job", "run_persona_job", "run_trait_job", "ExtractionError",
           "ExtractionInputError"]


# ----------------------------------------------------------------------------------- helpers
def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def _check_name(name: str, what: str = "name") -> str:
    try:
        return validate_name(name)
    except VectorFormatError as err:
        raise ExtractionInputError(f"{what}: {err}") from None


def _questions(settings: Settings, opts: JobOptions, files: ds.DatasetFiles) -> list[str]:
    try:
        return ds.load_questions(settings, opts.num_questions, files)
    except ds.DatasetError as err:
        raise ExtractionInputError(str(err)) from None


def _texts(items: Any, what: str) -> list[str]:
    """A caller's list of non-empty strings (system prompts, questions), or a one-line error."""
    if isinstance(items, str) or not isinstance(items, (list, tuple)) or not items or not all(
            isinstance(t, str) and t.strip() for t in items):
        raise ExtractionInputError(f"give a non-empty list of {what}s (non-empty strings)")
    return list(items)


def _target_rows(settings: Settings, n_layers: int) -> list[int]:
    try:
        return resolve_layers(settings.extraction.target_layers, n_layers)
    except ConfigError as err:
        raise ExtractionInputError(f"extraction.target_layers: {err}") from None


def separation(pos: torch.Tensor, neg: torch.Tensor, direction: torch.Tensor) -> list[float]:
    """Per layer: (mean proj of pos - mean proj of neg) / std of neg projections, along the unit
    direction. pos [N, L, H], neg [M, L, H], direction [L, H]."""
    unit = direction / direction.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    pp = torch.einsum("nlh,lh->nl", pos, unit)
    pn = torch.einsum("nlh,lh->nl", neg, unit)
    std = pn.std(dim=0, unbiased=pn.shape[0] > 1).clamp_min(1e-6)
    return [round(float(x), 4) for x in (pp.mean(0) - pn.mean(0)) / std]


def _per_layer(values) -> dict[str, float]:
    return {str(i): round(float(v), 4) for i, v in enumerate(values)}


def _say_files(rep: Reporter, files: ds.DatasetFiles) -> None:
    """Which dataset files the job reads, and a warning for each built-in stand-in."""
    for line in files.lines():
        rep.note("datasets", line)


def _common_meta(ex: Extractor, opts: JobOptions, questions: list[str], n_responses: dict,
                 files: ds.DatasetFiles) -> dict:
    return {"dataset_files": files.used, "model": ex.model_id, "quantization": opts.quantization, "dtype": opts.dtype,
            "rollout_backend": opts.rollout_backend, "max_new_tokens": opts.max_new_tokens,
            "temperature": opts.temperature, "seed": opts.seed, "questions": questions,
            "num_questions": len(questions), "num_responses": n_responses,
            "quality_filter": opts.quality_filter, "created_at": _now(),
            "timings": getattr(ex, "timings", {})}


def with_model_setting(settings: Settings, vec: SteeringVector) -> SteeringVector:
    """A new vector on the toy model steers with the toy's measured setting (layers 0-2 at
    persona_steer.toy_demo.RECOMMENDED's strength, docs/toy-model.md) until `persona-steer tune` picks
    its own: the demo model carries its settings, so the global config can default to a real
    model's (`extraction.target_layers: all`). Any other model's vectors are left as they are."""
    if settings.model.name != TOY_MODEL or vec.recommended_layers() is not None:
        return vec
    layers = [i for i in RECOMMENDED["layer_list"] if i in vec.layers.tolist()]
    if not layers:
        return vec
    return vec.with_recommendation(layers, RECOMMENDED["strength"], {
        "scorer": "marker", "source": "the toy model's measured setting (persona_steer.toy_demo.RECOMMENDED)"})


def _save(settings: Settings, vec: SteeringVector, rep: Reporter) -> Path:
    path = VectorStore(settings.path("vectors")).save(vec)
    rep.note("save", f"saved {vec.kind} '{vec.name}' to {path}")
    return path


def _contrast_vector(kind: str, name: str, description: str, pos: torch.Tensor, neg: torch.Tensor,
                     baseline: torch.Tensor, rows: list[int], model: str, meta: dict,
                     ) -> SteeringVector:
    diff = pos.mean(0) - baseline                     # [L, H]
    meta = dict(meta)
    meta["layers_measured"] = list(range(diff.shape[0]))
    meta["residual_norm"] = _per_layer(neg.norm(dim=-1).mean(0))
    meta["vector_norm"] = _per_layer(diff.norm(dim=-1))
    meta["separation"] = _per_layer(separation(pos, neg, diff))
    best = max(range(diff.shape[0]), key=lambda i: meta["separation"][str(i)])
    meta["best_layer"] = best
    return SteeringVector.build(kind, name, {i: diff[i] for i in rows}, model=model,
                                description=description, metadata=meta)


def _axis_baseline(settings: Settings, ex: Extractor, position: str, hidden: int):
    """The axis file's assistant baseline when it fits this job (same model, quantization and
    token position), else None."""
    store = VectorStore(settings.path("vectors"))
    if not store.exists("axis", AXIS_NAME):
        return None
    try:
        axis = store.load("axis", AXIS_NAME)
    except (VectorFormatError, OSError):
        return None
    key = f"baseline_{position}"
    if (axis.model != ex.model_id or axis.hidden_size != hidden or key not in axis.extra
            or axis.metadata.get("quantization") != ex.opts.quantization):
        return None
    return axis.extra[key]


# ----------------------------------------------------------------------------------- jobs
def run_persona_job(settings: Settings, name: str, *, archetype: str | None = None,
                    description: str | None = None, prompts: list[str] | None = None,
                    questions: list[str] | None = None, save: bool = True,
                    progress: Progress = None, **opts: Any) -> SteeringVector:
    """Persona vector = mean activation under the persona's prompts - the assistant baseline.

    The prompts come from one of `archetype`, `description` (the model writes them) or `prompts`
    (your own system prompts; then `description` only labels the vector); `questions` replaces
    the dataset's; `save=False` returns the vector unsaved."""
    _check_name(name, "persona name")
    if (archetype is not None and prompts is not None) or (
            prompts is None and (archetype is None) == (description is None)):
        raise ExtractionInputError("give exactly one of an archetype, a description or prompts "
                                   "(a description may go with prompts, as their label)")
    origin = "prompts" if prompts is not None else "archetype" if archetype else "description"
    files = ds.DatasetFiles()
    if prompts is not None:
        prompts = _texts(prompts, "system prompt")
        desc = " ".join((description or "").split()) or f"custom persona '{name}'"
    elif archetype is not None:
        try:
            data = ds.load_archetype(settings, archetype, files)
        except ds.DatasetError as err:
            raise ExtractionInputError(str(err)) from None
        prompts, desc = data["system_prompts"], data.get("description", "")
    else:
        prompts = None
        desc = " ".join((description or "").split())
        if not desc:
            raise ExtractionInputError("the description is empty")
        if len(desc) > 2000:
            raise ExtractionInputError("the description is too long (at most 2000 characters)")
    jo = JobOptions.from_settings(settings, opts)
    rep = Reporter(progress, jo.console)
    if questions is None:
        questions = _questions(settings, jo, files)
    else:
        questions = _texts(questions, "question")[:jo.num_questions]
        files.used["questions"] = "given by the caller"
    try:
        assistant = ds.load_assistant_prompts(settings, files)
    except ds.DatasetError as err:
        raise ExtractionInputError(str(err)) from None
    _say_files(rep, files)
    with Extractor(settings, jo, rep) as ex:
        if prompts is None:
            from extraction.describe import prompts_from_description
            prompts = prompts_from_description(ex, name, desc)
        _, acts = ex.run({"persona": prompts, "assistant": assistant}, questions)
        pos, neg = acts["persona"][jo.position], acts["assistant"][jo.position]
        n_layers, hidden = pos.shape[1], pos.shape[2]
        baseline = _axis_baseline(settings, ex, jo.position, hidden)
        source = "axis" if baseline is not None else "assistant_rollouts"
        if baseline is None:
            baseline = neg.mean(0)
        meta = _common_meta(ex, jo, questions, {"persona": pos.shape[0], "assistant": neg.shape[0]},
                            files)
        meta.update(method="mean_difference", position=jo.position, baseline=source,
                    source=origin,
                    archetype=archetype or "", prompts=prompts, baseline_prompts=assistant)
        vec = _contrast_vector("persona", name, desc, pos, neg, baseline,
                               _target_rows(settings, n_layers), ex.model_id, meta)
        vec = with_spread(ex, vec, assistant, questions)     # monitoring's z-score scale
        vec = with_model_setting(settings, vec)
        if save:
            _save(settings, vec, rep)
    return vec


def run_trait_job(settings: Settings, word: str, opposite: str, *, name: str | None = None,
                  progress: Progress = None, **opts: Any) -> SteeringVector:
    """Trait vector = mean activation under WORD prompts - under OPPOSITE prompts."""
    w, o = " ".join((word or "").split()), " ".join((opposite or "").split())
    for label, value in (("word", w), ("opposite", o)):
        if not value:
            raise ExtractionInputError(f"the trait {label} is empty")
        if len(value) > 60 or not any(c.isalpha() for c in value):
            raise ExtractionInputError(f"the trait {label} '{value}' must be a word or short phrase")
    if w.lower() == o.lower():
        raise ExtractionInputError(f"the word and its opposite are the same ('{w}')")
    name = _check_name(name if name is not None else "_".join(w.lower().split()), "trait name")
    jo = JobOptions.from_settings(settings, opts)
    rep = Reporter(progress, jo.console)
    files = ds.DatasetFiles()
    questions = _questions(settings, jo, files)
    try:
        assistant = ds.load_assistant_prompts(settings, files)
    except ds.DatasetError as err:
        raise ExtractionInputError(str(err)) from None
    _say_files(rep, files)
    pos_prompts, neg_prompts = trait_prompts(w), trait_prompts(o)
    with Extractor(settings, jo, rep) as ex:
        # the assistant cells (shared with persona jobs) give the spread monitoring reads against
        _, acts = ex.run({"positive": pos_prompts, "negative": neg_prompts,
                          "assistant": assistant}, questions)
        pos, neg = acts["positive"][jo.position], acts["negative"][jo.position]
        meta = _common_meta(ex, jo, questions, {"positive": pos.shape[0], "negative": neg.shape[0]},
                            files)
        meta.update(method="contrastive_mean_difference", position=jo.position, word=w,
                    opposite=o, prompts=pos_prompts, opposite_prompts=neg_prompts,
                    assistant_prompts=assistant)
        vec = _contrast_vector("trait", name, f"{w} (vs {o})", pos, neg, neg.mean(0),
                               _target_rows(settings, pos.shape[1]), ex.model_id, meta)
        vec = with_spread(ex, vec, assistant, questions)
        vec = with_model_setting(settings, vec)
        _save(settings, vec, rep)
    return vec


def run_axis_job(settings: Settings, progress: Progress = None, roles: list[str] | None = None,
                 **opts: Any) -> Path:
    """The assistant axis: per layer, unit(mean assistant - mean role) over response activations,
    with the assistant baseline and per-token projection statistics for capping.
    `roles`: the archetypes to contrast with (default: every archetype in datasets/). A model
    that only knows some roles gets a more telling axis from those."""
    jo = JobOptions.from_settings(settings, opts)
    rep = Reporter(progress, jo.console)
    files = ds.DatasetFiles()
    questions = _questions(settings, jo, files)
    try:
        assistant = ds.load_assistant_prompts(settings, files)
        available = ds.archetype_names(settings)
        if roles is not None:
            unknown = [r for r in roles if r not in available]
            if unknown or not roles:
                raise ExtractionInputError(
                    f"unknown archetype(s) for the axis: {', '.join(unknown) or '(none given)'} "
                    f"(available: {', '.join(available)})")
        role_prompts = {f"role:{slug}": ds.load_archetype(settings, slug, files)["system_prompts"]
                        for slug in (roles if roles is not None else available)}
    except ds.DatasetError as err:
        raise ExtractionInputError(str(err)) from None
    _say_files(rep, files)
    with Extractor(settings, jo, rep) as ex:
        cells, acts = ex.run({"assistant": assistant, **role_prompts}, questions)
        a = acts["assistant"]["response_mean"]                                   # [N, L, H]
        r = torch.cat([v["response_mean"] for g, v in acts.items() if g != "assistant"])
        diff = a.mean(0) - r.mean(0)
        units = diff / diff.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        n_layers = units.shape[0]

        # Second pass over the assistant rollouts: per-token projections onto the unit axis.
        from extraction.activations import collect_token_projections
        samples = [(s["prompt_ids"], s["response_ids"]) for c in cells if c.group == "assistant"
                   for s in ex.load_rollouts(c) if s.get("keep", True)]
        rep.start("projections", len(samples), "assistant token projections")
        proj = collect_token_projections(ex.hf, samples, ex.pad_id, units, jo.batch_size,
                                         on_batch=lambda n: rep.advance(n))
        rep.close()
        stats = {}
        for layer, p in enumerate(proj):
            qs = torch.quantile(p, torch.tensor([q / 100 for q in AXIS_PERCENTILES]))
            stats[str(layer)] = {"mean": round(float(p.mean()), 6),
                                 "std": round(float(p.std()), 6) if p.numel() > 1 else 0.0,
                                 "count": int(p.numel()),
                                 "percentiles": {str(q): round(float(v), 6)
                                                 for q, v in zip(AXIS_PERCENTILES, qs)}}
        baselines = {f"baseline_{k}": acts["assistant"][k].mean(0) for k in POSITIONS}
        meta = _common_meta(ex, jo, questions, {"assistant": a.shape[0], "roles": r.shape[0]},
                            files)
        meta.update(method="assistant_minus_roles", position="response_mean",
                    baseline_position=jo.position, projection_stats=stats,
                    roles=sorted(g.split(":", 1)[1] for g in role_prompts),
                    prompts=assistant,
                    residual_norm=_per_layer(a.norm(dim=-1).mean(0)),
                    vector_norm=_per_layer(diff.norm(dim=-1)),
                    separation=_per_layer(separation(a, r, diff)),
                    layers_measured=list(range(n_layers)))
        vec = SteeringVector.build(
            "axis", AXIS_NAME, {i: units[i] for i in range(n_layers)}, model=ex.model_id,
            description="assistant axis: unit(mean assistant - mean role) per layer",
            metadata=meta,
            extra={"baseline": baselines[f"baseline_{jo.position}"].clone(), **baselines})
        return _save(settings, vec, rep)
