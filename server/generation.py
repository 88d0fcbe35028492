"""From an API request to engine requests and back: steering resolution, prompts, sampling
parameters, thinking split, logprobs, and the OpenAI response/chunk shapes.

Steering per request: the API fields become a `SteeringSpec` (scale = the server's current
global scale), and the request goes to the engine with `SamplingParams.extra_args =
{"steering": {...}}`; a request whose spec is a no-op (and monitors nothing) passes no steering
at all. The server does only what HTTP needs (persona from `model`, default strength, the loaded
set, the spec); the vectors are checked, content-hashed and the prefix-cache salt set once, at
admission in vLLM's front end (`steering_plugin/admission.py`, `persona_steer.resolve.admit`),
whose errors `engine_error` turns into the same HTTP errors (404 for an unknown name, 400 naming
the field otherwise). Streams are `primed` so those errors keep their status.
"""
from __future__ import annotations

import asyncio
import dataclasses
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Optional

from persona_steer.resolve import AdmissionError, default_strength
from persona_steer.steering_spec import SteeringSpec, SteeringSpecError, build_spec
from persona_steer.structured import json_schema_constraint

from server.errors import APIError, to_api_error
from server.lifecycle import shutdown_error
from server.state import PERSONA_MODEL_PREFIX, ServerState, model_ids

# --- steering ------------------------------------------------------------------------------
@dataclass
class Steering:
    spec: Optional[SteeringSpec]          # None: unsteered (no-op spec included)
    extra_args: Optional[dict]            # admission pins hashes and salts (steering_plugin)
    applied: dict                          # echoed to the client
    monitor: tuple[str, ...] = ()          # names read per token (docs/monitoring.md)

    @property
    def steered(self) -> bool:
        return self.spec is not None


def persona_from_model(state: ServerState, model: Optional[str]) -> Optional[str]:
    """`model` may be the base id (or omitted): no persona; or `persona:<name>`."""
    if model is None or model == "" or model == state.model_id:
        return None
    if model.startswith(PERSONA_MODEL_PREFIX):
        return model[len(PERSONA_MODEL_PREFIX):]
    raise APIError(404, f"unknown model '{model}' (available: {', '.join(model_ids(state))})",
                   param="model", code="model_not_found")


def resolve_steering(state: ServerState, fields: Any, model: Optional[str] = None) -> Steering:
    """API steering fields (+ persona chosen via `model`) -> the spec and its extra_args.
    Vectors are checked at admission, when the request enters the engine (module docstring)."""
    s = state.settings.steering
    persona = getattr(fields, "persona", None)
    from_model = persona_from_model(state, model)
    if from_model is not None:
        if persona not in (None, "", from_model):
            raise APIError(400, f"model '{model}' selects persona '{from_model}' but the request "
                                f"also names persona '{persona}'", param="persona",
                           code="conflicting_persona")
        persona = from_model
    scale = getattr(fields, "scale", None)
    if scale is not None and not (math.isfinite(scale) and abs(scale) <= s.max_weight):
        raise SteeringSpecError(f"scale={scale} must be finite and within ±{s.max_weight}", "scale")
    monitor = getattr(fields, "monitor", None)
    steer_tokens = getattr(fields, "steer_tokens", None)
    spec = build_spec(persona=persona, strength=getattr(fields, "strength", None),
                      blend=getattr(fields, "blend", None), traits=getattr(fields, "traits", None),
                      scale=state.scale if scale is None else scale,
                      safety=getattr(fields, "safety", None),
                      default_strength=default_strength(state.store, persona, s.default_strength),
                      default_safety=s.safety.default,
                      max_weight=s.max_weight,
                      monitor=list(s.monitor.default) if monitor is None else monitor,
                      steer_tokens=s.steer_tokens if steer_tokens is None else steer_tokens,
                      max_monitor=s.monitor.max_names)
    applied = {**spec.to_dict(), "steered": not spec.is_noop}
    if not spec.needs_engine_args:
        return Steering(None, None, applied)
    if spec.is_noop:                       # monitors only
        return Steering(None, spec.to_extra_args(), applied, spec.monitor)
    for kind, name, _ in spec.weighted():
        if not state.is_loaded(kind, name):
            raise APIError(404, f"{kind} '{name}' is not loaded (loaded: "
                                f"{', '.join(state.loaded(kind)) or 'none'}); load it with "
                                f"POST /api/{kind}s/{name}/load", param=kind,
                           code=f"{kind}_not_loaded")
    return Steering(spec, spec.to_extra_args(), applied, spec.monitor)


