"""`persona-steer init`: write the project's dataset content to datasets/, and read it back.

Files (plain, reviewable, editable by users; extraction reads these files):
  datasets/archetypes/<slug>.json  {"name", "title", "description", "system_prompts": [...]}
  datasets/assistant.json          {"name": "assistant", "description", "system_prompts": [...]}
  datasets/questions.jsonl         one {"id", "topic", "question"} per line
The original Persona Steering System's layout is read too (where ours has no file):
  datasets/personas/archetypes/<slug>.jsonl     one {"system_prompt": ...} per line (or .json)
  datasets/personas/extraction_questions.jsonl  one {"question": ...} per line
Every reader records the file it used in a `DatasetFiles`, and built-in content standing in for
a missing file is a warning there (and on the `persona_steer.datasets` logger): never silent.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from persona_steer.atomic import atomic_write_text
from persona_steer.config import Settings

from extraction.archetypes import ARCHETYPES, ASSISTANT_PROMPTS, QUESTIONS


log = logging.getLogger("persona_steer.datasets")
BUILT_IN = "built-in"
ORIGINAL_DIR = "personas"              # the original system's datasets/personas/


class DatasetError(ValueError):
    """A dataset file is missing or malformed (one-line message)."""


@dataclass
class DatasetFiles:
    """What each dataset read used: {what: file path or "built-in"}, plus the warnings."""
    used: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def record(self, what: str, source: Path | str, missing: str = "") -> None:
        self.used[what] = str(source)
        if source == BUILT_IN:
            msg = f"{what}: no {missing} here, so the built-in content stands in for it"
            self.warnings.append(msg)
            log.warning(msg)
        else:
            log.info("%s: read %s", what, source)

    def lines(self) -> list[str]:
        return ([f"dataset {what}: {src}" for what, src in self.used.items()]
                + [f"warning: {w}" for w in self.warnings])


def _files(root: Path) -> dict[Path, str]:
    out: dict[Path, str] = {}
    for slug, (title, desc, prompts) in ARCHETYPES.items():
        out[root / "archetypes" / f"{slug}.json"] = json.dumps(
            {"name": slug, "title": title, "description": desc, "system_prompts": prompts},
            indent=2, ensure_ascii=False) + "\n"
    out[root / "assistant.json"] = json.dumps(
        {"name": "assistant", "description": "Neutral assistant system prompts (the baseline).",
         "system_prompts": ASSISTANT_PROMPTS}, indent=2) + "\n"
    out[root / "questions.jsonl"] = "".join(
        json.dumps({"id": i, "topic": topic, "question": q}) + "\n"
        for i, (topic, q) in enumerate(QUESTIONS))
    return out


def _original_equivalent(root: Path, path: Path) -> Path | None:
    """The original layout's file that plays the role of our `path` (None: it has none)."""
    if path == root / "questions.jsonl":
        return root / ORIGINAL_DIR / "extraction_questions.jsonl"
    if path.parent == root / "archetypes":
        return root / ORIGINAL_DIR / "archetypes" / f"{path.stem}.jsonl"
    return None


def init_datasets(settings: Settings, force: bool = False) -> tuple[list[Path], list[Path]]:
    """Write every dataset file that is missing (all of them with force). -> (written, kept)."""
    root = settings.path("datasets")
    written, kept = [], []
    for path, text in _files(root).items():
        theirs = _original_equivalent(root, path)
        if not force and theirs is not None and theirs.exists():
            kept.append(theirs)             # the original layout's file stays the one in use
            continue
        if path.exists() and not force:
            kept.append(path)
            continue
        atomic_write_text(path, text)
        written.append(path)
    return written, kept


def _layouts(settings: Settings) -> tuple[Path, Path]:
    """(ours, the original's) dataset roots; ours wins where both have a file."""
    root = settings.path("datasets")
    return root, root / ORIGINAL_DIR


