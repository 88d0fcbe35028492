"""Unit tests of the chat REPL's command handling, with a fake client (no server)."""
from __future__ import annotations

import io

import pytest
from rich.console import Console

from clients.client import ChatDelta, PersonaSteerError, SteeringRequest
from clients.repl import ChatState, Repl


class FakeClient:
    def __init__(self):
        self.calls = []
        self.fail_with = None

    def list_vectors(self, kind):
        return [{"name": "pirate", "loaded": True}, {"name": "robot"}] if kind == "persona" \
            else [{"name": "formal"}]

    def load_vector(self, kind, name):
        self.calls.append(("load", kind, name))

    def status(self):
        return {"model": "m", "engine": "ready", "steering_scale": 1.0,
                "loaded": {"personas": ["pirate"], "traits": []}}

    def chat_stream(self, messages, steering=None, **kw):
        self.calls.append(("chat", [dict(m) for m in messages], {"steering": steering, **kw}))
        if self.fail_with:
            raise self.fail_with
        yield ChatDelta(reasoning="hmm")
        yield ChatDelta(content="Ahoy")
        yield ChatDelta(content=" there", finish_reason="stop")


@pytest.fixture()
def repl():
    out = io.StringIO()
    r = Repl(FakeClient(), ChatState(), Console(file=out, width=200, color_system=None), {})
    r.out = out
    return r


def said(r) -> str:
    return r.out.getvalue()


