"""Layering: what the running server imports, and no import cycles among the project's packages."""
from __future__ import annotations

import subprocess
import sys

from persona_steer.config import PROJECT_ROOT


def test_server_app_does_not_import_the_toy_tooling(tmp_path):
    # the toy trainer, corpus and evaluator are a development tool; the server needs only
    # persona_steer.toy_demo. A fresh interpreter (this one may have imported them) imports the
    # app and seeds an empty store on the toy model, as a first start does.
    code = f"""
import sys
import server.app
from persona_steer.config import load_config
from persona_steer.store import VectorStore
settings = load_config(None, overrides=["model.name=builtin:toy-persona"], environ={{}})
print(server.app.seed_demo_vectors(settings, VectorStore({str(tmp_path / "vectors")!r})))
print(sorted(m for m in sys.modules if m.startswith("extraction.toy")))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    seeded, toy_modules = out.stdout.split("\n")[:2]
    assert int(seeded) > 0
    assert toy_modules == "[]", toy_modules
