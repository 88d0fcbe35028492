"""Importing vectors made by other tools: repeng GGUF control vectors and plain tensor files."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from persona_steer.importers import import_vector
from persona_steer.store import VectorStore
from persona_steer.vector_format import VectorFormatError


def write_repeng_gguf(path, directions: dict[int, np.ndarray], model_hint="qwen3", raw_dtype=None):
    """What repeng's ControlVector.export_gguf writes."""
    import gguf
    writer = gguf.GGUFWriter(str(path), "controlvector")
    writer.add_string("controlvector.model_hint", model_hint)
    writer.add_uint32("controlvector.layer_count", len(directions))
    for layer, vec in directions.items():
        if raw_dtype is None:
            writer.add_tensor(f"direction.{layer}", vec)
        else:
            writer.add_tensor(f"direction.{layer}", gguf.quants.quantize(vec, raw_dtype),
                              raw_dtype=raw_dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _dirs(layers, hidden=8, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return {i: rng.standard_normal(hidden).astype(dtype) for i in layers}


def test_gguf_directions_become_rows_at_their_layers(tmp_path):
    dirs = _dirs([1, 2, 5])
    path = write_repeng_gguf(tmp_path / "happy.gguf", dirs)
    vec = import_vector(path, name="happy", kind="persona", model="Qwen/Qwen3-8B", num_layers=6)
    assert vec.layers.tolist() == [1, 2, 5]
    for i, layer in enumerate([1, 2, 5]):
        assert np.array_equal(vec.vectors[i].numpy(), dirs[layer])
    assert vec.metadata["method"] == "import:gguf-control-vector"
    assert vec.metadata["source_model_hint"] == "qwen3"
    assert vec.metadata["source_file"] == "happy.gguf" and vec.model == "Qwen/Qwen3-8B"
    store = VectorStore(tmp_path / "store")
    store.save(vec, hidden_size=8, model="Qwen/Qwen3-8B")
    assert store.load("persona", "happy").layers.tolist() == [1, 2, 5]


def test_gguf_f16_and_quantized(tmp_path):
    import gguf
    half = _dirs([0, 3], dtype=np.float16)
    vec = import_vector(write_repeng_gguf(tmp_path / "h.gguf", half), name="h", kind="trait",
                        model="m")
    assert np.allclose(vec.vectors[0].numpy(), half[0].astype(np.float32))
    bf = _dirs([1], hidden=16)
    vec = import_vector(write_repeng_gguf(tmp_path / "bf.gguf", bf,
                                          raw_dtype=gguf.GGMLQuantizationType.BF16),
                        name="bf", kind="trait", model="m")
    assert vec.hidden_size == 16 and np.allclose(vec.vectors[0].numpy(), bf[1], rtol=1e-2)
    q = _dirs([2], hidden=64)
    vec = import_vector(write_repeng_gguf(tmp_path / "q.gguf", q,
                                          raw_dtype=gguf.GGMLQuantizationType.Q8_0),
                        name="q", kind="trait", model="m")
    assert vec.hidden_size == 64                       # not the raw byte count (68)
    assert np.allclose(vec.vectors[0].numpy(), q[2], atol=0.05)


def test_gguf_errors(tmp_path):
    with pytest.raises(VectorFormatError, match="not a readable GGUF file"):
        import_vector(_bytes(tmp_path / "junk.gguf", b"GGUF\x03junk"), name="x", kind="persona",
                      model="m")
    import gguf
    w = gguf.GGUFWriter(str(tmp_path / "other.gguf"), "llama")
    w.add_tensor("blk.0.attn_q.weight", np.zeros((4, 4), np.float32))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    with pytest.raises(VectorFormatError, match=r"no 'direction.N' tensors"):
        import_vector(tmp_path / "other.gguf", name="x", kind="persona", model="m")
    path = write_repeng_gguf(tmp_path / "far.gguf", _dirs([1, 40]))
    with pytest.raises(VectorFormatError, match=r"has layers \[40\], the model has 36 layers"):
        import_vector(path, name="x", kind="persona", model="m", num_layers=36)
    mixed = {1: np.ones(8, np.float32), 2: np.ones(16, np.float32)}
    with pytest.raises(VectorFormatError, match="differ in size"):
        import_vector(write_repeng_gguf(tmp_path / "mixed.gguf", mixed), name="x",
                      kind="persona", model="m")
    nan = {1: np.array([np.nan] + [1.0] * 7, np.float32)}
    with pytest.raises(VectorFormatError, match="NaN or Inf"):
        import_vector(write_repeng_gguf(tmp_path / "nan.gguf", nan), name="x", kind="persona",
                      model="m")


def _bytes(path, data):
    path.write_bytes(data)
    return path


def test_plain_L_by_hidden(tmp_path):
    t = torch.randn(4, 8)
    save_file({"v": t}, str(tmp_path / "p.safetensors"))
    vec = import_vector(tmp_path / "p.safetensors", name="p", kind="persona", model="m", num_layers=4)
    assert vec.layers.tolist() == [0, 1, 2, 3] and torch.equal(vec.vectors, t)
    assert vec.metadata["method"] == "import:plain-tensor"
    # without num_layers the rows are taken as layers 0..n-1
    assert import_vector(tmp_path / "p.safetensors", name="p", kind="persona",
                         model="m").layers.tolist() == [0, 1, 2, 3]


def test_plain_hidden_states_order_drops_embeddings_row(tmp_path):
    t = torch.randn(5, 8)
    save_file({"v": t}, str(tmp_path / "hs.safetensors"))
    vec = import_vector(tmp_path / "hs.safetensors", name="p", kind="persona", model="m", num_layers=4)
    assert vec.layers.tolist() == [0, 1, 2, 3]
    assert torch.equal(vec.vectors, t[1:])        # row i+1 (output of layer i) -> layer i


def test_plain_npy_and_zero_rows(tmp_path):
    arr = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float64)
    arr[0] = 0                                    # an all-zero row carries nothing: dropped
    np.save(tmp_path / "a.npy", arr)
    vec = import_vector(tmp_path / "a.npy", name="a", kind="trait", model="m", num_layers=4)
    assert vec.layers.tolist() == [1, 2, 3]
    assert vec.vectors.dtype == torch.float32
    assert np.allclose(vec.vectors.numpy(), arr[1:])


def test_plain_errors(tmp_path):
    save_file({"v": torch.randn(6, 8)}, str(tmp_path / "rows.safetensors"))
    with pytest.raises(VectorFormatError, match="6 rows fit neither 4 layers nor 4\\+1"):
        import_vector(tmp_path / "rows.safetensors", name="x", kind="persona", model="m", num_layers=4)
    save_file({"a": torch.randn(4, 8), "b": torch.randn(4, 8)}, str(tmp_path / "two.safetensors"))
    with pytest.raises(VectorFormatError, match="exactly one tensor"):
        import_vector(tmp_path / "two.safetensors", name="x", kind="persona", model="m")
    save_file({"v": torch.randn(8)}, str(tmp_path / "flat.safetensors"))
    with pytest.raises(VectorFormatError, match=r"\[layers, hidden\]"):
        import_vector(tmp_path / "flat.safetensors", name="x", kind="persona", model="m")
    save_file({"v": torch.zeros(4, 8)}, str(tmp_path / "zero.safetensors"))
    with pytest.raises(VectorFormatError, match="every row is zero"):
        import_vector(tmp_path / "zero.safetensors", name="x", kind="persona", model="m")
    with pytest.raises(VectorFormatError, match="not a readable safetensors"):
        import_vector(_bytes(tmp_path / "junk.safetensors", b"\x10\x00junk"), name="x",
                      kind="persona", model="m")
    with pytest.raises(VectorFormatError, match="not a readable safetensors"):
        import_vector(_bytes(tmp_path / "v.pt", b"PK\x03\x04 pickled torch"), name="x",
                      kind="persona", model="m")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(VectorFormatError, match="not a readable .npy"):     # no pickles
        import_vector(tmp_path / "obj.npy", name="x", kind="persona", model="m")
    nan = torch.randn(4, 8)
    nan[2, 2] = float("inf")
    save_file({"v": nan}, str(tmp_path / "inf.safetensors"))
    with pytest.raises(VectorFormatError, match="NaN or Inf"):
        import_vector(tmp_path / "inf.safetensors", name="x", kind="persona", model="m")


def test_argument_errors(tmp_path):
    save_file({"v": torch.randn(4, 8)}, str(tmp_path / "p.safetensors"))
    with pytest.raises(FileNotFoundError, match="no such file"):
        import_vector(tmp_path / "missing.gguf", name="x", kind="persona", model="m")
    with pytest.raises(VectorFormatError, match="persona or trait"):
        import_vector(tmp_path / "p.safetensors", name="assistant_axis", kind="axis", model="m")
    with pytest.raises(VectorFormatError, match="invalid name"):
        import_vector(tmp_path / "p.safetensors", name="../Evil", kind="persona", model="m")