@pytest.mark.parametrize("line,message", [
    ("/bogus", "unknown command '/bogus'"),
    ("/strength 5", "strength must be between 0.0 and 2.0, got 5"),
    ("/strength abc", "strength must be a number, got 'abc'"),
    ("/strength nan", "strength must be finite"),
    ("/persona nobody", "unknown persona 'nobody' (available: pirate, robot)"),
    ("/persona", "usage: /persona NAME"),
    ("/blend pirate=0.5", "must look like name:weight"),
    ("/blend pirate:x", "weight 'x' is not a number"),
    ("/blend BAD!:0.5", "invalid name"),
    ("/trait nosuch:0.4", "unknown trait 'nosuch' (available: formal)"),
    ("/trait", "needs name:weight pairs"),
    ("/safety maybe", "usage: /safety on|off"),
    ("/tokens sideways", "usage: /tokens all|generated|prompt|last_turn"),
    ("/load ghost", "no persona or trait named 'ghost'"),
])
def test_bad_commands_give_one_error_line_and_keep_state(repl, line, message):
    before = repl.state.steering()
    repl.handle(line)
    lines = [l for l in said(repl).splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert repl.state.steering() == before and not repl.done


def test_steering_commands_change_state(repl):
    repl.handle("/persona pirate")
    repl.handle("/strength 0.7")
    repl.handle("/trait formal:-0.4")
    repl.handle("/safety on")
    assert repl.state.steering() == SteeringRequest(persona="pirate", strength=0.7,
                                                    traits={"formal": -0.4}, safety=True)
    assert repl.state.summary() == "pirate×0.7 +formal:-0.4 safety on"
    repl.handle("/blend pirate:0.5,robot:0.3")
    assert repl.state.persona is None and repl.state.blend == {"pirate": 0.5, "robot": 0.3}
    repl.handle("/trait formal:0")
    assert repl.state.traits == {}
    repl.handle("/none")
    assert repl.state.summary() == "no steering"


def test_tokens_command_sets_steer_tokens(repl):
    repl.handle("/persona pirate")
    repl.handle("/tokens last_turn")
    assert repl.state.steering() == SteeringRequest(persona="pirate", steer_tokens="last_turn")
    assert repl.state.summary() == "pirate tokens last_turn"
    repl.handle("hello")
    assert repl.client.calls[-1][2]["steering"].steer_tokens == "last_turn"


def test_message_streams_and_history_grows(repl):
    repl.handle("/persona pirate")
    repl.handle("hello")
    assert "model> [thinking] hmm\nAhoy there" in said(repl)
    kind, messages, kw = repl.client.calls[-1]
    assert messages == [{"role": "user", "content": "hello"}]
    assert kw["steering"].persona == "pirate"
    assert repl.state.messages[-1] == {"role": "assistant", "content": "Ahoy there"}
    repl.handle("/reset")
    assert repl.state.messages == []


def test_server_error_on_message_keeps_session(repl):
    repl.client.fail_with = PersonaSteerError("unknown trait 'x'", 404, param="traits")
    repl.handle("hello")
    assert "error: HTTP 404: unknown trait 'x' (param: traits)" in said(repl)
    assert repl.state.messages == [] and not repl.done


def test_load_status_list_quit(repl):
    repl.handle("/load formal")
    assert repl.client.calls[-1] == ("load", "trait", "formal")
    repl.handle("/status")
    repl.handle("/list")
    text = said(repl)
    assert "engine:         ready" in text and "personas: pirate (loaded), robot" in text
    repl.handle("/quit")
    assert repl.done


def test_status_shows_the_chats_steering_and_the_servers(repl):
    repl.gen.update(temperature=0.7, presence_penalty=0.5, seed=None)
    repl.handle("/status")
    assert "chat steering:  no steering" in said(repl)
    repl.client.status = lambda: {"model": "m", "engine": "ready", "steering_scale": 0.5,
                                  "default_strength": 1.0}
    repl.handle("/persona pirate")
    repl.handle("/trait formal:0.4")
    repl.handle("/safety on")
    repl.handle("/status")
    text = said(repl).rsplit("chat steering:", 1)[1]
    assert text.startswith("  pirate +formal:0.4 safety on (strength: the server's default 1)")
    assert "chat decoding:  temperature 0.7, presence_penalty 0.5" in text
    assert "steering scale: 0.5" in text and "engine:         ready" in text


def _decoding_args(**kw):
    import argparse
    base = dict(config=None, overrides=[], max_tokens=64, temperature=0.0, seed=None, model=None,
                thinking=None, presence_penalty=None, frequency_penalty=None)
    return argparse.Namespace(**{**base, **kw})


def test_decoding_defaults_to_the_config_penalties_and_zero_sends_none():
    """`generate` and `chat` share this: each penalty comes from config `clients` unless its flag
    says otherwise; 0 leaves the field out (the API's default)."""
    from clients.cli_shared import decoding_from_args
    from persona_steer.cli import CLIError
    gen = decoding_from_args(_decoding_args())
    assert gen["presence_penalty"] == 0.5 and "frequency_penalty" not in gen
    set_zero = _decoding_args(overrides=["clients.presence_penalty=0", "clients.frequency_penalty=0.2"])
    assert "presence_penalty" not in decoding_from_args(set_zero)
    assert decoding_from_args(set_zero)["frequency_penalty"] == 0.2
    assert decoding_from_args(_decoding_args(frequency_penalty=1.5))["frequency_penalty"] == 1.5
    assert "presence_penalty" not in decoding_from_args(_decoding_args(presence_penalty=0.0))
    with pytest.raises(CLIError, match="--frequency-penalty must be between -2 and 2"):
        decoding_from_args(_decoding_args(frequency_penalty=-2.5))
    with pytest.raises(CLIError, match="--presence-penalty must be between -2 and 2"):
        decoding_from_args(_decoding_args(presence_penalty=2.5))


def test_monitor_prints_one_summary_line_after_the_answer():
    class Monitored(FakeClient):
        def chat_stream(self, messages, steering=None, **kw):
            self.calls.append(("chat", [dict(m) for m in messages], steering))
            yield ChatDelta(content="Arr", monitor={"pirate": {"tokens": [1.5], "mean": 1.5,
                                                               "last": 1.5, "min": 1.5, "max": 1.5}})
            yield ChatDelta(content="!", finish_reason="stop", monitor={"pirate": {
                "tokens": [2.5], "mean": 2.0, "last": 2.5, "min": 1.5, "max": 2.5}})
    out = io.StringIO()
    r = Repl(Monitored(), ChatState(), Console(file=out, width=200, color_system=None), {})
    r.handle("hello")
    assert r.client.calls[-1][2].monitor is None and "monitor:" not in out.getvalue()
    r.handle("/monitor pirate")
    r.handle("hello again")
    assert r.client.calls[-1][2].monitor == ["pirate"]
    assert "Arr!\nmonitor: pirate mean +2.00 last +2.50 [+1.50..+2.50]" in out.getvalue()
    r.handle("/monitor off")
    assert r.state.monitor == []
