"""Admission of steered requests in the front end (the process that owns the InputProcessor).

`install()` wraps `InputProcessor.process_inputs` in memory (no vLLM file changes) so that, for
every entry point (LLM, AsyncLLM, stock `vllm.entrypoints.openai.api_server` with `vllm_xargs`):
  - a request's steering is checked against the engine's own store and model shape before it
    reaches the engine: unknown vector, bad weight, wrong hidden size, safety without an axis
    -> VLLMValidationError (HTTP 400 on the stock server), and only that request fails;
  - the content hashes of the vectors it read are pinned in extra_args, so every worker (every
    tensor-parallel rank) applies exactly that content or fails the request;
  - its prefix-cache salt covers the full steering config and the vectors' content hashes, so a
    steered request never reuses KV blocks computed without (or with other) steering, while
    identical configs still share.
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
    """Validate the request's steering and salt its prefix-cache key (mutates `request`)."""
    if getattr(hf_config, "steering_store", None) is None:
        return  # not a steering engine
    params = request.sampling_params
    if params is None or not params.extra_args:
        return
    from vllm.exceptions import VLLMValidationError

    from persona_steer.resolve import MonitorNameError, content_hashes, monitor_hashes
    from persona_steer.steering_spec import SteeringSpecError, parse_extra_args
    from persona_steer.store import VectorNotFound, VectorStore
    from persona_steer.vector_format import VectorFormatError

    try:
        spec = parse_extra_args(params.extra_args, getattr(hf_config, "steering_max_weight", None),
                                getattr(hf_config, "steering_monitor_max_names", None))
        if spec is None or not spec.needs_engine_args:
            return
        if spec.monitor and not getattr(hf_config, "steering_monitor_columns", 0):
            raise SteeringSpecError("this engine has live monitoring off "
                                    "(steering_monitor_columns is 0)", "monitor")
        shape, store = _shape(hf_config), _store(hf_config.steering_store)
        hashes = {} if spec.is_noop else content_hashes(spec, store, shape)
        # monitored vectors are pinned too, but stay out of the salt: reading changes no output
        pinned = {**monitor_hashes(spec.monitor, store, shape), **hashes}
    except MonitorNameError as err:
        raise VLLMValidationError(str(err), parameter="monitor") from None
    except SteeringSpecError as err:
        raise VLLMValidationError(str(err), parameter=err.param or "steering") from None
    except VectorNotFound as err:
        what = "assistant axis (run `persona-steer extract-axes`; safety needs it)" \
            if err.kind == "axis" else f"{err.kind} '{err.name}'"
        raise VLLMValidationError(
            f"unknown {what}; available: {', '.join(err.available) or 'none'}",
            parameter="steering") from None
    except VectorFormatError as err:
        raise VLLMValidationError(str(err), parameter="steering") from None
    params.extra_args = pin_hashes(params.extra_args, pinned)
    if spec.is_noop:
        return
    salt = spec.cache_key(hashes, float(getattr(hf_config, "steering_scale", 1.0)))
    if spec.steer_tokens != "all":   # the steered span goes in too (SteeringSpec.positioned_salt)
        from vllm.utils import length_from_prompt_token_ids_or_embeds
        salt = spec.positioned_salt(salt, length_from_prompt_token_ids_or_embeds(
            request.prompt_token_ids, request.prompt_embeds))
    if request.cache_salt != salt:
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


def _shape(hf_config):
    from persona_steer.config import resolve_layers
    from persona_steer.resolve import ModelShape

    layers = getattr(hf_config, "steering_layers", None) or "all"
    return ModelShape(hidden_size=hf_config.hidden_size, num_layers=hf_config.num_hidden_layers,
                      model_id=getattr(hf_config, "steering_model_id", None),
                      steerable_layers=tuple(resolve_layers(layers, hf_config.num_hidden_layers)))
