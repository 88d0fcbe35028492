"""Deterministic synthetic ChatML corpus for the toy persona model, and the style detectors.

Design (see ../shared/design/toy-persona-model-findings.md): the persona is a persistent state
of every response token. Answers have several sentences built from a topic's facts; a style
decorates EVERY sentence (an interjection before it or a tag after it, word swaps inside it),
so no single opener carries the style. Styles compose: when a system prompt asks for two
styles, sentences mix prefixes of one and tags of the other, so a blend of two vectors can
show both. The plain assistant style has no markers at all.

Styles are graded: a prompt can ask for a persona fully (every sentence), a little (about half
the sentences: "a touch of pirate"), or for half of one and half of another (each sentence
independently carries one, both or neither). So the strength of a persona is a magnitude the
model represents, and half of a persona vector can mean half the style instead of nothing.

Continuations (CONTINUE_FRAC of the examples): the first sentence(s) of the answer are given
in context (`prefill`, no loss) in some style, the system prompt asks for a DIFFERENT one
(or none), and the rest of the answer keeps the style the answer already has. So the style an
answer is in becomes a state the model reads from its own residual stream, not only from the
system prompt: once steering moves the first words into (or out of) a persona, the model
stays there, as large chat models keep the register they have started in.

The styles, system prompts, questions and detectors are the toy model's language, which what
runs on the served model needs too (tune's marker scorer): persona_steer/toy_language.py. This
module builds the training examples from them.

Everything is seeded explicitly (no `hash()`, no global RNG).
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

from persona_steer.toy_language import (FULL, HALF, PERSONAS, SOME, STYLES, TRAITS, Style,
                                        question_for, system_prompt)
from persona_steer.toy_topics import TOPICS

SENTENCE_TEMPLATES = [
    "{Name} is {definition}.", "People use it to {use}.", "A good first step is to {tip}.",
    "It is worth knowing that {fact}.", "Remember that {advice}.", "Many people say {name} helps them {use}.",
    "Try this: {tip}.", "One fact about {name}: {fact}.",
]
PLAIN_OPENERS = ["", "", "Sure.", "Good question.", "Here is what I know."]


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def base_sentences(topic: dict, rng: random.Random, n: int | None = None) -> list[str]:
    """Plain factual sentences for a topic: the definition first, then 3-4 others."""
    n = n if n is not None else rng.randint(2, 3)
    first = SENTENCE_TEMPLATES[0]
    rest = rng.sample(SENTENCE_TEMPLATES[1:], n)
    fill = dict(topic, Name=_cap(topic["name"]))
    return [_cap(t.format(**fill)) for t in [first] + rest]


def _swap(sentence: str, swaps) -> str:
    for a, b in swaps:
        sentence = re.sub(rf"\b{re.escape(a)}\b", b, sentence)
    return sentence



def _decorate(body: str, end: str, pre_style: Style | None, suf_style: Style | None,
              rng: random.Random) -> str:
    if suf_style is not None:
        body = body + rng.choice(suf_style.suffixes)
    if pre_style is not None:
        pre = rng.choice(pre_style.prefixes)
        if pre.endswith((",", "that")) and not body.startswith(("I ", "THIS UNIT")):
            body = body[:1].lower() + body[1:]
        body = pre + " " + body
    return body + end


def stylize(sentences: list[str], styles: list[Style], rng: random.Random, opener: bool = True,
            intensity: dict[str, float] | None = None) -> str:
    """Decorate the sentences with the styles. A style at intensity p marks each sentence with
    probability p (and at least one); a sentence marked by two styles mixes them (the prefix of
    one, the tag of the other); a marked sentence also gets the style's word swaps."""
    if not styles:
        opener = rng.choice(PLAIN_OPENERS) if opener else ""
        return " ".join(([opener] if opener else []) + sentences)
    intensity = intensity or {}
    n = len(sentences)
    active = [[st for st in styles if rng.random() < intensity.get(st.name, FULL)] for _ in range(n)]
    for st in styles:                       # every requested style shows at least once
        if not any(st in a for a in active):
            active[rng.randrange(n)].append(st)
    out = []
    for s, on in zip(sentences, active):
        body, end = s[:-1], s[-1]
        if not on:
            out.append(s)
            continue
        order = on[:] if len(on) == 1 else rng.sample(on, len(on))
        for st in order:
            body = _swap(body, st.swaps)
        if len(order) == 1:
            mode = rng.choice(["pre", "suf", "both", "both"])
            pre_style = order[0] if mode in ("pre", "both") else None
            suf_style = order[0] if mode in ("suf", "both") else None
        else:
            pre_style, suf_style = order[0], order[-1]
        if any(st.name == "drill_sergeant" for st in order):
            end = "!"
        out.append(_decorate(body, end, pre_style, suf_style, rng))
    return " ".join(out)


@dataclass
class Example:
    system: str | None
    question: str
    answer: str                      # the trained part (loss); continues `prefill` if any
    styles: list[str] = field(default_factory=list)     # the styles of the answer
    topic: str = ""
    prefill: str = ""                # answer start given in context, no loss (continuations)
    system_styles: list[str] | None = None               # when they differ from `styles`
    intensity: dict[str, float] = field(default_factory=dict)   # styles below FULL



