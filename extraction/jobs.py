"""The extraction jobs' Python API (what the server's job worker and the CLI call).

    run_axis_job(settings, progress=None, **opts) -> Path             (vectors/assistant_axis.safetensors)
    run_persona_job(settings, name, *, archetype=None, description=None, progress=None, **opts)
        -> SteeringVector                                             (saved in vectors/personas/)
    run_trait_job(settings, word, opposite, *, name=None, progress=None, **opts)
        -> SteeringVector                                             (saved in vectors/traits/)

`progress` is an optional callable receiving dict(stage=str, done=int, total=int, message=str).
Common opts:
    rollout_backend   "vllm" (in-process vllm.LLM) | "hf" (transformers generate) |
                      "openai" (an OpenAI-compatible server: base_url, api_key, openai_model)
                      default: config extraction.use_vllm (auto: vllm if importable, else hf)
    llm               an existing vllm.LLM to reuse for rollouts (rollout_backend "vllm")
    base_url, api_key, openai_model   for rollout_backend "openai"
    num_questions, max_new_tokens, temperature, batch_size, position, seed  (override config)
Errors: ExtractionInputError (bad input; nothing is written), ExtractionError (the job failed).
Activations always come from one teacher-forced HF forward over the rollout tokens, through
forward hooks on model.model.layers[L].
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

from persona_steer.config import Settings
from persona_steer.vector_format import SteeringVector

Progress = Optional[Callable[[dict], None]]


class ExtractionError(RuntimeError):
    """An extraction job failed (one-line message)."""


class ExtractionInputError(ExtractionError, ValueError):
    """Bad input to a job: unknown archetype, empty description, invalid name, word == opposite."""


def run_axis_job(settings: Settings, progress: Progress = None, **opts: Any) -> Path:
    raise NotImplementedError


def run_persona_job(settings: Settings, name: str, *, archetype: str | None = None,
                    description: str | None = None, progress: Progress = None,
                    **opts: Any) -> SteeringVector:
    raise NotImplementedError


def run_trait_job(settings: Settings, word: str, opposite: str, *, name: str | None = None,
                  progress: Progress = None, **opts: Any) -> SteeringVector:
    raise NotImplementedError
