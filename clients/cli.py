"""CLI commands that talk to a running server: list, load, unload, delete, clear-personas,
generate, chat, status. All go through clients.client (the project's one HTTP client)."""
from __future__ import annotations

import argparse
import json
import sys

from persona_steer.cli import CLIError
from persona_steer.steering_spec import STEER_TOKENS

from clients.cli_shared import decoding_from_args, entry_names, format_status
from clients.client import PersonaSteerClient, PersonaSteerError, ServerUnreachable, \
    SteeringRequest
from clients.repl import run_repl


def _client(args) -> PersonaSteerClient:
    from persona_steer.config import load_config

    url, key = args.url, args.api_key
    if url is None or key is None:
        settings = load_config(args.config, overrides=args.overrides)
        url = url or settings.server_url
        key = key if key is not None else settings.server.api_key
    try:
        return PersonaSteerClient(url, api_key=key or None)
    except PersonaSteerError as err:
        raise CLIError(str(err)) from None


def _run(func):
    """Turn client errors into one-line CLI errors (exit 2)."""
    def wrapper(args):
        try:
            return func(args)
        except ServerUnreachable as err:
            raise CLIError(f"{err} (start one with `persona-steer serve`, or pass --url)") from None
        except PersonaSteerError as err:
            raise CLIError(str(err)) from None
    wrapper.__name__ = func.__name__
    return wrapper


def _resolve_kind(client: PersonaSteerClient, name: str, kind: str | None) -> str:
    if kind:
        return kind
    personas = entry_names(client.list_vectors("persona"))
    if name in personas:
        return "persona"
    traits = entry_names(client.list_vectors("trait"))
    if name in traits:
        return "trait"
    raise CLIError(f"no persona or trait named '{name}' (personas: {', '.join(personas) or 'none'}; "
                   f"traits: {', '.join(traits) or 'none'})")


def _is_loaded(entry: dict) -> bool:
    return bool(entry.get("loaded"))


# --- list / load / unload / delete / clear ---------------------------------------------------
@_run
def _list(args) -> int:
    with _client(args) as c:
        kinds = ["persona", "trait"] if args.kind == "all" else [args.kind]
        rows = []
        for kind in kinds:
            for e in c.list_vectors(kind):
                if args.loaded and not _is_loaded(e):
                    continue
                rows.append((kind, e))
    if args.json:
        print(json.dumps([{**e, "kind": k} for k, e in rows], indent=2))
        return 0
    if not rows:
        print("no loaded vectors" if args.loaded else "no vectors")
        return 0
    width = max(len(e.get("name", "")) for _, e in rows)
    for kind, e in rows:
        flag = "loaded" if _is_loaded(e) else "      "
        desc = (e.get("description") or "").replace("\n", " ")
        if len(desc) > 60:
            desc = desc[:57] + "..."
        print(f"{kind:<7}  {e.get('name', ''):<{width}}  {flag}  {desc}".rstrip())
    return 0


@_run
def _load(args) -> int:
    with _client(args) as c:
        kind = _resolve_kind(c, args.name, args.kind)
        c.load_vector(kind, args.name)
    print(f"loaded {kind} '{args.name}'")
    return 0


@_run
def _unload(args) -> int:
    with _client(args) as c:
        kind = _resolve_kind(c, args.name, args.kind)
        c.unload_vector(kind, args.name)
    print(f"unloaded {kind} '{args.name}'")
    return 0


def _confirm(question: str, yes: bool) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise CLIError(f"{question} needs confirmation: pass --yes")
    answer = input(f"{question} [y/N] ").strip().lower()
    if answer not in ("y", "yes"):
        raise CLIError("cancelled")


@_run
def _delete(args) -> int:
    with _client(args) as c:
        kind = _resolve_kind(c, args.name, args.kind)
        _confirm(f"delete {kind} '{args.name}'?", args.yes)
        c.delete_vector(kind, args.name)
    print(f"deleted {kind} '{args.name}'")
    return 0


@_run
def _clear_personas(args) -> int:
    with _client(args) as c:
        names = entry_names(c.list_vectors("persona"))
        if not names:
            print("no personas to delete")
            return 0
        _confirm(f"delete all {len(names)} personas ({', '.join(names)})?", args.yes)
        for name in names:
            c.delete_vector("persona", name)
    print(f"deleted {len(names)} personas: {', '.join(names)}")
    return 0


# --- status -------------------------------------------------------------------------------
@_run
def _status(args) -> int:
    with _client(args) as c:
        st = c.status()
    if args.json:
        print(json.dumps(st, indent=2))
    else:
        print(f"server:         {c.base_url}")
        print("\n".join(format_status(st)))
    return 0


# --- generate -------------------------------------------------------------------------------
def steering_from_args(args) -> SteeringRequest:
    from persona_steer.steering_spec import SteeringSpecError, parse_pairs_text

    blend, traits = None, None
    try:
        if args.blend:
            blend = parse_pairs_text(args.blend, "--blend")
        if args.trait:
            traits = {}
            for text in args.trait:
                traits.update(parse_pairs_text(text, "--trait"))
    except SteeringSpecError as err:
        raise CLIError(str(err)) from None
    safety = None if args.safety is None else args.safety == "on"
    return SteeringRequest(persona=args.persona, strength=args.strength, blend=blend,
                           traits=traits, safety=safety, steer_tokens=args.steer_tokens)


