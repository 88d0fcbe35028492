"""The first impression on `make serve`'s model, for real: the toy persona model served as a new
user gets it (config.yaml's settings, its demo vectors in an empty store), in the browser, the
API and the CLI.

- The page's recommended defaults: choosing "pirate" moves the strength and temperature to the
  demo defaults (persona_steer/toy_model/demo_defaults.json), and the first steered answer to
  "Tell me about baking bread." keeps the topic and shows the pirate's markers; a control the
  user set by hand keeps its value.
- A persona from a description succeeds end to end (description -> prompts -> extraction ->
  vector -> steered answers that show the style), through the API job, the CLI and the page's
  form, each job finishing. The toy model cannot write the prompts itself (the jobs say so and
  config.yaml's `extraction.writer.fallback: template` puts the description into five fixed
  "You are ..." frames); tests/extraction/test_ext_describe.py covers a separate writer model.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from persona_steer import toy_language as language
from persona_steer.config import PROJECT_ROOT
from persona_steer.toy_demo import RECOMMENDED
from persona_steer.toy_demo import TOY_MODEL, recommended
from tests.conftest import live_server
from tests.server.test_srv_jobs_live import watch
from tests.web.conftest import ARTIFACTS

pytestmark = pytest.mark.engine
DESCRIPTION = "A salty pirate captain who hunts treasure on the high seas."
QUESTIONS = [q for q, _ in language.eval_questions(4)]
TOPICS = [t for _, t in language.eval_questions(4)]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """`serve` on the toy model with config.yaml's extraction settings and an empty store."""
    shipped = yaml.safe_load((PROJECT_ROOT / "config.yaml").read_text())
    extraction = dict(shipped["extraction"], num_questions=20)   # as the proof: 20 questions
    with live_server(tmp_path_factory.mktemp("toy-page"), TOY_MODEL, {
            "extraction": extraction, "server": {"demo_vectors": "auto"},
            "clients": shipped["clients"], "steering": shipped["steering"]}) as live:
        yield live


@pytest.fixture()
def page(browser, toy, request):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(300_000)
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(toy.url + "/")
    pg.wait_for_function("document.getElementById('status-engine').textContent === 'ready' "
                         "&& state.model !== null && state.personas.length > 0")
    yield pg
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def chat_bodies(page) -> list[dict]:
    bodies: list[dict] = []
    page.on("request", lambda r: bodies.append(json.loads(r.post_data))
            if r.url.endswith("/v1/chat/completions") and r.method == "POST" else None)
    return bodies


def ask(page, text: str) -> str:
    n = page.locator(".msg.assistant .meta:not(:empty)").count()
    page.fill("#message", text)
    page.keyboard.press("Enter")
    page.wait_for_function(f"document.querySelectorAll('.msg.assistant:not(.streaming) "
                           f".meta:not(:empty)').length > {n}")
    return page.locator(".msg.assistant .answer").last.inner_text()


def steered(toy, persona: str) -> list[str]:
    """Greedy answers to four held-out questions, steered by `persona` at the default strength."""
    out = []
    with httpx.Client(timeout=300) as c:
        for q in QUESTIONS:
            r = c.post(toy.url + "/v1/chat/completions", json={
                "model": TOY_MODEL, "messages": [{"role": "user", "content": q}],
                "max_tokens": 120, "temperature": 0, "presence_penalty": 0.5, "persona": persona})
            assert r.status_code == 200, r.text
            out.append(r.json()["choices"][0]["message"]["content"])
    return out


def assert_pirate(answers: list[str]) -> None:
    styled = sum(language.has_style(a, "pirate") for a in answers)
    on_topic = sum(language.coherent(a, t, True) for a, t in zip(answers, TOPICS))
    assert styled >= 3 and on_topic >= 3, answers


