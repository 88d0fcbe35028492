"""The training script on a tiny corpus: it runs, the loss falls, the output loads in transformers."""
from __future__ import annotations

import json

import torch

from toy import corpus
from toy.train import TrainConfig, train

TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=1,
            num_key_value_heads=1, head_dim=64)


def test_train_tiny_runs_loss_falls_and_loads(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    examples = corpus.generate(48, seed=5)
    cfg = TrainConfig(steps=30, batch_size=8, lr=5e-3, warmup=3, seed=1, vocab_size=600,
                      dims=dict(TINY), log_every=10, bf16=False)
    out = tmp_path / "model"
    logs = []
    rec = train(out, cfg, examples=examples, log=logs.append)
    assert rec["final_loss"] < rec["first_loss"] - 1.0, rec
    assert any("step 30/30" in m for m in logs)
    # the folder keeps the run's own log: what was printed, up to the final loss
    log_lines = (out / "train_log.txt").read_text().splitlines()
    assert log_lines[0].startswith("corpus: 48 examples") and "step 30/30" in log_lines[-2]
    assert log_lines[-1].startswith("final loss") and log_lines == logs[:len(log_lines)]
    for f in ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json",
              "train_info.json"):
        assert (out / f).exists(), f
    assert not (tmp_path / "model.training").exists()
    assert json.loads((out / "train_info.json").read_text())["config"]["seed"] == 1

    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    assert model.config.architectures == ["Qwen3ForCausalLM"] and model.config.head_dim == 64
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    gen = json.loads((out / "generation_config.json").read_text())
    assert im_end in (gen["eos_token_id"] if isinstance(gen["eos_token_id"], list) else [gen["eos_token_id"]])
    text = tok.apply_chat_template([{"role": "system", "content": "You are a pirate."},
                                    {"role": "user", "content": "What is sleep?"}],
                                   tokenize=False, add_generation_prompt=True)
    assert text == corpus.prompt_text("You are a pirate.", "What is sleep?")
    ids = tok(text, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        res = model.generate(**ids, max_new_tokens=5, do_sample=False)
    assert res.shape[1] == ids["input_ids"].shape[1] + 5 or im_end in res[0].tolist()


def test_train_is_deterministic(tmp_path):
    examples = corpus.generate(16, seed=2)
    cfg = TrainConfig(steps=3, batch_size=4, warmup=1, seed=7, vocab_size=500, dims=dict(TINY),
                      log_every=10, bf16=False)
    a = train(tmp_path / "a", cfg, examples=examples, log=lambda m: None)
    b = train(tmp_path / "b", cfg, examples=examples, log=lambda m: None)
    assert a["loss_curve"] == b["loss_curve"]
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (tmp_path / "b" / "model.safetensors").read_bytes()


def test_retrain_keeps_vectors_only_for_identical_weights(tmp_path):
    """Rebuilding the shipped model with its seed keeps the demo vectors (they still fit the
    weights); another seed drops them and says how to rebuild them. No .old/.training is left."""
    examples = corpus.generate(16, seed=2)
    cfg = TrainConfig(steps=2, batch_size=4, warmup=1, seed=7, vocab_size=500, dims=dict(TINY),
                      log_every=10, bf16=False)
    out = tmp_path / "model"
    train(out, cfg, examples=examples, log=lambda m: None)
    (out / "vectors" / "personas").mkdir(parents=True)
    (out / "vectors" / "personas" / "pirate.safetensors").write_bytes(b"demo")

    logs: list[str] = []
    train(out, cfg, examples=examples, log=logs.append)
    assert (out / "vectors" / "personas" / "pirate.safetensors").read_bytes() == b"demo"
    assert any("weights unchanged" in m for m in logs)

    logs.clear()
    cfg.seed = 8
    train(out, cfg, examples=examples, log=logs.append)
    assert not (out / "vectors").exists()
    assert any("persona-steer toy vectors" in m for m in logs)
    assert json.loads((out / "train_info.json").read_text())["config"]["seed"] == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
