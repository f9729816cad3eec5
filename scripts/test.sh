#!/usr/bin/env bash
# Set up, then run the test suite. `--slow` runs the slow tests, `--gpu` the CUDA tests; other
# arguments go to pytest (`-n 0` runs every test in this process).
#
# CPU tests run in one pytest worker per core (up to 4), each with one torch thread: most tests spend their
# time starting Python, composing configs and running small models, which one thread does as fast as two,
# so two workers on two cores take about two thirds of the time one worker with two threads does. The CUDA
# tests share one GPU and run in one process.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
markers=()
cores=$(nproc)
workers=(-n "$((cores < 4 ? cores : 4))")
case "${1:-}" in
  --slow) markers=(-m slow); shift ;;
  --gpu) markers=(-m gpu); workers=(); shift ;;
esac
export HF_HUB_OFFLINE=1 WANDB_MODE=offline WANDB_SILENT=true
[ ${#workers[@]} -eq 0 ] || export OMP_NUM_THREADS=1
status=0
.venv/bin/python -m pytest "${workers[@]}" "${markers[@]}" "$@" || status=$?
# A marker run that selects no test (pytest's exit 5) is not a failure.
if [ "$status" -eq 5 ] && [ ${#markers[@]} -gt 0 ]; then status=0; fi
exit "$status"
