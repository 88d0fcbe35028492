"""Description -> persona system prompts, written by the served model itself as structured JSON
(vLLM structured outputs in-process; response_format json_schema through the OpenAI API),
validated, retried a few times, then refused with a clear one-line error."""
from __future__ import annotations

import json
import re

from extraction.pipeline import ExtractionError
from extraction.rollouts import encode, render_prompt, stable_seed

NUM_PROMPTS = 5
ATTEMPTS = 3
MIN_LEN, MAX_LEN = 20, 600


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


def prompts_from_description(ex, name: str, description: str, *, n: int = NUM_PROMPTS,
                             attempts: int = ATTEMPTS, max_tokens: int = 768) -> list[str]:
    user = instruction(description, n)
    messages = [{"role": "user", "content": user}]
    ids = encode(ex.tok, render_prompt(ex.tok, None, user, ex.opts.enable_thinking))
    reason = "no attempt made"
    for attempt in range(attempts):
        ex.rep.note("describe", f"asking the model for {n} system prompts for '{name}' "
                                f"(attempt {attempt + 1}/{attempts})")
        try:
            text = ex.backend.generate_json(ids, messages, schema(n), max_tokens=max_tokens,
                                            temperature=0.8,
                                            seed=stable_seed("describe", name, description, attempt))
        except ExtractionError:
            raise
        except Exception as err:
            raise ExtractionError(f"the model could not be asked for system prompts: "
                                  f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from err
        try:
            return validate_prompts(text, n)
        except ValueError as err:
            reason = str(err)
    raise ExtractionError(f"the model did not write {n} usable system prompts for '{name}' "
                          f"after {attempts} attempts (last: {reason}); write them yourself in "
                          f"datasets/archetypes/{name}.json and use --from-archetype {name}")
