"""Background jobs (persona / trait extraction) outside the request path.

- One job at a time runs in its own worker process (multiprocessing *spawn*), so a job
  survives the client going away and never blocks the event loop.
- Each job has a JSON record under `settings.path("jobs")/<id>.json`, written atomically on
  every state change; at start-up any record still `queued`/`running` is marked `failed`
  ("the server restarted before the job finished"). Finished vectors live in the store.
- Progress events (dict(stage, done, total, message)) stream to subscribers (SSE).
- Job kinds map to `module:function` targets called in the worker as
  `fn(settings, progress=callback, **params, **backend)`; tests may register their own kind.
"""
from __future__ import annotations

import asyncio
import importlib
import json
import logging
import multiprocessing as mp
import queue as queue_mod
import time
import traceback
import uuid
from pathlib import Path
from typing import Any, Optional

from persona_steer.atomic import atomic_write_text
from persona_steer.config import Settings, validate_data
from persona_steer.job_states import TERMINAL

log = logging.getLogger("persona_steer.server.jobs")


# kind -> (target "module:function", vector kind produced)
JOB_KINDS: dict[str, tuple[str, str]] = {
    "persona": ("server.jobs:_persona_target", "persona"),
    "trait": ("server.jobs:_trait_target", "trait"),
    "tune_persona": ("server.jobs:_tune_target", "persona"),
    "tune_trait": ("server.jobs:_tune_target", "trait"),
}


def _persona_target(settings: Settings, *, name: str, archetype=None, description=None,
                    progress=None, **opts) -> dict:
    from extraction.jobs import run_persona_job
    vec = run_persona_job(settings, name, archetype=archetype, description=description,
                          progress=progress, **opts)
    return {"kind": "persona", "name": getattr(vec, "name", name)}


def _trait_target(settings: Settings, *, word: str, opposite: str, name=None, progress=None,
                  **opts) -> dict:
    from extraction.jobs import run_trait_job
    vec = run_trait_job(settings, word, opposite, name=name, progress=progress, **opts)
    return {"kind": "trait", "name": getattr(vec, "name", name or word)}


def _tune_target(settings: Settings, *, kind: str, name: str, strengths=None,
                 num_questions=None, scorer=None, min_coherence=None, write=True,
                 progress=None, base_url: str,
                 api_key=None, **_backend) -> dict:
    """`persona-steer tune` through this server's own API (loopback; extraction/tune.py)."""
    from clients.client import PersonaSteerClient
    from extraction.tune import TuneParams, make_scorer, tune
    params = TuneParams.from_settings(settings, strengths=strengths, num_questions=num_questions,
                                      min_coherence=min_coherence, write=write)
    root = base_url[:-3] if base_url.endswith("/v1") else base_url
    with PersonaSteerClient(root, api_key=api_key) as client:
        result = tune(client, kind, name, make_scorer(settings, client, scorer), params,
                      lambda done, total, what: progress(stage="tune", done=done, total=total,
                                                         message=what))
    return {"kind": kind, "name": name, "tune": result.to_dict()}


def _worker_main(target: str, settings_data: dict, base_dir: str, params: dict,
                 backend: dict, events) -> None:
    """Runs in the spawned worker process."""
    def progress(ev: Any = None, **kw) -> None:
        d = dict(ev) if isinstance(ev, dict) else ({"message": str(ev)} if ev is not None else {})
        d.update(kw)
        events.put(("progress", {k: d.get(k) for k in ("stage", "done", "total", "message")
                                 if d.get(k) is not None}))

    try:
        settings = validate_data(settings_data, base_dir=Path(base_dir))
        mod_name, fn_name = target.split(":")
        fn = getattr(importlib.import_module(mod_name), fn_name)
        result = fn(settings, progress=progress, **params, **backend)
        events.put(("done", result if isinstance(result, dict) else {}))
    except BaseException as err:  # reported in the job record, one line
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        events.put(("error", f"{type(err).__name__}: {msg}"))
        traceback.print_exc()


