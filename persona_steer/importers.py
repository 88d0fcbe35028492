"""Import vectors made by other tools into the project's format.

Layer conventions (documented in README):
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

from persona_steer.vector_format import SteeringVector, VectorFormatError


def _read_gguf(path: Path) -> dict[int, torch.Tensor]:
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
    except Exception as err:  # gguf raises plain ValueError/struct errors on bad files
        raise VectorFormatError(f"{path.name}: not a readable GGUF file: {err}") from None
    out = {}
    for t in reader.tensors:
        m = re.fullmatch(r"direction\.(\d+)", t.name)
        if m:
            out[int(m.group(1))] = torch.from_numpy(np.array(t.data, dtype=np.float32).reshape(-1))
    if not out:
        raise VectorFormatError(f"{path.name}: no 'direction.N' tensors (not a control vector)")
    return out


def _read_plain(path: Path, num_layers: int | None) -> dict[int, torch.Tensor]:
    if path.suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except ValueError as err:
            raise VectorFormatError(f"{path.name}: {err}") from None
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
    if path.suffix == ".gguf":
        per_layer, source = _read_gguf(path), "gguf-control-vector"
    else:
        per_layer, source = _read_plain(path, num_layers), "plain-tensor"
    # Layers whose row is all zeros carry nothing; drop them so they cost nothing.
    per_layer = {i: v for i, v in per_layer.items() if bool(v.abs().sum() > 0)}
    if not per_layer:
        raise VectorFormatError(f"{path.name}: every row is zero")
    return SteeringVector.build(kind, name, per_layer, model=model,
                                description=description or f"imported from {path.name}",
                                metadata={"method": f"import:{source}", "source_file": path.name})
