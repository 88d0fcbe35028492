"""What one request asks to be steered with, and how that travels in `SamplingParams.extra_args`.

Two wire forms, both parsed by `parse_extra_args`:

nested (in-process, our server):
    {"steering": {"personas": {"pirate": 0.5}, "traits": {"formal": -0.3},
                  "scale": 1.0, "safety": true}}
flat (fits stock vLLM's `vllm_xargs`, flat values only):
    {"steer_persona": "pirate", "steer_strength": 1.0,
     "steer_blend": "pirate:0.5,robot:0.3", "steer_traits": "formal:-0.3",
     "steer_scale": 1.0, "steer_safety": true}

The formula (README): delta[L] = scale * (sum_p w_p * v_p[L] + sum_t w_t * v_t[L]).
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from persona_steer.vector_format import AXIS_NAME, VectorFormatError, validate_name

# a request's `model` may name a persona instead of the base model: "persona:<name>"
PERSONA_MODEL_PREFIX = "persona:"
FLAT_KEYS = ("steer_persona", "steer_strength", "steer_blend", "steer_traits", "steer_scale",
             "steer_safety", "steer_monitor", "steer_tokens", "steer_start")
# Which tokens the delta (and capping) apply to, by position: "prompt" is every position before
# the prompt's end, "generated" every position after it (the tokens the model wrote),
# "last_turn" every position from `steer_start` on (a chat's last user turn, then the answer;
# the server computes the position from the chat template: server.generation.last_turn_start).
STEER_TOKENS = ("all", "generated", "prompt", "last_turn")


class SteeringSpecError(ValueError):
    """The request's steering fields are malformed (HTTP 400)."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class SteeringSpec:
    personas: tuple[tuple[str, float], ...] = ()
    traits: tuple[tuple[str, float], ...] = ()
    scale: float | None = None          # None: the engine's configured steering_scale
    safety: bool = False
    steer_tokens: str = "all"           # one of STEER_TOKENS
    # "last_turn": the first steered position. Per request (where this chat's last user turn
    # starts), not part of the steering config: left out of equality and the hash, so requests
    # that differ only here share one delta and one slot; the prefix-cache salt takes it in
    # (`positioned_salt`). None until the server has rendered the prompt.
    steer_start: int | None = field(default=None, compare=False)
    # Names to read out per token (docs/monitoring.md). Reading changes no output, so it is left
    # out of equality, the hash and the cache salt: requests differing only in what they monitor
    # share one steering slot and their cached blocks.
    monitor: tuple[str, ...] = field(default=(), compare=False)

    @property
    def is_noop(self) -> bool:
        """Nothing to add and no capping: the request runs as the stock model."""
        return not self.safety and all(w == 0 for _, w in self.personas + self.traits)

    @property
    def needs_engine_args(self) -> bool:
        """Steers or monitors: the request carries extra_args to the engine."""
        return not self.is_noop or bool(self.monitor)

    def weighted(self) -> list[tuple[str, str, float]]:
        return ([("persona", n, w) for n, w in self.personas]
                + [("trait", n, w) for n, w in self.traits])

    def to_extra_args(self) -> dict[str, Any]:
        body: dict[str, Any] = {"personas": dict(self.personas), "traits": dict(self.traits),
                                "safety": self.safety}
        if self.scale is not None:
            body["scale"] = self.scale
        if self.steer_tokens != "all":
            body["steer_tokens"] = self.steer_tokens
        if self.steer_start is not None:
            body["steer_start"] = self.steer_start
        if self.monitor:
            body["monitor"] = list(self.monitor)
        return {"steering": body}

    def to_dict(self, default_scale: float | None = None) -> dict[str, Any]:
        scale = self.scale if self.scale is not None else default_scale
        out = {"personas": dict(self.personas), "traits": dict(self.traits),
               "scale": scale, "safety": self.safety}
        if self.steer_tokens != "all":
            out["steer_tokens"] = self.steer_tokens
        if self.steer_start is not None:
            out["steer_start"] = self.steer_start
        return out

    def steered_span(self, n_prompt: int) -> tuple[int, int | None]:
        """The positions steered (and capped) for a prompt of `n_prompt` tokens: [start, end),
        end None for "to the last generated token". Position p is the p-th token of prompt +
        answer, whatever step computes it (chunked prefill, preemption recompute)."""
        if self.steer_tokens == "generated":
            return n_prompt, None
        if self.steer_tokens == "prompt":
            return 0, n_prompt
        if self.steer_tokens == "last_turn":
            if self.steer_start is None:
                raise SteeringSpecError("steer_tokens=last_turn needs steer_start (the position "
                                        "where the last user turn starts)", "steer_start")
            return self.steer_start, None
        return 0, None

    def positioned_salt(self, salt: str, n_prompt: int) -> str:
        """The prefix-cache salt of this request: `salt` (cache_key, the config) plus, when only
        part of the tokens are steered, the steered span. A cached block's KV depends on which
        of the positions up to it were steered: without the span a later turn of a chat would
        reuse blocks where the earlier turn steered tokens it must not (its then-last user
        turn, its then-generated answer). Conservative: requests whose spans differ share no
        block, not even an unsteered prefix (vLLM salts the whole chain from the first block)."""
        if self.steer_tokens == "all":
            return salt
        start, end = self.steered_span(n_prompt)
        return f"{salt}@{start}-{'' if end is None else end}"

    def cache_key(self, hashes: Mapping[str, str], default_scale: float) -> str:
        """A prefix-cache salt covering the full config and the vectors' content hashes.

        `hashes` maps "kind/name" (and "axis/assistant_axis" when safety is on) to content hashes.
        Identical configs give identical salts, so they still share cached blocks.
        """
        payload = {"p": sorted(self.personas), "t": sorted(self.traits),
                   "s": self.scale if self.scale is not None else default_scale,
                   "c": self.safety, "h": sorted(hashes.items())}
        if self.steer_tokens != "all":     # "all" keeps the salts computed before the field
            payload["k"] = self.steer_tokens
        return "steer-" + hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:24]

    def required_vectors(self) -> list[tuple[str, str]]:
        out = [(k, n) for k, n, _ in self.weighted()]
        if self.safety:
            out.append(("axis", AXIS_NAME))
        return out


