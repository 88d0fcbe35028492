"""`persona-steer chat` in a pseudo-terminal (pexpect): prompt_toolkit input with history,
slash commands, bad input, and a streamed reply from the live server."""
from __future__ import annotations

import re
import signal
import time

import pexpect
import pytest

from tests.clients.conftest import CLI, cli_env
from persona_steer.config import PROJECT_ROOT

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


@pytest.fixture()
def chat(live, tmp_path):
    env = cli_env({"TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1"})
    cfg = tmp_path / "config.yaml"                     # history goes to this config's cache
    cfg.write_text(f"paths:\n  cache: {tmp_path / 'cache'}\n")
    child = pexpect.spawn(str(CLI), ["--config", str(cfg), "chat", "--url", live.url,
                                     "--max-tokens", "6", "--temperature", "0"],
                          env=env, cwd=str(PROJECT_ROOT), encoding="utf-8", timeout=240,
                          dimensions=(40, 200))
    child.logfile_read = open(tmp_path / "transcript.txt", "w")
    yield child
    if child.isalive():
        child.terminate(force=True)
    child.logfile_read.close()


# prompt_toolkit turns bracketed paste off when a line is accepted and on again at the next
# prompt, so the command's own output lies between these two markers.
OUTPUT_START, PROMPT_AGAIN = "\x1b[?2004l", "\x1b[?2004h"


def run(child, keys: str) -> str:
    """Type keys (ending in Enter), return what the command printed before the next prompt."""
    child.send(keys)
    child.expect_exact(OUTPUT_START)
    child.expect_exact(PROMPT_AGAIN)
    out = ANSI.sub("", child.before)
    child.expect_exact("you>")
    return out


def visible(line: str) -> str:
    """What a terminal shows for a line: the last text written after a carriage return."""
    parts = [p for p in line.split("\r") if p.strip()]
    return parts[-1] if parts else ""


def lines(out: str) -> list[str]:
    return [visible(l) for l in out.split("\n") if visible(l)]


def test_chat_repl_in_a_terminal(chat, tmp_path):
    chat.expect_exact("connected to")
    chat.expect_exact("you>")
    # bad commands and values: exactly one error line each, and the session goes on
    for line, message in [
            ("/strength 5", "error: strength must be between 0.0 and 2.0, got 5"),
            ("/strength much", "error: strength must be a number, got 'much'"),
            ("/persona nobody", "error: unknown persona 'nobody' (available: alpha, beta, gamma"),
            ("/frobnicate", "error: unknown command '/frobnicate' (type /help)"),
            ("/blend alpha=1", "error: /blend: 'alpha=1' must look like name:weight"),
            ("/trait calm", "error: /trait: 'calm' must look like name:weight"),
            ("/safety maybe", "error: usage: /safety on|off")]:
        out = lines(run(chat, line + "\r"))
        assert len(out) == 1 and out[0].startswith(message), (line, out)
    # steering commands; the prompt shows the current setting
    assert lines(run(chat, "/persona alpha\r")) == ["steering: alpha"]
    assert lines(run(chat, "/strength 0.5\r")) == ["steering: alpha×0.5"]
    assert lines(run(chat, "/trait calm:0.4\r")) == ["steering: alpha×0.5 +calm:0.4"]
    assert lines(run(chat, "/blend alpha:0.5,beta:0.3\r")) == [
        "steering: alpha:0.5 beta:0.3 +calm:0.4"]
    assert "[alpha:0.5 beta:0.3 +calm:0.4] you>" in ANSI.sub("", chat.before + chat.after)
    # a message streams a reply from the server
    reply = run(chat, "Hello there\r")
    assert reply.lstrip().startswith("model> ") and "error" not in reply, reply
    assert reply.split("model> ", 1)[1].strip(), "some text was streamed"
    # a server-side rejection of a message is one line, and the session goes on
    run(chat, "/trait calm:50\r")
    out = lines(run(chat, "Hi again\r"))
    assert len(out) == 1 and out[0].startswith("error: HTTP 400:") and \
        "beyond the allowed bound" in out[0], out
    assert lines(run(chat, "/none\r")) == ["steering: none"]
    listed = run(chat, "/list\r")
    assert "personas: alpha (loaded), beta (loaded), gamma (loaded)" in listed
    assert "traits: calm (loaded)" in listed
    assert lines(run(chat, "/load beta\r")) == ["loaded persona 'beta'"]
    status = run(chat, "/status\r")
    assert "engine:         ready" in status
    # history and editing: Up arrow brings back /status; Enter runs it again
    assert "engine:         ready" in run(chat, "\x1b[A\r")
    # editing: type, erase with backspace, retype
    assert lines(run(chat, "/persona gammx\x7fa\r")) == ["steering: gamma"]
    assert "/quit               leave (also Ctrl-D)" in run(chat, "/help\r")
    chat.send("/quit\r")
    chat.expect_exact("bye")
    chat.expect(pexpect.EOF)
    chat.close()
    assert chat.exitstatus == 0
    history = (tmp_path / "cache" / "chat_history").read_text()
    assert "/persona alpha" in history and "Hello there" in history


