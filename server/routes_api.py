"""The original system's REST API plus operations endpoints.

/health /metrics /api/status, personas and traits CRUD (+ load/unload, vector upload and
download), /api/vectors/similarity, /api/vectors/equalize, /api/chat, /api/steering-scale,
WS /ws/chat.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any, AsyncIterator, Literal

import torch
from fastapi import APIRouter, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from pydantic import ValidationError

from persona_steer.store import VectorNotFound
from persona_steer.store import recommended as store_recommended
from persona_steer.toy_demo import recommended
from persona_steer.vector_format import SteeringVector, VectorFormatError, validate_name

from server import lifecycle
from server.deps import get_state, ready_state
from server.errors import APIError, error_body, to_api_error
from server.monitoring import track_for
from server.generation import (chat_prompt, engine_prompt, finish, generate, max_tokens_for, new_id,
                               place_last_turn, primed, resolve_steering, sampling_params, usage)
from server.openapi import BINARY, WITH_BODY, errors
from server.schemas import EqualizeRequest, NamePath, ScaleRequest, SimpleChatRequest
from server.security import key_matches
from server.state import ServerState
from server.think import THINK_START, ThinkSplitter

log = logging.getLogger("persona_steer.server")

router = APIRouter()          # needs the API key (when set)
public_router = APIRouter()   # no API key: /health and the chat page's socket
KIND_OF = {"personas": "persona", "traits": "trait"}


# --- health / metrics / status ---------------------------------------------------------------
@public_router.get("/health", responses=errors(503))
async def health(request: Request):
    """200 only when the engine is ready and the server accepts requests; otherwise 503 with
    the state (`status`: starting, failed, dead, stopping) and why (`error.message`)."""
    status, body = lifecycle.health(get_state(request))
    return JSONResponse(body, status_code=status)


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(request: Request):
    state = get_state(request)
    body = generate_latest(state.metrics.registry) + generate_latest(REGISTRY)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def engine_counts(state: ServerState) -> dict[str, Any]:
    eng = state.engine
    unfinished = eng.get_num_unfinished_requests() if eng is not None else 0
    return {"running_requests": unfinished, "in_flight": state.in_flight}


@router.get("/api/status")
async def status(request: Request):
    state = get_state(request)
    shape = state.shape
    state.store.list()          # refreshes store_errors: files dropped in or fixed by hand
    return {
        "model": state.model_id,
        "model_path": state.model_path,
        "engine": state.engine_state,
        "engine_error": state.engine_error,
        "hidden_size": shape.hidden_size if shape else None,
        "num_layers": shape.num_layers if shape else None,
        "steerable_layers": list(shape.steerable_layers) if shape and shape.steerable_layers else None,
        "max_model_len": state.max_model_len,
        "steering_scale": state.scale,
        "default_strength": state.settings.steering.default_strength,
        "max_weight": state.settings.steering.max_weight,
        "safety_default": state.settings.steering.safety.default,
        "axis": state.store.exists("axis", "assistant_axis"),
        "loaded": {"personas": state.loaded("persona"), "traits": state.loaded("trait")},
        "available": {"personas": state.store.names("persona"),
                      "traits": state.store.names("trait")},
        "store_errors": dict(state.store.errors),
        **engine_counts(state),
        "jobs": state.jobs.summary() if state.jobs else {},
        "auth": state.api_key is not None,
        # what the bundled web page sends unless the user changes it (config `clients`)
        "client_defaults": state.settings.clients.model_dump(),
        # what a request that leaves a sampling field out gets (model.generation_config)
        "sampling_defaults": state.sampling_defaults,
    }


# --- vectors ---------------------------------------------------------------------------------
def _kind(collection: str) -> str:
    return KIND_OF[collection]


def _name(name: str) -> str:
    try:
        return validate_name(name)
    except VectorFormatError as err:
        raise APIError(400, str(err), param="name", code="invalid_name") from None


def _entry(state: ServerState, e) -> dict:
    d = e.to_dict()
    d["loaded"] = state.is_loaded(e.kind, e.name)
    d["recommended"] = _recommended(state, e.kind, e.name, e.content_hash, e.recommended)
    return d


def _recommended(state: ServerState, kind: str, name: str, content_hash: str,
                 tuned: dict | None) -> dict | None:
    """What a client should offer first, or None: the vector's tuned {layers, strength}
    (persona-steer tune; the server applies the strength itself when a request gives none),
    joined with the toy demo's measured {strength, temperature} for its shipped personas."""
    demo = recommended(state.settings.model.name, kind, name, content_hash)
    return {**(tuned or {}), **(demo or {})} or None


