"""The toy persona corpus: deterministic, styles detectable and persistent, held-out parts unseen."""
from __future__ import annotations

import re

from extraction.toy import corpus


def test_corpus_is_deterministic():
    a = corpus.generate(200, seed=3)
    b = corpus.generate(200, seed=3)
    c = corpus.generate(200, seed=4)
    assert [(e.system, e.question, e.answer) for e in a] == [(e.system, e.question, e.answer) for e in b]
    assert [e.answer for e in a] != [e.answer for e in c]


def test_every_answer_shows_exactly_its_styles():
    for e in corpus.generate(3000, seed=0):
        assert corpus.styles_in(e.answer) == set(e.styles), (e.styles, e.answer)


def test_style_is_in_every_sentence_not_one_opener():
    """Each base sentence carries the style: at least as many markers as sentences, and the last
    sentence (far from any opener) carries one too."""
    n = 0
    for e in corpus.generate(500, seed=1):
        if len(e.styles) != 1 or e.styles[0] not in corpus.PERSONAS:
            continue
        n += 1
        name = e.styles[0]
        assert corpus.marker_count(e.answer, name) >= 3, e.answer
        last = e.answer[int(len(e.answer) * 0.55):]
        assert corpus.has_style(last, name), e.answer
    assert n > 150


def test_held_out_prompts_and_questions_never_in_training():
    train = corpus.generate(20000, seed=0)
    prompts = {e.system for e in train}
    questions = {e.question for e in train}
    for name in list(corpus.STYLES) + ["assistant"]:
        for i in range(20):
            assert corpus.heldout_system_prompt(name, seed=1000 + i) not in prompts
    for q, topic in corpus.eval_questions(40):
        assert q not in questions
        assert topic in q.lower() or any(topic in t["name"] for t in corpus.TOPICS if t["key"] == topic)


def test_detectors():
    assert corpus.has_style("Arr, the sea be calm, matey.", "pirate")
    assert not corpus.has_style("The ocean is calm today.", "pirate")
    assert corpus.has_style("BEEP BOOP. Tea is a drink [PROCESSED].", "robot")
    assert corpus.is_degenerate("Like, like, like, like, like, like")
    assert corpus.is_degenerate("LISTENLISTENLISTEN")
    assert not corpus.coherent("Sleep is rest.", "sleep", finished=False)
    assert corpus.coherent("Sleep is the time your body rests. Remember that a dark room helps.", "sleep", True)
    assert not corpus.coherent("Bread is flour and water baked.", "sleep", True)
