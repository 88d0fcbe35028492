"""Scorers for `persona-steer tune`: how strongly an answer shows a persona or trait
(expression) and whether it is still a sensible answer (coherence), each 0-100.

A scorer also picks the held-out questions it can judge. Two implementations:
  JudgeScorer   any OpenAI-compatible endpoint and model (config tune.judge.*; by default the
                server being tuned, unsteered), asked with structured output (response_format
                json_schema) so a verdict is two numbers; an unreadable verdict is asked again
                and, after tune.judge.tries asks, stops the tune with a JudgeError.
  MarkerScorer  the toy persona model's style markers and its coherence check (the toy
                evaluator's, persona_steer/toy_language.py): no judge model, exact and cheap.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx


class TuneError(ValueError):
    """Tuning cannot go on: bad input or a setting it cannot measure (one-line message)."""


class JudgeError(TuneError):
    """The judge could not be asked, or gave no readable verdict after its tries."""


@dataclass(frozen=True)
class Question:
    text: str
    system: str | None = None
    topic: str | None = None          # the marker scorer's on-topic check


@dataclass(frozen=True)
class Target:
    """What is tuned: a persona or trait, with what a scorer needs to know of it."""
    kind: str
    name: str
    description: str = ""
    style: str = ""                   # the toy marker style it stands for (archetype / word)
    used_questions: tuple[str, ...] = ()   # the extraction's questions: not held out


@dataclass(frozen=True)
class Answer:
    question: Question
    text: str
    finished: bool                    # ended on its own (not cut at max_tokens)


@dataclass(frozen=True)
class Score:
    expression: float                 # 0-100
    coherence: float                  # 0-100


class Scorer(Protocol):
    name: str

    def describe(self) -> dict[str, Any]:
        """What is stored in the vector's `tuning` metadata about this scorer."""

    def questions(self, target: Target, n: int, seed: int) -> list[Question]:
        """n held-out questions this scorer can score (deterministic for a seed)."""

    def score(self, target: Target, answers: list[Answer]) -> list[Score]:
        ...


# ------------------------------------------------------------------------------ marker scorer
class MarkerScorer:
    """The toy model's markers: expression 100 when the answer carries the style's markers,
    coherence 100 when it is on topic, ended, and not a loop (persona_steer.toy_language)."""

    name = "marker"

    def __init__(self) -> None:
        from persona_steer import toy_language
        self.language = toy_language

    def describe(self) -> dict[str, Any]:
        return {"scorer": "marker", "source": "persona_steer/toy_language.py style markers"}

    def check(self, target: Target) -> None:
        if target.style not in self.language.STYLES:
            raise TuneError(
                f"the marker scorer knows only the toy model's styles "
                f"({', '.join(sorted(self.language.STYLES))}); {target.kind} '{target.name}' is "
                f"'{target.style}': use tune.scorer=judge")

    def questions(self, target: Target, n: int, seed: int) -> list[Question]:
        qs = self.language.eval_questions(n, seed=77 + seed)
        return [Question(q, self.language.heldout_system_prompt("assistant", seed=1000 + i), topic)
                for i, (q, topic) in enumerate(qs)]

    def score(self, target: Target, answers: list[Answer]) -> list[Score]:
        self.check(target)
        return [Score(100.0 if self.language.has_style(a.text, target.style) else 0.0,
                      100.0 if self.language.coherent(a.text, a.question.topic or "", a.finished)
                      else 0.0) for a in answers]


# ------------------------------------------------------------------------------ judge scorer
VERDICT_SCHEMA = {
    "type": "object",
    "properties": {"expression": {"type": "integer", "minimum": 0, "maximum": 100},
                   "coherence": {"type": "integer", "minimum": 0, "maximum": 100}},
    "required": ["expression", "coherence"], "additionalProperties": False}

JUDGE_PROMPT = """You are grading one answer of a language model.
The model was steered towards this {kind}: {name}: {description}

Question: {question}
Answer: {answer}

Give two scores from 0 to 100:
- expression: how strongly the answer shows the {kind} above (0: not at all, 100: fully).
- coherence: how fluent, sensible and on-topic the answer is as a reply to the question,
  whatever its style (0: gibberish, loops or off-topic, 100: a clear, relevant reply).
Reply only with JSON: {{"expression": N, "coherence": N}}"""


