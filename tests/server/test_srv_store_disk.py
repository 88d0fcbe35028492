"""The vector store on a bad disk, through a real server of its own whose store is a small
tmpfs: full or read-only during an upload gives a clear error, the old vector stays whole and
no temporary file is left; a corrupt or truncated .safetensors dropped in by hand is skipped
with a warning in /api/status while the rest keep serving; two uploads of one name at once
leave one whole file. Mounting needs root (CAP_SYS_ADMIN); without it those tests skip."""
from __future__ import annotations

import errno
import os
import subprocess
import threading
from pathlib import Path

import httpx
import pytest

from tests.conftest import live_server, make_vector

STORE_BYTES = 512 * 1024


def _mount(args: list[str]) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def disk_server(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("disk")
    store = root / "vectors"
    store.mkdir()
    if os.geteuid() != 0 or not _mount(["-t", "tmpfs", "-o", f"size={STORE_BYTES}", "tmpfs",
                                        str(store)]):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        with live_server(root, tiny_model) as live:
            live.store_mount = store
            yield live
    finally:
        subprocess.run(["umount", "-l", str(store)], capture_output=True)


def upload(srv, name: str, seed: int) -> httpx.Response:
    vec = make_vector("persona", name, srv.model_id, [0, 1, 2, 3], seed)
    return srv.put(f"/api/personas/{name}/vector", content=vec.to_bytes())


def leftovers(srv) -> list[str]:
    """Anything in the personas folder that is not a finished vector (temp files are dotfiles)."""
    return sorted(p.name for p in (srv.vectors_dir / "personas").iterdir()
                  if p.name.startswith(".") or not p.name.endswith(".safetensors"))


def fill(path: Path) -> None:
    """Write into `path` until the file system is full."""
    with open(path, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError as err:
            assert err.errno == errno.ENOSPC, err
    # a last partial block may still fit; fill it byte-wise
    with open(path, "ab", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0")
                fh.flush()
        except OSError:
            pass


def test_full_store_refuses_the_upload_and_keeps_the_old_vector(disk_server):
    srv = disk_server
    assert upload(srv, "keep-full", 1).status_code == 201
    old_hash = srv.get("/api/personas/keep-full").json()["content_hash"]
    filler = srv.store_mount / "filler.bin"
    fill(filler)
    try:
        for name in ("keep-full", "fresh-full"):
            r = upload(srv, name, 2)
            assert r.status_code == 507, r.text
            err = r.json()["error"]
            assert err["code"] == "store_full" and "No space left" in err["message"]
            assert name in err["message"]
        assert "previous version is unchanged" in err["message"]
        assert srv.get("/api/personas/keep-full").json()["content_hash"] == old_hash
        assert srv.get("/api/personas/fresh-full").status_code == 404
        assert leftovers(srv) == []
    finally:
        filler.unlink()
    assert upload(srv, "keep-full", 2).status_code == 200      # room again: it is replaced


def test_read_only_store_refuses_writes_and_keeps_serving(disk_server):
    srv = disk_server
    assert upload(srv, "keep-ro", 3).status_code == 201
    old_hash = srv.get("/api/personas/keep-ro").json()["content_hash"]
    assert _mount(["-o", "remount,ro", str(srv.store_mount)])
    try:
        r = upload(srv, "keep-ro", 4)
        assert r.status_code == 503 and r.json()["error"]["code"] == "store_read_only", r.text
        assert "Read-only file system" in r.json()["error"]["message"]
        r = srv.delete("/api/personas/keep-ro")
        assert r.status_code == 503 and r.json()["error"]["code"] == "store_read_only", r.text
        # reading and steering go on
        assert srv.get("/api/personas/keep-ro").json()["content_hash"] == old_hash
        chat = srv.post("/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2,
            "persona": "keep-ro"})
        assert chat.status_code == 200 and chat.json()["steering"]["steered"], chat.text
    finally:
        assert _mount(["-o", "remount,rw", str(srv.store_mount)])
    assert leftovers(srv) == []


def test_corrupt_files_are_skipped_with_a_warning(disk_server):
    srv = disk_server
    assert upload(srv, "good", 5).status_code == 201
    folder = srv.vectors_dir / "personas"
    whole = (folder / "good.safetensors").read_bytes()
    (folder / "truncated.safetensors").write_bytes(whole[: len(whole) // 2])
    (folder / "garbage.safetensors").write_bytes(b"not a safetensors file at all")
    try:
        errors = srv.get("/api/status").json()["store_errors"]     # without a listing first
        assert set(errors) >= {"persona/truncated", "persona/garbage"}, errors
        assert all("corrupt" in errors[k] for k in ("persona/truncated", "persona/garbage"))
        listed = srv.get("/api/personas").json()
        names = [p["name"] for p in listed["personas"]]
        assert "good" in names and "truncated" not in names and "garbage" not in names
        assert set(listed["errors"]) == {"persona/truncated", "persona/garbage"}
        ok = srv.post("/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "persona": "good"})
        assert ok.status_code == 200, ok.text
        bad = srv.post("/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2,
            "persona": "truncated"})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_vector"
    finally:
        (folder / "truncated.safetensors").unlink()
        (folder / "garbage.safetensors").unlink()
    assert srv.get("/api/status").json()["store_errors"] == {}


def test_concurrent_uploads_of_one_name_leave_one_whole_file(disk_server):
    srv = disk_server
    candidates = {seed: make_vector("persona", "contested", srv.model_id, [0, 1, 2, 3], seed)
                  for seed in (11, 12)}
    hashes = {v.content_hash() for v in candidates.values()}
    for _ in range(8):
        start = threading.Barrier(2)
        answers = []

        def put(vec):
            start.wait()
            answers.append(srv.put("/api/personas/contested/vector",
                                   content=vec.to_bytes()).status_code)

        threads = [threading.Thread(target=put, args=(v,)) for v in candidates.values()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(answers) in ([200, 200], [200, 201], [201, 201]), answers
        info = srv.get("/api/personas/contested").json()
        assert info["content_hash"] in hashes, info           # whole: it loads and is one of them
        assert leftovers(srv) == []
