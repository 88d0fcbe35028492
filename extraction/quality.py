"""Optional quality filter (off by default): the model judges each rollout 0-100 for persona
adherence (as Chen et al.'s persona-vector pipeline does) and low scores are dropped."""
from __future__ import annotations

import json

from extraction.rollouts import encode, render_prompt, stable_seed

SCHEMA = {"type": "object", "properties": {"score": {"type": "integer", "minimum": 0,
                                                     "maximum": 100}},
          "required": ["score"], "additionalProperties": False}


def judge_samples(ex, cell, samples: list[dict]) -> list[dict]:
    """Adds `score` and `keep` to each sample; an unreadable verdict counts as 0."""
    out = []
    for i, s in enumerate(samples):
        answer = ex.tok.decode(s["response_ids"], skip_special_tokens=True)
        user = (f"A model was given this role: \"{cell.system}\"\nQuestion: {s['question']}\n"
                f"Answer: {answer}\n\nFrom 0 to 100, how well does the answer stay in the role? "
                "Reply as JSON {\"score\": N}.")
        messages = [{"role": "user", "content": user}]
        ids = encode(ex.tok, render_prompt(ex.tok, None, user, ex.opts.enable_thinking))
        try:
            text = ex.backend.generate_json(ids, messages, SCHEMA, max_tokens=16, temperature=0.0,
                                            seed=stable_seed("judge", cell.seed_key, i))
            score = int(json.loads(text)["score"])
        except Exception:
            score = 0
        out.append(dict(s, score=score, keep=score >= ex.opts.quality_threshold))
    return out
