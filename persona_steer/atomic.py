"""Atomic file writes: write a temp file in the same folder, fsync, rename over the target.

A crash or a kill leaves either the old file or the new one, never half of one. The same for a
folder built once and shared by processes (the built-in test models): `build_lock` serialises
its builders, `publish_dir` moves the finished build into place, `staged_build` does both around a
temporary folder.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def _read_umask() -> int:
    mask = os.umask(0)   # the only way to read it; done once at import, not per write (threads)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


@contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yields a temp path beside `target`; on success it is renamed onto `target`."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600; keep the target's mode (or the umask default for a new file) so a
    # rewrite does not make config.yaml or a vector unreadable to other users.
    try:
        mode = target.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = 0o666 & ~_UMASK
    os.chmod(tmp_path, mode)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(target: str | os.PathLike, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def atomic_write_bytes(target: str | os.PathLike, data: bytes) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


@contextmanager
def build_lock(out_dir: Path) -> Iterator[None]:
    """Serialise builders of one folder across processes (parallel test runs share the cache)."""
    import fcntl

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(out_dir.parent / f".{out_dir.name}.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def publish_dir(tmp: Path, out_dir: Path) -> None:
    """Move a finished build into place (caller holds the build_lock)."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)


@contextmanager
def staged_build(out_dir: Path, what: str = "building"):
    """Build `out_dir` once, across processes (parallel test runs share the cache).

    Yields None when the folder is already complete (its `.complete` marker exists, maybe
    written by another process while this one waited), else an empty temporary folder beside it
    to fill, ending with the `.complete` marker; on a clean exit it replaces `out_dir`, on an
    error it is removed, so a half-built folder is never seen.

        with staged_build(out_dir) as tmp:
            if tmp is not None:
                ...write the files into tmp, then tmp / ".complete"...
    """
    if (out_dir / ".complete").exists():
        yield None
        return
    with build_lock(out_dir):
        if (out_dir / ".complete").exists():
            yield None
            return
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.{what}-", dir=out_dir.parent))
        try:
            yield tmp
            if not (tmp / ".complete").exists():
                raise RuntimeError(f"building {out_dir} wrote no .complete marker")
            publish_dir(tmp, out_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
