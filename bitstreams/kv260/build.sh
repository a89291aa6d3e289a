#!/usr/bin/env bash
# Thin wrapper: build this folder's skip2lora.bit / skip2lora.hwh / manifest.json with Vivado.
# Same options as scripts/build_bitstream.sh (see README.md here). Example: ./build.sh --jobs 8
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
script="${here}/../../scripts/build_bitstream.sh"
if [[ -x "${script}" ]]; then
    exec "${script}" --config kv260 "$@"
fi
# Installed package (no scripts/ folder): call the CLI directly.
exec "${PYTHON:-python3}" -m skip2lora.cli hw bitstream --config kv260 "$@"
