#!/usr/bin/env bash
# One command for a new user: set everything up, then run the main job - the KV260 job (LeNet-5,
# rotated Fashion-MNIST 75 degrees, 1024 samples, 10 epochs) on the simulated accelerator RTL.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/skip2lora finetune "$@"
