#!/usr/bin/env bash
# On a machine with a CUDA GPU: the CUDA tests, the main job on the GPU (stage times in its metrics.json), and
# the full-size benchmark (scripts/bench_full_size.py). Extra arguments go to the benchmark.
set -uo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
export HF_HUB_OFFLINE=1 WANDB_MODE=offline WANDB_SILENT=true
status=0
"$python" -m pytest -m gpu -q tests || status=1
"$python" -m hspace.cli.run trainer.accelerator=cuda logger=csv || status=1
"$python" scripts/bench_full_size.py "$@" || status=1
exit $status
