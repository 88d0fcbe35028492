"""Fast version of the behavioural proof on the SHIPPED toy model, through the real server.

The project's own extraction (extraction.jobs, from the archetype datasets, rollouts through the
server) makes the six persona vectors; then held-out questions and held-out system prompts,
greedy, at the recommended setting (extraction.toy.RECOMMENDED). Asserts the targets the model
meets at this size (see README.md (section "The toy persona model") for the full measured table, including the targets
it misses: safety capping, most negative weights and 0.5+0.5 blends).
"""
from __future__ import annotations

import json

import pytest

from extraction.toy import RECOMMENDED, corpus
from extraction.toy.eval import PERSONAS, format_table, run_eval

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def proof(toy_server, toy_settings):
    settings, work = toy_settings
    default = dict(RECOMMENDED, layer_list=list(range(6)))
    return run_eval(settings, workdir=work, url=toy_server.url, n_questions=8, extract_questions=8,
                    positions=[RECOMMENDED["position"]], default=default, sampled=False,
                    blends=True, capping=False, traits=False, blend_scale=1.0, log=lambda m: None)


def test_proof_report_written(proof, toy_settings):
    _, work = toy_settings
    saved = json.loads((work / "report.json").read_text())
    assert saved["default"]["strength"] == RECOMMENDED["strength"]
    assert saved["backend"].startswith("server ")
    print(format_table(proof))


def test_prompted_and_plain(proof):
    main = proof["modes"]["greedy"]
    for p in PERSONAS:
        row = main["personas"][p]
        assert row["prompted"] >= 0.9, (p, row)     # the model learned the persona
        assert row["plain"] <= 0.05, (p, row)       # and does not show it unprompted
    assert main["plain_coherence"] >= 0.9


def test_steering_with_extracted_vectors(proof):
    rows = proof["modes"]["greedy"]["personas"]
    steered = [rows[p]["steered"] for p in PERSONAS]
    for p in PERSONAS:
        assert rows[p]["steered"] >= 0.25, (p, rows[p])         # every vector moves its persona
        assert rows[p]["steered_others"] <= 0.1, (p, rows[p])   # and no other persona
    assert sum(steered) / len(steered) >= 0.6, steered
    coh = [rows[p]["steered_coherence"] for p in PERSONAS]
    assert sum(coh) / len(coh) >= 0.6, coh


def test_negative_weight_suppresses(proof):
    rows = proof["modes"]["greedy"]["personas"]
    neg = [rows[p]["negative"] for p in PERSONAS]
    pro = [rows[p]["prompted"] for p in PERSONAS]
    assert sum(neg) < sum(pro), (neg, pro)


def test_blends_show_both_styles(proof):
    """Two personas at full strength each (0.5 each is below the steering threshold on this
    model: see README.md (section "The toy persona model"))."""
    blends = proof["modes"]["greedy"]["blends"]
    print(json.dumps(blends, indent=0))
    assert len(blends) == 15
    both = [b["both"] for b in blends.values()]
    either = [b["either"] for b in blends.values()]
    assert sum(either) / len(either) >= 0.5, blends
    assert sum(1 for x in both if x >= 0.5) >= 3, blends
