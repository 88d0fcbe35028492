"""`persona-steer tune` on the toy persona model with the marker scorer, through a real server
(the toy session server): for every demo persona the tuned setting does at least as well as the
untuned default (the demo vectors' rows at strength 1.0, what config.yaml shipped before tuning existed) on held-out questions, the pick is stored
with the vector, /api/personas lists it, and the server steers with it when a request gives no
strength (a request's own strength still wins). Kept cheap: few questions, short answers."""
from __future__ import annotations

import pytest

from clients.client import PersonaSteerClient
from extraction.tune import TuneParams, plot_tune, tune
from extraction.tune_scorers import MarkerScorer
from persona_steer.store import VectorStore
from persona_steer.toy_demo import DEMO_PERSONAS, demo_dir

DEFAULT_LAYERS, DEFAULT_STRENGTH = [0, 1, 2], 1.0     # rows the demo vectors steer; untuned default
PREFIX = "tt-"                    # own names: the proof tests extract 'pirate' etc. in this store


@pytest.fixture(scope="module")
def client(toy_server):
    with PersonaSteerClient(toy_server.url) as c:
        shipped = VectorStore(demo_dir())
        for p in DEMO_PERSONAS:
            c.upload_vector("persona", PREFIX + p, shipped.path_for("persona", p))
        yield c
        for p in DEMO_PERSONAS:
            c.delete_vector("persona", PREFIX + p)


def _params(**kw) -> TuneParams:
    base = dict(strengths=[0.5, 1.0, 1.5, 2.0], num_questions=4, max_tokens=96,
                min_coherence=75.0, concurrency=16, default_strength=DEFAULT_STRENGTH)
    base.update(kw)
    return TuneParams(**base)


def test_tune_beats_or_equals_the_defaults_on_held_out_questions(client, tmp_path):
    scorer = MarkerScorer()
    picked = {}
    shipped = VectorStore(demo_dir())
    for p in DEMO_PERSONAS:
        name = PREFIX + p
        shipped_strength = shipped.load("persona", p).recommended_strength()   # demo default
        result = tune(client, "persona", name, scorer, _params())
        assert result.best is not None and result.written, result.to_dict()
        assert result.current.layers == DEFAULT_LAYERS
        assert result.current.strength == shipped_strength
        assert result.best.expression >= result.current.expression
        picked[p] = result.best
        if p == "pirate":
            assert plot_tune(result, tmp_path / "pirate.png").stat().st_size > 1000
        # held out: other questions, the pick against the default, nothing written
        check = tune(client, "persona", name, scorer, _params(
            layer_sets=[result.best.layers, DEFAULT_LAYERS],
            strengths=sorted({result.best.strength, DEFAULT_STRENGTH}), num_questions=8,
            question_seed=1, write=False))
        rows = {(tuple(r.layers), r.strength): r for r in check.rows}
        mine = rows[(tuple(result.best.layers), result.best.strength)]
        default = rows[(tuple(DEFAULT_LAYERS), DEFAULT_STRENGTH)]
        print(f"{p}: picked layers {result.best.label} strength {result.best.strength:g}: "
              f"held-out expression {mine.expression:.0f} coherence {mine.coherence:.0f}; default "
              f"{default.expression:.0f} / {default.coherence:.0f}")
        assert mine.expression >= default.expression and mine.coherence >= default.coherence, (
            p, mine, default)
    listed = {e["name"]: e for e in client.list_personas()}
    for p, best in picked.items():
        assert listed[PREFIX + p]["recommended"] == {"layers": best.layers,
                                                      "strength": best.strength}
        meta = client.get_vector("persona", PREFIX + p)["metadata"]
        assert meta["tuning"]["scorer"] == "marker" and meta["tuning"]["table"]
    assert not [n for n in listed if n.startswith("tune-")]        # probes removed


def test_the_server_uses_the_stored_setting_unless_the_request_gives_a_strength(client):
    from persona_steer.vector_format import SteeringVector
    vec = SteeringVector.from_bytes(client.download_vector("persona", PREFIX + "robot"))
    name = PREFIX + "applied"
    client.upload_vector("persona", name, vec.with_recommendation([1, 2], 1.7, {}).to_bytes())
    try:
        entry = {e["name"]: e for e in client.list_personas()}[name]
        assert entry["recommended"] == {"layers": [1, 2], "strength": 1.7}
        body = {"model": client.default_model(), "max_tokens": 4, "temperature": 0.0,
                "messages": [{"role": "user", "content": "hello"}], "persona": name}
        applied = client.request("POST", "/v1/chat/completions", json=body).json()["steering"]
        assert applied["personas"] == {name: 1.7}
        applied = client.request("POST", "/v1/chat/completions",
                                 json={**body, "strength": 0.25}).json()["steering"]
        assert applied["personas"] == {name: 0.25}
    finally:
        client.delete_vector("persona", name)
