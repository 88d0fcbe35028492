"""deploy/nginx.conf rendered for a test: the compose service names become loopback ports and
nginx runs unprivileged from a temp folder (its own prefix, pid, logs and temp paths), as a
child process that does not daemonize. Used by the `nginx -t` check (tests/foundation/
test_fnd_deploy_validate.py) and the two-replica test (tests/server/test_srv_replicas.py)."""
from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Iterator

import httpx

from persona_steer.config import PROJECT_ROOT

NGINX_CONF = PROJECT_ROOT / "deploy" / "nginx.conf"
UPSTREAM_HEADER = "X-Test-Upstream"     # added by the test's main config only: who served it


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()),
                                         None)


def render_site(replica_ports: dict[str, int], listen_port: int) -> str:
    """deploy/nginx.conf with `server steer-a:8000` -> 127.0.0.1:<port> per service and the
    listen port moved to loopback. Everything else is the file as shipped."""
    text = NGINX_CONF.read_text()
    services = set(re.findall(r"server ([\w-]+):\d+", text))
    assert services == set(replica_ports), (services, replica_ports)
    text = re.sub(r"server ([\w-]+):\d+",
                  lambda m: f"server 127.0.0.1:{replica_ports[m.group(1)]}", text)
    text, n = re.subn(r"listen 80;", f"listen 127.0.0.1:{listen_port};", text)
    assert n == 1, "deploy/nginx.conf should listen on port 80 once"
    return text


def write_config(root: Path, replica_ports: dict[str, int], listen_port: int) -> Path:
    """<root>/nginx.conf: a main config (what Debian's /etc/nginx/nginx.conf would be) that
    includes the rendered site, with every path inside root."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "site.conf").write_text(render_site(replica_ports, listen_port))
    temp = {k: root / "tmp" / k for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")}
    for p in temp.values():
        p.mkdir(parents=True, exist_ok=True)
    main = root / "nginx.conf"
    main.write_text(f"""daemon off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {root}/access.log;
    client_body_temp_path {temp['client_body']};
    proxy_temp_path {temp['proxy']};
    fastcgi_temp_path {temp['fastcgi']};
    uwsgi_temp_path {temp['uwsgi']};
    scgi_temp_path {temp['scgi']};
    add_header {UPSTREAM_HEADER} $upstream_addr always;
    include {root}/site.conf;
}}
""")
    return main


def nginx_argv(root: Path, *extra: str) -> list[str]:
    # -e: the startup error log too (the compiled-in /var/log/nginx/error.log may be unwritable)
    return [nginx_binary(), "-p", str(root), "-c", str(root / "nginx.conf"),
            "-e", str(root / "error.log"), *extra]


def check_config(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(nginx_argv(root, "-t"), capture_output=True, text=True, timeout=60)


@contextlib.contextmanager
def running_nginx(root: Path, replica_ports: dict[str, int], listen_port: int,
                  timeout_s: float = 30) -> Iterator[str]:
    """Start nginx (a non-daemon child) in front of the replicas; yields its base URL once it
    accepts connections; stopped (SIGQUIT, graceful, then kill) at the end."""
    write_config(root, replica_ports, listen_port)
    with open(root / "stderr.log", "wb") as err:
        proc = subprocess.Popen(nginx_argv(root), stdout=subprocess.DEVNULL, stderr=err)
    url = f"http://127.0.0.1:{listen_port}"
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"nginx exited with {proc.returncode}: "
                                   f"{(root / 'error.log').read_text(errors='replace')[-2000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError("nginx did not accept connections")
            try:
                httpx.get(url + "/health", timeout=5)    # any answer: nginx is listening
                break
            except httpx.TransportError:
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
