"""Unit tests of the toy proof's pieces that need no model or server."""
from __future__ import annotations

import torch

from extraction.toy.eval import FrequencyPenalty


def test_frequency_penalty_counts_generated_tokens_only():
    """OpenAI's (and vLLM's) rule, which the HF backend reproduces: minus penalty x the times a
    token was generated; tokens of the prompt do not count."""
    prompt_len = 3
    ids = torch.tensor([[5, 5, 1, 2, 2, 5],      # prompt 5 5 1, generated 2 2 5
                        [0, 0, 0, 3, 4, 4]])
    scores = torch.zeros(2, 6)
    out = FrequencyPenalty(0.5, prompt_len)(ids, scores)
    assert out[0].tolist() == [0, 0, -1.0, 0, 0, -0.5]
    assert out[1].tolist() == [0, 0, 0, -0.5, -1.0, 0]
