"""API key on the live server (turned on with a config edit + SIGHUP, then off again): the page
asks for the key and sends it as Bearer; the CLI refuses in one line without it and works with
--api-key or server.api_key from config."""
from __future__ import annotations

import os
import signal
import time

import httpx
import pytest
import yaml

from tests.clients.conftest import Live, run_cli
from tests.web.conftest import ARTIFACTS

KEY = "web-test-key"


def _set_key(server, key):
    cfg = yaml.safe_load(server.config_path.read_text())
    cfg["server"]["api_key"] = key
    server.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    os.kill(server.pid, signal.SIGHUP)
    want = 401 if key else 200
    for _ in range(240):
        if httpx.get(server.base_url + "/api/status", timeout=30).status_code == want:
            return
        time.sleep(0.25)
    raise AssertionError(f"the server did not switch its API key ({key!r})")


@pytest.fixture()
def keyed(server, steer_vectors):
    _set_key(server, KEY)
    try:
        yield server
    finally:
        _set_key(server, None)


def test_api_key_page_and_cli(keyed, browser, tmp_path):
    url = keyed.base_url
    # CLI: one-line error without the key, works with --api-key and with config
    proc = run_cli(Live(url), "status")
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: HTTP 401")
    proc = run_cli(Live(url, KEY), "list", "--kind", "persona")
    assert proc.returncode == 0 and "alpha" in proc.stdout, proc.stderr
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"server:\n  url: {url}\n  api_key: {KEY}\n")
    proc = run_cli(Live(url), "--config", str(cfg), "generate", "Hi", "--persona", "alpha",
                   "--max-tokens", "4", url=False)
    assert proc.returncode == 0, proc.stderr
    # page: asks for the key, then everything carries it
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(120_000)
    auth = []
    page.on("request", lambda r: auth.append((r.url, r.headers.get("authorization")))
            if "/v1/" in r.url or "/api/" in r.url else None)
    try:
        page.goto(url + "/")
        page.locator("#key-dialog").wait_for(state="visible")
        assert "401" in page.inner_text("#error")
        page.fill("#api-key", KEY)
        page.click("#key-save")
        page.wait_for_function("document.getElementById('status-engine').textContent === 'ready'")
        page.fill("#max-tokens", "4")
        page.fill("#message", "Hello")
        page.keyboard.press("Enter")
        page.wait_for_selector(".msg.assistant:not(.streaming) .meta:not(:empty)")
        assert page.locator(".msg.error-msg").count() == 0
        chat = [a for u, a in auth if u.endswith("/v1/chat/completions")]
        assert chat == [f"Bearer {KEY}"]
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "api-key-chat.png"), full_page=True)
    finally:
        context.close()
