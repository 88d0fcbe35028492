"""The openai SDK contract tests (marked `sdk_contract`: streaming, persona as model id, errors,
extra_body fields, logprobs, the project's client) under both current SDK majors.

This session runs them with the locked major (3.x). Here they run once more, in a pytest
subprocess attached to this session's server, with the other major (2.x, pinned with hashes in
requirements/sdk-openai2.txt) installed into an overlay folder that shadows the locked SDK on
PYTHONPATH. The overlay is built once per lock file content and reused (.cache/sdk/).
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import openai
import pytest

from persona_steer.config import PROJECT_ROOT
from tests.conftest import ATTACH_ENV

pytestmark = pytest.mark.engine

REQUIREMENTS = PROJECT_ROOT / "requirements"
CONTRACT_TESTS = ["tests/server/test_srv_openai.py", "tests/clients/test_client_live.py"]


def locked_version(lock: Path, name: str) -> str:
    m = re.search(rf"^{re.escape(name)}==(\S+)", lock.read_text(), re.M)
    assert m, f"{name} is not pinned in {lock}"
    return m.group(1)


def sdk_overlay(lock: Path) -> Path:
    """A folder holding exactly `lock`'s packages, installed with --require-hashes; built once."""
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()[:16]
    target = PROJECT_ROOT / ".cache" / "sdk" / f"{lock.stem}-{digest}"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{lock.stem}-", dir=target.parent))
    try:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                        "--require-hashes", "--disable-pip-version-check", "--target",
                        str(building), "-r", str(lock)], check=True, timeout=600)
        building.rename(target)       # whole or not at all: a half-built overlay is never reused
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return target


def test_session_runs_the_locked_sdk():
    """`make test` installs the main lock: the contract tests in this session use its major."""
    assert openai.__version__ == locked_version(REQUIREMENTS / "cpu-test.txt", "openai")
    assert openai.__version__.split(".")[0] == "3"


def test_contract_tests_pass_on_openai_2(server, steer_vectors):
    overlay = sdk_overlay(REQUIREMENTS / "sdk-openai2.txt")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERSONA_STEER_")}
    env.update({"PYTHONPATH": os.pathsep.join([str(overlay), str(PROJECT_ROOT)]),
                ATTACH_ENV: server.to_json(), "PERSONA_STEER_TEST_SERVER": server.base_url})
    probe = subprocess.run([sys.executable, "-c", "import openai; print(openai.__version__)"],
                           env=env, capture_output=True, text=True, timeout=120)
    version = probe.stdout.strip()
    assert version == locked_version(REQUIREMENTS / "sdk-openai2.txt", "openai"), probe.stderr
    assert version.startswith("2.")

    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "-m", "sdk_contract", *CONTRACT_TESTS],
                         env=env, cwd=str(PROJECT_ROOT), capture_output=True, text=True,
                         timeout=900)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-4000:]
    passed = re.search(r"(\d+) passed", out)
    assert passed and int(passed.group(1)) >= 15, out[-2000:]
    assert "failed" not in out.splitlines()[-1]
