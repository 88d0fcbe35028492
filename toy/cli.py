"""`persona-steer toy train|eval|vectors`: the small trained persona model."""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from persona_steer.cli import CLIError, penalties_from_args


def _train(args) -> int:
    from persona_steer.testmodels import TOY_MODEL_DIR
    from toy.corpus import CONTINUE_FRAC
    from toy.train import TrainConfig, train

    if args.continue_frac is None:
        args.continue_frac = CONTINUE_FRAC
    if args.steps < 1 or args.batch_size < 1:
        raise CLIError("--steps and --batch-size must be at least 1")
    if not 0.0 <= args.continue_frac < 1.0:
        raise CLIError("--continue-frac must be in [0, 1)")
    cfg = TrainConfig(steps=args.steps, seed=args.seed, batch_size=args.batch_size,
                      threads=args.threads, continue_frac=args.continue_frac)
    out = Path(args.out) if args.out else TOY_MODEL_DIR
    rec = train(out, cfg)
    print(f"trained {out}: {rec['n_params'] / 1e6:.2f}M parameters, final loss "
          f"{rec['final_loss']:.4f}, {rec['minutes']} min (log: {out / 'train_log.txt'})")
    return 0


def _eval(args) -> int:
    from persona_steer.config import load_config
    from clients.client import PersonaSteerError
    from persona_steer.steering_spec import STEER_TOKENS
    from toy.eval import POSITIONS, ServerStoreMismatch, format_table, run_eval

    work = Path(args.out).resolve()
    # every layer is extracted: the sweep (or --layers) picks the ones the proof steers
    overrides = list(args.overrides) + [
        "extraction.target_layers=all",
        f"model.name={args.model}", f"paths.vectors={work / 'vectors'}",
        f"paths.datasets={work / 'datasets'}"]
    settings = load_config(args.config, overrides=overrides)
    positions = [args.position] if args.position else list(POSITIONS)
    penalties = penalties_from_args(args, lambda: settings.clients)   # what the bundled clients send
    steer_tokens = [m.strip() for m in args.steer_tokens.split(",")] if args.steer_tokens else None
    bad = [m for m in steer_tokens or [] if m not in STEER_TOKENS]
    if bad:
        raise CLIError(f"--steer-tokens takes modes from {', '.join(STEER_TOKENS)}; got {', '.join(bad)}")
    if steer_tokens and args.backend != "server":
        raise CLIError("--steer-tokens needs --backend server (the HF reference steers every token)")
    default = None
    if args.strength is not None:
        if not args.position or args.layers is None:
            raise CLIError("--strength needs --position and --layers (or leave all three out to sweep)")
        layers = [int(x) for x in args.layers.split(",")] if args.layers != "all" else None
        if layers is None:
            from transformers import AutoConfig
            from persona_steer.testmodels import resolve_model
            n = AutoConfig.from_pretrained(resolve_model(args.model, settings.path("cache"))).num_hidden_layers
            layers = list(range(n))
        default = dict(position=args.position, layers=args.layers, strength=args.strength,
                       layer_list=layers)
    try:
        report = run_eval(settings, workdir=work, url=args.url, backend=args.backend,
                          n_questions=args.questions, extract_questions=args.extract_questions,
                          positions=positions, sweep_questions=args.sweep_questions,
                          default=default, sampled=not args.greedy_only,
                          skip_extraction=args.skip_extraction, blend_scale=args.blend_scale,
                          equalize=not args.no_equalize, penalties=penalties,
                          steer_tokens=steer_tokens,
                          log=lambda m: print(m, flush=True))
    except (ServerStoreMismatch, PersonaSteerError) as err:   # PersonaSteerError: --url's server
        raise CLIError(str(err)) from None
    print(format_table(report))
    print(json.dumps(report["checks"], indent=1))
    print(f"report: {work / 'report.json'}" + (f", chart: {work / 'sweep.png'}" if report["sweep"] else ""))
    return 0


