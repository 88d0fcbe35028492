"""OpenAI-style errors: every failure leaves the server as

    {"error": {"message": str, "type": str, "param": str | null, "code": str | null}}

with the matching HTTP status. No handler ever returns a stack trace.
"""
from __future__ import annotations

import errno
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from persona_steer.config import ConfigError
from persona_steer.resolve import AdmissionError
from persona_steer.steering_spec import SteeringSpecError
from persona_steer.store import StoreWriteError, VectorNotFound
from persona_steer.vector_format import NAME_RE, VectorFormatError, validate_name

log = logging.getLogger("persona_steer.server")

# status -> OpenAI error type
TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
         404: "not_found_error", 405: "invalid_request_error", 409: "conflict_error",
         413: "request_too_large", 422: "invalid_request_error", 429: "rate_limit_error",
         500: "server_error", 503: "service_unavailable", 507: "insufficient_storage"}

# a store write refused by the file system -> (status, code)
STORE_ERRNO = {errno.ENOSPC: (507, "store_full"), errno.EDQUOT: (507, "store_full"),
               errno.EROFS: (503, "store_read_only"), errno.EACCES: (503, "store_read_only"),
               errno.EPERM: (503, "store_read_only")}


class APIError(Exception):
    def __init__(self, status: int, message: str, *, param: str | None = None,
                 code: str | None = None, type: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type or TYPES.get(status, "invalid_request_error")

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type: str, param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_response(status: int, message: str, *, param: str | None = None,
                   code: str | None = None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, TYPES.get(status, "invalid_request_error"), param,
                                   code), status_code=status, headers=headers)


def to_api_error(err: BaseException) -> APIError:
    """Map the project's domain errors to HTTP errors (used by routes, WS and jobs alike)."""
    if isinstance(err, APIError):
        return err
    if isinstance(err, AdmissionError):     # steering refused at admission (steering_plugin)
        return APIError(404 if err.not_found else 400, str(err), param=err.param, code=err.code)
    if isinstance(err, VectorNotFound):
        return APIError(404, str(err), param=err.kind, code=f"{err.kind}_not_found")
    if isinstance(err, SteeringSpecError):
        return APIError(400, str(err), param=err.param, code="invalid_steering")
    if isinstance(err, VectorFormatError):
        return APIError(400, str(err), code="invalid_vector")
    if isinstance(err, ConfigError):
        return APIError(400, str(err), code="invalid_config")
    if isinstance(err, FileExistsError):
        return APIError(409, str(err), code="already_exists")
    if isinstance(err, StoreWriteError):
        log.error("%s", err)
        status, code = STORE_ERRNO.get(err.errno, (500, "store_write_failed"))
        return APIError(status, str(err), code=code)
    if any(c.__name__ == "VLLMClientError" for c in type(err).__mro__):
        return APIError(400, str(err), param=getattr(err, "parameter", None),
                        code="invalid_request")
    log.error("unexpected error: %r", err, exc_info=err)
    return APIError(500, f"internal server error ({type(err).__name__})", code="internal_error")


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None, str | None]:
    errs = exc.errors()
    if not errs:
        return "invalid request", None
    first = errs[0]
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
    param = ".".join(loc) or None
    msg = first.get("msg", "invalid value")
    if first.get("type") == "json_invalid":
        return f"request body is not valid JSON: {msg}", None, None
    code = "invalid_request"
    if is_bad_name(first):          # the same words as everywhere else a name is checked
        code = "invalid_name"
        try:
            validate_name(first.get("input"))
        except VectorFormatError as err:
            msg = str(err)
    more = f" (and {len(errs) - 1} more problems)" if len(errs) > 1 else ""
    return (f"{param}: {msg}" if param else msg) + more, param, code


def is_bad_name(err: dict) -> bool:
    return (err.get("type") == "string_pattern_mismatch"
            and (err.get("ctx") or {}).get("pattern") == NAME_RE.pattern)


def allowed_methods(request: Request) -> str:
    """Every method some route serves on this path (Starlette's own 405 names only the first
    route's, and a path such as /api/personas/{name} has a route per method)."""
    methods = {m for route in request.app.router.routes if getattr(route, "methods", None)
               for m in route.methods
               if route.matches({**request.scope, "method": m})[0] == Match.FULL}
    return ", ".join(sorted(methods))


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        message, param, code = _validation_message(exc)
        return error_response(400, message, param=param, code=code)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        headers = getattr(exc, "headers", None)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"method {request.method} not allowed on {request.url.path}"
            headers = {**(headers or {}), "Allow": allowed_methods(request)}
        return error_response(exc.status_code, message, headers=headers)

    for cls in (VectorNotFound, SteeringSpecError, VectorFormatError, ConfigError,
                FileExistsError, StoreWriteError):
        app.add_exception_handler(cls, _domain)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        err = to_api_error(exc)
        return JSONResponse(err.body(), status_code=err.status)


async def _domain(request: Request, exc: Exception):
    err = to_api_error(exc)
    return JSONResponse(err.body(), status_code=err.status)
