"""HF transformers reference for steering: forward hooks on `model.model.layers[L]` that add the
same per-layer delta (and apply the same capping) as the plugin. Used by tests and benchmarks,
and by the extraction side when vLLM is unavailable.
"""
from __future__ import annotations

from contextlib import contextmanager

import torch


@contextmanager
def hf_steering(model, delta: torch.Tensor | None, cap: dict | None = None,
                token_mask: torch.Tensor | None = None):
    """delta: [num_layers, hidden] (zeros where nothing is added) or None.
    cap: {layer: (unit_axis [hidden], threshold)} for capping, or None.
    token_mask: bool [seq] of the positions steered and capped (`steer_tokens`); None: all."""
    handles = []
    layers = model.model.layers
    for i, layer in enumerate(layers):
        add = None if delta is None or not bool(delta[i].any()) else delta[i]
        capping = (cap or {}).get(i)
        if add is None and capping is None:
            continue

        def hook(module, args, output, add=add, capping=capping):
            h = output[0] if isinstance(output, tuple) else output
            on = 1.0 if token_mask is None else \
                token_mask.to(device=h.device, dtype=h.dtype)[: h.shape[-2]].unsqueeze(-1)
            if add is not None:                 # vectors live on the CPU; the model may not
                h = h + add.to(device=h.device, dtype=h.dtype) * on
            if capping is not None:
                axis, thresh = capping
                axis = axis.to(device=h.device, dtype=h.dtype)
                proj = (h * axis).sum(-1, keepdim=True)
                h = h + torch.relu(torch.as_tensor(thresh, device=h.device, dtype=h.dtype) - proj) * axis * on
            return (h,) + tuple(output[1:]) if isinstance(output, tuple) else h

        handles.append(layer.register_forward_hook(hook))
    try:
        yield model
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def prompt_logprobs(model, token_ids: list[int]) -> list[float]:
    """Log-probability of each prompt token given the ones before it (positions 1..n-1)."""
    ids = torch.tensor([token_ids], device=next(model.parameters()).device)
    logits = model(input_ids=ids).logits[0].float()
    lp = torch.log_softmax(logits, dim=-1)
    return [float(lp[t, token_ids[t + 1]]) for t in range(len(token_ids) - 1)]


@torch.no_grad()
def hf_projections(model, token_ids: list[int], directions: list[tuple[int, torch.Tensor]]
                   ) -> torch.Tensor:
    """float32 [len(token_ids), len(directions)]: per position, the residual stream right after
    decoder layer L (the output of `model.model.layers[L]`, after any steering hooks already
    registered) projected on each (L, unit vector). The monitoring reference."""
    seen: dict[int, torch.Tensor] = {}
    handles = []
    for layer in sorted({l for l, _ in directions}):
        def hook(module, args, output, layer=layer):
            h = output[0] if isinstance(output, tuple) else output
            seen[layer] = h[0].float()
        handles.append(model.model.layers[layer].register_forward_hook(hook))
    try:
        model(input_ids=torch.tensor([token_ids], device=next(model.parameters()).device))
    finally:
        for h in handles:
            h.remove()
    return torch.stack([seen[l] @ u.float().to(seen[l].device) for l, u in directions], dim=-1).cpu()
