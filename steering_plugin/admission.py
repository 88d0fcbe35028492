"""Admission of steered requests in the front end (the process that owns the InputProcessor).

This is the one place a request's steering is validated and salted: every entry point (our
server, LLM, AsyncLLM, stock `vllm.entrypoints.openai.api_server` with `vllm_xargs`) passes
through it, so nothing before it checks vectors or computes hashes (the server builds the spec
and maps the errors raised here to HTTP; docs/steering.md), and the workers after it only
verify what it pinned.

`install()` wraps `InputProcessor.process_inputs` in memory (no vLLM file changes) so that, for
every request, `persona_steer.resolve.admit`:
  - checks its steering against the engine's own store and model shape
    (`ModelShape.from_hf_config`) before it reaches the engine: unknown vector, bad weight,
    wrong hidden size, safety without an axis -> VLLMValidationError (HTTP 400 on the stock
    server; its cause, a `resolve.AdmissionError` or `SteeringSpecError`, carries the status
    and code our server answers with), and only that request fails;
  - pins the content hashes of the vectors it read in extra_args, so every worker (every
    tensor-parallel rank) applies exactly that content or fails the request;
  - salts its prefix-cache key with the full steering config, the vectors' content hashes and,
    for steer_tokens other than "all", the steered span, so a steered request never reuses KV
    blocks computed without (or with other) steering, while identical configs still share.
"""
from __future__ import annotations

import functools

_MARK = "_persona_steer_wrapped"


def install() -> None:
    from vllm.v1.engine.input_processor import InputProcessor

    original = InputProcessor.process_inputs
    if getattr(original, _MARK, False):
        return

    @functools.wraps(original)
    def process_inputs(self, request_id, prompt, params, *args, **kwargs):
        request = original(self, request_id, prompt, params, *args, **kwargs)
        admit(self.vllm_config.model_config.hf_config, request)
        return request

    setattr(process_inputs, _MARK, True)
    InputProcessor.process_inputs = process_inputs


def admit(hf_config, request) -> None:
    """Validate the request's steering, pin its vectors' content hashes and salt its
    prefix-cache key (mutates `request`); `persona_steer.resolve.admit` does the work."""
    if getattr(hf_config, "steering_store", None) is None:
        return  # not a steering engine
    params = request.sampling_params
    if params is None or not params.extra_args:
        return
    from vllm.exceptions import VLLMValidationError
    from vllm.utils import length_from_prompt_token_ids_or_embeds

    from persona_steer import resolve
    from persona_steer.steering_spec import SteeringSpecError, parse_extra_args

    try:
        spec = parse_extra_args(params.extra_args, getattr(hf_config, "steering_max_weight", None),
                                getattr(hf_config, "steering_monitor_max_names", None))
        if spec is None or not spec.needs_engine_args:
            return
        if spec.monitor and not getattr(hf_config, "steering_monitor_columns", 0):
            raise resolve.AdmissionError("live monitoring is off on this engine "
                                         "(steering.monitor.columns: 0)", "monitor", "monitor_off")
        admitted = resolve.admit(spec, _store(hf_config.steering_store),
                                 resolve.ModelShape.from_hf_config(hf_config),
                                 float(getattr(hf_config, "steering_scale", 1.0)),
                                 length_from_prompt_token_ids_or_embeds(
                                     request.prompt_token_ids, request.prompt_embeds))
    except (SteeringSpecError, resolve.AdmissionError) as err:
        # the cause stays chained: our server maps it to its own status and code
        # (server.errors.to_api_error); stock vLLM answers 400 naming the parameter
        raise VLLMValidationError(str(err), parameter=err.param or "steering") from err
    params.extra_args = pin_hashes(params.extra_args, admitted.pinned)
    salt = admitted.salt
    if salt is not None and request.cache_salt != salt:
        request.cache_salt = salt if not request.cache_salt else f"{request.cache_salt}|{salt}"


def pin_hashes(extra_args: dict, hashes: dict[str, str]) -> dict:
    """A copy of extra_args that carries the content hashes read here: every worker applies
    exactly this content or fails the request (steering_plugin.runtime). Always the hashes of
    this read, so a caller reusing one SamplingParams never carries stale ones."""
    out = dict(extra_args)
    if isinstance(out.get("steering"), dict):
        out["steering"] = {**out["steering"], "hashes": dict(hashes)}
    else:
        out["steer_hashes"] = dict(hashes)
    return out


@functools.lru_cache(maxsize=8)
def _store(path: str):
    from persona_steer.store import VectorStore
    return VectorStore(path)

