"""The project's one HTTP client: a small typed wrapper over httpx (REST API) and the official
`openai` SDK (OpenAI routes), sync and async.

    from clients.client import PersonaSteerClient
    c = PersonaSteerClient("http://127.0.0.1:8000")
    print(c.chat_text("Hello", persona="pirate", strength=0.8))
    for piece in c.chat_stream([{"role": "user", "content": "Hi"}], traits={"formal": 0.4}):
        print(piece.content, end="", flush=True)

Every server error arrives as `PersonaSteerError` (status, message, type, param, code, taken
from the OpenAI-style error body); a server that cannot be reached raises `ServerUnreachable`.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterator, Mapping, Sequence

import httpx

KINDS = ("persona", "trait")


def _openai():
    """The openai SDK, imported on first use (it takes about a second; REST calls skip it)."""
    import openai
    return openai

_KIND_PATH = {"persona": "personas", "trait": "traits"}
FINISHED_JOB_STATES = ("done", "succeeded", "success", "completed", "failed", "error", "cancelled")
DEFAULT_TIMEOUT_S = 120.0   # read/write/pool, per request (a long generation streams within it)
CONNECT_TIMEOUT_S = 5.0


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


def _check_weight(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PersonaSteerError(f"{name} must be a number, got {value!r}", param=name)
    if not math.isfinite(float(value)):
        raise PersonaSteerError(f"{name} must be finite, got {value}", param=name)
    return float(value)


def steering_fields(persona: str | None = None, *, blend: Mapping[str, float] | None = None,
                    traits: Mapping[str, float] | None = None, strength: float | None = None,
                    safety: bool | None = None) -> dict[str, Any]:
    """The extra body fields the server reads (only the ones that were given)."""
    body: dict[str, Any] = {}
    if persona:
        body["persona"] = persona
    if blend:
        body["blend"] = {str(k): _check_weight(f"blend.{k}", v) for k, v in blend.items()}
    if traits:
        body["traits"] = {str(k): _check_weight(f"traits.{k}", v) for k, v in traits.items()}
    if strength is not None:
        body["strength"] = _check_weight("strength", strength)
    if safety is not None:
        body["safety"] = bool(safety)
    return body


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
    id: str
    status: str
    progress: float | None = None
    message: str = ""
    error: str | None = None
    raw: dict = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_JOB_STATES

    @property
    def failed(self) -> bool:
        return self.status in ("failed", "error", "cancelled")

    @classmethod
    def from_dict(cls, d: dict) -> "Job":
        job = d.get("job", d) if isinstance(d, dict) else {}
        err = job.get("error")
        if isinstance(err, dict):
            err = err.get("message")
        prog = job.get("progress")
        message = str(job.get("message") or job.get("stage") or "")
        fraction = None
        if isinstance(prog, (int, float)) and not isinstance(prog, bool):
            fraction = float(prog)
        elif isinstance(prog, dict):     # the server's {"stage", "done", "total", "message"}
            done, total = prog.get("done"), prog.get("total")
            if isinstance(done, (int, float)) and isinstance(total, (int, float)) and total > 0:
                fraction = min(1.0, float(done) / float(total))
            message = " · ".join(str(x) for x in (prog.get("stage"), prog.get("message")) if x) \
                or message
        return cls(id=str(job.get("id") or job.get("job_id") or ""),
                   status=str(job.get("status") or job.get("state") or "unknown"),
                   progress=fraction, message=message, error=err, raw=job)


def _iter_sse(lines: Iterator[str]) -> Iterator[dict]:
    """Parse `data:` lines of an SSE stream into dicts (non-JSON data is wrapped)."""
    data: list[str] = []
    event = None
    for line in lines:
        if line == "":
            if data:
                yield _sse_event(event, "\n".join(data))
            data, event = [], None
        elif line.startswith(":"):
            continue
        elif line.startswith("data:"):
            data.append(line[5:].lstrip(" "))
        elif line.startswith("event:"):
            event = line[6:].strip()
    if data:
        yield _sse_event(event, "\n".join(data))


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
            out.reasoning += (getattr(delta, "reasoning_content", None)
                              or getattr(delta, "reasoning", None) or "")
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


class _Base:
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
        self._model: str | None = None

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

    @staticmethod
    def _vector_path(kind: str, name: str, suffix: str = "") -> str:
        if kind not in _KIND_PATH:
            raise PersonaSteerError(f"kind must be 'persona' or 'trait', got {kind!r}", param="kind")
        return f"/api/{_KIND_PATH[kind]}/{name}{suffix}"

    @staticmethod
    def _chat_kwargs(model: str, messages: list[dict], stream: bool, steering: dict,
                     max_tokens: int | None, temperature: float | None, seed: int | None,
                     thinking: bool | None, extra: dict) -> dict:
        body = dict(steering)
        if thinking is not None:
            body["chat_template_kwargs"] = {"enable_thinking": bool(thinking)}
        kw: dict[str, Any] = {"model": model, "messages": messages, "stream": stream,
                              "extra_body": body or None}
        if max_tokens is not None:
            kw["max_tokens"] = max_tokens
        if temperature is not None:
            kw["temperature"] = temperature
        if seed is not None:
            kw["seed"] = seed
        if stream:
            kw["stream_options"] = {"include_usage": True}
        kw.update(extra)
        return kw

    @staticmethod
    def _pick_model(models: list[dict]) -> str:
        ids = [m.get("id") for m in models if isinstance(m, dict) and m.get("id")]
        base = [i for i in ids if not str(i).startswith(("persona:", "persona/"))]
        if not (base or ids):
            raise PersonaSteerError("the server lists no models")
        return (base or ids)[0]


class PersonaSteerClient(_Base):
    """Synchronous client. Use as a context manager or call close()."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None,
                 timeout: float | None = None):
        super().__init__(base_url, api_key, timeout)
        self.http = httpx.Client(base_url=self.base_url, headers=self._headers,
                                 timeout=self._httpx_timeout)
        self._openai_client = None

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

    # --- plumbing ----------------------------------------------------------------------
    def request(self, method: str, path: str, **kw) -> httpx.Response:
        try:
            resp = self.http.request(method, path, **kw)
        except (httpx.ConnectError, httpx.ConnectTimeout) as err:
            raise ServerUnreachable(self.base_url, type(err).__name__) from None
        except httpx.HTTPError as err:
            raise PersonaSteerError(f"request to {self.base_url}{path} failed: {err}") from None
        if resp.status_code >= 400:
            raise _error_from_response(resp)
        return resp

    def _json(self, method: str, path: str, **kw) -> Any:
        resp = self.request(method, path, **kw)
        if not resp.content:
            return {}
        try:
            return resp.json()
        except ValueError:
            raise PersonaSteerError(f"{path} answered non-JSON: {resp.text[:200]!r}",
                                    resp.status_code) from None

    # --- status --------------------------------------------------------------------------
    def health(self) -> dict:
        return self._json("GET", "/health")

    def status(self) -> dict:
        return self._json("GET", "/api/status")

    def models(self) -> list[dict]:
        data = self._json("GET", "/v1/models")
        return data.get("data", []) if isinstance(data, dict) else data

    def default_model(self) -> str:
        if self._model is None:
            self._model = self._pick_model(self.models())
        return self._model

    def set_steering_scale(self, scale: float) -> dict:
        return self._json("POST", "/api/steering-scale", json={"scale": _check_weight("scale", scale)})

    def similarity(self, layer: int | None = None, kind: str | None = None) -> dict:
        params = {k: v for k, v in (("layer", layer), ("kind", kind)) if v is not None}
        return self._json("GET", "/api/vectors/similarity", params=params)

    def equalize(self, names: Sequence[str], kind: str = "persona") -> dict:
        """Rescale the named vectors on the server so each has the set's mean norm per layer;
        returns {"kind", "names", "factors": {name: {layer: factor}}}."""
        return self._json("POST", "/api/vectors/equalize", json={"names": list(names), "kind": kind})

    # --- personas / traits ---------------------------------------------------------------
    def list_vectors(self, kind: str) -> list[dict]:
        data = self._json("GET", f"/api/{_KIND_PATH.get(kind, kind)}")
        if isinstance(data, dict):
            for key in (_KIND_PATH.get(kind, kind), "data", "items"):
                if isinstance(data.get(key), list):
                    return data[key]
        return data if isinstance(data, list) else []

    def list_personas(self) -> list[dict]:
        return self.list_vectors("persona")

    def list_traits(self) -> list[dict]:
        return self.list_vectors("trait")

    def get_vector(self, kind: str, name: str) -> dict:
        return self._json("GET", self._vector_path(kind, name))

    def delete_vector(self, kind: str, name: str) -> dict:
        return self._json("DELETE", self._vector_path(kind, name))

    def load_vector(self, kind: str, name: str) -> dict:
        return self._json("POST", self._vector_path(kind, name, "/load"))

    def unload_vector(self, kind: str, name: str) -> dict:
        return self._json("POST", self._vector_path(kind, name, "/unload"))

    def download_vector(self, kind: str, name: str, dest: str | os.PathLike | None = None) -> bytes:
        data = self.request("GET", self._vector_path(kind, name, "/vector")).content
        if dest is not None:
            Path(dest).write_bytes(data)
        return data

    def upload_vector(self, kind: str, name: str, data: bytes | str | os.PathLike) -> dict:
        if not isinstance(data, (bytes, bytearray)):
            data = Path(data).read_bytes()
        return self._json("PUT", self._vector_path(kind, name, "/vector"), content=bytes(data),
                          headers={"Content-Type": "application/octet-stream"})

    def create_persona(self, name: str, *, description: str | None = None,
                       archetype: str | None = None) -> Job:
        if bool(description) == bool(archetype):
            raise PersonaSteerError("give exactly one of description or archetype")
        body = {"name": name, "description": description} if description else \
            {"name": name, "archetype": archetype}
        return Job.from_dict(self._json("POST", "/api/personas", json=body))

    def create_trait(self, word: str, opposite: str, name: str | None = None) -> Job:
        body = {"word": word, "opposite": opposite}
        if name:
            body["name"] = name
        return Job.from_dict(self._json("POST", "/api/traits", json=body))

    # --- jobs ------------------------------------------------------------------------------
    def job(self, job_id: str) -> Job:
        return Job.from_dict(self._json("GET", f"/api/jobs/{job_id}"))

    def jobs(self) -> list[Job]:
        data = self._json("GET", "/api/jobs")
        return [Job.from_dict(j) for j in (data.get("jobs", []) if isinstance(data, dict) else data)]

    def cancel_job(self, job_id: str) -> Job:
        return Job.from_dict(self._json("DELETE", f"/api/jobs/{job_id}"))

    def job_events(self, job_id: str) -> Iterator[dict]:
        """The job's SSE progress events as dicts, until the server closes the stream."""
        try:
            with self.http.stream("GET", f"/api/jobs/{job_id}/events",
                                  timeout=httpx.Timeout(None, connect=self.connect_timeout_s)) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise _error_from_response(resp)
                yield from _iter_sse(resp.iter_lines())
        except (httpx.ConnectError, httpx.ConnectTimeout) as err:
            raise ServerUnreachable(self.base_url, type(err).__name__) from None

    def wait_job(self, job_id: str, on_event: Callable[[Job], None] | None = None) -> Job:
        """Follow the job's event stream until it finishes; returns the final state."""
        last = None
        for event in self.job_events(job_id):
            last = Job.from_dict({**event, "id": event.get("id", job_id)})
            if on_event:
                on_event(last)
            if last.finished:
                break
        final = self.job(job_id)
        return final if final.finished or last is None else last

    # --- generation ------------------------------------------------------------------------
    def chat(self, messages: str | Sequence[Mapping[str, Any]], *, model: str | None = None,
             persona: str | None = None, blend: Mapping[str, float] | None = None,
             traits: Mapping[str, float] | None = None, strength: float | None = None,
             safety: bool | None = None, system: str | None = None, max_tokens: int | None = None,
             temperature: float | None = None, seed: int | None = None,
             thinking: bool | None = None, **extra) -> Any:
        """Non-streaming chat completion (the openai SDK's ChatCompletion; `.steering` echoes)."""
        kw = self._chat_kwargs(model or self.default_model(), _messages(messages, system), False,
                               steering_fields(persona, blend=blend, traits=traits,
                                               strength=strength, safety=safety),
                               max_tokens, temperature, seed, thinking, extra)
        try:
            return self.openai.chat.completions.create(**kw)
        except _openai().OpenAIError as err:
            raise _convert_openai_error(err, self.base_url) from None

    def chat_text(self, messages: str | Sequence[Mapping[str, Any]], **kw) -> str:
        return self.chat(messages, **kw).choices[0].message.content or ""

    def chat_stream(self, messages: str | Sequence[Mapping[str, Any]], *, model: str | None = None,
                    persona: str | None = None, blend: Mapping[str, float] | None = None,
                    traits: Mapping[str, float] | None = None, strength: float | None = None,
                    safety: bool | None = None, system: str | None = None,
                    max_tokens: int | None = None, temperature: float | None = None,
                    seed: int | None = None, thinking: bool | None = None,
                    monitor: Sequence[str] | None = None,
                    **extra) -> Iterator[ChatDelta]:
        """Streaming chat: yields ChatDelta pieces as the server sends them (`monitor`: names
        whose readings come on the pieces' `.monitor`)."""
        body = steering_fields(persona, blend=blend, traits=traits, strength=strength,
                               safety=safety)
        if monitor is not None:
            body["monitor"] = list(monitor)
        kw = self._chat_kwargs(model or self.default_model(), _messages(messages, system), True,
                               body, max_tokens, temperature, seed, thinking, extra)
        try:
            stream = self.openai.chat.completions.create(**kw)
            with stream:
                for chunk in stream:
                    yield _delta_from_chunk(chunk)
        except _openai().OpenAIError as err:
            raise _convert_openai_error(err, self.base_url) from None

    def complete(self, prompt: str, *, model: str | None = None, stream: bool = False,
                 persona: str | None = None, blend: Mapping[str, float] | None = None,
                 traits: Mapping[str, float] | None = None, strength: float | None = None,
                 safety: bool | None = None, max_tokens: int | None = None,
                 temperature: float | None = None, seed: int | None = None, **extra) -> Any:
        """Raw-prompt completion (/v1/completions); with stream=True an iterator of ChatDelta."""
        body = steering_fields(persona, blend=blend, traits=traits, strength=strength, safety=safety)
        kw: dict[str, Any] = {"model": model or self.default_model(), "prompt": prompt,
                              "stream": stream, "extra_body": body or None, **extra}
        for k, v in (("max_tokens", max_tokens), ("temperature", temperature), ("seed", seed)):
            if v is not None:
                kw[k] = v
        try:
            result = self.openai.completions.create(**kw)
        except _openai().OpenAIError as err:
            raise _convert_openai_error(err, self.base_url) from None
        if not stream:
            return result
        return self._wrap_stream(result)

    def _wrap_stream(self, stream) -> Iterator[ChatDelta]:
        try:
            with stream:
                for chunk in stream:
                    yield _delta_from_chunk(chunk)
        except _openai().OpenAIError as err:
            raise _convert_openai_error(err, self.base_url) from None