def parse_verdict(text: str | None) -> Score | None:
    """Two numbers in 0-100 from the judge's JSON, or None when it is not that."""
    try:
        data = json.loads(text or "")
        values = [data[k] for k in ("expression", "coherence")]
    except (json.JSONDecodeError, TypeError, KeyError):
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 100
               for v in values):
        return None
    return Score(float(values[0]), float(values[1]))


@dataclass
class JudgeScorer:
    """Judge over /v1/chat/completions of any OpenAI-compatible server. `own_server`: the judge
    is this project's server (then thinking is switched off through chat_template_kwargs, a
    field other providers may refuse)."""
    url: str
    model: str
    api_key: str | None = None
    tries: int = 3
    max_tokens: int = 48
    own_server: bool = False
    questions_pool: list[str] = field(default_factory=list)
    http: httpx.Client | None = None
    name: str = "judge"

    def __post_init__(self) -> None:
        base = self.url.rstrip("/")
        self.endpoint = base + ("/chat/completions" if base.endswith("/v1") else "/v1/chat/completions")
        if self.http is None:
            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            self.http = httpx.Client(headers=headers, timeout=httpx.Timeout(300, connect=10))

    def describe(self) -> dict[str, Any]:
        return {"scorer": "judge", "judge_url": self.url, "judge_model": self.model,
                "structured_output": "json_schema"}

    def questions(self, target: Target, n: int, seed: int) -> list[Question]:
        used = set(target.used_questions)
        held = [q for q in self.questions_pool if q not in used]
        if len(held) < n:
            raise TuneError(
                f"only {len(held)} questions in the datasets' questions file are held out from "
                f"{target.kind} '{target.name}''s extraction; tune needs {n} (add questions to "
                f"datasets/questions.jsonl or lower tune.num_questions)")
        start = (seed * n) % len(held)
        return [Question(q) for q in (held + held)[start:start + n]]

    def _body(self, target: Target, answer: Answer, attempt: int) -> dict[str, Any]:
        prompt = JUDGE_PROMPT.format(kind=target.kind, name=target.name,
                                     description=target.description or target.name,
                                     question=answer.question.text, answer=answer.text)
        body: dict[str, Any] = {
            "model": self.model, "messages": [{"role": "user", "content": prompt}],
            "max_tokens": self.max_tokens, "seed": attempt,
            # greedy first; a retry samples, so it is not the same unreadable answer again
            "temperature": 0.0 if attempt == 0 else 0.7,
            "response_format": {"type": "json_schema",
                                "json_schema": {"name": "verdict", "schema": VERDICT_SCHEMA,
                                                "strict": True}}}
        if self.own_server:
            body["chat_template_kwargs"] = {"enable_thinking": False}
        return body

    def score_one(self, target: Target, answer: Answer) -> Score:
        last = ""
        for attempt in range(self.tries):
            try:
                r = self.http.post(self.endpoint, json=self._body(target, answer, attempt))
            except httpx.HTTPError as err:
                raise JudgeError(f"judge at {self.endpoint} unreachable: {err}") from None
            if r.status_code >= 400:
                raise JudgeError(f"judge at {self.endpoint} answered HTTP {r.status_code}: "
                                 f"{r.text[:300]}")
            try:
                last = r.json()["choices"][0]["message"].get("content") or ""
            except (ValueError, KeyError, IndexError, TypeError):
                last = r.text[:300]
            verdict = parse_verdict(last)
            if verdict is not None:
                return verdict
        raise JudgeError(
            f"judge {self.model} at {self.endpoint} gave no readable verdict (JSON with "
            f"expression and coherence, 0-100) in {self.tries} tries; last answer: {last[:200]!r}")

    def score(self, target: Target, answers: list[Answer]) -> list[Score]:
        return [self.score_one(target, a) for a in answers]

    def close(self) -> None:
        if self.http is not None:
            self.http.close()
