"""SteerQwen3ForCausalLM: stock Qwen3 plus a per-token, per-request residual-stream add.

Only the decoder layer class is swapped (`Qwen3Model.decoder_layer_type`): each layer runs the
stock forward, then adds its request's delta to the residual stream it returns. vLLM's own
`Qwen2Model.forward` loop stays, so what it does around the layers (pipeline-parallel handoff,
the auxiliary hidden states EAGLE-3 and friends collect) keeps working and sees the steered
stream. After decoder layer L the residual stream is `hidden_states + residual` (vLLM fuses the
add into the next layer's norm), so the delta goes onto `residual`, out of place.

Everything the compiled forward reads is a fixed-shape buffer allocated once and updated in place
between steps by `steering_plugin.runtime.SteeringRuntime` (vLLM compiles the forward once and drops
guards: a Python value read here would be frozen at the first trace). The buffers live in one
`SteeringBuffers` module shared by every layer (and reachable as `model.steer_buffers`):
  steer_index  int64   [max_num_batched_tokens]      slot of each token (0 = unsteered)
  steer_table  float   [n_steer_layers, slots+1, H]  per-slot delta; row 0 stays all zeros
  cap_axis     float   [n_cap_layers, H]             unit assistant axis per capped layer
  cap_thresh   float   [n_cap_layers]                minimum projection allowed
  cap_on       float   [slots+1]                     1.0 where the slot asked for capping
Unsteered tokens gather row 0 and a zero cap factor: they add exact zeros, so they stay
bit-identical to the stock model.
"""
from __future__ import annotations

import torch
from torch import nn

from vllm.config import VllmConfig
from vllm.distributed import get_pp_group
from vllm.model_executor.models.qwen3 import Qwen3DecoderLayer, Qwen3ForCausalLM, Qwen3Model
from vllm.model_executor.models.utils import extract_layer_index, maybe_prefix

from persona_steer.config import resolve_layers
from steering_plugin.config_check import check_config
from steering_plugin.monitor import MonitorBuffers, monitor_columns


def _layer_spec(value, default="all"):
    return default if value is None else value


class SteeringBuffers(nn.Module):
    """The static steering buffers (see the module docstring) and the add that reads them."""

    def __init__(self, hf_config, *, dtype: torch.dtype, slots: int, max_tokens: int):
        super().__init__()
        n_layers, hidden = hf_config.num_hidden_layers, hf_config.hidden_size
        self.steer_layers = resolve_layers(_layer_spec(getattr(hf_config, "steering_layers", None)), n_layers)
        self.cap_layers = resolve_layers(_layer_spec(getattr(hf_config, "steering_cap_layers", None)), n_layers)
        # layer index -> row in the tables (plain dicts fixed at init: safe to read in forward)
        self.steer_row = {layer: i for i, layer in enumerate(self.steer_layers)}
        self.cap_row = {layer: i for i, layer in enumerate(self.cap_layers)}
        self.num_slots = slots

        def buf(name, t):
            self.register_buffer(name, t, persistent=False)  # the weight loader ignores them

        buf("steer_index", torch.zeros(max_tokens, dtype=torch.int64))
        buf("steer_table", torch.zeros(len(self.steer_layers), slots, hidden, dtype=dtype))
        buf("cap_axis", torch.zeros(max(len(self.cap_layers), 1), hidden, dtype=dtype))
        buf("cap_thresh", torch.zeros(max(len(self.cap_layers), 1), dtype=dtype))
        buf("cap_on", torch.zeros(slots, dtype=dtype))

    def steer(self, layer_idx: int, hidden_states: torch.Tensor,
              residual: torch.Tensor) -> torch.Tensor:
        n = residual.shape[0]
        index = self.steer_index[:n]
        row = self.steer_row.get(layer_idx)
        if row is not None:
            residual = residual + self.steer_table[row].index_select(0, index)
        crow = self.cap_row.get(layer_idx)
        if crow is not None:
            axis = self.cap_axis[crow]
            # projection of the full stream (hidden + residual) on the unit assistant axis;
            # lift it back up to the threshold where it fell below, only for capped slots.
            proj = ((hidden_states + residual) * axis).sum(dim=-1)
            lift = torch.relu(self.cap_thresh[crow] - proj) * self.cap_on.index_select(0, index)
            residual = residual + lift.unsqueeze(-1) * axis
        return residual


