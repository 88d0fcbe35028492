"""Unit tests of the job machinery with a small fake job kind (no engine): worker process,
progress events, records on disk, failure, cancel, restart recovery."""
from __future__ import annotations

import asyncio
import json
import sys
import textwrap

import pytest

from persona_steer.config import validate_data
from persona_steer.store import VectorStore
from server import jobs as jobs_mod
from server.jobs import JobManager

FAKE = textwrap.dedent('''
    import time, torch
    from persona_steer.store import VectorStore
    from persona_steer.vector_format import SteeringVector

    def run(settings, *, name, steps=3, fail=False, sleep=0.0, progress=None, **backend):
        for i in range(steps):
            progress({"stage": "fake", "done": i + 1, "total": steps, "message": f"step {i+1}"})
            time.sleep(sleep)
        if fail:
            raise ValueError("the fake job was told to fail")
        assert backend.get("rollout_backend") == "openai", backend
        vec = SteeringVector.build("trait", name, {0: torch.ones(8)}, model="m")
        VectorStore(settings.path("vectors")).save(vec)
        return {"kind": "trait", "name": name}
''')


@pytest.fixture
def manager(tmp_path, monkeypatch):
    (tmp_path / "fakejob_mod.py").write_text(FAKE)
    monkeypatch.syspath_prepend(str(tmp_path))      # spawned workers inherit sys.path
    monkeypatch.setitem(jobs_mod.JOB_KINDS, "fake", ("fakejob_mod:run", "trait"))
    settings = validate_data({"paths": {"vectors": str(tmp_path / "v"),
                                        "jobs": str(tmp_path / "jobs")}}, base_dir=tmp_path)
    loaded = []
    return lambda: JobManager(settings, backend={"rollout_backend": "openai",
                                                 "base_url": "http://x/v1"},
                              on_success=loaded.append), settings, loaded


async def wait_done(m: JobManager, job_id: str, timeout=120) -> list:
    q = m.subscribe(job_id)
    seen = []
    async def loop():
        while True:
            event, snap = await q.get()
            seen.append((event, snap))
            if snap["status"] in jobs_mod.TERMINAL:
                return
    await asyncio.wait_for(loop(), timeout)
    return seen


def test_job_runs_in_worker_reports_progress_and_saves(manager):
    make, settings, loaded = manager

    async def go():
        m = make()
        rec = m.submit("fake", {"name": "faked"}, "faked")
        seen = await wait_done(m, rec["id"])
        return m, rec, seen
    m, rec, seen = asyncio.run(go())
    assert rec["status"] == "succeeded", rec
    progress = [s["progress"]["done"] for e, s in seen if e == "progress"]
    assert progress == [1, 2, 3]
    assert [e for e, _ in seen][-1] == "succeeded"
    assert VectorStore(settings.path("vectors")).exists("trait", "faked")
    assert loaded == [{"kind": "trait", "name": "faked"}]
    on_disk = json.loads((settings.path("jobs") / f"{rec['id']}.json").read_text())
    assert on_disk["status"] == "succeeded" and on_disk["progress"]["message"] == "step 3"


def test_failing_job_is_reported_in_one_line(manager):
    make, settings, _ = manager

    async def go():
        m = make()
        rec = m.submit("fake", {"name": "bad", "fail": True}, "bad")
        await wait_done(m, rec["id"])
        return rec
    rec = asyncio.run(go())
    assert rec["status"] == "failed"
    assert rec["error"] == "ValueError: the fake job was told to fail"
    assert not VectorStore(settings.path("vectors")).exists("trait", "bad")


def test_cancel_stops_the_worker(manager):
    make, settings, _ = manager

    async def go():
        m = make()
        rec = m.submit("fake", {"name": "slow", "steps": 100, "sleep": 0.2}, "slow")
        q = m.subscribe(rec["id"])
        while True:
            event, snap = await asyncio.wait_for(q.get(), 120)
            if event == "progress":
                break
        m.cancel(rec["id"])
        # the runner sees the worker gone (it polls its queue every 0.5 s) and drops it
        deadline = asyncio.get_running_loop().time() + 60
        while m.procs and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        return m, rec
    m, rec = asyncio.run(go())
    assert rec["status"] == "cancelled"
    assert not m.procs
    assert not VectorStore(settings.path("vectors")).exists("trait", "slow")


def test_restart_marks_unfinished_jobs_failed(manager):
    make, settings, _ = manager
    d = settings.path("jobs")
    d.mkdir(parents=True, exist_ok=True)
    (d / "aaaa.json").write_text(json.dumps({"id": "aaaa", "status": "running", "kind": "fake"}))
    (d / "bbbb.json").write_text(json.dumps({"id": "bbbb", "status": "succeeded", "kind": "fake"}))
    (d / "junk.json").write_text("{not json")
    m = make()
    assert m.get("aaaa")["status"] == "failed"
    assert "restarted" in m.get("aaaa")["error"]
    assert json.loads((d / "aaaa.json").read_text())["status"] == "failed"
    assert m.get("bbbb")["status"] == "succeeded"
    assert m.summary() == {"failed": 1, "succeeded": 1}
