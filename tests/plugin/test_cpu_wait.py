"""steering_plugin.cpu_wait: on CPU the engine processes sleep, not spin, while they wait for
each other (see the module's docstring for the measured reason)."""
from __future__ import annotations

import os

import pytest

from persona_steer.config import load_config
from steering_plugin import cpu_wait
from steering_plugin.engine import engine_kwargs


@pytest.mark.parametrize("raw, seconds", [(None, 0.0), ("", 0.0), ("20", 20e-6), ("2.5", 2.5e-6),
                                          ("0", 0.0), ("-3", 0.0), ("many", 0.0)])
def test_wait_seconds_reads_the_environment(monkeypatch, raw, seconds):
    if raw is None:
        monkeypatch.delenv(cpu_wait.ENV, raising=False)
    else:
        monkeypatch.setenv(cpu_wait.ENV, raw)
    assert cpu_wait.wait_seconds() == pytest.approx(seconds)


def test_install_replaces_the_spin_with_a_sleep(monkeypatch):
    from vllm.distributed.device_communicators import shm_broadcast
    original = shm_broadcast.sched_yield
    monkeypatch.setattr(shm_broadcast, "sched_yield", original)   # restored after the test
    monkeypatch.setenv(cpu_wait.ENV, "0")
    assert cpu_wait.install() is False
    assert shm_broadcast.sched_yield is original
    monkeypatch.setenv(cpu_wait.ENV, "30")
    assert cpu_wait.install() is True
    patched = shm_broadcast.sched_yield
    assert patched is not original and patched.steering_cpu_wait == pytest.approx(30e-6)
    slept = []
    monkeypatch.setattr(cpu_wait.time, "sleep", slept.append)
    patched()
    assert slept == [pytest.approx(30e-6)]
    assert cpu_wait.install() is True                      # idempotent: same value, one patch
    assert shm_broadcast.sched_yield.steering_cpu_wait == pytest.approx(30e-6)


def test_engine_kwargs_hands_the_setting_to_the_engine_processes(monkeypatch, tmp_path):
    monkeypatch.delenv(cpu_wait.ENV, raising=False)
    s = load_config(overrides={"model.cpu_wait_us": 45, "paths.vectors": str(tmp_path)},
                    environ={})
    engine_kwargs(s, "some/model")
    assert os.environ[cpu_wait.ENV] == "45.0"
    s = load_config(overrides={"model.cpu_wait_us": 0, "paths.vectors": str(tmp_path)},
                    environ={})
    engine_kwargs(s, "some/model")
    assert cpu_wait.wait_seconds() == 0.0


def test_cpu_wait_must_be_a_sane_number(tmp_path):
    from persona_steer.config import ConfigError
    for bad in (-1, 1e9, "soon"):
        with pytest.raises(ConfigError, match="cpu_wait_us"):
            load_config(overrides={"model.cpu_wait_us": bad}, environ={})


def test_extraction_rollout_engine_gets_the_wait_too(monkeypatch, tmp_path):
    import vllm

    from extraction.rollouts import VLLMBackend
    seen = {}

    class FakeLLM:   # records what the engine's processes would inherit
        def __init__(self, **kw):
            seen["env"] = os.environ.get(cpu_wait.ENV)

    monkeypatch.setattr(vllm, "LLM", FakeLLM)
    monkeypatch.delenv(cpu_wait.ENV, raising=False)
    s = load_config(overrides={"model.cpu_wait_us": 33, "paths.vectors": str(tmp_path)},
                    environ={})
    VLLMBackend(s, "some/model")
    assert seen["env"] == "33.0"
