"""The project's one HTTP client: a small typed wrapper over httpx (REST API) and the official
`openai` SDK (OpenAI routes), sync and async.

    from clients.client import PersonaSteerClient, SteeringRequest
    c = PersonaSteerClient("http://127.0.0.1:8000")
    print(c.chat_text("Hello", SteeringRequest(persona="pirate", strength=0.8)))
    for piece in c.chat_stream([{"role": "user", "content": "Hi"}],
                               SteeringRequest(traits={"formal": 0.4})):
        print(piece.content, end="", flush=True)

Each method is written once, in `_Methods`, as a generator that yields the calls it needs
(`_Http`: one REST request; `_OpenAI`: one openai SDK call; `_Follow`: read an event stream
until a condition) and returns the result; `PersonaSteerClient` sends them with httpx.Client and
openai.OpenAI, `AsyncPersonaSteerClient` with httpx.AsyncClient and openai.AsyncOpenAI.

Every server error arrives as `PersonaSteerError` (status, message, type, param, code, taken
from the OpenAI-style error body); a server that cannot be reached raises `ServerUnreachable`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Generator, Iterator, Mapping, Sequence

import httpx

from persona_steer.job_states import TERMINAL, UNSUCCESSFUL
from persona_steer.steering_spec import PERSONA_MODEL_PREFIX, SteeringRequest, SteeringSpecError

__all__ = ["AsyncPersonaSteerClient", "ChatDelta", "Job", "PersonaSteerClient",
           "PersonaSteerError", "ServerUnreachable", "SteeringRequest"]

KINDS = ("persona", "trait")
_KIND_PATH = {"persona": "personas", "trait": "traits"}
# the keyword form of a request's steering (docs/python.md): chat(..., persona="pirate")
STEERING_KEYS = tuple(f.name for f in dataclasses.fields(SteeringRequest))
DEFAULT_TIMEOUT_S = 120.0   # read/write/pool, per request (a long generation streams within it)
CONNECT_TIMEOUT_S = 5.0


def _openai():
    """The openai SDK, imported on first use (it takes about a second; REST calls skip it)."""
    import openai
    return openai


def _timeout_seconds(timeout: Any) -> tuple[float | None, float]:
    """(read, connect) seconds from a number, None (the default) or any Timeout-like object.

    The client hands each library only plain numbers or that library's own Timeout type:
    openai 3.x runs on httpx2 and refuses an httpx.Timeout."""
    if timeout is None:
        return DEFAULT_TIMEOUT_S, CONNECT_TIMEOUT_S
    if isinstance(timeout, (int, float)) and not isinstance(timeout, bool):
        return float(timeout), CONNECT_TIMEOUT_S
    if hasattr(timeout, "read") and hasattr(timeout, "connect"):  # httpx's, httpx2's, openai's
        connect = CONNECT_TIMEOUT_S if timeout.connect is None else float(timeout.connect)
        return timeout.read, connect
    raise PersonaSteerError(f"timeout must be a number of seconds, got {timeout!r}",
                            param="timeout")


class PersonaSteerError(Exception):
    """An error answered by the server (OpenAI-style body), or a bad client-side argument."""

    def __init__(self, message: str, status: int | None = None, *, type: str | None = None,
                 param: str | None = None, code: Any = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.type = type
        self.param = param
        self.code = code

    def __str__(self) -> str:
        where = f" (param: {self.param})" if self.param else ""
        return f"{self.message}{where}" if self.status is None else \
            f"HTTP {self.status}: {self.message}{where}"


class ServerUnreachable(PersonaSteerError):
    """Nothing answered at the URL (refused, DNS, timeout on connect)."""

    def __init__(self, url: str, reason: str = ""):
        super().__init__(f"no server reachable at {url}" + (f" ({reason})" if reason else ""))
        self.url = url


def _error_from_body(status: int, body: Any, fallback: str = "") -> PersonaSteerError:
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        return PersonaSteerError(str(err.get("message") or fallback or f"HTTP {status}"), status,
                                 type=err.get("type"), param=err.get("param"), code=err.get("code"))
    if isinstance(err, str):
        return PersonaSteerError(err, status)
    if isinstance(body, dict) and "detail" in body:  # plain FastAPI/Starlette error
        detail = body["detail"]
        return PersonaSteerError(detail if isinstance(detail, str) else json.dumps(detail), status)
    return PersonaSteerError(fallback or f"HTTP {status}", status)


def _error_from_response(resp: httpx.Response) -> PersonaSteerError:
    try:
        body = resp.json()
    except (ValueError, json.JSONDecodeError):
        body = None
    text = resp.text.strip()[:300] if body is None else ""
    return _error_from_body(resp.status_code, body, text or resp.reason_phrase)


def _convert_openai_error(err: Exception, url: str) -> PersonaSteerError:
    openai = _openai()
    if isinstance(err, openai.APIConnectionError):  # also APITimeoutError
        return ServerUnreachable(url, type(err.__cause__).__name__ if err.__cause__ else "")
    if isinstance(err, openai.APIStatusError):
        body = err.body
        if isinstance(body, dict) and "error" not in body and "message" in body:
            body = {"error": body}  # the SDK unwraps {"error": {...}} into .body
        return _error_from_body(err.status_code, body, err.message)
    if isinstance(err, openai.APIError):
        # an error event inside a stream: the SDK raises APIError with the error's body
        body = err.body if isinstance(err.body, dict) else {}
        if "error" not in body and "message" in body:
            body = {"error": body}
        return _error_from_body(getattr(err, "status_code", None) or 500, body, err.message)
    return PersonaSteerError(str(err))


@dataclass
class ChatDelta:
    """One streamed piece: answer text and/or thinking text; the last has finish_reason."""
    content: str = ""
    reasoning: str = ""
    finish_reason: str | None = None
    steering: Any = None
    usage: Any = None
    monitor: Any = None     # {name: {"tokens", "mean", "last", "min", "max"}} (docs/monitoring.md)


@dataclass
class Job:
    """A job record as the server answers it (server/jobs.py): `status` is one of
    persona_steer.job_states; `progress` the last {stage, done, total, message} event."""
    id: str
    status: str
    progress: float | None = None      # done / total of the last progress event
    message: str = ""                  # its stage and message
    error: str | None = None
    raw: dict = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL

    @property
    def failed(self) -> bool:
        return self.status in UNSUCCESSFUL

    @classmethod
    def from_dict(cls, d: dict) -> "Job":
        """From a job record, or from {"job": record} (what POST /api/personas and /api/traits
        answer)."""
        rec = d["job"] if isinstance(d.get("job"), dict) else d
        prog = rec.get("progress") or {}
        done, total = prog.get("done"), prog.get("total")
        fraction = min(1.0, done / total) if isinstance(done, (int, float)) \
            and isinstance(total, (int, float)) and total > 0 else None
        message = " · ".join(str(prog[k]) for k in ("stage", "message") if prog.get(k))
        return cls(id=str(rec.get("id", "")), status=str(rec.get("status", "unknown")),
                   progress=fraction, message=message, error=rec.get("error"), raw=rec)

class _SSEParser:
    """Turns an SSE stream's lines into dicts (`data:` JSON, non-JSON data wrapped), one line at
    a time, so the sync and the async transport share it."""

    def __init__(self) -> None:
        self.data: list[str] = []
        self.event: str | None = None

    def feed(self, line: str) -> dict | None:
        """The event this line completes, else None."""
        if line == "":
            return self.flush()
        if line.startswith("data:"):
            self.data.append(line[5:].lstrip(" "))
        elif line.startswith("event:"):
            self.event = line[6:].strip()
        return None             # comments (":") and other fields

    def flush(self) -> dict | None:
        out = _sse_event(self.event, "\n".join(self.data)) if self.data else None
        self.data, self.event = [], None
        return out


def _iter_sse(lines: Iterator[str]) -> Iterator[dict]:
    parser = _SSEParser()
    for line in lines:
        event = parser.feed(line)
        if event is not None:
            yield event
    event = parser.flush()
    if event is not None:
        yield event


def _sse_event(event: str | None, data: str) -> dict:
    try:
        out = json.loads(data)
    except json.JSONDecodeError:
        out = {"data": data}
    if not isinstance(out, dict):
        out = {"data": out}
    if event and "event" not in out:
        out["event"] = event
    return out


def _delta_from_chunk(chunk: Any) -> ChatDelta:
    out = ChatDelta(steering=getattr(chunk, "steering", None), usage=getattr(chunk, "usage", None))
    for choice in getattr(chunk, "choices", None) or []:
        delta = getattr(choice, "delta", None)
        if delta is not None:
            out.content += getattr(delta, "content", None) or ""
            out.reasoning += getattr(delta, "reasoning_content", None) or ""
        elif getattr(choice, "text", None):  # completions stream
            out.content += choice.text
        if choice.finish_reason:
            out.finish_reason = choice.finish_reason
        out.monitor = getattr(choice, "monitor", None) or out.monitor
    return out


def _messages(messages: str | Sequence[Mapping[str, Any]], system: str | None) -> list[dict]:
    if isinstance(messages, str):
        msgs = [{"role": "user", "content": messages}]
    else:
        msgs = [dict(m) for m in messages]
    if system:
        msgs.insert(0, {"role": "system", "content": system})
    return msgs


def _given(options: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments that were given (None leaves a field to the server's default)."""
    return {k: v for k, v in options.items() if v is not None}


