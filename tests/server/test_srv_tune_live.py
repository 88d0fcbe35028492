"""Tuning against the project's own running server (the session's tiny-model server): the judge
asks that server with structured output (response_format json_schema) and always gets numbers;
a verdict cut short is retried and then refused with a clear error; the API job tunes a vector
with progress events, stores the pick, lists it on /api/personas, and the server steers a
request with no strength at the stored strength (a request's own strength wins)."""
from __future__ import annotations

import pytest

from clients.client import PersonaSteerClient
from extraction.tune_scorers import Answer, JudgeError, JudgeScorer, Question, Target
from persona_steer.store import VectorStore
from tests.conftest import make_vector

TGT = Target("persona", "pirate", "talks like a pirate")
ANS = Answer(Question("Why is the sky blue?"), "Arr, the sky be blue from scattered light.", True)


def test_judge_on_our_server_answers_numbers(server):
    judge = JudgeScorer(server.base_url, server.model_id, own_server=True)
    try:
        scores = judge.score(TGT, [ANS, ANS])
    finally:
        judge.close()
    for s in scores:      # a random model, but the schema makes it two integers in 0-100
        assert 0 <= s.expression <= 100 and 0 <= s.coherence <= 100


def test_judge_verdict_cut_short_is_retried_then_refused(server):
    judge = JudgeScorer(server.base_url, server.model_id, own_server=True, tries=2, max_tokens=3)
    try:
        with pytest.raises(JudgeError, match=r"no readable verdict .* in 2 tries; last answer: '\{"):
            judge.score_one(TGT, ANS)
    finally:
        judge.close()


def test_tune_job_stores_the_pick_and_the_server_uses_it(server):
    store = VectorStore(server.vectors_dir)
    store.save(make_vector("persona", "tunable", server.model_id, [0, 1, 2, 3], seed=41))
    with PersonaSteerClient(server.base_url) as client:
        r = client.request("POST", "/api/personas/tunable/tune", json={
            "scorer": "judge", "strengths": [0.5, 2.0], "num_questions": 2, "min_coherence": 0})
        assert r.status_code == 202
        job_id = r.json()["job"]["id"]
        seen = []
        job = client.wait_job(job_id, on_event=seen.append)
        assert job.status == "succeeded", job.raw.get("error")
        assert any(e.progress is not None and 0 < e.progress <= 1 for e in seen)
        tuned = job.raw["result"]["tune"]
        assert tuned["written"] and tuned["scorer"]["scorer"] == "judge"
        best = tuned["best"]
        # every layer set (from separation; none recorded here, so from the first layer) at
        # 0.5, 2.0 and the default 1.0
        assert len(tuned["table"]) == 3 * len({0.5, 2.0, 1.0})
        entry = {e["name"]: e for e in client.list_personas()}["tunable"]
        assert entry["recommended"] == {"layers": best["layers"], "strength": best["strength"]}
        body = {"model": client.default_model(), "max_tokens": 2, "persona": "tunable",
                "messages": [{"role": "user", "content": "hi"}]}
        applied = client.request("POST", "/v1/chat/completions", json=body).json()["steering"]
        assert applied["personas"] == {"tunable": best["strength"]}
        applied = client.request("POST", "/v1/chat/completions",
                                 json={**body, "strength": 0.3}).json()["steering"]
        assert applied["personas"] == {"tunable": 0.3}
        # a second tune of a missing vector is a clear 404, no job
        r = client.http.post("/api/personas/nobody/tune", json={})
        assert r.status_code == 404 and "nobody" in r.json()["error"]["message"]
        client.delete_vector("persona", "tunable")


def test_cli_tune_dry_run_prints_table_chart_and_json(server, tmp_path):
    import json
    import subprocess

    from tests.conftest import _cli, server_env
    store = VectorStore(server.vectors_dir)
    store.save(make_vector("persona", "clitune", server.model_id, [1, 2], seed=42))
    res = subprocess.run(
        _cli() + ["tune", "clitune", "--url", server.base_url, "--scorer", "judge",
                  "--strengths", "1.5", "--questions", "1", "--dry-run", "--quiet",
                  "--plot", str(tmp_path / "c.png"), "--json", str(tmp_path / "c.json"),
                  "--set", "tune.min_coherence=0"],
        capture_output=True, text=True, cwd=tmp_path, env=server_env(), timeout=600)
    assert res.returncode == 0, res.stderr
    assert "persona 'clitune': expression / coherence" in res.stdout
    assert "(not stored)" in res.stdout and "chart written to" in res.stdout
    assert (tmp_path / "c.png").stat().st_size > 1000
    data = json.loads((tmp_path / "c.json").read_text())
    assert data[0]["written"] is False and data[0]["best"] is not None
    with PersonaSteerClient(server.base_url) as client:
        entry = {e["name"]: e for e in client.list_personas()}["clitune"]
        assert entry["recommended"] is None          # --dry-run stored nothing
        client.delete_vector("persona", "clitune")
