"""Thinking in generated text: whether the tokenizer has `<think>` tags (ThinkConfig, set once
the engine is up) and splitting streamed text into reasoning and content (ThinkSplitter)."""
from __future__ import annotations

import re
from dataclasses import dataclass

THINK_START, THINK_END = "<think>", "</think>"


@dataclass
class ThinkConfig:
    """How to get `<think>` tags into the text: if the tokenizer marks them special, decoding must
    keep special tokens and we strip the other special tokens ourselves."""
    has_tags: bool = False
    tags_special: bool = False
    strip_tokens: tuple[str, ...] = ()

    @classmethod
    def from_tokenizer(cls, tok) -> "ThinkConfig":
        vocab = tok.get_vocab() if hasattr(tok, "get_vocab") else {}
        has = THINK_START in vocab and THINK_END in vocab
        special = set(getattr(tok, "all_special_tokens", []) or [])
        tags_special = has and (THINK_START in special or THINK_END in special)
        strip = tuple(sorted((t for t in special if t not in (THINK_START, THINK_END)),
                             key=len, reverse=True))
        return cls(has, tags_special, strip)


class ThinkSplitter:
    """Splits generated text into (reasoning, content) as tokens arrive, like vLLM's Qwen3
    reasoning parser: text between `<think>` and `</think>` is reasoning."""

    _TAG = re.compile(r"(<think>|</think>)")

    def __init__(self, cfg: ThinkConfig, start_in_reasoning: bool = False):
        self.cfg = cfg
        self.in_reasoning = start_in_reasoning
        self.seen_reasoning = start_in_reasoning
        self._lstrip = False

    def feed(self, text: str) -> tuple[str, str]:
        for tok in self.cfg.strip_tokens:
            if tok in text:
                text = text.replace(tok, "")
        reasoning, content = [], []
        for part in self._TAG.split(text):
            if part == THINK_START:
                self.in_reasoning = self.seen_reasoning = True
            elif part == THINK_END:
                self.in_reasoning = False
                self.seen_reasoning = True
                self._lstrip = True
            elif part:
                if self.in_reasoning:
                    reasoning.append(part)
                else:
                    if self._lstrip:
                        part = part.lstrip("\n")
                        if not part:
                            continue
                        self._lstrip = False
                    content.append(part)
        return "".join(reasoning), "".join(content)
