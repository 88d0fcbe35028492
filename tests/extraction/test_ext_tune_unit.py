"""Tuning without an engine: the tuned metadata's format and hash rules, the steering default
it gives, the pick rule, the candidate layer sets, and the judge's structured-output handling
(a fake OpenAI endpoint through httpx.MockTransport: parsed, retried, then refused clearly)."""
from __future__ import annotations

import json

import httpx
import pytest
import torch

from extraction.tune import Row, layer_label, layer_sets, pick
from extraction.tune_scorers import (Answer, JudgeError, JudgeScorer, MarkerScorer, Question,
                                     Target, TuneError, parse_verdict)
from persona_steer.resolve import ModelShape, default_strength, spec_delta
from persona_steer.steering_spec import build_spec
from persona_steer.store import VectorStore
from persona_steer.vector_format import SteeringVector, VectorFormatError
from tests.conftest import make_vector


def _tuned(tmp_path, layers=(1, 2), strength=2.5):
    store = VectorStore(tmp_path)
    vec = make_vector("persona", "pirate", "m", [0, 1, 2, 3], seed=3, hidden=8)
    store.save(vec.with_recommendation(list(layers), strength, {"scorer": "marker", "table": []}))
    return store, vec


def test_recommendation_round_trips_and_steers_only_its_layers(tmp_path):
    store, plain = _tuned(tmp_path)
    back = store.load("persona", "pirate")
    assert back.recommended_layers() == [1, 2] and back.recommended_strength() == 2.5
    assert back.meta_json("tuning") == {"scorer": "marker", "table": []}
    assert back.layers.tolist() == [0, 1, 2, 3]          # every extracted row is kept
    shape = ModelShape(8, 4)
    delta = spec_delta(build_spec(blend={"pirate": 1.0}), store, shape, 1.0)
    assert delta[0].abs().sum() == 0 and delta[3].abs().sum() == 0
    assert torch.allclose(delta[1], plain.vectors[1]) and torch.allclose(delta[2], plain.vectors[2])
    # the hash covers what is steered: tuned layers change it, an untuned vector keeps its own
    assert back.content_hash() != plain.content_hash()
    assert plain.content_hash() == SteeringVector.from_bytes(plain.to_bytes()).content_hash()
    same_rows = SteeringVector.build("persona", "pirate", {1: plain.vectors[1], 2: plain.vectors[2]},
                                     model="m")
    assert back.content_hash() == same_rows.content_hash()
    retuned = back.with_recommendation([1, 2], 0.7, {})   # only the strength: same output rows
    assert retuned.content_hash() == back.content_hash()
    assert store.list("persona")[0].to_dict()["recommended"] == {"layers": [1, 2], "strength": 2.5}


def test_request_strength_wins_over_the_recommended_one(tmp_path):
    store, _ = _tuned(tmp_path, strength=2.5)
    assert default_strength(store, "pirate", 1.0) == 2.5
    assert default_strength(store, "nobody", 1.0) == 1.0        # unknown: its error comes later
    assert default_strength(store, None, 1.0) == 1.0
    w = default_strength(store, "pirate", 1.0)
    assert build_spec(persona="pirate", default_strength=w).personas == (("pirate", 2.5),)
    assert build_spec(persona="pirate", strength=0.3, default_strength=w).personas == (("pirate", 0.3),)


@pytest.mark.parametrize("key,value", [("recommended_layers", "[7]"), ("recommended_layers", "[]"),
                                       ("recommended_layers", "oops"),
                                       ("recommended_strength", "nan"),
                                       ("recommended_strength", "strong")])
def test_bad_recommendation_metadata_is_refused(key, value):
    vec = make_vector("persona", "p", "m", [0, 1], seed=1, hidden=8)
    vec.metadata[key] = value
    with pytest.raises(VectorFormatError, match=key):
        SteeringVector.from_bytes(_raw_bytes(vec))          # a file written by someone else
    with pytest.raises(VectorFormatError, match=key):
        vec.to_bytes()                                     # and never written by us


def _raw_bytes(vec: SteeringVector) -> bytes:
    from safetensors.torch import save
    return save({"vectors": vec.vectors, "layers": vec.layers}, metadata=dict(vec.metadata))


def test_pick_is_max_expression_among_coherent_settings():
    rows = [Row([1], 1.0, 40, 95), Row([1], 2.0, 80, 85), Row([1], 3.0, 95, 50),
            Row([0, 1], 2.0, 80, 90), Row([0, 1], 1.0, 80, 90)]
    assert pick(rows, 80) is rows[4]            # tie on expression+coherence: the weaker one
    assert pick(rows, 40) is rows[2]
    assert pick(rows, 99) is None


