"""Both dataset layouts are read (ours and the original system's datasets/personas/), the files
used are always said, and built-in content standing in for a missing file is a warning."""
from __future__ import annotations

import json
import logging

import pytest

from extraction.archetypes import ARCHETYPES, ASSISTANT_PROMPTS, QUESTIONS
from extraction.datasets import (BUILT_IN, DatasetError, DatasetFiles, archetype_names,
                                 init_datasets, load_archetype, load_assistant_prompts,
                                 load_questions)
from tests.extraction.conftest import ext_settings

WIZARD = ["You are a grumpy wizard who mutters spells.", "You are an old wizard, cranky and vain."]


def _original_layout(root):
    """What the original's `persona-steer init` / web UI leave: jsonl prompts, one per line."""
    base = root / "datasets" / "personas"
    (base / "archetypes").mkdir(parents=True)
    (base / "archetypes" / "grumpy_wizard.jsonl").write_text("".join(
        json.dumps({"id": f"grumpy_wizard_prompt_{i}", "system_prompt": p}) + "\n"
        for i, p in enumerate(WIZARD, 1)))
    (base / "archetypes" / "sage.jsonl").write_text(
        json.dumps({"id": "sage_prompt_1", "system_prompt": "You are an ancient riddler."}) + "\n")
    (base / "extraction_questions.jsonl").write_text(
        "".join(json.dumps({"question": q}) + "\n" for q in ("Why is grass green?", "What is tea?")))
    return base


def test_original_layout_is_read_and_named(tmp_path):
    s = ext_settings(tmp_path)
    base = _original_layout(tmp_path)
    files = DatasetFiles()
    assert archetype_names(s) == ["grumpy_wizard", "sage"]
    assert load_archetype(s, "grumpy_wizard", files)["system_prompts"] == WIZARD
    sage = load_archetype(s, "sage", files)
    assert sage["system_prompts"] == ["You are an ancient riddler."]
    assert sage["description"] == ARCHETYPES["sage"][1]     # its files carry prompts only
    assert load_questions(s, None, files) == ["Why is grass green?", "What is tea?"]
    assert files.used["archetype grumpy_wizard"] == str(base / "archetypes" / "grumpy_wizard.jsonl")
    assert files.used["questions"] == str(base / "extraction_questions.jsonl")
    # the original has no assistant prompt file: the built-in ones stand in, with a warning
    assert load_assistant_prompts(s, files) == ASSISTANT_PROMPTS
    assert files.used["assistant prompts"] == BUILT_IN
    assert len(files.warnings) == 1 and "assistant prompts" in files.warnings[0]
    assert "warning: assistant prompts: no " in "\n".join(files.lines())


def test_our_layout_is_read_and_named_without_warnings(tmp_path):
    s = ext_settings(tmp_path)
    init_datasets(s)
    files = DatasetFiles()
    load_archetype(s, "pirate", files)
    load_assistant_prompts(s, files)
    load_questions(s, 3, files)
    root = tmp_path / "datasets"
    assert files.used == {"archetype pirate": str(root / "archetypes" / "pirate.json"),
                          "assistant prompts": str(root / "assistant.json"),
                          "questions": str(root / "questions.jsonl")}
    assert files.warnings == []


def test_both_layouts_ours_wins_and_init_does_not_shadow_theirs(tmp_path):
    s = ext_settings(tmp_path)
    base = _original_layout(tmp_path)
    written, kept = init_datasets(s)
    # init writes what neither layout has, and keeps the original's files in use
    assert base / "extraction_questions.jsonl" in kept
    assert base / "archetypes" / "sage.jsonl" in kept
    assert not (tmp_path / "datasets" / "archetypes" / "sage.json").exists()
    assert (tmp_path / "datasets" / "archetypes" / "pirate.json") in written
    files = DatasetFiles()
    assert load_questions(s, None, files) == ["Why is grass green?", "What is tea?"]
    assert load_archetype(s, "sage", files)["system_prompts"] == ["You are an ancient riddler."]
    assert set(archetype_names(s)) == set(ARCHETYPES) | {"grumpy_wizard"}
    # a file of ours for the same archetype wins over theirs, and says so
    ours = tmp_path / "datasets" / "archetypes" / "sage.json"
    ours.write_text(json.dumps({"name": "sage", "system_prompts": ["You are a sage of ours."]}))
    assert load_archetype(s, "sage", files)["system_prompts"] == ["You are a sage of ours."]
    assert files.used["archetype sage"] == str(ours)


def test_nothing_on_disk_is_built_in_with_warnings(tmp_path, caplog):
    s = ext_settings(tmp_path)
    files = DatasetFiles()
    with caplog.at_level(logging.WARNING, logger="persona_steer.datasets"):
        assert load_archetype(s, "pirate", files)["system_prompts"] == ARCHETYPES["pirate"][2]
        assert load_questions(s, 2, files) == [q for _, q in QUESTIONS[:2]]
        load_assistant_prompts(s, files)
    assert set(files.used.values()) == {BUILT_IN} and len(files.warnings) == 3
    assert "extraction_questions.jsonl" in files.warnings[1]   # names both places it looked
    assert len([r for r in caplog.records if "built-in content stands in" in r.message]) == 3


def test_bad_original_file_is_one_clear_error(tmp_path):
    s = ext_settings(tmp_path)
    base = _original_layout(tmp_path)
    (base / "archetypes" / "sage.jsonl").write_text('{"prompt": "x"}\n')
    with pytest.raises(DatasetError, match=r"sage\.jsonl:1: expected \{\"system_prompt\": ...\}"):
        load_archetype(s, "sage")


def test_a_job_says_which_files_it_used(tmp_path):
    """A real (tiny, HF) extraction on the original layout: the progress notes name the files
    and warn about the stand-in, and the vector records them."""
    from extraction.jobs import run_persona_job

    s = ext_settings(tmp_path)
    base = _original_layout(tmp_path)
    notes = []
    vec = run_persona_job(s, "grumpy_wizard", archetype="grumpy_wizard", rollout_backend="hf",
                          progress=lambda ev: ev["stage"] == "datasets" and notes.append(ev["message"]))
    assert f"dataset archetype grumpy_wizard: {base / 'archetypes' / 'grumpy_wizard.jsonl'}" in notes
    assert f"dataset questions: {base / 'extraction_questions.jsonl'}" in notes
    assert any(n.startswith("warning: assistant prompts: no ") for n in notes)
    assert vec.meta_json("dataset_files")["questions"] == str(base / "extraction_questions.jsonl")
    assert vec.meta_json("prompts") == WIZARD
