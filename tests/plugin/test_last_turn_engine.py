"""steer_tokens=last_turn on the real engine (tiny random Qwen3, fp32, CPU): chats rendered with
the model's template, the server's last-turn position, parity with the HF reference in a mixed
batch, and prefix-cache salting of the partial modes (a later turn never reuses an earlier
turn's differently steered blocks)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from persona_steer.resolve import ModelShape, spec_delta
from persona_steer.steering_spec import build_spec
from server.generation import chat_prompt, last_turn_start
from server.schemas import ChatMessage
from steering_plugin.reference import hf_steering

from .conftest import HIDDEN, LAYERS

N_NEW = 6
SYSTEM = ("system", "You are a pirate who talks about the sea and ships all day long.")
TURNS = [SYSTEM, ("user", "Hi there, who are you?"), ("assistant", "Arr, a sailor I be."),
         ("user", "Tell me about the weather.")]


@pytest.fixture(scope="module")
def tok(plugin_env):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(plugin_env.model_path)


def render(tok, pairs) -> tuple[list[int], int]:
    """A chat's prompt ids and where its last user turn starts, as the server computes them."""
    state = SimpleNamespace(tokenizer=tok)
    msgs = [ChatMessage(role=r, content=c) for r, c in pairs]
    ids, _ = chat_prompt(state, msgs, None)
    return ids, last_turn_start(state, msgs, None, ids)


def params(spec, n_new=N_NEW):
    from vllm import SamplingParams
    extra = spec.to_extra_args() if spec is not None else None
    return SamplingParams(temperature=0.0, max_tokens=n_new, ignore_eos=True, logprobs=0,
                          extra_args=extra)


def hf_token_logprobs(env, spec, prompt, generated):
    """The HF reference: the delta added at the positions `spec` steers, per generated token."""
    ids = list(prompt) + list(generated)
    delta, mask = None, None
    if spec is not None:
        delta = spec_delta(spec, env.store, ModelShape(HIDDEN, LAYERS), 1.0)
        start, end = spec.steered_span(len(prompt))
        pos = torch.arange(len(ids))
        mask = (pos >= start) & (pos < (end if end is not None else len(ids)))
    with torch.no_grad(), hf_steering(env.hf, delta, token_mask=mask):
        logits = env.hf(input_ids=torch.tensor([ids])).logits[0].float()
    lp = torch.log_softmax(logits, -1)
    n0 = len(prompt)
    return [float(lp[n0 - 1 + j, t]) for j, t in enumerate(generated)]


def test_last_turn_matches_hf_reference_in_a_mixed_batch(plugin_env, tok):
    chat, start = render(tok, TURNS)
    one, start1 = render(tok, TURNS[:2])
    assert 0 < start1 < start < len(chat)
    turn = dict(persona="multi", strength=1.2, steer_tokens="last_turn")
    cases = [(chat, build_spec(**turn, steer_start=start)),
             (chat, build_spec(persona="multi", strength=1.2)),                 # all
             (chat, None),                                                      # unsteered
             (one, build_spec(**turn, steer_start=start1)),
             (chat, build_spec(persona="first", steer_tokens="last_turn", steer_start=start))]
    outs = plugin_env.llm.generate([{"prompt_token_ids": p} for p, _ in cases],
                                   [params(s) for _, s in cases], use_tqdm=False)
    got_all = []
    for (prompt, spec), out in zip(cases, outs):
        o = out.outputs[0]
        got = [o.logprobs[j][t].logprob for j, t in enumerate(o.token_ids)]
        want = hf_token_logprobs(plugin_env, spec, prompt, o.token_ids)
        torch.testing.assert_close(torch.tensor(got), torch.tensor(want), atol=2e-3, rtol=1e-3)
        got_all.append(o.logprobs[0])
    # the system prompt and the first turn unsteered changes the answer's first distribution,
    # and last_turn still steers (it is not the plain model)
    assert got_all[0] != got_all[1] and got_all[0] != got_all[2]


def _gen(llm, ids, spec, n_new):
    out = llm.generate([{"prompt_token_ids": ids}], [params(spec, n_new)], use_tqdm=False)[0]
    lps = [next(iter(d.values())).logprob for d in out.outputs[0].logprobs]
    return list(out.outputs[0].token_ids), lps, out.num_cached_tokens or 0


def _ids(seed, n):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(10, 400, (n,), generator=g).tolist()


def test_last_turn_salt_keeps_turns_apart(plugin_env):
    """Two requests on one prompt (300 tokens: two full 128-token blocks) steered from
    different positions: the later start must not reuse the earlier start's blocks (there
    positions 10..199 were steered); the same start shares them."""
    llm, ids = plugin_env.llm, _ids(70, 300)
    early = build_spec(persona="middle", steer_tokens="last_turn", steer_start=10)
    late = build_spec(persona="middle", steer_tokens="last_turn", steer_start=200)
    llm.reset_prefix_cache()
    cold = _gen(llm, ids, late, 4)
    llm.reset_prefix_cache()
    _gen(llm, ids, early, 4)                             # fills the cache from position 10
    warm = _gen(llm, ids, late, 4)
    assert warm[2] == 0 and warm[:2] == cold[:2]
    again = _gen(llm, ids, late, 4)
    assert again[2] > 0 and again[0] == cold[0]           # same start: blocks shared
    torch.testing.assert_close(torch.tensor(again[1]), torch.tensor(cold[1]), atol=1e-5, rtol=0)


def test_generated_salt_keeps_a_follow_up_prompt_off_steered_answer_blocks(plugin_env):
    """steer_tokens=generated: request A's answer (positions 100..159, steered) fills block 0;
    request B's prompt is A's prompt plus 40 of those tokens, which B must see unsteered. With
    the prompt's length in the salt B does not reuse A's block and equals B run cold."""
    llm, prompt = plugin_env.llm, _ids(71, 100)
    spec = build_spec(persona="middle", strength=2.0, steer_tokens="generated")
    llm.reset_prefix_cache()
    answer, _, _ = _gen(llm, prompt, spec, 60)
    follow = prompt + answer[:40]
    warm = _gen(llm, follow, spec, 4)
    llm.reset_prefix_cache()
    cold = _gen(llm, follow, spec, 4)
    assert warm[2] == 0 and warm[0] == cold[0]
    torch.testing.assert_close(torch.tensor(warm[1]), torch.tensor(cold[1]), atol=1e-5, rtol=0)
