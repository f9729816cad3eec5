#!/usr/bin/env bash
# Set up, then run the main job on the Shapes default: PCA directions of the shipped Shapes DDPM, edited
# samples and grids, logged to W&B (offline unless logged in).
# Extra arguments are Hydra overrides, e.g. `bash scripts/demo.sh method=random edit.strengths=[-3,0,3]`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/hspace-run "$@"
