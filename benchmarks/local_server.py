"""Start `persona-steer serve` on the tiny random Qwen3 for a benchmark: a temporary config on a
free loopback port, its own session (as a daemon would run), wait for /health 200."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def tiny_model() -> str:
    from persona_steer.testmodels import build_random_qwen3
    return str(build_random_qwen3(ROOT / ".cache" / "models" / "tiny", "tiny"))


def start_server(tmp: Path, **model_settings) -> tuple[subprocess.Popen, str]:
    """-> (process, base URL). `model_settings` go into the config's model section."""
    import yaml
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = {"model": {"name": tiny_model(), "kv_cache_gib": 1, "max_num_seqs": 64,
                     **model_settings},
           "server": {"host": "127.0.0.1", "port": port},
           "paths": {"vectors": str(tmp / "vectors"), "jobs": str(tmp / "jobs"),
                     "cache": str(ROOT / ".cache")}}
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "config.yaml").write_text(yaml.safe_dump(cfg))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERSONA_STEER_")}
    exe = Path(sys.executable).parent / "persona-steer"
    with open(tmp / "server.log", "wb") as log:
        proc = subprocess.Popen([str(exe), "--config", str(tmp / "config.yaml"), "serve"],
                                env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"server exited; see {tmp / 'server.log'}")
        try:
            if httpx.get(url + "/health", timeout=5).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.5)


def stop_server(proc: subprocess.Popen) -> None:
    """SIGTERM to its process group (server, engine core), SIGKILL after 30 s."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
