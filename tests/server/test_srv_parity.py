"""Steering through the API equals the engine-level result (vllm.LLM, same config, greedy)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from transformers import AutoTokenizer

STEERINGS = [{}, {"persona": "alpha"}, {"persona": "beta", "strength": -0.7},
             {"blend": {"alpha": 0.5, "gamma": 0.5}, "traits": {"calm": 0.6}}]


def test_api_equals_engine_level_generation(server, steer_vectors, tmp_path):
    tok = AutoTokenizer.from_pretrained(server.model_id)
    ids = tok.apply_chat_template([{"role": "user", "content": "How do I bake bread?"}],
                                  tokenize=True, add_generation_prompt=True)
    ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    api = []
    with server.client() as c:
        for steer in STEERINGS:
            r = c.post("/v1/completions", json={"prompt": ids, "max_tokens": 12, "temperature": 0,
                                                "return_token_ids": True, **steer})
            assert r.status_code == 200, r.text
            api.append(r.json()["choices"][0]["token_ids"])
    reqs = tmp_path / "reqs.json"
    reqs.write_text(json.dumps([{"prompt_token_ids": ids, "max_tokens": 12, "steering": s}
                                for s in STEERINGS]))
    out = subprocess.run([sys.executable, str(Path(__file__).with_name("engine_reference.py")),
                          str(server.config_path), str(reqs)], capture_output=True, text=True,
                         timeout=600)
    lines = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")]
    assert lines, out.stderr[-3000:]
    engine = json.loads(lines[-1][7:])
    assert api == engine
    assert len({tuple(x) for x in api}) == len(STEERINGS)
