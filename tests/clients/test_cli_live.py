"""Every CLI command of clients/cli.py as a subprocess against the session's live server."""
from __future__ import annotations

import json
import socket

import pytest

from tests.clients.conftest import run_cli, vector_bytes


def names(entries):
    return [e["name"] for e in entries]


@pytest.fixture(scope="module")
def persona(client) -> str:
    ps = names(client.list_personas())
    assert ps, "the live server fixture should have at least one persona"
    return ps[0]


@pytest.fixture(scope="module")
def trait(client) -> str:
    ts = names(client.list_traits())
    assert ts, "the live server fixture should have at least one trait"
    return ts[0]


def one_error_line(proc) -> str:
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def test_status(live, client):
    proc = run_cli(live, "status")
    assert proc.returncode == 0, proc.stderr
    st = client.status()
    assert f"model:          {st['model']}" in proc.stdout
    assert "engine:         ready" in proc.stdout
    assert f"server:         {live.url}" in proc.stdout
    js = json.loads(run_cli(live, "status", "--json").stdout)
    assert js["model"] == st["model"]


def test_list_all_kinds_and_json(live, client, persona, trait):
    proc = run_cli(live, "list")
    assert proc.returncode == 0, proc.stderr
    rows = [l.split() for l in proc.stdout.splitlines()]
    assert ["persona", persona] == rows[[r[1] for r in rows].index(persona)][:2]
    assert any(r[:2] == ["trait", trait] for r in rows)
    only_traits = run_cli(live, "list", "--kind", "trait").stdout
    assert persona not in only_traits.split() and trait in only_traits.split()
    js = json.loads(run_cli(live, "list", "--json").stdout)
    assert {(e["kind"], e["name"]) for e in js} >= {("persona", persona), ("trait", trait)}


def test_unload_then_load(live, client, persona):
    proc = run_cli(live, "unload", persona)
    assert proc.returncode == 0 and f"unloaded persona '{persona}'" in proc.stdout, proc.stderr
    loaded = run_cli(live, "list", "--loaded", "--kind", "persona").stdout.split()
    assert persona not in loaded
    assert persona not in client.status()["loaded"]["personas"]
    proc = run_cli(live, "load", persona, "--kind", "persona")
    assert proc.returncode == 0 and f"loaded persona '{persona}'" in proc.stdout, proc.stderr
    assert persona in run_cli(live, "list", "--loaded").stdout.split()
    assert persona in client.status()["loaded"]["personas"]


def test_load_unknown_name(live, persona):
    err = one_error_line(run_cli(live, "load", "no_such_vector"))
    assert "no persona or trait named 'no_such_vector'" in err and persona in err
    err = one_error_line(run_cli(live, "load", "no_such_vector", "--kind", "trait"))
    assert "HTTP 404" in err and "unknown trait 'no_such_vector'" in err


def test_delete_needs_confirmation_then_deletes(live, client):
    client.upload_vector("trait", "cli_delete_me", vector_bytes(client, "trait", "cli_delete_me"))
    assert "cli_delete_me" in names(client.list_traits())
    err = one_error_line(run_cli(live, "delete", "cli_delete_me", input=""))
    assert "needs confirmation: pass --yes" in err
    assert "cli_delete_me" in names(client.list_traits())
    proc = run_cli(live, "delete", "cli_delete_me", "--yes")
    assert proc.returncode == 0 and "deleted trait 'cli_delete_me'" in proc.stdout, proc.stderr
    assert "cli_delete_me" not in names(client.list_traits())
    err = one_error_line(run_cli(live, "delete", "cli_delete_me", "--kind", "trait", "--yes"))
    assert "HTTP 404" in err


def test_clear_personas_then_restore(live, client):
    """Deletes every persona (after downloading them) and puts them back for the other tests."""
    before = client.list_personas()
    saved = {e["name"]: client.download_vector("persona", e["name"]) for e in before}
    unloaded = [e["name"] for e in before if not e.get("loaded")]
    try:
        err = one_error_line(run_cli(live, "clear-personas", input=""))
        assert "needs confirmation" in err
        assert names(client.list_personas()) == names(before)
        proc = run_cli(live, "clear-personas", "--yes")
        assert proc.returncode == 0, proc.stderr
        assert f"deleted {len(before)} personas" in proc.stdout
        assert client.list_personas() == []
        assert run_cli(live, "clear-personas", "--yes").stdout.strip() == "no personas to delete"
    finally:
        for name, data in saved.items():
            client.upload_vector("persona", name, data)
        for name in unloaded:
            client.unload_vector("persona", name)
    assert names(client.list_personas()) == names(before)


