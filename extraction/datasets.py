"""`persona-steer init`: write the project's dataset content to datasets/, and read it back.

Files (plain, reviewable, editable by users; extraction reads these files):
  datasets/archetypes/<slug>.json  {"name", "title", "description", "system_prompts": [...]}
  datasets/assistant.json          {"name": "assistant", "description", "system_prompts": [...]}
  datasets/questions.jsonl         one {"id", "topic", "question"} per line
"""
from __future__ import annotations

import json
from pathlib import Path

from persona_steer.atomic import atomic_write_text
from persona_steer.config import Settings

from extraction.archetypes import ARCHETYPES, ASSISTANT_PROMPTS, QUESTIONS


class DatasetError(ValueError):
    """A dataset file is missing or malformed (one-line message)."""


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


def init_datasets(settings: Settings, force: bool = False) -> tuple[list[Path], list[Path]]:
    """Write every dataset file that is missing (all of them with force). -> (written, kept)."""
    root = settings.path("datasets")
    written, kept = [], []
    for path, text in _files(root).items():
        if path.exists() and not force:
            kept.append(path)
            continue
        atomic_write_text(path, text)
        written.append(path)
    return written, kept


def _read_json(path: Path) -> dict:
    if not path.exists():
        raise DatasetError(f"{path} is missing; run `persona-steer init` first")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DatasetError(f"{path}: not valid JSON ({err})") from None
    prompts = data.get("system_prompts") if isinstance(data, dict) else None
    if not isinstance(prompts, list) or not prompts or not all(
            isinstance(p, str) and p.strip() for p in prompts):
        raise DatasetError(f"{path}: 'system_prompts' must be a non-empty list of strings")
    return data


def archetype_names(settings: Settings) -> list[str]:
    folder = settings.path("datasets") / "archetypes"
    names = sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []
    return names or list(ARCHETYPES)


def load_archetype(settings: Settings, slug: str) -> dict:
    """The archetype's file from datasets/ (falls back to the built-in content if not initialised)."""
    path = settings.path("datasets") / "archetypes" / f"{slug}.json"
    if not path.exists():
        if slug in ARCHETYPES and not (settings.path("datasets") / "archetypes").is_dir():
            title, desc, prompts = ARCHETYPES[slug]
            return {"name": slug, "title": title, "description": desc, "system_prompts": prompts}
        have = ", ".join(archetype_names(settings))
        raise DatasetError(f"unknown archetype '{slug}' (available: {have})")
    return _read_json(path)


def load_assistant_prompts(settings: Settings) -> list[str]:
    path = settings.path("datasets") / "assistant.json"
    if not path.exists():
        return list(ASSISTANT_PROMPTS)
    return list(_read_json(path)["system_prompts"])


def load_questions(settings: Settings, limit: int | None = None) -> list[str]:
    path = settings.path("datasets") / "questions.jsonl"
    if not path.exists():
        qs = [q for _, q in QUESTIONS]
    else:
        qs = []
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                q = json.loads(line)["question"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise DatasetError(f"{path}:{n}: expected {{\"question\": ...}}") from None
            if not isinstance(q, str) or not q.strip():
                raise DatasetError(f"{path}:{n}: empty question")
            qs.append(q)
        if not qs:
            raise DatasetError(f"{path} has no questions")
    return qs[:limit] if limit else qs
