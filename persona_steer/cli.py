"""`persona-steer`: one command line for every operation.

Each area registers its own subcommands (small modules, one job each):
  persona_steer.cli_core   config show|set|check, import, build-test-model
  extraction.cli           init, extract-axes, create, trait, equalize, info
  server.cli               serve
  clients.cli              list, load, unload, delete, clear-personas, generate, chat, status
  extraction.tune_cli      tune
  toy.cli                  toy train|eval|vectors (the toy model's development tools)
Errors print one line (`error: ...`) and exit 2; no tracebacks for bad input.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = ["persona_steer.cli_core", "extraction.cli", "server.cli", "clients.cli",
                   "extraction.tune_cli", "toy.cli"]


class CLIError(Exception):
    """A user-facing one-line error."""


def penalties_from_args(args, clients) -> dict[str, float]:
    """The non-zero penalties of --presence-penalty / --frequency-penalty (OpenAI's range, -2
    to 2), each defaulting to config `clients`; `clients` is called (once) only when a flag is
    left out. 0 means the field is not sent (the API's default)."""
    from persona_steer.config import PENALTIES

    out: dict[str, float] = {}
    defaults = None
    for field in PENALTIES:
        value = getattr(args, field)
        if value is None:
            defaults = defaults or clients()
            value = getattr(defaults, field)
        elif not -2 <= value <= 2:
            raise CLIError(f"--{field.replace('_', '-')} must be between -2 and 2 (OpenAI's range), "
                           f"got {value:g}")
        if value:
            out[field] = value
    return out


class OneLineErrorParser(argparse.ArgumentParser):
    """A usage error is one line, like every other CLI error, pointing at --help for the usage.
    Subcommand parsers are made from the parent's class, so this covers every command."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


CONFIG_HELP = "config file (default: ./config.yaml or $PERSONA_STEER_CONFIG)"
SET_HELP = "override a config value for this run, e.g. --set server.port=9000"


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    """--config/--set after the command too (`persona-steer serve --set server.port=9000`): the
    subcommand's copies go to their own names, which main() merges after the global ones."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sp in action.choices.values():
                sp.add_argument("--config", dest="config_after", default=argparse.SUPPRESS,
                                metavar="CONFIG", help=CONFIG_HELP)
                sp.add_argument("--set", dest="overrides_after", action="append",
                                default=argparse.SUPPRESS, metavar="KEY=VALUE", help=SET_HELP)
                _add_config_options(sp)


def _merge_config_options(args: argparse.Namespace) -> None:
    args.overrides = args.overrides + getattr(args, "overrides_after", [])
    args.config = getattr(args, "config_after", args.config)
    for name in ("overrides_after", "config_after"):
        args.__dict__.pop(name, None)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(
        prog="persona-steer",
        description="Steer a Qwen3 model's personality per request inside vLLM.")
    parser.add_argument("--config", help=CONFIG_HELP)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help=SET_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for mod_name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(mod_name)
        except ModuleNotFoundError as err:
            if err.name and mod_name.startswith(err.name):
                continue  # that area is not built yet
            raise
        mod.register(sub)
    _add_config_options(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    from persona_steer.config import ConfigError
    from persona_steer.steering_spec import SteeringSpecError
    from persona_steer.store import StoreWriteError, VectorNotFound
    from persona_steer.vector_format import VectorFormatError

    parser = build_parser()
    args = parser.parse_args(argv)
    _merge_config_options(args)
    try:
        rc = args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (CLIError, ConfigError, VectorFormatError, SteeringSpecError, VectorNotFound,
            FileNotFoundError, FileExistsError, StoreWriteError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return int(rc or 0)


if __name__ == "__main__":
    # `python -m persona_steer.cli`: run the imported module's main, so that the error classes
    # raised by command modules (imported from persona_steer.cli) are the ones caught here.
    from persona_steer.cli import main as _main
    sys.exit(_main())
