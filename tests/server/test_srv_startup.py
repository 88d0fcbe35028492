"""A server whose engine cannot start keeps answering: /health and generation say 503 with the
reason, the REST API that needs no engine still works, and `serve` refuses bad flags."""
from __future__ import annotations

import json
import subprocess
import time

import httpx
import yaml

from tests.conftest import _cli, _stop, free_port


def test_engine_failure_is_reported_as_503(tmp_path):
    bogus = tmp_path / "not-a-model"
    bogus.mkdir()
    (bogus / "config.json").write_text(json.dumps({"model_type": "nothing-real"}))
    port = free_port()
    cfg = {"model": {"name": str(bogus)}, "server": {"port": port},
           "paths": {"vectors": str(tmp_path / "v"), "jobs": str(tmp_path / "j"),
                     "cache": str(tmp_path / "c")}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    log = open(tmp_path / "log.txt", "wb")
    proc = subprocess.Popen(_cli() + ["--config", str(tmp_path / "config.yaml"), "serve"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        body = None
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "log.txt").read_text()[-3000:]
            try:
                r = httpx.get(url + "/health", timeout=5)
                body = r.json()
                if "failed" in body["error"]["message"]:
                    break
            except (httpx.TransportError, KeyError):
                pass
            time.sleep(0.5)
        assert r.status_code == 503 and body["error"]["code"] == "engine_not_ready", body
        assert "engine failed to start" in body["error"]["message"]
        chat = httpx.post(url + "/v1/chat/completions",
                          json={"messages": [{"role": "user", "content": "hi"}]}, timeout=10)
        assert chat.status_code == 503 and "failed" in chat.json()["error"]["message"]
        st = httpx.get(url + "/api/status", timeout=10).json()
        assert st["engine"] == "failed" and st["engine_error"]
        assert httpx.get(url + "/api/personas", timeout=10).json()["personas"] == []
    finally:
        _stop(proc)


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
