"""Security (docs/security.md): the API key is compared in constant time and every failed
attempt is counted in /metrics; CORS closes to other origins while a key is set; no request
field reaches the file system as a path; no code in the repository uses an unsafe loader."""
from __future__ import annotations

import ast
import asyncio
import json
from pathlib import Path

import httpx
import pytest

from persona_steer.config import PROJECT_ROOT
from server.security import key_matches
from tests.conftest import set_api_key

KEY = "sekret-sec-1"
OTHER_ORIGIN = "http://elsewhere.example"


def test_key_matches():
    assert key_matches(KEY, KEY)
    for wrong in (None, "", KEY[:-1], KEY + "x", "sekret-séc-1", KEY.upper()):
        assert not key_matches(wrong, KEY), wrong
    assert key_matches("clé", "clé")          # non-ASCII keys compare as UTF-8 bytes


def _failures(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line.startswith("persona_steer_auth_failures_total{"):
            label = line.split('endpoint="', 1)[1].split('"', 1)[0]
            out[label] = float(line.rsplit(" ", 1)[1])
    return out


async def _ws_wrong_key(url: str) -> dict:
    import websockets
    async with websockets.connect(url + "?api_key=wrong") as ws:
        return json.loads(await ws.recv())


@pytest.fixture
def keyed(server):
    set_api_key(server, KEY)
    try:
        yield server
    finally:
        set_api_key(server, None)


def test_failed_key_attempts_are_counted(keyed):
    url, auth = keyed.base_url, {"Authorization": f"Bearer {KEY}"}
    before = _failures(httpx.get(url + "/metrics", headers=auth).text)
    assert httpx.get(url + "/v1/models").status_code == 401
    assert httpx.get(url + "/v1/models", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert httpx.post(url + "/v1/chat/completions", json={},
                      headers={"Authorization": f"Bearer {KEY[:-1]}"}).status_code == 401
    ws = asyncio.run(_ws_wrong_key(url.replace("http://", "ws://") + "/ws/chat"))
    assert ws["error"]["code"] == "invalid_api_key"
    assert httpx.get(url + "/v1/models", headers=auth).status_code == 200   # not counted
    after = _failures(httpx.get(url + "/metrics", headers=auth).text)
    assert after.get("http", 0) - before.get("http", 0) == 3
    assert after.get("websocket", 0) - before.get("websocket", 0) == 1
    log = keyed.log_path.read_text(errors="replace")
    assert "/ws/chat?api_key=***" in log and "api_key=wrong" not in log   # keys stay out of logs


def test_key_in_a_query_string_is_masked_in_log_lines():
    import logging
    from server.security import RedactKeyInLogs
    rec = logging.LogRecord("uvicorn.error", logging.INFO, __file__, 1,
                            '%s - "WebSocket %s" [accepted]',
                            ("127.0.0.1:5", "/ws/chat?x=1&api_key=s3cr%20t&y=2"), None)
    assert RedactKeyInLogs().filter(rec)
    assert rec.getMessage() == '127.0.0.1:5 - "WebSocket /ws/chat?x=1&api_key=***&y=2" [accepted]'


def _preflight(url: str) -> httpx.Response:
    return httpx.options(url + "/v1/chat/completions", headers={
        "Origin": OTHER_ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})


def test_cors_closes_to_other_origins_while_a_key_is_set(server):
    url = server.base_url
    assert _preflight(url).status_code == 200        # no key: the configured ["*"] holds
    set_api_key(server, KEY)
    try:
        r = _preflight(url)
        assert r.status_code == 400 and "access-control-allow-origin" not in r.headers
        r = httpx.get(url + "/v1/models", headers={"Origin": OTHER_ORIGIN,
                                                   "Authorization": f"Bearer {KEY}"})
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    finally:
        set_api_key(server, None)
    r = _preflight(url)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] in ("*", OTHER_ORIGIN)


TRAVERSALS = ["../x", "..", "/etc/passwd", "a/b", "x.safetensors", "%2e%2e", "~root", "a\\b"]


@pytest.mark.parametrize("bad", TRAVERSALS)
def test_no_request_field_is_a_path(server, steer_vectors, bad, tmp_path):
    """Every field that selects something on disk (a vector's, persona's, trait's or
    archetype's name; the persona in `model`) must be a plain name: a-z, 0-9, _ and -. A value
    shaped like a path is a 4xx, and nothing outside the store is read or written."""
    url = server.base_url
    chat = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    answers = [
        httpx.post(url + "/v1/chat/completions", json={**chat, "persona": bad}),
        httpx.post(url + "/v1/chat/completions", json={**chat, "traits": {bad: 0.5}}),
        httpx.post(url + "/v1/chat/completions", json={**chat, "blend": {bad: 0.5}}),
        httpx.post(url + "/v1/chat/completions", json={**chat, "model": f"persona:{bad}"}),
        httpx.post(url + "/api/chat", json={"message": "hi", "persona": bad, "max_tokens": 1}),
        httpx.post(url + "/api/personas", json={"name": bad, "description": "x"}),
        httpx.post(url + "/api/personas", json={"name": "ok-name", "archetype": bad}),
        httpx.post(url + "/api/traits", json={"word": "calm", "opposite": "angry", "name": bad}),
        httpx.post(url + "/api/vectors/equalize", json={"names": [bad, "alpha"]}),
    ]
    for collection in ("personas", "traits"):
        encoded = "".join(f"%{b:02X}" for b in bad.encode())     # every byte, dots included
        quoted = f"{url}/api/{collection}/{encoded}"
        answers += [httpx.get(quoted), httpx.delete(quoted),
                    httpx.put(str(quoted) + "/vector", content=b"x" * 16),
                    httpx.post(str(quoted) + "/load")]
    for r in answers:
        assert 400 <= r.status_code < 500, (r.request.method, r.request.url, r.status_code,
                                            r.text)
        assert r.status_code != 500
    assert not (server.vectors_dir.parent / "x.safetensors").exists()


# --- no unsafe loaders -------------------------------------------------------------------------
PICKLING = {"pickle", "cPickle", "_pickle", "dill", "joblib", "marshal", "shelve", "cloudpickle"}


def _kw(call: ast.Call, name: str):
    for k in call.keywords:
        if k.arg == name:
            return k.value
    return None


def _is_const(node, value) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def unsafe_loads(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, why) for every call that can run code from data: pickle-family loads,
    torch.load without weights_only=True, numpy.load with allow_pickle on, yaml.load without
    a safe loader, and trust_remote_code=True."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PICKLING:
            found.append((node.lineno, f"from {node.module} import ..."))
        if not isinstance(node, ast.Call):
            continue
        if _is_const(_kw(node, "trust_remote_code"), True):
            found.append((node.lineno, "trust_remote_code=True"))
        f = node.func
        if not (isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name)):
            continue
        mod, fn = f.value.id, f.attr
        if mod in PICKLING and fn in ("load", "loads", "Unpickler", "open"):
            found.append((node.lineno, f"{mod}.{fn}"))
        elif mod == "torch" and fn == "load" and not _is_const(_kw(node, "weights_only"), True):
            found.append((node.lineno, "torch.load without weights_only=True"))
        elif mod in ("np", "numpy") and fn == "load":
            allow = _kw(node, "allow_pickle")
            if allow is not None and not _is_const(allow, False):
                found.append((node.lineno, "numpy.load with allow_pickle"))
        elif mod == "yaml" and fn in ("unsafe_load", "full_load", "unsafe_load_all"):
            found.append((node.lineno, f"yaml.{fn}"))
        elif mod == "yaml" and fn in ("load", "load_all"):
            loader = _kw(node, "Loader") or (node.args[1] if len(node.args) > 1 else None)
            name = getattr(loader, "attr", getattr(loader, "id", ""))
            if name not in ("SafeLoader", "CSafeLoader"):
                found.append((node.lineno, f"yaml.{fn} without a safe Loader"))
    return found


