#!/usr/bin/env bash
# LOCO Edit on Shapes against the h-space Jacobian directions (Haas et al.) and class means, on the same samples
# (experiments/shapes_loco/README.md). Runs whose metrics.json exists are not repeated.
#   bash experiments/shapes_loco/run.sh [runs_dir]          (default outputs/shapes_loco)
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-outputs/shapes_loco}
here=experiments/shapes_loco
bin=.venv/bin
common=(sampler.num_steps=20 real_images=0 logger=csv metrics.fid.backend=none metrics.disentanglement.num_images=0 skip_done=true)
samples=16
loco_strengths='edit.strengths=[-16.0,-8.0,0.0,8.0,16.0]'

run() {  # run <name> <overrides...>
  local name=$1
  shift
  "$bin/hspace-run" "$@" "${common[@]}" "run_dir=$runs/$name"
}

# LOCO as the paper uses it: each sample edited along a direction found on that sample (its object's region).
for seed in $(seq 0 $((samples - 1))); do
  run "loco/$seed" method=loco edit=xt_shift "method.sample_seed=$seed" "first_seed=$seed" num_samples=1 num_directions=1 "$loco_strengths"
done
# LOCO transferred: sample 0's direction applied to every sample (most objects lie elsewhere).
run loco_transfer method=loco edit=xt_shift method.sample_seed=0 num_samples=$samples num_directions=1 "$loco_strengths"
# The h-space Jacobian directions of sample 0 (Haas et al.), applied at every step, and the class means.
run jacobian method=jacobian method.sample_seed=0 num_samples=$samples num_directions=3 'edit.strengths=[-60000.0,-30000.0,0.0,30000.0,60000.0]'
run class_mean method=class_mean 'method.attributes=[large,left,circle]' num_samples=$samples num_directions=3 \
  'edit.strengths=[-1.0,-0.5,0.0,0.5,1.0]'

table() {  # table <name> <runs>
  "$bin/hspace-table" "runs=[$2]" group_by=[method] digits=2 plot.metric=null "layout.name=$1" \
    "layout.pattern='^edit/(?P<row>[^/@]+)/factors/(?P<column>success|leakage|valid|background_kept)\$'" \
    'layout.columns=[success,leakage,valid,background_kept]' "output_dir=$here"
}
table locality "$runs/loco,$runs/jacobian,$runs/class_mean"
table transfer "$runs/loco_transfer"
"$bin/python" scripts/edit_grid.py "$runs/loco/0" loco0 "$here/loco_grid.png" --rows 1
