"""Settings that reach vLLM through the environment its engine processes inherit."""
from __future__ import annotations

import os

import pytest

from persona_steer.config import ConfigError, load_config
from steering_plugin.engine import RUNNER_ENV, export_engine_env


@pytest.mark.parametrize("runner, expected", [("v1", "0"), ("v2", "1"), ("auto", "1")])
def test_model_runner_setting_picks_vllms_runner(monkeypatch, tmp_path, runner, expected):
    """GPU engines run the V1 runner, the path the tests exercise, unless config says otherwise;
    auto leaves the choice to vLLM and to a variable set outside (here: 1)."""
    monkeypatch.setenv(RUNNER_ENV, "1")
    settings = load_config(overrides={"model.model_runner": runner,
                                      "paths.vectors": str(tmp_path)}, environ={})
    export_engine_env(settings)
    assert os.environ.get(RUNNER_ENV) == expected


def test_default_runner_is_v1_and_bad_values_are_refused():
    assert load_config(environ={}).model.model_runner == "v1"
    with pytest.raises(ConfigError, match="model.model_runner"):
        load_config(overrides={"model.model_runner": "v3"}, environ={})
