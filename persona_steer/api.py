"""The Python API, for notebooks and scripts (the original system's `from src import ...`).

Everything reads the same config as the CLI and the server (persona_steer.config), extracts
with the same pipeline (extraction.jobs), saves to the same vector store, and steers a
transformers model with the server's formula: after decoder layer L, add
`scale * (sum_p w_p * v_p[L] + sum_t w_t * v_t[L])`, then (with safety) cap the projection
on the assistant axis from below, as the engine's plugin does.

Example (it runs as written in tests/foundation/test_fnd_api.py, on builtin:tiny)::

    import torch
    import persona_steer as ps

    settings = ps.load_config()                     # ./config.yaml, as the CLI reads it

    # 1. a persona from your own system prompts (and questions, or the dataset's)
    wizard = ps.extract_persona(
        ["You are a grumpy old wizard who mutters about spells.",
         "You are a cranky wizard, annoyed by every question."],
        ["Why is the sky blue?", "How do I boil an egg?"],
        name="grumpy_wizard", description="A grumpy old wizard", settings=settings)
    print(wizard.layers.tolist(), wizard.metadata["source"])         # ... prompts

    # 2. save it, and a raw [layers, hidden] tensor made elsewhere, as personas
    ps.save_vector(wizard, settings=settings)
    model, tokenizer = ps.load_hf_model(settings)
    layers, hidden = model.config.num_hidden_layers, model.config.hidden_size
    ps.save_vector(torch.randn(layers, hidden), "my_persona",
                   description="My custom persona", settings=settings)

    # 3. generate steered by a blend, through forward hooks (removed on leaving the block)
    ids = tokenizer("Tell me about bread.", return_tensors="pt").input_ids
    with ps.steer(model, {"grumpy_wizard": 0.5, "my_persona": 0.3}, settings=settings):
        steered = model.generate(ids, max_new_tokens=8, do_sample=False)
    plain = model.generate(ids, max_new_tokens=8, do_sample=False)
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence, Union

from persona_steer.config import Settings, load_config

Blend = Union[str, Mapping[str, float], None]


def _settings(settings: Settings | None) -> Settings:
    return settings if settings is not None else load_config()


def load_hf_model(settings: Settings | None = None):
    """(model, tokenizer) of the configured model in transformers, placed and quantized as
    extraction does (config model.device, dtype, quantization); builtin:* names resolve too."""
    from extraction.activations import load_hf_model as _load
    from persona_steer.testmodels import resolve_model

    s = _settings(settings)
    path = resolve_model(s.model.name, s.path("cache"))
    return _load(path, s.model.dtype, s.model.quantization, s.model.device)


def extract_persona(system_prompts: Sequence[str], questions: Sequence[str] | None = None, *,
                    name: str = "custom", description: str = "",
                    settings: Settings | None = None, **options: Any):
    """A persona vector from your own system prompts: mean activation of the model answering
    `questions` under them, minus the assistant baseline (the same job as
    `persona-steer create`). Not saved: pass it to `save_vector`.

    questions: None takes the dataset's (datasets/ in either layout). options: job options
    such as num_questions, max_new_tokens, temperature, rollout_backend ("hf", "vllm"),
    position, progress (a callable getting progress dicts). Returns a SteeringVector.

        vec = extract_persona(["You are a pirate.", "You are a salty sea dog."],
                              name="pirate2", num_questions=10)
    """
    from extraction.jobs import run_persona_job

    return run_persona_job(_settings(settings), name, prompts=list(system_prompts),
                           questions=None if questions is None else list(questions),
                           description=description or None, save=False,
                           **{"rollout_backend": "hf", **options})


def save_vector(vector: Any, name: str | None = None, *, kind: str = "persona",
                description: str | None = None, model: str | None = None,
                layers: Sequence[int] | None = None, settings: Settings | None = None,
                overwrite: bool = True) -> Path:
    """Save into the configured vector store; returns the file's path.

    vector: a SteeringVector (from `extract_persona`, renamed when `name` is given), or raw
    numbers: a tensor [num_layers, hidden] (a row per layer), [len(layers), hidden] with
    `layers`, or a {layer: tensor [hidden]} dict (the original's `create_from_data`).
    model: the model id the vector belongs to (default: config model.name).

        save_vector(torch.randn(36, 4096), "my_persona", description="My custom persona")
    """
    import torch

    from persona_steer.store import VectorStore
    from persona_steer.vector_format import SteeringVector, VectorFormatError

    s = _settings(settings)
    if isinstance(vector, SteeringVector):
        if name is not None or description is not None or vector.kind != kind:
            vector = SteeringVector.build(
                kind, name or vector.name, vector.per_layer(), model=model or vector.model,
                description=vector.description if description is None else description,
                metadata={k: v for k, v in vector.metadata.items()
                          if k not in ("kind", "name", "description", "model")},
                extra=vector.extra)
    else:
        if name is None:
            raise VectorFormatError("save_vector: give a name for raw vector data")
        if isinstance(vector, Mapping):
            per_layer = {int(k): torch.as_tensor(v) for k, v in vector.items()}
        else:
            rows = torch.as_tensor(vector)
            if rows.dim() != 2:
                raise VectorFormatError(f"save_vector: expected [layers, hidden], got shape "
                                        f"{tuple(rows.shape)}")
            idx = list(layers) if layers is not None else list(range(rows.shape[0]))
            if len(idx) != rows.shape[0]:
                raise VectorFormatError(f"save_vector: {len(idx)} layers for {rows.shape[0]} rows")
            per_layer = dict(zip(idx, rows))
        vector = SteeringVector.build(kind, name, per_layer, model=model or s.model.name,
                                      description=description or "",
                                      metadata={"source": "python_api"})
    return VectorStore(s.path("vectors")).save(vector, overwrite=overwrite)


@contextmanager
def steer(model, blend: Blend = None, *, traits: Blend = None, scale: float | None = None,
          safety: bool = False, settings: Settings | None = None,
          vectors: str | os.PathLike | None = None, model_id: str | None = None) -> Iterator[Any]:
    """Steer a transformers model (Qwen3-style `model.model.layers`) inside a `with` block.

    blend: {persona: weight}, "a:0.5,b:0.3", or one persona's name (weight 1). traits: the
    same for trait vectors. scale: None = config steering.steering_scale. safety: cap with the
    assistant axis at config steering.safety (layers, percentile). vectors: a store folder
    (default: config paths.vectors). model_id: refuse vectors made for another model (default:
    not checked). Yields the resolved SteeringSpec. Hooks are removed when the block ends.

        with steer(model, {"pirate": 0.5, "robot": 0.3}, traits="formal:-0.3"):
            out = model.generate(ids, max_new_tokens=40)
    """
    from persona_steer.config import resolve_layers
    from persona_steer.resolve import ModelShape, cap_table, spec_delta
    from persona_steer.steering_spec import build_spec
    from persona_steer.store import VectorStore
    from steering_plugin.reference import hf_steering

    s = _settings(settings)
    if isinstance(blend, str) and ":" not in blend and blend.strip():
        blend = {blend.strip(): 1.0}
    spec = build_spec(blend=blend, traits=traits, scale=scale, safety=safety,
                      max_weight=s.steering.max_weight)
    shape = ModelShape.from_hf_config(model.config, model_id=model_id)
    store = VectorStore(vectors if vectors is not None else s.path("vectors"))
    delta = spec_delta(spec, store, shape, s.steering.steering_scale)
    cap = None
    if spec.safety:
        cap = cap_table(store, shape, s.steering.safety.percentile,
                        resolve_layers(s.steering.safety.layers, shape.num_layers))
    with hf_steering(model, delta if bool(delta.any()) else None, cap):
        yield spec