@dataclass(frozen=True)
class SteeringRequest:
    """A request's steering as the API's body fields carry it, before the server applies its
    config (default strength, default safety, current scale, the weight bound) with
    `build_spec`: what a client sends. None leaves a field out (the server's default).
    The server's schema (server/schemas.py SteeringFields) declares the same fields."""
    persona: str | None = None
    strength: float | None = None          # weight of `persona`
    blend: Mapping[str, float] | None = None
    traits: Mapping[str, float] | None = None
    scale: float | None = None             # this request's steering scale
    safety: bool | None = None
    monitor: Sequence[str] | None = None   # names to read per token (docs/monitoring.md)
    steer_tokens: str | None = None        # "all" | "generated" | "prompt" | "last_turn"

    def body(self) -> dict[str, Any]:
        """The fields that were given, weights checked to be finite numbers (names and bounds
        are the server's to check)."""
        out: dict[str, Any] = {}
        if self.persona:
            out["persona"] = self.persona
        for param in ("blend", "traits"):
            pairs = getattr(self, param)
            if pairs:
                out[param] = {str(k): _weight(v, f"{param}.{k}", None) for k, v in pairs.items()}
        for param in ("strength", "scale"):
            if getattr(self, param) is not None:
                out[param] = _weight(getattr(self, param), param, None)
        if self.safety is not None:
            out["safety"] = bool(self.safety)
        if self.monitor is not None:
            out["monitor"] = [str(n) for n in self.monitor]
        if self.steer_tokens is not None:
            out["steer_tokens"] = str(self.steer_tokens)
        return out


def _weight(value: Any, param: str, max_weight: float | None) -> float:
    if isinstance(value, bool):  # float(True) == 1.0 would slip through
        raise SteeringSpecError(f"{param} must be a number, got {value!r}", param)
    if not isinstance(value, (int, float)):
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise SteeringSpecError(f"{param} must be a number, got {value!r}", param) from None
    value = float(value)
    if not math.isfinite(value):
        raise SteeringSpecError(f"{param} must be finite, got {value}", param)
    if max_weight is not None and abs(value) > max_weight:
        raise SteeringSpecError(f"{param}={value} is beyond the allowed bound ±{max_weight}", param)
    return value


