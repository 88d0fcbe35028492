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

Safety capping's hits are counted here too, per token, without touching the add:
  cap_hits  float32  [max_num_batched_tokens]   capped layers that lifted this token, this step
On each capped layer the lift condition of `SteeringBuffers.steer` is evaluated again on the
stream as it was before the capping (the layer's output plus its steering delta), times the
slot's `cap_on`, so a token counts exactly where capping changed it.
"""
from __future__ import annotations

import torch
from torch import nn


class MonitorBuffers(nn.Module):
    def __init__(self, *, num_layers: int, hidden: int, columns: int, max_tokens: int,
                 first_layer: int, dtype: torch.dtype, steer: nn.Module, layers: range):
        super().__init__()
        self.columns = columns
        self.first_layer = first_layer    # the first layer this rank runs: it overwrites mon_out
        self.steer = steer                # model.SteeringBuffers (read only: capping's state)
        capped = [l for l in layers if l in steer.cap_row]
        self.first_cap_layer = capped[0] if capped else None
        self.register_buffer("cap_hits", torch.zeros(max_tokens, dtype=torch.float32),
                             persistent=False)
        self.register_buffer("mon_dirs", torch.zeros(num_layers, columns, hidden, dtype=dtype),
                             persistent=False)
        self.register_buffer("mon_out", torch.zeros(max_tokens, columns, dtype=torch.float32),
                             persistent=False)

    def record(self, layer_idx: int, hidden_states: torch.Tensor, layer_residual: torch.Tensor,
               residual: torch.Tensor) -> None:
        """`layer_residual`: the layer's own output residual; `residual`: after steering."""
        n = residual.shape[0]
        proj = torch.matmul(hidden_states + residual, self.mon_dirs[layer_idx].t()).float()
        if layer_idx == self.first_layer:
            self.mon_out[:n].copy_(proj)
        else:
            self.mon_out[:n].add_(proj)
        crow = self.steer.cap_row.get(layer_idx)
        if crow is not None:
            self._count_caps(layer_idx, crow, hidden_states, layer_residual)

    def _count_caps(self, layer_idx: int, crow: int, hidden_states: torch.Tensor,
                    layer_residual: torch.Tensor) -> None:
        sb, n = self.steer, layer_residual.shape[0]
        index = sb.steer_index[:n]
        before_cap = layer_residual
        row = sb.steer_row.get(layer_idx)
        if row is not None:
            before_cap = before_cap + sb.steer_table[row].index_select(0, index)
        proj = ((hidden_states + before_cap) * sb.cap_axis[crow]).sum(dim=-1)
        hit = ((sb.cap_thresh[crow] - proj) > 0).float() * sb.cap_on.index_select(0, index).float()
        if layer_idx == self.first_cap_layer:
            self.cap_hits[:n].copy_(hit)
        else:
            self.cap_hits[:n].add_(hit)


def monitor_columns(hf_config) -> int:
    """How many monitored directions the engine holds at once (0: monitoring off)."""
    return int(getattr(hf_config, "steering_monitor_columns", 0) or 0)