# --- prompts and sampling ---------------------------------------------------------------------
def chat_prompt(state: ServerState, messages: list, template_kwargs: Optional[dict]) -> tuple[list[int], str]:
    text = _render_chat(state, _chat_messages(messages), template_kwargs)
    ids = state.tokenizer.encode(text, add_special_tokens=False)
    return list(ids), text


def _chat_messages(messages: list) -> list[dict]:
    return [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
            for m in messages]


def _render_chat(state: ServerState, msgs: list[dict], template_kwargs: Optional[dict]) -> str:
    kwargs = dict(template_kwargs or {})
    for bad in ("messages", "tokenize", "add_generation_prompt", "conversation"):
        kwargs.pop(bad, None)
    try:
        return state.tokenizer.apply_chat_template(msgs, tokenize=False,
                                                   add_generation_prompt=True, **kwargs)
    except Exception as err:
        raise APIError(400, f"chat template failed: {err}", param="messages",
                       code="chat_template_error") from None


# --- steer_tokens=last_turn: where a chat's last user turn starts ----------------------------
LAST_TURN = "last_turn"


def wants_last_turn(steering: Steering) -> bool:
    return steering.applied.get("steer_tokens") == LAST_TURN


def last_turn_start(state: ServerState, messages: list, template_kwargs: Optional[dict],
                    ids: list[int]) -> int:
    """The position of the first prompt token that the last user message decides: the chat is
    rendered again with that message's text swapped for another, and the two token lists agree
    up to there. Whatever the template (system prompt folded into the first user turn, earlier
    assistant turns rendered differently once a later user turn exists), every token before it
    (system prompt, earlier turns, the last turn's own header such as `<|im_start|>user\n`) is
    the same whatever the last user says; it and everything after it is that turn's text, the
    turns after it and the answer. (Rendering only the earlier messages and asking for a token
    prefix fails on Qwen3's own template: it renders the then-last assistant turn otherwise.)"""
    msgs = _chat_messages(messages)
    users = [i for i, m in enumerate(msgs) if m["role"] == "user"]
    if not users:
        raise APIError(400, "steer_tokens=last_turn steers from the last user message on, and "
                            "messages has no user message", param="steer_tokens",
                       code="invalid_request")
    k = users[-1]
    other = "B" if msgs[k]["content"].startswith("A") else "A"
    swapped = msgs[:k] + [{**msgs[k], "content": other}] + msgs[k + 1:]
    other_ids = state.tokenizer.encode(_render_chat(state, swapped, template_kwargs),
                                       add_special_tokens=False)
    start = next((i for i, (a, b) in enumerate(zip(ids, other_ids)) if a != b),
                 min(len(ids), len(other_ids)))
    if start >= len(ids):
        raise APIError(400, "steer_tokens=last_turn: this model's chat template does not render "
                            "the last user message into the prompt", param="steer_tokens",
                       code="invalid_request")
    return start


def steer_from(steering: Steering, start: int) -> Steering:
    """This request's steering with its first steered position: the engine reads it from
    extra_args (steer_start), admission salts with it (resolve.admit), the client sees it echoed."""
    extra = steering.extra_args
    if extra is not None:
        extra = {**extra, "steering": {**extra["steering"], "steer_start": start}}
    spec = None if steering.spec is None else dataclasses.replace(steering.spec, steer_start=start)
    return dataclasses.replace(steering, spec=spec, extra_args=extra,
                               applied={**steering.applied, "steer_start": start})


def place_last_turn(state: ServerState, steering: Steering, messages: list,
                    template_kwargs: Optional[dict], ids: list[int]) -> Steering:
    """A chat request's steering, with where it starts when it asks for steer_tokens=last_turn."""
    if not wants_last_turn(steering) or steering.extra_args is None:   # nothing reaches the engine
        return steering
    return steer_from(steering, last_turn_start(state, messages, template_kwargs, ids))