class JobManager:
    def __init__(self, settings: Settings, *, backend=None, on_success=None):
        # backend: dict of job options (or a callable returning one, read at each job start)
        self.settings = settings
        self.dir = settings.path("jobs")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.backend = backend if backend is not None else {}
        self.on_success = on_success            # callback(result dict) in the event loop
        self.jobs: dict[str, dict] = {}
        self.subscribers: dict[str, list[asyncio.Queue]] = {}
        self.procs: dict[str, Any] = {}
        self._queue: Optional[asyncio.Queue] = None
        self._runner: Optional[asyncio.Task] = None
        self._recover()

    # --- records ---------------------------------------------------------------------------
    def _recover(self) -> None:
        for path in sorted(self.dir.glob("*.json")):
            try:
                rec = json.loads(path.read_text())
                if not isinstance(rec, dict) or "id" not in rec:
                    raise ValueError("not a job record")
            except (ValueError, OSError) as err:
                log.warning("skipping unreadable job record %s: %s", path.name, err)
                continue
            if rec.get("status") not in TERMINAL:
                rec["status"] = "failed"
                rec["error"] = "the server restarted before the job finished"
                rec["finished_at"] = time.time()
                self._write(rec)
            self.jobs[rec["id"]] = rec

    def _write(self, rec: dict) -> None:
        atomic_write_text(self.dir / f"{rec['id']}.json", json.dumps(rec, indent=1))

    def get(self, job_id: str) -> dict:
        from server.errors import APIError
        rec = self.jobs.get(job_id)
        if rec is None:
            raise APIError(404, f"unknown job '{job_id}'", param="id", code="job_not_found")
        return rec

    def list(self) -> list[dict]:
        return sorted(self.jobs.values(), key=lambda r: r.get("created_at", 0), reverse=True)

    def summary(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for rec in self.jobs.values():
            out[rec["status"]] = out.get(rec["status"], 0) + 1
        return out

    def active_for(self, vector_kind: str, name: str) -> Optional[dict]:
        for rec in self.jobs.values():
            if rec["status"] not in TERMINAL and rec.get("vector_kind") == vector_kind \
                    and rec.get("vector_name") == name:
                return rec
        return None

    # --- submit / run ------------------------------------------------------------------------
    def submit(self, kind: str, params: dict, vector_name: str) -> dict:
        if kind not in JOB_KINDS:
            raise ValueError(f"unknown job kind {kind!r}")
        job_id = uuid.uuid4().hex[:16]
        rec = {"id": job_id, "kind": kind, "params": params, "status": "queued",
               "vector_kind": JOB_KINDS[kind][1], "vector_name": vector_name,
               "created_at": time.time(), "started_at": None, "finished_at": None,
               "progress": {}, "events": [], "error": None, "result": None}
        self.jobs[job_id] = rec
        self._write(rec)
        self._ensure_runner()
        self._queue.put_nowait(job_id)
        self._publish(rec, "queued")
        return rec

    def _ensure_runner(self) -> None:
        if self._queue is None:
            self._queue = asyncio.Queue()
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run_loop())

    async def _run_loop(self) -> None:
        while True:
            job_id = await self._queue.get()
            rec = self.jobs.get(job_id)
            if rec is None or rec["status"] != "queued":
                continue
            try:
                await self._run_one(rec)
            except Exception as err:  # never let the runner die
                log.exception("job %s crashed the runner", job_id)
                self._finish(rec, "failed", error=f"{type(err).__name__}: {err}")

    async def _run_one(self, rec: dict) -> None:
        ctx = mp.get_context("spawn")
        events = ctx.Queue()
        target = JOB_KINDS[rec["kind"]][0]
        proc = ctx.Process(
            target=_worker_main, name=f"job-{rec['id']}", daemon=True,
            args=(target, self.settings.model_dump(mode="json"), str(self.settings.base_dir),
                  rec["params"], self.backend() if callable(self.backend) else self.backend,
                  events))
        rec["status"] = "running"
        rec["started_at"] = time.time()
        self._write(rec)
        self._publish(rec, "running")
        proc.start()
        self.procs[rec["id"]] = proc
        result, error = None, None
        try:
            while True:
                try:
                    kind, payload = await asyncio.to_thread(events.get, True, 0.5)
                except queue_mod.Empty:
                    if not proc.is_alive():
                        # drain anything sent just before exiting
                        try:
                            kind, payload = events.get_nowait()
                        except queue_mod.Empty:
                            if rec["status"] == "cancelled":
                                return
                            error = error or f"the worker exited with code {proc.exitcode}"
                            break
                    else:
                        continue
                if kind == "progress":
                    rec["progress"] = payload
                    rec["events"] = (rec["events"] + [payload])[-50:]
                    self._write(rec)
                    self._publish(rec, "progress")
                elif kind == "done":
                    result = payload
                    break
                elif kind == "error":
                    error = payload
                    break
        finally:
            self.procs.pop(rec["id"], None)
            await asyncio.to_thread(proc.join, 10)
            if proc.is_alive():
                proc.kill()
        if rec["status"] == "cancelled":
            return
        if error is not None:
            self._finish(rec, "failed", error=error)
        else:
            result = result or {}
            result.setdefault("kind", rec["vector_kind"])
            result.setdefault("name", rec["vector_name"])
            if self.on_success:
                try:
                    self.on_success(result)
                except Exception as err:
                    log.warning("job %s: on_success failed: %s", rec["id"], err)
            self._finish(rec, "succeeded", result=result)

    def _finish(self, rec: dict, status: str, *, error: str | None = None,
                result: dict | None = None) -> None:
        rec["status"] = status
        rec["error"] = error
        rec["result"] = result
        rec["finished_at"] = time.time()
        self._write(rec)
        self._publish(rec, status)

    def cancel(self, job_id: str) -> dict:
        rec = self.get(job_id)
        if rec["status"] in TERMINAL:
            return rec
        proc = self.procs.get(job_id)
        rec["status"] = "cancelled"
        if proc is not None and proc.is_alive():
            proc.terminate()
        self._finish(rec, "cancelled", error="cancelled by a client")
        return rec

    # --- events ------------------------------------------------------------------------------
    def _publish(self, rec: dict, event: str) -> None:
        snapshot = job_view(rec)
        for q in self.subscribers.get(rec["id"], []):
            q.put_nowait((event, snapshot))

    def subscribe(self, job_id: str) -> asyncio.Queue:
        q: asyncio.Queue = asyncio.Queue()
        self.subscribers.setdefault(job_id, []).append(q)
        return q

    def unsubscribe(self, job_id: str, q: asyncio.Queue) -> None:
        subs = self.subscribers.get(job_id, [])
        if q in subs:
            subs.remove(q)
        if not subs:
            self.subscribers.pop(job_id, None)

    async def shutdown(self) -> None:
        for job_id, proc in list(self.procs.items()):
            if proc.is_alive():
                proc.terminate()
        if self._runner is not None:
            self._runner.cancel()


def job_view(rec: dict) -> dict:
    """The record as clients see it (every route and event): all but its event log."""
    return {k: v for k, v in rec.items() if k != "events"}
