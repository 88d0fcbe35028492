"""Fast version of the behavioural proof on the SHIPPED toy model, through the real server.

The project's own extraction (extraction.jobs, from the archetype datasets, rollouts through the
server) makes the assistant axis (against the six roles the model knows) and the six persona
vectors; then held-out questions and held-out system prompts, greedy, at the recommended
setting (persona_steer.toy_demo.RECOMMENDED = config.yaml's layers and strength). Asserts the issue's
targets where the model meets them, and says so where it asserts less (docs/benchmarks.md,
"Toy model proof", has the full measured table).
"""
from __future__ import annotations

import json

import pytest

from persona_steer.toy_demo import RECOMMENDED
from toy.eval import PERSONAS, TARGETS, format_table, penalized_mode, run_eval


@pytest.fixture(scope="module")
def proof(toy_server, toy_settings):
    settings, work = toy_settings
    return run_eval(settings, workdir=work, url=toy_server.url, n_questions=10, extract_questions=20,
                    positions=[RECOMMENDED["position"]], default=dict(RECOMMENDED), sampled=False,
                    blends=True, capping=True, traits=False, blend_scale=1.0,
                    penalties=settings.clients.penalties(), log=lambda m: None)


@pytest.fixture(scope="module")
def rows(proof):
    return proof["modes"]["greedy"]["personas"]


def test_proof_report_written(proof, toy_settings):
    _, work = toy_settings
    saved = json.loads((work / "report.json").read_text())
    assert saved["default"]["strength"] == RECOMMENDED["strength"]
    assert saved["default"]["layer_list"] == RECOMMENDED["layer_list"]
    assert saved["backend"].startswith("server ")
    print(format_table(proof))


def test_prompted_and_plain(proof, rows):
    for p in PERSONAS:
        assert rows[p]["prompted"] >= TARGETS["prompted"], (p, rows[p])   # learned the persona
        assert rows[p]["plain"] <= TARGETS["plain"], (p, rows[p])         # not shown unprompted
    assert proof["modes"]["greedy"]["plain_coherence"] >= 0.9


def test_steering_with_extracted_vectors(rows):
    """Assistant prompt + the extracted vector at the default strength: the persona appears,
    no other persona does, and answers stay on topic and end properly."""
    for p in PERSONAS:
        assert rows[p]["steered"] >= TARGETS["steered"], (p, rows[p])
        assert rows[p]["steered_others"] <= 0.2, (p, rows[p])
    others = [rows[p]["steered_others"] for p in PERSONAS]
    assert sum(others) / len(others) <= TARGETS["others"], others
    # target 0.8 per persona; on 10 questions the mean is about 0.8 and pirate and drill
    # sergeant sit lower (docs/benchmarks.md: 20 questions, mean 0.88, pirate 0.75, drill 0.70; the
    # clients' penalty removes most of those loops: next test)
    coh = [rows[p]["steered_coherence"] for p in PERSONAS]
    assert sum(coh) / len(coh) >= 0.75, coh


def test_negative_weight_suppresses(rows):
    """Persona prompt + the persona's vector at minus the strength: cut at least in half for
    at least five of the six personas (drill sergeant resists on this model; see docs/toy-model.md).
    At 1.5 x minus the strength every persona is cut in half, and most answers stay coherent
    (shakespearean is the first to lose coherence: docs/benchmarks.md)."""
    cut = [p for p in PERSONAS if rows[p]["negative"] <= TARGETS["cut"] * rows[p]["prompted"]]
    assert len(cut) >= 5, {p: (rows[p]["prompted"], rows[p]["negative"]) for p in PERSONAS}
    assert all(rows[p]["negative"] < rows[p]["prompted"] for p in PERSONAS)
    strong = {p: (rows[p]["prompted"], rows[p]["negative_x1.5"]) for p in PERSONAS}
    assert all(neg <= TARGETS["cut"] * pr for pr, neg in strong.values()), strong
    coh = [rows[p]["negative_x1.5_coherence"] for p in PERSONAS]
    assert sum(coh) / len(coh) >= 0.7, coh


def test_safety_capping_suppresses(rows):
    """Persona prompt + activation capping on the assistant axis: the persona drops for every
    persona, and at least in half for at least three (docs/benchmarks.md has the per-persona table)."""
    cut = [p for p in PERSONAS if rows[p]["capping"] <= TARGETS["cut"] * rows[p]["prompted"]]
    assert len(cut) >= 3, {p: (rows[p]["prompted"], rows[p]["capping"]) for p in PERSONAS}
    mean = sum(rows[p]["capping"] for p in PERSONAS) / len(PERSONAS)
    assert mean < 0.75, {p: rows[p]["capping"] for p in PERSONAS}


def test_blends_show_both_styles(proof):
    """Two personas, each at the full default strength (0.5 each is below the steering
    threshold on this model: see docs/toy-model.md)."""
    blends = proof["modes"]["greedy"]["blends"]
    print(json.dumps(blends, indent=0))
    assert len(blends) == 15
    both = [b["both"] for b in blends.values()]
    either = [b["either"] for b in blends.values()]
    assert sum(either) / len(either) >= 0.8, blends
    assert sum(1 for x in both if x >= 0.25) >= 3, blends


def test_the_clients_penalty_keeps_the_persona_and_stops_loops(proof, toy_settings):
    """Greedy with the penalty the bundled clients send (config `clients`, a presence penalty):
    the steering targets hold and the loops of over-steering mostly go (docs/steering.md: "Loops at high
    strength")."""
    settings, _ = toy_settings
    penalties = settings.clients.penalties()
    assert penalties, "config.yaml's clients send a penalty"
    rows = proof["modes"][penalized_mode("greedy", penalties)]["personas"]
    plain = proof["modes"]["greedy"]["personas"]
    for p in PERSONAS:
        assert rows[p]["prompted"] >= TARGETS["prompted"], (p, rows[p])   # markers kept
        assert rows[p]["steered"] >= TARGETS["steered"], (p, rows[p])
        assert rows[p]["steered_coherence"] >= 0.6, (p, rows[p])
        # one answer of slack: the penalty changes which words come, not only loops
        assert rows[p]["steered_coherence"] >= plain[p]["steered_coherence"] - 0.1, (p, rows[p], plain[p])
    coh = [rows[p]["steered_coherence"] for p in PERSONAS]
    assert sum(coh) / len(coh) >= 0.85, coh
