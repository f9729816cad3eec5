#!/usr/bin/env bash
# Train the Shapes DDPM on one CUDA GPU from scratch (conf/experiment/shapes32_ddpm_gpu.yaml), export it in
# save_pretrained layout to <run_dir>/model and measure it (scripts/shapes_model_quality.py), in one command:
#   bash scripts/train_shapes_gpu.sh                      # run_dir outputs/train/shapes32_gpu
#   RUN_DIR=/tmp/run QUALITY_SAMPLES=64 bash scripts/train_shapes_gpu.sh trainer.max_steps=30000 module.decay_start=25000 module.decay_steps=30000
# Extra arguments are hspace-train overrides. To ship the result: copy <run_dir>/model/* to src/hspace/assets/shapes32.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
python=.venv/bin/python
run_dir=${RUN_DIR:-outputs/train/shapes32_gpu}
export HF_HUB_OFFLINE=1 WANDB_MODE=offline WANDB_SILENT=true
start=$(date +%s)
"$python" -m hspace.cli.train experiment=shapes32_ddpm_gpu run_dir="$run_dir" "$@"
echo "training wall time: $(( $(date +%s) - start )) s"
"$python" scripts/shapes_model_quality.py --weights "$run_dir/model" --num-samples "${QUALITY_SAMPLES:-256}" --grid "$run_dir/quality_samples.png" | tee "$run_dir/quality.json"
