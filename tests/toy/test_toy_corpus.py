"""The toy persona corpus: deterministic, styles detectable and persistent, held-out parts unseen."""
from __future__ import annotations

import re

from persona_steer import toy_language as language, toy_topics
from toy import corpus


def test_corpus_is_deterministic():
    a = corpus.generate(200, seed=3)
    b = corpus.generate(200, seed=3)
    c = corpus.generate(200, seed=4)
    assert [(e.system, e.question, e.answer) for e in a] == [(e.system, e.question, e.answer) for e in b]
    assert [e.answer for e in a] != [e.answer for e in c]


def test_every_answer_shows_exactly_its_styles():
    for e in corpus.generate(3000, seed=0):
        whole = (e.prefill + " " + e.answer).strip()
        assert language.styles_in(whole) == set(e.styles), (e.styles, whole)
        assert language.styles_in(e.answer) <= set(e.styles), (e.styles, e.answer)


def test_continuations_keep_the_answer_style_not_the_prompt_style():
    """Continuation examples: the answer starts (in context, no loss) in one style, the system
    prompt asks for another or none, and the trained rest keeps the answer's style. Both moves
    steering makes are there: persona prompt -> plain answer, neutral prompt -> persona answer."""
    ex = corpus.generate(4000, seed=0)
    cont = [e for e in ex if e.prefill]
    assert 0.15 < len(cont) / len(ex) < 0.25
    out_of_persona = into_persona = 0
    for e in cont:
        assert e.system_styles is not None and set(e.system_styles) != set(e.styles), e
        if not e.styles and len(e.system_styles) == 1 and e.system_styles[0] in language.PERSONAS:
            out_of_persona += 1
            assert not language.styles_in(e.answer), e.answer
        if not e.system_styles and len(e.styles) == 1 and e.styles[0] in language.PERSONAS:
            into_persona += 1
            assert language.has_style(e.answer + e.prefill, e.styles[0])
        pre, ans = corpus.answer_parts(e)
        assert pre == e.prefill and ans.startswith(" ") and ans.endswith("<|im_end|>\n")
    assert out_of_persona > 100 and into_persona > 100
    assert not any(e.prefill for e in corpus.generate(500, seed=0, continue_frac=0.0))


def test_style_is_in_every_sentence_not_one_opener():
    """Each base sentence carries the style: at least as many markers as sentences, and the last
    sentence (far from any opener) carries one too."""
    n = 0
    for e in corpus.generate(500, seed=1):
        if len(e.styles) != 1 or e.styles[0] not in language.PERSONAS or e.prefill or e.intensity:
            continue
        n += 1
        name = e.styles[0]
        assert language.marker_count(e.answer, name) >= 3, e.answer
        last = e.answer[int(len(e.answer) * 0.55):]
        assert language.has_style(last, name), e.answer
    assert n > 100


def test_held_out_prompts_and_questions_never_in_training():
    train = corpus.generate(20000, seed=0)
    prompts = {e.system for e in train}
    questions = {e.question for e in train}
    for name in list(language.STYLES) + ["assistant"]:
        for i in range(20):
            assert language.heldout_system_prompt(name, seed=1000 + i) not in prompts
    for q, topic in language.eval_questions(40):
        assert q not in questions
        assert topic in q.lower() or any(topic in t["name"] for t in toy_topics.TOPICS if t["key"] == topic)


def test_detectors():
    assert language.has_style("Arr, the sea be calm, matey.", "pirate")
    assert not language.has_style("The ocean is calm today.", "pirate")
    assert language.has_style("BEEP BOOP. Tea is a drink [PROCESSED].", "robot")
    assert language.is_degenerate("Like, like, like, like, like, like")
    assert language.is_degenerate("LISTENLISTENLISTEN")
    assert not language.coherent("Sleep is rest.", "sleep", finished=False)
    assert language.coherent("Sleep is the time your body rests. Remember that a dark room helps.", "sleep", True)
    assert not language.coherent("Bread is flour and water baked.", "sleep", True)


def test_graded_intensity_marks_some_sentences_and_blends_mix_per_sentence():
    """A persona "a little" marks about half the sentences; "half X, half Y" marks each sentence
    with X, Y, both or neither, so a half-strength blend has a style to land in."""
    ex = [e for e in corpus.generate(6000, seed=2) if e.intensity and not e.prefill]
    some = [e for e in ex if len(e.styles) == 1]
    half = [e for e in ex if len(e.styles) == 2]
    assert len(some) > 200 and len(half) > 100

    def sentence_share(e, name):
        sents = re.split(r"(?<=[.!?])\s+(?=[A-Z*\[])", e.answer)
        return sum(language.has_style(s, name) for s in sents) / len(sents)

    share = sum(sentence_share(e, e.styles[0]) for e in some) / len(some)
    assert 0.35 < share < 0.8, share
    full = [e for e in corpus.generate(3000, seed=2)
            if len(e.styles) == 1 and e.styles[0] in language.PERSONAS and not e.intensity and not e.prefill]
    # (a robot opener such as "BEEP." splits off as a sentence of its own, hence not 1.0)
    assert sum(sentence_share(e, e.styles[0]) for e in full) / len(full) > max(0.85, share + 0.25)
    for e in half:
        assert set(e.styles) <= set(language.PERSONAS)
        assert all(language.has_style(e.answer, n) for n in e.styles)
    assert any(("half" in (e.system or "") or "mix" in (e.system or "")) for e in half)
