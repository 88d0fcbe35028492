"""Start `persona-steer serve` on the tiny random Qwen3 for a benchmark: a temporary config on a
free loopback port, started and stopped by persona_steer.server_process (the launcher the
tests and the toy proof use)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from persona_steer import server_process  # noqa: E402  (after the path insert)

STARTUP_TIMEOUT_S = 1800    # a busy machine's first start compiles for minutes


def tiny_model() -> str:
    from persona_steer.testmodels import build_random_qwen3
    return str(build_random_qwen3(ROOT / ".cache" / "models" / "tiny", "tiny"))


def start_server(tmp: Path, **model_settings) -> tuple[subprocess.Popen, str]:
    """-> (process, base URL). `model_settings` go into the config's model section."""
    import yaml
    port = server_process.free_port()
    cfg = {"model": {"name": tiny_model(), "kv_cache_gib": 1, "max_num_seqs": 64,
                     **model_settings},
           "server": {"host": "127.0.0.1", "port": port},
           "paths": {"vectors": str(tmp / "vectors"), "jobs": str(tmp / "jobs"),
                     "cache": str(ROOT / ".cache")}}
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "config.yaml").write_text(yaml.safe_dump(cfg))
    launched = server_process.spawn(tmp / "config.yaml", f"http://127.0.0.1:{port}",
                                    tmp / "server.log")
    try:
        launched.wait_healthy(STARTUP_TIMEOUT_S)
    except RuntimeError as err:
        launched.stop()
        raise SystemExit(str(err)) from None
    return launched.proc, launched.url


def stop_server(proc: subprocess.Popen) -> None:
    """SIGTERM to its process group (server, engine core), SIGKILL to what is left after 30 s."""
    server_process.stop(proc)
