"""A server on the shipped toy persona model, started once per session for the proof tests."""
from __future__ import annotations

import pytest

from persona_steer.config import PROJECT_ROOT


@pytest.fixture(scope="session")
def toy_settings(tmp_path_factory):
    from persona_steer.config import load_config
    work = tmp_path_factory.mktemp("toy-eval")
    settings = load_config(PROJECT_ROOT / "config.yaml", overrides=[
        "model.name=builtin:toy-persona", f"paths.vectors={work / 'vectors'}",
        f"paths.datasets={work / 'datasets'}", f"paths.cache={PROJECT_ROOT / '.cache'}",
        "extraction.seed=0", "model.enforce_eager=true"], environ={})
    return settings, work


@pytest.fixture(scope="session")
def toy_server(toy_settings):
    from toy.eval import ToyServer
    settings, work = toy_settings
    srv = ToyServer(settings, work)
    try:
        yield srv
    finally:
        srv.stop()
