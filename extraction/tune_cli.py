"""`persona-steer tune NAME|--all`: the scored sweep of extraction/tune.py against a running
server, printed as a table (and a PNG chart with --plot); the pick is stored with each vector."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from persona_steer.cli import CLIError


def _client(args, settings):
    from clients.client import PersonaSteerClient, PersonaSteerError
    try:
        return PersonaSteerClient(args.url or settings.server_url,
                                  api_key=args.api_key or settings.server.api_key or None)
    except PersonaSteerError as err:
        raise CLIError(str(err)) from None


def _check_args(args) -> None:
    if args.all and args.name:
        raise CLIError("--all tunes every persona and trait; leave out NAME")
    if not args.all and not args.name:
        raise CLIError("give a persona or trait NAME, or --all")


def _targets(client, args) -> list[tuple[str, str]]:
    kinds = [args.kind] if args.kind else ["persona", "trait"]
    have = {k: [e["name"] for e in client.list_vectors(k)] for k in kinds}
    if args.all:
        out = [(k, n) for k in kinds for n in have[k]]
        if not out:
            raise CLIError("the server has no personas or traits to tune")
        return out
    for k in kinds:
        if args.name in have[k]:
            return [(k, args.name)]
    raise CLIError(f"no {' or '.join(kinds)} named '{args.name}' on the server "
                   f"(available: {', '.join(sum(have.values(), [])) or 'none'})")


def _tune(args) -> int:
    from clients.client import PersonaSteerError, ServerUnreachable
    from extraction.tune import TuneParams, format_table, make_scorer, plot_tune, tune
    from extraction.tune_scorers import TuneError
    from persona_steer.config import load_config

    _check_args(args)
    overrides = list(args.overrides)
    if args.scorer:
        overrides.append(f"tune.scorer={args.scorer}")
    settings = load_config(args.config, overrides=overrides)
    try:
        strengths = [float(x) for x in args.strengths.split(",")] if args.strengths else None
    except ValueError:
        raise CLIError(f"--strengths: give numbers separated by commas, got {args.strengths!r}") from None
    if strengths is not None and not all(0 < s < float("inf") for s in strengths):
        raise CLIError("--strengths: every strength must be a finite number above 0")
    if args.questions is not None and args.questions < 1:
        raise CLIError("--questions must be at least 1")
    params = TuneParams.from_settings(settings, strengths=strengths,
                                      num_questions=args.questions, write=not args.dry_run)
    results = []
    try:
        with _client(args, settings) as client:
            targets = _targets(client, args)
            scorer = make_scorer(settings, client)
            for i, (kind, name) in enumerate(targets, 1):
                if len(targets) > 1:
                    print(f"[{i}/{len(targets)}] {kind} {name}", flush=True)

                def progress(done, total, what):
                    if not args.quiet:
                        print(f"\r  {what}: {done}/{total} answers scored", end="",
                              file=sys.stderr, flush=True)
                        if done == total:
                            print(file=sys.stderr)

                result = tune(client, kind, name, scorer, params, progress)
                results.append(result)
                print(format_table(result), flush=True)
                if args.plot:
                    out = Path(args.plot)
                    if len(targets) > 1:
                        out = out.with_name(f"{out.stem}-{name}{out.suffix or '.png'}")
                    print(f"chart written to {plot_tune(result, out)}")
    except ServerUnreachable as err:
        raise CLIError(f"{err} (tune steers through a running server: start one with "
                       f"`persona-steer serve`, or pass --url)") from None
    except (PersonaSteerError, TuneError) as err:
        raise CLIError(str(err)) from None
    if args.json:
        Path(args.json).write_text(json.dumps([r.to_dict() for r in results], indent=1))
    missing = [r.name for r in results if r.best is None]
    if missing:
        print(f"no coherent setting for {', '.join(missing)} (tune.min_coherence "
              f"{params.min_coherence:g}): try smaller strengths", file=sys.stderr)
        return 1
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tune", help="pick a persona's or trait's layers and strength by a scored "
                                    "sweep through the running server, and store them with it")
    p.add_argument("name", nargs="?", help="persona or trait name")
    p.add_argument("--all", action="store_true", help="tune every persona and trait on the server")
    p.add_argument("--kind", choices=["persona", "trait"])
    p.add_argument("--scorer", choices=["auto", "judge", "marker"],
                   help="default: tune.scorer (auto: markers on the toy model, else the judge)")
    p.add_argument("--strengths", metavar="S1,S2,...", help="default: tune.strengths")
    p.add_argument("--questions", type=int, metavar="N", help="default: tune.num_questions")
    p.add_argument("--dry-run", action="store_true", help="measure and print; store nothing")
    p.add_argument("--plot", metavar="OUT.png", help="write a PNG chart of the sweep")
    p.add_argument("--json", metavar="OUT.json", help="write the full results as JSON")
    p.add_argument("--url", help="server URL (default: server.url / http://server.host:server.port)")
    p.add_argument("--api-key", help="the server's API key (default: server.api_key)")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.set_defaults(func=_tune)
