"""The toy model's demo vectors: what a first `persona-steer serve` on the toy model shows.

Unit: the shipped files are valid, made for the toy model, equalized; seeding fills only an
empty store on the toy model. End to end: `persona-steer serve` on the toy model with an empty
store (as `make serve` on a fresh clone) seeds it, and the seeded personas steer through the
openai SDK."""
from __future__ import annotations

import threading

import pytest
import torch

from persona_steer import toy_language as language
from persona_steer.toy_demo import demo_default_strengths
from persona_steer.toy_demo import (DEMO_PERSONAS, DEMO_TRAITS, RECOMMENDED, TOY_MODEL, demo_dir,
                                    seed_demo_vectors)
from persona_steer.config import PROJECT_ROOT, load_config
from persona_steer.store import VectorStore
from persona_steer.vector_format import SteeringVector
from tests.docs.markdown import is_make_block, quick_start_blocks


def _settings(tmp_path, **over):
    sets = {"model.name": TOY_MODEL, "paths.vectors": str(tmp_path / "vectors"),
            "paths.jobs": str(tmp_path / "jobs")}      # the app makes its jobs folder
    sets.update(over)
    return load_config(PROJECT_ROOT / "config.yaml", overrides=sets, environ={})


def test_shipped_demo_vectors_are_valid_and_equalized():
    store = VectorStore(demo_dir())
    assert sorted(store.names("persona")) == sorted(DEMO_PERSONAS)
    assert sorted(store.names("trait")) == sorted(w for w, _ in DEMO_TRAITS)
    vecs = [store.load("persona", p) for p in DEMO_PERSONAS]
    for v in vecs:
        assert v.model == TOY_MODEL and v.layers.tolist() == [0, 1, 2]
        assert v.metadata["position"] == "response_mean"
        assert v.meta_json("norm_equalized_with") == list(DEMO_PERSONAS)
        # the toy model's measured setting travels with its vectors: layers from
        # persona_steer.toy_demo.RECOMMENDED, a persona's strength from its measured demo default
        assert v.recommended_layers() == RECOMMENDED["layer_list"]
        assert v.recommended_strength() == demo_default_strengths()[v.name]
    norms = torch.stack([v.vectors.norm(dim=-1) for v in vecs])      # [personas, layers]
    assert torch.allclose(norms, norms.mean(0, keepdim=True).expand_as(norms), rtol=1e-4)
    axis = store.load("axis", "assistant_axis")
    assert axis.model == TOY_MODEL and axis.layers.tolist() == list(range(6))
    assert axis.meta_json("projection_stats")


def test_demo_names_are_the_toy_corpus_personas_and_traits():
    # persona_steer.toy_demo lists them without importing the toy tooling; they must not drift
    assert DEMO_PERSONAS == tuple(language.PERSONAS)
    assert all(language.TRAITS[w].opposite == o for w, o in DEMO_TRAITS), DEMO_TRAITS


def test_seeding_fills_only_an_empty_store_on_the_toy_model(tmp_path):
    settings = _settings(tmp_path)
    store = VectorStore(settings.path("vectors"))
    assert seed_demo_vectors(settings, store) == 9
    assert sorted(store.names("persona")) == sorted(DEMO_PERSONAS)
    shipped = VectorStore(demo_dir())
    assert store.content_hash("persona", "pirate") == shipped.content_hash("persona", "pirate")
    assert store.exists("axis", "assistant_axis")
    assert not list(store.root.rglob("*.tmp"))
    store.delete("persona", "robot")            # a user's change is never undone
    assert seed_demo_vectors(settings, store) == 0
    assert not store.exists("persona", "robot")

    other = VectorStore(tmp_path / "other")
    assert seed_demo_vectors(_settings(tmp_path, **{"model.name": "builtin:tiny"}), other) == 0
    assert seed_demo_vectors(_settings(tmp_path, **{"server.demo_vectors": "off"}), other) == 0
    mine = SteeringVector.build("trait", "mine", {0: torch.ones(256)}, model=TOY_MODEL)
    other.save(mine)
    assert seed_demo_vectors(_settings(tmp_path), other) == 0     # not empty: left alone
    assert other.names("persona") == []