def _steering_body(steering: SteeringRequest | Mapping[str, Any] | None,
                   options: dict[str, Any]) -> dict[str, Any]:
    """The body's steering fields, from `steering` or from the keyword form (persona=...,
    traits=..., taken out of `options`), not both."""
    keywords = {k: options.pop(k) for k in STEERING_KEYS if k in options}
    if steering is None:
        steering = SteeringRequest(**keywords)
    elif keywords:
        raise PersonaSteerError(f"give steering= or the keywords {', '.join(sorted(keywords))}, "
                                f"not both", param="steering")
    elif isinstance(steering, Mapping):
        unknown = sorted(set(steering) - set(STEERING_KEYS))
        if unknown:
            raise PersonaSteerError(f"unknown steering fields: {', '.join(unknown)} (known: "
                                    f"{', '.join(STEERING_KEYS)})", param="steering")
        steering = SteeringRequest(**steering)
    elif not isinstance(steering, SteeringRequest):
        raise PersonaSteerError(f"steering must be a SteeringRequest, got "
                                f"{type(steering).__name__}", param="steering")
    try:
        return steering.body()
    except SteeringSpecError as err:
        raise PersonaSteerError(str(err), param=err.param) from None


def _collection(kind: str) -> str:
    if kind not in _KIND_PATH:
        raise PersonaSteerError(f"kind must be 'persona' or 'trait', got {kind!r}", param="kind")
    return _KIND_PATH[kind]


