"""Import vectors made by other tools into the project's format.

Layer conventions (documented in docs/vector-format.md):
- repeng / llama.cpp GGUF control vectors: tensors `direction.{i}`, each [hidden]; `i` is the
  0-based index of the decoder layer whose output it is added to (repeng hooks
  `model.model.layers[i]`), so `direction.{i}` becomes our row for layer `i`.
- plain tensor files (.safetensors with one tensor, or .npy): shape [num_layers, hidden] means
  row i is layer i; [num_layers + 1, hidden] is HF `hidden_states` order (row 0 = embeddings,
  row i+1 = output of layer i), so row 0 is dropped. Pass `num_layers` to tell them apart.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from persona_steer.vector_format import SteeringVector, VectorFormatError, validate_name


def _read_gguf(path: Path) -> dict[int, torch.Tensor]:
    return _read_gguf_with_hint(path)[0]


def _read_gguf_with_hint(path: Path) -> tuple[dict[int, torch.Tensor], str]:
    """{layer: vector} from `direction.{i}` tensors, and repeng's `controlvector.model_hint`."""
    from gguf import GGUFReader
    from gguf.quants import dequantize

    try:
        reader = GGUFReader(str(path))
    except Exception as err:  # gguf raises plain ValueError/struct errors on bad files
        raise VectorFormatError(f"{path.name}: not a readable GGUF file: {err}") from None
    out = {}
    for t in reader.tensors:
        m = re.fullmatch(r"direction\.(\d+)", t.name)
        if not m:
            continue
        try:  # F32/F16/BF16 and quantized types alike (raw bytes otherwise look like floats)
            data = dequantize(t.data, t.tensor_type)
        except Exception as err:
            raise VectorFormatError(
                f"{path.name}: tensor {t.name} has unsupported type {t.tensor_type!r}: {err}") from None
        vec = torch.from_numpy(np.array(data, dtype=np.float32).reshape(-1))
        if int(np.prod([int(x) for x in t.shape])) != vec.numel():
            raise VectorFormatError(f"{path.name}: tensor {t.name} must be one [hidden] vector, "
                                    f"got shape {[int(x) for x in t.shape]}")
        out[int(m.group(1))] = vec
    if not out:
        raise VectorFormatError(f"{path.name}: no 'direction.N' tensors (not a control vector)")
    sizes = {i: v.numel() for i, v in out.items()}
    if len(set(sizes.values())) != 1:
        raise VectorFormatError(f"{path.name}: direction tensors differ in size: {sizes}")
    hint = ""
    field = reader.fields.get("controlvector.model_hint")
    if field is not None:
        try:
            hint = str(field.contents())
        except Exception:
            hint = ""
    return out, hint


def _read_plain(path: Path, num_layers: int | None) -> dict[int, torch.Tensor]:
    if path.suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise VectorFormatError(f"{path.name}: not a readable .npy array: {err}") from None
        if not isinstance(arr, np.ndarray) or not np.issubdtype(arr.dtype, np.number):
            raise VectorFormatError(f"{path.name}: expected a numeric array")
        tensor = torch.from_numpy(np.asarray(arr, dtype=np.float32))
    else:
        from safetensors.torch import load_file
        try:
            tensors = load_file(str(path))
        except Exception as err:
            raise VectorFormatError(f"{path.name}: not a readable safetensors file: {err}") from None
        if len(tensors) != 1:
            raise VectorFormatError(
                f"{path.name}: expected exactly one tensor, found {sorted(tensors)}")
        tensor = next(iter(tensors.values())).float()
    if tensor.dim() != 2:
        raise VectorFormatError(f"{path.name}: expected a [layers, hidden] tensor, got {list(tensor.shape)}")
    rows = tensor.shape[0]
    if num_layers is not None and rows == num_layers + 1:
        tensor = tensor[1:]  # HF hidden_states order: drop the embeddings row
    elif num_layers is not None and rows != num_layers:
        raise VectorFormatError(
            f"{path.name}: {rows} rows fit neither {num_layers} layers nor {num_layers}+1 hidden states")
    return {i: tensor[i] for i in range(tensor.shape[0])}


def import_vector(path: str | Path, *, name: str, kind: str, model: str,
                  num_layers: int | None = None, description: str = "") -> SteeringVector:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    if kind not in ("persona", "trait"):
        raise VectorFormatError("import --kind must be persona or trait")
    validate_name(name)
    metadata = {"source_file": path.name}
    if path.suffix == ".gguf":
        per_layer, hint = _read_gguf_with_hint(path)
        source = "gguf-control-vector"
        if hint:
            metadata["source_model_hint"] = hint
    else:
        per_layer, source = _read_plain(path, num_layers), "plain-tensor"
    if num_layers is not None:
        outside = sorted(i for i in per_layer if i >= num_layers)
        if outside:
            raise VectorFormatError(
                f"{path.name}: has layers {outside}, the model has {num_layers} layers (0-{num_layers - 1})")
    bad = sorted(i for i, v in per_layer.items() if not bool(torch.isfinite(v).all()))
    if bad:  # checked before the zero-row filter, which NaN rows would otherwise slip through
        raise VectorFormatError(f"{path.name}: 'vectors' contains NaN or Inf (layers {bad})")
    # Layers whose row is all zeros carry nothing; drop them so they cost nothing.
    per_layer = {i: v for i, v in per_layer.items() if bool(v.abs().sum() > 0)}
    if not per_layer:
        raise VectorFormatError(f"{path.name}: every row is zero")
    return SteeringVector.build(kind, name, per_layer, model=model,
                                description=description or f"imported from {path.name}",
                                metadata={"method": f"import:{source}", **metadata})
