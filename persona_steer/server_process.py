"""`persona-steer serve` as a child process: start it on a config the caller wrote, wait until
/health answers 200, stop it. The one launcher that the test fixtures (tests/conftest.py), the
benchmarks (benchmarks/local_server.py) and the toy proof (`persona-steer toy eval` without
--url, toy/eval.py) share.

The server runs in a session of its own, as under a supervisor, so stop() reaches its whole
process group (the API process and the vLLM engine core)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import httpx

from persona_steer.config import PROJECT_ROOT

HEALTH_POLL_S = 0.5       # how often /health is asked while the engine starts


def free_port() -> int:
    """A loopback port nothing listens on now (the server binds it a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli_command() -> list[str]:
    """This interpreter's `persona-steer`, or `python -m persona_steer.cli` without the script."""
    exe = Path(sys.executable).parent / "persona-steer"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "persona_steer.cli"]


def server_env() -> dict[str, str]:
    """This environment without PERSONA_STEER_* (the config file alone decides), and a 1 GiB
    CPU KV cache unless VLLM_CPU_KVCACHE_SPACE says otherwise."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERSONA_STEER_")}
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    return env


@dataclass
class ServerProcess:
    proc: subprocess.Popen
    url: str
    log_path: Path

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def wait_healthy(self, timeout_s: float,
                     on_answer: Callable[[int, Any], None] | None = None) -> None:
        """Until /health answers 200. `on_answer(status, body)` sees every answer on the way
        (503 with the state while the engine starts). RuntimeError, with the log's tail, when
        the process exits or `timeout_s` passes; the process is the caller's to stop()."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode} (log "
                                   f"{self.log_path}):\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not healthy after {timeout_s:g}s (log "
                                   f"{self.log_path}):\n{self.log_tail()}")
            try:
                r = httpx.get(self.url + "/health", timeout=5)
            except httpx.TransportError:
                pass                  # not listening yet
            else:
                if on_answer is not None:
                    json_body = r.headers.get("content-type", "").startswith("application/json")
                    on_answer(r.status_code, r.json() if json_body else r.text)
                if r.status_code == 200:
                    return
            time.sleep(HEALTH_POLL_S)   # polling a condition with a deadline, not a guess

    def stop(self) -> None:
        stop(self.proc)


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's process group, SIGKILL to what is left after 30 s (an engine
    core whose parent is gone). Does nothing if it already exited."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


def spawn(config_path: Path, url: str, log_path: Path, *, command: list[str] | None = None,
          cwd: Path = PROJECT_ROOT) -> ServerProcess:
    """Start (don't wait for) `persona-steer --config <config_path> serve`, stdout and stderr
    into `log_path`. `url` is where the config makes it listen. `command`: another way to start
    it, taking `--config <path>` after it (e.g. `python -m server`)."""
    argv = (cli_command() + ["--config", str(config_path), "serve"] if command is None
            else [*command, "--config", str(config_path)])
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=server_env(),
                                cwd=str(cwd), start_new_session=True)
    return ServerProcess(proc, url, log_path)
