"""Live monitoring buffers: per token, the residual stream's projection on monitored directions.

Kept apart from `SteeringBuffers` (model.py): reading changes nothing in the stream. One
`MonitorBuffers` module is shared by every decoder layer; after the layer's steering add, each
layer projects the full stream (hidden + residual) on its rows of the direction table and adds
the result into one per-token output table, so a column holds the reading of its direction at
its one layer (the other layers' rows of that column are zeros):
  mon_dirs  model dtype  [num_layers, columns, H]   unit direction of a column at its layer
  mon_out   float32      [max_num_batched_tokens, columns]   this step's readings per token
The first layer of this rank overwrites `mon_out[:n]`, later layers add: no host-side zeroing,
no Python per token, fixed shapes, only tensor contents change between steps (vLLM compiles the
forward once). `steering_plugin.monitor_runtime` assigns columns and reads `mon_out` back.
Columns no request uses are all zeros; the cost is one [n, H] x [H, columns] product per layer.
"""
from __future__ import annotations

import torch
from torch import nn


class MonitorBuffers(nn.Module):
    def __init__(self, *, num_layers: int, hidden: int, columns: int, max_tokens: int,
                 first_layer: int, dtype: torch.dtype):
        super().__init__()
        self.columns = columns
        self.first_layer = first_layer    # the first layer this rank runs: it overwrites mon_out
        self.register_buffer("mon_dirs", torch.zeros(num_layers, columns, hidden, dtype=dtype),
                             persistent=False)
        self.register_buffer("mon_out", torch.zeros(max_tokens, columns, dtype=torch.float32),
                             persistent=False)

    def record(self, layer_idx: int, hidden_states: torch.Tensor,
               residual: torch.Tensor) -> None:
        n = residual.shape[0]
        proj = torch.matmul(hidden_states + residual, self.mon_dirs[layer_idx].t()).float()
        if layer_idx == self.first_layer:
            self.mon_out[:n].copy_(proj)
        else:
            self.mon_out[:n].add_(proj)


def monitor_columns(hf_config) -> int:
    """How many monitored directions the engine holds at once (0: monitoring off)."""
    return int(getattr(hf_config, "steering_monitor_columns", 0) or 0)
