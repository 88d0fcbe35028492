"""State that replicas share through the vector store (persona_steer/shared_state.py): the global
steering scale and the unloaded set live in <store>/server-state.json, every server follows
changes made by another, concurrent changes lose nothing, and two writers of one vector name
leave one whole file. No engine: ServerState objects on one store stand in for replicas (the
two-replica test behind nginx is tests/server/test_srv_replicas.py)."""
from __future__ import annotations

import asyncio
import multiprocessing as mp
import time

import pytest

from persona_steer.config import PROJECT_ROOT, load_config
from persona_steer.shared_state import STATE_FILE, SharedStateFile
from persona_steer.store import VectorStore
from server.state import ServerState, watch_shared_state
from tests.conftest import make_vector

CTX = mp.get_context("spawn")      # no fork of a process that imported torch


def replica(store) -> ServerState:
    settings = load_config(PROJECT_ROOT / "config.yaml", environ={},
                           overrides={"paths.vectors": str(store), "steering.steering_scale": 1.0})
    return ServerState(settings)


def follow(state: ServerState) -> bool:
    return state.sync_shared(state.read_shared())


def test_scale_and_unloaded_set_reach_another_replica_and_survive_a_restart(tmp_path):
    a, b = replica(tmp_path), replica(tmp_path)
    assert a.scale == b.scale == 1.0 and not (tmp_path / STATE_FILE).exists()
    a.set_scale(0.25)
    a.set_loaded("persona", "pirate", False)
    assert b.scale == 1.0 and b.is_loaded("persona", "pirate")    # until b reads the file
    assert follow(b)
    assert b.scale == 0.25 and not b.is_loaded("persona", "pirate")
    assert not follow(b)                                          # unchanged: nothing to apply
    b.set_loaded("persona", "pirate", True)
    b.set_scale(-0.5)
    follow(a)
    assert a.scale == -0.5 and a.is_loaded("persona", "pirate")
    assert replica(tmp_path).scale == -0.5                        # a restart starts from the file


def test_watch_follows_changes_without_a_request(tmp_path):
    a, b = replica(tmp_path), replica(tmp_path)

    async def run():
        watcher = asyncio.create_task(watch_shared_state(b, interval_s=0.05))
        try:
            a.set_scale(0.75)
            a.set_loaded("trait", "calm", False)
            while b.scale != 0.75 or b.is_loaded("trait", "calm"):
                await asyncio.sleep(0.05)
        finally:
            watcher.cancel()

    asyncio.run(asyncio.wait_for(run(), timeout=30))
    assert b.loaded("trait") == [] and b.unloaded["trait"] == {"calm"}


def test_a_corrupt_file_keeps_the_last_good_state_and_is_replaced_by_the_next_change(tmp_path):
    a, b = replica(tmp_path), replica(tmp_path)
    a.set_scale(0.5)
    follow(b)
    (tmp_path / STATE_FILE).write_text("{not json")
    assert not follow(b)
    assert b.scale == 0.5 and STATE_FILE in b.store.errors
    assert "not valid" in b.store.errors[STATE_FILE]
    b.set_loaded("persona", "x", False)               # rewritten from b's last good view
    assert SharedStateFile(tmp_path).read().settings.steering_scale == 0.5
    follow(b)
    assert STATE_FILE not in b.store.errors


def _unload_many(store: str, prefix: str, n: int, go) -> None:
    state = replica(store)
    go.wait()                       # a barrier: both start changing at once
    for i in range(n):
        state.set_loaded("persona", f"{prefix}{i}", False)


def test_concurrent_changes_from_two_processes_lose_nothing(tmp_path):
    """Each change is a read-modify-write under the file lock: two replicas unloading at once
    both land (without the lock one would overwrite the other's)."""
    n = 60
    go = CTX.Barrier(2)
    procs = [CTX.Process(target=_unload_many, args=(str(tmp_path), p, n, go)) for p in "ab"]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    unloaded = SharedStateFile(tmp_path).read().settings.unloaded["persona"]
    assert unloaded == {f"{p}{i}" for p in "ab" for i in range(n)}


def _save_many(store: str, seed: int, n: int, go) -> None:
    vs = VectorStore(store)
    vec = make_vector("persona", "same", "m", [0, 1, 2, 3], seed, hidden=2048)
    go.wait()
    for _ in range(n):
        vs.save(vec)


def test_two_writers_of_one_name_leave_one_whole_file(tmp_path):
    """Two replicas saving the same vector name at once: every read in between and the file
    left at the end are one writer's whole vector, never a mix or a torn file (atomic.py writes
    a temp file and renames it into place), and no temp file is left behind."""
    hashes = {make_vector("persona", "same", "m", [0, 1, 2, 3], s, hidden=2048).content_hash()
              for s in (1, 2)}
    assert len(hashes) == 2
    go = CTX.Barrier(2)             # both writers start at once
    procs = [CTX.Process(target=_save_many, args=(str(tmp_path), s, 40, go)) for s in (1, 2)]
    for p in procs:
        p.start()
    reader, seen = VectorStore(tmp_path), set()
    while any(p.is_alive() for p in procs):
        if reader.exists("persona", "same"):
            seen.add(reader.load("persona", "same").content_hash())   # raises if torn
        time.sleep(0.001)
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    assert seen and seen <= hashes
    assert VectorStore(tmp_path).content_hash("persona", "same") in hashes
    assert [f.name for f in (tmp_path / "personas").iterdir()] == ["same.safetensors"]


@pytest.mark.parametrize("bad", ['{"steering_scale": "high"}', '{"unloaded": {"persona": 3}}',
                                 "[]"])
def test_file_contents_that_are_not_state_are_reported(tmp_path, bad):
    (tmp_path / STATE_FILE).write_text(bad)
    state = replica(tmp_path)
    assert state.scale == 1.0 and STATE_FILE in state.store.errors