def _vector_path(kind: str, name: str, suffix: str = "") -> str:
    return f"/api/{_collection(kind)}/{name}{suffix}"


def _pick_model(models: list[dict]) -> str:
    """The base model's id (the others are `persona:<name>`)."""
    ids = [m["id"] for m in models]
    base = [i for i in ids if not i.startswith(PERSONA_MODEL_PREFIX)]
    if not (base or ids):
        raise PersonaSteerError("the server lists no models")
    return (base or ids)[0]


def _json_of(resp: httpx.Response) -> Any:
    if not resp.content:
        return {}
    try:
        return resp.json()
    except ValueError:
        raise PersonaSteerError(f"{resp.request.url.path} answered non-JSON: {resp.text[:200]!r}",
                                resp.status_code) from None


def _content_of(resp: httpx.Response) -> bytes:
    return resp.content


# --- calls: what a method asks its client to send ---------------------------------------------
@dataclass
class _Http:
    """One REST request; `read` turns the answer into the method's result. With events=True
    the answer is an SSE stream and the result an iterator of `read(event dict)`."""
    method: str
    path: str
    kw: dict = field(default_factory=dict)
    read: Callable[[Any], Any] = _json_of
    events: bool = False


@dataclass
class _OpenAI:
    """One openai SDK call on "chat" (chat.completions) or "completions"; a stream's result is
    an iterator of ChatDelta."""
    endpoint: str
    kw: dict


