"""Stock vLLM (no steering plugin) on a checkpoint: greedy generations with their logprobs, as
JSON, for tests that compare the served model with what vLLM alone gives.

    python tests/server/stock_engine.py MODEL DTYPE REQUESTS.json
REQUESTS: [{"prompt_token_ids": [...], "max_tokens": n}]
"""
from __future__ import annotations

import json
import os
import sys


def main() -> None:
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from vllm import LLM, SamplingParams

    model, dtype, reqs = sys.argv[1], sys.argv[2], json.loads(open(sys.argv[3]).read())
    # whole prompts per step, as the server schedules them on CPU (steering_plugin.engine)
    llm = LLM(model=model, dtype=dtype, max_model_len=2048, enforce_eager=True,
              enable_chunked_prefill=False, max_num_batched_tokens=2048, seed=0)
    out = []
    for r in reqs:     # one at a time: the server's answers it is compared with came alone too
        o = llm.generate([{"prompt_token_ids": r["prompt_token_ids"]}],
                         SamplingParams(temperature=0, max_tokens=r["max_tokens"], logprobs=0),
                         use_tqdm=False)[0].outputs[0]
        out.append({"token_ids": list(o.token_ids),
                    "logprobs": [lp[t].logprob for lp, t in zip(o.logprobs, o.token_ids)]})
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