def _list(state: ServerState, kind: str) -> dict:
    entries = state.store.list(kind)
    errors = {k: v for k, v in state.store.errors.items() if k.startswith(kind + "/")}
    return {f"{kind}s": [_entry(state, e) for e in entries], "errors": errors}


@router.get("/api/personas")
async def list_personas(request: Request):
    return _list(get_state(request), "persona")


@router.get("/api/traits")
async def list_traits(request: Request):
    return _list(get_state(request), "trait")


def _register_vector_routes(collection: str) -> None:
    kind = _kind(collection)

    @router.get(f"/api/{collection}/{{name}}", name=f"get_{kind}", responses=errors(400, 404))
    async def get_vector(name: NamePath, request: Request):
        state = get_state(request)
        info = state.store.info(kind, _name(name))
        info["loaded"] = state.is_loaded(kind, name)
        vec = state.store.load(kind, name)
        info["recommended"] = _recommended(state, kind, name, info["content_hash"],
                                           store_recommended(vec))
        return info

    @router.delete(f"/api/{collection}/{{name}}", name=f"delete_{kind}",
                   responses={**WITH_BODY, **errors(404, 507)})
    async def delete_vector(name: NamePath, request: Request):
        state = get_state(request)
        state.store.delete(kind, _name(name))
        state.set_loaded(kind, name, True)     # a new vector of this name starts loaded
        return {"deleted": name, "kind": kind}

    @router.post(f"/api/{collection}/{{name}}/load", name=f"load_{kind}",
                 responses={**WITH_BODY, **errors(404)})
    async def load_vector(name: NamePath, request: Request):
        state = get_state(request)
        _name(name)
        if state.shape is not None:
            from persona_steer.resolve import load_checked
            load_checked(state.store, kind, name, state.shape)   # 404 / 400 if unusable
        else:
            state.store.load(kind, name)
        state.set_loaded(kind, name, True)
        return {"name": name, "kind": kind, "loaded": True}

    @router.post(f"/api/{collection}/{{name}}/unload", name=f"unload_{kind}",
                 responses={**WITH_BODY, **errors(404)})
    async def unload_vector(name: NamePath, request: Request):
        state = get_state(request)
        _name(name)
        if not state.store.exists(kind, name):
            raise VectorNotFound(kind, name, state.store.names(kind))
        state.set_loaded(kind, name, False)
        return {"name": name, "kind": kind, "loaded": False}

    @router.get(f"/api/{collection}/{{name}}/vector", name=f"download_{kind}",
                response_class=Response,
                responses={200: {"content": BINARY, "description": "the safetensors file"},
                           **errors(400, 404)})
    async def download_vector(name: NamePath, request: Request):
        state = get_state(request)
        path = state.store.path_for(kind, _name(name))
        if not path.is_file():
            raise VectorNotFound(kind, name, state.store.names(kind))
        state.store.load(kind, name)             # refuse to hand out a corrupt file
        return Response(path.read_bytes(), media_type="application/octet-stream",
                        headers={"Content-Disposition":
                                 f'attachment; filename="{name}.safetensors"'})

    @router.put(f"/api/{collection}/{{name}}/vector", name=f"upload_{kind}",
                responses={200: {"description": "replaced an existing vector"},
                           201: {"description": "a new vector"},
                           **WITH_BODY, **errors(503, 507)},
                openapi_extra={"requestBody": {"required": True, "content": BINARY,
                                               "description": "a safetensors steering vector "
                                                              "(docs/vector-format.md)"}})
    async def upload_vector(name: NamePath, request: Request):
        state = get_state(request)
        _name(name)
        data = await request.body()
        if not data:
            raise APIError(400, "empty body: send the safetensors file as the request body",
                           code="invalid_vector")
        vec = SteeringVector.from_bytes(data, expect_kind=kind)
        if vec.name != name:       # a vector may be stored under a new name
            vec.name = name
            vec.metadata["name"] = name
            vec.validate()
        if state.shape is None:
            raise APIError(503, "engine not ready; the vector cannot be checked yet",
                           code="engine_not_ready")
        vec.check_compatible(state.shape.hidden_size, state.model_id, state.shape.num_layers)
        existed = state.store.exists(kind, name)
        state.store.save(vec)
        state.set_loaded(kind, name, True)
        return JSONResponse({"name": name, "kind": kind, "replaced": existed,
                             "content_hash": vec.content_hash(), "layers": vec.layers.tolist()},
                            status_code=200 if existed else 201)


