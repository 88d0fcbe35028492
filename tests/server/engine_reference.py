"""Engine-level reference for the API parity test: runs vllm.LLM with the same config and the
same steering extra_args, greedy, and prints the generated token ids as JSON.

    python tests/server/engine_reference.py CONFIG REQUESTS.json
REQUESTS: [{"prompt_token_ids": [...], "max_tokens": n, "steering": {persona/blend/traits...}}]
"""
from __future__ import annotations

import json
import sys


def main() -> None:
    from vllm import LLM, SamplingParams

    from persona_steer.config import load_config
    from persona_steer.steering_spec import build_spec
    from persona_steer.testmodels import resolve_model
    from steering_plugin.engine import engine_kwargs

    settings = load_config(sys.argv[1])
    reqs = json.loads(open(sys.argv[2]).read())
    llm = LLM(**engine_kwargs(settings, resolve_model(settings.model.name,
                                                      settings.path("cache"))))
    prompts, params = [], []
    for r in reqs:
        spec = build_spec(**r["steering"], scale=settings.steering.steering_scale,
                          default_strength=settings.steering.default_strength)
        extra = None if spec.is_noop else spec.to_extra_args()
        prompts.append({"prompt_token_ids": r["prompt_token_ids"]})
        params.append(SamplingParams(temperature=0, max_tokens=r["max_tokens"], extra_args=extra))
    outs = llm.generate(prompts, params, use_tqdm=False)
    print("RESULT " + json.dumps([list(o.outputs[0].token_ids) for o in outs]))


if __name__ == "__main__":
    main()