@dataclass
class _Follow:
    """Read an event stream, handing each item to `on_item`, until `until(item)`; the result
    is the last item (None when the stream was empty)."""
    source: _Http
    until: Callable[[Any], bool]
    on_item: Callable[[Any], None] | None = None


Spec = Generator[Any, Any, Any]   # a method: yields calls, receives their results, returns


def _streams(spec: Callable[..., Spec]) -> Callable[..., Spec]:
    """Marks a method whose result is a stream: the sync client's method is then a generator
    and the async client's an async generator (iterate it; nothing to await)."""
    spec.streams = True
    return spec


class _Methods:
    """Every client method, once, as a generator of calls (see the module's docstring). Public
    names become PersonaSteerClient's methods and AsyncPersonaSteerClient's coroutines."""
    _model: str | None

    # --- status ------------------------------------------------------------------------------
    def health(self) -> Spec:
        return (yield _Http("GET", "/health"))

    def status(self) -> Spec:
        return (yield _Http("GET", "/api/status"))

    def models(self) -> Spec:
        return (yield _Http("GET", "/v1/models"))["data"]

    def default_model(self) -> Spec:
        """The base model's id (asked once, then remembered)."""
        if self._model is None:
            self._model = _pick_model((yield from _Methods.models(self)))
        return self._model

    def set_steering_scale(self, scale: float) -> Spec:
        body = _steering_body(SteeringRequest(scale=scale), {})
        return (yield _Http("POST", "/api/steering-scale", {"json": {"scale": body["scale"]}}))

    def similarity(self, layer: int | None = None, kind: str | None = None) -> Spec:
        params = _given({"layer": layer, "kind": kind})
        return (yield _Http("GET", "/api/vectors/similarity", {"params": params}))

    def equalize(self, names: Sequence[str] | None = None, kind: str = "persona",
                 by: str = "norm", write: bool | None = None) -> Spec:
        """by "norm": rescale the named vectors on the server so each has the set's mean norm
        per layer (write=False: only the factors); returns {"kind", "by", "written", "names",
        "factors": {name: {layer: factor}}}.
        by "tuned": which is stronger from the tuned strengths (names None: every one);
        write=True rescales the tuned ones to one strength; returns {"kind", "by",
        "common_strength", "written", "names", "strengths": [...]} (docs/tuning.md)."""
        body: dict = {"kind": kind}
        if by != "norm":
            body["by"] = by
        if names is not None:
            body["names"] = list(names)
        if write is not None:
            body["write"] = bool(write)
        return (yield _Http("POST", "/api/vectors/equalize", {"json": body}))

    # --- personas / traits -------------------------------------------------------------------
    def list_vectors(self, kind: str) -> Spec:
        collection = _collection(kind)
        return (yield _Http("GET", f"/api/{collection}"))[collection]

    def list_personas(self) -> Spec:
        return (yield from _Methods.list_vectors(self, "persona"))

    def list_traits(self) -> Spec:
        return (yield from _Methods.list_vectors(self, "trait"))

    def get_vector(self, kind: str, name: str) -> Spec:
        return (yield _Http("GET", _vector_path(kind, name)))

    def delete_vector(self, kind: str, name: str) -> Spec:
        return (yield _Http("DELETE", _vector_path(kind, name)))

    def load_vector(self, kind: str, name: str) -> Spec:
        return (yield _Http("POST", _vector_path(kind, name, "/load")))

    def unload_vector(self, kind: str, name: str) -> Spec:
        return (yield _Http("POST", _vector_path(kind, name, "/unload")))

    def download_vector(self, kind: str, name: str,
                        dest: str | os.PathLike | None = None) -> Spec:
        """The vector's safetensors bytes (also written to `dest` when given)."""
        data = yield _Http("GET", _vector_path(kind, name, "/vector"), read=_content_of)
        if dest is not None:
            Path(dest).write_bytes(data)
        return data

    def upload_vector(self, kind: str, name: str, data: bytes | str | os.PathLike) -> Spec:
        """Store safetensors bytes (or a file's) as the named vector."""
        if not isinstance(data, (bytes, bytearray)):
            data = Path(data).read_bytes()
        return (yield _Http("PUT", _vector_path(kind, name, "/vector"),
                            {"content": bytes(data),
                             "headers": {"Content-Type": "application/octet-stream"}}))

    def create_persona(self, name: str, *, description: str | None = None,
                       archetype: str | None = None) -> Spec:
        if bool(description) == bool(archetype):
            raise PersonaSteerError("give exactly one of description or archetype")
        body = {"name": name, "description": description} if description else \
            {"name": name, "archetype": archetype}
        return Job.from_dict((yield _Http("POST", "/api/personas", {"json": body})))

    def create_trait(self, word: str, opposite: str, name: str | None = None) -> Spec:
        body = {"word": word, "opposite": opposite, **({"name": name} if name else {})}
        return Job.from_dict((yield _Http("POST", "/api/traits", {"json": body})))

    # --- jobs --------------------------------------------------------------------------------
    def job(self, job_id: str) -> Spec:
        return Job.from_dict((yield _Http("GET", f"/api/jobs/{job_id}")))

    def jobs(self) -> Spec:
        return [Job.from_dict(j) for j in (yield _Http("GET", "/api/jobs"))["jobs"]]

    def cancel_job(self, job_id: str) -> Spec:
        return Job.from_dict((yield _Http("DELETE", f"/api/jobs/{job_id}")))

    def _job_events(self, job_id: str, read: Callable[[dict], Any] = lambda e: e) -> _Http:
        # no read timeout: a job's stream is quiet between stages (the server pings every 15 s)
        return _Http("GET", f"/api/jobs/{job_id}/events", read=read, events=True,
                     kw={"timeout": httpx.Timeout(None, connect=self.connect_timeout_s)})

    @_streams
    def job_events(self, job_id: str) -> Spec:
        """The job's SSE events (each the job record, `event` its status or "progress") as
        dicts, until the server closes the stream when the job ends."""
        return (yield self._job_events(job_id))

    def wait_job(self, job_id: str, on_event: Callable[[Job], None] | None = None) -> Spec:
        """Follow the job's event stream until it finishes; returns the final state."""
        last = yield _Follow(self._job_events(job_id, lambda e: Job.from_dict(e)),
                             until=lambda job: job.finished, on_item=on_event)
        final = yield from _Methods.job(self, job_id)
        return final if final.finished or last is None else last

    # --- generation --------------------------------------------------------------------------
    def _chat_call(self, messages: str | Sequence[Mapping[str, Any]],
                   steering: SteeringRequest | Mapping[str, Any] | None, model: str | None,
                   system: str | None, thinking: bool | None, stream: bool,
                   options: dict[str, Any]) -> Spec:
        body = _steering_body(steering, options)
        if thinking is not None:
            body["chat_template_kwargs"] = {"enable_thinking": bool(thinking)}
        kw: dict[str, Any] = {"model": model or (yield from _Methods.default_model(self)),
                              "messages": _messages(messages, system), "stream": stream}
        if stream:
            kw["stream_options"] = {"include_usage": True}
        return _OpenAI("chat", _with_body(kw, body, options))

    def chat(self, messages: str | Sequence[Mapping[str, Any]],
             steering: SteeringRequest | Mapping[str, Any] | None = None, *,
             model: str | None = None, system: str | None = None, thinking: bool | None = None,
             **options: Any) -> Spec:
        """Non-streaming chat completion (the openai SDK's ChatCompletion; `.steering` echoes
        the steering applied). `steering`: a SteeringRequest, or its fields as keywords
        (persona=, strength=, blend=, traits=, scale=, safety=). `thinking`: the chat
        template's enable_thinking. Other keywords are OpenAI fields (max_tokens, temperature,
        seed, presence_penalty, ...); None leaves one out."""
        return (yield (yield from self._chat_call(messages, steering, model, system, thinking,
                                                  False, options)))

    def chat_text(self, messages: str | Sequence[Mapping[str, Any]],
                  steering: SteeringRequest | Mapping[str, Any] | None = None,
                  **options: Any) -> Spec:
        """chat()'s answer text."""
        resp = yield from _Methods.chat(self, messages, steering, **options)
        return resp.choices[0].message.content or ""

    @_streams
    def chat_stream(self, messages: str | Sequence[Mapping[str, Any]],
                    steering: SteeringRequest | Mapping[str, Any] | None = None, *,
                    model: str | None = None, system: str | None = None,
                    thinking: bool | None = None, **options: Any) -> Spec:
        """Streaming chat (chat()'s arguments): ChatDelta pieces as the server sends them."""
        return (yield (yield from self._chat_call(messages, steering, model, system, thinking,
                                                  True, options)))

    def complete(self, prompt: str, steering: SteeringRequest | Mapping[str, Any] | None = None,
                 *, model: str | None = None, stream: bool = False, **options: Any) -> Spec:
        """Raw-prompt completion (/v1/completions); with stream=True an iterator of ChatDelta
        (the async client's: an async iterator)."""
        body = _steering_body(steering, options)
        kw = {"model": model or (yield from _Methods.default_model(self)), "prompt": prompt,
              "stream": stream}
        return (yield _OpenAI("completions", _with_body(kw, body, options)))


