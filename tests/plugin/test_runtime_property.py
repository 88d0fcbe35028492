"""Property test of the steering runtime (slots, delta cache, per-token index) against a simple
model of what each request must get (issue 24).

Random runs of: requests arriving (admitted by the real admission code, which pins the vectors'
content hashes), scheduled in random batches and orders with random token counts, finishing,
aborted, preempted and resumed; vectors rewritten mid-run; configs drawn so they repeat and
outnumber both the slots and the delta cache; safety on and off. After every step, each
token's slot must hold exactly its request's delta (written out here from the vector contents
the request was admitted with) and cap flag, unsteered and failed tokens read slot 0, row 0 and
the padding stay zero, and the failures are exactly the requests whose admitted content the
worker can no longer find.

A bounded number of runs here; more with STEERING_PROPERTY_EXAMPLES=2000 (and
STEERING_PROPERTY_STEPS for longer runs).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from types import SimpleNamespace

import numpy as np
import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from torch import nn

from persona_steer.store import VectorStore
from persona_steer.vector_format import AXIS_NAME, AXIS_PERCENTILES, SteeringVector
from steering_plugin import admission
from steering_plugin.model import SteeringBuffers
from steering_plugin.runtime import SteeringRuntime

HIDDEN, LAYERS, MAX_SEQS, MAX_TOKENS, CACHE = 4, 3, 4, 24, 3
CAP_LAYERS = [1]
VECTORS = [("persona", "a"), ("persona", "b"), ("trait", "t")]
WEIGHTS = [-1.0, 0.5, 1.0, 2.0]          # 3 vectors x 4 weights x safety x scale: many configs
EXAMPLES = int(os.environ.get("STEERING_PROPERTY_EXAMPLES", "25"))
STEPS = int(os.environ.get("STEERING_PROPERTY_STEPS", "60"))


def _rows(seed: int) -> dict[int, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    layers = sorted(torch.randperm(LAYERS, generator=g)[:2].tolist())
    # integers: the expected deltas below are then exact in float32
    return {layer: torch.randint(-4, 5, (HIDDEN,), generator=g).float() for layer in layers}


def _axis() -> SteeringVector:
    rows = {layer: torch.eye(HIDDEN)[layer] for layer in range(LAYERS)}
    stats = {str(layer): {"mean": 1.0, "std": 1.0,
                          "percentiles": {str(p): 1.0 for p in AXIS_PERCENTILES}}
             for layer in range(LAYERS)}
    return SteeringVector.build("axis", AXIS_NAME, rows, model="m",
                                metadata={"projection_stats": stats})


config_st = st.one_of(
    st.none(),                                                        # unsteered
    st.fixed_dictionaries({
        "vectors": st.dictionaries(st.sampled_from(VECTORS), st.sampled_from(WEIGHTS),
                                   min_size=1, max_size=2),
        "safety": st.booleans(),
        "scale": st.sampled_from([None, 0.5]),
    }),
)


class RuntimeMachine(RuleBasedStateMachine):
    @initialize()
    def setup(self):
        self.dir = tempfile.mkdtemp(prefix="steer-prop-")
        self.store = VectorStore(self.dir)
        self.store.save(_axis())
        self.contents: dict[str, dict[int, torch.Tensor]] = {}   # content hash -> rows
        self.seed = 0
        for kind, name in VECTORS:
            self._write(kind, name)
        self.hf = SimpleNamespace(
            num_hidden_layers=LAYERS, hidden_size=HIDDEN, steering_store=self.dir,
            steering_model_id="m", steering_scale=1.0, steering_max_weight=10.0,
            steering_layers="all", steering_cap_layers=CAP_LAYERS, steering_cap_percentile=25)
        model = nn.Module()
        model.model = nn.Module()
        model.model.steer_buffers = SteeringBuffers(self.hf, dtype=torch.float32, slots=MAX_SEQS + 1,
                              max_tokens=MAX_TOKENS)
        self.inner = model.model.steer_buffers
        self.rt = SteeringRuntime(model, self.hf)
        self.rt.max_unused = CACHE
        self.worker_seen: set[str] = set()        # contents the worker has loaded (model)
        self.reqs: dict[str, dict] = {}           # live request -> what it must get
        self.preempted: set[str] = set()
        self.next_id = 0
        self.left: set[str] = set()

    def teardown(self):
        shutil.rmtree(getattr(self, "dir", ""), ignore_errors=True)

    def _write(self, kind, name):
        self.seed += 1
        rows = _rows(self.seed)
        vec = SteeringVector.build(kind, name, rows, model="m")
        self.store.save(vec)
        self.contents[vec.content_hash()] = rows

    # --- what happens to requests ------------------------------------------------------
    @rule(cfg=config_st)
    def arrive(self, cfg):
        rid = f"r{self.next_id}"
        self.next_id += 1
        extra = None
        if cfg is not None:
            body = {"personas": {n: w for (k, n), w in cfg["vectors"].items() if k == "persona"},
                    "traits": {n: w for (k, n), w in cfg["vectors"].items() if k == "trait"},
                    "safety": cfg["safety"]}
            if cfg["scale"] is not None:
                body["scale"] = cfg["scale"]
            extra = {"steering": body}
        params = SimpleNamespace(extra_args=extra)
        admission.admit(self.hf, SimpleNamespace(sampling_params=params, cache_salt=None,
                                                 prompt_token_ids=[1], prompt_embeds=None))
        pinned = (params.extra_args or {}).get("steering", {}).get("hashes", {})
        self.reqs[rid] = {"params": params, "cfg": cfg, "pinned": dict(pinned),
                          "resolved": False, "fails": False}

    @precondition(lambda self: self.reqs)
    @rule(data=st.data(), how=st.sampled_from(["finished", "aborted"]))
    def leave(self, data, how):
        rid = data.draw(st.sampled_from(sorted(self.reqs)))
        del self.reqs[rid]                     # both: gone from the runner's requests
        self.left.add(rid)                     # the runtime forgets it at the next step
        self.preempted.discard(rid)

    @precondition(lambda self: self.reqs)
    @rule(data=st.data())
    def preempt_or_resume(self, data):
        rid = data.draw(st.sampled_from(sorted(self.reqs)))
        self.preempted ^= {rid}

    @rule(which=st.sampled_from(VECTORS))
    def rewrite_vector(self, which):
        self._write(*which)

    @precondition(lambda self: self.reqs)
    @rule(data=st.data())
    def step(self, data):
        ready = sorted(set(self.reqs) - self.preempted)
        if not ready:
            return
        batch = data.draw(st.lists(st.sampled_from(ready), min_size=1, max_size=MAX_SEQS,
                                   unique=True))
        tokens = data.draw(st.lists(st.integers(1, 5), min_size=len(batch),
                                    max_size=len(batch)))
        for rid in batch:
            self._model_resolve(rid)
        self.rt.begin_step(batch, np.array(tokens), [self.reqs[r]["params"] for r in batch],
                           live=list(self.reqs))
        self.left.clear()
        self._check_step(batch, tokens)

    # --- the model ---------------------------------------------------------------------
    def _model_resolve(self, rid):
        """First time in a batch: the worker finds each vector's admitted content in what it has
        loaded before, or loads the file now and needs it to match."""
        req = self.reqs[rid]
        if req["resolved"] or req["cfg"] is None:
            req["resolved"] = True
            return
        req["resolved"] = True
        for key, want in req["pinned"].items():
            if want in self.worker_seen:
                continue
            kind, name = key.split("/")
            now = self.store.content_hash(kind, name)
            self.worker_seen.add(now)
            if now != want:
                req["fails"] = True
                break               # the worker stops at the first vector it can't apply

    def _expected_delta(self, req) -> torch.Tensor:
        cfg = req["cfg"]
        delta = torch.zeros(LAYERS, HIDDEN)
        for (kind, name), w in cfg["vectors"].items():
            for layer, row in self.contents[req["pinned"][f"{kind}/{name}"]].items():
                delta[layer] += w * row
        return delta * (cfg["scale"] if cfg["scale"] is not None else 1.0)

    def _check_step(self, batch, tokens):
        index = self.inner.steer_index
        n = sum(tokens)
        pos = 0
        for rid, k in zip(batch, tokens):
            req = self.reqs[rid]
            slots = set(index[pos:pos + k].tolist())
            assert len(slots) == 1, f"{rid}: its tokens read slots {slots}"
            slot = slots.pop()
            if req["cfg"] is None or req["fails"]:
                assert slot == 0, f"{rid} must read zeros, got slot {slot}"
            else:
                assert slot != 0, f"{rid} is steered but reads slot 0"
                assert torch.equal(self.inner.steer_table[:, slot], self._expected_delta(req)), rid
                assert self.inner.cap_on[slot].item() == float(req["cfg"]["safety"]), rid
            pos += k
        assert not index[n:].any(), "padding past the batch must read slot 0"
        failing = {r for r in batch if self.reqs[r]["fails"]}
        assert set(self.rt.step_failures) == failing

    @invariant()
    def zero_row_and_bounded_cache(self):
        if not hasattr(self, "rt"):
            return
        assert not self.inner.steer_table[:, 0].any() and self.inner.cap_on[0].item() == 0.0
        assert len(self.rt.unused) <= CACHE
        in_use = {e.key for e in self.rt.entries.values() if e is not None}
        assert set(self.rt.deltas) == in_use | set(self.rt.unused), "delta kept or lost wrongly"
        assert set(self.rt.entries) <= set(self.reqs) | self.left


RuntimeMachine.TestCase.settings = settings(
    max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None, derandomize=EXAMPLES <= 25,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
test_runtime_matches_model = RuntimeMachine.TestCase
