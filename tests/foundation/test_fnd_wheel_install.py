"""A non-editable install runs outside the checkout: the project built as a wheel, installed into
a fresh virtual environment, used from an empty folder (`config show`, `init`, `serve` on the toy
model and one steered request), with everything it writes under that folder.

The fresh venv takes its third-party packages from the test venv (a .pth line), so the test
installs only the wheel and downloads nothing; the wheel's own copy of the project comes first.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import httpx
import pytest
import yaml

from persona_steer.config import PROJECT_ROOT
from persona_steer.toy_demo import demo_default_strengths
from tests.conftest import STARTUP_TIMEOUT_S, free_port

pytestmark = pytest.mark.engine


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "-w", str(tmp / "dist"), str(PROJECT_ROOT)],
                   check=True, timeout=600, cwd=str(tmp))
    wheel, = (tmp / "dist").glob("persona_steer-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"),
                    "install", "-q", "--no-deps", "--disable-pip-version-check", str(wheel)],
                   check=True, timeout=600)
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c",
                                "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "test_venv_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def test_wheel_serves_from_an_empty_folder(wheel_venv, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    exe = wheel_venv / "bin" / "persona-steer"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERSONA_STEER_")}
    env.pop("PYTHONPATH", None)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    installed = files_under(wheel_venv)

    def cli(*args, timeout=300):
        return subprocess.run([str(exe), *args], cwd=str(work), env=env, capture_output=True,
                              text=True, timeout=timeout)

    where = subprocess.run([str(wheel_venv / "bin" / "python"), "-c",
                            "import persona_steer, server; print(persona_steer.__file__); "
                            "print(server.__file__)"],
                           cwd=str(work), env=env, capture_output=True, text=True, check=True)
    assert all(line.startswith(str(wheel_venv)) for line in where.stdout.split()), where.stdout

    shown = cli("config", "show")
    assert shown.returncode == 0, shown.stderr
    assert f"# config file: {work / 'config.yaml'} (not found: defaults)" in shown.stdout
    assert f"# relative paths resolve under: {work}" in shown.stdout
    assert yaml.safe_load(shown.stdout)["model"]["name"] == "builtin:toy-persona"

    init = cli("init")
    assert init.returncode == 0, init.stderr
    assert any((work / "datasets").rglob("*.json")), init.stdout

    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen([str(exe), "serve", "--set", f"server.port={port}"], cwd=str(work),
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "server not healthy in time"
            try:
                if httpx.get(url + "/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        r = httpx.post(url + "/v1/chat/completions", timeout=300, json={
            "model": "builtin:toy-persona", "persona": "pirate", "max_tokens": 8,
            "temperature": 0, "messages": [{"role": "user", "content": "Tell me about the sea."}]})
        assert r.status_code == 200, r.text
        # the shipped demo pirate carries its measured strength (no strength in the request)
        assert r.json()["steering"]["personas"] == {"pirate": demo_default_strengths()["pirate"]}
        assert r.json()["choices"][0]["message"]["content"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()

    assert (work / "vectors" / "personas" / "pirate.safetensors").is_file()
    assert files_under(wheel_venv) == installed     # nothing written into the installed package
