"""OpenAI-compatible endpoints: /v1/models, /v1/chat/completions, /v1/completions.

Model ids: the base model id (settings.model.name) and `persona:<name>` for every loaded
persona. `model: "persona:pirate"` is the same as `persona: "pirate"` at the default strength.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any, AsyncGenerator, AsyncIterator, Optional

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sse_starlette.sse import EventSourceResponse

from server.deps import get_state, ready_state
from server.errors import APIError, to_api_error
from server.generation import (chat_logprobs, chat_prompt, completion_logprobs,
                               completion_steer_tokens, engine_prompt, finish, generate,
                               max_tokens_for, merge, new_id, now, place_last_turn, primed,
                               resolve_steering, sampling_params, text_prompt, usage)
from server.monitoring import track_for
from server.openapi import SSE, WITH_BODY, errors
from server.schemas import ChatCompletionRequest, CompletionRequest
from server.state import PERSONA_MODEL_PREFIX, model_ids
from server.think import THINK_START, ThinkSplitter

router = APIRouter()


@router.get("/v1/models")
async def list_models(request: Request):
    state = get_state(request)
    created = int(state.started_at)
    data = [{"id": mid, "object": "model", "created": created, "owned_by": "persona-steer",
             "root": state.model_id,
             **({"persona": mid[len(PERSONA_MODEL_PREFIX):]} if mid != state.model_id else {})}
            for mid in model_ids(state)]
    return {"object": "list", "data": data}


@router.get("/v1/models/{model_id:path}", responses=errors(404))
async def get_model(model_id: str, request: Request):
    state = get_state(request)
    if model_id not in model_ids(state):
        raise APIError(404, f"unknown model '{model_id}' (available: {', '.join(model_ids(state))})",
                       param="model", code="model_not_found")
    return {"id": model_id, "object": "model", "created": int(state.started_at),
            "owned_by": "persona-steer", "root": state.model_id}


# --- helpers --------------------------------------------------------------------------------
async def run_to_end(request: Request, agen: AsyncIterator[tuple[int, Any]]) -> dict[int, Any]:
    """Drain the merged outputs (FINAL_ONLY: one per prompt); abort if the client goes away."""
    results: dict[int, Any] = {}

    async def consume():
        async for i, out in agen:
            results[i] = out

    task = asyncio.create_task(consume())
    while True:
        done, _ = await asyncio.wait({task}, timeout=0.25)
        if done:
            task.result()
            return results
        if await request.is_disconnected():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            raise APIError(400, "client disconnected", code="client_disconnected")


def sse(events: AsyncIterator[str]) -> EventSourceResponse:
    # OpenAI's framing: "data: <json>\n\n", no keep-alive comments in practice.
    return EventSourceResponse(events, sep="\n", ping=3600,
                               headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _stream_error(err: BaseException) -> str:
    return dumps(to_api_error(err).body())


def chunk_maker(obj: str, rid: str, created: int, model: str, include_usage: bool):
    """Builds one streamed chunk (chat or text completion); with include_usage every chunk has
    a usage field, null until the last one (OpenAI's framing)."""
    def chunk(choices: list, **extra) -> str:
        body = {"id": rid, "object": obj, "created": created, "model": model,
                "choices": choices, **extra}
        if include_usage:
            body.setdefault("usage", None)
        return dumps(body)
    return chunk


async def ended(events: AsyncGenerator[str, None]) -> AsyncIterator[str]:
    """The stream's tail: an error after the first byte becomes an OpenAI-style error event
    (the status is already 200), and every stream ends with [DONE]. A client that goes away
    cancels or closes this generator; the inner one is closed at once (not when it is garbage
    collected), so its source aborts the engine request."""
    try:
        async for event in events:
            yield event
    except (asyncio.CancelledError, GeneratorExit):
        raise
    except Exception as err:
        yield _stream_error(err)
    finally:
        await events.aclose()
    yield "[DONE]"


# --- chat -----------------------------------------------------------------------------------
GENERATE = {200: {"content": SSE}, **WITH_BODY, **errors(404, 500, 503)}


@router.post("/v1/chat/completions", responses=GENERATE)
async def chat_completions(req: ChatCompletionRequest, request: Request):
    state = ready_state(request)
    steering = resolve_steering(state, req, req.model)
    state.metrics.requests.labels("chat", str(steering.steered).lower()).inc()
    ids, text = chat_prompt(state, req.messages, req.chat_template_kwargs)
    steering = place_last_turn(state, steering, req.messages, req.chat_template_kwargs, ids)
    max_tokens = max_tokens_for(state, len(ids), req.max_completion_tokens or req.max_tokens)
    top = req.top_logprobs or 0
    params = sampling_params(req, max_tokens, steering, stream=req.stream,
                             logprobs=top if req.logprobs else None,
                             skip_special_tokens=not state.think.tags_special,
                             defaults=state.sampling_defaults)
    start_reasoning = text.rstrip("\n").endswith(THINK_START)
    rid = new_id("chatcmpl")
    model = req.model or state.model_id
    created = now()
    agen = merge([generate(state, engine_prompt(ids), params, rid,
                           steering.steered)])

    if not req.stream:
        results = await run_to_end(request, agen)
        final = results[0]
        choices, n_out = [], 0
        for o in sorted(final.outputs, key=lambda o: o.index):
            sp = ThinkSplitter(state.think, start_reasoning)
            reasoning, content = sp.feed(o.text)
            n_out += len(o.token_ids)
            lp = (chat_logprobs(state, o.token_ids, o.logprobs, top) if req.logprobs else None)
            choices.append({
                "index": o.index,
                "message": {"role": "assistant", "content": content,
                            "reasoning_content": reasoning if sp.seen_reasoning else None},
                "logprobs": {"content": lp} if lp is not None else None,
                "finish_reason": finish(o.finish_reason)})
            if (track := track_for(steering, req.n)) is not None:
                track.take(final, len(o.token_ids))
                choices[-1].update(track.fields())
        return {"id": rid, "object": "chat.completion", "created": created, "model": model,
                "choices": choices, "usage": usage(len(ids), n_out),
                "steering": steering.applied}

    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    source = await primed(agen)
    chunk = chunk_maker("chat.completion.chunk", rid, created, model, include_usage)

    async def events():
        splitters: dict[int, ThinkSplitter] = {}
        track = track_for(steering, req.n)     # n == 1 when monitoring
        pending: list = []                      # rows of tokens no chunk has carried yet
        n_out = 0
        async for _, out in source:
            for o in out.outputs:
                i = o.index
                if i not in splitters:
                    splitters[i] = ThinkSplitter(state.think, start_reasoning)
                    first = {"index": i, "delta": {"role": "assistant", "content": ""},
                             "logprobs": None, "finish_reason": None}
                    yield chunk([first], **({"steering": steering.applied} if i == 0 else {}))
                n_out += len(o.token_ids)
                if track is not None:
                    pending += track.take(out, len(o.token_ids))

                def readings() -> dict:
                    if track is None:
                        return {}
                    body = track.fields(list(pending))
                    pending.clear()
                    return body
                reasoning, content = splitters[i].feed(o.text)
                delta = {}
                if reasoning:
                    delta["reasoning_content"] = reasoning
                if content:
                    delta["content"] = content
                lp = (chat_logprobs(state, o.token_ids, o.logprobs, top)
                      if req.logprobs and o.token_ids else None)
                if delta or lp:
                    yield chunk([{"index": i, "delta": delta,
                                  "logprobs": {"content": lp} if lp else None,
                                  "finish_reason": None, **readings()}])
                if o.finish_reason is not None:
                    yield chunk([{"index": i, "delta": {}, "logprobs": None,
                                  "finish_reason": finish(o.finish_reason), **readings()}])
        if include_usage:
            yield chunk([], usage=usage(len(ids), n_out))

    return sse(ended(events()))


# --- completions ----------------------------------------------------------------------------
@router.post("/v1/completions", responses=GENERATE)
async def completions(req: CompletionRequest, request: Request):
    state = ready_state(request)
    if req.echo:
        raise APIError(400, "echo is not supported", param="echo")
    req = completion_steer_tokens(state, req)
    steering = resolve_steering(state, req, req.model)
    state.metrics.requests.labels("completions", str(steering.steered).lower()).inc()
    prompts = req.prompt if isinstance(req.prompt, list) and isinstance(req.prompt[0], str) \
        else [req.prompt]
    id_lists = [text_prompt(state, p) for p in prompts]
    max_tokens = max(1, min(max_tokens_for(state, len(ids), req.max_tokens or 16)
                            for ids in id_lists))
    top = req.logprobs or 0
    params = sampling_params(req, max_tokens, steering, stream=req.stream,
                             logprobs=req.logprobs,
                             skip_special_tokens=req.skip_special_tokens is not False,
                             defaults=state.sampling_defaults)
    rid = new_id("cmpl")
    model = req.model or state.model_id
    created = now()
    agen = merge([generate(state, engine_prompt(ids), params,
                           f"{rid}-{k}" if len(id_lists) > 1 else rid, steering.steered)
                  for k, ids in enumerate(id_lists)])
    n_prompt = sum(len(ids) for ids in id_lists)

    if not req.stream:
        results = await run_to_end(request, agen)
        choices, n_out = [], 0
        for k in range(len(id_lists)):
            for o in sorted(results[k].outputs, key=lambda o: o.index):
                n_out += len(o.token_ids)
                choice = {
                    "index": k * req.n + o.index, "text": o.text,
                    "logprobs": (completion_logprobs(state, o.token_ids, o.logprobs, top)
                                 if req.logprobs is not None else None),
                    "finish_reason": finish(o.finish_reason)}
                if req.return_token_ids:
                    choice["token_ids"] = list(o.token_ids)
                    choice["prompt_token_ids"] = list(id_lists[k])
                if (track := track_for(steering, req.n)) is not None:
                    track.take(results[k], len(o.token_ids))
                    choice.update(track.fields())
                choices.append(choice)
        return {"id": rid, "object": "text_completion", "created": created, "model": model,
                "choices": choices, "usage": usage(n_prompt, n_out),
                "steering": steering.applied}

    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    source = await primed(agen)
    chunk = chunk_maker("text_completion", rid, created, model, include_usage)

    async def events():
        n_out, first, offsets = 0, True, {}
        tracks = {k: track_for(steering, req.n) for k in range(len(id_lists))}
        async for k, out in source:
            for o in out.outputs:
                idx = k * req.n + o.index
                n_out += len(o.token_ids)
                lp = None
                if req.logprobs is not None and o.token_ids:
                    lp = completion_logprobs(state, o.token_ids, o.logprobs, top,
                                               offsets.get(idx, 0))
                offsets[idx] = offsets.get(idx, 0) + len(o.text)
                extra = {"steering": steering.applied} if first else {}
                first = False
                choice = {"index": idx, "text": o.text, "logprobs": lp,
                          "finish_reason": finish(o.finish_reason)}
                if req.return_token_ids:
                    choice["token_ids"] = list(o.token_ids)
                if tracks[k] is not None:
                    choice.update(tracks[k].fields(tracks[k].take(out, len(o.token_ids))))
                yield chunk([choice], **extra)
        if include_usage:
            yield chunk([], usage=usage(n_prompt, n_out))

    return sse(ended(events()))