def test_generate_plain_stream_and_json(live, persona, trait):
    proc = run_cli(live, "generate", "Tell me a story", "--persona", persona, "--strength", "0.8",
                   "--trait", f"{trait}:0.3", "--max-tokens", "8", "--temperature", "0")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip(), "a generation prints some text"
    streamed = run_cli(live, "generate", "Tell me a story", "--persona", persona, "--strength",
                       "0.8", "--trait", f"{trait}:0.3", "--max-tokens", "8", "--temperature",
                       "0", "--stream")
    assert streamed.returncode == 0, streamed.stderr
    assert streamed.stdout == proc.stdout      # greedy: the same text streamed or not
    js = json.loads(run_cli(live, "generate", "Hi", "--blend", f"{persona}:0.5", "--trait",
                            f"{trait}:-0.2", "--safety", "off", "--max-tokens", "4",
                            "--json").stdout)
    assert js["steering"]["personas"] == {persona: 0.5}
    assert js["steering"]["traits"] == {trait: -0.2}
    assert js["choices"][0]["message"]["content"] is not None


def test_generate_steer_tokens_last_turn(live, persona):
    """--steer-tokens reaches the server: last_turn steers from the user message on, and the
    server echoes where that is (after the system prompt, so past its first tokens)."""
    def start(*system):
        js = json.loads(run_cli(live, "generate", "Hi", "--persona", persona, "--steer-tokens",
                                "last_turn", "--max-tokens", "2", "--json", *system).stdout)
        assert js["steering"]["steer_tokens"] == "last_turn"
        return js["steering"]["steer_start"]
    assert 0 < start() < start("--system", "You answer briefly and politely.")
    bad = run_cli(live, "generate", "Hi", "--steer-tokens", "sideways")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "argument --steer-tokens: invalid choice: 'sideways'" in bad.stderr


def test_generate_sends_the_clients_penalties(live):
    """Defaults from config `clients` (presence_penalty 0.5), overridable by flags or the env;
    they reach the engine: greedy text with a penalty of 2 differs from none."""
    def text(*extra, env=None):
        proc = run_cli(live, "generate", "Tell me a story", "--max-tokens", "48", "--temperature", "0",
                       *extra, env=env)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout
    default = text()
    assert text("--presence-penalty", "0.5") == default
    off = text("--presence-penalty", "0")
    assert text(env={"PERSONA_STEER_CLIENTS__PRESENCE_PENALTY": "0"}) == off
    assert text("--presence-penalty", "2") != off
    assert text("--presence-penalty", "0", "--frequency-penalty", "2") != off
    for flag in ("--presence-penalty", "--frequency-penalty"):
        err = one_error_line(run_cli(live, "generate", "Hi", flag, "3"))
        assert f"{flag} must be between -2 and 2" in err


@pytest.mark.parametrize("args,message", [
    (["--persona", "no_such_persona"], "unknown persona 'no_such_persona'"),
    (["--blend", "a=0.5"], "--blend: 'a=0.5' must look like name:weight"),
    (["--trait", "x:abc"], "--trait: weight 'abc' is not a number"),
    (["--persona", "{persona}", "--strength", "1e9"], "beyond the allowed bound"),
])
def test_generate_bad_input(live, persona, args, message):
    args = [a.replace("{persona}", persona) for a in args]
    err = one_error_line(run_cli(live, "generate", "Hi", "--max-tokens", "4", *args))
    assert message in err


def test_no_server_reachable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    from tests.clients.conftest import Live
    dead = Live(f"http://127.0.0.1:{port}")
    for cmd in (["status"], ["list"], ["load", "x"], ["unload", "x"], ["delete", "x", "--yes"],
                ["clear-personas", "--yes"], ["generate", "hi"], ["chat"]):
        err = one_error_line(run_cli(dead, *cmd, input="", timeout=60))
        assert f"no server reachable at {dead.url}" in err, (cmd, err)


def test_url_from_config_when_no_flag(live, tmp_path):
    """Without --url the CLI finds the server through config (server.url)."""
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"server:\n  url: {live.url}\n  api_key: {live.api_key or 'null'}\n")
    proc = run_cli(live, "--config", str(cfg), "status", url=False)
    assert proc.returncode == 0 and f"server:         {live.url}" in proc.stdout, proc.stderr


def test_chat_with_piped_stdin(live, persona):
    script = f"/persona {persona}\n/strength 9\nHello there\n/bogus\n/status\n/quit\n"
    proc = run_cli(live, "chat", "--max-tokens", "6", "--temperature", "0", "--no-history",
                   input=script)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"steering: {persona}" in out
    assert "error: strength must be between 0.0 and 2.0, got 9" in out
    assert "error: unknown command '/bogus' (type /help)" in out
    assert "engine:         ready" in out and out.rstrip().endswith("bye")
    reply = out.split("you> Hello there\n", 1)[1].split("you> /bogus", 1)[0]
    assert reply.startswith("model> ") and reply[len("model> "):].strip(), \
        "the model's streamed reply is printed"
