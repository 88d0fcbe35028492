"""Train the toy persona model: a small Qwen3ForCausalLM on the synthetic persona corpus, on CPU.

    persona-steer toy train [--steps N] [--out DIR] [--seed S]

Deterministic given the seed (corpus, tokenizer, init, batch order); the default output is
persona_steer/toy_model/ (what `builtin:toy-persona` resolves to). Written to a temporary
folder first and moved into place at the end, so a killed run leaves the old model intact.
The folder gets the run's log (train_log.txt) and record (train_info.json). Vectors made for
the old weights (the demo set in vectors/) are kept only when the new weights are identical.
"""
from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from persona_steer.toy_demo import VECTORS_DIR
from toy import corpus

DIMS = dict(hidden_size=256, intermediate_size=768, num_hidden_layers=6, num_attention_heads=4,
            num_key_value_heads=2, head_dim=64)


@dataclass
class TrainConfig:
    steps: int = 900
    batch_size: int = 24
    lr: float = 3e-3
    warmup: int = 40
    weight_decay: float = 0.1
    seed: int = 0
    vocab_size: int = 3072
    threads: int = 1       # measured: on a busy 2-core machine 1 thread is ~8x faster than 2
    bf16: bool = True
    no_think_frac: float = 0.2
    continue_frac: float = corpus.CONTINUE_FRAC   # share of continuation examples (see corpus)
    dims: dict = field(default_factory=lambda: dict(DIMS))
    max_len: int = 384
    log_every: int = 25


def _encode(tok, examples, cfg: TrainConfig, rng: random.Random):
    """[(input_ids, n_prompt_tokens)] with loss on the assistant part only."""
    parts = [corpus.answer_parts(e) for e in examples]
    prompts = [corpus.prompt_text(e.system, e.question, no_think=rng.random() < cfg.no_think_frac) + pre
               for e, (pre, _) in zip(examples, parts)]
    answers = [ans for _, ans in parts]
    p_ids = tok(prompts, add_special_tokens=False)["input_ids"]
    a_ids = tok(answers, add_special_tokens=False)["input_ids"]
    out = []
    for p, a in zip(p_ids, a_ids):
        ids = (p + a)[:cfg.max_len]
        out.append((ids, len(p)))
    return out


def _batch(items, pad_id):
    import torch
    n = max(len(ids) for ids, _ in items)
    input_ids = torch.full((len(items), n), pad_id, dtype=torch.long)
    labels = torch.full((len(items), n), -100, dtype=torch.long)
    attn = torch.zeros((len(items), n), dtype=torch.long)
    for i, (ids, n_prompt) in enumerate(items):
        t = torch.tensor(ids, dtype=torch.long)
        input_ids[i, :len(ids)] = t
        attn[i, :len(ids)] = 1
        labels[i, n_prompt:len(ids)] = t[n_prompt:]
    return input_ids, attn, labels


def train(out_dir: str | os.PathLike, cfg: TrainConfig | None = None, *, examples=None,
          log=None) -> dict:
    """Train and save an HF checkpoint into out_dir. Returns the training record."""
    import torch
    from transformers import Qwen3ForCausalLM

    from persona_steer.atomic import atomic_write_text
    from persona_steer.testmodels import build_tokenizer, qwen3_config, save_model

    cfg = cfg or TrainConfig()
    echo = log or (lambda msg: print(msg, flush=True))
    lines: list[str] = []

    def log(msg: str) -> None:             # echoed, and kept for the folder's train_log.txt
        lines.append(msg)
        echo(msg)

    torch.set_num_threads(cfg.threads)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    t0 = time.time()
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".training")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)

    n_examples = cfg.steps * cfg.batch_size
    if examples is None:
        examples = corpus.generate(n_examples, cfg.seed, cfg.continue_frac)
    tok = build_tokenizer(corpus.tokenizer_texts(examples[:20000]), tmp, vocab_size=cfg.vocab_size)
    rng = random.Random(cfg.seed + 1)
    data = _encode(tok, examples, cfg, rng)
    order = list(range(len(data)))
    rng.shuffle(order)
    log(f"corpus: {len(data)} examples, mean {sum(len(d[0]) for d in data) / len(data):.0f} tokens, "
        f"vocab {len(tok)}")

    model = Qwen3ForCausalLM(qwen3_config(tok, cfg.dims)).float()
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {n_params / 1e6:.2f}M parameters")
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))

    def lr_at(step: int) -> float:
        if step < cfg.warmup:
            return cfg.lr * (step + 1) / cfg.warmup
        prog = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * prog)))

    model.train()
    losses = []
    pos = 0
    for step in range(cfg.steps):
        idx = [order[(pos + i) % len(order)] for i in range(cfg.batch_size)]
        pos += cfg.batch_size
        input_ids, attn, labels = _batch([data[i] for i in idx], tok.pad_token_id)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            loss = model(input_ids=input_ids, attention_mask=attn, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            recent = losses[-cfg.log_every:]
            el = time.time() - t0
            log(f"step {step + 1}/{cfg.steps} loss {sum(recent) / len(recent):.4f} "
                f"lr {lr_at(step):.2e} elapsed {el / 60:.1f} min "
                f"eta {el / (step + 1) * (cfg.steps - step - 1) / 60:.1f} min")

    model.eval()
    save_model(model, tok, tmp)
    k = max(1, min(50, cfg.steps // 4))
    record = dict(config=asdict(cfg), n_params=n_params, n_examples=len(data),
                  first_loss=sum(losses[:k]) / k, final_loss=sum(losses[-k:]) / k,
                  loss_curve=[round(sum(losses[i:i + 25]) / len(losses[i:i + 25]), 4)
                              for i in range(0, len(losses), 25)],
                  minutes=round((time.time() - t0) / 60, 2),
                  command=f"persona-steer toy train --steps {cfg.steps} --seed {cfg.seed}")
    atomic_write_text(tmp / "train_info.json", json.dumps(record, indent=1))
    log(f"final loss {record['final_loss']:.4f}, {record['minutes']} min")
    atomic_write_text(tmp / "train_log.txt", "\n".join(lines) + "\n")
    _carry_vectors(out_dir, tmp, echo)
    _swap_in(tmp, out_dir)
    echo(f"saved {out_dir}")
    return record


def _carry_vectors(old: Path, new: Path, log) -> None:
    """Vectors belong to the weights they were extracted from: keep the old folder's vectors/
    when the new weights are byte-identical (a rebuild with the same seed), else say they are gone."""
    vec = old / VECTORS_DIR
    if not vec.is_dir():
        return
    same = (old / "model.safetensors").is_file() and \
        (old / "model.safetensors").read_bytes() == (new / "model.safetensors").read_bytes()
    if same:
        shutil.copytree(vec, new / VECTORS_DIR)
        log(f"weights unchanged: kept {vec}")
    else:
        log(f"the vectors in {vec} were made for the old weights and are not kept; "
            "rebuild the demo set with `persona-steer toy vectors`")


def _swap_in(tmp: Path, out_dir: Path) -> None:
    """Replace out_dir by tmp with two renames: at every moment one complete model is on disk
    (out_dir, or out_dir.old if the process dies between the renames)."""
    old = out_dir.with_name(out_dir.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out_dir.exists():
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    shutil.rmtree(old, ignore_errors=True)