def _repo_python_files() -> list[Path]:
    skip = {".venv", ".cache", ".git", "node_modules", "__pycache__"}
    return [p for p in PROJECT_ROOT.rglob("*.py")
            if not any(part in skip or part.startswith(".") for part in
                       p.relative_to(PROJECT_ROOT).parts)]


def test_the_scanner_finds_what_it_looks_for():
    bad = ("import pickle, torch, yaml, numpy as np\nfrom dill import loads\n"
           "pickle.loads(b)\ntorch.load(p)\ntorch.load(p, weights_only=False)\n"
           "np.load(p, allow_pickle=True)\nyaml.load(s)\nyaml.unsafe_load(s)\n"
           "AutoModel.from_pretrained(m, trust_remote_code=True)\n")
    assert [line for line, _ in unsafe_loads(ast.parse(bad))] == [2, 3, 4, 5, 6, 7, 8, 9]
    good = ("torch.load(p, weights_only=True)\nnp.load(p)\nnp.load(p, allow_pickle=False)\n"
            "yaml.safe_load(s)\nyaml.load(s, Loader=yaml.SafeLoader)\njson.loads(s)\n")
    assert unsafe_loads(ast.parse(good)) == []


def test_no_unsafe_loaders_in_the_repository():
    files = _repo_python_files()
    assert len(files) > 50 and any(p.name == "vector_format.py" for p in files)
    found = [f"{p.relative_to(PROJECT_ROOT)}:{line}: {why}"
             for p in files for line, why in unsafe_loads(ast.parse(p.read_text(), str(p)))]
    assert not found, "\n".join(found)