def test_seeding_happens_when_the_server_starts_not_when_the_app_is_built(tmp_path):
    """Building the app (route listings, tests) writes nothing; starting it seeds the store."""
    from fastapi.testclient import TestClient

    from server.app import create_app

    release = threading.Event()

    def no_engine(state):      # stays "starting" (a failed engine would stop the server)
        release.wait()
        raise RuntimeError("no engine in this test")

    settings = _settings(tmp_path)
    store = VectorStore(settings.path("vectors"))
    app = create_app(settings, engine_factory=no_engine)
    assert not store.root.exists() or not list(store.root.rglob("*.safetensors"))
    try:
        with TestClient(app) as http:
            names = [p["name"] for p in http.get("/api/personas").json()["personas"]]
    finally:
        release.set()
    assert sorted(names) == sorted(DEMO_PERSONAS)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """`persona-steer serve` on the toy model with an empty store and default settings."""
    from toy.eval import ToyServer
    work = tmp_path_factory.mktemp("toy-first-run")
    settings = load_config(PROJECT_ROOT / "config.yaml", overrides=[
        f"model.name={TOY_MODEL}", f"paths.vectors={work / 'vectors'}",
        f"paths.datasets={work / 'datasets'}", f"paths.cache={PROJECT_ROOT / '.cache'}",
        "model.enforce_eager=true"], environ={})
    srv = ToyServer(settings, work, demo_vectors="auto")
    try:
        yield srv, work
    finally:
        srv.stop()


def test_first_serve_on_the_toy_model_steers_at_once(first_run):
    from openai import OpenAI
    srv, work = first_run
    assert "added its 9 demo vectors" in (work / "server.log").read_text()
    client = OpenAI(base_url=srv.url + "/v1", api_key="none")
    ids = [m.id for m in client.models.list().data]
    assert {f"persona:{p}" for p in DEMO_PERSONAS} <= set(ids)
    questions = language.eval_questions(4)

    def answers(**steering):
        out = []
        for q, _ in questions:
            r = client.chat.completions.create(
                model=TOY_MODEL, messages=[{"role": "user", "content": q}], max_tokens=120,
                temperature=0, extra_body=steering)
            out.append(r.choices[0].message.content)
        return out

    plain = answers()
    assert not any(language.styles_in(a, DEMO_PERSONAS) for a in plain), plain
    for persona in ("pirate", "robot", "excited_puppy"):
        steered = answers(persona=persona)
        hits = sum(language.has_style(a, persona) for a in steered)
        assert hits >= 3, (persona, steered)


QUICK_START_RUNS = [b for b in quick_start_blocks() if not is_make_block(b)]


@pytest.mark.parametrize("block", QUICK_START_RUNS,
                         ids=[f"{b.lang}-line{b.line}" for b in QUICK_START_RUNS])
def test_readme_quick_start_runs_against_make_serve(first_run, block, capsys):
    """Each curl and openai SDK block of README's quick start, run as written against what
    `make serve` starts (only the port differs), gets a steered answer. The set-up `make` blocks
    are checked in tests/docs (running `make test` here would recurse)."""
    import json
    import re
    import subprocess

    from tests.docs.markdown import README, QUICK_START, section
    srv, _ = first_run
    code = block.code.replace("http://127.0.0.1:8000", srv.url)
    if block.lang == "python":
        exec(compile(code, f"README.md:{block.line}", "exec"), {})
        printed = capsys.readouterr().out
        assert "'steered': True" in printed, printed
        return
    assert block.lang == "bash", block.lang
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", code], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    answer = json.loads(r.stdout)
    assert answer["choices"][0]["message"]["content"].strip(), answer
    # README shows the echoed steering next to the block: it must be what the server sends
    shown = re.search(r'`"steering": (\{.*?\})`', section(README.read_text(), QUICK_START))
    assert shown, "README's quick start no longer shows the echoed steering"
    assert answer["steering"] == json.loads(shown.group(1)), answer["steering"]


def test_toy_vectors_refuses_settings_its_fixed_recipe_would_ignore(tmp_path):
    """`--set extraction.temperature=0 toy vectors` once built the usual sampled set silently."""
    import subprocess

    from tests.conftest import _cli
    r = subprocess.run(_cli() + ["--set", "extraction.temperature=0", "--set",
                                 f"paths.cache={tmp_path / 'cache'}", "toy", "vectors",
                                 "--out", str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=120, cwd=str(PROJECT_ROOT))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == (
        "error: toy vectors builds a fixed recipe and takes only paths.* from --set; "
        "not used: extraction.temperature=0")
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()
