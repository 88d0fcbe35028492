"""Activations from one teacher-forced HF forward, through forward hooks on model.model.layers[L].

The hook's output is the raw residual stream right after decoder layer L (what the plugin adds
to), unlike the tuple `hidden_states`, whose last entry is after the final norm.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch


def load_hf_model(model_path: str, dtype: str = "float32", quantization: str = "none",
                  device: str = "auto"):
    """(model, tokenizer) in eval mode; bitsandbytes 4bit/8bit when configured (CPU works).
    A compressed-tensors checkpoint (e.g. W4A16) loads dequantized: the very weight values the
    serving engine's kernels use, run dense (persona_steer.quantization).

    `device` is config `model.device`: auto = CUDA when torch sees a GPU, else CPU.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from persona_steer.devices import torch_device
    from persona_steer.quantization import checkpoint_quantization, refuse_double

    target = torch_device(device)       # raises before any loading when cuda is missing
    stored = checkpoint_quantization(model_path)
    if quantization in ("4bit", "8bit"):
        refuse_double(quantization, model_path, stored)

    tok = AutoTokenizer.from_pretrained(model_path)
    torch_dtype = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16,
                   "float16": torch.float16}[dtype]
    kw: dict = {"dtype": torch_dtype}
    if quantization in ("4bit", "8bit"):
        from transformers import BitsAndBytesConfig
        compute = torch.float32 if torch_dtype in ("auto", torch.float32) else torch_dtype
        kw["quantization_config"] = (
            BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=compute)
            if quantization == "4bit" else BitsAndBytesConfig(load_in_8bit=True))
        if target != "cpu":
            kw["device_map"] = target          # needs `accelerate` (GPU machines)
    elif stored == "compressed-tensors":
        from transformers import CompressedTensorsConfig
        kw["quantization_config"] = CompressedTensorsConfig(dequantize=True)
    model = AutoModelForCausalLM.from_pretrained(model_path, **kw).eval()
    if quantization == "none" and target != "cpu":
        model = model.to(target)
    return model, tok


def decoder_layers(model):
    return model.model.layers


def num_layers(model) -> int:
    return len(decoder_layers(model))


class LayerHooks:
    """Forward hooks on every decoder layer; `fn(layer, hidden[B, T, H])` sees each output."""

    def __init__(self, model, fn: Callable[[int, torch.Tensor], None]):
        self.handles = []
        for i, layer in enumerate(decoder_layers(model)):
            self.handles.append(layer.register_forward_hook(self._make(i, fn)))

    @staticmethod
    def _make(i, fn):
        def hook(_module, _inputs, output):
            hidden = output[0] if isinstance(output, (tuple, list)) else output
            fn(i, hidden)
        return hook

    def remove(self):
        for h in self.handles:
            h.remove()
        self.handles = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


def _batch(samples: Sequence[tuple[list[int], list[int]]], pad_id: int, device):
    seqs = [list(p) + list(r) for p, r in samples]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(seqs):        # right padding: positions stay 0..n-1
        ids[i, :len(s)] = torch.tensor(s)
        mask[i, :len(s)] = 1
    return ids.to(device), mask.to(device)


def _forward(model, ids, mask):
    with torch.no_grad():
        base = getattr(model, "model", model)
        base(input_ids=ids, attention_mask=mask, use_cache=False)


def collect_means(model, samples: Sequence[tuple[list[int], list[int]]], pad_id: int,
                  batch_size: int = 8, on_batch: Callable[[int], None] | None = None) -> dict:
    """Per sample and layer: mean over response tokens and the last prompt token.

    -> {"response_mean": [N, L, H], "last_prompt": [N, L, H], "response_len": [N]} (float32, CPU)
    """
    n_layers = num_layers(model)
    device = next(model.parameters()).device
    rm_out, lp_out = [], []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start:start + batch_size]
        ids, mask = _batch(chunk, pad_id, device)
        rm = [None] * n_layers
        lp = [None] * n_layers

        def grab(layer: int, hidden: torch.Tensor, chunk=chunk, rm=rm, lp=lp):
            h = hidden.float()
            rm_rows, lp_rows = [], []
            for i, (p, r) in enumerate(chunk):
                P, R = len(p), len(r)
                lp_rows.append(h[i, P - 1])
                rm_rows.append(h[i, P:P + R].mean(0) if R > 0 else h[i, P - 1])
            rm[layer] = torch.stack(rm_rows).cpu()
            lp[layer] = torch.stack(lp_rows).cpu()

        with LayerHooks(model, grab):
            _forward(model, ids, mask)
        rm_out.append(torch.stack(rm, dim=1))
        lp_out.append(torch.stack(lp, dim=1))
        if on_batch:
            on_batch(len(chunk))
    return {"response_mean": torch.cat(rm_out), "last_prompt": torch.cat(lp_out),
            "response_len": torch.tensor([len(r) for _, r in samples], dtype=torch.int64)}


def collect_token_projections(model, samples: Sequence[tuple[list[int], list[int]]], pad_id: int,
                              units: torch.Tensor, batch_size: int = 8,
                              on_batch: Callable[[int], None] | None = None,
                              offset: int = 0) -> list[torch.Tensor]:
    """Per layer, the projections (raw residual . unit axis) of every response token: list of [T]
    (units [L, H]), or of [T, K] for K directions at once (units [L, H, K]).

    `offset=1` takes each response token's predicting position instead (the one whose logits
    chose it: the last prompt token for the first), which is where live monitoring reads."""
    n_layers = num_layers(model)
    device = next(model.parameters()).device
    per_layer: list[list[torch.Tensor]] = [[] for _ in range(n_layers)]
    u = units.float().to(device)
    for start in range(0, len(samples), batch_size):
        chunk = samples[start:start + batch_size]
        ids, mask = _batch(chunk, pad_id, device)

        def grab(layer: int, hidden: torch.Tensor, chunk=chunk):
            h = hidden.float()
            for i, (p, r) in enumerate(chunk):
                if len(r):
                    start = len(p) - offset
                    per_layer[layer].append((h[i, start:start + len(r)] @ u[layer]).cpu())

        with LayerHooks(model, grab):
            _forward(model, ids, mask)
        if on_batch:
            on_batch(len(chunk))
    return [torch.cat(x) if x else torch.zeros(0) for x in per_layer]
