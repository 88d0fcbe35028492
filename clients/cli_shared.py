"""What the one-shot client commands (clients/cli.py) and the chat REPL (clients/repl.py) share:
the status lines and the decoding fields taken from the command line."""
from __future__ import annotations

import json
from typing import Any

from persona_steer.cli import penalties_from_args
from persona_steer.config import load_config


def entry_names(entries: list[dict]) -> list[str]:
    return [e.get("name", "?") if isinstance(e, dict) else str(e) for e in entries]


def format_status(st: dict) -> list[str]:
    lines = []
    model = st.get("model")
    if isinstance(model, dict):
        model = model.get("name") or model.get("id") or json.dumps(model)
    lines.append(f"model:          {model}")
    engine = st.get("engine_state", st.get("engine"))
    if isinstance(engine, dict):
        engine = engine.get("state") or json.dumps(engine)
    lines.append(f"engine:         {engine}")
    if "steering_scale" in st:
        lines.append(f"steering scale: {st['steering_scale']}")
    loaded = st.get("loaded", st.get("loaded_vectors"))
    if isinstance(loaded, dict):
        for kind, names in loaded.items():
            shown = ", ".join(entry_names(names)) if isinstance(names, list) else str(names)
            lines.append(f"loaded {kind + ':':<8} {shown or 'none'}")
    elif isinstance(loaded, list):
        shown = ", ".join(x if isinstance(x, str) else
                          f"{x.get('kind', '')}/{x.get('name', '')}".lstrip("/") for x in loaded)
        lines.append(f"loaded:         {shown or 'none'}")
    return lines


def decoding_from_args(args) -> dict[str, Any]:
    """The decoding fields `generate` and `chat` send. Each penalty defaults to config `clients`
    (a presence penalty stops over-steering loops); 0 sends none, the API's default."""
    gen = {"max_tokens": args.max_tokens, "temperature": args.temperature, "seed": args.seed,
           "model": args.model, "thinking": None if args.thinking is None else args.thinking == "on"}
    gen.update(penalties_from_args(args, lambda: load_config(args.config, overrides=args.overrides).clients))
    return gen