_TRUE = ("1", "true", "on", "yes")
_FALSE = ("0", "false", "off", "no", "")


def _bool(value: Any, param: str) -> bool | None:
    """true/false, 0/1, or their usual strings (the flat form carries strings); else an error."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise SteeringSpecError(f"{param} must be true or false, got {value!r}", param)


def _name(value: Any, param: str) -> str:
    try:
        return validate_name(value)
    except VectorFormatError as err:
        raise SteeringSpecError(f"{param}: {err}", param) from None


def _pairs(mapping: Any, param: str, max_weight: float | None) -> tuple[tuple[str, float], ...]:
    if mapping is None:
        return ()
    if isinstance(mapping, str):
        mapping = parse_pairs_text(mapping, param)
    if not isinstance(mapping, Mapping):
        raise SteeringSpecError(f"{param} must be an object of name: weight", param)
    out = {}
    for name, weight in mapping.items():
        out[_name(name, param)] = _weight(weight, f"{param}.{name}", max_weight)
    return tuple(sorted(out.items()))


def parse_pairs_text(text: str, param: str = "blend") -> dict[str, float]:
    """'a:0.5,b:-0.3' -> {'a': 0.5, 'b': -0.3} (the flat and CLI form)."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        if ":" not in part:
            raise SteeringSpecError(f"{param}: '{part}' must look like name:weight", param)
        name, weight = part.rsplit(":", 1)
        try:
            out[name.strip()] = float(weight)
        except ValueError:
            raise SteeringSpecError(f"{param}: weight '{weight}' is not a number", param) from None
    return out


MONITOR_KINDS = ("persona", "trait")


def split_monitor_name(name: str) -> tuple[str | None, str]:
    """A monitored name -> (kind or None, vector name): `assistant_axis` is the axis,
    `trait:NAME` / `persona:NAME` say their kind, a bare NAME is looked up (a persona first,
    then a trait: persona_steer.resolve.monitor_targets)."""
    if name == AXIS_NAME:
        return "axis", AXIS_NAME
    kind, sep, rest = name.partition(":")
    if sep and kind in MONITOR_KINDS:
        return kind, rest
    return None, name


def _monitor(value: Any, param: str = "monitor") -> tuple[str, ...]:
    """A list of names (or 'a,b' text) -> checked names, duplicates dropped, order kept."""
    if value is None:
        return ()
    if isinstance(value, str):
        value = [p.strip() for p in value.split(",") if p.strip()]
    if not isinstance(value, (list, tuple)):
        raise SteeringSpecError(f"{param} must be a list of names", param)
    out: dict[str, None] = {}
    for item in value:
        if not isinstance(item, str):
            raise SteeringSpecError(f"{param}: names must be strings, got {item!r}", param)
        _name(split_monitor_name(item)[1], param)
        out[item] = None
    return tuple(out)


def _steer_tokens(value: Any, param: str = "steer_tokens") -> str:
    if value is None:
        return "all"
    if value not in STEER_TOKENS:
        raise SteeringSpecError(f"{param} must be one of {', '.join(STEER_TOKENS)}, got {value!r}",
                                param)
    return value


def _steer_start(value: Any, steer_tokens: str, param: str = "steer_start") -> int | None:
    """A token position (a whole number >= 0; the flat form carries text), only with last_turn."""
    if value is None:
        return None
    if steer_tokens != "last_turn":
        raise SteeringSpecError(f"{param} goes with steer_tokens=last_turn (got steer_tokens="
                                f"{steer_tokens})", param)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SteeringSpecError(f"{param} must be a token position (a whole number >= 0), "
                                f"got {value!r}", param)
    return value