def test_page_offers_the_demo_defaults_and_the_first_answer_keeps_topic_and_persona(page, toy):
    rec = httpx.get(toy.url + "/api/personas/pirate").json()["recommended"]
    # the measured demo defaults, joined with the rows and strength the vector carries
    assert rec and {"strength", "temperature"} <= set(rec) and rec["layers"] == [0, 1, 2], rec
    bodies = chat_bodies(page)
    assert page.is_hidden("#persona-recommended")
    page.select_option("#persona", "pirate")
    assert float(page.input_value("#strength")) == rec["strength"]
    assert float(page.input_value("#temperature")) == rec["temperature"]
    assert page.inner_text("#persona-recommended") == (
        f"recommended for pirate: strength {rec['strength']:g}, temperature {rec['temperature']:g}")
    answer = ask(page, "Tell me about baking bread.")
    assert bodies[-1]["persona"] == "pirate"
    assert bodies[-1]["strength"] == rec["strength"]
    assert bodies[-1]["temperature"] == rec["temperature"]
    assert "bread" in answer.lower(), answer                 # the question's topic
    assert language.has_style(answer, "pirate"), answer         # the persona's markers
    # the user's own choice wins: a strength set by hand stays when another persona is chosen
    page.locator("#strength").fill("0.5")
    page.select_option("#persona", "robot")
    assert page.input_value("#strength") == "0.5"
    robot = httpx.get(toy.url + "/api/personas/robot").json()["recommended"]
    assert float(page.input_value("#temperature")) == robot["temperature"]
    page.select_option("#persona", "")
    assert page.is_hidden("#persona-recommended")


def test_recommended_only_for_the_shipped_vectors(toy):
    listed = {e["name"]: e for e in httpx.get(toy.url + "/api/personas").json()["personas"]}
    assert all(listed[p]["recommended"] for p in language.PERSONAS)
    assert recommended(TOY_MODEL, "persona", "pirate", "another hash") is None
    assert recommended("Qwen/Qwen3-8B", "persona", "pirate", listed["pirate"]["content_hash"]) is None


def test_description_persona_through_the_api_job(toy):
    r = httpx.post(toy.url + "/api/personas", json={"name": "salty", "description": DESCRIPTION})
    assert r.status_code == 202, r.text
    events = watch(toy, r.json()["job"]["id"])
    final = events[-1][1]
    assert final["status"] == "succeeded", final
    messages = [snap["progress"].get("message") for _, snap in events
                if (snap.get("progress") or {}).get("stage") == "describe"]
    assert messages[0] == "asking the served model for 5 system prompts for 'salty' (attempt 1/3)"
    assert "using the description itself in 5 fixed frames" in messages[-1], messages
    info = httpx.get(toy.url + "/api/personas/salty").json()
    assert info["metadata"]["prompts"][0].startswith("You are a salty pirate captain who hunts treasure")
    assert_pirate(steered(toy, "salty"))


