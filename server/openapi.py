"""What /openapi.json declares beyond the routes' own types: the OpenAI-style error body every
failure answers with, the error statuses each route can return (`errors(...)`, used in the
routes' `responses=`), streamed and binary content types, and the bounds that come from the
configuration or the model (a weight's ±steering.max_weight, a layer below the layer count, a
token id below the vocabulary size) filled in each time the document is served.

The request models in server/schemas.py carry the constraints the server enforces (pydantic
Field constraints); this module only adds what a type cannot say. The 422 FastAPI documents by
default is removed: a request that fails validation is a 400 (server.errors).
"""
from __future__ import annotations

import copy
from typing import Any, Optional

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from server.errors import TYPES

# a schema carrying {BOUND_KEY: name} gets minimum/maximum from `bounds(state)[name]`
BOUND_KEY = "x-bound"


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: Optional[str] = None
    code: Optional[str] = None


class ErrorBody(BaseModel):
    """OpenAI's error shape."""
    error: ErrorDetail


WHY = {
    400: "Invalid request: a field out of range or of the wrong type, an invalid name, a "
         "steering weight beyond steering.max_weight, a prompt too long for the context.",
    401: "Missing or wrong API key (only while server.api_key is set).",
    404: "No such model, persona, trait, vector or job (or it is not loaded).",
    409: "The name is taken, or a job is already creating it.",
    413: "The body is larger than server.max_body_bytes.",
    500: "The engine failed this one request (`generation_failed`; e.g. a structured-output "
         "grammar that rejects the model's token), or its steering vectors changed or went "
         "away after admission (`steering_failed`). The engine and other requests go on.",
    503: "The engine is not ready (starting, failed, dead), the server is stopping, or the "
         "store is read-only.",
    507: "The vector store's disk is full.",
}
assert set(WHY) <= set(TYPES)


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries: each status with the OpenAI error body and why it happens."""
    return {s: {"model": ErrorBody, "description": WHY[s]} for s in statuses}


# every route behind the key (401), refused while stopping (503), and any request with a body
# (413: the limit is checked before routing)
KEYED = errors(401, 503)
WITH_BODY = errors(400, 413)

# one server-sent event (the schema of a text/event-stream entry describes each event)
SSE = {"text/event-stream": {"schema": {
    "type": "object", "required": ["data"],
    "description": "one event: a chunk's JSON in `data`; the last one is `data: [DONE]`",
    "properties": {"data": {"type": "string"}, "event": {"type": "string"},
                   "id": {"type": "string"}}}}}
BINARY = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}


def bounds(state) -> dict[str, tuple[float, float] | None]:
    """The configured bounds, as the server enforces them now (the model's own length and
    layer count are known once the engine is ready)."""
    w = state.settings.steering.max_weight
    layers = state.shape.num_layers if state.shape is not None else None
    vocab = (getattr(state.engine.model_config.hf_config, "vocab_size", None)
             if state.engine is not None else None)
    return {"weight": (-w, w), "layer": (0, layers - 1) if layers else None,
            "token": (0, vocab - 1) if vocab else None}


def _fill(node: Any, values: dict) -> None:
    if isinstance(node, dict):
        name = node.pop(BOUND_KEY, None)
        if name is not None and values.get(name) is not None:
            node["minimum"], node["maximum"] = values[name]
        for v in node.values():
            _fill(v, values)
    elif isinstance(node, list):
        for v in node:
            _fill(v, values)


def _drop_422(doc: dict) -> None:
    for ops in doc.get("paths", {}).values():
        for op in ops.values():
            if isinstance(op, dict):
                op.get("responses", {}).pop("422", None)
    schemas = doc.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)


def install(app: FastAPI, state) -> None:
    """Serve the document with this server's bounds filled in."""
    def openapi() -> dict:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version,
                              description=app.description, routes=app.routes)
            _drop_422(doc)
            app.openapi_schema = doc
        doc = copy.deepcopy(app.openapi_schema)
        _fill(doc, bounds(state))
        return doc

    app.openapi = openapi