class SteerQwen3DecoderLayer(Qwen3DecoderLayer):
    """The stock layer, then its request's steering on the residual stream it returns."""

    def __init__(self, *args, prefix: str = "", **kwargs):
        super().__init__(*args, prefix=prefix, **kwargs)
        self.steer_layer_idx = extract_layer_index(prefix)
        self.steer_buffers: SteeringBuffers | None = None   # set by SteerQwen3Model
        self.monitor_buffers: MonitorBuffers | None = None  # set by SteerQwen3Model (monitor.py)

    def forward(self, positions: torch.Tensor, hidden_states: torch.Tensor,
                residual: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        hidden_states, residual = super().forward(positions, hidden_states, residual)
        steered = self.steer_buffers.steer(self.steer_layer_idx, hidden_states, residual)
        if self.monitor_buffers is not None:    # fixed at init: no branch in the compiled graph
            self.monitor_buffers.record(self.steer_layer_idx, hidden_states, residual, steered)
        return hidden_states, steered


class SteerQwen3Model(Qwen3Model):
    decoder_layer_type = SteerQwen3DecoderLayer

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = ""):
        check_config(vllm_config)   # refuse, at start, what the per-step index can't follow
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        self.steer_buffers = SteeringBuffers(
            vllm_config.model_config.hf_config, dtype=vllm_config.model_config.dtype,
            slots=vllm_config.scheduler_config.max_num_seqs + 1,
            max_tokens=vllm_config.scheduler_config.max_num_batched_tokens)
        for layer in self.layers[self.start_layer:self.end_layer]:
            layer.steer_buffers = self.steer_buffers   # one shared module, not copies
        self._add_monitor_buffers(vllm_config)

    def _add_monitor_buffers(self, vllm_config: VllmConfig) -> None:
        """Live monitoring (steering_plugin/monitor.py); none when steering_monitor_columns is 0."""
        hf = vllm_config.model_config.hf_config
        columns = monitor_columns(hf)
        self.monitor_buffers = None if columns <= 0 else MonitorBuffers(
            num_layers=hf.num_hidden_layers, hidden=hf.hidden_size, columns=columns,
            max_tokens=vllm_config.scheduler_config.max_num_batched_tokens,
            first_layer=self.start_layer, dtype=vllm_config.model_config.dtype,
            steer=self.steer_buffers, layers=range(self.start_layer, self.end_layer))
        for layer in self.layers[self.start_layer:self.end_layer]:
            layer.monitor_buffers = self.monitor_buffers


class SteerQwen3ForCausalLM(Qwen3ForCausalLM):
    """Qwen3ForCausalLM whose inner model is SteerQwen3Model (same weight names)."""

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = ""):
        # Qwen3ForCausalLM.__init__ hard-codes Qwen3Model: build the parent's parts ourselves.
        nn.Module.__init__(self)
        from vllm.model_executor.layers.logits_processor import LogitsProcessor
        from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead
        from vllm.model_executor.models.utils import PPMissingLayer
        # (tests/plugin/test_model_shape.py fails if the parent's __init__ sets other attributes)

        config = vllm_config.model_config.hf_config
        self.config = config
        self.vllm_config = vllm_config
        self.quant_config = vllm_config.quant_config
        self.model = SteerQwen3Model(vllm_config=vllm_config, prefix=maybe_prefix(prefix, "model"))
        if get_pp_group().is_last_rank:
            self.lm_head = ParallelLMHead(config.vocab_size, config.hidden_size,
                                          quant_config=self.quant_config,
                                          prefix=maybe_prefix(prefix, "lm_head"))
            if config.tie_word_embeddings:
                self.lm_head = self.lm_head.tie_weights(self.model.embed_tokens)
        else:
            self.lm_head = PPMissingLayer()
        self.logits_processor = LogitsProcessor(config.vocab_size)
        self.make_empty_intermediate_tensors = self.model.make_empty_intermediate_tensors
        self.steering = None  # SteeringRuntime, created lazily by the runner hook

    @staticmethod
    def get_model_state_cls():
        """Model runner V2 (GPU default in vLLM 0.32): per-step steering lives in a ModelState."""
        from steering_plugin.model_state_v2 import SteeringModelState
        return SteeringModelState