def _with_body(kw: dict[str, Any], body: dict[str, Any], options: dict[str, Any]) -> dict:
    """The SDK call's arguments: `kw`, the given OpenAI fields, and the steering fields in
    extra_body (joined with one the caller passed)."""
    out = {**kw, **_given(options)}
    extra = {**(out.get("extra_body") or {}), **body}
    out["extra_body"] = extra or None
    return out


# --- the two clients: one sends the calls with blocking I/O, the other with asyncio ------------
def _sync_method(spec: Callable[..., Spec]) -> Callable:
    if getattr(spec, "streams", False):
        @functools.wraps(spec)
        def stream_method(self, *args, **kwargs) -> Iterator:
            yield from self._run(spec(self, *args, **kwargs))   # lazy, like the stream itself
        return stream_method

    @functools.wraps(spec)
    def method(self, *args, **kwargs):
        return self._run(spec(self, *args, **kwargs))
    return method


def _async_method(spec: Callable[..., Spec]) -> Callable:
    if getattr(spec, "streams", False):
        @functools.wraps(spec)
        async def stream_method(self, *args, **kwargs) -> AsyncIterator:
            async for item in await self._run(spec(self, *args, **kwargs)):
                yield item
        return stream_method

    @functools.wraps(spec)
    async def method(self, *args, **kwargs):
        return await self._run(spec(self, *args, **kwargs))
    return method


