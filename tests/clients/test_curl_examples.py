"""clients/curl_examples.sh (the curl examples of docs/api.md) against the live server."""
from __future__ import annotations

import json
import os
import subprocess

from persona_steer.config import PROJECT_ROOT

SCRIPT = PROJECT_ROOT / "clients" / "curl_examples.sh"


def run(live, *names: str, env: dict | None = None) -> subprocess.CompletedProcess:
    extra = env or {}
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERSONA_STEER_")}
    env.update(extra)
    if live.api_key:
        env["PERSONA_STEER_API_KEY"] = live.api_key
    env.update(PERSONA="alpha", TRAIT="calm")
    return subprocess.run(["bash", str(SCRIPT), live.url, *names], capture_output=True,
                          text=True, env=env, timeout=600, cwd=str(PROJECT_ROOT))


def test_default_tour_runs_every_example(live, client):
    proc = run(live)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shown = proc.stderr
    for path in ("/health", "/api/status", "/v1/models", "/api/personas", "/api/traits",
                 "/api/personas/alpha/unload", "/api/personas/alpha/load",
                 "/api/personas/alpha/vector", "/api/personas/alpha_copy/vector",
                 "/api/vectors/similarity", "/api/vectors/equalize", "/api/steering-scale",
                 "/v1/completions",
                 "/api/chat", "/v1/chat/completions"):
        assert path in shown, path
    out = proc.stdout
    assert '"persona:alpha"' in out                            # models list
    assert "data: [DONE]" in out                               # the SSE example streamed
    assert "unknown persona 'no_such_persona'" in out          # the error example
    assert '"names":["alpha_copy","alpha_copy2"]' in out.replace(" ", "")   # equalized the copies
    names = [p["name"] for p in client.list_personas()]
    assert "alpha_copy" not in names and "alpha_copy2" not in names        # cleaned up
    assert "alpha" in client.status()["loaded"]["personas"]


def test_single_examples_and_job(live, client):
    proc = run(live, "chat", "chat_persona_model")
    assert proc.returncode == 0, proc.stderr
    first = json.loads(proc.stdout.strip().splitlines()[0])
    assert first["steering"]["personas"] == {"alpha": 0.8}
    assert first["steering"]["traits"] == {"calm": 0.4}
    proc = run(live, "create_trait", env={"NEW_TRAIT": "curl_job"})
    assert proc.returncode == 0, proc.stderr
    job = json.loads(proc.stdout)["job"]
    assert job["vector_name"] == "curl_job"
    proc = run(live, "cancel_job", "job", "job_events", env={"JOB": job["id"]})
    assert proc.returncode == 0, proc.stderr
    cancelled, got, events = proc.stdout.strip().split("\n", 2)
    assert json.loads(cancelled)["status"] == "cancelled"
    assert json.loads(got)["status"] == "cancelled"
    assert "event: cancelled" in events and '"status": "cancelled"' in events
    assert run(live, "job").returncode != 0          # no JOB: the script refuses (set -u)