@_run
def _generate(args) -> int:
    steering = steering_from_args(args)
    gen = {**decoding_from_args(args), "system": args.system}
    with _client(args) as c:
        if args.stream:
            wrote = False
            thinking = False
            for piece in c.chat_stream(args.prompt, steering, **gen):
                if piece.reasoning:
                    if not thinking:
                        sys.stderr.write("[thinking] ")
                        thinking = True
                    sys.stderr.write(piece.reasoning)
                    sys.stderr.flush()
                if piece.content:
                    sys.stdout.write(piece.content)
                    sys.stdout.flush()
                    wrote = True
            if thinking:
                sys.stderr.write("\n")
            sys.stdout.write("\n" if wrote else "")
            return 0
        resp = c.chat(args.prompt, steering, **gen)
    if args.json:
        print(resp.model_dump_json(indent=2))
        return 0
    msg = resp.choices[0].message
    reasoning = getattr(msg, "reasoning_content", None)
    if reasoning:
        print(f"[thinking] {reasoning}", file=sys.stderr)
    print(msg.content or "")
    return 0


def _chat(args) -> int:
    steering = steering_from_args(args)
    client = _client(args)
    try:
        return run_repl(client, steering, args)
    finally:
        client.close()


# --- registration ---------------------------------------------------------------------------
def _conn_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", help="server URL (default: server.url / http://server.host:server.port)")
    p.add_argument("--api-key", help="API key sent as Bearer (default: server.api_key)")


def _steer_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--persona", help="persona name")
    p.add_argument("--strength", type=float, help="weight of --persona (default: config)")
    p.add_argument("--blend", help="several personas with weights, e.g. pirate:0.5,robot:0.3")
    p.add_argument("--trait", action="append", metavar="NAME:W",
                   help="trait weights, e.g. formal:0.4 (repeatable or comma-separated)")
    p.add_argument("--safety", choices=["on", "off"], help="activation capping for this request")
    p.add_argument("--steer-tokens", choices=STEER_TOKENS,
                   help="which tokens get the steering (default: config steering.steer_tokens); "
                        "last_turn: from the last user message on (docs/steering.md)")
    p.add_argument("--system", help="system prompt")
    p.add_argument("--model", help="model id (default: the server's base model)")
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--presence-penalty", type=float,
                   help="OpenAI presence_penalty (default: config clients.presence_penalty, 0.5; "
                        "0 sends none)")
    p.add_argument("--frequency-penalty", type=float,
                   help="OpenAI frequency_penalty (default: config clients.frequency_penalty, 0)")
    p.add_argument("--thinking", choices=["on", "off"], help="Qwen3 thinking mode")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list personas and traits on the server")
    p.add_argument("--kind", choices=["persona", "trait", "all"], default="all")
    p.add_argument("--loaded", action="store_true", help="only vectors loaded in the engine")
    p.add_argument("--json", action="store_true")
    _conn_args(p)
    p.set_defaults(func=_list)

    for name, func, verb in (("load", _load, "load a vector into the running engine"),
                             ("unload", _unload, "unload a vector from the running engine")):
        p = sub.add_parser(name, help=verb)
        p.add_argument("name")
        p.add_argument("--kind", choices=["persona", "trait"],
                       help="default: whichever of persona/trait has that name")
        _conn_args(p)
        p.set_defaults(func=func)

    p = sub.add_parser("delete", help="delete a persona or trait on the server")
    p.add_argument("name")
    p.add_argument("--kind", choices=["persona", "trait"])
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    _conn_args(p)
    p.set_defaults(func=_delete)

    p = sub.add_parser("clear-personas", help="delete every persona on the server")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    _conn_args(p)
    p.set_defaults(func=_clear_personas)

    p = sub.add_parser("generate", help="one steered chat generation")
    p.add_argument("prompt")
    _steer_args(p)
    p.add_argument("--stream", action="store_true", help="print tokens as they arrive")
    p.add_argument("--json", action="store_true", help="print the whole response as JSON")
    _conn_args(p)
    p.set_defaults(func=_generate)

    p = sub.add_parser("chat", help="interactive streaming chat with slash commands (/help)")
    _steer_args(p)
    p.add_argument("--no-history", action="store_true", help="do not keep a history file")
    p.add_argument("--monitor", metavar="NAMES",
                   help="after each answer, one line of live readings of these names, e.g. "
                        "pirate,trait:formal,assistant_axis (docs/monitoring.md); /monitor in chat")
    _conn_args(p)
    p.set_defaults(func=_chat)

    p = sub.add_parser("status", help="server status: model, engine state, loaded vectors")
    p.add_argument("--json", action="store_true")
    _conn_args(p)
    p.set_defaults(func=_status)
