"""Model runner V2 (vLLM 0.32's GPU default): steering as a `DefaultModelState` subclass.

The runner calls add_request/remove_request as requests come and go and prepare_inputs before
each forward; we keep each request's SamplingParams and write the per-token slot index there.
(V2 needs Triton, so it cannot run on CPU; its per-step logic is unit-tested with vLLM's classes.)
"""
from __future__ import annotations

from typing import Any

from vllm.v1.worker.gpu.model_states.default import DefaultModelState

from steering_plugin.runtime import runtime_for


class SteeringModelState(DefaultModelState):
    def __init__(self, vllm_config, model, encoder_cache, device):
        super().__init__(vllm_config, model, encoder_cache, device)
        self.steering = runtime_for(model, vllm_config.model_config.hf_config)
        self.steering_params: dict[str, Any] = {}

    def add_request(self, req_index, new_req_data) -> None:
        super().add_request(req_index, new_req_data)
        self.steering_params[new_req_data.req_id] = new_req_data.sampling_params

    def remove_request(self, req_id: str) -> None:
        super().remove_request(req_id)
        self.steering_params.pop(req_id, None)

    def prepare_inputs(self, input_batch, req_states) -> dict[str, Any]:
        inputs = super().prepare_inputs(input_batch, req_states)
        if self.steering is not None:
            req_ids = list(input_batch.req_ids)
            self.steering.begin_step(req_ids, input_batch.num_scheduled_tokens,
                                     [self.steering_params.get(r) for r in req_ids],
                                     live=self.steering_params.keys())
        return inputs

    def prepare_dummy_inputs(self, num_reqs: int, num_tokens: int) -> dict[str, Any]:
        inputs = super().prepare_dummy_inputs(num_reqs, num_tokens)
        if self.steering is not None:
            self.steering.reset_index()
        return inputs
