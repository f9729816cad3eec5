#!/usr/bin/env bash
# Set up, then run the main job on the Shapes default: sample the shipped Shapes DDPM into a PNG grid.
# Extra arguments are Hydra overrides, e.g. `bash scripts/demo.sh num_samples=16 sampler.eta=1.0`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/hspace-sample "$@"
