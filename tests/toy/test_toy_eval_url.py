"""`persona-steer toy eval --url`: the proof sends vector names, so a server it did not start
must read this run's vector folder; otherwise the run stops at once with a clear error."""
from __future__ import annotations

import subprocess

import pytest

from toy.eval import ServerClient, ServerStoreMismatch, check_shared_store
from persona_steer.config import PROJECT_ROOT, load_config
from tests.conftest import _cli


def test_a_server_reading_the_runs_folder_passes_and_the_probe_is_removed(toy_server, toy_settings):
    settings, _ = toy_settings
    client = ServerClient(toy_server.url)
    try:
        check_shared_store(settings, client)
    finally:
        client.close()
    assert not list(settings.path("vectors").rglob("toy-eval-probe*"))


def test_a_server_with_another_folder_is_refused(toy_server, tmp_path):
    settings = load_config(PROJECT_ROOT / "config.yaml", overrides=[
        "model.name=builtin:toy-persona", f"paths.vectors={tmp_path / 'vectors'}"], environ={})
    client = ServerClient(toy_server.url)
    try:
        with pytest.raises(ServerStoreMismatch, match="does not use this run's vector folder"):
            check_shared_store(settings, client)
    finally:
        client.close()
    assert not list((tmp_path / "vectors").rglob("*.safetensors"))


def test_the_cli_says_so_in_one_line_before_any_work(toy_server, tmp_path):
    out = tmp_path / "run"
    r = subprocess.run(_cli() + ["toy", "eval", "--url", toy_server.url, "--out", str(out)],
                       capture_output=True, text=True, timeout=300, cwd=str(PROJECT_ROOT))
    assert r.returncode == 2, r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the server at ") and "--set paths.vectors=" in last
    assert "Traceback" not in r.stderr
    assert not list(out.rglob("*.safetensors"))              # no probe left, nothing extracted
