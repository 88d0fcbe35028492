"""The FastAPI application factory: lifespan (engine start in the background, engine watch,
job manager, SIGHUP key reload), error handlers, CORS and the API-key dependency
(server.security), admission while stopping (server.lifecycle), body-size limit, metrics.

    app = create_app(settings)        # then uvicorn.run(app, ...)

Everything except /health, the WebSocket handshake (it checks the key itself: header or
`?api_key=`) and the static web page requires `Authorization: Bearer <server.api_key>` when a
key is configured.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path
from typing import Any, Callable, Optional

from fastapi import Depends, FastAPI
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

from persona_steer.config import Settings
from persona_steer.toy_demo import seed_demo_vectors

from server import lifecycle, openapi, routes_api, routes_jobs, routes_openai
from server.errors import APIError, error_body, install_handlers
from server.jobs import JobManager
from server.loop_watchdog import LoopWatchdog
from server.security import KeyAwareCORS, require_key
from server.state import ServerState, start_engine, watch_shared_state

log = logging.getLogger("persona_steer.server")
STATIC_DIR = Path(__file__).resolve().parent / "static"


class LimitsMiddleware:
    """Pure ASGI: refuse bodies over max_body_bytes with 413 (Content-Length or streamed),
    and count error responses for /metrics."""

    def __init__(self, app, state: ServerState):
        self.app, self.state = app, state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.state.settings.server.max_body_bytes
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            return await self._too_large(send, limit)
        # Read the whole body first (it is bounded), then replay it to the app.
        chunks, seen = [], 0
        if scope["method"] not in ("GET", "HEAD", "OPTIONS"):
            while True:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    return
                body = msg.get("body", b"")
                seen += len(body)
                if seen > limit:
                    return await self._too_large(send, limit)
                chunks.append(body)
                if not msg.get("more_body", False):
                    break
        pending = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replay_receive():
            if pending:
                return pending.pop()
            return await receive()

        async def counting_send(msg):
            if msg["type"] == "http.response.start" and msg["status"] >= 400:
                self.state.metrics.errors.labels(str(msg["status"])).inc()
            await send(msg)

        await self.app(scope, replay_receive, counting_send)

    async def _too_large(self, send, limit: int) -> None:
        import json
        body = json.dumps(error_body(f"request body larger than {limit} bytes "
                                     "(server.max_body_bytes)", "request_too_large", None,
                                     "body_too_large")).encode()
        self.state.metrics.errors.labels("413").inc()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def _seed_demo_vectors(state: ServerState) -> None:
    """A first start on the toy model with an empty store gets its demo personas and traits, so
    steering works at once (persona_steer.toy_demo; `server.demo_vectors: off` skips it)."""
    try:
        seed_demo_vectors(state.settings, state.store)
    except OSError as err:          # e.g. a read-only store: serve without them
        log.warning("could not add the toy model's demo vectors to %s: %s", state.store.root, err)


def create_app(settings: Settings, *, config_path: Optional[str] = None,
               overrides: Optional[list[str]] = None,
               engine_factory: Optional[Callable[[ServerState], Any]] = None,
               job_backend: Optional[dict] = None) -> FastAPI:
    state = ServerState(settings, config_path=config_path, overrides=list(overrides or []))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        loop = asyncio.get_running_loop()
        state.loop = loop
        watchdog = LoopWatchdog(on_stall=state.metrics.loop_stalls.inc)
        watchdog.start()
        _seed_demo_vectors(state)       # on start, not when the app object is built
        lifecycle.own_sse_shutdown()
        def on_engine_failure() -> None:        # from the engine's start thread
            with contextlib.suppress(RuntimeError):     # loop closed: the server is gone
                loop.call_soon_threadsafe(lifecycle.engine_failed, state)

        start_engine(state, engine_factory, on_failure=on_engine_failure)
        engine_watch = asyncio.create_task(lifecycle.watch_engine(state))
        shared_watch = asyncio.create_task(watch_shared_state(state))
        # Jobs roll out through this server's own engine (OpenAI API on loopback), so no
        # second engine is ever built; the key is read when each job starts.
        backend = job_backend if job_backend is not None else (lambda: {
            "rollout_backend": "openai", "base_url": _loopback_url(settings) + "/v1",
            "api_key": state.api_key})
        state.jobs = JobManager(settings, backend=backend,
                                on_success=lambda r: state.set_loaded(r["kind"], r["name"], True))
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGHUP, _reload, state)
        try:
            yield
        finally:
            engine_watch.cancel()
            shared_watch.cancel()
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(signal.SIGHUP)
            await state.jobs.shutdown()
            await watchdog.stop()
            state.engine_state = "stopped"
            if state.engine is not None:
                with contextlib.suppress(Exception):
                    state.engine.shutdown()

    app = FastAPI(title="persona-steer", version="0.1.0", lifespan=lifespan,
                  description="OpenAI-compatible server that steers a Qwen3 model with persona "
                              "and trait vectors per request.")
    app.state.ps = state
    install_handlers(app)
    auth = [Depends(require_key)]
    keyed = dict(dependencies=auth, responses=openapi.KEYED)
    app.include_router(routes_api.public_router)
    app.include_router(routes_openai.router, tags=["openai"], **keyed)
    app.include_router(routes_api.router, tags=["api"], **keyed)
    app.include_router(routes_jobs.router, tags=["jobs"], **keyed)
    openapi.install(app, state)

    # The web page: / and the top-level files of server/static/ (no auth: it is only HTML/JS;
    # the page sends the key on its API calls). Explicit routes rather than a mount at "/",
    # so that a wrong method on an API path stays 405.
    @app.get("/", include_in_schema=False)
    async def index():
        page = STATIC_DIR / "index.html"
        if page.is_file():
            return FileResponse(page)
        return HTMLResponse("<!doctype html><title>persona-steer</title>"
                            "<p>persona-steer server: see /docs and /v1/models.</p>")

    @app.get("/{filename}", include_in_schema=False)
    async def static_file(filename: str):
        path = STATIC_DIR / filename
        if filename.startswith(".") or not path.is_file():
            raise APIError(404, f"no such endpoint: GET /{filename}", code="not_found")
        return FileResponse(path)

    if STATIC_DIR.is_dir():
        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    app.add_middleware(KeyAwareCORS, state=state)
    app.add_middleware(LimitsMiddleware, state=state)
    app.add_middleware(lifecycle.AdmissionMiddleware, state=state)   # outermost
    return app


def _reload(state: ServerState) -> None:
    try:
        state.reload_api_key()
    except Exception as err:  # keep serving with the old key
        log.error("config reload failed, keeping the old settings: %s", err)


def _loopback_url(settings: Settings) -> str:
    host = settings.server.host
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{settings.server.port}"
