"""Unit tests of the lifecycle's parts (no engine): what /health answers in each state, the
one-line start errors, and the drain: it waits for requests in flight, cuts those past the
grace bound, then asks the server to exit. The real thing is tested in test_srv_lifecycle.py."""
from __future__ import annotations

import asyncio

import pytest

from persona_steer.config import validate_data
from server import lifecycle
from server.start_errors import explain
from server.state import ServerState

VLLM_TOO_LONG = (
    "1 validation error for ModelConfig\n  Value error, User-specified max_model_len (8192) is "
    "greater than the derived max_model_len (max_position_embeddings=4096.0 or "
    "model_max_length=None in model's config.json). To allow overriding this maximum, set the "
    "env var VLLM_ALLOW_LONG_MAX_MODEL_LEN=1. [type=value_error, input_value=ArgsKwargs(())]")


@pytest.fixture
def state(tmp_path):
    settings = validate_data({"paths": {"vectors": str(tmp_path / "v")},
                              "server": {"shutdown_grace_s": 0.3}}, base_dir=tmp_path)
    return ServerState(settings)


@pytest.mark.parametrize("engine,stopping,status,code", [
    ("starting", None, "starting", "engine_not_ready"),
    ("failed", None, "failed", "engine_failed"),
    ("dead", "engine dead", "dead", "engine_dead"),
    ("ready", "SIGTERM", "stopping", "server_stopping"),
])
def test_health_is_503_with_state_and_reason_unless_ready(state, engine, stopping, status, code):
    state.engine_state, state.stopping, state.engine_error = engine, stopping, "why it is so"
    http, body = lifecycle.health(state)
    assert http == 503 and body["status"] == status and body["engine"] == engine
    assert body["error"]["code"] == code and body["error"]["type"] == "service_unavailable"
    if engine in ("failed", "dead"):
        assert "why it is so" in body["error"]["message"]
    assert not lifecycle.accepting(state) or engine == "starting"
    state.engine_state, state.stopping = "ready", None
    assert lifecycle.health(state) == (200, {"status": "ok", "engine": "ready"})
    assert lifecycle.accepting(state)


def test_start_errors_name_the_key(state):
    line = explain(ValueError(VLLM_TOO_LONG), state.settings)
    assert line.startswith("model.max_model_len=8192 is longer than the model's context (4096")
    assert "\n" not in line
    core = explain(RuntimeError("Engine core initialization failed. See root cause above."),
                   state.settings)
    assert "log above" in core and "model.name" in core
    other = explain(RuntimeError("something new\nwith detail"), state.settings)
    assert other.startswith("RuntimeError: something new (") and "model.name" in other
    assert "\n" not in other


def test_drain_waits_then_cuts_then_exits(state):
    aborted, exited = [], []

    class Engine:
        async def abort(self, ids):
            aborted.extend(ids)
            state.active_requests.difference_update(ids)    # as generate() does on its end
            state.in_flight -= len(ids)

    async def scenario():
        state.engine, state.stop_server = Engine(), lambda: exited.append(state.exit_code)
        state.active_requests.update({"quick", "slow"})
        state.in_flight = 2
        lifecycle.begin_stop(state, reason="SIGTERM", exit_code=0)
        assert state.stopping == "SIGTERM" and not lifecycle.accepting(state)
        await asyncio.sleep(0)
        state.active_requests.discard("quick")           # finishes within the grace period
        state.in_flight -= 1
        lifecycle.begin_stop(state, reason="engine dead", exit_code=1, message="dead")
        await state.stop_task

    asyncio.run(scenario())
    assert aborted == ["slow"] and state.cut_requests == {"slow"}
    assert exited == [1] and state.exit_message == "dead"    # the worse exit code wins
