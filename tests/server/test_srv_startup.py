"""A server whose engine cannot start says why in one line on stderr (naming the config key)
and exits 2 for its supervisor; `serve` refuses bad flags the same way."""
from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import _cli, server_env, write_server_config


def _bogus_model(root):
    bogus = root / "not-a-model"
    bogus.mkdir()
    (bogus / "config.json").write_text(json.dumps({"model_type": "nothing-real"}))
    return str(bogus)


@pytest.mark.engine       # each case starts the server until its engine fails
@pytest.mark.parametrize("case", ["too-long", "not-a-model", "4bit-on-cpu"])
def test_engine_start_failure_is_one_line_naming_the_key_then_exit_2(tmp_path, tiny_model, case):
    """A supervisor sees the process exit 2 (not a server answering 503 forever), and the last
    line on stderr says what failed and which key to change."""
    if case == "too-long":     # the tiny model's context is 4096
        model, overrides, key = tiny_model, {"model": {"max_model_len": 8192}}, \
            "model.max_model_len"
    elif case == "4bit-on-cpu":    # in-flight quantization is GPU-only: refused before loading
        model, overrides, key = tiny_model, {"model": {"quantization": "4bit"}}, \
            "model.quantization"
    else:
        model, overrides, key = _bogus_model(tmp_path), {}, "model.name"
    write_server_config(tmp_path, model, overrides)
    r = subprocess.run(_cli() + ["--config", str(tmp_path / "config.yaml"), "serve"],
                       capture_output=True, text=True, env=server_env(), timeout=300)
    assert r.returncode == 2, r.stderr[-3000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: engine failed to start: ") and key in last, last
    if case == "too-long":
        assert "8192" in last and "4096" in last, last
    if case == "4bit-on-cpu":
        assert "pre-quantized 4-bit checkpoint" in last, last
        assert "Initializing a V1 LLM engine" not in r.stderr   # no engine, no weights loaded
    assert "Traceback" not in r.stderr.split("persona_steer.server")[-1]


def test_serve_refuses_bad_flags(tmp_path):
    r = subprocess.run(_cli() + ["serve", "--port", "99999"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error:") and "port" in r.stderr
    assert "Traceback" not in r.stderr


def test_engine_processes_sleep_between_steps_on_cpu(server):
    """The served engine's core and worker both run with the plugin's CPU wait (model.cpu_wait_us,
    default 20 us): without it they spin between steps and a client beside the server could be
    kept off the CPU for seconds (see steering_plugin/cpu_wait.py)."""
    log = server.log_path.read_text(errors="replace")
    lines = [l for l in log.splitlines() if "sleeps 20 us instead of spinning" in l]
    assert any("EngineCore" in l for l in lines), lines
    assert any("Worker" in l for l in lines), lines