def completion_steer_tokens(state: ServerState, req: Any) -> Any:
    """/v1/completions has no turns: steer_tokens=last_turn asked for is a 400; a server default
    of last_turn steers the whole prompt there (a completion prompt is one turn)."""
    if req.steer_tokens == LAST_TURN:
        raise APIError(400, "steer_tokens=last_turn needs a chat (its last user turn): use "
                            "/v1/chat/completions, /api/chat or /ws/chat, or all, generated or "
                            "prompt here", param="steer_tokens", code="invalid_request")
    if req.steer_tokens is None and state.settings.steering.steer_tokens == LAST_TURN:
        return req.model_copy(update={"steer_tokens": "all"})
    return req


def text_prompt(state: ServerState, prompt: Any) -> list[int]:
    if isinstance(prompt, list):
        vocab = getattr(state.engine.model_config.hf_config, "vocab_size", None)
        if vocab is not None and any(not 0 <= t < vocab for t in prompt):
            raise APIError(400, f"prompt token ids must be in [0, {vocab})", param="prompt")
        return list(prompt)
    return list(state.tokenizer.encode(prompt))


def max_tokens_for(state: ServerState, n_prompt: int, requested: Optional[int]) -> int:
    """The request's max_tokens, checked against the context; left out: the model's default
    (generation_config's max_new_tokens), at most what the context leaves."""
    limit = state.max_model_len or state.settings.model.max_model_len
    if n_prompt >= limit:
        raise APIError(400, f"the prompt has {n_prompt} tokens; this model's context is {limit}",
                       param="messages", code="context_length_exceeded")
    room = limit - n_prompt
    if requested is None:
        return min(room, state.sampling_defaults.get("max_tokens") or room)
    if requested > room:
        raise APIError(400, f"max_tokens={requested} plus the prompt's {n_prompt} tokens exceeds "
                            f"the context length {limit} (at most {room})", param="max_tokens",
                       code="context_length_exceeded")
    return requested


# OpenAI's values for the sampling fields a request leaves out, where the model's generation config
# sets none (vLLM's ChatCompletionRequest uses the same: request, then model default, then these)
_GREEDY_EPS = 1e-5          # vLLM's own: a temperature below it is greedy
OPENAI_SAMPLING_DEFAULTS: dict[str, float] = {
    "temperature": 1.0, "top_p": 1.0, "top_k": 0, "min_p": 0.0,
    "presence_penalty": 0.0, "frequency_penalty": 0.0, "repetition_penalty": 1.0}


def sampling_params(req: Any, max_tokens: int, steering: Steering, *, stream: bool,
                    logprobs: Optional[int], skip_special_tokens: bool = True,
                    defaults: Optional[dict] = None):
    """vLLM SamplingParams for a request; `defaults` are the model's (ServerState.sampling_defaults)."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

    structured = None
    rf = getattr(req, "response_format", None)
    if rf is not None and rf.type == "json_object":
        structured = StructuredOutputsParams(json_object=True)
    elif rf is not None and rf.type == "json_schema":
        # compact JSON, as OpenAI's: free whitespace lets a weak model loop until max_tokens
        structured = json_schema_constraint(rf.json_schema.schema_)
    defaults = defaults or {}
    picked = {name: value if (value := getattr(req, name, None)) is not None
              else defaults.get(name, openai_default)
              for name, openai_default in OPENAI_SAMPLING_DEFAULTS.items()}
    if req.n > 1 and picked["temperature"] < _GREEDY_EPS:
        # OpenAI takes n > 1 at temperature 0, vLLM refuses it: n greedy samples are n draws
        # from the top-1 token, the argmax at every step, as greedy is
        picked.update(temperature=1.0, top_k=1)
    kw: dict[str, Any] = dict(
        n=req.n, max_tokens=max_tokens, **picked,
        seed=req.seed, stop=req.stop, logprobs=logprobs,
        skip_special_tokens=skip_special_tokens,
        ignore_eos=bool(getattr(req, "ignore_eos", False)),
        # token ids past the vocabulary are refused by vLLM's own check (a 400 naming logit_bias)
        logit_bias={int(t): b for t, b in lb.items()} if (lb := getattr(req, "logit_bias", None))
        else None,
        output_kind=RequestOutputKind.DELTA if stream else RequestOutputKind.FINAL_ONLY,
        structured_outputs=structured,
    )
    if steering.extra_args is not None:
        kw["extra_args"] = steering.extra_args
    if steering.monitor and req.n > 1:
        raise APIError(400, "monitor reads one answer per request: use n=1 (or several "
                            "requests)", param="monitor", code="invalid_request")
    try:
        return SamplingParams(**kw)
    except Exception as err:   # VLLMValidationError, ValueError, TypeError
        param = getattr(err, "parameter", None)
        raise APIError(400, str(err), param=param, code="invalid_request") from None


def engine_prompt(ids: list[int]) -> dict:
    """The engine's prompt (its `cache_salt` is set at admission from the steering)."""
    return {"prompt_token_ids": ids}


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