def _bind(make: Callable[[Callable[..., Spec]], Callable]):
    """Class decorator: every public method of _Methods, made by `make`."""
    def bind(cls):
        for name, spec in vars(_Methods).items():
            if not name.startswith("_") and inspect.isgeneratorfunction(spec):
                method = make(spec)
                method.__signature__ = inspect.signature(spec).replace(
                    return_annotation=inspect.Signature.empty)
                setattr(cls, name, method)
        return cls
    return bind


class _Base(_Methods):
    def __init__(self, base_url: str | None = None, api_key: str | None = None,
                 timeout: float | None = None):
        if base_url is None:
            from persona_steer.config import load_config
            settings = load_config()
            base_url = settings.server_url
            api_key = api_key if api_key is not None else settings.server.api_key
        if api_key is None:
            api_key = os.environ.get("PERSONA_STEER_API_KEY") or None
        if not base_url.startswith(("http://", "https://")):
            raise PersonaSteerError(f"server URL must start with http:// or https://, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.read_timeout_s, self.connect_timeout_s = _timeout_seconds(timeout)
        self._model = None
        self._openai_client = None

    @property
    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    @property
    def _httpx_timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.read_timeout_s, connect=self.connect_timeout_s)

    def _openai_kwargs(self) -> dict:
        """Arguments for the openai SDK's client pointed at this server's /v1 (any major: the
        timeout is the SDK's own Timeout type, built from plain numbers)."""
        timeout = _openai().Timeout(self.read_timeout_s, connect=self.connect_timeout_s)
        return dict(base_url=self.base_url + "/v1", api_key=self.api_key or "none",
                    timeout=timeout, max_retries=0)

    def _create(self, call: _OpenAI):
        """The SDK's create() for the call's endpoint."""
        api = self.openai.chat.completions if call.endpoint == "chat" else self.openai.completions
        return api.create

    def _unreachable(self, err: Exception) -> ServerUnreachable:
        return ServerUnreachable(self.base_url, type(err).__name__)

    def _failed(self, path: str, err: Exception) -> PersonaSteerError:
        return PersonaSteerError(f"request to {self.base_url}{path} failed: {err}")