def _vectors(args) -> int:
    import torch

    from persona_steer.config import load_config
    from toy.demo import build_demo_vectors
    from persona_steer.toy_demo import demo_dir

    # the demo set is a fixed, seeded recipe (toy.demo); only where files go may vary
    ignored = [o for o in args.overrides if not o.split("=", 1)[0].strip().startswith("paths.")]
    if ignored:
        raise CLIError(f"toy vectors builds a fixed recipe and takes only paths.* from --set; "
                       f"not used: {', '.join(ignored)}")
    torch.set_num_threads(args.threads)
    out = Path(args.out) if args.out else demo_dir()
    if out.exists() and any(out.rglob("*.safetensors")) and not args.force:
        raise CLIError(f"{out} already holds vectors; --force replaces them")
    settings = load_config(args.config, overrides=args.overrides)
    staging = out.with_name(out.name + ".building")
    if staging.exists():
        shutil.rmtree(staging)
    written = build_demo_vectors(settings, staging, num_questions=args.questions,
                                 log_fn=lambda m: print(m, flush=True))
    if out.exists():                        # swap in whole: no mix of old and new files
        shutil.rmtree(out)
    staging.rename(out)
    print(f"{len(written)} demo vectors in {out}: {', '.join(written)}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    # imports nothing of the toy tooling here: every `persona-steer` command (serve too) builds
    # this parser; the tools load when a toy command runs
    from persona_steer.config import PENALTIES

    p = sub.add_parser("toy", help="train or evaluate the small trained persona model (builtin:toy-persona)")
    tsub = p.add_subparsers(dest="toy_cmd", metavar="train|eval|vectors")
    tsub.required = True

    t = tsub.add_parser("train", help="train the toy persona model on CPU (deterministic given --seed)")
    t.add_argument("--steps", type=int, default=900)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--batch-size", type=int, default=24)
    t.add_argument("--threads", type=int, default=1,
                   help="torch threads (1 is fastest on a busy 2-core machine)")
    t.add_argument("--continue-frac", type=float,
                   help="share of continuation examples (the answer starts in another style "
                        "than the prompt asks for; default: toy.corpus.CONTINUE_FRAC)")
    t.add_argument("--out", help="output folder (default: persona_steer/toy_model, what builtin:toy-persona loads)")
    t.set_defaults(func=_train)

    e = tsub.add_parser("eval", help="the behavioural proof: extract, sweep, steer, measure; table + JSON + PNG")
    e.add_argument("--model", default="builtin:toy-persona")
    e.add_argument("--url", help="a running persona-steer server on the toy model (default: start one)")
    e.add_argument("--backend", choices=["server", "hf"], default="server",
                   help="server (through the real server) or hf (transformers forward hooks, same formula)")
    e.add_argument("--out", default=".cache/toy-eval", help="work folder: vectors, datasets, report.json, sweep.png")
    e.add_argument("--questions", type=int, default=20, help="held-out questions per measurement")
    e.add_argument("--extract-questions", type=int, default=20, help="dataset questions used by extraction")
    e.add_argument("--sweep-questions", type=int, default=8)
    e.add_argument("--position", choices=["response_mean", "last_prompt"])
    e.add_argument("--layers", help="comma-separated layers or 'all' (with --strength: skip the sweep)")
    e.add_argument("--strength", type=float)
    e.add_argument("--greedy-only", action="store_true")
    e.add_argument("--steer-tokens", metavar="MODES",
                   help="comma-separated steer_tokens modes, e.g. all,generated: instead of the "
                        "whole proof, measure the steered rate and coherence per persona with "
                        "each mode side by side (every token, or only the generated ones)")
    e.add_argument("--blend-scale", type=float, default=0.5,
                   help="each blended persona's weight as a fraction of the strength (default 0.5)")
    e.add_argument("--skip-extraction", action="store_true", help="reuse the vectors already in --out")
    e.add_argument("--no-equalize", action="store_true",
                   help="use the persona vectors as extracted (default: put the six on one scale "
                        "first, as `persona-steer equalize` does; with --skip-extraction the "
                        "vectors in --out are used as they are on disk)")
    for field in PENALTIES:
        e.add_argument(f"--{field.replace('_', '-')}", type=float,
                       help=f"also measure every decoding mode with this {field} (default: config "
                            f"clients.{field}, what the bundled clients send; both 0: no second pass)")
    e.set_defaults(func=_eval)

    v = tsub.add_parser("vectors", help="rebuild the demo vectors `serve` puts in an empty store "
                                        "on the toy model (persona_steer/toy_model/vectors); a "
                                        "fixed, seeded recipe: --set takes only paths.*")
    v.add_argument("--out", help="output folder (default: the shipped one)")
    v.add_argument("--questions", type=int, default=20, help="dataset questions per prompt")
    v.add_argument("--threads", type=int, default=1)
    v.add_argument("--force", action="store_true", help="replace vectors already there")
    v.set_defaults(func=_vectors)