async def generate(state: ServerState, prompt: dict, params, request_id: str,
                   steered: bool) -> AsyncIterator[Any]:
    """Engine outputs for one prompt; counts tokens; aborts the engine request on cancel.

    A request that ends neither finished nor failed counts as aborted, whatever way the end
    came: a cancel, a close, or an engine stream that stopped early or ended with an "abort"
    output (what vLLM gives when the request was aborted by another path, e.g. vLLM's own
    generator closed before this one)."""
    if state.engine is None:
        raise APIError(503, f"engine not ready ({state.engine_state})", code="engine_not_ready")
    label = "true" if steered else "false"
    state.metrics.prompt_tokens.labels(label).inc(len(prompt["prompt_token_ids"]) * params.n)
    state.in_flight += 1
    state.active_requests.add(request_id)
    state.metrics.running.inc()
    finished = failed = False
    stream = state.engine.generate(prompt, params, request_id)
    try:
        async for out in stream:
            if request_id in state.cut_requests:    # a stop's grace bound passed (lifecycle)
                raise shutdown_error(state)
            failed_output(out)
            # DELTA outputs carry new tokens only; FINAL_ONLY yields once with all of them.
            state.metrics.completion_tokens.labels(label).inc(
                sum(len(o.token_ids) for o in out.outputs))
            finished = out.finished and not any(o.finish_reason == "abort" for o in out.outputs)
            yield out
        if not finished and request_id in state.cut_requests:
            raise shutdown_error(state)
    except APIError:
        failed = True
        raise
    except Exception as err:
        failed = True
        raise engine_error(err) from None
    finally:
        state.in_flight -= 1
        state.active_requests.discard(request_id)
        state.cut_requests.discard(request_id)
        state.metrics.running.dec()
        if not finished:
            if not failed:
                state.metrics.aborted.inc()
            try:
                await state.engine.abort(request_id)
            except Exception:
                pass
        try:        # vLLM's generator too, now rather than when it is collected
            await stream.aclose()
        except Exception:
            pass


def failed_output(out: Any) -> None:
    """An engine output that finished with an error (vLLM's finish_reason "error") ends the
    request with an error for its client; the steering plugin puts its reason in stop_reason
    (steering_plugin.failures: a vector gone or changed between admission and the worker)."""
    for o in out.outputs:
        if o.finish_reason != "error":
            continue
        reason = o.stop_reason if isinstance(o.stop_reason, str) else ""
        if reason.startswith("steering: "):
            raise APIError(500, f"steering could not be applied: {reason[len('steering: '):]}",
                           code="steering_failed")
        raise APIError(500, "the engine failed this request", code="generation_failed")


