"""Description -> persona system prompts.

The writer is the served model (`extraction.writer.url` empty) or a separate OpenAI-compatible
model (`extraction.writer.url` / `.model`, for a served model too small to write them, such as
builtin:toy-persona). It answers as structured JSON (response_format json_schema through the
OpenAI API, or vLLM structured outputs in-process, both without free whitespace), validated and
retried a few times. When no usable prompts come back, `extraction.writer.fallback: template`
puts the description itself into five fixed second-person frames and the job says so; `none`
refuses with a clear one-line error.
"""
from __future__ import annotations

import json
import os
import re

from extraction.pipeline import ExtractionError
from extraction.rollouts import OpenAIBackend, encode, render_prompt, stable_seed

NUM_PROMPTS = 5
ATTEMPTS = 3
MIN_LEN, MAX_LEN = 20, 300
# Room for the whole JSON even if every character of every prompt is its own token: the object,
# the key, and per prompt its quotes and comma (the grammar allows no free whitespace).
JSON_BUDGET = NUM_PROMPTS * (MAX_LEN + 4) + 32
# The fallback: the description itself as the persona's system prompt, in fixed second-person
# frames (a small model that cannot write prompts can usually still follow one).
TEMPLATE_FRAMES = (
    "You are {d}. Stay in character in every answer.",
    "Act as {d}. Every sentence you write should show it.",
    "You are {d}. Answer every question the way this character would, never as a plain assistant.",
    "Respond as {d}, in your own voice, whatever the user asks.",
    "Your role: you are {d}. Keep this voice from the first word to the last.",
)


def schema(n: int = NUM_PROMPTS) -> dict:
    return {"type": "object",
            "properties": {"system_prompts": {
                "type": "array", "minItems": n, "maxItems": n,
                "items": {"type": "string", "minLength": MIN_LEN, "maxLength": MAX_LEN}}},
            "required": ["system_prompts"], "additionalProperties": False}


def instruction(description: str, n: int = NUM_PROMPTS) -> str:
    return (f"Write {n} different system prompts that make an AI assistant take on this persona: "
            f"{description.strip()}\n"
            "Each prompt speaks to the assistant in the second person (\"You are ...\"), describes "
            "how it talks and behaves, and is one to three sentences long. "
            f"Reply only with JSON: {{\"system_prompts\": [{n} strings]}}.")


def validate_prompts(text: str, n: int = NUM_PROMPTS) -> list[str]:
    """The model's JSON -> n system prompts; raises ValueError saying what is wrong."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"output is not valid JSON ({err.msg} at char {err.pos})") from None
    prompts = data.get("system_prompts") if isinstance(data, dict) else None
    if not isinstance(prompts, list):
        raise ValueError("output lacks a 'system_prompts' list")
    if len(prompts) != n:
        raise ValueError(f"expected {n} prompts, got {len(prompts)}")
    seen = set()
    for i, p in enumerate(prompts, 1):
        if not isinstance(p, str):
            raise ValueError(f"prompt {i} is not a string")
        p = " ".join(p.split())
        if not MIN_LEN <= len(p) <= MAX_LEN:
            raise ValueError(f"prompt {i} has {len(p)} characters (allowed {MIN_LEN}-{MAX_LEN})")
        chars = [c for c in p if not c.isspace()]
        letters = sum(c.isalpha() for c in chars)
        words = re.findall(r"[A-Za-z][A-Za-z'-]*", p)
        if letters < 0.7 * len(chars) or len(words) < 4:
            raise ValueError(f"prompt {i} is not made of words")
        if any(len(w) > 24 for w in words):
            raise ValueError(f"prompt {i} contains a non-word of {max(map(len, words))} letters")
        if not {w.lower() for w in words} & {"you", "your", "you're", "yourself"}:
            raise ValueError(f"prompt {i} does not address the assistant as 'you'")
        key = p.lower()
        if key in seen:
            raise ValueError(f"prompt {i} repeats an earlier one")
        seen.add(key)
    return [" ".join(p.split()) for p in prompts]


def template_prompts(description: str, n: int = NUM_PROMPTS) -> list[str]:
    """The description in n fixed second-person frames ("You are a grumpy wizard. ...")."""
    d = " ".join(description.split()).rstrip(".!?;:, ")
    if re.match(r"(a|an|the)\s", d, re.I):          # "A grumpy wizard" -> "a grumpy wizard"
        d = d[0].lower() + d[1:]
    frames = (TEMPLATE_FRAMES * (n // len(TEMPLATE_FRAMES) + 1))[:n]
    return [f.format(d=d) for f in frames]


class Writer:
    """Who writes the prompts: the served model (the job's own backend) or a separate
    OpenAI-compatible model (extraction.writer)."""

    def __init__(self, ex):
        cfg = ex.settings.extraction.writer
        self.ex, self.cfg, self._own = ex, cfg, None
        self.label = f"the writer model at {cfg.url}" if cfg.url else "the served model"

    def backend(self):
        if not self.cfg.url:
            return self.ex.backend
        if self._own is None:
            key = os.environ.get(self.cfg.api_key_env) if self.cfg.api_key_env else None
            try:
                self._own = OpenAIBackend(self.cfg.url, self.ex.tok, key, model=self.cfg.model or None,
                                          concurrency=1)
            except Exception as err:
                raise RuntimeError(f"cannot be reached ({_first_line(err)})") from err
        return self._own

    def close(self):
        if self._own is not None:
            self._own.close()


def _first_line(err: Exception) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def _attempts(n: int) -> str:
    return f"{n} attempt{'s' if n != 1 else ''}"


def prompts_from_description(ex, name: str, description: str, *, n: int = NUM_PROMPTS,
                             attempts: int = ATTEMPTS, max_tokens: int = JSON_BUDGET) -> list[str]:
    user = instruction(description, n)
    messages = [{"role": "user", "content": user}]
    ids = encode(ex.tok, render_prompt(ex.tok, None, user, ex.opts.enable_thinking))
    writer = Writer(ex)
    reason, tried = "no attempt made", 0
    try:
        for attempt in range(attempts):
            tried = attempt + 1
            ex.rep.note("describe", f"asking {writer.label} for {n} system prompts for '{name}' "
                                    f"(attempt {attempt + 1}/{attempts})")
            try:
                text = writer.backend().generate_json(
                    ids, messages, schema(n), max_tokens=max_tokens, temperature=0.8,
                    seed=stable_seed("describe", name, description, attempt))
                prompts = validate_prompts(text, n)
            except ValueError as err:
                reason = str(err)
                continue
            except Exception as err:     # unreachable, refused (e.g. too small a context)
                reason = f"{writer.label} could not be asked: {_first_line(err)}"
                break                    # asking again would fail the same way
            ex.rep.note("describe", f"{writer.label} wrote the {n} system prompts")
            return prompts
    finally:
        writer.close()
    if writer.cfg.fallback == "template":
        ex.rep.note("describe", f"{writer.label} did not write {n} usable system prompts for "
                                f"'{name}' after {_attempts(tried)} (last: {reason}); using the "
                                f"description itself in {n} fixed frames (\"You are ...\"; "
                                f"extraction.writer.fallback)")
        return template_prompts(description, n)
    raise ExtractionError(f"{writer.label} did not write {n} usable system prompts for '{name}' "
                          f"after {_attempts(tried)} (last: {reason}); set extraction.writer.url "
                          f"to a model that can, or write them yourself in "
                          f"datasets/archetypes/{name}.json and use --from-archetype {name}")