def build_spec(*, persona: str | None = None, strength: float | None = None,
               blend: Any = None, traits: Any = None, scale: float | None = None,
               safety: bool | None = None, default_strength: float = 1.0,
               default_safety: bool = False, max_weight: float | None = None,
               monitor: Any = None, steer_tokens: str | None = None,
               max_monitor: int | None = None, steer_start: Any = None) -> SteeringSpec:
    """From API-level fields (persona/strength/blend/traits/scale/safety) to a spec.

    A single `persona` gets weight `strength` (default: config default_strength); `blend` adds
    more personas; `persona` together with `blend` is allowed and adds persona at `strength`.
    """
    personas: dict[str, float] = dict(_pairs(blend, "blend", max_weight))
    if persona is not None and persona != "":
        name = _name(persona, "persona")
        w = default_strength if strength is None else _weight(strength, "strength", max_weight)
        personas[name] = personas.get(name, 0.0) + w
        if max_weight is not None and abs(personas[name]) > max_weight:
            raise SteeringSpecError(
                f"persona '{name}' has weight {personas[name]} (strength plus blend), beyond the "
                f"allowed bound ±{max_weight}", "strength")
    elif strength is not None:
        _weight(strength, "strength", max_weight)
    scale_v = None if scale is None else _weight(scale, "steering_scale", None)
    if safety is not None and not isinstance(safety, bool):
        raise SteeringSpecError("safety must be true or false", "safety")
    names = _monitor(monitor)
    if max_monitor is not None and len(names) > max_monitor:
        raise SteeringSpecError(f"monitor asks for {len(names)} names; at most {max_monitor} "
                                f"per request (steering.monitor.max_names)", "monitor")
    tokens = _steer_tokens(steer_tokens)
    return SteeringSpec(personas=tuple(sorted(personas.items())),
                        traits=_pairs(traits, "traits", max_weight), scale=scale_v,
                        safety=default_safety if safety is None else safety,
                        steer_tokens=tokens, steer_start=_steer_start(steer_start, tokens),
                        monitor=names)


def parse_extra_args(extra_args: Mapping[str, Any] | None,
                     max_weight: float | None = None,
                     max_monitor: int | None = None) -> SteeringSpec | None:
    """SamplingParams.extra_args -> spec, or None when the request asks for no steering."""
    if not extra_args:
        return None
    if "steering" in extra_args:
        body = extra_args["steering"]
        if body is None:
            return None
        if not isinstance(body, Mapping):
            raise SteeringSpecError("extra_args.steering must be an object", "steering")
        unknown = set(body) - {"personas", "traits", "scale", "safety", "hashes", "monitor",
                               "steer_tokens", "steer_start"}
        if unknown:
            raise SteeringSpecError(f"unknown steering keys: {', '.join(sorted(unknown))}", "steering")
        return build_spec(blend=body.get("personas"), traits=body.get("traits"),
                          scale=body.get("scale"),
                          safety=bool(_bool(body.get("safety"), "steering.safety")),
                          max_weight=max_weight, monitor=body.get("monitor"),
                          steer_tokens=body.get("steer_tokens"), max_monitor=max_monitor,
                          steer_start=_engine_start(body, "steer_start"))
    if not any(k in extra_args for k in FLAT_KEYS):
        return None
    safety = _bool(extra_args.get("steer_safety"), "steer_safety")
    return build_spec(persona=extra_args.get("steer_persona"),
                      strength=extra_args.get("steer_strength"),
                      blend=extra_args.get("steer_blend"), traits=extra_args.get("steer_traits"),
                      scale=extra_args.get("steer_scale"),
                      safety=safety, max_weight=max_weight,
                      monitor=extra_args.get("steer_monitor"),
                      steer_tokens=extra_args.get("steer_tokens"), max_monitor=max_monitor,
                      steer_start=_engine_start(extra_args, "steer_start"))


def _engine_start(body: Mapping[str, Any], key: str) -> Any:
    """What reaches the engine must say where a last_turn request starts steering: our server
    renders the chat and fills it in; a stock-vLLM caller passes `steer_start` itself."""
    if body.get("steer_tokens") == "last_turn" and body.get(key) is None:
        raise SteeringSpecError("steer_tokens=last_turn needs steer_start: the token position "
                                "where the chat's last user turn starts (this project's server "
                                "computes it; through stock vLLM's vllm_xargs pass it)", key)
    return body.get(key)