_register_vector_routes("personas")
_register_vector_routes("traits")


@router.get("/api/vectors/similarity", responses=errors(400))
async def similarity(request: Request,
                     layer: int | None = Query(None, ge=0, json_schema_extra={"x-bound": "layer"}),
                     kind: Literal["persona", "trait"] = "persona"):
    """Cosine similarity between every pair of vectors of `kind` at one layer."""
    state = get_state(request)
    if layer is None:
        layer = state.shape.num_layers // 2 if state.shape else 0
    if state.shape is not None and layer >= state.shape.num_layers:
        raise APIError(400, f"layer {layer} out of range (the model has "
                            f"{state.shape.num_layers} layers)", param="layer")
    names, rows, missing = [], [], []
    for e in state.store.list(kind):
        vec = state.store.load(kind, e.name)
        per = vec.per_layer()
        if layer in per:
            names.append(e.name)
            rows.append(per[layer])
        else:
            missing.append(e.name)
    matrix: list[list[float]] = []
    if rows:
        m = torch.stack(rows).double()
        m = m / m.norm(dim=1, keepdim=True).clamp_min(1e-12)
        matrix = [[round(float(x), 6) for x in r] for r in (m @ m.T)]
    return {"kind": kind, "layer": layer, "names": names, "matrix": matrix, "missing": missing}


@router.post("/api/vectors/equalize", responses={**WITH_BODY, **errors(404, 507)})
async def equalize(body: EqualizeRequest, request: Request):
    """Put a set of personas (or traits) on one scale. `by: "norm"` (default): at every layer
    each gets the set's mean norm (`write: false`: the factors, nothing written). `by: "tuned"`: which is stronger, from each vector's tuned
    `recommended_strength` (`persona-steer tune`); with `write: true` each tuned vector is
    rescaled so the set's common strength is its recommended strength (extraction.equalize).
    Files are rewritten atomically; requests pick the new vectors up by content hash."""
    from extraction.equalize import (NotTunedError, compare_tuned, equalize_norms,
                                     equalize_tuned)
    from extraction.pipeline import ExtractionInputError
    state = get_state(request)
    names = [_name(n) for n in body.names or []]
    try:
        if body.by == "tuned":
            fn = equalize_tuned if body.write else compare_tuned
            done = await asyncio.to_thread(fn, state.store, names, body.kind)
            return done.to_dict()
        if len(names) < 2:
            raise APIError(400, "names: equalizing by norm needs at least two names",
                           param="names", code="invalid_request")
        write = body.write is not False
        done = await asyncio.to_thread(equalize_norms, state.store, names, body.kind, write=write)
    except NotTunedError as err:
        raise APIError(400, str(err), param="names", code="not_tuned") from None
    except ExtractionInputError as err:
        raise APIError(400, str(err), param="names", code="invalid_request") from None
    return {"kind": body.kind, "by": "norm", "written": write, "names": [e.name for e in done],
            "factors": {e.name: {str(k): v for k, v in e.scales.items()} for e in done}}


