"""4-bit checkpoints of the project's own test models, built here (no hub, no calibration data).

`build_w4a16(src, out)` writes a compressed-tensors W4A16 checkpoint (format `pack-quantized`:
int4 weights packed eight to an int32, one bf16 scale per group of input columns, symmetric) from
a full-precision Qwen3 folder, by round-to-nearest. That is the format llm-compressor writes for
W4A16 and that vLLM serves with its WNA16 kernels (on CPU: `CPUWNA16LinearKernel`); transformers
loads it too (through compressed-tensors, decompressed to dense weights), which gives the steering
reference and the extraction side the very same dequantized weights.

Quantized: every decoder-layer linear (q/k/v/o, gate/up/down). Embeddings (tied with lm_head) and
norms stay unquantized, stored in bf16 like the scales. The packing and the quantize step are
compressed-tensors' own (`PackedQuantizationCompressor`), so the tensors are what the library
would write.

`builtin:tiny-w4a16` / `builtin:toy-persona-w4a16` resolve to `<cache>/models/<name>` (built once).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from persona_steer.atomic import atomic_write_text, staged_build

GROUP_SIZE = 64          # divides the test models' hidden (256) and intermediate (512, 768) sizes
SCALE_DTYPE = "bfloat16"  # stored scales; the quantized model serves at this dtype on CPU
LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def quantization_config(group_size: int = GROUP_SIZE) -> dict:
    """config.json's `quantization_config` for symmetric int4, grouped, weights only."""
    weights = {"num_bits": 4, "type": "int", "symmetric": True, "strategy": "group",
               "group_size": group_size, "dynamic": False, "actorder": None,
               "observer": "minmax"}
    return {"quant_method": "compressed-tensors", "format": "pack-quantized",
            "quantization_status": "compressed", "ignore": ["lm_head"], "kv_cache_scheme": None,
            "config_groups": {"group_0": {"targets": ["Linear"], "weights": weights,
                                          "input_activations": None, "output_activations": None,
                                          "format": "pack-quantized"}}}


def _scheme(group_size: int):
    from compressed_tensors.quantization import QuantizationScheme
    group = quantization_config(group_size)["config_groups"]["group_0"]
    return QuantizationScheme(targets=group["targets"], weights=group["weights"])


def compress_linear(weight, group_size: int = GROUP_SIZE) -> dict:
    """{weight_packed, weight_scale, weight_shape} of one [out, in] weight, round-to-nearest."""
    import torch
    from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor
    from compressed_tensors.quantization.utils.helpers import calculate_qparams

    scheme = _scheme(group_size)
    w = weight.float()
    groups = w.reshape(w.shape[0], -1, group_size)
    scale, _ = calculate_qparams(groups.amin(-1), groups.amax(-1), scheme.weights)
    # round the scale to the stored dtype first: the packed ints are then exact for it
    scale = scale.to(getattr(torch, SCALE_DTYPE))
    out = PackedQuantizationCompressor.compress(
        {"weight": w, "weight_scale": scale.float()}, scheme)
    out["weight_scale"] = scale
    return dict(out)


def build_w4a16(src_dir: str | Path, out_dir: str | Path, group_size: int = GROUP_SIZE) -> Path:
    """W4A16 copy of the checkpoint in `src_dir`. Idempotent; safe across processes."""
    import torch
    from safetensors.torch import load_file, save_file

    src_dir, out_dir = Path(src_dir), Path(out_dir)
    with staged_build(out_dir) as tmp:
        if tmp is not None:
            for f in src_dir.iterdir():      # tokenizer, template, generation config
                if f.is_file() and f.suffix != ".safetensors" and f.name not in (
                        "config.json", ".complete", "model.safetensors.index.json"):
                    shutil.copyfile(f, tmp / f.name)
            tensors = {}
            for shard in sorted(src_dir.glob("*.safetensors")):
                tensors.update(load_file(shard))
            out = {}
            for name, t in tensors.items():
                module, _, leaf = name.rpartition(".")
                if leaf == "weight" and module.rsplit(".", 1)[-1] in LINEARS:
                    for k, v in compress_linear(t, group_size).items():
                        out[f"{module}.{k}"] = v.contiguous()
                else:   # embeddings, norms: stored at the serving dtype, as real W4A16 files are
                    out[name] = t.to(getattr(torch, SCALE_DTYPE)).contiguous()
            save_file(out, tmp / "model.safetensors", metadata={"format": "pt"})
            config = json.loads((src_dir / "config.json").read_text())
            config["quantization_config"] = quantization_config(group_size)
            config["dtype"] = SCALE_DTYPE
            (tmp / "config.json").write_text(json.dumps(config, indent=2))
            atomic_write_text(tmp / ".complete", json.dumps(
                {"source": str(src_dir), "format": "compressed-tensors W4A16 pack-quantized",
                 "group_size": group_size, "method": "round-to-nearest, symmetric"}))
    return out_dir


def served_weight_bytes(model_dir: str | Path, dtype) -> int:
    """Bytes of a checkpoint's weights as an engine serving it at `dtype` loads them: floating
    tensors at `dtype`, packed integers and the rest as stored."""
    import torch
    from safetensors import safe_open

    size = torch.empty(0, dtype=dtype).element_size()
    total = 0
    for shard in Path(model_dir).glob("*.safetensors"):
        with safe_open(str(shard), "pt") as f:
            for name in f.keys():
                t = f.get_slice(name)
                numel = 1
                for d in t.get_shape():
                    numel *= d
                stored = t.get_dtype()
                total += numel * (size if stored in ("F32", "F16", "BF16") else
                                  {"I32": 4, "I64": 8, "I8": 1, "U8": 1}.get(stored, 4))
    return total
