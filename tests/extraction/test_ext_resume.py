"""A killed job resumes without redoing finished work; nothing half-written reaches vectors/.

Uses the HF rollout backend (greedy, so an interrupted and an uninterrupted run must agree)."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import torch

from extraction.jobs import run_persona_job
from persona_steer.config import PROJECT_ROOT
from persona_steer.store import VectorStore
from tests.extraction.conftest import ext_settings

OVR = {"extraction.num_questions": 3, "extraction.temperature": 0.0, "extraction.batch_size": 2,
       "extraction.max_new_tokens": 6}
N_CELLS = 5 + 6           # pirate prompts + assistant prompts, 3 questions each
KILL = textwrap.dedent("""
    import os, signal, sys
    from extraction.jobs import run_persona_job
    from tests.extraction.conftest import ext_settings
    from pathlib import Path
    stage, at = sys.argv[2], int(sys.argv[3])
    def progress(ev):
        if ev["stage"] == stage and ev["done"] >= at:
            os.kill(os.getpid(), signal.SIGKILL)       # as hard as a crash or `kill -9`
    s = ext_settings(Path(sys.argv[1]), **{OVR})
    run_persona_job(s, "pirate", archetype="pirate", rollout_backend="hf", rollout_chunk=3,
                    progress=progress)
""")


def _killed_run(root, stage: str, at: int) -> None:
    code = KILL.replace("{OVR}", repr(OVR))
    proc = subprocess.run([sys.executable, "-c", code, str(root), stage, str(at)],
                          cwd=str(PROJECT_ROOT), capture_output=True, text=True, timeout=600)
    assert proc.returncode == -9, proc.stderr[-2000:]


def _totals(events):
    out = {}
    for e in events:
        out.setdefault(e["stage"], e["total"])
    return out


def _vector_files(root):
    return sorted(str(p.relative_to(root)) for p in (root / "vectors").rglob("*") if p.is_file()) \
        if (root / "vectors").exists() else []


def test_resume_after_kill(tmp_path):
    root = tmp_path / "resumed"
    # 1) killed during rollouts, after 2 cells (chunks of one cell) were written
    _killed_run(root, "rollouts", 6)
    assert _vector_files(root) == []
    rollouts = list((root / "cache").glob("extraction/*/rollouts/*.json"))
    assert len(rollouts) == 2
    # 2) killed during activations, after the first 2 cells' forward passes
    _killed_run(root, "activations", 7)
    assert _vector_files(root) == []
    assert len(list((root / "cache").glob("extraction/*/rollouts/*.json"))) == N_CELLS
    assert len(list((root / "cache").glob("extraction/*/activations/*.safetensors"))) == 2
    assert not list((root / "cache").rglob(".*.tmp"))          # no temp file left behind
    # 3) resume: only the missing work is done
    events = []
    vec = run_persona_job(ext_settings(root, **OVR), "pirate", archetype="pirate",
                          rollout_backend="hf", progress=events.append)
    totals = _totals(events)
    assert totals["rollouts"] == 0 and totals["activations"] == (N_CELLS - 2) * 3
    assert _vector_files(root) == ["vectors/personas/pirate.safetensors"]

    # The resumed vector equals an uninterrupted run's.
    fresh = run_persona_job(ext_settings(tmp_path / "fresh", **OVR), "pirate", archetype="pirate",
                            rollout_backend="hf")
    torch.testing.assert_close(vec.vectors, fresh.vectors, atol=1e-5, rtol=1e-5)
    assert VectorStore(root / "vectors").load("persona", "pirate").content_hash() == \
        vec.content_hash()
    assert json.loads(vec.metadata["num_responses"]) == {"persona": 15, "assistant": 18}
