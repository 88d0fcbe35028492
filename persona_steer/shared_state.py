"""Runtime settings that every server on one vector store shares: the global steering scale
(`POST /api/steering-scale`) and the unloaded set (`/api/personas/{name}/unload`).

They live in one small JSON file in the store, `<store>/server-state.json`, so replicas that
mount the same store (NFS, a Kubernetes ReadWriteMany volume) agree. A change is a
read-modify-write under an exclusive lock (`.server-state.lock`, fcntl locks also hold on NFS)
and lands by atomic rename (persona_steer.atomic): readers never see half a file and two
replicas changing it at once lose neither change. Each server re-reads the file every
`POLL_S` seconds (server.state.watch_shared_state) and when it changes something itself, so
a change made through any replica is in force on all of them within POLL_S (plus the file
system's own delay: NFS re-reads a file's data on open, close-to-open consistency).
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

from persona_steer.atomic import atomic_write_text

log = logging.getLogger(__name__)

STATE_FILE = "server-state.json"
LOCK_FILE = ".server-state.lock"
POLL_S = 1.0
KINDS = ("persona", "trait")
_THREADS = threading.Lock()     # fcntl locks are per process: threads of one wait here


class SharedStateCorrupt(ValueError):
    """The state file is there but is not what this module writes (a hand edit gone wrong)."""


@dataclass(frozen=True)
class SharedSettings:
    steering_scale: Optional[float] = None          # None: the config's steering.steering_scale
    unloaded: dict[str, frozenset[str]] = field(
        default_factory=lambda: {k: frozenset() for k in KINDS})

    def to_json(self) -> str:
        return json.dumps({"steering_scale": self.steering_scale,
                           "unloaded": {k: sorted(self.unloaded.get(k, ())) for k in KINDS}},
                          indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "SharedSettings":
        try:
            data = json.loads(text)
            scale = data.get("steering_scale")
            if scale is not None and (isinstance(scale, bool) or
                                      not isinstance(scale, (int, float))):
                raise ValueError(f"steering_scale is {scale!r}, not a number")
            raw = data.get("unloaded") or {}
            unloaded = {}
            for kind in KINDS:
                names = raw.get(kind) or []
                if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                    raise ValueError(f"unloaded.{kind} is not a list of names")
                unloaded[kind] = frozenset(names)
        except (ValueError, AttributeError) as err:     # JSONDecodeError is a ValueError
            raise SharedStateCorrupt(f"{STATE_FILE} is not valid: {err}") from None
        return cls(None if scale is None else float(scale), unloaded)

    def with_scale(self, scale: float) -> "SharedSettings":
        return SharedSettings(float(scale), self.unloaded)

    def with_loaded(self, kind: str, name: str, loaded: bool) -> "SharedSettings":
        names = set(self.unloaded.get(kind, ()))
        (names.discard if loaded else names.add)(name)
        return SharedSettings(self.steering_scale, {**self.unloaded, kind: frozenset(names)})


@dataclass(frozen=True)
class Snapshot:
    settings: SharedSettings
    digest: Optional[str]          # sha256 of the file's bytes; None: there is no file


class SharedStateFile:
    def __init__(self, store_root: str | os.PathLike):
        self.root = Path(store_root)
        self.path = self.root / STATE_FILE

    def read(self) -> Snapshot:
        """The file as it is now. Raises SharedStateCorrupt for a file that does not parse."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return Snapshot(SharedSettings(), None)
        return Snapshot(SharedSettings.from_json(data.decode("utf-8", "replace")),
                        hashlib.sha256(data).hexdigest())

    def update(self, change: Callable[[SharedSettings], SharedSettings],
               fallback: SharedSettings) -> Snapshot:
        """Apply `change` to the file's current settings and write the result, under the lock.
        A corrupt file is replaced, starting from `fallback` (the caller's last good view)."""
        with self._locked():
            try:
                current = self.read().settings
            except SharedStateCorrupt as err:
                log.warning("%s; replacing it from this server's last good state", err)
                current = fallback
            new = change(current)
            text = new.to_json()
            atomic_write_text(self.path, text)
            return Snapshot(new, hashlib.sha256(text.encode()).hexdigest())

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with _THREADS, open(self.root / LOCK_FILE, "a+") as fh:
            fcntl.lockf(fh, fcntl.LOCK_EX)      # released when the file is closed
            yield