def test_description_persona_through_the_cli(toy):
    cli = Path(sys.executable).parent / "persona-steer"
    done = subprocess.run([str(cli), "--config", str(toy.config_path), "create", "salty_cli",
                           "--description", DESCRIPTION, "--backend", "openai",
                           "--base-url", toy.url],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "using the description itself in 5 fixed frames" in done.stdout + done.stderr
    assert (toy.vectors_dir / "personas" / "salty_cli.safetensors").exists()
    assert_pirate(steered(toy, "salty_cli"))


def test_description_persona_through_the_page(page, toy):
    page.fill("#persona-name", "salty_web")
    page.fill("#persona-description", DESCRIPTION)
    page.click("#persona-form button[type=submit]")
    page.locator("#jobs li", has_text="persona salty_web").wait_for()
    page.wait_for_function("document.querySelector('#jobs li')?.dataset.status === 'succeeded'",
                           timeout=900_000)
    page.locator("#persona option[value='salty_web']").wait_for(state="attached")
    page.select_option("#persona", "salty_web")
    # a new vector on the toy model carries the toy's measured setting (no demo temperature)
    rec = httpx.get(toy.url + "/api/personas/salty_web").json()["recommended"]
    assert rec == {"layers": [0, 1, 2], "strength": RECOMMENDED["strength"]}, rec
    assert page.inner_text("#persona-recommended") == (
        f"recommended for salty_web: strength {rec['strength']:g}")
    assert float(page.input_value("#strength")) == rec["strength"]
    page.fill("#temperature", "0")
    answer = ask(page, "Tell me about baking bread.")
    assert language.has_style(answer, "pirate"), answer
    assert "bread" in answer.lower(), answer


def test_tune_from_the_page_shows_the_pick_the_api_lists(page, toy):
    """The Tune button runs the tune API job (a small sweep set in the Tune options; the toy
    model's marker scorer), the Jobs list follows its progress, and when it ends the page shows
    the picked layers and strength: the ones /api/personas then lists, shown in the vector list
    and as the persona's recommended strength. Compare tuned strengths then lists it."""
    name = "web_tune"
    shipped = httpx.get(toy.url + "/api/personas/pirate/vector")
    assert httpx.put(f"{toy.url}/api/personas/{name}/vector",
                     content=shipped.content).status_code == 201
    try:
        page.evaluate("refreshVectors()")                 # uploaded behind the page's back
        page.evaluate("""() => { window.__progress = [];
            new MutationObserver(() => document.querySelectorAll('#jobs .job-status').forEach(e => {
              if (window.__progress.at(-1) !== e.textContent) window.__progress.push(e.textContent); }))
            .observe(document.getElementById('jobs'), {subtree: true, childList: true, characterData: true}); }""")
        sent: list[dict] = []
        page.on("request", lambda r: sent.append(json.loads(r.post_data))
                if r.url.endswith(f"/api/personas/{name}/tune") and r.method == "POST" else None)
        page.click("#tune-options summary")
        page.fill("#tune-strengths", "1, 2")
        page.fill("#tune-questions", "2")
        page.fill("#tune-min-coherence", "50")
        page.click(f"button[aria-label='Tune persona {name}']")
        job = page.locator("#jobs li", has_text=f"tune persona {name}")
        job.wait_for()
        result = job.locator(".job-result")
        result.wait_for(timeout=900_000)                  # the job ended and the pick is shown
        assert sent == [{"strengths": [1, 2], "num_questions": 2, "min_coherence": 50}]
        assert job.get_attribute("data-status") == "succeeded"
        progress = page.evaluate("window.__progress")
        assert any(p.startswith("running · tune · ") and "/" in p for p in progress), progress
        listed = {e["name"]: e for e in httpx.get(toy.url + "/api/personas").json()["personas"]}
        rec = listed[name]["recommended"]
        assert rec and set(rec) == {"layers", "strength"}, rec
        assert float(result.get_attribute("data-strength")) == rec["strength"]
        assert json.loads(result.get_attribute("data-layers")) == rec["layers"]
        text = result.inner_text()
        assert text.startswith("picked layers ") and text.endswith("stored with the vector)"), text
        assert f"strength {rec['strength']:g} " in text
        tuning = httpx.get(f"{toy.url}/api/personas/{name}").json()["metadata"]["tuning"]
        tuning = json.loads(tuning) if isinstance(tuning, str) else tuning
        assert tuning["num_questions"] == 2 and tuning["min_coherence"] == 50
        assert {r["strength"] for r in tuning["table"]} >= {1.0, 2.0}
        # the refreshed list and the steering panel show the stored strength
        badge = page.locator(f"#vector-list li[data-name='{name}'] .badge.recommended")
        assert badge.inner_text() == f"strength {rec['strength']:g}"
        page.select_option("#persona", name)
        assert page.inner_text("#persona-recommended") == (
            f"recommended for {name}: strength {rec['strength']:g}")
        assert float(page.input_value("#strength")) == rec["strength"]
        # which persona is stronger: the page's table is the API's by-tuned report
        page.click("#tuned-compare")
        page.locator("#tuned-table").wait_for()
        report = httpx.post(toy.url + "/api/vectors/equalize",
                            json={"by": "tuned", "kind": "persona"}).json()
        rows = page.locator("#tuned-table tbody tr")
        assert [rows.nth(i).get_attribute("data-name") for i in range(rows.count())] == report["names"]
        cells = page.locator(f"#tuned-table tr[data-name='{name}'] td").all_text_contents()
        assert cells[1] == f"{rec['strength']:g}"
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "tune-from-the-page.png"), full_page=True)
    finally:
        httpx.delete(f"{toy.url}/api/personas/{name}")
