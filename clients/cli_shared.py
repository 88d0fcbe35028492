"""What the one-shot client commands (clients/cli.py) and the chat REPL (clients/repl.py) share:
the status lines and the decoding fields taken from the command line."""
from __future__ import annotations

from typing import Any

from persona_steer.cli import penalties_from_args
from persona_steer.config import load_config


def entry_names(entries: list[dict]) -> list[str]:
    return [e.get("name", "?") if isinstance(e, dict) else str(e) for e in entries]


def format_status(st: dict) -> list[str]:
    """GET /api/status (server/routes_api.py `status`) as the lines `status` and /status print."""
    lines = [f"model:          {st['model']}", f"engine:         {st['engine']}"]
    if "steering_scale" in st:
        lines.append(f"steering scale: {st['steering_scale']}")
    for kind, names in st.get("loaded", {}).items():     # {"personas": [...], "traits": [...]}
        lines.append(f"loaded {kind + ':':<8} {', '.join(names) or 'none'}")
    return lines


def decoding_from_args(args) -> dict[str, Any]:
    """The decoding fields `generate` and `chat` send. Each penalty defaults to config `clients`
    (a presence penalty stops over-steering loops); 0 sends none, the API's default."""
    gen = {"max_tokens": args.max_tokens, "temperature": args.temperature, "seed": args.seed,
           "model": args.model, "thinking": None if args.thinking is None else args.thinking == "on"}
    gen.update(penalties_from_args(args, lambda: load_config(args.config, overrides=args.overrides).clients))
    return gen