# --- steering scale -------------------------------------------------------------------------
@router.get("/api/steering-scale")
async def get_scale(request: Request):
    return {"steering_scale": get_state(request).scale}


@router.post("/api/steering-scale", responses=WITH_BODY)
async def set_scale(body: ScaleRequest, request: Request):
    state = get_state(request)
    bound = state.settings.steering.max_weight
    if abs(body.scale) > bound:
        raise APIError(400, f"scale={body.scale} is beyond the allowed bound ±{bound}",
                       param="scale", code="invalid_steering")
    state.set_scale(body.scale)            # every replica on this store follows
    return {"steering_scale": state.scale}


# --- simple chat (REST + WebSocket) ---------------------------------------------------------
async def simple_chat_events(state: ServerState, req: SimpleChatRequest) -> AsyncIterator[dict]:
    """Events: start (id, steering), delta (content | reasoning), done (finish_reason, usage)."""
    steering = resolve_steering(state, req)
    state.metrics.requests.labels("api_chat", str(steering.steered).lower()).inc()
    kwargs = {} if req.enable_thinking is None else {"enable_thinking": req.enable_thinking}
    messages = req.to_messages()
    ids, text = chat_prompt(state, messages, kwargs)
    steering = place_last_turn(state, steering, messages, kwargs, ids)
    max_tokens = max_tokens_for(state, len(ids), req.max_tokens)
    params = sampling_params(SamplingFieldsOf(req), max_tokens, steering, stream=True,
                             logprobs=None, skip_special_tokens=not state.think.tags_special,
                             defaults=state.sampling_defaults)
    rid = new_id("chat")
    sp = ThinkSplitter(state.think, text.rstrip("\n").endswith(THINK_START))
    engine_out = generate(state, engine_prompt(ids), params, rid, steering.steered)
    try:
        # admission's errors (an unknown persona...) come before the start event, not after it
        source = await primed(engine_out)
        yield {"type": "start", "id": rid, "steering": steering.applied,
               **({"monitor": list(steering.monitor)} if steering.monitor else {})}
        n_out, reason = 0, None
        track = track_for(steering)
        async for out in source:
            o = out.outputs[0]
            n_out += len(o.token_ids)
            reasoning, content = sp.feed(o.text)
            if reasoning:
                yield {"type": "delta", "reasoning": reasoning}
            if content:
                yield {"type": "delta", "content": content}
            if track is not None and (rows := track.take(out, len(o.token_ids))):
                yield {"type": "monitor", **track.fields(rows)}
            reason = o.finish_reason or reason
        done = {"type": "done", "finish_reason": finish(reason), "usage": usage(len(ids), n_out)}
        if track is not None:
            done.update(track.fields())
        yield done
    finally:        # closed early (a stop, a client gone): end the engine request now
        await engine_out.aclose()


class SamplingFieldsOf:
    """Adapts SimpleChatRequest to the sampling fields `sampling_params` reads."""

    def __init__(self, r: SimpleChatRequest):
        self.n, self.temperature, self.top_p, self.seed = 1, r.temperature, r.top_p, r.seed
        self.stop, self.presence_penalty, self.frequency_penalty = (
            None, r.presence_penalty, r.frequency_penalty)
        self.response_format = None
        self.ignore_eos = r.ignore_eos