def test_layer_sets_come_from_separation_among_stored_rows():
    sep = {str(i): s for i, s in enumerate([0.1, 0.5, 2.0, 1.5, 0.2, 0.1])}
    assert layer_sets([0, 1, 2], sep) == [[2], [1, 2], [0, 1, 2]]
    sets = layer_sets(list(range(6)), sep)
    assert sets[0] == [2] and sets[-1] == list(range(6))
    assert layer_label([3, 4, 5]) == "3-5" and layer_label([2]) == "2"


def test_marker_scorer_uses_the_toy_markers():
    from persona_steer import toy_language as language
    scorer = MarkerScorer()
    q = scorer.questions(Target("persona", "x", style="pirate"), 2, seed=0)
    assert len(q) == 2 and all(x.topic for x in q)
    styled = "Arr matey, " + q[0].topic + " be fine, me hearty."
    score = scorer.score(Target("persona", "x", style="pirate"), [Answer(q[0], styled, True)])[0]
    assert score.expression == (100.0 if language.has_style(styled, "pirate") else 0.0)
    with pytest.raises(TuneError, match="marker scorer knows only"):
        scorer.score(Target("persona", "x", style="accountant"), [Answer(q[0], "hi", True)])


def _judge(replies: list[str], seen: list[dict], tries=3) -> JudgeScorer:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        text = replies[min(len(seen) - 1, len(replies) - 1)]
        return httpx.Response(200, json={"choices": [{"message": {"content": text}}]})
    http = httpx.Client(transport=httpx.MockTransport(handler))
    return JudgeScorer("http://judge.test/v1", "judge-m", tries=tries, http=http,
                       questions_pool=[f"q{i}" for i in range(6)])


ANS = Answer(Question("How are tides made?"), "The moon pulls the sea.", True)
TGT = Target("persona", "pirate", "talks like a pirate", used_questions=("q0", "q1"))


def test_judge_asks_with_a_json_schema_and_parses():
    seen: list[dict] = []
    score = _judge(['{"expression": 70, "coherence": 90}'], seen).score(TGT, [ANS])[0]
    assert (score.expression, score.coherence) == (70.0, 90.0)
    rf = seen[0]["response_format"]
    assert rf["type"] == "json_schema" and rf["json_schema"]["schema"]["required"] == [
        "expression", "coherence"]
    assert seen[0]["model"] == "judge-m" and "pirate" in seen[0]["messages"][0]["content"]
    assert "chat_template_kwargs" not in seen[0]       # not our server: no vLLM-only fields


def test_judge_retries_an_unreadable_verdict_then_refuses_clearly():
    seen: list[dict] = []
    score = _judge(["not json", '{"expression": 101, "coherence": 5}',
                    '{"expression": 12, "coherence": 34}'], seen).score_one(TGT, ANS)
    assert (score.expression, score.coherence) == (12.0, 34.0) and len(seen) == 3
    assert seen[0]["temperature"] == 0.0 and seen[1]["temperature"] > 0   # a retry samples
    seen2: list[dict] = []
    with pytest.raises(JudgeError, match=r"judge-m .* no readable verdict .* in 2 tries; "
                                         r"last answer: 'sure!'"):
        _judge(["sure!"], seen2, tries=2).score_one(TGT, ANS)
    assert len(seen2) == 2


def test_judge_http_error_is_one_clear_error():
    http = httpx.Client(transport=httpx.MockTransport(
        lambda r: httpx.Response(401, json={"error": {"message": "bad key"}})))
    judge = JudgeScorer("http://judge.test", "m", http=http)
    with pytest.raises(JudgeError, match="HTTP 401.*bad key"):
        judge.score_one(TGT, ANS)


def test_parse_verdict():
    assert parse_verdict('{"expression": 0, "coherence": 100}').coherence == 100.0
    for bad in (None, "", "[]", '{"expression": 5}', '{"expression": true, "coherence": 5}',
                '{"expression": -1, "coherence": 5}'):
        assert parse_verdict(bad) is None


def test_judge_questions_are_held_out_from_the_extraction():
    judge = _judge([], [])
    qs = [q.text for q in judge.questions(TGT, 3, seed=0)]
    assert len(qs) == 3 and not set(qs) & {"q0", "q1"}
    with pytest.raises(TuneError, match="only 4 questions .* held out"):
        judge.questions(TGT, 5, seed=0)
