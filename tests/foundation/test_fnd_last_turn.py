"""steer_tokens=last_turn without an engine: where a chat's last user turn starts (on Qwen3's own
chat template, the project's ChatML one and a template that folds the system prompt into the
user turn), the steer_start field on both wire forms, and the prefix-cache salt of each mode."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from persona_steer.config import PROJECT_ROOT
from persona_steer.steering_spec import SteeringSpecError, build_spec, parse_extra_args
from persona_steer.testmodels import build_tokenizer, fetch_qwen3_tokenizer
from server.errors import APIError
from server.generation import chat_prompt, last_turn_start
from server.schemas import ChatMessage

LAST = "Tell me about the sea."
CHAT = [("system", "You are a pirate."), ("user", "Hi there"), ("assistant", "Ahoy!"),
        ("user", LAST)]
# a Gemma-style template: no system turn, the system text opens the first user turn
FOLDED = ("{%- set sys = messages[0]['content'] + '\\n\\n' if messages[0]['role'] == 'system' "
          "else '' -%}{%- for m in messages if m['role'] != 'system' -%}"
          "{{ '<|im_start|>' + m['role'] + '\\n' + (sys if loop.first else '') + m['content'] "
          "+ '<|im_end|>\\n' }}{%- endfor -%}"
          "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}")


def messages(pairs):
    return [ChatMessage(role=r, content=c) for r, c in pairs]


@pytest.fixture(scope="module")
def qwen3_tok():
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(fetch_qwen3_tokenizer(PROJECT_ROOT / ".cache"))


@pytest.fixture(scope="module")
def chatml_tok(tmp_path_factory):
    return build_tokenizer(["You are a pirate. Hi there Ahoy! Tell me about the sea."] * 4,
                           tmp_path_factory.mktemp("tok"), vocab_size=300)


def _start(tok, pairs, kwargs=None):
    state = SimpleNamespace(tokenizer=tok)
    ids, text = chat_prompt(state, messages(pairs), kwargs)
    return ids, text, last_turn_start(state, messages(pairs), kwargs, ids)


@pytest.mark.parametrize("thinking", [None, False])
def test_qwen3_template_steers_from_the_last_user_text_on(qwen3_tok, thinking):
    kwargs = None if thinking is None else {"enable_thinking": thinking}
    ids, text, start = _start(qwen3_tok, CHAT, kwargs)
    before = text[:text.rindex(LAST)]        # system, earlier turns, the last turn's header
    assert before.endswith("<|im_start|>user\n") and "Ahoy!" in before
    assert qwen3_tok.decode(ids[:start]) == before
    assert qwen3_tok.decode(ids[start:]).startswith(LAST)
    # why not "render the earlier messages, take the token prefix": Qwen3's template renders
    # the then-last assistant turn with an empty think block, so that is no prefix here
    earlier = qwen3_tok.apply_chat_template([{"role": r, "content": c} for r, c in CHAT[:3]],
                                            tokenize=False)
    assert not text.startswith(earlier)


def test_single_turn_and_chatml_template(chatml_tok):
    ids, text, start = _start(chatml_tok, CHAT[:2])
    assert chatml_tok.decode(ids[:start]) == text[:text.rindex("Hi there")]
    ids2, _, start2 = _start(chatml_tok, CHAT)
    assert start2 > start and ids2[:start2] != ids[:start2]       # a later turn starts later


def test_system_prompt_folded_into_the_user_turn_stays_unsteered(chatml_tok):
    chatml_tok.chat_template, saved = FOLDED, chatml_tok.chat_template
    try:
        ids, text, start = _start(chatml_tok, CHAT[:2])
    finally:
        chatml_tok.chat_template = saved
    assert text.startswith("<|im_start|>user\nYou are a pirate.\n\nHi there")
    assert chatml_tok.decode(ids[:start]) == "<|im_start|>user\nYou are a pirate.\n\n"


def test_a_chat_without_a_user_message_is_refused(chatml_tok):
    with pytest.raises(APIError) as err:
        _start(chatml_tok, [("system", "You are a pirate.")])
    assert err.value.status == 400 and err.value.param == "steer_tokens"


def test_steer_start_on_both_wire_forms():
    spec = build_spec(persona="p", steer_tokens="last_turn", steer_start=12)
    back = parse_extra_args(spec.to_extra_args())
    assert back.steer_tokens == "last_turn" and back.steer_start == 12
    flat = parse_extra_args({"steer_persona": "p", "steer_tokens": "last_turn",
                             "steer_start": "7"})
    assert flat.steer_start == 7 and flat.steered_span(20) == (7, None)
    # where a turn starts is the request's, not the config's: one delta, one slot
    assert back == build_spec(persona="p", steer_tokens="last_turn", steer_start=3)
    assert back != build_spec(persona="p", steer_tokens="generated")


@pytest.mark.parametrize("extra,needle", [
    ({"steer_persona": "p", "steer_tokens": "last_turn"}, "needs steer_start"),
    ({"steering": {"personas": {"p": 1}, "steer_tokens": "last_turn"}}, "needs steer_start"),
    ({"steer_persona": "p", "steer_tokens": "last_turn", "steer_start": -1}, ">= 0"),
    ({"steer_persona": "p", "steer_tokens": "last_turn", "steer_start": True}, "whole number"),
    ({"steer_persona": "p", "steer_tokens": "last_turn", "steer_start": 2.5}, "whole number"),
    ({"steer_persona": "p", "steer_tokens": "generated", "steer_start": 3}, "goes with"),
    ({"steer_persona": "p", "steer_start": 3}, "goes with")])
def test_bad_steer_start_is_refused_naming_it(extra, needle):
    with pytest.raises(SteeringSpecError, match=needle) as err:
        parse_extra_args(extra)
    assert err.value.param == "steer_start"


def test_spans_and_salts_per_mode():
    base = "steer-abc"
    spans = {m: build_spec(persona="p", steer_tokens=m,
                           steer_start=4 if m == "last_turn" else None).steered_span(10)
             for m in ("all", "generated", "prompt", "last_turn")}
    assert spans == {"all": (0, None), "generated": (10, None), "prompt": (0, 10),
                     "last_turn": (4, None)}
    every = build_spec(persona="p")
    assert every.positioned_salt(base, 10) == every.positioned_salt(base, 99) == base
    # partial modes: the boundary is in the salt, so a later request whose prompt holds this
    # one's steered (or unsteered) tokens at other positions never reuses its blocks
    gen = build_spec(persona="p", steer_tokens="generated")
    assert gen.positioned_salt(base, 10) != gen.positioned_salt(base, 11)
    turn = [build_spec(persona="p", steer_tokens="last_turn", steer_start=s) for s in (4, 5)]
    assert turn[0].positioned_salt(base, 10) != turn[1].positioned_salt(base, 10)
    assert turn[0].positioned_salt(base, 10) == turn[0].positioned_salt(base, 12)
    assert len({base, gen.positioned_salt(base, 10), turn[0].positioned_salt(base, 10),
                build_spec(persona="p", steer_tokens="prompt").positioned_salt(base, 10)}) == 4


def test_completions_refuse_last_turn_and_a_last_turn_default_steers_all():
    from persona_steer.config import ConfigError, load_config
    from server.generation import completion_steer_tokens
    from server.schemas import CompletionRequest
    with pytest.raises(ConfigError):
        load_config(overrides={"steering.steer_tokens": "some"})
    for default, asked, want in [("last_turn", None, "all"), ("all", None, None),
                                 ("last_turn", "generated", "generated")]:
        state = SimpleNamespace(settings=load_config(overrides={"steering.steer_tokens": default}))
        req = CompletionRequest(prompt="hi", steer_tokens=asked)
        assert completion_steer_tokens(state, req).steer_tokens == want
    state = SimpleNamespace(settings=load_config())
    with pytest.raises(APIError) as err:
        completion_steer_tokens(state, CompletionRequest(prompt="hi", steer_tokens="last_turn"))
    assert err.value.status == 400 and err.value.param == "steer_tokens"
