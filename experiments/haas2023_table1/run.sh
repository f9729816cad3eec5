#!/usr/bin/env bash
# Haas et al. Table I on Shapes (experiments/haas2023_table1/README.md): five class means, each original and
# disentangled, three seeds of 100 samples, scored by the classifier and by the factors measured from pixels;
# the two tables are written here. About 6 minutes on 2 CPU cores; runs whose metrics.json exists are kept.
#   bash experiments/haas2023_table1/run.sh [runs_dir]          (default outputs/haas2023_table1)
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-outputs/haas2023_table1}
here=experiments/haas2023_table1
bin=.venv/bin

"$bin/hspace-run" -m experiment=haas2023_table1_shapes first_seed=0,1000,2000 skip_done=true \
  "hydra.sweep.dir=$runs"
"$bin/hspace-table" "runs=[$runs]" layout=score_abs_delta layout.name=shapes_score_abs_delta group_by=[] digits=2 \
  plot.metric=null 'layout.columns=[large,left,top,circle,triangle]' "output_dir=$here"
"$bin/hspace-table" "runs=[$runs]" layout=factors layout.name=shapes_factors digits=2 plot.metric=null "output_dir=$here"