def sample_styles(rng: random.Random) -> tuple[list[Style], dict[str, float]]:
    """The styles of one example and the intensities of those below FULL."""
    r = rng.random()
    personas = list(PERSONAS.values())
    traits = list(TRAITS.values())
    if r < 0.22:
        return [], {}
    if r < 0.70:
        p = rng.choice(personas)
        return [p], ({p.name: SOME} if rng.random() < 0.3 else {})
    if r < 0.80:
        pair = rng.sample(personas, 2)
        return pair, ({p.name: HALF for p in pair} if rng.random() < 0.5 else {})
    if r < 0.92:
        t = rng.choice(traits)
        if rng.random() < 0.3:
            other = rng.choice([x for x in traits if x.name not in (t.name, t.opposite)])
            return [t, other], {}
        return [t], {}
    return [rng.choice(personas), rng.choice(traits)], {}



def make_example(rng: random.Random, styles: list[Style] | None = None, split: str = "train",
                 intensity: dict[str, float] | None = None) -> Example:
    if styles is None:
        styles, intensity = sample_styles(rng)
    intensity = intensity or {}
    topic = rng.choice(TOPICS)
    question = question_for(topic, rng, split)
    sents = base_sentences(topic, rng)
    return Example(system_prompt(styles, rng, split, intensity), question,
                   stylize(sents, styles, rng, intensity=intensity),
                   [s.name for s in styles], topic["key"], intensity=dict(intensity))


CONTINUE_FRAC = 0.2


def _names(styles: list[Style]) -> set[str]:
    return {s.name for s in styles}


def make_continuation(rng: random.Random) -> Example:
    """The answer starts (in context) in one style while the system prompt asks for another (or
    for none); the trained rest keeps the answer's style. Half of them pair a persona with the
    plain style either way round: the two moves steering makes (into a persona, out of one)."""
    r = rng.random()
    sys_int: dict[str, float] = {}
    if r < 0.25:        # persona prompt, plain answer so far -> stays plain
        resp, sys_ = [], [rng.choice(list(PERSONAS.values()))]
    elif r < 0.5:       # neutral prompt, persona answer so far -> stays in the persona
        resp, sys_ = [rng.choice(list(PERSONAS.values()))], []
    else:               # any other mismatch (two personas, traits, persona -> other persona)
        resp, _ = sample_styles(rng)      # full intensity: the prefill must show the style
        sys_, sys_int = sample_styles(rng)
        while _names(sys_) == _names(resp):
            sys_, sys_int = sample_styles(rng)
    topic = rng.choice(TOPICS)
    question = question_for(topic, rng, "train")
    sents = base_sentences(topic, rng)
    k = rng.randint(1, 2)
    # styled as a whole (full intensity, so the prefill shows the style), then split
    whole = stylize(sents, resp, rng)
    cut = _sentence_cut(whole, k)
    return Example(system_prompt(sys_, rng, "train", sys_int), question, whole[cut:].lstrip(),
                   [s.name for s in resp], topic["key"], prefill=whole[:cut].rstrip(),
                   system_styles=[s.name for s in sys_])


def _sentence_cut(text: str, k: int) -> int:
    """Index just after the k-th sentence end ('. ', '! ', '? ' or ']. ') in text, or the end of
    the first sentence if there are fewer."""
    ends = [m.end() for m in re.finditer(r"[.!?](?= [A-Z*\[])", text)]
    ends = [e for e in ends if e < len(text) - 1]
    if not ends:
        return len(text)
    return ends[min(k, len(ends)) - 1]


def generate(n: int, seed: int, continue_frac: float = CONTINUE_FRAC) -> list[Example]:
    rng = random.Random(seed)
    return [make_continuation(rng) if rng.random() < continue_frac else make_example(rng)
            for _ in range(n)]


# --- text rendering --------------------------------------------------------------------------
def prompt_text(system: str | None, question: str, no_think: bool = False) -> str:
    s = ""
    if system is not None:
        s += f"<|im_start|>system\n{system}<|im_end|>\n"
    s += f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
    if no_think:
        s += "<think>\n\n</think>\n\n"
    return s


def answer_text(answer: str) -> str:
    return answer + "<|im_end|>\n"


def answer_parts(e: Example) -> tuple[str, str]:
    """(in-context answer start, trained answer text): the space between them goes with the
    trained part, so the tokens match the whole answer tokenized in one piece."""
    if not e.prefill:
        return "", answer_text(e.answer)
    return e.prefill, " " + answer_text(e.answer)


def tokenizer_texts(examples: list[Example]) -> list[str]:
    texts = [prompt_text(e.system, e.question) + "".join(answer_parts(e)) for e in examples]
    # the vocabulary of every style and every topic, so held-out prompts tokenize sensibly
    for s in STYLES.values():
        texts.append(" ".join(s.descriptors + s.extras + s.prefixes + s.suffixes))
    return texts
