"""Who may call the API: the API key check (constant time, failures counted for /metrics) and
the CORS policy that follows the key. docs/security.md is the reader's view of the same.
"""
from __future__ import annotations

import hmac
import logging
import re
from typing import Optional

from fastapi import Request
from fastapi.middleware.cors import CORSMiddleware

from server.deps import get_state
from server.errors import APIError
from server.state import ServerState


def key_matches(given: Optional[str], expected: str) -> bool:
    """Constant-time comparison (hmac.compare_digest), so the time a wrong key takes to refuse
    says nothing about how much of it was right."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


async def require_key(request: Request) -> None:
    state = get_state(request)
    if state.api_key is None:
        return
    auth = request.headers.get("authorization", "")
    token = auth[7:].strip() if auth[:7].lower() == "bearer " else None
    if not key_matches(token, state.api_key):
        state.metrics.auth_failures.labels("http").inc()
        raise APIError(401, "missing or wrong API key: send 'Authorization: Bearer <key>'",
                       code="invalid_api_key")


class KeyAwareCORS:
    """CORS that closes when an API key is set: a wildcard in server.cors_origins then allows
    no other origin (origins listed by name still are). A key means the API is private; a
    page on another site must not drive it with a key the user's browser holds. Two stock
    CORSMiddlewares, picked per request, so a key set or removed by SIGHUP takes effect at
    once (docs/security.md)."""

    def __init__(self, app, state: ServerState):
        origins = list(state.settings.server.cors_origins)
        named = [o for o in origins if o != "*"]
        self.state = state
        self.open = CORSMiddleware(app, allow_origins=origins, allow_methods=["*"],
                                   allow_headers=["*"], allow_credentials="*" not in origins)
        self.keyed = CORSMiddleware(app, allow_origins=named, allow_methods=["*"],
                                    allow_headers=["*"], allow_credentials=True)

    async def __call__(self, scope, receive, send):
        cors = self.open if self.state.api_key is None else self.keyed
        await cors(scope, receive, send)


KEY_IN_QUERY = re.compile(r"(api_key=)[^&\s\"']+")


class RedactKeyInLogs(logging.Filter):
    """uvicorn logs a WebSocket's path with its query string, and browsers (the web page) can
    only send the key there (`/ws/chat?api_key=...`): mask it before it reaches a log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = KEY_IN_QUERY.sub(r"\1***", record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(KEY_IN_QUERY.sub(r"\1***", a) if isinstance(a, str) else a
                                for a in record.args)
        return True


def redact_keys_in_server_logs() -> None:
    """Call after uvicorn has configured its loggers (uvicorn.Config does)."""
    for name in ("uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).addFilter(RedactKeyInLogs())
