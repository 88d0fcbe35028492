"""Unit tests of the toy proof's pieces that need no model or server."""
from __future__ import annotations

import torch

from toy.eval import OpenAIPenalties, penalized_mode


def test_penalties_count_generated_tokens_only():
    """OpenAI's (and vLLM's) rule, which the HF backend reproduces: minus presence_penalty once a
    token was generated, minus frequency_penalty x the times it was; prompt tokens do not count."""
    prompt_len = 3
    ids = torch.tensor([[5, 5, 1, 2, 2, 5],      # prompt 5 5 1, generated 2 2 5
                        [0, 0, 0, 3, 4, 4]])
    scores = torch.zeros(2, 6)
    freq = OpenAIPenalties(prompt_len, frequency_penalty=0.5)(ids, scores)
    assert freq[0].tolist() == [0, 0, -1.0, 0, 0, -0.5]
    assert freq[1].tolist() == [0, 0, 0, -0.5, -1.0, 0]
    pres = OpenAIPenalties(prompt_len, presence_penalty=0.5)(ids, scores)
    assert pres[0].tolist() == [0, 0, -0.5, 0, 0, -0.5]
    both = OpenAIPenalties(prompt_len, presence_penalty=0.5, frequency_penalty=0.5)(ids, scores)
    assert both[1].tolist() == [0, 0, 0, -1.0, -1.5, 0]


def test_penalized_mode_names():
    assert penalized_mode("greedy", {"presence_penalty": 0.5}) == "greedy, presence_penalty 0.5"
    assert (penalized_mode("sampled (T=0.7)", {"presence_penalty": 0.5, "frequency_penalty": 0.2})
            == "sampled (T=0.7), frequency_penalty 0.2, presence_penalty 0.5")
