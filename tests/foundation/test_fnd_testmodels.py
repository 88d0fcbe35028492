"""The project's own test models: tiny random Qwen3, tokenizer and ChatML chat template."""
from __future__ import annotations

import json

import pytest
import torch

from persona_steer.config import ConfigError
from persona_steer.testmodels import SIZES, build_random_qwen3, resolve_model

CPU_HEAD_DIMS = {32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512}


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_sizes_fit_cpu_attention():
    for name, dims in SIZES.items():
        assert dims["head_dim"] in CPU_HEAD_DIMS, name
        assert dims["num_attention_heads"] % dims["num_key_value_heads"] == 0
    assert SIZES["mid"]["hidden_size"] >= 1024 and SIZES["mid"]["num_hidden_layers"] >= 8


def test_tiny_model_loads_in_transformers(tiny_model_dir, tok):
    from transformers import AutoModelForCausalLM
    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    assert cfg["architectures"] == ["Qwen3ForCausalLM"] and cfg["model_type"] == "qwen3"
    assert cfg["head_dim"] in CPU_HEAD_DIMS and cfg["hidden_size"] == 256
    assert (tiny_model_dir / "model.safetensors").is_file()
    assert not list(tiny_model_dir.glob("*.bin")) and not list(tiny_model_dir.glob("*.pt"))
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    assert type(model).__name__ == "Qwen3ForCausalLM" and len(model.model.layers) == 4
    ids = tok.apply_chat_template([{"role": "user", "content": "how does rain form?"}],
                                  add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        logits = model(input_ids=ids["input_ids"]).logits
    assert logits.shape == (1, ids["input_ids"].shape[1], cfg["vocab_size"])
    assert torch.isfinite(logits).all()
    gen = json.loads((tiny_model_dir / "generation_config.json").read_text())
    assert tok.convert_tokens_to_ids("<|im_end|>") in gen["eos_token_id"]


def test_chat_template_renders_chatml(tok):
    msgs = [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "<think>\nplanning\n</think>\n\nhello"},
            {"role": "user", "content": "again"}]
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert text == ("<|im_start|>system\nBe brief.<|im_end|>\n"
                    "<|im_start|>user\nhi<|im_end|>\n"
                    "<|im_start|>assistant\nhello<|im_end|>\n"        # earlier thinking stripped
                    "<|im_start|>user\nagain<|im_end|>\n"
                    "<|im_start|>assistant\n")
    no_think = tok.apply_chat_template(msgs[:2], tokenize=False, add_generation_prompt=True,
                                       enable_thinking=False)
    assert no_think.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    closed = tok.apply_chat_template(msgs[:2], tokenize=False, add_generation_prompt=False)
    assert closed.endswith("hi<|im_end|>\n")


def test_special_tokens_are_single_tokens(tok):
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
    ids = tok.convert_tokens_to_ids(specials)
    assert len(set(ids)) == 5 and all(isinstance(i, int) for i in ids)
    assert tok.unk_token is None                      # byte-level: nothing maps to unk
    enc = tok("<|im_start|>user\n<think>x</think><|im_end|>", add_special_tokens=False).input_ids
    assert enc[0] == ids[1] and ids[3] in enc and ids[4] in enc and enc[-1] == ids[2]
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert tok.decode(tok("Arr matey, 42!").input_ids) == "Arr matey, 42!"


def test_builder_is_deterministic_and_idempotent(tmp_path):
    from persona_steer.cli import main
    a = build_random_qwen3(tmp_path / "a", "tiny", seed=0)
    b = build_random_qwen3(tmp_path / "b", "tiny", seed=0)
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()
    assert main(["build-test-model", str(tmp_path / "c"), "--seed", "1"]) == 0   # the CLI path
    assert (tmp_path / "c" / "model.safetensors").read_bytes() != (a / "model.safetensors").read_bytes()
    mtime = (a / "model.safetensors").stat().st_mtime_ns
    assert build_random_qwen3(tmp_path / "a", "tiny", seed=0) == a                  # cached
    assert (a / "model.safetensors").stat().st_mtime_ns == mtime
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".") and
                  "building" in p.name) == []                                     # no leftovers
    assert json.loads((tmp_path / "c" / ".complete").read_text()) == {"size": "tiny", "seed": 1}


def test_resolve_model(tmp_path, tiny_model_dir):
    assert resolve_model("Qwen/Qwen3-8B") == "Qwen/Qwen3-8B"
    assert resolve_model("/some/local/path") == "/some/local/path"
    assert resolve_model("builtin:tiny", tiny_model_dir.parent.parent) == str(tiny_model_dir)
    with pytest.raises(ConfigError, match="unknown builtin model 'builtin:huge'"):
        resolve_model("builtin:huge", tmp_path)
    with pytest.raises(ValueError, match="unknown test model size"):
        build_random_qwen3(tmp_path / "x", "huge")


def test_staged_build_publishes_once_and_leaves_nothing_half_built(tmp_path):
    from persona_steer.atomic import staged_build

    out = tmp_path / "m"
    with pytest.raises(RuntimeError, match="boom"):
        with staged_build(out) as tmp:
            (tmp / "weights").write_text("partial")
            raise RuntimeError("boom")
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == [".m.lock"]
    with pytest.raises(RuntimeError, match="no .complete marker"):
        with staged_build(out) as tmp:
            (tmp / "weights").write_text("no marker")
    assert not out.exists()
    with staged_build(out) as tmp:
        (tmp / "weights").write_text("whole")
        (tmp / ".complete").write_text("{}")
    assert (out / "weights").read_text() == "whole"
    with staged_build(out) as tmp:
        assert tmp is None            # already complete: nothing to build
    assert sorted(p.name for p in tmp_path.iterdir()) == [".m.lock", "m"]