def test_chat_ctrl_d_leaves(chat):
    chat.expect_exact("you>")
    chat.sendeof()
    chat.expect_exact("bye")
    chat.expect(pexpect.EOF)
    chat.close()
    assert chat.exitstatus == 0


def test_chat_ctrl_c_stops_a_reply(live, tmp_path):
    env = cli_env({"TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1"})
    child = pexpect.spawn(str(CLI), ["chat", "--url", live.url, "--no-history",
                                     "--max-tokens", "1900", "--temperature", "0"],
                          env=env, cwd=str(PROJECT_ROOT), encoding="utf-8", timeout=240,
                          dimensions=(40, 200))
    try:
        child.expect_exact("you>")
        child.send("Write a very long story\r")
        child.expect_exact("model> ")       # the request is under way (a long greedy reply)
        child.kill(signal.SIGINT)           # what Ctrl-C sends, whatever the terminal mode
        # On an idle machine the tiny model can finish the whole reply before the signal lands;
        # then there is nothing to stop and the prompt simply comes back (the abort itself is
        # covered by the server's disconnect tests and the web page's stop test).
        if child.expect_exact(["(stopped)", "you>"]) == 0:
            child.expect_exact(PROMPT_AGAIN)
            child.expect_exact("you>")
        assert "engine:         ready" in run(child, "/status\r")   # the session goes on
        # the server stopped generating (the client closed the stream)
        from clients.client import PersonaSteerClient
        with PersonaSteerClient(live.url, api_key=live.api_key) as c:
            for _ in range(120):
                if c.status()["running_requests"] == 0:
                    break
                time.sleep(0.5)
            assert c.status()["running_requests"] == 0
        child.send("/quit\r")
        child.expect(pexpect.EOF)
    finally:
        if child.isalive():
            child.terminate(force=True)


def test_delete_asks_in_a_terminal(live, client):
    from tests.clients.conftest import vector_bytes
    client.upload_vector("trait", "pty_delete", vector_bytes(client, "trait", "pty_delete"))

    def spawn():
        return pexpect.spawn(str(CLI), ["delete", "pty_delete", "--url", live.url],
                             env=cli_env(), cwd=str(PROJECT_ROOT), encoding="utf-8",
                             timeout=120)
    child = spawn()
    child.expect_exact("delete trait 'pty_delete'? [y/N]")
    child.sendline("n")
    child.expect_exact("error: cancelled")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 2
    assert "pty_delete" in [t["name"] for t in client.list_traits()]
    child = spawn()
    child.expect_exact("[y/N]")
    child.sendline("y")
    child.expect_exact("deleted trait 'pty_delete'")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert "pty_delete" not in [t["name"] for t in client.list_traits()]
