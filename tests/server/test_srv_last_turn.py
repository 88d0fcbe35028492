"""steer_tokens=last_turn through the real server (session server, tiny model, random vectors)
with the openai SDK: the echoed start is where the last user message begins in the rendered
chat, the answer equals the HF reference that steers only from there (after the chat's first
turn, steered from its own last user message, filled the prefix cache with a block the second
turn must not reuse), /api/chat and /ws/chat take it, /v1/completions refuses it naming the
parameter."""
from __future__ import annotations

import asyncio
import json

import httpx
import openai
import pytest
import torch
import websockets

LAST = "Now tell me about the weather at sea."
CHAT = [{"role": "system", "content": "You are a pirate who talks about ships all day long."},
        # long enough that the first turn's prompt fills a KV block (128 tokens on CPU) past
        # where its user message starts: steered there, unsteered in the second turn
        {"role": "user", "content": "Hi there, who are you? I have heard many stories about "
                                    "the sea, about rain, about money and about bread, and I "
                                    "would like to know where you come from and what you do "
                                    "all day."},
        {"role": "assistant", "content": "Arr, a sailor I be."},
        {"role": "user", "content": LAST}]
STEER = {"persona": "alpha", "strength": 3.0}
N_NEW = 6


@pytest.fixture(scope="module")
def sdk(server, steer_vectors):
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key=server.api_key or "unused",
                         timeout=180, max_retries=0)


@pytest.fixture(scope="module")
def tok(server):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(server.model_id)


def ask(sdk, server, messages, **steering):
    r = sdk.chat.completions.create(model=server.model_id, messages=messages, max_tokens=N_NEW,
                                    temperature=0, logprobs=True,
                                    extra_body={"ignore_eos": True, **steering})
    return r.model_extra["steering"], [t.logprob for t in r.choices[0].logprobs.content]


def hf_greedy_logprobs(server, tok, messages, start, scale):
    """The reference: HF transformers, the persona's delta added at positions >= start only,
    greedy: per generated token, the log-probability of the most likely token."""
    from transformers import AutoModelForCausalLM

    from persona_steer.resolve import ModelShape, spec_delta
    from persona_steer.steering_spec import build_spec
    from persona_steer.store import VectorStore
    from steering_plugin.reference import hf_steering
    hf = AutoModelForCausalLM.from_pretrained(server.model_id, dtype=torch.float32).eval()
    shape = ModelShape(hf.config.hidden_size, hf.config.num_hidden_layers)
    delta = spec_delta(build_spec(**STEER), VectorStore(server.vectors_dir), shape, scale)
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tok.encode(text, add_special_tokens=False)
    out = []
    for _ in range(N_NEW):
        mask = torch.arange(len(ids)) >= start
        with torch.no_grad(), hf_steering(hf, delta, token_mask=mask):
            lp = torch.log_softmax(hf(input_ids=torch.tensor([ids])).logits[0, -1].float(), -1)
        out.append(float(lp.max()))
        ids.append(int(lp.argmax()))
    return out


def test_last_turn_through_the_sdk_steers_from_the_last_user_message(sdk, server, tok):
    text = tok.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    want_start = len(tok.encode(text[:text.rindex(LAST)], add_special_tokens=False))
    first, _ = ask(sdk, server, CHAT[:2], **STEER, steer_tokens="last_turn")   # fills the cache
    steering, got = ask(sdk, server, CHAT, **STEER, steer_tokens="last_turn")
    assert steering["steer_tokens"] == "last_turn" and steering["steer_start"] == want_start
    assert first["steer_start"] < want_start
    scale = httpx.get(server.base_url + "/api/steering-scale",
                      headers={"Authorization": f"Bearer {server.api_key}"} if server.api_key
                      else {}).json()["steering_scale"]
    want = hf_greedy_logprobs(server, tok, CHAT, want_start, scale)
    torch.testing.assert_close(torch.tensor(got), torch.tensor(want), atol=2e-3, rtol=1e-3)
    # the system prompt and the first turn steered too (all) or nothing steered: other answers
    _, every = ask(sdk, server, CHAT, **STEER)
    _, plain = ask(sdk, server, CHAT)
    assert got != every and got != plain


def test_api_chat_and_ws_chat_take_last_turn(server):
    body = {"messages": CHAT, "max_tokens": 3, "temperature": 0, **STEER,
            "steer_tokens": "last_turn"}
    headers = {"Authorization": f"Bearer {server.api_key}"} if server.api_key else {}
    r = httpx.post(server.base_url + "/api/chat", json=body, headers=headers, timeout=180)
    assert r.status_code == 200, r.text
    start = r.json()["steering"]["steer_start"]
    assert r.json()["steering"]["steer_tokens"] == "last_turn" and start > 0

    async def ws():
        url = server.base_url.replace("http", "ws", 1) + "/ws/chat"
        if server.api_key:
            url += f"?api_key={server.api_key}"
        async with websockets.connect(url) as sock:
            await sock.send(json.dumps(body))
            while True:
                ev = json.loads(await asyncio.wait_for(sock.recv(), 120))
                assert ev["type"] != "error", ev
                if ev["type"] == "start":
                    return ev["steering"]
    assert asyncio.run(ws())["steer_start"] == start


def test_completions_refuse_last_turn_naming_it(sdk, server):
    with pytest.raises(openai.BadRequestError) as err:
        sdk.completions.create(model=server.model_id, prompt="Hello", max_tokens=2,
                               extra_body={**STEER, "steer_tokens": "last_turn"})
    assert err.value.body["param"] == "steer_tokens" and "chat" in err.value.body["message"]
    ok = sdk.completions.create(model=server.model_id, prompt="Hello", max_tokens=2,
                                extra_body={**STEER, "steer_tokens": "generated"})
    assert ok.model_extra["steering"]["steer_tokens"] == "generated"
