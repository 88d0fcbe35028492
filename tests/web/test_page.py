"""The web page in a real headless browser against the live server."""
from __future__ import annotations

import json
import time

import pytest

from tests.clients.conftest import vector_bytes
from tests.web.conftest import shot


def chat_requests(page) -> list[dict]:
    """Collect the JSON bodies of /v1/chat/completions requests the page sends."""
    bodies: list[dict] = []
    page.on("request", lambda r: bodies.append(json.loads(r.post_data))
            if r.url.endswith("/v1/chat/completions") and r.method == "POST" else None)
    return bodies


def send(page, text: str) -> None:
    page.fill("#message", text)
    page.keyboard.press("Enter")


def wait_reply_done(page) -> str:
    page.wait_for_selector(".msg.assistant:not(.streaming) .meta:not(:empty)")
    return page.locator(".msg.assistant .answer").last.inner_text()


def test_page_shows_status_and_vectors(page, client):
    st = client.status()
    assert page.text_content("#status-model") == st["model"]
    assert page.text_content("#status-engine") == "ready"
    assert "alpha" in page.text_content("#status-loaded")
    for name in ("alpha", "beta", "gamma", "calm"):
        assert page.locator(f"#vector-list li[data-name='{name}']").count() == 1
    options = page.locator("#persona option").all_text_contents()
    assert {"alpha", "beta", "gamma"} <= set(options)
    assert page.locator("#trait-calm").get_attribute("min") == "-1"
    assert page.locator("#trait-calm").get_attribute("max") == "1"
    # the similarity layer picker is bounded by the model's layers and starts in the middle
    assert page.get_attribute("#sim-layer", "max") == str(st["num_layers"] - 1)
    assert page.input_value("#sim-layer") == str(st["num_layers"] // 2)
    # every form control has a label
    unlabeled = page.evaluate("""() => [...document.querySelectorAll('input, select, textarea')]
        .filter(e => e.type !== 'hidden' && !e.labels.length && !e.getAttribute('aria-label'))
        .map(e => e.id)""")
    assert unlabeled == []
    shot(page, "page-loaded")


def test_chat_streams_tokens(page):
    bodies = chat_requests(page)
    page.fill("#max-tokens", "200")      # long enough that the reply cannot arrive in one read
    page.fill("#temperature", "0")
    page.fill("#presence-penalty", "0")   # the stock decoding: the text this test was sized on
    # record every distinct text the reply shows while it streams
    page.evaluate("""() => { window.__seen = []; window.__stopEnabled = [];
        new MutationObserver(() => { const a = document.querySelector('.msg.assistant .answer');
          if (a && a.textContent && window.__seen.at(-1) !== a.textContent) {
            window.__seen.push(a.textContent);
            window.__stopEnabled.push(!document.getElementById('stop').disabled); } })
        .observe(document.getElementById('log'), {subtree: true, childList: true, characterData: true}); }""")
    # greedy on the tiny model: 200 tokens with visible text spread over the whole reply
    send(page, "Tell me a story")
    page.wait_for_selector(".msg.user:has-text('Tell me a story')")
    text = wait_reply_done(page)
    seen = page.evaluate("window.__seen")
    assert text.strip() and seen and seen[-1] == page.text_content(".msg.assistant .answer")
    # the page consumed an SSE stream chunk by chunk (how many arrive per network read depends
    # on timing, so only the chunk count is asserted), re-rendering as text grew
    chunks = int(page.get_attribute(".msg.assistant", "data-chunks"))
    assert chunks >= 20, chunks
    assert all(len(a) <= len(b) for a, b in zip(seen, seen[1:])), seen
    assert all(page.evaluate("window.__stopEnabled")), "Stop is usable while text streams"
    assert bodies[-1]["stream"] is True and bodies[-1]["max_tokens"] == 200
    assert bodies[-1]["messages"] == [{"role": "user", "content": "Tell me a story"}]
    assert "persona" not in bodies[-1] and "traits" not in bodies[-1]
    assert page.is_enabled("#send") and not page.is_enabled("#stop")
    # the conversation continues: the next request carries the history
    page.fill("#max-tokens", "8")
    send(page, "And the mountains?")
    page.wait_for_function("document.querySelectorAll('.msg.assistant .meta:not(:empty)').length === 2")
    assert [m["role"] for m in bodies[-1]["messages"]] == ["user", "assistant", "user"]
    # reset clears the conversation
    page.click("#reset")
    assert page.locator(".msg").count() == 0
    send(page, "Fresh start")
    wait_reply_done(page)
    assert len(bodies[-1]["messages"]) == 1
    shot(page, "chat-streamed")


def test_persona_and_trait_slider_reach_the_request(page):
    bodies = chat_requests(page)
    page.fill("#max-tokens", "6")
    page.select_option("#persona", "beta")
    page.locator("#strength").fill("0.5")
    page.locator("#trait-calm").fill("0.4")
    # keyboard works on sliders: two steps of 0.05 to the right
    page.focus("#trait-calm")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    assert page.text_content("#current-steering").startswith("beta ×0.5 · calm +0.5")
    send(page, "Hello")
    wait_reply_done(page)
    body = bodies[-1]
    assert body["persona"] == "beta" and body["strength"] == 0.5
    assert body["traits"] == {"calm": 0.5}
    meta = page.locator(".msg.assistant .meta").last.inner_text()
    assert "beta 0.5" in meta and "calm +0.5" in meta      # echoed by the server
    # switch persona: the next message uses the new one
    page.select_option("#persona", "alpha")
    page.locator("#trait-calm").fill("-0.3")
    page.locator("#blend-gamma").fill("0.25")
    send(page, "Again")
    page.wait_for_function("document.querySelectorAll('.msg.assistant .meta:not(:empty)').length === 2")
    body = bodies[-1]
    assert body["persona"] == "alpha" and body["traits"] == {"calm": -0.3}
    assert body["blend"] == {"gamma": 0.25}
    assert page.text_content("#current-steering").startswith("alpha ×0.5 · gamma 0.25 · calm -0.3")
    shot(page, "steered-chat")


def test_steer_tokens_choice_reaches_the_request_and_the_start_is_shown(page):
    """"from my last message on" sends steer_tokens=last_turn; the server's echoed start (where
    the last user message begins) is shown under each answer and moves on with the chat."""
    import re

    bodies = chat_requests(page)
    page.fill("#max-tokens", "4")
    page.select_option("#persona", "beta")
    page.select_option("#steer-tokens", "last_turn")
    assert "steering last_turn" in page.text_content("#current-steering")
    starts = []
    for i, text in enumerate(["Hello there", "And a second question"]):
        send(page, text)
        page.wait_for_function("document.querySelectorAll('.msg.assistant .meta:not(:empty)')"
                               f".length === {i + 1}")
        assert bodies[-1]["steer_tokens"] == "last_turn" and bodies[-1]["persona"] == "beta"
        meta = page.locator(".msg.assistant .meta").last.inner_text()
        found = re.search(r"steering from token (\d+)", meta)
        assert found, meta
        starts.append(int(found.group(1)))
    assert 0 < starts[0] < starts[1]        # the second turn starts after the first exchange
    page.click("#steer-clear")
    assert page.input_value("#steer-tokens") == ""
    send(page, "Plain again")
    page.wait_for_function("document.querySelectorAll('.msg.assistant .meta:not(:empty)').length === 3")
    assert "steer_tokens" not in bodies[-1]


def test_penalties_come_from_config_and_reach_the_request(page, client):
    """The page starts from the server's config `clients` (a presence penalty stops the loops
    strong steering causes) and sends what the fields say; 0 sends nothing (the API's default)."""
    bodies = chat_requests(page)
    defaults = client.status()["client_defaults"]
    assert defaults == {"presence_penalty": 0.5, "frequency_penalty": 0.0}
    assert float(page.input_value("#presence-penalty")) == 0.5
    assert float(page.input_value("#frequency-penalty")) == 0.0
    # the tiny model sets no sampling defaults: the page keeps its own temperature
    assert client.status()["sampling_defaults"] == {} and page.input_value("#temperature") == "0.7"
    page.fill("#max-tokens", "4")
    send(page, "Hello")
    wait_reply_done(page)
    assert bodies[-1]["presence_penalty"] == 0.5 and "frequency_penalty" not in bodies[-1]
    page.fill("#presence-penalty", "0")
    page.fill("#frequency-penalty", "0.3")
    send(page, "Again")
    page.wait_for_function("document.querySelectorAll('.msg.assistant .meta:not(:empty)').length === 2")
    assert "presence_penalty" not in bodies[-1] and bodies[-1]["frequency_penalty"] == 0.3
    page.evaluate("refreshStatus()")                  # a later status read keeps the user's values
    assert page.input_value("#presence-penalty") == "0"
    assert page.input_value("#frequency-penalty") == "0.3"


def test_global_scale_applies(page, client):
    page.locator("#scale").fill("0.75")
    page.click("#scale-apply")
    page.wait_for_function("document.getElementById('status-scale').textContent === '0.75'")
    assert client.status()["steering_scale"] == 0.75
    page.locator("#scale").fill("1")
    page.click("#scale-apply")
    page.wait_for_function("document.getElementById('status-scale').textContent === '1'")
    assert client.status()["steering_scale"] == 1.0


def test_server_error_is_rendered(page, client):
    """A persona deleted behind the page's back: the server's 404 is shown in words."""
    client.upload_vector("persona", "web_gone", vector_bytes(client, "persona", "web_gone"))
    page.click("#status-refresh")
    page.wait_for_selector("#persona option[value='web_gone']", state="attached")
    page.select_option("#persona", "web_gone")
    client.delete_vector("persona", "web_gone")
    send(page, "Hello")
    alert = page.locator("#error")
    alert.wait_for(state="visible")
    text = alert.inner_text()
    assert "Server error 404" in text and "unknown persona 'web_gone'" in text
    assert "alpha" in text                       # the message lists what exists
    assert "unknown persona 'web_gone'" in page.locator(".msg.error-msg").inner_text()
    assert page.is_enabled("#send")
    shot(page, "server-error")
    page.click("#error-close")
    assert page.locator("#error").is_hidden()


def wait_running(client, at_least: bool) -> None:
    """Until the server has a generation running (at_least) / none running (not at_least)."""
    for _ in range(480):
        n = client.status()["running_requests"]
        if (n >= 1) if at_least else (n == 0):
            return
        time.sleep(0.25)
    raise AssertionError(f"running_requests never became {'>= 1' if at_least else '0'}")


def page_state(page, client) -> str:
    """What the page and the server show, for a failure message."""
    st = page.evaluate("""() => ({
        metas: [...document.querySelectorAll('.msg .meta')].map(m => m.textContent),
        errors: [...document.querySelectorAll('.msg.error-msg')].map(m => m.textContent),
        banner: document.getElementById('error-text').textContent,
        stopDisabled: document.getElementById('stop').disabled,
        chunks: [...document.querySelectorAll('.msg.assistant')].map(m => m.dataset.chunks)})""")
    return f"page: {st}; server running_requests: {client.status()['running_requests']}"


def send_then_stop(page, client, text: str, how: str, n_replies: int) -> None:
    """Send, then stop in the same JS task: the reply is certainly in flight when Stop (or
    Escape) acts. (Clicking after the send races the generation: on an idle machine the tiny
    model can finish a long reply before the browser's next event.)"""
    page.fill("#message", text)
    page.evaluate("""(how) => {
        document.querySelector('#chat-form').requestSubmit();
        if (document.querySelector('#stop').disabled) throw new Error('Stop not enabled while sending');
        if (how === 'button') document.querySelector('#stop').click();
        else document.dispatchEvent(new KeyboardEvent('keydown', {key: 'Escape', bubbles: true}));
    }""", how)
    try:
        page.wait_for_function(
            f"document.querySelectorAll('.msg.assistant .meta').length === {n_replies} && "
            "[...document.querySelectorAll('.msg.assistant .meta')].every(m => m.textContent === 'stopped')",
            timeout=60_000)
    except Exception as err:  # noqa: BLE001 - re-raised with what the page shows
        raise AssertionError(f"stop by {how} did not show 'stopped': {page_state(page, client)}") from err
    assert page.is_enabled("#send") and not page.is_enabled("#stop")
    wait_running(client, False)          # nothing is left generating on the server


def test_stop_button_and_escape_abort(page, client):
    page.fill("#max-tokens", "1900")     # greedy on the tiny model: never stops early
    page.fill("#temperature", "0")
    send_then_stop(page, client, "Write a very long story", "button", 1)
    # Escape stops too, and the conversation goes on after a stop
    send_then_stop(page, client, "Write a very long story", "Escape", 2)
    page.fill("#max-tokens", "4")
    send(page, "Hello")
    page.wait_for_function("document.querySelectorAll('.msg.assistant .meta:not(:empty)').length === 3")
    assert page.locator(".msg.error-msg").count() == 0


def test_info_view_and_similarity_heatmap(page, client):
    page.click("button[aria-label='Info about persona alpha']")
    dialog = page.locator("#info-dialog")
    dialog.wait_for(state="visible")
    assert page.text_content("#info-title") == "persona: alpha"
    info = client.get_vector("persona", "alpha")
    assert dialog.locator(".info-chart svg rect").count() == len(info["layers"])
    assert "random (tests)" in dialog.inner_text()            # metadata is listed
    shot(page, "info-view")
    dialog.locator("button:text('Close')").click()
    page.fill("#sim-layer", "2")
    page.click("#sim-show")
    page.wait_for_selector("#heatmap svg")
    sim = client.similarity(layer=2)
    n = len(sim["names"])
    assert n >= 3 and page.locator("#heatmap .heat-cell").count() == n * n
    titles = page.locator("#heatmap .heat-cell title").all_text_contents()
    assert "alpha · alpha: 1.000" in titles
    shot(page, "similarity-heatmap")
    page.fill("#sim-layer", "99")
    page.click("#sim-show")
    page.locator("#error").wait_for(state="visible")
    assert "layer 99 out of range" in page.inner_text("#error")


def test_equalize_from_the_page(page, client):
    try:
        for name, scale in (("web_eq_a", 0.2), ("web_eq_b", 0.6)):
            client.upload_vector("persona", name, vector_bytes(client, "persona", name, scale=scale))
        page.evaluate("refreshVectors()")                   # uploaded behind the page's back
        pick = page.locator("#equalize-pick")
        pick.get_by_label("web_eq_a", exact=True).check()
        pick.get_by_label("web_eq_b", exact=True).check()
        page.click("#equalize-form button")
        page.wait_for_function("document.querySelector('#equalize-result').textContent.length > 0")
        text = page.text_content("#equalize-result")
        assert text.startswith("factors per layer: web_eq_a ") and "web_eq_b" in text
        a, b = (client.get_vector("persona", n)["norms"] for n in ("web_eq_a", "web_eq_b"))
        assert a == pytest.approx(b, rel=1e-3)
        # the ticks survive the list's refresh after equalizing
        assert pick.get_by_label("web_eq_b", exact=True).is_checked()
        pick.get_by_label("web_eq_b", exact=True).uncheck()   # one name: the server's 400, shown
        page.click("#equalize-form button")
        page.locator("#error").wait_for(state="visible")
        assert "at least 2" in page.inner_text("#error") or "two" in page.inner_text("#error")
        shot(page, "equalize")
    finally:
        for name in ("web_eq_a", "web_eq_b"):
            client.delete_vector("persona", name)


def test_delete_with_confirmation(page, client):
    client.upload_vector("trait", "web_del", vector_bytes(client, "trait", "web_del"))
    page.click("#status-refresh")
    item = page.locator("#vector-list li[data-name='web_del']")
    item.wait_for()
    # unload and load it again from the list
    page.click("button[aria-label='Unload trait web_del']")
    page.locator("button[aria-label='Load trait web_del']").wait_for()
    assert "web_del" not in client.status()["loaded"]["traits"]
    assert "web_del" not in page.text_content("#status-loaded")
    page.click("button[aria-label='Load trait web_del']")
    page.locator("button[aria-label='Unload trait web_del']").wait_for()
    assert "web_del" in client.status()["loaded"]["traits"]
    page.click("button[aria-label='Delete trait web_del']")
    page.locator("#confirm-dialog").wait_for(state="visible")
    assert "web_del" in page.inner_text("#confirm-text")
    page.click("#confirm-cancel")
    assert item.count() == 1 and "web_del" in [t["name"] for t in client.list_traits()]
    page.click("button[aria-label='Delete trait web_del']")
    page.click("#confirm-ok")
    item.wait_for(state="detached")
    assert "web_del" not in [t["name"] for t in client.list_traits()]
    assert page.locator("#trait-web_del").count() == 0


def test_lists_follow_the_store_without_a_reload(page, client):
    """Another client adds then deletes a persona: the page's lists follow within a poll (15 s)
    without a reload, and the user's own blend setting survives the re-render."""
    page.locator("#blend-gamma").fill("0.25")
    page.focus("#message")          # off the steering controls: the poll may re-render them
    client.upload_vector("persona", "web_poll", vector_bytes(client, "persona", "web_poll"))
    page.locator("#vector-list li[data-name='web_poll']").wait_for(timeout=40_000)
    assert page.locator("#blend-web_poll").count() == 1
    assert page.locator("#persona option[value='web_poll']").count() == 1
    assert page.input_value("#blend-gamma") == "0.25"
    assert "gamma 0.25" in page.text_content("#current-steering")
    client.delete_vector("persona", "web_poll")
    page.locator("#vector-list li[data-name='web_poll']").wait_for(state="detached",
                                                                     timeout=40_000)
    assert page.locator("#blend-web_poll").count() == 0
    assert page.input_value("#blend-gamma") == "0.25"


def test_markdown_renderer_is_safe(page):
    html = page.evaluate("""() => renderMarkdown(
        "# Title\\n**bold** and *it* and `<b>code</b>`\\n\\n- one\\n- two\\n\\n```\\n<script>x</script>\\n```\\n"
        + "<img src=x onerror=alert(1)> [link](javascript:alert(1)) [ok](https://example.org)")""")
    assert "<strong>bold</strong>" in html and "<em>it</em>" in html
    assert "<code>&lt;b&gt;code&lt;/b&gt;</code>" in html
    assert "<ul><li>one</li><li>two</li></ul>" in html
    assert "<pre><code>&lt;script&gt;x&lt;/script&gt;</code></pre>" in html
    assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert 'href="javascript' not in html
    assert '<a href="https://example.org" rel="noopener noreferrer" target="_blank">ok</a>' in html


def test_narrow_screen(page):
    page.set_viewport_size({"width": 380, "height": 800})
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0
    assert page.is_visible("#message") and page.is_visible("#persona")
    shot(page, "narrow-screen")


def test_info_view_shows_separation_chart(page, client):
    sep = {"0": 0.2, "1": 1.5, "2": 2.5, "3": 1.25}
    client.upload_vector("persona", "web_sep", vector_bytes(client, "persona", "web_sep",
                                                            metadata={"separation": sep}))
    try:
        page.click("#status-refresh")
        page.click("button[aria-label='Info about persona web_sep']")
        page.locator("#info-dialog").wait_for(state="visible")
        assert page.inner_text("#info-body h3") == "Per-layer separation"
        bars = page.locator("#info-dialog .info-chart svg rect title").all_text_contents()
        assert bars == [f"layer {k}: {v}" for k, v in sep.items()]
        shot(page, "info-separation")
    finally:
        client.delete_vector("persona", "web_sep")


def test_create_and_delete_trait_through_the_ui(page, client):
    """A real extraction job: live progress over SSE, then the trait is usable and deletable."""
    bodies = chat_requests(page)
    page.evaluate("""() => { window.__progress = [];
        new MutationObserver(() => document.querySelectorAll('#jobs .job-status').forEach(e => {
          if (window.__progress.at(-1) !== e.textContent) window.__progress.push(e.textContent); }))
        .observe(document.getElementById('jobs'), {subtree: true, childList: true, characterData: true}); }""")
    page.fill("#trait-word", "sunny")
    page.fill("#trait-opposite", "stormy")
    page.fill("#trait-name", "web_sunny")
    page.click("#trait-form button[type=submit]")
    job = page.locator("#jobs li", has_text="trait web_sunny")
    job.wait_for()
    assert page.input_value("#trait-word") == ""                  # the form was reset
    page.wait_for_function(
        "document.querySelector('#jobs li')?.dataset.status === 'running'", timeout=300_000)
    shot(page, "trait-job-running")
    page.wait_for_function(
        "['succeeded', 'failed', 'cancelled'].includes(document.querySelector('#jobs li')?.dataset.status)",
        timeout=900_000)
    progress = page.evaluate("window.__progress")
    assert job.get_attribute("data-status") == "succeeded", progress
    assert any("/" in p for p in progress), f"progress counts should stream live: {progress}"
    assert len(progress) >= 3
    assert float(job.locator("progress").get_attribute("value") or
                 page.evaluate("document.querySelector('#jobs progress').value")) == 1
    # the new trait is listed, has a slider, and the next request can use it
    page.locator("#vector-list li[data-name='web_sunny']").wait_for()
    page.locator("#trait-web_sunny").fill("0.6")
    page.fill("#max-tokens", "6")
    send(page, "How is the weather?")
    wait_reply_done(page)
    assert bodies[-1]["traits"] == {"web_sunny": 0.6}
    assert "web_sunny +0.6" in page.locator(".msg.assistant .meta").last.inner_text()
    shot(page, "trait-created")
    # delete it through the UI
    page.click("button[aria-label='Delete trait web_sunny']")
    page.click("#confirm-ok")
    page.locator("#vector-list li[data-name='web_sunny']").wait_for(state="detached")
    assert "web_sunny" not in [t["name"] for t in client.list_traits()]
    assert page.locator("#trait-web_sunny").count() == 0


def test_create_persona_form_starts_a_job(page, client):
    """The persona form starts a job and shows it; the job is cancelled (to save CPU) and the
    page says so."""
    page.fill("#persona-name", "web_grumpy")
    page.fill("#persona-description", "A grumpy cat who answers reluctantly.")
    page.click("#persona-form button[type=submit]")
    job = page.locator("#jobs li", has_text="persona web_grumpy")
    job.wait_for()
    running = [j for j in client.jobs() if j.raw.get("vector_name") == "web_grumpy"
               and not j.finished]
    assert len(running) == 1
    client.cancel_job(running[0].id)
    page.wait_for_function(
        "document.querySelector('#jobs li')?.dataset.status === 'cancelled'", timeout=120_000)
    # the page says so once the job's event stream has closed, a moment after the status shows
    page.wait_for_function(
        "document.getElementById('error-text').textContent.includes('was cancelled')")
    assert "persona web_grumpy was cancelled" in page.inner_text("#error")
    # bad input is refused by the server and shown in words
    page.fill("#persona-name", "alpha")
    page.fill("#persona-description", "Another alpha")
    page.click("#persona-form button[type=submit]")
    page.wait_for_function("document.getElementById('error-text').textContent.includes('409')")
    assert "persona 'alpha' already exists" in page.inner_text("#error")
