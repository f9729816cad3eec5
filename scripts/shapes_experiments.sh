#!/usr/bin/env bash
# Every Shapes experiment of experiments/ against the shipped Shapes DDPM, one after the other, in one command:
# the model's quality (experiments/shapes32_ddpm/quality.json), the default run's factor effects, then each
# experiment's own run.sh (PCA evaluation, Haas et al. Table I, BoundaryDiffusion, LOCO) and the leaderboard.
# Their tables and plots are written into their folders; the runs go to <runs_root>/<experiment>. Finished runs
# are kept, so a stopped re-run resumes where it stopped. 1 hour 27 minutes on 2 CPU cores, alone on the machine
# (v8: quality 1 min, default run 1, PCA evaluation 16, Table I 6, BoundaryDiffusion 31, LOCO 6, leaderboard 26;
# stage 12, on a host where the same work took about 2.2x longer: quality 1, default run 3, PCA evaluation 35,
# Table I 12, BoundaryDiffusion 73, LOCO 9, leaderboard 56; the experiments record their own timings).
# The prose numbers of each experiment's README are edited by hand.
#   bash scripts/shapes_experiments.sh [runs_root [step ...]]     (default outputs/shapes_experiments, every step)
# Naming steps runs only those, e.g. `bash scripts/shapes_experiments.sh outputs/x shapes_loco shapes_leaderboard`.
set -euo pipefail
cd "$(dirname "$0")/.."
root=${1:-outputs/shapes_experiments}
steps=(quality default_run shapes_pca_eval haas2023_table1 boundarydiffusion2023 shapes_loco shapes_leaderboard)
only=("${@:2}")
listed() { [[ " ${*:2} " == *" $1 "* ]]; }  # listed <name> <names...>: whether name is one of names
for name in "${only[@]}"; do
  if ! listed "$name" "${steps[@]}"; then
    echo "error: unknown step '$name'; the steps are: ${steps[*]}" >&2
    exit 2
  fi
done
bin=.venv/bin
export HF_HUB_OFFLINE=1 WANDB_MODE=offline WANDB_SILENT=true
mkdir -p "$root"

# A step's command runs inside `if !`, where set -e does not stop a function: each function returns on its
# first failure itself.
step() {  # step <name> <command...>: run it, with its start and duration on stdout and its output in <root>/<name>.log
  local name=$1 start
  shift
  if [ ${#only[@]} -gt 0 ] && ! listed "$name" "${only[@]}"; then
    return 0
  fi
  start=$(date +%s)
  echo "$(date +%T) $name"
  if ! "$@" > "$root/$name.log" 2>&1; then
    echo "$name failed; its output is in $root/$name.log" >&2
    exit 1
  fi
  echo "$(date +%T) $name done in $(( $(date +%s) - start )) s"
}

quality() {
  local out=experiments/shapes32_ddpm
  "$bin/python" scripts/shapes_model_quality.py --weights shapes32 --num-samples 256 --classifier shapes_attributes \
    --grid "$out/quality_samples.png" > "$root/quality.json" || return 1
  cp "$root/quality.json" "$out/quality.json"
}

default_run() {  # the default hspace-run and which factor each of its PCA directions changes (scripts/shapes_edit_factors.py)
  [ -f "$root/default/metrics.json" ] || "$bin/hspace-run" logger=csv "run_dir=$root/default" || return 1
  "$bin/python" scripts/shapes_edit_factors.py "$root/default" > "$root/default_factors.txt" || return 1
  cat "$root/default_factors.txt"
}

step quality quality
step default_run default_run
step shapes_pca_eval bash experiments/shapes_pca_eval/run.sh "$root/shapes_pca_eval"
step haas2023_table1 bash experiments/haas2023_table1/run.sh "$root/haas2023_table1"
step boundarydiffusion2023 bash experiments/boundarydiffusion2023/run.sh "$root/boundarydiffusion2023"
step shapes_loco bash experiments/shapes_loco/run.sh "$root/shapes_loco"
step shapes_leaderboard "$bin/python" scripts/shapes_leaderboard.py --runs "$root/shapes_leaderboard"
echo "${only[*]:-every Shapes experiment} re-ran; runs in $root"
