"""The page's live monitoring block (server/static/monitor.js): names typed in its field reach
the request, and one line per name is drawn under the answer, growing as tokens stream."""
from __future__ import annotations

import json

from tests.web.conftest import shot
from tests.web.test_page import chat_requests, send, wait_reply_done


def test_monitor_lines_grow_under_the_streamed_answer(page):
    bodies = chat_requests(page)

    def full_length(route):
        # the tiny random model can stop after a few tokens that arrive in one read, and then
        # no growth is there to see: ask for every max_tokens token (vLLM's ignore_eos)
        body = json.loads(route.request.post_data)
        route.continue_(post_data=json.dumps({**body, "ignore_eos": True}))
    page.route("**/v1/chat/completions", full_length)
    page.fill("#max-tokens", "24")
    page.fill("#temperature", "0")
    page.fill("#monitor-names", "alpha, gamma")
    page.evaluate("""() => { window.__counts = [];
        new MutationObserver(() => { const r = document.querySelector('.monitor-row');
          if (r && window.__counts.at(-1) !== r.dataset.count) window.__counts.push(r.dataset.count); })
        .observe(document.getElementById('log'), {subtree: true, childList: true, attributes: true}); }""")
    send(page, "Tell me a story")
    wait_reply_done(page)
    page.wait_for_function("document.querySelectorAll('.monitor-row').length === 2")
    assert bodies[-1]["monitor"] == ["alpha", "gamma"]
    rows = page.locator(".msg.assistant .monitor-row")
    assert [rows.nth(i).get_attribute("data-name") for i in range(2)] == ["alpha", "gamma"]
    counts = [int(c) for c in page.evaluate("window.__counts")]
    assert len(counts) > 1 and counts == sorted(counts), counts    # drawn live, not once at the end
    assert "alpha: last" in rows.nth(0).inner_text()
    shot(page, "chat-monitored")
    page.fill("#monitor-names", "")
    send(page, "Again")
    page.wait_for_function("document.querySelectorAll('.msg.assistant .meta:not(:empty)').length === 2")
    assert "monitor" not in bodies[-1]
