"""The locks in requirements/ (made by `make lock`) are what CI tests and what users install:
complete for pyproject.toml, inside its ranges, hashed, consistent between `serve` and `test`,
and equal to the versions this test session runs on."""
from __future__ import annotations

import re
import tomllib
from importlib import metadata

import pytest
from packaging.requirements import Requirement

from persona_steer.config import PROJECT_ROOT

REQ = PROJECT_ROOT / "requirements"
PYPROJECT = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
DEPS = PYPROJECT["project"]["dependencies"]
EXTRAS = PYPROJECT["project"]["optional-dependencies"]
LOCKS = {"cpu.txt": ["cpu"], "cpu-test.txt": ["cpu", "test"],
         "gpu.txt": ["gpu"], "gpu-test.txt": ["gpu", "test"]}
CPU_LEFT_OUT = {"torchvision", "torchaudio", "torchcodec"}   # see scripts/setup.sh


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(lock: str) -> dict[str, str]:
    text = (REQ / lock).read_text()
    return {norm(m.group(1)): m.group(2)
            for m in re.finditer(r"^([A-Za-z0-9_.-]+)==(\S+)", text, re.M)}


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_lock_pins_every_requirement_inside_its_range(lock):
    pinned = pins(lock)
    wanted = [Requirement(r) for r in DEPS + [r for e in LOCKS[lock] for r in EXTRAS[e]]]
    wanted += [Requirement(r) for r in PYPROJECT["build-system"]["requires"]]
    for req in wanted:
        name = norm(req.name)
        assert name in pinned, f"{lock} lacks {req.name}: run make lock"
        assert req.specifier.contains(pinned[name], prereleases=True), \
            f"{lock}: {name}=={pinned[name]} is outside pyproject's {req}: run make lock"


@pytest.mark.parametrize("lock", sorted(LOCKS) + ["sdk-openai2.txt"])
def test_every_pin_is_hashed_and_the_file_says_how_it_was_made(lock):
    text = (REQ / lock).read_text()
    entries = re.split(r"\n(?=[A-Za-z0-9_.-]+==)", text.split("\n", 1)[1])
    for entry in entries[1:]:
        assert "--hash=sha256:" in entry, entry.splitlines()[0]
    assert "#    make lock" in text


@pytest.mark.parametrize("flavour", ["cpu", "gpu"])
def test_serve_and_test_locks_agree(flavour):
    """make serve and make test share one venv: every runtime pin equals the test lock's."""
    runtime, full = pins(f"{flavour}.txt"), pins(f"{flavour}-test.txt")
    assert runtime.items() <= full.items(), sorted(runtime.items() - full.items())


def hashes(lock: str, name: str) -> set[str]:
    pattern = rf"^{name}==\S+ \\\n((?:    --hash=\S+(?: \\)?\n)+)"
    entry = re.search(pattern, (REQ / lock).read_text(), re.M)
    return set(re.findall(r"sha256:(\w+)", entry.group(1)))


def test_cpu_locks_leave_out_the_cuda_extras_and_gpu_locks_keep_cuda_torch():
    for lock in ("cpu.txt", "cpu-test.txt"):
        assert not CPU_LEFT_OUT & pins(lock).keys(), lock
        assert pins(lock)["torch"].endswith("+cpu")
    cpu_wheel = hashes("cpu-test.txt", "torch")
    for lock in ("gpu.txt", "gpu-test.txt"):
        assert not pins(lock)["torch"].endswith("+cpu")
        assert hashes(lock, "torch") and not hashes(lock, "torch") & cpu_wheel, lock


def test_other_sdk_major_shares_the_main_locks_versions():
    other, main = pins("sdk-openai2.txt"), pins("cpu-test.txt")
    assert other["openai"].split(".")[0] == "2" and main["openai"].split(".")[0] == "3"
    shared = (other.keys() & main.keys()) - {"openai"}
    assert shared and all(other[n] == main[n] for n in shared)


def test_this_session_runs_the_locked_versions():
    """What make test ran is what the lock says (a venv set up by hand may differ: rerun
    scripts/setup.sh test)."""
    wrong = {}
    for name, version in pins("cpu-test.txt").items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            wrong[name] = (version, installed)
    assert not wrong, wrong
