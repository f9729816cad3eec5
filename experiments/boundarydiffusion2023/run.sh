#!/usr/bin/env bash
# Every run and table of experiments/boundarydiffusion2023 (31-73 minutes on 2 CPU cores):
#   bash experiments/boundarydiffusion2023/run.sh [runs_dir]     (default outputs/boundarydiffusion2023)
# A run whose metrics.json exists is not repeated; the tables and plots are written next to this script.
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-outputs/boundarydiffusion2023}
here=experiments/boundarydiffusion2023
bin=.venv/bin

run() {  # run <name> <overrides...>
  local name=$1
  shift
  [ -f "$runs/$name/metrics.json" ] || "$bin/hspace-run" "$@" logger=csv "run_dir=$runs/$name"
}

boundary=(experiment=boundary_shapes_unconditional)
paper_strengths='edit.strengths=[-10.0,-8.0,-7.0,-6.0,-5.0,-4.0,0.0,4.0,5.0,6.0,7.0,8.0,10.0,12.0,14.0]'
object_strengths='edit.strengths=[-30.0,-20.0,-15.0,-10.0,-5.0,0.0,5.0,10.0,15.0,20.0,30.0]'
x_relative=(method.t_mix=500 edit.mode=relative edit.x_scale=1.0 edit.h_scale=null)
# The factor each edit should change, for the pixel-measured success and leakage (without it, the factor the
# edit moved most at the headline strength is taken, which names r for the edits that also resize the object).
light_factor=("+metrics.factor_targets.light_background='background=light'")
red_factor=("+metrics.factor_targets.red='colour=red'")

# light_background: the paper's placement with intercept, then each extension alone and both.
run light_paper "${boundary[@]}" edit.mode=placement_intercept edit.keep_h=false "$paper_strengths" +metrics.targets.light_background=light_background "${light_factor[@]}"
run light_paper_keep_h "${boundary[@]}" edit.mode=placement_intercept edit.keep_h=true "$paper_strengths" +metrics.targets.light_background=light_background "${light_factor[@]}"
run light_push "${boundary[@]}" edit.keep_h=false +metrics.targets.light_background=light_background "${light_factor[@]}"
run light_push_keep_h "${boundary[@]}" +metrics.targets.light_background=light_background "${light_factor[@]}"
# large and red: the x_t boundary with the relative step (h holds size, so keep_h stays off for large).
run large "${boundary[@]}" "${x_relative[@]}" method.attribute=large edit.keep_h=false "$object_strengths" +metrics.targets.large=large
run red_keep_h "${boundary[@]}" "${x_relative[@]}" method.attribute=red edit.keep_h=true "$object_strengths" +metrics.targets.red=red "${red_factor[@]}"
run red "${boundary[@]}" "${x_relative[@]}" method.attribute=red edit.keep_h=false "$object_strengths" +metrics.targets.red=red "${red_factor[@]}"
# h alone at t_m, with steps up to 40% of |h|.
run large_h_only "${boundary[@]}" method.t_mix=500 edit.mode=relative edit.x_scale=null edit.h_scale=1.0 edit.keep_h=false num_samples=64 \
  'edit.strengths=[-200.0,-100.0,-50.0,0.0,50.0,100.0,200.0]' method.attribute=large +metrics.targets.large=large metrics.fid.backend=none
# The conditional mode: 100 inverted test images, scored under edit_real/.
run conditional experiment=boundary_shapes_conditional real_images=100 num_samples=16 +metrics.targets.light_background=light_background "${light_factor[@]}"
# The h-space directions of the same attributes: class means (Haas et al. eq. 11) and PCA with the signs of Haas et al.'s code (its pc3 makes objects smaller in every seed on the shipped model).
run class_mean experiment=haas2023_table1_shapes method.condition_on=null method.keep_original=false 'method.attributes=[large,red,light_background]' \
  num_samples=200 num_directions=3 'edit.strengths=[0.0,0.5,1.0,1.5,2.0,3.0]' metrics.fid.backend=classifier
run pca method.sign_reference=noisiest num_samples=200 real_images=0 num_directions=5 'edit.strengths=[-8.0,-6.0,-4.0,0.0,4.0,6.0,8.0]' +metrics.targets.pc3=-large

table() {  # table <output name> <runs> <direction regex> <group_by> [plot directions]
  "$bin/hspace-table" "runs=[$2]" "group_by=$4" digits=2 layout.row_name=strength \
    "layout.pattern='^edit/(?P<direction>$3)/(?P<column>success|preserve|fid/shapes_classifier)@(?P<row>-?[0-9.]+)\$'" \
    'layout.columns=[success,preserve,fid/shapes_classifier]' plot.metric="${6:-success}" "plot.directions=${5:-null}" "output_dir=$here/$1"
}
r=$runs
table light_background "$r/light_paper,$r/light_paper_keep_h,$r/light_push,$r/light_push_keep_h" light_background '[edit.mode,edit.keep_h]' '[light_background]' preserve
table compare_light_background "$r/light_push_keep_h,$r/class_mean" light_background '[method]' '[light_background]'
table compare_large "$r/large,$r/class_mean,$r/pca" 'large|pc3' '[method]' '[large,pc3]'
table compare_red "$r/red,$r/red_keep_h,$r/class_mean" red '[method,edit.keep_h]' '[red]'
table large_h_only "$r/large_h_only" large '[method]'
"$bin/hspace-table" "runs=[$r/conditional]" group_by=[method] digits=2 layout.row_name=strength plot.metric=null \
  "layout.pattern='^edit_real/light_background/(?P<column>success|preserve|mse|ssim)@(?P<row>-?[0-9.]+)\$'" \
  'layout.columns=[success,preserve,mse,ssim]' "output_dir=$here/conditional"
# The grids of the README (first 12 samples at the headline strengths) and the mixing-step search's curve.
grid() { "$bin/python" scripts/edit_grid.py "$@" --rows 12; }
grid "$r/light_push_keep_h" light_background "$here/light_background_grid.png" --strengths -8 0 8
grid "$r/light_paper" light_background "$here/light_background_paper_grid.png" --strengths -8 0 8
grid "$r/conditional" light_background "$here/conditional_grid.png" --real --strengths -10 0 10
grid "$r/red_keep_h" red "$here/red_grid.png" --strengths -20 0 30
cp "$r/light_paper/grids/mixing_curve.png" "$here/mixing_curve.png"