def engine_error(err: BaseException) -> APIError:
    """vLLM errors -> HTTP: validation problems are the client's (400), a dead engine is 503."""
    chain, e = [], err
    while e is not None and e not in chain:
        chain.append(e)
        e = e.__cause__ or e.__context__
    for x in chain:     # refused at admission: the cause says which field and status
        if isinstance(x, (AdmissionError, SteeringSpecError)):
            return to_api_error(x)
    names = {c.__name__ for x in chain for c in type(x).__mro__}
    if "EngineDeadError" in names:
        return APIError(503, "the engine has stopped; this server exits so that its supervisor "
                             "restarts it: retry on another replica or after the restart",
                        code="engine_dead")
    for x in chain:
        xn = {c.__name__ for c in type(x).__mro__}
        if xn & {"VLLMValidationError", "VLLMClientError", "ValueError", "SteeringSpecError"}:
            return APIError(400, str(x) or type(x).__name__, code="invalid_request",
                            param=getattr(x, "parameter", None))
        if "VectorNotFound" in xn or "KeyError" in xn and "not found" in str(x):
            return APIError(404, str(x))
    root = chain[-1]
    return APIError(500, f"generation failed ({type(root).__name__})", code="generation_failed")


async def merge(gens: list[AsyncIterator[Any]]) -> AsyncIterator[tuple[int, Any]]:
    """Interleave several async generators: yields (which, item). Closing this closes them at
    once (an `async for` left early does not close what it iterates; the garbage collector
    would, later), so each source aborts its engine request when the client goes away."""
    if len(gens) == 1:
        try:
            async for item in gens[0]:
                yield 0, item
        finally:
            await gens[0].aclose()
        return
    q: asyncio.Queue = asyncio.Queue()
    done = object()

    async def pump(i, g):
        try:
            async for item in g:
                await q.put((i, item))
        except BaseException as err:  # forwarded to the consumer
            await q.put((i, err))
        finally:
            await g.aclose()
            await q.put((i, done))

    tasks = [asyncio.create_task(pump(i, g)) for i, g in enumerate(gens)]
    remaining = len(gens)
    try:
        while remaining:
            i, item = await q.get()
            if item is done:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield i, item
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def primed(agen: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """Start the engine request now, so admission errors get a real HTTP status, not a 200
    stream; returns an iterator that replays the first item."""
    try:
        first = await agen.__anext__()
    except StopAsyncIteration:
        first = None

    async def rest():
        try:
            if first is not None:
                yield first
                async for item in agen:
                    yield item
        finally:
            await agen.aclose()

    return rest()


# --- logprobs ---------------------------------------------------------------------------------
def _lp(x: float) -> float:
    return -9999.0 if x is None or not math.isfinite(x) else float(x)


def _tok(state: ServerState, tid: int, lp) -> str:
    if lp is not None and getattr(lp, "decoded_token", None) is not None:
        return lp.decoded_token
    return state.tokenizer.decode([tid])


def chat_logprobs(state: ServerState, token_ids, logprobs, top: int) -> Optional[list[dict]]:
    if logprobs is None:
        return None
    out = []
    for tid, entry in zip(token_ids, logprobs):
        chosen = entry.get(tid)
        tok = _tok(state, tid, chosen)
        tops = sorted(((k, v) for k, v in entry.items() if v.rank is not None),
                      key=lambda kv: kv[1].rank)[:top]
        out.append({"token": tok, "logprob": _lp(chosen.logprob if chosen else None),
                    "bytes": list(tok.encode("utf-8")),
                    "top_logprobs": [{"token": _tok(state, k, v), "logprob": _lp(v.logprob),
                                      "bytes": list(_tok(state, k, v).encode("utf-8"))}
                                     for k, v in tops]})
    return out


def completion_logprobs(state: ServerState, token_ids, logprobs, top: int,
                        offset: int = 0) -> Optional[dict]:
    if logprobs is None:
        return None
    tokens, lps, tops, offsets = [], [], [], []
    pos = offset
    for tid, entry in zip(token_ids, logprobs):
        chosen = entry.get(tid)
        tok = _tok(state, tid, chosen)
        tokens.append(tok)
        lps.append(_lp(chosen.logprob if chosen else None))
        ranked = sorted(((k, v) for k, v in entry.items() if v.rank is not None),
                        key=lambda kv: kv[1].rank)[:top]
        tops.append({_tok(state, k, v): _lp(v.logprob) for k, v in ranked} if top else None)
        offsets.append(pos)
        pos += len(tok)
    return {"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets}


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def finish(reason: Optional[str]) -> Optional[str]:
    return None if reason is None else ("stop" if reason in ("stop", "abort") else reason)


def now() -> int:
    return int(time.time())
