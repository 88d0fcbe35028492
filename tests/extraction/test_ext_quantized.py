"""Extraction on a 4-bit checkpoint (builtin:toy-persona-w4a16, compressed-tensors W4A16) gives
persona vectors close to the full-precision model's: the per-layer cosine is printed (-s) and
bounded. Transformers rollouts (greedy) and activations, no engine."""
from __future__ import annotations

import torch

from persona_steer.api import extract_persona
from persona_steer.quantization import checkpoint_quantization
from persona_steer.testmodels import resolve_model

from .conftest import ext_settings

PROMPTS = ["You are a pirate. Answer like a pirate.", "Speak as a salty old sea dog, matey."]
QUESTIONS = ["How do I bake bread?", "Why is the sky blue?", "What is a budget?",
             "How do I learn a language?"]
MIN_COSINE = 0.97      # measured 0.993-0.996 per layer (L0..L5) on the toy model: 4-bit noise only


def _vector(tmp_path, model):
    s = ext_settings(tmp_path / model.split(":")[1], **{"model.name": model,
                                                         "extraction.temperature": 0,
                                                         "extraction.max_new_tokens": 16})
    return extract_persona(PROMPTS, QUESTIONS, name="pirate_q", settings=s).per_layer()


def test_w4a16_extraction_is_close_to_full_precision_per_layer(tmp_path):
    cache = ext_settings(tmp_path / "r").path("cache")
    quantized = resolve_model("builtin:toy-persona-w4a16", cache)
    assert checkpoint_quantization(quantized) == "compressed-tensors"
    full = _vector(tmp_path, "builtin:toy-persona")
    q4 = _vector(tmp_path, "builtin:toy-persona-w4a16")
    assert sorted(full) == sorted(q4)
    cosines = {layer: float(torch.nn.functional.cosine_similarity(full[layer], q4[layer], dim=0))
               for layer in sorted(full)}
    print("per-layer cosine, W4A16 vs full precision:",
          " ".join(f"L{layer}={c:.4f}" for layer, c in cosines.items()))
    assert all(c >= MIN_COSINE for c in cosines.values()), cosines
    # the two are different extractions, not one read twice
    assert any(not torch.equal(full[layer], q4[layer]) for layer in full)
