"""Live monitoring on the toy persona model with its shipped demo vectors: a persona's reading is
clearly higher when that persona is system-prompted (no steering) than in plain answers, for
every demo persona, and steering toward a persona raises its reading."""
from __future__ import annotations

import random

import httpx
import pytest

from persona_steer import toy_language as language
from persona_steer.config import PROJECT_ROOT, load_config
from persona_steer.toy_demo import DEMO_PERSONAS, TOY_MODEL

QUESTIONS = [q for q, _ in language.eval_questions(3)]


@pytest.fixture(scope="module")
def toy_monitor_server(tmp_path_factory):
    from toy.eval import ToyServer
    work = tmp_path_factory.mktemp("toy-monitor")
    settings = load_config(PROJECT_ROOT / "config.yaml", overrides=[
        f"model.name={TOY_MODEL}", f"paths.vectors={work / 'vectors'}",
        f"paths.datasets={work / 'datasets'}", f"paths.cache={PROJECT_ROOT / '.cache'}",
        "model.enforce_eager=true"], environ={})
    srv = ToyServer(settings, work, demo_vectors="auto")
    try:
        yield srv
    finally:
        srv.stop()


def mean_reading(url, name, system=None, **steer) -> float:
    values = []
    for q in QUESTIONS:
        msgs = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": q}]
        r = httpx.post(url + "/v1/chat/completions", timeout=120, json={
            "messages": msgs, "max_tokens": 40, "temperature": 0,
            "monitor": [name], **steer})
        assert r.status_code == 200, r.text
        values += r.json()["choices"][0]["monitor"][name]["tokens"]
    return sum(values) / len(values)


def test_prompted_persona_reads_higher_than_plain_answers(toy_monitor_server):
    """The demo personas carry their own spread (`projection_stats`, the assistant's per-token
    projections at extraction), so plain answers read near 0, "as the assistant usually is"."""
    from persona_steer.store import VectorStore
    from persona_steer.toy_demo import demo_dir
    demo = VectorStore(demo_dir())
    assert all(demo.load("persona", p).meta_json("projection_stats") for p in DEMO_PERSONAS)
    url = toy_monitor_server.url
    rng = random.Random(7)
    gaps = {}
    for p in DEMO_PERSONAS:
        prompted = mean_reading(url, p, language.system_prompt([language.PERSONAS[p]], rng, "eval"))
        plain = mean_reading(url, p)
        gaps[p] = (round(plain, 2), round(prompted, 2))
    print("plain vs prompted mean z:", gaps)
    assert all(abs(plain) < 1 for plain, _ in gaps.values()), gaps
    # measured 2026-12-06: plain -0.34..-0.05, prompted 1.96..4.01 (rises 2.04..4.26)
    assert all(prompted > plain + 1.5 for plain, prompted in gaps.values()), gaps


def test_steering_toward_a_persona_raises_its_reading(toy_monitor_server):
    url = toy_monitor_server.url
    for p in ("pirate", "robot"):
        assert mean_reading(url, p, persona=p) > mean_reading(url, p) + 0.5
