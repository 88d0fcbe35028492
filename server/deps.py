"""What route handlers take from the request: the server's state, and the state only when the
engine can serve. Every route module imports these from here (none from another route module)."""
from __future__ import annotations

from starlette.requests import HTTPConnection

from server.errors import APIError
from server.state import ServerState


def get_state(conn: HTTPConnection) -> ServerState:
    """The ServerState app.py attached to the app (a Request or a WebSocket)."""
    return conn.app.state.ps


def ready_state(conn: HTTPConnection) -> ServerState:
    """The state, or 503 engine_not_ready while the engine is starting or has failed."""
    state = get_state(conn)
    if state.engine is None:
        msg = (f"engine failed to start: {state.engine_error}" if state.engine_state == "failed"
               else f"engine not ready ({state.engine_state}); retry shortly")
        raise APIError(503, msg, code="engine_not_ready")
    return state