def _prompts_or_error(path: Path, prompts) -> list[str]:
    if not isinstance(prompts, list) or not prompts or not all(
            isinstance(p, str) and p.strip() for p in prompts):
        raise DatasetError(f"{path}: 'system_prompts' must be a non-empty list of strings")
    return prompts


def _read_json(path: Path) -> dict:
    if not path.exists():
        raise DatasetError(f"{path} is missing; run `persona-steer init` first")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DatasetError(f"{path}: not valid JSON ({err})") from None
    if isinstance(data, list):      # the original's list of {"system_prompt": ...}
        data = {"system_prompts": [d.get("system_prompt") if isinstance(d, dict) else d
                                   for d in data]}
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected an object with 'system_prompts'")
    _prompts_or_error(path, data.get("system_prompts"))
    return data


def _read_jsonl(path: Path, key: str) -> list[str]:
    """One `{key: text}` (or a bare string) per line; blank lines skipped."""
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            text = item if isinstance(item, str) else item[key]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise DatasetError(f"{path}:{n}: expected {{\"{key}\": ...}}") from None
        if not isinstance(text, str) or not text.strip():
            raise DatasetError(f"{path}:{n}: empty {key}")
        out.append(text)
    if not out:
        raise DatasetError(f"{path} has no {key}s")
    return out


def _archetype_files(settings: Settings) -> dict[str, Path]:
    """slug -> file, over both layouts (ours wins); empty when neither folder exists."""
    ours, original = _layouts(settings)
    found: dict[str, Path] = {}
    for folder, patterns in ((original / "archetypes", ("*.json", "*.jsonl")),
                             (ours / "archetypes", ("*.json",))):
        if folder.is_dir():
            for pattern in patterns:
                found.update({p.stem: p for p in sorted(folder.glob(pattern))})
    return found


def archetype_names(settings: Settings) -> list[str]:
    return sorted(_archetype_files(settings)) or list(ARCHETYPES)


def load_archetype(settings: Settings, slug: str, files: DatasetFiles | None = None) -> dict:
    """The archetype's file from datasets/ (either layout); the built-in content, with a
    warning in `files`, only when no archetype folder exists at all."""
    files = files if files is not None else DatasetFiles()
    what = f"archetype {slug}"
    available = _archetype_files(settings)
    path = available.get(slug)
    if path is None:
        if slug in ARCHETYPES and not available:
            title, desc, prompts = ARCHETYPES[slug]
            files.record(what, BUILT_IN, f"{settings.path('datasets') / 'archetypes'}/{slug}.json")
            return {"name": slug, "title": title, "description": desc, "system_prompts": prompts}
        have = ", ".join(archetype_names(settings))
        raise DatasetError(f"unknown archetype '{slug}' (available: {have})")
    if path.suffix == ".jsonl":
        data = {"name": slug, "system_prompts": _read_jsonl(path, "system_prompt")}
        if slug in ARCHETYPES:       # the original's files carry prompts only
            data["description"] = ARCHETYPES[slug][1]
    else:
        data = _read_json(path)
    files.record(what, path)
    return data


def load_assistant_prompts(settings: Settings, files: DatasetFiles | None = None) -> list[str]:
    files = files if files is not None else DatasetFiles()
    path = settings.path("datasets") / "assistant.json"
    if not path.exists():
        files.record("assistant prompts", BUILT_IN, str(path))
        return list(ASSISTANT_PROMPTS)
    files.record("assistant prompts", path)
    return list(_read_json(path)["system_prompts"])


def load_questions(settings: Settings, limit: int | None = None,
                   files: DatasetFiles | None = None) -> list[str]:
    files = files if files is not None else DatasetFiles()
    ours, original = _layouts(settings)
    candidates = (ours / "questions.jsonl", original / "extraction_questions.jsonl")
    path = next((p for p in candidates if p.exists()), None)
    if path is None:
        files.record("questions", BUILT_IN, " or ".join(map(str, candidates)))
        qs = [q for _, q in QUESTIONS]
    else:
        files.record("questions", path)
        qs = _read_jsonl(path, "question")
    return qs[:limit] if limit else qs
