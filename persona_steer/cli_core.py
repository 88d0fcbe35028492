"""Core CLI commands: config show|set|check, import, build-test-model."""
from __future__ import annotations

import argparse
import json
import sys

from persona_steer.config import config_path, dump_settings, load_config, set_value
from persona_steer.config_check import check_settings, model_dims


def settings_from(args: argparse.Namespace):
    return load_config(args.config, overrides=args.overrides)


def _config_show(args) -> int:
    settings = settings_from(args)
    path = config_path(args.config)
    # YAML comments, so the output still loads as the effective config
    print(f"# config file: {path}" + ("" if path.exists() else " (not found: defaults)"))
    print(f"# relative paths resolve under: {settings.base_dir}")
    print(dump_settings(settings), end="")
    for line in check_settings(settings):
        print(f"warning: {line}", file=sys.stderr)
    return 0


def _config_check(args) -> int:
    """Load the config (errors stop here, as everywhere) and list what looks wrong for the model."""
    settings = settings_from(args)
    path = config_path(args.config)
    print(f"config file: {path}" + ("" if path.exists() else " (not found: defaults)"))
    warnings = check_settings(settings)
    for line in warnings:
        print(f"warning: {line}")
    print(f"{len(warnings)} warning(s)" if warnings else "ok: no warnings")
    return 1 if warnings and args.strict else 0


def _config_set(args) -> int:
    set_value(args.config, args.key, args.value)
    print(f"{args.key} = {args.value}  ({config_path(args.config)})")
    return 0


def _import(args) -> int:
    from persona_steer.store import VectorStore
    from persona_steer.vector_format import validate_name

    settings = settings_from(args)
    validate_name(args.name)
    store = VectorStore(settings.path("vectors"))
    if store.exists(args.kind, args.name) and not args.force:  # before any heavy work
        raise FileExistsError(f"{args.kind} '{args.name}' already exists (use --force to replace)")
    model = args.model or settings.model.name
    hidden, layers = model_dims(settings) if not args.model else (None, None)
    from persona_steer.importers import import_vector  # torch: only now

    vec = import_vector(args.file, name=args.name, kind=args.kind, model=model,
                        num_layers=args.num_layers or layers, description=args.description)
    store.save(vec, hidden_size=hidden, model=None if hidden is None else settings.model.name)
    print(f"imported {args.kind} '{args.name}': layers {vec.layers.tolist()}, hidden {vec.hidden_size}")
    return 0


def _build_test_model(args) -> int:
    from persona_steer.testmodels import build_random_qwen3
    print(build_random_qwen3(args.out_dir, args.size, args.seed))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="show or change config.yaml")
    csub = p.add_subparsers(dest="config_cmd", metavar="show|set|check")
    csub.required = True
    s = csub.add_parser("show", help="print the effective config (file + env + --set)")
    s.set_defaults(func=_config_show)
    s = csub.add_parser("set", help="validate and write one value, keeping comments")
    s.add_argument("key", help="dotted key, e.g. server.port")
    s.add_argument("value", help="YAML value, e.g. 9000, true, [10, 12]")
    s.set_defaults(func=_config_set)
    s = csub.add_parser("check", help="load the config and warn about values likely wrong for "
                                      "the served model (layers it lacks, device, scale)")
    s.add_argument("--strict", action="store_true", help="exit 1 when there are warnings")
    s.set_defaults(func=_config_check)

    p = sub.add_parser("import", help="import a vector made by another tool (GGUF control vector, "
                                      "plain [layers, hidden] tensor)")
    p.add_argument("file")
    p.add_argument("--name", required=True)
    p.add_argument("--kind", choices=["persona", "trait"], required=True)
    p.add_argument("--model", help="model id the vector belongs to (default: the configured model, "
                                   "whose hidden size is then checked)")
    p.add_argument("--num-layers", type=int, help="layer count, to read [layers+1, hidden] files")
    p.add_argument("--description", default="")
    p.add_argument("--force", action="store_true", help="replace an existing vector")
    p.set_defaults(func=_import)

    p = sub.add_parser("build-test-model", help="build a small random Qwen3 checkpoint (no hub)")
    p.add_argument("out_dir")
    p.add_argument("--size", choices=["tiny", "mid"], default="tiny")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_build_test_model)


def print_json(obj) -> None:
    print(json.dumps(obj, indent=2))
