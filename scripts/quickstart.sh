#!/usr/bin/env bash
# One command for a new user: set everything up (.venv and .venv-pynq, scripts/setup.sh), fetch
# and verify the four data sets (python -m skip2lora.data; the look-up order is --data-dir,
# $SKIP2LORA_DATA, the user cache), then run the main job - the KV260 job (LeNet-5, rotated
# Fashion-MNIST 75 degrees, 1024 samples, 10 epochs) on the simulated accelerator RTL.
# Arguments go to `skip2lora finetune`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/python -m skip2lora.data ||
  echo "skip2lora: a data set could not be fetched (see above); the tests that need it will skip" >&2
exec .venv/bin/skip2lora finetune "$@"
