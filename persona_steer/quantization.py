"""What `model.quantization` means for the serving engine and for extraction, and what this
machine refuses, in one place (docs/quantization.md is the reader's page).

- `none`: the checkpoint as stored. A pre-quantized checkpoint (its config.json carries a
  `quantization_config`: compressed-tensors, GPTQ, AWQ, FP8...) is served quantized, detected
  by vLLM exactly as `vllm serve` does; extraction loads the same weights in transformers
  (compressed-tensors checkpoints dequantized on load).
- `4bit` / `8bit`: quantize a full-precision checkpoint while loading it. Serving: vLLM's online
  quantization on a GPU (vLLM 0.32 has no bitsandbytes loader; `4bit` -> online MXFP4 for the
  linear layers, `8bit` -> online FP8 per channel). Extraction: transformers with bitsandbytes
  (CPU or GPU).

Refusals are one line naming the key and what to use instead, raised before any weights load.
"""
from __future__ import annotations

import json
from pathlib import Path

from persona_steer.config import ConfigError, Settings

# model.quantization -> vLLM's online (in-flight) quantization, GPU only. MXFP4 is spelled out as
# an online linear spec: the bare shorthand "mxfp4" on a full-precision checkpoint resolves to
# the checkpoint-format config, whose linear layers fall back to unquantized.
IN_FLIGHT = {"4bit": "mxfp4", "8bit": "fp8_per_channel"}
IN_FLIGHT_KWARGS = {"4bit": {"quantization": "online", "quantization_config": {"linear": "mxfp4"}},
                    "8bit": {"quantization": "fp8_per_channel"}}
# activation dtypes vLLM's quantized linear kernels take (float32 is refused by them)
QUANTIZED_DTYPES = ("bfloat16", "float16")


def checkpoint_quantization(model_path: str | Path) -> str | None:
    """The checkpoint's own `quantization_config.quant_method` (None: full precision, or not a
    local folder: a hub id is read by vLLM itself)."""
    folder = Path(model_path)
    for name, key in (("config.json", "quantization_config"), ("quantize_config.json", None)):
        f = folder / name
        if not f.is_file():
            continue
        try:
            data = json.loads(f.read_text())
        except ValueError:
            return None
        cfg = data.get(key) if key else data
        if isinstance(cfg, dict):
            return str(cfg.get("quant_method") or cfg.get("format") or "gptq").lower()
    return None


def engine_quantization(settings: Settings, model_path: str, platform: str | None) -> dict:
    """Quantization kwargs for the vLLM engine (empty: vLLM detects the checkpoint's own, as
    `vllm serve` does). Raises ConfigError when this platform cannot run what is configured."""
    m = settings.model
    stored = checkpoint_quantization(model_path)
    if m.quantization != "none":
        refuse_double(m.quantization, m.name, stored)
        if platform != "cuda":
            raise ConfigError(
                f"model.quantization: {m.quantization} quantizes in flight on a GPU only (vLLM's "
                f"online {IN_FLIGHT[m.quantization]}) and vLLM here runs on "
                f"{platform or 'no device'}: "
                "set model.quantization: none and serve a pre-quantized 4-bit checkpoint "
                "(compressed-tensors W4A16, GPTQ or AWQ; docs/quantization.md) or full precision")
        _need_half(m.dtype, f"in-flight {m.quantization}")
        return dict(IN_FLIGHT_KWARGS[m.quantization])
    if stored is not None:
        _need_half(m.dtype, f"{m.name}'s {stored} weights")
    return {}


def refuse_double(quantization: str, name: str, stored: str | None) -> None:
    if stored is not None:
        raise ConfigError(
            f"model.quantization: {quantization} quantizes a full-precision checkpoint, but "
            f"{name} is already quantized ({stored}): set model.quantization: none to use it "
            "as stored")


def _need_half(dtype: str, what: str) -> None:
    if dtype not in (*QUANTIZED_DTYPES, "auto"):
        raise ConfigError(
            f"model.dtype: {dtype} cannot run {what} (vLLM's quantized kernels take bfloat16 or "
            "float16 activations): set model.dtype: bfloat16, float16 or auto")
