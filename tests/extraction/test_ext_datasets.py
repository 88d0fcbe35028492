"""`persona-steer init` content and files (no model needed)."""
from __future__ import annotations

import json
import re

import pytest

from extraction.archetypes import ARCHETYPES, ASSISTANT_PROMPTS, QUESTIONS, trait_prompts
from extraction.datasets import (DatasetError, archetype_names, init_datasets, load_archetype,
                                 load_assistant_prompts, load_questions)
from tests.extraction.conftest import ext_settings

BASE = ["sage", "trickster", "guardian", "explorer", "creator", "prophet", "hermit", "pirate",
        "noir_detective", "valley_girl", "drill_sergeant", "surfer_dude", "shakespearean", "robot",
        "excited_puppy", "conspiracy_theorist", "medieval_peasant"]


def test_content_covers_the_17_archetypes():
    assert sorted(ARCHETYPES) == sorted(BASE)
    for slug, (title, desc, prompts) in ARCHETYPES.items():
        assert re.fullmatch(r"[a-z0-9_-]+", slug)
        assert len(prompts) >= 5 and len(set(prompts)) == len(prompts), slug
        assert all(len(p) > 30 for p in prompts) and desc and title
    assert len(ASSISTANT_PROMPTS) >= 5 and len(set(ASSISTANT_PROMPTS)) == len(ASSISTANT_PROMPTS)
    qs = [q for _, q in QUESTIONS]
    assert len(qs) >= 40 and len(set(qs)) == len(qs)
    assert len({t for t, _ in QUESTIONS}) >= 15          # spread over everyday topics
    assert all(q.endswith("?") and len(q) < 80 for q in qs)
    assert all("formal" in p for p in trait_prompts("formal"))


def test_init_writes_files_idempotent_and_force(tmp_path):
    s = ext_settings(tmp_path)
    written, kept = init_datasets(s)
    root = tmp_path / "datasets"
    assert len(written) == 19 and not kept
    assert sorted(p.stem for p in (root / "archetypes").glob("*.json")) == sorted(BASE)
    data = json.loads((root / "archetypes" / "pirate.json").read_text())
    assert data["name"] == "pirate" and data["system_prompts"] == ARCHETYPES["pirate"][2]
    lines = (root / "questions.jsonl").read_text().splitlines()
    assert [json.loads(x)["question"] for x in lines] == [q for _, q in QUESTIONS]

    # A user's edit survives a second init; --force regenerates.
    edited = dict(data, system_prompts=["You are a pirate who only says arr, every time."])
    (root / "archetypes" / "pirate.json").write_text(json.dumps(edited))
    written, kept = init_datasets(s)
    assert not written and len(kept) == 19
    assert load_archetype(s, "pirate")["system_prompts"] == edited["system_prompts"]
    written, _ = init_datasets(s, force=True)
    assert len(written) == 19
    assert load_archetype(s, "pirate")["system_prompts"] == ARCHETYPES["pirate"][2]


def test_readers(tmp_path):
    s = ext_settings(tmp_path)
    init_datasets(s)
    assert archetype_names(s) == sorted(BASE)
    assert load_assistant_prompts(s) == ASSISTANT_PROMPTS
    assert load_questions(s, 3) == [q for _, q in QUESTIONS[:3]]
    with pytest.raises(DatasetError, match="unknown archetype 'nope' \\(available: conspiracy"):
        load_archetype(s, "nope")
    (tmp_path / "datasets" / "archetypes" / "broken.json").write_text("{not json")
    with pytest.raises(DatasetError, match="broken.json: not valid JSON"):
        load_archetype(s, "broken")
    (tmp_path / "datasets" / "questions.jsonl").write_text('{"q": 1}\n')
    with pytest.raises(DatasetError, match="questions.jsonl:1: expected"):
        load_questions(s)
