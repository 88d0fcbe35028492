"""The vector store: one folder of safetensors files, used by every part of the project.

Layout under the store root:
  personas/<name>.safetensors   traits/<name>.safetensors   assistant_axis.safetensors
  server-state.json (the servers' shared scale and unloaded set: persona_steer.shared_state)
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from persona_steer.vector_format import (AXIS_NAME, SteeringVector, VectorFormatError,
                                         validate_kind, validate_name)

log = logging.getLogger(__name__)

KIND_DIRS = {"persona": "personas", "trait": "traits"}


class VectorNotFound(KeyError):
    def __init__(self, kind: str, name: str, available: list[str]):
        self.kind, self.name, self.available = kind, name, available
        have = ", ".join(available) if available else "none"
        super().__init__(f"unknown {kind} '{name}' (available: {have})")

    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return self.args[0]


class StoreWriteError(OSError):
    """The store's file system refused a write or delete (full, read-only, no permission),
    with a message that says which vector and where. Writes are atomic
    (persona_steer.atomic), so the previous file is still whole and no temporary file is left
    behind. An OSError still, for callers that handle any I/O failure alike."""

    def __init__(self, action: str, kind: str, name: str, path: Path, err: OSError):
        reason = err.strerror or str(err)
        unchanged = "; the previous version is unchanged" if action == "save" else ""
        super().__init__(f"cannot {action} {kind} '{name}' in the vector store "
                         f"({path.parent}): {reason}{unchanged}")
        self.errno = err.errno


@dataclass
class VectorEntry:
    kind: str
    name: str
    path: Path
    hidden_size: int
    layers: list[int]
    model: str
    description: str
    content_hash: str
    recommended: dict | None = None       # tuned {"layers", "strength"} (persona-steer tune)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "name": self.name, "hidden_size": self.hidden_size,
                "layers": self.layers, "model": self.model, "description": self.description,
                "content_hash": self.content_hash, "recommended": self.recommended}


class VectorStore:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        # path -> (mtime_ns, size, inode, vector); avoids re-reading unchanged files. The inode
        # matters: an atomic save of a same-sized vector within one mtime tick is a new inode.
        self._cache: dict[Path, tuple[int, int, int, SteeringVector]] = {}
        self.errors: dict[str, str] = {}   # "kind/name" -> why it was skipped

    # --- paths -----------------------------------------------------------------------
    def path_for(self, kind: str, name: str) -> Path:
        validate_kind(kind)
        if kind == "axis":
            if name != AXIS_NAME:
                raise VectorFormatError(f"the axis is always named '{AXIS_NAME}'")
            return self.root / f"{AXIS_NAME}.safetensors"
        validate_name(name)
        return self.root / KIND_DIRS[kind] / f"{name}.safetensors"

    def names(self, kind: str) -> list[str]:
        validate_kind(kind)
        if kind == "axis":
            return [AXIS_NAME] if self.path_for("axis", AXIS_NAME).exists() else []
        folder = self.root / KIND_DIRS[kind]
        if not folder.is_dir():
            return []
        return sorted(p.stem for p in folder.glob("*.safetensors")
                      if not p.name.startswith(".") and _valid(p.stem))

    def _badly_named(self, kind: str) -> list[str]:
        folder = self.root / KIND_DIRS[kind] if kind in KIND_DIRS else None
        if folder is None or not folder.is_dir():
            return []
        return sorted(p.stem for p in folder.glob("*.safetensors")
                      if not p.name.startswith(".") and not _valid(p.stem))

    def exists(self, kind: str, name: str) -> bool:
        return self.path_for(kind, name).is_file()

    # --- read ------------------------------------------------------------------------
    def load(self, kind: str, name: str) -> SteeringVector:
        path = self.path_for(kind, name)
        try:
            st = path.stat()
        except FileNotFoundError:
            raise VectorNotFound(kind, name, self.names(kind)) from None
        hit = self._cache.get(path)
        if hit and hit[:3] == (st.st_mtime_ns, st.st_size, st.st_ino):
            return hit[3]
        try:
            vec = SteeringVector.load(path, expect_kind=kind)
        except VectorFormatError as err:
            raise VectorFormatError(f"{kind} '{name}' ({path.name}) is corrupt: {err}") from None
        except FileNotFoundError:  # deleted between stat and read
            raise VectorNotFound(kind, name, self.names(kind)) from None
        except OSError as err:  # a folder named x.safetensors, no permission, ...
            raise VectorFormatError(f"{kind} '{name}' ({path.name}) is unreadable: {err}") from None
        if vec.name != name:
            raise VectorFormatError(f"{path.name} says its name is '{vec.name}', not '{name}'")
        self._cache[path] = (st.st_mtime_ns, st.st_size, st.st_ino, vec)
        return vec

    def list(self, kind: str | None = None) -> list[VectorEntry]:
        """Every readable vector; corrupt files are logged, recorded in `errors`, and skipped."""
        kinds = [kind] if kind else list(("persona", "trait", "axis"))
        out = []
        for k in kinds:
            for key in [e for e in self.errors if e.startswith(f"{k}/")]:
                del self.errors[key]  # forget files that are gone or fixed; re-found below
            for bad in self._badly_named(k):
                msg = f"file name '{bad}' is not a valid {k} name (a-z, 0-9, '_', '-', 1-64 chars)"
                self.errors[f"{k}/{bad}"] = msg
                log.warning("skipping %s/%s: %s", k, bad, msg)
            for name in self.names(k):
                try:
                    vec = self.load(k, name)
                except (VectorFormatError, VectorNotFound) as err:
                    self.errors[f"{k}/{name}"] = str(err)
                    log.warning("skipping %s/%s: %s", k, name, err)
                    continue
                self.errors.pop(f"{k}/{name}", None)
                out.append(VectorEntry(k, name, self.path_for(k, name), vec.hidden_size,
                                       vec.layers.tolist(), vec.model, vec.description,
                                       vec.content_hash(), recommended(vec)))
        return out

    def content_hash(self, kind: str, name: str) -> str:
        return self.load(kind, name).content_hash()

    def info(self, kind: str, name: str) -> dict:
        vec = self.load(kind, name)
        meta = {k: vec.meta_json(k) for k in vec.metadata}
        return {"kind": kind, "name": name, "hidden_size": vec.hidden_size,
                "layers": vec.layers.tolist(), "content_hash": vec.content_hash(),
                "norms": [round(float(x), 4) for x in vec.vectors.norm(dim=1)],
                "metadata": meta}

    # --- write -----------------------------------------------------------------------
    def save(self, vec: SteeringVector, *, overwrite: bool = True,
             hidden_size: int | None = None, model: str | None = None) -> Path:
        vec.validate()
        if hidden_size is not None:
            vec.check_compatible(hidden_size, model)
        path = self.path_for(vec.kind, vec.name)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{vec.kind} '{vec.name}' already exists")
        try:
            vec.save(path)
        except OSError as err:
            raise StoreWriteError("save", vec.kind, vec.name, path, err) from None
        self._cache.pop(path, None)
        return path

    def delete(self, kind: str, name: str) -> None:
        path = self.path_for(kind, name)
        try:
            path.unlink()
        except FileNotFoundError:
            raise VectorNotFound(kind, name, self.names(kind)) from None
        except OSError as err:
            raise StoreWriteError("delete", kind, name, path, err) from None
        self._cache.pop(path, None)

    def clear(self, kind: str) -> int:
        names = self.names(kind)
        for name in names:
            self.delete(kind, name)
        return len(names)


def recommended(vec: SteeringVector) -> dict | None:
    """A vector's tuned setting as the API lists it, or None when it was never tuned."""
    strength = vec.recommended_strength()
    layers = vec.recommended_layers()
    if strength is None and layers is None:
        return None
    return {"layers": layers, "strength": strength}


def _valid(name: str) -> bool:
    try:
        validate_name(name)
        return True
    except VectorFormatError:
        return False
