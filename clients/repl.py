"""`persona-steer chat`: interactive streaming chat with slash commands.

With a terminal it uses prompt_toolkit (history, line editing); with piped stdin it reads
lines. Every bad command or value prints one `error:` line and the session continues.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

from rich.console import Console
from rich.markup import escape

from clients.cli_shared import decoding_from_args, format_status
from clients.client import PersonaSteerClient, PersonaSteerError, ServerUnreachable, \
    SteeringRequest
from persona_steer.cli import CLIError

STRENGTH_RANGE = (0.0, 2.0)

HELP = """\
/persona NAME       steer with one persona (weight = /strength)
/strength X         persona strength, 0.0-2.0
/blend a:0.5,b:0.3  several personas with weights (replaces /persona)
/trait t:0.4        add or change a trait weight (t:0 removes it)
/none               no steering at all
/safety on|off      activation capping
/tokens MODE        which tokens to steer: all, generated, prompt, last_turn (default: the server's)
/monitor a,b|off    after each answer, one line of live readings (persona, trait:NAME, assistant_axis)
/list               personas and traits on the server
/load NAME          load a persona or trait into the engine
/status             this chat's steering and decoding, then the server's status
/reset              forget the conversation
/help               this help
/quit               leave (also Ctrl-D)"""


class ReplError(Exception):
    """A one-line complaint about a slash command; the session goes on."""


@dataclass
class ChatState:
    persona: str | None = None
    strength: float | None = None
    blend: dict[str, float] = field(default_factory=dict)
    traits: dict[str, float] = field(default_factory=dict)
    safety: bool | None = None
    messages: list[dict] = field(default_factory=list)
    monitor: list[str] = field(default_factory=list)     # names read per answer (none: off)
    steer_tokens: str | None = None                        # None: the server's default

    def steering(self) -> SteeringRequest:
        return SteeringRequest(persona=self.persona,
                               strength=self.strength if self.persona else None,
                               blend=dict(self.blend) or None, traits=dict(self.traits) or None,
                               safety=self.safety, monitor=list(self.monitor) or None,
                               steer_tokens=self.steer_tokens)

    def summary(self) -> str:
        parts = []
        if self.persona:
            parts.append(self.persona + ("" if self.strength is None else f"×{self.strength:g}"))
        parts += [f"{n}:{w:g}" for n, w in self.blend.items()]
        parts += [f"+{n}:{w:g}" for n, w in self.traits.items()]
        if self.safety is not None:
            parts.append(f"safety {'on' if self.safety else 'off'}")
        if parts and self.steer_tokens is not None:
            parts.append(f"tokens {self.steer_tokens}")
        return " ".join(parts) or "no steering"


def _number(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ReplError(f"{what} must be a number, got '{text}'") from None
    if not math.isfinite(value):
        raise ReplError(f"{what} must be finite, got '{text}'")
    return value


def _pairs(text: str, what: str) -> dict[str, float]:
    from persona_steer.steering_spec import SteeringSpecError, parse_pairs_text
    from persona_steer.vector_format import VectorFormatError, validate_name

    if not text.strip():
        raise ReplError(f"{what} needs name:weight pairs, e.g. {what[1:]} a:0.5")
    try:
        pairs = parse_pairs_text(text, what)
        for name, w in pairs.items():
            validate_name(name)
            if not math.isfinite(w):
                raise ReplError(f"{what}: weight of '{name}' must be finite")
    except (SteeringSpecError, VectorFormatError) as err:
        raise ReplError(str(err)) from None
    return pairs


class Repl:
    def __init__(self, client: PersonaSteerClient, state: ChatState, console: Console,
                 gen: dict[str, Any]):
        self.client = client
        self.state = state
        self.console = console
        self.gen = gen
        self.done = False

    # --- helpers ---------------------------------------------------------------------------
    def info(self, text: str) -> None:
        self.console.print(escape(text), style="cyan", highlight=False)

    def error(self, text: str) -> None:
        self.console.print(f"error: {escape(text)}", style="bold red", highlight=False)

    def _names(self, kind: str) -> list[str]:
        return [e.get("name", "") for e in self.client.list_vectors(kind)]

    def _require(self, kind: str, names: list[str]) -> None:
        have = self._names(kind)
        missing = [n for n in names if n not in have]
        if missing:
            raise ReplError(f"unknown {kind} '{missing[0]}' (available: {', '.join(have) or 'none'})")

    # --- slash commands ------------------------------------------------------------------
    def command(self, line: str) -> None:
        cmd, _, arg = line[1:].partition(" ")
        arg = arg.strip()
        handler: Callable[[str], None] | None = getattr(self, "cmd_" + cmd.lower(), None)
        if not cmd or handler is None:
            raise ReplError(f"unknown command '/{cmd}' (type /help)")
        handler(arg)

    def cmd_help(self, arg: str) -> None:
        self.console.print(HELP, markup=False, highlight=False)

    def cmd_quit(self, arg: str) -> None:
        self.done = True

    cmd_exit = cmd_quit

    def cmd_persona(self, arg: str) -> None:
        if not arg or " " in arg:
            raise ReplError("usage: /persona NAME")
        self._require("persona", [arg])
        self.state.persona, self.state.blend = arg, {}
        self.info(f"steering: {self.state.summary()}")

    def cmd_strength(self, arg: str) -> None:
        value = _number(arg, "strength") if arg else None
        if value is None:
            raise ReplError("usage: /strength X (0.0-2.0)")
        lo, hi = STRENGTH_RANGE
        if not lo <= value <= hi:
            raise ReplError(f"strength must be between {lo} and {hi}, got {value:g}")
        self.state.strength = value
        self.info(f"steering: {self.state.summary()}")

    def cmd_blend(self, arg: str) -> None:
        pairs = _pairs(arg, "/blend")
        self._require("persona", list(pairs))
        self.state.blend, self.state.persona = pairs, None
        self.info(f"steering: {self.state.summary()}")

    def cmd_trait(self, arg: str) -> None:
        pairs = _pairs(arg, "/trait")
        self._require("trait", [n for n, w in pairs.items() if w != 0])
        for name, w in pairs.items():
            if w == 0:
                self.state.traits.pop(name, None)
            else:
                self.state.traits[name] = w
        self.info(f"steering: {self.state.summary()}")

    def cmd_none(self, arg: str) -> None:
        self.state.persona, self.state.strength = None, None
        self.state.blend, self.state.traits, self.state.safety = {}, {}, None
        self.info("steering: none")

    def cmd_safety(self, arg: str) -> None:
        if arg.lower() not in ("on", "off"):
            raise ReplError("usage: /safety on|off")
        self.state.safety = arg.lower() == "on"
        self.info(f"steering: {self.state.summary()}")

    def cmd_tokens(self, arg: str) -> None:
        from persona_steer.steering_spec import STEER_TOKENS
        if arg not in STEER_TOKENS:
            raise ReplError(f"usage: /tokens {'|'.join(STEER_TOKENS)}")
        self.state.steer_tokens = arg
        self.info(f"steering: {self.state.summary()}")

    def cmd_monitor(self, arg: str) -> None:
        names = [n.strip() for n in arg.split(",") if n.strip()]
        if not names:
            raise ReplError("usage: /monitor NAME[,NAME...] | off")
        self.state.monitor = [] if names == ["off"] else names
        self.info(f"monitor: {', '.join(self.state.monitor) or 'off'}")

    def cmd_list(self, arg: str) -> None:
        for kind in ("persona", "trait"):
            entries = self.client.list_vectors(kind)
            shown = ", ".join(e.get("name", "") + (" (loaded)" if e.get("loaded") else "")
                              for e in entries)
            self.info(f"{kind}s: {shown or 'none'}")

    def cmd_load(self, arg: str) -> None:
        if not arg or " " in arg:
            raise ReplError("usage: /load NAME")
        for kind in ("persona", "trait"):
            if arg in self._names(kind):
                self.client.load_vector(kind, arg)
                self.info(f"loaded {kind} '{arg}'")
                return
        raise ReplError(f"no persona or trait named '{arg}'")

    def cmd_status(self, arg: str) -> None:
        """The chat's own steering (what the next message sends) first, then the server's."""
        st = self.client.status()
        steering = self.state.summary()
        if self.state.persona and self.state.strength is None and "default_strength" in st:
            steering += f" (strength: the server's default {st['default_strength']:g})"
        self.info(f"chat steering:  {steering}")
        decoding = {k: v for k, v in self.gen.items() if v is not None}
        if decoding:
            self.info("chat decoding:  " + ", ".join(f"{k} {v}" for k, v in decoding.items()))
        for line in format_status(st):
            self.info(line)

    def cmd_reset(self, arg: str) -> None:
        self.state.messages.clear()
        self.info("conversation cleared")

    # --- chat ------------------------------------------------------------------------------
    def send(self, text: str) -> None:
        self.state.messages.append({"role": "user", "content": text})
        out = self.console.file
        answer, thinking = [], False
        # On a terminal the label shows at once (the request is under way); piped, it comes
        # with the first text, so an error stays a line of its own.
        label = self.console.is_terminal
        readings = None
        try:
            if label:
                self.console.print("model> ", style="bold green", end="", markup=False)
                out.flush()
            for piece in self.client.chat_stream(self.state.messages, self.state.steering(),
                                                 **self.gen):
                readings = piece.monitor or readings
                if not label and (piece.content or piece.reasoning):
                    self.console.print("model> ", style="bold green", end="", markup=False)
                    label = True
                if piece.reasoning:
                    if not thinking:
                        self.console.print("[thinking] ", style="dim", end="", markup=False)
                        thinking = True
                    self.console.print(piece.reasoning, style="dim", end="", markup=False,
                                       highlight=False)
                if piece.content:
                    if thinking:
                        out.write("\n")
                        thinking = False
                    out.write(piece.content)
                    out.flush()
                    answer.append(piece.content)
        except KeyboardInterrupt:
            out.write("\n")
            self.info("(stopped)")
        except (PersonaSteerError, ServerUnreachable):
            self.state.messages.pop()
            if answer or thinking:
                out.write("\n")
            elif label and self.console.is_terminal:
                out.write("\r\x1b[K")      # take back the label: the error is the line
            out.flush()
            raise
        out.write("\n")
        out.flush()
        if readings and self.state.monitor:
            self.console.print(monitor_line(readings), style="dim", markup=False,
                               highlight=False)
        if answer:
            self.state.messages.append({"role": "assistant", "content": "".join(answer)})
        else:
            self.state.messages.pop()

    def handle(self, line: str) -> None:
        line = line.strip()
        if not line:
            return
        try:
            if line.startswith("/"):
                self.command(line)
            else:
                self.send(line)
        except ReplError as err:
            self.error(str(err))
        except ServerUnreachable as err:
            self.error(str(err))
        except PersonaSteerError as err:
            self.error(str(err))


def monitor_line(readings: dict) -> str:
    """One line: each name's mean z over the answer, its last and its range."""
    def f(x):
        return "-" if x is None else f"{x:+.2f}"
    return "monitor: " + " | ".join(
        f"{name} mean {f(r.get('mean'))} last {f(r.get('last'))} "
        f"[{f(r.get('min'))}..{f(r.get('max'))}]" for name, r in readings.items())


def _line_reader(interactive: bool, history_path, prompt: Callable[[], str]):
    if interactive:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import FileHistory, InMemoryHistory

        history = InMemoryHistory()
        if history_path is not None:
            try:
                history_path.parent.mkdir(parents=True, exist_ok=True)
                history = FileHistory(str(history_path))
            except OSError:
                pass
        session = PromptSession(history=history)
        while True:
            try:
                line = session.prompt(prompt())
            except KeyboardInterrupt:
                continue  # Ctrl-C at the prompt clears the line
            yield line
    else:
        for line in sys.stdin:
            yield line.rstrip("\n")


def run_repl(client: PersonaSteerClient, steering: SteeringRequest, args) -> int:

    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    console = Console(highlight=False)
    state = ChatState(persona=steering.persona, strength=steering.strength,
                      blend=dict(steering.blend or {}), traits=dict(steering.traits or {}),
                      safety=steering.safety, steer_tokens=steering.steer_tokens,
                      monitor=[n for n in (getattr(args, "monitor", None) or "").split(",") if n])
    if args.system:
        state.messages.append({"role": "system", "content": args.system})
    gen = decoding_from_args(args)
    repl = Repl(client, state, console, gen)
    try:
        st = client.status()
    except ServerUnreachable as err:
        raise CLIError(f"{err} (start one with `persona-steer serve`, or pass --url)") from None
    except PersonaSteerError as err:
        raise CLIError(str(err)) from None
    model = st.get("model")
    if isinstance(model, dict):
        model = model.get("name") or model.get("id")
    repl.info(f"connected to {client.base_url} (model {model}); /help for commands, /quit to leave")
    repl.info(f"steering: {state.summary()}")

    history_path = None
    if not getattr(args, "no_history", False):
        try:
            from persona_steer.config import load_config
            history_path = load_config(args.config, overrides=args.overrides).path("cache") \
                / "chat_history"
        except Exception:  # noqa: BLE001 - history is a convenience only
            history_path = None
    reader = _line_reader(interactive, history_path, lambda: f"[{state.summary()}] you> ")
    while not repl.done:
        try:
            line = next(reader)
        except (EOFError, StopIteration):
            break
        if not interactive:
            console.print(f"you> {line}", markup=False, highlight=False)
        repl.handle(line)
    repl.info("bye")
    return 0