@router.post("/api/chat", responses={**WITH_BODY, **errors(404, 500)})
async def api_chat(req: SimpleChatRequest, request: Request):
    state = ready_state(request)
    content, reasoning, result = [], [], {}

    async def consume():
        async for ev in simple_chat_events(state, req):
            if ev["type"] == "monitor":
                continue
            if ev["type"] == "delta":
                (content if "content" in ev else reasoning).append(ev.get("content") or
                                                                   ev.get("reasoning"))
            else:
                result.update({k: v for k, v in ev.items() if k != "type"})

    task = asyncio.create_task(consume())
    while True:
        done, _ = await asyncio.wait({task}, timeout=0.25)
        if done:
            task.result()
            break
        if await request.is_disconnected():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
            raise APIError(400, "client disconnected", code="client_disconnected")
    body = {"id": result.get("id"), "response": "".join(content),
            "reasoning": "".join(reasoning) or None, "steering": result.get("steering"),
            "finish_reason": result.get("finish_reason"), "usage": result.get("usage")}
    for key in ("monitor", "capping"):   # the done event's whole answer (docs/monitoring.md)
        if key in result:
            body[key] = result[key]
    return body


def ws_authorized(state: ServerState, ws: WebSocket) -> bool:
    if state.api_key is None:
        return True
    auth = ws.headers.get("authorization", "")
    token = auth[7:] if auth.lower().startswith("bearer ") else ws.query_params.get("api_key")
    if key_matches(token, state.api_key):
        return True
    state.metrics.auth_failures.labels("websocket").inc()
    return False


@public_router.websocket("/ws/chat")
async def ws_chat(ws: WebSocket):
    """Streaming chat over a WebSocket. Send {"message": ..., "persona": ..., ...} (the
    /api/chat body); receive start/delta/done events; send {"type": "stop"} to stop."""
    state = get_state(ws)
    await ws.accept()
    if not ws_authorized(state, ws):
        await ws.send_json({"type": "error", **error_body(
            "missing or wrong API key (Authorization: Bearer <key> or ?api_key=)",
            "authentication_error", None, "invalid_api_key")})
        await ws.close(code=1008)
        return
    limit = state.settings.server.max_body_bytes
    task: asyncio.Task | None = None
    begun: set = set()          # tasks whose body started (a stop can come before that)

    async def run(req: SimpleChatRequest):
        begun.add(asyncio.current_task())
        try:
            if not lifecycle.accepting(state):      # stopping: no new replies on open sockets
                raise lifecycle.refusal(state)
            if state.engine is None:
                raise APIError(503, f"engine not ready ({state.engine_state})",
                               code="engine_not_ready")
            async for ev in simple_chat_events(state, req):
                await ws.send_json(ev)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await ws.send_json({"type": "stopped"})
            raise
        except Exception as err:
            with contextlib.suppress(Exception):
                await ws.send_json({"type": "error", **to_api_error(err).body()})

    try:
        while True:
            raw = await ws.receive_text()
            if len(raw.encode()) > limit:
                await ws.send_json({"type": "error", **error_body(
                    f"message larger than {limit} bytes", "request_too_large", None, None)})
                continue
            try:
                msg = json.loads(raw)
                if not isinstance(msg, dict):
                    raise ValueError("a JSON object is expected")
            except ValueError as err:
                await ws.send_json({"type": "error", **error_body(
                    f"not a JSON object: {err}", "invalid_request_error", None, None)})
                continue
            if msg.get("type") == "stop":
                if task and not task.done():
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task
                    if task not in begun:   # cancelled before it ran: say so ourselves
                        await ws.send_json({"type": "stopped"})
                    begun.discard(task)
                continue
            if task and not task.done():
                await ws.send_json({"type": "error", **error_body(
                    "a reply is still streaming; send {\"type\": \"stop\"} first",
                    "invalid_request_error", None, "busy")})
                continue
            try:
                req = SimpleChatRequest.model_validate({k: v for k, v in msg.items()
                                                        if k != "type"})
            except ValidationError as err:
                e = err.errors()[0]
                param = ".".join(str(p) for p in e["loc"]) or None
                await ws.send_json({"type": "error", **error_body(
                    f"{param}: {e['msg']}" if param else e["msg"], "invalid_request_error",
                    param, "invalid_request")})
                continue
            task = asyncio.create_task(run(req))
    except WebSocketDisconnect:
        pass
    finally:
        if task and not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
