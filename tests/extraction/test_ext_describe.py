"""Description -> system prompts: the writer (the served model or `extraction.writer`, a separate
OpenAI-compatible model), the template fallback, and the config that picks them. The writer here
is a small stand-in HTTP server that answers /v1/chat/completions as an OpenAI-compatible model
would; the path through the real engine is in test_ext_jobs_vllm.py and tests/web/test_page_toy.py."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest

from extraction.describe import (JSON_BUDGET, MAX_LEN, NUM_PROMPTS, prompts_from_description,
                                 template_prompts, validate_prompts)
from extraction.pipeline import ExtractionError
from persona_steer.config import PROJECT_ROOT, ConfigError, WriterSettings, load_config

WRITTEN = [f"You are a salty pirate, number {w}, who talks of treasure and the sea."
           for w in ("one", "two", "three", "four", "five")]


class Writer:
    """An OpenAI-compatible writer on a loopback port: answers `replies` in turn, records requests."""

    def __init__(self, replies: list[str]):
        self.replies, self.requests = list(replies), []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, body: dict):
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._send({"object": "list", "data": [{"id": "big-writer", "object": "model"}]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append((self.path, dict(self.headers), body))
                text = outer.replies.pop(0) if outer.replies else "{}"
                self._send({"choices": [{"index": 0, "finish_reason": "stop",
                                         "message": {"role": "assistant", "content": text}}]})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    from persona_steer.testmodels import TOY_MODEL_DIR
    return AutoTokenizer.from_pretrained(TOY_MODEL_DIR)


class NoBackend:
    def generate_json(self, *a, **kw):
        raise AssertionError("the served model must not be asked when a writer is configured")


def job(tok, notes: list, **writer):
    settings = load_config(PROJECT_ROOT / "config.yaml", environ={}, overrides=[
        f"extraction.writer.{k}={v}" for k, v in writer.items()])
    return SimpleNamespace(settings=settings, tok=tok, opts=SimpleNamespace(enable_thinking=False),
                           rep=SimpleNamespace(note=lambda stage, msg: notes.append(msg)),
                           backend=NoBackend())


def test_a_separate_writer_writes_the_prompts(tok, monkeypatch):
    w = Writer(["not json", json.dumps({"system_prompts": WRITTEN})])
    monkeypatch.setenv("WRITER_KEY", "sk-writer")
    notes: list[str] = []
    try:
        got = prompts_from_description(job(tok, notes, url=w.url, model="big-writer",
                                           api_key_env="WRITER_KEY", fallback="none"),
                                       "salty", "A salty sailor who hunts treasure")
    finally:
        w.close()
    assert got == WRITTEN
    path, headers, body = w.requests[-1]
    assert path == "/v1/chat/completions" and len(w.requests) == 2      # one retry after bad JSON
    assert headers["Authorization"] == "Bearer sk-writer"
    assert body["model"] == "big-writer"
    assert body["response_format"]["type"] == "json_schema"
    schema = body["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["system_prompts"]["minItems"] == NUM_PROMPTS
    assert "A salty sailor who hunts treasure" in body["messages"][0]["content"]
    assert body["max_tokens"] == JSON_BUDGET
    assert notes[0] == f"asking the writer model at {w.url} for 5 system prompts for 'salty' (attempt 1/3)"
    assert notes[-1] == f"the writer model at {w.url} wrote the 5 system prompts"


def test_the_budget_lets_the_json_close():
    """Even at one token per character of the longest prompts, the compact JSON fits."""
    longest = json.dumps({"system_prompts": ["x" * MAX_LEN] * NUM_PROMPTS}, separators=(",", ":"))
    assert len(longest) <= JSON_BUDGET


def test_a_writer_that_cannot_write_fails_clearly_or_falls_back(tok):
    w = Writer(["{}"] * 6)
    try:
        with pytest.raises(ExtractionError) as info:
            prompts_from_description(job(tok, [], url=w.url, fallback="none"), "salty", "a pirate")
        notes: list[str] = []
        got = prompts_from_description(job(tok, notes, url=w.url, fallback="template"), "salty",
                                       "A salty pirate who hunts treasure.")
    finally:
        w.close()
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"the writer model at {w.url} did not write 5 usable system prompts for "
                          "'salty' after 3 attempts (last: output lacks a 'system_prompts' list)")
    assert got == template_prompts("A salty pirate who hunts treasure.")
    assert "using the description itself in 5 fixed frames" in notes[-1]


def test_an_unreachable_writer_is_asked_once(tok):
    import socket
    with socket.socket() as s:                  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    notes: list[str] = []
    with pytest.raises(ExtractionError, match=r"after 1 attempt \(last: the writer model at "
                                              r"http://127.0.0.1:\d+ could not be asked"):
        prompts_from_description(job(tok, notes, url=f"http://127.0.0.1:{port}", fallback="none"),
                                 "salty", "a pirate")
    assert len(notes) == 1


def test_template_prompts_are_valid_second_person_prompts():
    got = template_prompts("A grumpy old wizard who speaks in riddles.")
    assert got[0] == "You are a grumpy old wizard who speaks in riddles. Stay in character in every answer."
    assert validate_prompts(json.dumps({"system_prompts": got})) == got
    assert template_prompts("Captain Flint")[3].startswith("Respond as Captain Flint,")


def test_writer_config():
    s = load_config(PROJECT_ROOT / "config.yaml", environ={})
    assert s.extraction.writer.url == "" and s.extraction.writer.fallback == "template"
    assert WriterSettings().fallback == "none"     # a config without the key: strict
    with pytest.raises(ConfigError, match="extraction.writer.url"):
        load_config(None, environ={}, overrides=["extraction.writer.url=ftp://x"])
