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
# Pixels inside vs outside the unedited object (metrics.locality, every method alike).
"$bin/hspace-table" "runs=[$runs/loco,$runs/loco_transfer,$runs/jacobian,$runs/class_mean]" group_by=[method,num_samples] digits=3 \
  plot.metric=null layout.name=pixels "output_dir=$here" \
  "layout.pattern='^edit/(?P<row>[^/@]+)/locality/(?P<column>mse_in|mse_out|outside_share|kept_out)\$'" \
  'layout.columns=[mse_in,mse_out,outside_share,kept_out]'
# Cost: seconds to find one direction and per edited image (the runs' stage times).
"$bin/python" - "$runs" > "$here/cost.md" <<'PY'
import json, statistics, sys
from pathlib import Path

runs = Path(sys.argv[1])
print("| runs | find one direction (s) | edit, per edited image (s) |")
print("|---|---|---|")
# each run finds 3 directions (LOCO's edit rank 3, of which the first is edited): the time per direction found
for name, pattern, directions in (("loco (16 runs)", "loco/*", 3), ("jacobian", "jacobian", 3), ("class_mean", "class_mean", 3)):
    found = [json.loads(p.read_text()) for p in sorted(runs.glob(f"{pattern}/metrics.json"))]
    find = statistics.median(m["time/directions_s"] / directions for m in found)
    per = statistics.median(m["time/edit_s"] / (m["edit/num_samples"] * m["edit/num_directions"] * 5) for m in found)
    print(f"| {name} | {find:.1f} | {per:.3f} |")
PY
"$bin/python" scripts/edit_grid.py "$runs/loco/0" loco0 "$here/loco_grid.png" --rows 1
