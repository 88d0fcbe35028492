"""Unit tests with fakes for the parts of streaming that are hard to hit on purpose end to end:
the tail every SSE stream shares (server.routes_openai.ended) and the per-step yield that keeps
the event loop serving while the engine generates (server.state.yield_per_engine_step). The
real streams are tested end to end in test_srv_openai.py and test_srv_load.py."""
from __future__ import annotations

import asyncio
import json

import pytest

from server.errors import APIError
from server.generation import merge
from server.routes_openai import chunk_maker, ended
from server.state import yield_per_engine_step


async def collect(agen) -> list[str]:
    return [e async for e in agen]


def test_a_finished_stream_ends_with_done():
    async def events():
        yield "a"
        yield "b"
    assert asyncio.run(collect(ended(events()))) == ["a", "b", "[DONE]"]


def test_an_error_after_the_first_event_becomes_an_openai_error_event():
    async def events():
        yield "a"
        raise APIError(400, "steering vector 'x' has no layer 3", param="persona")
    out = asyncio.run(collect(ended(events())))
    assert out[0] == "a" and out[-1] == "[DONE]" and len(out) == 3
    err = json.loads(out[1])["error"]
    assert err["message"] == "steering vector 'x' has no layer 3"
    assert err["param"] == "persona" and err["type"] == "invalid_request_error"


def test_an_unexpected_error_is_a_server_error_without_a_traceback():
    async def events():
        yield "a"
        raise RuntimeError("engine died")
    err = json.loads(asyncio.run(collect(ended(events())))[1])["error"]
    assert err["type"] == "server_error" and "Traceback" not in err["message"]


def test_a_cancelled_stream_closes_its_source_and_sends_nothing_more():
    """A client that goes away cancels the response task: the cancellation must reach the
    source (whose finally aborts the engine request), and no [DONE] is sent."""
    closed, seen = [], []

    async def events():
        try:
            yield "a"
            await asyncio.sleep(3600)
            yield "never"
        finally:
            closed.append(True)

    async def main():
        first = asyncio.Event()

        async def consume():
            async for e in ended(events()):
                seen.append(e)
                first.set()
        task = asyncio.create_task(consume())
        await first.wait()          # the stream is under way: "a" went out
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert seen == ["a"] and closed == [True]


def test_a_closed_stream_closes_its_source_at_once():
    """sse-starlette may close the response generator instead of cancelling it; the source's
    clean-up (the engine abort) must run then, not whenever the inner generator is collected."""
    closed = []

    async def events():
        try:
            yield "a"
            yield "b"
        finally:
            closed.append(True)

    async def main():
        inner = events()                # held here, so garbage collection cannot close it
        outer = ended(inner)
        assert await outer.__anext__() == "a"
        await outer.aclose()
        assert closed == [True]         # before asyncio.run's own clean-up of generators
        return inner

    asyncio.run(main())


@pytest.mark.parametrize("n", [1, 3])
def test_closing_the_merged_outputs_closes_every_source_at_once(n):
    """merge() is what the stream tail closes; an `async for` left early does not close the
    generator it iterates, so merge must, or the engine request runs on until collected."""
    closed = []

    def source(i):
        async def gen():
            try:
                for k in range(100):
                    yield k
                    await asyncio.sleep(0)
            finally:
                closed.append(i)
        return gen()

    async def main():
        sources = [source(i) for i in range(n)]     # held here: no garbage collection
        merged = merge(sources)
        assert (await merged.__anext__())[1] == 0
        await merged.aclose()
        assert sorted(closed) == list(range(n))
        return sources

    asyncio.run(main())


def test_chunks_carry_a_null_usage_until_the_last_when_usage_is_asked_for():
    chunk = chunk_maker("chat.completion.chunk", "chatcmpl-1", 7, "m", include_usage=True)
    assert json.loads(chunk([{"index": 0}]))["usage"] is None
    assert json.loads(chunk([], usage={"total_tokens": 3}))["usage"] == {"total_tokens": 3}
    plain = chunk_maker("text_completion", "cmpl-1", 7, "m", include_usage=False)
    body = json.loads(plain([{"index": 0, "text": "x"}]))
    assert "usage" not in body and body["object"] == "text_completion" and body["created"] == 7


class _EngineCoreWithBacklog:
    """Like AsyncLLM's engine client when outputs are already queued: the await completes
    without ever giving the event loop to anything else."""
    async def get_output_async(self):
        return "outputs"


def _steps_before_other_task_ran(engine) -> int | None:
    async def main():
        ran_at: list[int] = []
        step = 0

        async def other():              # a disconnect check, a WebSocket stop, /api/status
            ran_at.append(step)

        task = asyncio.create_task(other())
        for step in range(100):         # AsyncLLM's output handler loop
            await engine.engine_core.get_output_async()
        await task
        return ran_at[0] if ran_at[0] < 99 else None
    return asyncio.run(main())


def test_without_the_yield_a_busy_output_loop_starves_everything_else():
    from types import SimpleNamespace
    assert _steps_before_other_task_ran(SimpleNamespace(engine_core=_EngineCoreWithBacklog())) is None


def test_the_server_yields_to_other_tasks_once_per_engine_step():
    from types import SimpleNamespace
    engine = SimpleNamespace(engine_core=_EngineCoreWithBacklog())
    yield_per_engine_step(engine)
    assert _steps_before_other_task_ran(engine) == 0
    yield_per_engine_step(SimpleNamespace())          # an engine without the hook: left alone