@_bind(_sync_method)
class PersonaSteerClient(_Base):
    """Synchronous client. Use as a context manager or call close()."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None,
                 timeout: float | None = None):
        super().__init__(base_url, api_key, timeout)
        self.http = httpx.Client(base_url=self.base_url, headers=self._headers,
                                 timeout=self._httpx_timeout)

    @property
    def openai(self):
        """The official openai SDK client pointed at this server's /v1."""
        if self._openai_client is None:
            self._openai_client = _openai().OpenAI(**self._openai_kwargs())
        return self._openai_client

    def __enter__(self) -> "PersonaSteerClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()
        if self._openai_client is not None:
            self._openai_client.close()

    def request(self, method: str, path: str, **kw) -> httpx.Response:
        """One REST request; an error status raises PersonaSteerError."""
        try:
            resp = self.http.request(method, path, **kw)
        except (httpx.ConnectError, httpx.ConnectTimeout) as err:
            raise self._unreachable(err) from None
        except httpx.HTTPError as err:
            raise self._failed(path, err) from None
        if resp.status_code >= 400:
            raise _error_from_response(resp)
        return resp

    def _run(self, spec: Spec) -> Any:
        result = None
        while True:
            try:
                call = spec.send(result)
            except StopIteration as done:
                return done.value
            result = self._send(call)

    def _send(self, call: _Http | _OpenAI | _Follow) -> Any:
        if isinstance(call, _Follow):
            last = None
            with contextlib.closing(self._send(call.source)) as items:   # closes the stream
                for item in items:
                    last = item
                    if call.on_item is not None:
                        call.on_item(item)
                    if call.until(item):
                        break
            return last
        if isinstance(call, _OpenAI):
            try:
                result = self._create(call)(**call.kw)
            except _openai().OpenAIError as err:
                raise _convert_openai_error(err, self.base_url) from None
            return self._deltas(result) if call.kw["stream"] else result
        if call.events:
            return self._events(call)
        return call.read(self.request(call.method, call.path, **call.kw))

    def _events(self, call: _Http) -> Iterator[Any]:
        try:
            with self.http.stream(call.method, call.path, **call.kw) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise _error_from_response(resp)
                for event in _iter_sse(resp.iter_lines()):
                    yield call.read(event)
        except (httpx.ConnectError, httpx.ConnectTimeout) as err:
            raise self._unreachable(err) from None

    def _deltas(self, stream) -> Iterator[ChatDelta]:
        try:
            with stream:
                for chunk in stream:
                    yield _delta_from_chunk(chunk)
        except _openai().OpenAIError as err:
            raise _convert_openai_error(err, self.base_url) from None


