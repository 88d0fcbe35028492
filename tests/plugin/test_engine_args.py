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


def test_parallel_sizes_reach_the_engine_and_cpu_workers_get_their_own_cores(monkeypatch, tmp_path):
    """model.tensor_parallel_size / pipeline_parallel_size are engine arguments; on CPU several
    workers get one core list each (vLLM's auto binding wants a NUMA node per worker), and a later
    one-worker engine in the same process does not inherit that list."""
    from steering_plugin import engine
    from steering_plugin.engine import CPU_BIND_ENV, cpu_thread_binding, engine_kwargs

    monkeypatch.delenv(CPU_BIND_ENV, raising=False)
    monkeypatch.delenv("PERSONA_STEER_CPU_BIND", raising=False)
    monkeypatch.setattr(engine, "_on_cpu", lambda: True)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 5})
    assert cpu_thread_binding(2) == "0,1|2,3" and cpu_thread_binding(1) == "0,1,2,3,5"
    with pytest.raises(ConfigError, match="6 worker processes"):
        cpu_thread_binding(6)

    def settings(**model):
        return load_config(overrides={"paths.vectors": str(tmp_path),
                                      **{f"model.{k}": v for k, v in model.items()}}, environ={})

    kw = engine_kwargs(settings(tensor_parallel_size=2, pipeline_parallel_size=2), "m")
    assert (kw["tensor_parallel_size"], kw["pipeline_parallel_size"]) == (2, 2)
    assert os.environ[CPU_BIND_ENV] == "0|1|2|3"
    kw = engine_kwargs(settings(), "m")
    assert (kw["tensor_parallel_size"], kw["pipeline_parallel_size"]) == (1, 1)
    assert CPU_BIND_ENV not in os.environ, "our own binding is not left for a one-worker engine"
    monkeypatch.setenv(CPU_BIND_ENV, "nobind")   # one set outside is never touched
    engine_kwargs(settings(tensor_parallel_size=2), "m")
    assert os.environ[CPU_BIND_ENV] == "nobind"
    with pytest.raises(ConfigError, match="enforce_eager"):
        engine_kwargs(settings(pipeline_parallel_size=2, enforce_eager=True), "m")
    with pytest.raises(ConfigError, match="model.tensor_parallel_size"):
        settings(tensor_parallel_size=0)
