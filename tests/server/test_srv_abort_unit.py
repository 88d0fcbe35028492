"""Unit tests with a fake engine for how server.generation.generate ends a request: which ends
count as aborted (persona_steer_aborted_total), and when the engine request is aborted. The
real disconnects are tested end to end in test_srv_load.py."""
from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from server.errors import APIError
from server.generation import generate
from server.state import Metrics


def output(n_tokens: int, finished: bool, reason=None):
    return SimpleNamespace(finished=finished, outputs=[
        SimpleNamespace(token_ids=[1] * n_tokens, finish_reason=reason)])


class FakeEngine:
    """Yields the given outputs (an exception in the list is raised there), then stops."""

    def __init__(self, outputs):
        self.outputs, self.aborted, self.closed = outputs, [], False

    async def generate(self, prompt, params, request_id):
        try:
            for out in self.outputs:
                await asyncio.sleep(0)
                if isinstance(out, BaseException):
                    raise out
                yield out
        finally:
            self.closed = True

    async def abort(self, request_id):
        self.aborted.append(request_id)


def fake_state(engine, cut=()) -> SimpleNamespace:
    return SimpleNamespace(engine=engine, engine_state="ready", metrics=Metrics(), in_flight=0,
                           active_requests=set(), cut_requests=set(cut),
                           settings=SimpleNamespace(server=SimpleNamespace(shutdown_grace_s=7)))


def run(outputs, *, take=None, cut=()):
    """Consume generate() over a fake engine (only `take` items, then close, if given);
    returns (aborted counter, engine aborts, in_flight after, items seen, error raised)."""
    state = fake_state(FakeEngine(outputs), cut)
    seen, error = [], None

    async def main():
        nonlocal error
        agen = generate(state, {"prompt_token_ids": [1, 2]}, SimpleNamespace(n=1), "rid", True)
        try:
            async for out in agen:
                seen.append(out)
                if take is not None and len(seen) >= take:
                    break
        except APIError as err:
            error = err
        finally:
            await agen.aclose()
    asyncio.run(main())
    counter = state.metrics.registry.get_sample_value("persona_steer_aborted_total")
    return counter, state.engine.aborted, state.in_flight, seen, error


def test_a_finished_request_is_not_aborted():
    counter, aborts, in_flight, seen, error = run([output(2, False), output(1, True, "length")])
    assert (counter, aborts, in_flight, len(seen), error) == (0, [], 0, 2, None)


def test_a_consumer_that_stops_early_aborts_the_request_and_counts_it():
    counter, aborts, in_flight, seen, _ = run([output(1, False)] * 5, take=2)
    assert (counter, aborts, in_flight, len(seen)) == (1, ["rid"], 0, 2)


def test_the_engines_generator_is_closed_at_once_not_when_collected():
    engines = []
    state = fake_state(FakeEngine([output(1, False)] * 5))

    async def main():
        agen = generate(state, {"prompt_token_ids": [1]}, SimpleNamespace(n=1), "rid", False)
        await agen.__anext__()
        await agen.aclose()
        engines.append(state.engine.closed)
    asyncio.run(main())
    assert engines == [True]


def test_an_engine_stream_that_stops_before_finishing_counts_as_aborted():
    # vLLM's generator ends quietly when its request was aborted by another path
    counter, aborts, in_flight, seen, _ = run([output(1, False), output(1, False)])
    assert (counter, aborts, in_flight, len(seen)) == (1, ["rid"], 0, 2)


def test_a_final_abort_output_counts_as_aborted():
    # what vLLM's output processor puts in the queue when the request is aborted elsewhere
    counter, aborts, _, _, _ = run([output(1, False), output(0, True, "abort")])
    assert counter == 1 and aborts == ["rid"]


@pytest.mark.parametrize("err,status", [(ValueError("bad"), 400), (RuntimeError("boom"), 500)])
def test_an_engine_error_is_an_error_not_an_abort(err, status):
    counter, aborts, in_flight, _, error = run([output(1, False), err])
    assert error is not None and error.status == status
    assert counter == 0 and in_flight == 0
    assert aborts == ["rid"]        # the engine request is still cleaned up


def test_a_request_cut_at_the_grace_bound_ends_with_an_error():
    # server.lifecycle marks it cut and aborts it; vLLM then ends it with an "abort" output
    counter, aborts, in_flight, seen, error = run([output(0, True, "abort")], cut=["rid"])
    assert error is not None and error.status == 503 and error.code == "server_shutting_down"
    assert "7 s" in error.message and "server.shutdown_grace_s" in error.message
    assert (counter, in_flight, seen) == (0, 0, [])     # an error, not a client's abort
