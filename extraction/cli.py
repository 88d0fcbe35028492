"""Extraction commands: init, extract-axes, create, trait, equalize, info (offline, run locally)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from persona_steer.cli import CLIError


def _settings(args):
    from persona_steer.config import load_config
    return load_config(args.config, overrides=args.overrides)


def _job_opts(args) -> dict:
    opts = {"console": not getattr(args, "quiet", False)}
    for key in ("rollout_backend", "base_url", "api_key", "num_questions", "max_new_tokens",
                "position", "batch_size"):
        value = getattr(args, key, None)
        if value is not None:
            opts[key] = value
    return opts


def _run(fn, *a, **kw):
    from extraction.pipeline import ExtractionError
    try:
        return fn(*a, **kw)
    except ExtractionError as err:
        raise CLIError(str(err)) from None


def _summary(vec) -> str:
    sep = vec.meta_json("separation", {}) or {}        # measured on every layer, not only the stored
    best = max(sep, key=lambda k: sep[k]) if sep else None
    extra = f", best separation {sep[best]:.2f} at layer {best}" if best is not None else ""
    stored = vec.layers.tolist()
    if best is not None and int(best) not in stored:
        extra += (f" (not stored: extraction.target_layers gave {_layer_list(stored)}; "
                  f"`persona-steer info {vec.name}` shows every layer)")
    return (f"{vec.kind} '{vec.name}': {vec.vectors.shape[0]} layers, hidden {vec.hidden_size}, "
            f"{vec.metadata.get('position', '')}{extra}")


def _layer_list(layers: list[int]) -> str:
    return str(layers) if len(layers) <= 6 else f"{len(layers)} layers, {layers[0]}-{layers[-1]}"


# ----------------------------------------------------------------------------------- commands
def _init(args) -> int:
    from extraction.datasets import init_datasets
    settings = _settings(args)
    written, kept = init_datasets(settings, force=args.force)
    root = settings.path("datasets")
    print(f"datasets in {root}: {len(written)} file(s) written, {len(kept)} already there"
          + ("" if args.force or not kept else " (use --force to regenerate)"))
    return 0


def _extract_axes(args) -> int:
    from extraction.jobs import run_axis_job
    settings = _settings(args)
    roles = [r.strip() for r in args.roles.split(",") if r.strip()] if args.roles else None
    path = _run(run_axis_job, settings, roles=roles, **_job_opts(args))
    print(f"assistant axis saved to {path}")
    return 0


def _create(args) -> int:
    from extraction.archetypes import ARCHETYPES
    from extraction.datasets import archetype_names
    from extraction.jobs import run_persona_job
    settings = _settings(args)
    chosen = sum(x is not None and x is not False for x in (args.from_archetype, args.description,
                                                            args.all or None))
    if chosen != 1:
        raise CLIError("give exactly one of --from-archetype A, --description \"...\" or --all")
    if args.all:
        if args.name:
            raise CLIError("--all creates every archetype under its own name; leave out NAME")
        names = archetype_names(settings) or list(ARCHETYPES)
        for i, slug in enumerate(names, 1):
            print(f"[{i}/{len(names)}] {slug}")
            vec = _run(run_persona_job, settings, slug, archetype=slug, **_job_opts(args))
            print(_summary(vec))
        return 0
    if not args.name:
        raise CLIError("give the persona's NAME")
    if args.description is not None:
        vec = _run(run_persona_job, settings, args.name, description=args.description,
                   **_job_opts(args))
    else:
        vec = _run(run_persona_job, settings, args.name, archetype=args.from_archetype,
                   **_job_opts(args))
    print(_summary(vec))
    return 0


def _trait(args) -> int:
    from extraction.jobs import run_trait_job
    settings = _settings(args)
    vec = _run(run_trait_job, settings, args.word, args.opposite, name=args.name,
               **_job_opts(args))
    print(_summary(vec))
    return 0


def _equalize(args) -> int:
    from extraction.equalize import compare_tuned, equalize_norms, equalize_tuned, format_tuned
    from persona_steer.store import VectorStore
    from persona_steer.vector_format import validate_name
    settings = _settings(args)
    for name in args.names:
        validate_name(name)
    store = VectorStore(settings.path("vectors"))
    if args.by == "tuned":
        fn = equalize_tuned if args.write else compare_tuned
        print(format_tuned(_run(fn, store, args.names, kind=args.kind)))
        return 0
    if args.write:
        raise CLIError("--write is for --by tuned (equalizing by norm always rewrites the vectors)")
    done = _run(equalize_norms, store, args.names, kind=args.kind)
    layers = list(done[0].scales)
    print(f"{args.kind}s rescaled to their mean norm at layers {layers} (factor per layer):")
    for e in done:
        print(f"  {e.name:20s} " + " ".join(f"{f:.3f}" for f in e.scales.values()))
    return 0


def _find_kind(store, name: str, kind: str | None) -> str:
    from persona_steer.vector_format import AXIS_NAME
    if kind:
        return kind
    if name == AXIS_NAME:
        return "axis"
    for k in ("persona", "trait"):
        if store.exists(k, name):
            return k
    have = store.names("persona") + store.names("trait")
    raise CLIError(f"no persona or trait named '{name}' (available: {', '.join(have) or 'none'})")


def _info(args) -> int:
    from persona_steer.store import VectorStore
    from persona_steer.vector_format import validate_name
    settings = _settings(args)
    store = VectorStore(settings.path("vectors"))
    if args.name != "assistant_axis":
        validate_name(args.name)
    kind = _find_kind(store, args.name, args.kind)
    info = store.info(kind, args.name)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(format_info(info))
    if args.plot:
        out = plot_separation(info, args.plot)
        print(f"chart written to {out}")
    return 0


SHORT_KEYS = ("description", "model", "quantization", "method", "position", "baseline",
              "rollout_backend", "num_questions", "num_responses", "max_new_tokens", "created_at",
              "dataset_files")


def format_info(info: dict) -> str:
    m = info["metadata"]
    lines = [f"{info['kind']} '{info['name']}'  hidden {info['hidden_size']}  "
             f"layers {info['layers']}  hash {info['content_hash']}"]
    for key in SHORT_KEYS:
        if key in m and m[key] not in ("", None):
            val = m[key] if isinstance(m[key], (str, int, float)) else json.dumps(m[key])
            lines.append(f"  {key:16s} {val}")
    if "recommended_strength" in m or "recommended_layers" in m:
        tuning = m.get("tuning") if isinstance(m.get("tuning"), dict) else {}
        by = tuning.get("judge_model") or tuning.get("scorer") or "?"
        when = f" {tuning['date']}" if tuning.get("date") else ""
        lines.append(f"  {'recommended':16s} layers {m.get('recommended_layers')} strength "
                     f"{m.get('recommended_strength')} (tuned{when} by {by})")
    sep, rn, vn = m.get("separation") or {}, m.get("residual_norm") or {}, m.get("vector_norm") or {}
    if isinstance(sep, dict) and sep:
        lines.append("  layer  separation  residual_norm  vector_norm")
        for layer in sorted(sep, key=int):
            lines.append(f"  {int(layer):5d}  {sep[layer]:10.3f}  {rn.get(layer, float('nan')):13.3f}"
                         f"  {vn.get(layer, float('nan')):11.3f}")
    prompts = m.get("prompts")
    if isinstance(prompts, list):
        lines.append(f"  prompts ({len(prompts)}):")
        lines += [f"    - {p}" for p in prompts]
    return "\n".join(lines)


def plot_separation(info: dict, out: str) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    sep = info["metadata"].get("separation")
    if not isinstance(sep, dict) or not sep:
        raise CLIError(f"{info['kind']} '{info['name']}' has no per-layer separation to plot")
    layers = sorted(int(k) for k in sep)
    rn = info["metadata"].get("residual_norm") or {}
    fig, ax = plt.subplots(figsize=(max(5, len(layers) * 0.35), 3.5))
    stored = set(info["layers"])
    ax.bar(layers, [sep[str(i)] for i in layers],
           color=["#3b6ea5" if i in stored else "#b0b8c4" for i in layers])
    ax.set_xticks(layers)
    ax.set_xlabel("layer")
    ax.set_ylabel("separation (baseline std)")
    ax.set_title(f"{info['kind']} '{info['name']}': separation by layer")
    if rn:
        ax2 = ax.twinx()
        ax2.plot(layers, [rn.get(str(i), float("nan")) for i in layers], color="#c0504d",
                 marker="o", lw=1)
        ax2.set_ylabel("residual norm", color="#c0504d")
    fig.tight_layout()
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------------- parser
def _job_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("job options (default: config.yaml extraction.*)")
    g.add_argument("--backend", dest="rollout_backend", choices=["vllm", "hf", "openai"],
                   help="rollout backend (default: extraction.use_vllm)")
    g.add_argument("--base-url", help="OpenAI-compatible server for --backend openai")
    g.add_argument("--api-key", help="API key for --base-url")
    g.add_argument("--num-questions", type=int)
    g.add_argument("--max-new-tokens", type=int)
    g.add_argument("--batch-size", type=int)
    g.add_argument("--position", choices=["response_mean", "last_prompt"])
    g.add_argument("--quiet", action="store_true", help="no progress bars")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("init", help="write the dataset files (archetypes, assistant prompts, "
                                    "questions) to datasets/")
    p.add_argument("--force", action="store_true", help="regenerate files that already exist")
    p.set_defaults(func=_init)

    p = sub.add_parser("extract-axes", help="extract the assistant axis (for safety capping and "
                                            "the persona baseline)")
    p.add_argument("--roles", metavar="A,B,...",
                   help="contrast the assistant with these archetypes only (default: all in datasets/)")
    _job_flags(p)
    p.set_defaults(func=_extract_axes)

    p = sub.add_parser("create", help="extract a persona vector from an archetype or a description")
    p.add_argument("name", nargs="?", help="persona name ([a-z0-9_-])")
    p.add_argument("--from-archetype", metavar="A", help="one of the archetypes in datasets/")
    p.add_argument("--description", help="let the model write the persona's system prompts")
    p.add_argument("--all", action="store_true", help="create every archetype as a persona")
    _job_flags(p)
    p.set_defaults(func=_create)

    p = sub.add_parser("trait", help="extract a trait vector: WORD prompts minus OPPOSITE prompts")
    p.add_argument("word")
    p.add_argument("--opposite", required=True)
    p.add_argument("--name", help="vector name (default: the word)")
    _job_flags(p)
    p.set_defaults(func=_trait)

    p = sub.add_parser("equalize", help="rescale personas (or traits) so each has the set's mean "
                                        "norm at every layer: one strength, the same push for each; "
                                        "--by tuned: compare (and with --write rescale) them by "
                                        "their tuned strengths")
    p.add_argument("names", nargs="*", metavar="NAME",
                   help="two or more vectors of one kind (--by tuned: default every one)")
    p.add_argument("--kind", choices=["persona", "trait"], default="persona")
    p.add_argument("--by", choices=["norm", "tuned"], default="norm",
                   help="norm (default): rescale to the set's mean norm per layer; tuned: print "
                        "which is stronger from `persona-steer tune`'s recommended_strength")
    p.add_argument("--write", action="store_true",
                   help="with --by tuned: rescale each tuned vector so the set's common strength "
                        "is its recommended_strength (untuned ones are left alone)")
    p.set_defaults(func=_equalize)

    p = sub.add_parser("info", help="show a vector's metadata, per-layer separation and norms")
    p.add_argument("name")
    p.add_argument("--kind", choices=["persona", "trait", "axis"])
    p.add_argument("--plot", metavar="OUT.png", help="write a PNG chart of separation by layer")
    p.add_argument("--json", action="store_true", help="print the full info as JSON")
    p.set_defaults(func=_info)
