"""`persona-steer tune`'s argument errors: one line, exit 2, before any server is asked."""
from __future__ import annotations

import pytest

from persona_steer.cli import main


@pytest.mark.parametrize("argv,message", [
    (["tune"], "give a persona or trait NAME, or --all"),
    (["tune", "pirate", "--all"], "--all tunes every persona and trait; leave out NAME"),
    (["tune", "pirate", "--strengths", "1,x"], "--strengths: give numbers separated by commas"),
    (["tune", "pirate", "--strengths", "0,1"], "every strength must be a finite number above 0"),
    (["tune", "pirate", "--questions", "0"], "--questions must be at least 1"),
])
def test_bad_arguments_are_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv + ["--url", "http://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {message}" or (err.startswith("error: ") and message in err)
    assert "\n" not in err


def test_no_server_is_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["tune", "pirate", "--url", "http://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "start one with `persona-steer serve`" in err