@_bind(_async_method)
class AsyncPersonaSteerClient(_Base):
    """asyncio client: PersonaSteerClient's methods as coroutines; the streams (chat_stream,
    job_events) are async iterators. Use as an async context manager or await aclose()."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None,
                 timeout: float | None = None):
        super().__init__(base_url, api_key, timeout)
        self.http = httpx.AsyncClient(base_url=self.base_url, headers=self._headers,
                                      timeout=self._httpx_timeout)

    @property
    def openai(self):
        """The official openai SDK's AsyncOpenAI pointed at this server's /v1."""
        if self._openai_client is None:
            self._openai_client = _openai().AsyncOpenAI(**self._openai_kwargs())
        return self._openai_client

    async def __aenter__(self) -> "AsyncPersonaSteerClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()
        if self._openai_client is not None:
            await self._openai_client.close()

    async def request(self, method: str, path: str, **kw) -> httpx.Response:
        """One REST request; an error status raises PersonaSteerError."""
        try:
            resp = await self.http.request(method, path, **kw)
        except (httpx.ConnectError, httpx.ConnectTimeout) as err:
            raise self._unreachable(err) from None
        except httpx.HTTPError as err:
            raise self._failed(path, err) from None
        if resp.status_code >= 400:
            raise _error_from_response(resp)
        return resp

    async def _run(self, spec: Spec) -> Any:
        result = None
        while True:
            try:
                call = spec.send(result)
            except StopIteration as done:
                return done.value
            result = await self._send(call)

    async def _send(self, call: _Http | _OpenAI | _Follow) -> Any:
        if isinstance(call, _Follow):
            last = None
            async with contextlib.aclosing(await self._send(call.source)) as items:
                async for item in items:
                    last = item
                    if call.on_item is not None:
                        call.on_item(item)
                    if call.until(item):
                        break
            return last
        if isinstance(call, _OpenAI):
            try:
                result = await self._create(call)(**call.kw)
            except _openai().OpenAIError as err:
                raise _convert_openai_error(err, self.base_url) from None
            return self._deltas(result) if call.kw["stream"] else result
        if call.events:
            return self._events(call)
        return call.read(await self.request(call.method, call.path, **call.kw))

    async def _events(self, call: _Http) -> AsyncIterator[Any]:
        parser = _SSEParser()
        try:
            async with self.http.stream(call.method, call.path, **call.kw) as resp:
                if resp.status_code >= 400:
                    await resp.aread()
                    raise _error_from_response(resp)
                async for line in resp.aiter_lines():
                    event = parser.feed(line)
                    if event is not None:
                        yield call.read(event)
                event = parser.flush()
                if event is not None:
                    yield call.read(event)
        except (httpx.ConnectError, httpx.ConnectTimeout) as err:
            raise self._unreachable(err) from None

    async def _deltas(self, stream) -> AsyncIterator[ChatDelta]:
        try:
            async with stream:
                async for chunk in stream:
                    yield _delta_from_chunk(chunk)
        except _openai().OpenAIError as err:
            raise _convert_openai_error(err, self.base_url) from None
