#!/usr/bin/env bash
# The default PCA against the random control on the shipped Shapes DDPM (experiments/shapes_pca_eval/README.md):
# three seeds of 64 edited samples each, then the summary table and the success-vs-strength plot written here.
# About 20 minutes on 2 CPU cores; runs whose metrics.json exists are not repeated.
#   bash experiments/shapes_pca_eval/run.sh [runs_dir]          (default outputs/shapes_pca_eval)
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-outputs/shapes_pca_eval}
here=experiments/shapes_pca_eval
bin=.venv/bin

"$bin/hspace-run" -m method=pca,random first_seed=0,100,200 num_samples=64 real_images=0 logger=csv skip_done=true \
  "hydra.sweep.dir=$runs"
"$bin/hspace-table" "runs=[$runs]" layout=summary digits=2 \
  'layout.columns=[success,preserve,mse,ssim,fid/shapes_classifier]' "output_dir=$here"
