"""Per-process server state: settings, the AsyncLLM engine, the vector store, the loaded set,
the global steering scale, metrics and the job manager. One instance per app (`app.state.ps`).

The engine starts in a background thread after the HTTP port is open, so `/health` and every
generation endpoint answer 503 ("engine starting") until it is ready, instead of refusing
connections.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from prometheus_client import CollectorRegistry, Counter, Gauge

from persona_steer.config import Settings, load_config
from persona_steer.resolve import ModelShape
from persona_steer.shared_state import (POLL_S, STATE_FILE, SharedSettings, SharedStateCorrupt,
                                        SharedStateFile, Snapshot)
from persona_steer.steering_spec import PERSONA_MODEL_PREFIX
from persona_steer.store import StoreWriteError, VectorStore

from server.think import ThinkConfig

log = logging.getLogger("persona_steer.server")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("persona_steer_requests", "generation requests",
                                ["endpoint", "steered"], registry=r)
        self.errors = Counter("persona_steer_errors", "error responses", ["status"], registry=r)
        self.prompt_tokens = Counter("persona_steer_prompt_tokens", "prompt tokens",
                                     ["steered"], registry=r)
        self.completion_tokens = Counter("persona_steer_completion_tokens",
                                         "generated tokens", ["steered"], registry=r)
        self.running = Gauge("persona_steer_running_requests",
                             "generation requests in flight", registry=r)
        self.aborted = Counter("persona_steer_aborted", "requests aborted by a client going away",
                               registry=r)
        self.loop_stalls = Counter("persona_steer_event_loop_stalls",
                                   "times the event loop was blocked for over 2 s", registry=r)
        self.auth_failures = Counter("persona_steer_auth_failures",
                                     "requests refused for a missing or wrong API key",
                                     ["endpoint"], registry=r)


@dataclass
class ServerState:
    settings: Settings
    config_path: Optional[str] = None
    overrides: list[str] = field(default_factory=list)
    engine: Any = None                          # vllm AsyncLLM once ready
    engine_state: str = "starting"              # starting | ready | failed | dead | stopped
    engine_error: Optional[str] = None
    tokenizer: Any = None
    shape: Optional[ModelShape] = None
    model_path: Optional[str] = None
    scale: float = 1.0
    unloaded: dict[str, set[str]] = field(default_factory=lambda: {"persona": set(),
                                                                   "trait": set()})
    metrics: Metrics = field(default_factory=Metrics)
    jobs: Any = None                            # server.jobs.JobManager
    in_flight: int = 0
    started_at: float = field(default_factory=time.time)
    api_key: Optional[str] = None
    api_key_from_flag: bool = False             # --api-key given: SIGHUP keeps it
    think: Any = None                           # server.think.ThinkConfig
    sampling_defaults: dict = field(default_factory=dict)   # from the model's generation config
    max_model_len: Optional[int] = None         # the engine's context (config or the model's)
    # --- lifecycle (server.lifecycle): stopping, draining, the exit code ------------------
    loop: Optional[asyncio.AbstractEventLoop] = None
    stopping: Optional[str] = None              # why the server stopped accepting (None: it accepts)
    stop_task: Optional[asyncio.Task] = None
    stop_server: Optional[Callable[[], None]] = None   # set by lifecycle.SteerServer
    exit_code: Optional[int] = None
    exit_message: Optional[str] = None          # the one line `serve` prints on a non-zero exit
    http_in_flight: int = 0
    active_requests: set[str] = field(default_factory=set)   # engine request ids in flight
    cut_requests: set[str] = field(default_factory=set)      # aborted at the grace bound

    def __post_init__(self) -> None:
        self.store = VectorStore(self.settings.path("vectors"))
        self.scale = self.settings.steering.steering_scale
        self.api_key = self.settings.server.api_key or None
        # the scale and the unloaded set are shared by every server on this store
        # (persona_steer.shared_state); `scale` and `unloaded` mirror the file for the hot path
        self.shared_file = SharedStateFile(self.store.root)
        self.shared = SharedSettings()
        self.shared_digest: Optional[str] = None
        self.shared_writes = 0          # bumped by each local change: a poll read before it is stale
        self.sync_shared(self.read_shared())

    @property
    def model_id(self) -> str:
        return self.settings.model.name

    # --- loaded set: everything in the store is loaded unless explicitly unloaded ----------
    def loaded(self, kind: str) -> list[str]:
        return [n for n in self.store.names(kind) if n not in self.unloaded[kind]]

    def is_loaded(self, kind: str, name: str) -> bool:
        return name not in self.unloaded.get(kind, set())

    def set_loaded(self, kind: str, name: str, loaded: bool) -> None:
        if self.is_loaded(kind, name) != loaded:
            self._change_shared(lambda s: s.with_loaded(kind, name, loaded))

    # --- state shared with other replicas (persona_steer.shared_state) --------------------
    def set_scale(self, scale: float) -> None:
        self._change_shared(lambda s: s.with_scale(scale))

    def _change_shared(self, change) -> None:
        self.shared_writes += 1
        try:
            snap = self.shared_file.update(change, fallback=self.shared)
        except OSError as err:
            raise StoreWriteError("save", "state", STATE_FILE.split(".")[0],
                                  self.shared_file.path, err) from None
        self._apply_shared(snap)

    def read_shared(self) -> Snapshot | Exception:
        """The shared file now, or why it cannot be read (safe from any thread)."""
        try:
            return self.shared_file.read()
        except (SharedStateCorrupt, OSError) as err:
            return err

    def sync_shared(self, snap: Snapshot | Exception) -> bool:
        """Take a snapshot read by `read_shared` into force if it is new. An unreadable file
        leaves the last good state in force and is listed in /api/status `store_errors`. Call
        from the event loop (or before it runs)."""
        if isinstance(snap, Exception):
            if self.store.errors.get(STATE_FILE) != str(snap):
                log.warning("keeping the last good shared state: %s", snap)
            self.store.errors[STATE_FILE] = str(snap)
            return False
        self.store.errors.pop(STATE_FILE, None)
        if snap.digest == self.shared_digest:
            return False
        self._apply_shared(snap)
        return True

    def _apply_shared(self, snap: Snapshot) -> None:
        self.shared, self.shared_digest = snap.settings, snap.digest
        config_scale = self.settings.steering.steering_scale
        self.scale = config_scale if snap.settings.steering_scale is None \
            else snap.settings.steering_scale
        self.unloaded = {k: set(v) for k, v in snap.settings.unloaded.items()}

    # --- config reload (SIGHUP): the API key can rotate without a restart ------------------
    def reload_api_key(self) -> None:
        fresh = load_config(self.config_path, overrides=self.overrides)
        if self.api_key_from_flag:
            log.info("config reloaded: API key set by --api-key, unchanged")
            return
        self.api_key = fresh.server.api_key or None
        log.info("config reloaded: API key %s", "on" if self.api_key else "off")


async def watch_shared_state(state: ServerState, interval_s: float = POLL_S) -> None:
    """Follow changes other replicas make to the shared state: re-read every interval_s."""
    while True:
        await asyncio.sleep(interval_s)
        writes = state.shared_writes
        snap = await asyncio.to_thread(state.read_shared)   # a slow NFS must not block the loop
        if writes == state.shared_writes:   # else a local change landed meanwhile: read again
            state.sync_shared(snap)


def start_engine(state: ServerState, factory: Optional[Callable[[ServerState], Any]] = None,
                 on_failure: Optional[Callable[[], None]] = None) -> threading.Thread:
    """Build the engine in a thread (it blocks for tens of seconds); flips engine_state. A
    failure leaves its one-line cause (server.start_errors) in engine_error, then calls
    `on_failure` (from this thread)."""
    def run() -> None:
        try:
            engine = (factory or build_async_llm)(state)
            configure_from_engine(state, engine)
            state.engine = engine
            state.engine_state = "ready"
            log.info("engine ready: %s", state.model_path)
        except Exception as err:  # reported through /health, /api/status and the exit line
            from server.start_errors import explain
            log.debug("engine failed to start", exc_info=err)
            state.engine_error = explain(err, state.settings)
            state.engine_state = "failed"
            log.error("engine failed to start: %s", state.engine_error)
            if on_failure is not None:
                on_failure()

    t = threading.Thread(target=run, name="engine-start", daemon=True)
    t.start()
    return t


def build_async_llm(state: ServerState):
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    from persona_steer.testmodels import resolve_model
    from steering_plugin.engine import engine_kwargs

    state.model_path = resolve_model(state.settings.model.name, state.settings.path("cache"))
    kwargs = engine_kwargs(state.settings, state.model_path)
    engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**kwargs))
    yield_per_engine_step(engine)
    return engine


def yield_per_engine_step(engine) -> None:
    """Let the event loop breathe once per engine step. AsyncLLM's output handler awaits an
    asyncio.Queue of engine outputs, which does not yield while the queue has a backlog; when the
    engine steps faster than this process handles them (a small model), the handler spins until
    the generation ends and nothing else runs: no disconnect is noticed, no WebSocket stop is
    read, /api/status and /metrics wait. One sleep(0) per step costs microseconds."""
    core = getattr(engine, "engine_core", None)
    get = getattr(core, "get_output_async", None)
    if get is None:
        return

    async def get_output_async():
        await asyncio.sleep(0)
        return await get()

    core.get_output_async = get_output_async


def configure_from_engine(state: ServerState, engine) -> None:
    # the shape admission checks requests against (the engine's hf_config, steering_plugin.engine)
    state.shape = ModelShape.from_hf_config(engine.model_config.hf_config)
    state.tokenizer = engine.get_tokenizer()
    state.think = ThinkConfig.from_tokenizer(state.tokenizer)
    # what vLLM's own server uses for fields a request leaves out (model.generation_config)
    state.sampling_defaults = dict(engine.model_config.get_diff_sampling_param())
    state.max_model_len = int(engine.model_config.max_model_len)
    if state.model_path is None:
        state.model_path = str(engine.model_config.model)


def model_ids(state: ServerState) -> list[str]:
    return [state.model_id] + [PERSONA_MODEL_PREFIX + n for n in state.loaded("persona")]


def path_str(p: Path | str | None) -> Optional[str]:
    return None if p is None else str(p)
