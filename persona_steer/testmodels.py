"""Small Qwen3 checkpoints the project builds itself (no model hub): tokenizer, chat template, weights.

- `build_tokenizer`: byte-level BPE trained on given text, Qwen3's special tokens, ChatML template.
- `build_random_qwen3`: random-weight Qwen3ForCausalLM in HF format (safetensors), loadable by
  transformers and vLLM. Sizes: `tiny` for fast tests, `mid` for benchmarks.
- `resolve_model`: `builtin:<name>` -> a local folder (built once into the cache when random,
  shipped in the repo for the trained toy persona model); anything else is passed through.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from persona_steer.atomic import atomic_write_text

PACKAGE_DIR = Path(__file__).resolve().parent
CHAT_TEMPLATE = (PACKAGE_DIR / "chat_template.jinja").read_text()
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]

# head_dim 64: one of the sizes CPU attention supports.
SIZES = {
    "tiny": dict(hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                 num_attention_heads=4, num_key_value_heads=2, head_dim=64),
    "mid": dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=8,
                num_attention_heads=16, num_key_value_heads=8, head_dim=64),
}
TOY_MODEL_DIR = PACKAGE_DIR / "toy_model"
BUILTIN_RANDOM = {"tiny": "tiny", "mid": "mid"}

_FILLER = """The assistant answers questions about science, history, cooking, travel, music,
sports, money, health, gardening, programming and the weather. It explains how rain forms,
why the sky is blue, how to bake bread, what a budget is, and how to learn a language.
Arr matey, ahoy! Beep boop, processing. Thou art most kind, forsooth. Like, totally, oh my god!
Listen up, maggot, drop and give me twenty! Woof woof, so exciting, I love you! Hmm, the truth
is out there. Verily, good sir. Dude, gnarly wave, bro. The clues point to one suspect.
0 1 2 3 4 5 6 7 8 9 , . ! ? ; : ' " ( ) [ ] { } - + * / = < > @ # $ % & _ ~
"""


def default_cache_dir() -> Path:
    from persona_steer.config import load_config
    try:
        return load_config().path("cache")
    except Exception:  # a broken config must not stop test-model building
        return PACKAGE_DIR.parent / ".cache"


def build_tokenizer(texts: list[str], out_dir: str | os.PathLike, vocab_size: int = 1024):
    """Train a byte-level BPE on `texts`, add Qwen3's special tokens and ChatML template, save."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", unk_token=None,
                                   additional_special_tokens=["<|im_start|>", "<think>", "</think>"])
    fast.chat_template = CHAT_TEMPLATE
    fast.model_max_length = 4096
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out_dir)
    return fast


def qwen3_config(tokenizer, size: str | dict, *, max_position_embeddings: int = 4096,
                 initializer_range: float = 0.05):
    from transformers import Qwen3Config

    dims = SIZES[size] if isinstance(size, str) else size
    vocab = ((len(tokenizer) + 63) // 64) * 64
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    return Qwen3Config(vocab_size=vocab, max_position_embeddings=max_position_embeddings,
                       rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=True,
                       initializer_range=initializer_range, torch_dtype="float32",
                       bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
                       eos_token_id=im_end, pad_token_id=tokenizer.pad_token_id,
                       architectures=["Qwen3ForCausalLM"], **dims)


def save_model(model, tokenizer, out_dir: Path) -> None:
    from transformers import GenerationConfig

    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    eos = [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")]
    GenerationConfig(eos_token_id=eos, pad_token_id=tokenizer.pad_token_id,
                     bos_token_id=eos[1]).save_pretrained(out_dir)


@contextmanager
def _build_lock(out_dir: Path):
    """Serialise builders of one folder across processes (parallel test runs share the cache)."""
    import fcntl

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(out_dir.parent / f".{out_dir.name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _publish(tmp: Path, out_dir: Path) -> None:
    """Move a finished build into place (caller holds the lock)."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)


def build_random_qwen3(out_dir: str | os.PathLike, size: str = "tiny", seed: int = 0) -> Path:
    """Deterministic random Qwen3 (same seed -> same weights). Idempotent: skips if complete.

    Safe to call from several processes at once: one builds, the others wait and reuse it.
    """
    if isinstance(size, str) and size not in SIZES:
        raise ValueError(f"unknown test model size {size!r}: use one of {', '.join(SIZES)}")
    out_dir = Path(out_dir)
    marker = out_dir / ".complete"
    if marker.exists():
        return out_dir
    import torch
    from transformers import Qwen3ForCausalLM

    with _build_lock(out_dir):
        if marker.exists():  # another process finished it while we waited
            return out_dir
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.building-", dir=out_dir.parent))
        try:
            tokenizer = build_tokenizer([_FILLER] * 4, tmp, vocab_size=512)
            torch.manual_seed(seed)
            model = Qwen3ForCausalLM(qwen3_config(tokenizer, size)).float().eval()
            save_model(model, tokenizer, tmp)
            atomic_write_text(tmp / ".complete", json.dumps({"size": size, "seed": seed}))
            _publish(tmp, out_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def resolve_model(name: str, cache_dir: str | os.PathLike | None = None) -> str:
    """`builtin:tiny|mid` (random, built on demand), `builtin:toy-persona` (shipped), else as is."""
    if not name.startswith("builtin:"):
        return name
    which = name.split(":", 1)[1]
    if which in BUILTIN_RANDOM:
        cache = Path(cache_dir) if cache_dir else default_cache_dir()
        return str(build_random_qwen3(cache / "models" / which, which))
    if which == "toy-persona":
        if not (TOY_MODEL_DIR / "config.json").exists():
            raise FileNotFoundError(
                f"the toy persona model is not in {TOY_MODEL_DIR}; build it with "
                "`persona-steer toy train`")
        return str(TOY_MODEL_DIR)
    from persona_steer.config import ConfigError  # a ValueError; the CLI prints it as one line
    raise ConfigError(f"model.name: unknown builtin model '{name}': use builtin:tiny, builtin:mid "
                      "or builtin:toy-persona")


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(description="Build a small random Qwen3 checkpoint")
    p.add_argument("out_dir")
    p.add_argument("--size", choices=sorted(SIZES), default="tiny")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    print(build_random_qwen3(a.out_dir, a.size, a.seed))


if __name__ == "__main__":
    main()
