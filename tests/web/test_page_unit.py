"""Unit tests of the page's own logic in the real browser, with the API answered by
Playwright routes (no server): thinking display and API-key handling, which the tiny random
model / the shared keyless test server cannot show."""
from __future__ import annotations

import json

import pytest

from persona_steer.config import PROJECT_ROOT
from tests.web.conftest import ARTIFACTS

STATIC = PROJECT_ROOT / "server" / "static"
BASE = "http://persona.test"
TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}


def sse(*events) -> str:
    return "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"


def chunk(delta, finish=None, **extra):
    return {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}


class FakeAPI:
    def __init__(self, key: str | None = None):
        self.key = key
        self.seen: list[tuple[str, str | None]] = []     # (path, Authorization header)
        self.status_extra: dict = {}                       # more /api/status fields
        self.personas: list[dict] = []                     # /api/personas entries
        self.routes: dict[str, dict] = {}                  # path -> route.fulfill kwargs
        self.reply = sse(chunk({"role": "assistant", "content": ""}),
                         chunk({"reasoning_content": "Let me think"}),
                         chunk({"reasoning_content": " about it."}),
                         chunk({"content": "The **answer**"}),
                         chunk({"content": " is 42."}), chunk({}, "stop"))

    def handle(self, route):
        req = route.request
        path = req.url[len(BASE):].split("?")[0]
        if path in ("/", "/index.html") or path.endswith((".js", ".css")):
            f = STATIC / ("index.html" if path in ("/", "/index.html") else path.lstrip("/"))
            return route.fulfill(body=f.read_text(), content_type=TYPES[f.suffix])
        auth = req.headers.get("authorization")
        self.seen.append((path, auth))
        if self.key and auth != f"Bearer {self.key}":
            return route.fulfill(status=401, json={"error": {
                "message": "missing or wrong API key", "type": "authentication_error",
                "param": None, "code": "invalid_api_key"}})
        if path == "/api/status":
            return route.fulfill(json={"model": "m", "engine": "ready", "steering_scale": 1.0,
                                       "loaded": {"personas": [], "traits": []},
                                       **self.status_extra})
        if path in self.routes:
            return route.fulfill(**self.routes[path])
        if path == "/api/personas":
            return route.fulfill(json={"personas": self.personas})
        if path == "/api/traits":
            return route.fulfill(json={"traits": []})
        if path == "/v1/models":
            return route.fulfill(json={"object": "list", "data": [{"id": "m"}]})
        if path == "/v1/chat/completions":
            return route.fulfill(body=self.reply, content_type="text/event-stream")
        return route.fulfill(status=404, json={"error": {"message": f"no route {path}"}})


@pytest.fixture()
def fake_page(browser, request):
    api = FakeAPI(key=getattr(request, "param", None))
    context = browser.new_context(viewport={"width": 1000, "height": 800})
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.route(f"{BASE}/**", api.handle)
    pg.api = api
    yield pg
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    context.close()
    assert not errors, errors


def test_thinking_is_shown_collapsed(fake_page):
    pg = fake_page
    pg.goto(BASE + "/")
    pg.wait_for_function("document.getElementById('status-engine').textContent === 'ready'")
    pg.check("#thinking")
    bodies = []
    pg.on("request", lambda r: bodies.append(json.loads(r.post_data))
          if r.url.endswith("/v1/chat/completions") else None)
    pg.fill("#message", "What is the answer?")
    pg.keyboard.press("Enter")
    pg.wait_for_selector(".msg.assistant:not(.streaming) .meta:not(:empty)")
    assert bodies[-1]["chat_template_kwargs"] == {"enable_thinking": True}
    details = pg.locator(".msg.assistant details.thinking")
    assert details.is_visible() and details.get_attribute("open") is None   # collapsed
    assert pg.inner_text(".msg.assistant summary") == "Thinking"
    assert pg.text_content(".msg.assistant .thinking-text") == "Let me think about it."
    assert pg.inner_html(".msg.assistant .answer") == "<p>The <strong>answer</strong> is 42.</p>"
    pg.click(".msg.assistant summary")
    assert details.get_attribute("open") is not None


@pytest.mark.parametrize("fake_page", ["s3cret"], indirect=True)
def test_api_key_is_asked_for_and_sent(fake_page):
    pg = fake_page
    pg.goto(BASE + "/")
    pg.locator("#key-dialog").wait_for(state="visible")
    assert "401" in pg.inner_text("#error") and "API key" in pg.inner_text("#error")
    pg.fill("#api-key", "s3cret")
    pg.click("#key-save")
    pg.wait_for_function("document.getElementById('status-engine').textContent === 'ready'")
    assert ("/api/status", "Bearer s3cret") in pg.api.seen
    pg.fill("#message", "hi")
    pg.keyboard.press("Enter")
    pg.wait_for_selector(".msg.assistant:not(.streaming) .meta:not(:empty)")
    assert ("/v1/chat/completions", "Bearer s3cret") in pg.api.seen
    assert pg.evaluate("localStorage.getItem('personaSteerApiKey')") == "s3cret"


