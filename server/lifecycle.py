"""The server process's life: what /health says, when new requests are refused, how it ends.

    starting --engine built--------> ready --SIGTERM/SIGINT--> stopping --drained--> exit 0
    starting --engine failed-------> failed --------------------------------------> exit 2
    ready    --engine core died----> dead ---in-flight requests end with errors---> exit 1

While stopping or dead, new requests get 503 (`AdmissionMiddleware`; /health and /metrics
still answer) and the requests in flight run to their end. A stop waits at most
`server.shutdown_grace_s`; engine requests still running then are aborted and end with a
`server_shutting_down` error (for a stream: an error event, then [DONE]), so no client sees a
stream simply stop. The exit code and its one-line reason are left on the state for
`persona-steer serve` (server/cli.py) to print and return: a supervisor restarts a non-zero
exit. docs/operations.md is the operator's view of the same.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
from typing import TYPE_CHECKING, Optional

import uvicorn

from server.errors import APIError, error_body

if TYPE_CHECKING:
    from server.state import ServerState

log = logging.getLogger("persona_steer.server")

EXIT_STOPPED, EXIT_ENGINE_DEAD, EXIT_START_FAILED = 0, 1, 2
OPEN_WHILE_STOPPING = ("/health", "/metrics")   # probes and scrapers see the stop
CUT_WAIT_S = 10.0        # after the grace bound: time for cut requests to send their error
POLL_S = 0.1


# --- what /health says ------------------------------------------------------------------------
def accepting(state: "ServerState") -> bool:
    return state.stopping is None and state.engine_state not in ("dead", "failed")


def health(state: "ServerState") -> tuple[int, dict]:
    """(status code, body): 200 only when ready and accepting; 503 otherwise, with the state
    (`status`) and why (`error.message`)."""
    engine = state.engine_state
    if engine == "dead":
        status, code, msg = "dead", "engine_dead", f"engine dead: {state.engine_error}"
    elif engine == "failed":
        status, code, msg = "failed", "engine_failed", \
            f"engine failed to start: {state.engine_error}"
    elif state.stopping is not None:
        status, code, msg = "stopping", "server_stopping", \
            f"the server is stopping ({state.stopping}); {busy_count(state)} requests finishing"
    elif engine == "ready":
        return 200, {"status": "ok", "engine": "ready"}
    else:
        status, code, msg = engine, "engine_not_ready", f"engine {engine}"
    return 503, {"status": status, "engine": engine,
                 **error_body(msg, "service_unavailable", None, code)}


def refusal(state: "ServerState") -> APIError:
    """The 503 a new request gets while the server is not accepting."""
    _, body = health(state)
    err = body["error"]
    return APIError(503, f"{err['message']}: not accepting new requests", code=err["code"])


def busy_count(state: "ServerState") -> int:
    return max(state.http_in_flight, state.in_flight)


# --- stopping ---------------------------------------------------------------------------------
def begin_stop(state: "ServerState", *, reason: str, exit_code: int,
               message: Optional[str] = None, grace_s: Optional[float] = None) -> None:
    """Stop accepting and drain, then exit with `exit_code` (run on the event loop). A second
    call while stopping keeps the first drain; only a worse exit code and its reason win."""
    if state.stop_task is not None:
        if exit_code > (state.exit_code or 0):
            state.exit_code, state.exit_message = exit_code, message
        return
    state.stopping = reason
    state.exit_code, state.exit_message = exit_code, message
    grace = state.settings.server.shutdown_grace_s if grace_s is None else grace_s
    log.warning("stopping (%s): refusing new requests; %d in flight get up to %.0f s",
                reason, busy_count(state), grace)
    state.stop_task = asyncio.get_running_loop().create_task(_drain_then_exit(state, grace))


async def _drain_then_exit(state: "ServerState", grace_s: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace_s
    while busy_count(state) and loop.time() < deadline:
        await asyncio.sleep(POLL_S)
    if state.active_requests:
        await cut_requests(state, grace_s)
        end = loop.time() + CUT_WAIT_S
        while busy_count(state) and loop.time() < end:
            await asyncio.sleep(POLL_S)
    log.info("drained; exiting with code %s", state.exit_code)
    if state.stop_server is not None:
        state.stop_server()


async def cut_requests(state: "ServerState", grace_s: float) -> None:
    """Abort the engine requests still running: each ends with `shutdown_error`."""
    ids = sorted(state.active_requests)
    log.warning("%d requests still running after %.0f s (server.shutdown_grace_s): ending "
                "them with an error", len(ids), grace_s)
    state.cut_requests.update(ids)
    if state.engine is not None:
        with contextlib.suppress(Exception):
            await state.engine.abort(ids)


def shutdown_error(state: "ServerState") -> APIError:
    grace = state.settings.server.shutdown_grace_s
    return APIError(503, f"the server is stopping and this request ran past the {grace:g} s it "
                         "was given to finish (server.shutdown_grace_s); retry on another "
                         "replica or after the restart", code="server_shutting_down")


# --- the engine dying while serving ---------------------------------------------------------
async def watch_engine(state: "ServerState", every_s: float = 0.25) -> None:
    """vLLM's own monitor thread marks the engine dead (`engine.errored`) when its core process
    exits; this turns that into the `dead` state, a stop and exit code 1."""
    while True:
        await asyncio.sleep(every_s)
        engine = state.engine
        if state.engine_state == "ready" and engine is not None and engine.errored:
            engine_dead(state)
            return


def engine_dead(state: "ServerState") -> None:
    state.engine_state = "dead"
    state.engine_error = ("the engine core process stopped unexpectedly; this server cannot "
                          "generate any more and exits so that its supervisor restarts it")
    log.error("engine dead: %s", state.engine_error)
    begin_stop(state, reason="engine dead", exit_code=EXIT_ENGINE_DEAD,
               message=f"engine dead: {state.engine_error}")


def engine_failed(state: "ServerState") -> None:
    """The engine could not start (state.engine_error holds the one-line cause): exit now."""
    begin_stop(state, reason="engine failed to start", exit_code=EXIT_START_FAILED,
               message=f"engine failed to start: {state.engine_error}", grace_s=0)


# --- refusing new requests ----------------------------------------------------------------
class AdmissionMiddleware:
    """Pure ASGI, outermost: while the server is not accepting, new HTTP requests get 503 (with
    `Connection: close`) and WebSocket handshakes are refused; counts HTTP requests in flight
    (a streamed response counts until its last byte) for the drain."""

    def __init__(self, app, state: "ServerState"):
        self.app, self.state = app, state

    async def __call__(self, scope, receive, send):
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        if not accepting(self.state) and scope["path"] not in OPEN_WHILE_STOPPING:
            self.state.metrics.errors.labels("503").inc()
            if kind == "websocket":
                return await send({"type": "websocket.close", "code": 1013})
            err = refusal(self.state)
            body = json.dumps(err.body()).encode()
            await send({"type": "http.response.start", "status": 503,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode()),
                                    (b"connection", b"close")]})
            return await send({"type": "http.response.body", "body": body})
        if kind == "websocket" or scope["path"] in OPEN_WHILE_STOPPING:
            return await self.app(scope, receive, send)
        self.state.http_in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.state.http_in_flight -= 1


# --- signals ----------------------------------------------------------------------------------
class SteerServer(uvicorn.Server):
    """uvicorn's server with one part swapped: the first SIGTERM or SIGINT starts the drain
    (`begin_stop`) instead of closing connections at once; a second one is uvicorn's own
    (exit now). The drain ends by setting `should_exit`, and the process exits with
    `state.exit_code`."""

    def __init__(self, config: uvicorn.Config, state: "ServerState"):
        super().__init__(config)
        self.state = state
        state.stop_server = self._exit

    def _exit(self) -> None:
        self.should_exit = True

    def handle_exit(self, sig: int, frame) -> None:
        loop = self.state.loop
        if self.state.stop_task is None and loop is not None and not self.should_exit:
            name = signal.Signals(sig).name
            loop.call_soon_threadsafe(lambda: begin_stop(self.state, reason=name,
                                                         exit_code=EXIT_STOPPED))
            return
        super().handle_exit(sig, frame)


def own_sse_shutdown() -> None:
    """sse-starlette ends every open event stream the moment uvicorn is asked to exit (it
    patches uvicorn's signal handler): the stream stops mid-answer with no [DONE]. The drain
    above ends streams itself, so switch that off."""
    from sse_starlette.sse import AppStatus
    AppStatus.disable_automatic_graceful_drain()
