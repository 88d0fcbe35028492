"""The toy proof's `steer_tokens` comparison (`persona-steer toy eval --steer-tokens all,generated`):
the steered rate and coherence with every token steered and with only the generated ones, side
by side, on the shipped model through the real server (docs/toy-model.md, "Where steering
applies"; the full table is in docs/benchmarks.md)."""
from __future__ import annotations

import subprocess

from persona_steer import toy_language as language
from persona_steer.config import PROJECT_ROOT
from persona_steer.steering_spec import STEER_TOKENS
from persona_steer.store import VectorStore
from persona_steer.toy_demo import RECOMMENDED, demo_dir
from persona_steer.vector_format import SteeringVector
from tests.conftest import _cli
from toy.eval import ServerClient, format_steer_tokens, measure_steer_tokens


def test_generated_only_steering_still_steers_and_both_modes_are_reported(toy_server, toy_settings):
    settings, _ = toy_settings
    # the shipped demo pirate, under a name of its own (the session's proof extracts "pirate")
    demo = VectorStore(demo_dir()).load("persona", "pirate")
    VectorStore(settings.path("vectors")).save(SteeringVector.build(
        "persona", "pirate_st", demo.per_layer(), model=demo.model))
    client = ServerClient(toy_server.url)
    try:
        res = measure_steer_tokens(client, language.eval_questions(20),
                                   strength=RECOMMENDED["strength"], temperature=0.0,
                                   modes=["all", "generated"], personas=["pirate"], suffix="_st")
    finally:
        client.close()
    every, generated = res["modes"]["all"]["pirate"], res["modes"]["generated"]["pirate"]
    plain = res["plain"]["pirate"]
    assert plain <= 0.05, res
    # steering only the answer's own tokens still turns the pirate on (benchmarks.md: 0.25 of
    # answers greedy at 0.9, against 0.00 plain) ...
    assert generated["steered"] >= plain + 0.1, res
    # ... but less than steering the prompt too, at the same strength (0.95)
    assert every["steered"] >= 0.7 and every["steered"] > generated["steered"], res
    assert generated["coherence"] >= 0.8, res
    table = format_steer_tokens({
        "steer_tokens": {"greedy": res}, "n_questions": 20, "backend": client.name,
        "default": dict(RECOMMENDED)})
    assert "steered all" in table and "steered generated" in table
    pirate_row = next(line for line in table.splitlines() if line.startswith("pirate"))
    assert pirate_row.split()[1:4] == [f"{plain:.2f}", f"{every['steered']:.2f}",
                                       f"{generated['steered']:.2f}"]


def test_bad_steer_tokens_modes_are_one_line_errors(tmp_path):
    for flags, message in [
            (["--steer-tokens", "all,sideways"],
             f"error: --steer-tokens takes modes from {', '.join(STEER_TOKENS)}; got sideways"),
            (["--steer-tokens", "all,generated", "--backend", "hf"],
             "error: --steer-tokens needs --backend server (the HF reference steers every token)")]:
        r = subprocess.run(_cli() + ["toy", "eval", "--out", str(tmp_path / "out"), *flags],
                           capture_output=True, text=True, timeout=120, cwd=str(PROJECT_ROOT))
        assert r.returncode == 2, r.stderr
        assert r.stderr.strip().splitlines()[-1] == message
        assert not (tmp_path / "out").exists()