class AsyncPersonaSteerClient(_Base):
    """asyncio client with PersonaSteerClient's methods (awaitable / async iterators), except the
    sync conveniences chat_text, list_personas/list_traits, similarity, jobs, job_events and
    wait_job."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None,
                 timeout: float | None = None):
        super().__init__(base_url, api_key, timeout)
        self.http = httpx.AsyncClient(base_url=self.base_url, headers=self._headers,
                                      timeout=self._httpx_timeout)
        self._openai_client = None

    @property
    def openai(self):
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
        try:
            resp = await self.http.request(method, path, **kw)
        except (httpx.ConnectError, httpx.ConnectTimeout) as err:
            raise ServerUnreachable(self.base_url, type(err).__name__) from None
        except httpx.HTTPError as err:
            raise PersonaSteerError(f"request to {self.base_url}{path} failed: {err}") from None
        if resp.status_code >= 400:
            raise _error_from_response(resp)
        return resp

    async def _json(self, method: str, path: str, **kw) -> Any:
        resp = await self.request(method, path, **kw)
        return resp.json() if resp.content else {}

    async def health(self) -> dict:
        return await self._json("GET", "/health")

    async def status(self) -> dict:
        return await self._json("GET", "/api/status")

    async def models(self) -> list[dict]:
        data = await self._json("GET", "/v1/models")
        return data.get("data", []) if isinstance(data, dict) else data

    async def default_model(self) -> str:
        if self._model is None:
            self._model = self._pick_model(await self.models())
        return self._model

    async def set_steering_scale(self, scale: float) -> dict:
        return await self._json("POST", "/api/steering-scale",
                                json={"scale": _check_weight("scale", scale)})

    async def equalize(self, names: Sequence[str], kind: str = "persona") -> dict:
        return await self._json("POST", "/api/vectors/equalize",
                                json={"names": list(names), "kind": kind})

    async def list_vectors(self, kind: str) -> list[dict]:
        data = await self._json("GET", f"/api/{_KIND_PATH.get(kind, kind)}")
        if isinstance(data, dict):
            for key in (_KIND_PATH.get(kind, kind), "data", "items"):
                if isinstance(data.get(key), list):
                    return data[key]
        return data if isinstance(data, list) else []

    async def get_vector(self, kind: str, name: str) -> dict:
        return await self._json("GET", self._vector_path(kind, name))

    async def delete_vector(self, kind: str, name: str) -> dict:
        return await self._json("DELETE", self._vector_path(kind, name))

    async def load_vector(self, kind: str, name: str) -> dict:
        return await self._json("POST", self._vector_path(kind, name, "/load"))

    async def unload_vector(self, kind: str, name: str) -> dict:
        return await self._json("POST", self._vector_path(kind, name, "/unload"))

    async def download_vector(self, kind: str, name: str) -> bytes:
        return (await self.request("GET", self._vector_path(kind, name, "/vector"))).content

    async def upload_vector(self, kind: str, name: str, data: bytes) -> dict:
        return await self._json("PUT", self._vector_path(kind, name, "/vector"), content=bytes(data),
                                headers={"Content-Type": "application/octet-stream"})

    async def create_trait(self, word: str, opposite: str, name: str | None = None) -> Job:
        body = {"word": word, "opposite": opposite, **({"name": name} if name else {})}
        return Job.from_dict(await self._json("POST", "/api/traits", json=body))

    async def create_persona(self, name: str, *, description: str | None = None,
                             archetype: str | None = None) -> Job:
        if bool(description) == bool(archetype):
            raise PersonaSteerError("give exactly one of description or archetype")
        body = {"name": name, "description": description} if description else \
            {"name": name, "archetype": archetype}
        return Job.from_dict(await self._json("POST", "/api/personas", json=body))

    async def cancel_job(self, job_id: str) -> Job:
        return Job.from_dict(await self._json("DELETE", f"/api/jobs/{job_id}"))

    async def job(self, job_id: str) -> Job:
        return Job.from_dict(await self._json("GET", f"/api/jobs/{job_id}"))

    async def chat(self, messages, *, model: str | None = None, persona: str | None = None,
                   blend=None, traits=None, strength: float | None = None,
                   safety: bool | None = None, system: str | None = None,
                   max_tokens: int | None = None, temperature: float | None = None,
                   seed: int | None = None, thinking: bool | None = None, **extra) -> Any:
        kw = self._chat_kwargs(model or await self.default_model(), _messages(messages, system),
                               False, steering_fields(persona, blend=blend, traits=traits,
                                                      strength=strength, safety=safety),
                               max_tokens, temperature, seed, thinking, extra)
        try:
            return await self.openai.chat.completions.create(**kw)
        except _openai().OpenAIError as err:
            raise _convert_openai_error(err, self.base_url) from None

    async def chat_stream(self, messages, *, model: str | None = None,
                          persona: str | None = None, blend=None, traits=None,
                          strength: float | None = None, safety: bool | None = None,
                          system: str | None = None, max_tokens: int | None = None,
                          temperature: float | None = None, seed: int | None = None,
                          thinking: bool | None = None, **extra) -> AsyncIterator[ChatDelta]:
        kw = self._chat_kwargs(model or await self.default_model(), _messages(messages, system),
                               True, steering_fields(persona, blend=blend, traits=traits,
                                                     strength=strength, safety=safety),
                               max_tokens, temperature, seed, thinking, extra)
        try:
            stream = await self.openai.chat.completions.create(**kw)
            async with stream:
                async for chunk in stream:
                    yield _delta_from_chunk(chunk)
        except _openai().OpenAIError as err:
            raise _convert_openai_error(err, self.base_url) from None

    async def complete(self, prompt: str, *, model: str | None = None, persona: str | None = None,
                       blend=None, traits=None, strength: float | None = None,
                       safety: bool | None = None, max_tokens: int | None = None,
                       temperature: float | None = None, seed: int | None = None, **extra) -> Any:
        body = steering_fields(persona, blend=blend, traits=traits, strength=strength, safety=safety)
        kw: dict[str, Any] = {"model": model or await self.default_model(), "prompt": prompt,
                              "extra_body": body or None, **extra}
        for k, v in (("max_tokens", max_tokens), ("temperature", temperature), ("seed", seed)):
            if v is not None:
                kw[k] = v
        try:
            return await self.openai.completions.create(**kw)
        except _openai().OpenAIError as err:
            raise _convert_openai_error(err, self.base_url) from None
