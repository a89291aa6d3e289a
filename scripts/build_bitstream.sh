#!/usr/bin/env bash
# Build the KV260 bitstream (skip2lora.bit + skip2lora.hwh + manifest.json) with Vivado in batch mode.
#
#   scripts/build_bitstream.sh [--config kv260|small] [--out DIR] [--jobs N] [--dry-run] [--no-install] [--json]
#
# Runs `skip2lora hw bitstream` with the given options: exports the accelerator's Verilog, generates
# build.tcl (IP packaging, block design, synthesis, implementation), runs
# `vivado -mode batch -source build.tcl`, writes the manifest and copies the results into
# bitstreams/kv260/. Needs Vivado 2022.2 or newer on PATH; set VIVADO_SETTINGS to its settings64.sh
# to have it sourced here (e.g. VIVADO_SETTINGS=/tools/Xilinx/Vivado/2023.2/settings64.sh).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if [[ -n "${VIVADO_SETTINGS:-}" ]]; then
    # shellcheck disable=SC1090
    source "${VIVADO_SETTINGS}"
fi

# The project's Python: the active virtualenv, else $PYTHON, else python3.
python="${PYTHON:-python3}"
if [[ -n "${VIRTUAL_ENV:-}" ]]; then
    python="${VIRTUAL_ENV}/bin/python"
fi
if ! "${python}" -c "import skip2lora.hw.vivado" 2>/dev/null; then
    echo "build_bitstream.sh: the skip2lora package is not importable with ${python};" \
         "install it first: pip install -e '${root}[dev]'" >&2
    exit 2
fi

cd "${root}"
exec "${python}" -m skip2lora.cli hw bitstream "$@"