def test_stream_error_event_is_rendered(fake_page):
    pg = fake_page
    pg.api.reply = sse(chunk({"content": "partial"}),
                       {"error": {"message": "engine died", "type": "server_error",
                                  "param": None, "code": None}})
    pg.goto(BASE + "/")
    pg.wait_for_function("document.getElementById('status-engine').textContent === 'ready'")
    pg.fill("#message", "hi")
    pg.keyboard.press("Enter")
    pg.locator(".msg.error-msg").wait_for()
    assert "engine died" in pg.inner_text(".msg.error-msg")
    assert "engine died" in pg.inner_text("#error")
    assert pg.is_enabled("#send")


def test_temperature_starts_from_the_models_default(fake_page):
    """A model whose generation_config sets a temperature (status `sampling_defaults`) fills the
    page's field, as `vllm serve` would use it; the user's own value survives a status refresh."""
    pg = fake_page
    pg.api.status_extra = {"sampling_defaults": {"temperature": 0.6, "top_k": 20}}
    bodies = []
    pg.on("request", lambda r: bodies.append(json.loads(r.post_data))
          if r.url.endswith("/v1/chat/completions") else None)
    pg.goto(BASE + "/")
    pg.wait_for_function("document.getElementById('temperature').value === '0.6'")
    pg.fill("#message", "hi")
    pg.keyboard.press("Enter")
    pg.wait_for_selector(".msg.assistant:not(.streaming) .meta:not(:empty)")
    assert bodies[-1]["temperature"] == 0.6
    pg.fill("#temperature", "0.9")
    pg.evaluate("refreshStatus()")
    assert pg.input_value("#temperature") == "0.9"


def _ready(pg):
    pg.goto(BASE + "/")
    pg.wait_for_function("document.getElementById('status-engine').textContent === 'ready'")


def test_tune_with_nothing_coherent_says_nothing_was_stored(fake_page):
    """The Tune button's job ends without a pick: the job's entry says so (the real-server
    success path is tests/web/test_page_toy.py); a bad strengths field is refused on the page."""
    pg = fake_page
    pg.api.personas = [{"name": "p1", "loaded": True, "recommended": None}]
    job = {"id": "j1", "status": "queued", "progress": {}}
    done = {**job, "status": "succeeded",
            "progress": {"stage": "tune", "done": 4, "total": 4, "message": "persona p1"},
            "result": {"tune": {"best": None, "min_coherence": 80, "written": False}}}
    pg.api.routes = {
        "/api/personas/p1/tune": {"status": 202, "json": {"job": job}},
        "/api/jobs/j1/events": {"body": f"event: done\ndata: {json.dumps(done)}\n\n",
                                "content_type": "text/event-stream"},
        "/api/jobs/j1": {"json": done}}
    _ready(pg)
    sent = []
    pg.on("request", lambda r: sent.append(r.post_data) if r.url.endswith("/tune") else None)
    pg.click("#tune-options summary")
    pg.fill("#tune-strengths", "1, -2")
    pg.click("button[aria-label='Tune persona p1']")
    pg.locator("#error").wait_for(state="visible")
    assert pg.inner_text("#error-text") == 'tune strengths must be positive numbers, got "1, -2"'
    assert sent == []
    pg.fill("#tune-strengths", "")                        # empty: the server's config
    pg.click("button[aria-label='Tune persona p1']")
    result = pg.locator("#jobs li", has_text="tune persona p1").locator(".job-result")
    result.wait_for()
    assert result.inner_text() == "no setting kept coherence >= 80: nothing stored"
    assert json.loads(sent[-1]) == {}
    assert pg.is_hidden("#error")


def test_compare_tuned_refusal_is_shown(fake_page):
    pg = fake_page
    msg = "no persona among a, b has been tuned (no recommended_strength): run `persona-steer tune` first"
    pg.api.routes = {"/api/vectors/equalize": {"status": 400, "json": {"error": {
        "message": msg, "type": "invalid_request_error", "param": "names", "code": "not_tuned"}}}}
    _ready(pg)
    bodies = []
    pg.on("request", lambda r: bodies.append(json.loads(r.post_data))
          if r.url.endswith("/api/vectors/equalize") else None)
    pg.click("#tuned-compare")
    pg.locator("#error").wait_for(state="visible")
    assert pg.inner_text("#error-text") == f"Server error 400: {msg} (names)"
    assert bodies == [{"kind": "persona", "by": "tuned"}]
    assert pg.is_hidden("#tuned-table")
