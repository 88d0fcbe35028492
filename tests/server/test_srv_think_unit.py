"""Unit tests: the <think> splitter (streamed and whole) and error mapping."""
from __future__ import annotations

from server.generation import engine_error
from server.think import ThinkConfig, ThinkSplitter

CFG = ThinkConfig(has_tags=True, tags_special=True, strip_tokens=("<|im_end|>", "<|endoftext|>"))


def split_stream(pieces, start=False):
    sp = ThinkSplitter(CFG, start)
    r, c = [], []
    for p in pieces:
        a, b = sp.feed(p)
        r.append(a)
        c.append(b)
    return "".join(r), "".join(c), sp.seen_reasoning


def test_whole_and_streamed_give_the_same_split():
    text = "<think>I should greet.\nOK</think>\n\nHello there<|im_end|>"
    pieces = ["<think>", "I should", " greet.\nOK", "</think>", "\n\n", "Hello", " there",
              "<|im_end|>"]
    assert split_stream([text]) == ("I should greet.\nOK", "Hello there", True)
    assert split_stream(pieces) == ("I should greet.\nOK", "Hello there", True)


def test_no_tags_is_all_content():
    assert split_stream(["Hi", " you"]) == ("", "Hi you", False)


def test_unfinished_thinking_stays_reasoning():
    assert split_stream(["<think>", "hmm", " still"]) == ("hmm still", "", True)


def test_prompt_opened_think_block():
    assert split_stream(["plan", "</think>", "answer"], start=True) == ("plan", "answer", True)


def test_engine_errors_map_to_client_or_server_status():
    class VLLMValidationError(ValueError):
        pass

    class EngineGenerateError(Exception):
        pass

    class EngineDeadError(Exception):
        pass

    try:
        try:
            raise VLLMValidationError("persona 'x' not found in the engine")
        except Exception as inner:
            raise EngineGenerateError() from inner
    except Exception as err:
        e = engine_error(err)
    assert e.status == 400 and "persona 'x'" in e.message
    assert engine_error(EngineDeadError()).status == 503
    boom = engine_error(RuntimeError("segfault-ish"))
    assert boom.status == 500 and "segfault" not in boom.message
