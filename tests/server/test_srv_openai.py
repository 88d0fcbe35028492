"""The real openai SDK against the live server: chat (stream and not) with extra_body steering,
completions, models list, persona-as-model id, determinism, thinking and structured output."""
from __future__ import annotations

import json

import openai
import pytest

pytestmark = pytest.mark.sdk_contract   # also run under the other openai major

PROMPT = [{"role": "user", "content": "Tell me about the weather today."}]


@pytest.fixture(scope="module")
def oai(server, steer_vectors):
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", max_retries=0,
                         timeout=300)


def chat(oai, server, **extra):
    return oai.chat.completions.create(model=server.model_id, messages=PROMPT, max_tokens=12,
                                       temperature=0, extra_body=extra or None)


def test_models_list_has_base_and_personas(oai, server, steer_vectors):
    ids = [m.id for m in oai.models.list().data]
    assert ids[0] == server.model_id
    for name in steer_vectors["personas"]:
        assert f"persona:{name}" in ids


def test_chat_unsteered_and_steered_differ_and_are_deterministic(oai, server):
    plain = chat(oai, server)
    steered = chat(oai, server, persona="alpha")
    again = chat(oai, server, persona="alpha")
    assert plain.choices[0].message.content != steered.choices[0].message.content
    assert steered.choices[0].message.content == again.choices[0].message.content
    assert plain.usage.completion_tokens == 12 and plain.usage.prompt_tokens > 0
    assert steered.model_extra["steering"] == {"personas": {"alpha": 1.0}, "traits": {},
                                               "scale": 1.0, "safety": False, "steered": True}
    assert plain.model_extra["steering"]["steered"] is False


def first_token_logprobs(oai, server, **extra):
    r = oai.chat.completions.create(model=server.model_id, messages=PROMPT, max_tokens=1,
                                    temperature=0, logprobs=True, top_logprobs=5,
                                    extra_body=extra or None)
    return tuple((t.token, round(t.logprob, 4)) for t in r.choices[0].logprobs.content[0].top_logprobs)


def test_strength_blend_and_traits_each_change_the_distribution(oai, server):
    configs = [{}, {"persona": "alpha"}, {"persona": "alpha", "strength": 0.3},
               {"blend": {"alpha": 0.5, "beta": 0.5}},
               {"persona": "alpha", "traits": {"calm": -1.0}}, {"traits": {"calm": 1.0}}]
    dists = [first_token_logprobs(oai, server, **c) for c in configs]
    assert len(set(dists)) == len(configs)
    assert first_token_logprobs(oai, server, persona="alpha") == dists[1]   # deterministic
    blend = chat(oai, server, blend={"alpha": 0.5, "beta": 0.5})
    assert blend.model_extra["steering"]["personas"] == {"alpha": 0.5, "beta": 0.5}


def test_zero_weight_is_unsteered(oai, server):
    plain = chat(oai, server).choices[0].message.content
    zero = chat(oai, server, persona="alpha", strength=0.0)
    assert zero.choices[0].message.content == plain
    assert zero.model_extra["steering"]["steered"] is False


def test_persona_as_model_id_equals_persona_field(oai, server):
    by_field = chat(oai, server, persona="beta").choices[0].message.content
    by_model = oai.chat.completions.create(model="persona:beta", messages=PROMPT, max_tokens=12,
                                           temperature=0)
    assert by_model.choices[0].message.content == by_field
    assert by_model.model == "persona:beta"


def test_chat_stream_equals_non_stream(oai, server):
    full = chat(oai, server, persona="gamma").choices[0].message.content
    stream = oai.chat.completions.create(model=server.model_id, messages=PROMPT, max_tokens=12,
                                         temperature=0, stream=True,
                                         stream_options={"include_usage": True},
                                         extra_body={"persona": "gamma"})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].model_extra["steering"]["personas"] == {"gamma": 1.0}
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and
              c.choices[0].finish_reason]
    assert finals == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12


def test_n_seed_and_sampling(oai, server):
    r = oai.chat.completions.create(model=server.model_id, messages=PROMPT, max_tokens=8, n=3,
                                    temperature=1.0, top_p=0.9, seed=7)
    r2 = oai.chat.completions.create(model=server.model_id, messages=PROMPT, max_tokens=8, n=3,
                                     temperature=1.0, top_p=0.9, seed=7)
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert [c.message.content for c in r.choices] == [c.message.content for c in r2.choices]
    assert r.usage.completion_tokens == 24


def test_max_completion_tokens_stop_and_logprobs(oai, server):
    r = oai.chat.completions.create(model=server.model_id, messages=PROMPT,
                                    max_completion_tokens=5, temperature=0, logprobs=True,
                                    top_logprobs=3)
    content = r.choices[0].logprobs.content
    assert len(content) == 5 == r.usage.completion_tokens
    for entry in content:
        assert len(entry.top_logprobs) == 3
        assert entry.top_logprobs[0].logprob >= entry.top_logprobs[-1].logprob
        assert entry.logprob <= 0
    # greedy: the chosen token is the top-ranked one
    assert all(e.token == e.top_logprobs[0].token for e in content)
    text = r.choices[0].message.content
    stop_at = text[2:4]
    if stop_at:
        cut = oai.chat.completions.create(model=server.model_id, messages=PROMPT, max_tokens=5,
                                          temperature=0, stop=[stop_at])
        assert cut.choices[0].finish_reason == "stop"
        assert stop_at not in cut.choices[0].message.content


def test_completions_with_steering_and_multiple_prompts(oai, server):
    plain = oai.completions.create(model=server.model_id, prompt="The weather is", max_tokens=8,
                                   temperature=0)
    steered = oai.completions.create(model=server.model_id, prompt="The weather is",
                                     max_tokens=8, temperature=0, extra_body={"persona": "alpha"})
    assert plain.choices[0].text != steered.choices[0].text
    multi = oai.completions.create(model=server.model_id, prompt=["The weather is", "Hello"],
                                   max_tokens=8, temperature=0, logprobs=2)
    assert [c.index for c in multi.choices] == [0, 1]
    assert multi.choices[0].text == plain.choices[0].text
    assert len(multi.choices[1].logprobs.tokens) == 8
    stream = oai.completions.create(model="persona:alpha", prompt="The weather is",
                                    max_tokens=8, temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in stream) == steered.choices[0].text


def test_thinking_flag_reaches_the_template(oai, server):
    on = oai.chat.completions.create(model=server.model_id, messages=PROMPT, max_tokens=2,
                                     temperature=0)
    off = oai.chat.completions.create(model=server.model_id, messages=PROMPT, max_tokens=2,
                                      temperature=0,
                                      extra_body={"chat_template_kwargs": {"enable_thinking": False}})
    # enable_thinking=false pre-fills an empty <think></think> block in the prompt
    assert off.usage.prompt_tokens > on.usage.prompt_tokens
    assert off.choices[0].message.model_extra.get("reasoning_content") is None


def test_structured_output_json_schema(oai, server):
    schema = {"type": "object", "properties": {"a": {"enum": ["x", "y"]}}, "required": ["a"],
              "additionalProperties": False}
    r = oai.chat.completions.create(
        model=server.model_id, messages=PROMPT, max_tokens=20, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "t", "schema": schema}})
    text = r.choices[0].message.content
    free = chat(oai, server).choices[0].message.content
    assert text.startswith("{") and not free.startswith("{")
    # whatever the tiny random model writes, it stays inside the grammar
    assert set(text) <= set('{}"ax:y, \t\r\n'), text
    if r.choices[0].finish_reason == "stop":
        assert json.loads(text)["a"] in ("x", "y")
