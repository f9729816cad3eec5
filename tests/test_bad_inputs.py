"""A catalogue of bad inputs through the console scripts' `main` (as a user types them): each ends with exit code 2
and exactly one line on stderr that names the setting, no traceback, nothing in the run directory (or only
run_info.json marked failed) and nothing in the cache."""

import datetime
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

from hspace.cli import run as run_cli
from hspace.cli import sample as sample_cli
from hspace.cli import table as table_cli
from hspace.cli import train as train_cli

MAINS = {"run": run_cli.main, "sample": sample_cli.main, "train": train_cli.main, "table": table_cli.main}


class ModuleWithoutExport(pl.LightningModule):
    """A LightningModule that takes any settings and has no export: hspace-train must refuse it before training."""

    def __init__(self, **settings):
        super().__init__()


# (command, overrides, words the one line must contain); {tmp} is the test's temporary directory.
CASES = [
    ("run", ["sampler.num_steps=abc"], "sampler.num_steps='abc'"),
    ("run", ["sampler.num_steps=0"], "sampler.num_steps=0"),
    ("run", ["sampler.num_steps=-3"], "sampler.num_steps=-3"),
    ("run", ["sampler.eta=[0.0,1.0]"], "sampler.eta has 2 entries"),
    ("run", ["sampler.eta=-1"], "sampler.eta=-1"),
    ("run", ["sampler.eta=1.5"], "sampler.eta=1.5 is above 1.0"),
    ("run", ["method.collection_eta=2"], "method.collection_eta=2 is above 1.0"),
    ("run", ["sampler.spacing=bogus"], "sampler.spacing='bogus'"),
    ("run", ["sampler.spacing=leading", "sampler.num_steps=600"], "sampler.num_steps=600 on the leading grid walks"),
    ("run", ["+sampler.num_step=10"], "sampler.num_step is not a sampler setting"),
    ("run", ["sampler.num_step=10"], "sampler.num_step is not a setting of hspace-run"),
    ("run", ["method=pcaa"], "method=pcaa is not an option of method: choose one of boundary"),
    ("run", ["num_samples=1,2"], "num_samples=1,2 gives several values"),
    ("run", ["+num_samples=3"], "+num_samples adds a setting that already exists"),
    ("run", ["num_samples=[1"], "no viable alternative at input '[1'"),
    ("run", ["sampler.final_alpha=two"], "sampler.final_alpha='two'"),
    ("run", ["precision=fp64"], "precision='fp64'"),
    ("run", ["method=loco"], "edit=shift moves h along the directions' h vectors (reads_h), but method=loco gives"),
    ("run", ["method=loco", "edit=boundary_step"], "edit=boundary_step reads x_normal, offsets from its directions"),
    ("run", ["edit.strengths=[]"], "edit.strengths=[]"),
    ("run", ["edit.strengths=[0,nan]"], "edit.strengths[1]=nan"),
    ("run", ["edit.strengths=[1,inf]"], "edit.strengths[1]=inf"),
    ("run", ["edit.strengths=[-1,1,1.0000001]"], "edit.strengths[1] and edit.strengths[2] are both 1 in the metric"),
    ("run", ["edit.window=[100]"], "edit.window=[100]"),
    ("run", ["edit.window=[100,500]"], "edit.window=[100, 500]"),
    ("run", ["edit.batch_size=0"], "edit.batch_size=0"),
    ("run", ["method=loco", "edit=xt_shift", "edit.noisy_tail=1.5"], "edit.noisy_tail=1.5 is above 1.0"),
    ("run", ["edit.noisy_tail=-0.1"], "edit.noisy_tail=-0.1"),
    ("run", ["metrics.factor_pairs=judged"], "metrics.factor_pairs='judged' is not one of object, valid"),
    ("run", ["edit.asymmetric=yes please"], "edit.asymmetric='yes please' is not true or false"),
    ("run", ["method=boundary", "edit=boundary_step", "edit.keep_h=2"], "edit.keep_h=2 is not true or false"),
    ("run", ["method=class_mean", "method.keep_original=no"], "method.keep_original='no' is not true or false"),
    ("run", ["metrics.factors=maybe"], "metrics.factors='maybe' is not true or false"),
    ("run", ["num_samples=0"], "num_samples=0"),
    ("run", ["num_directions=0"], "num_directions=0"),
    ("run", ["data.resolution=64"], "data.resolution=64 but the model draws 32x32 images, and real_images, metrics"),
    ("run", ["method=jacobian", "method.mask_box=[0,0,40,40]"], "method.mask_box=[0, 0, 40, 40] is not a box"),
    ("run", ["method=loco", "edit=xt_shift", "method.mask=box", "method.mask_box=[0,0,40,40]"], "is not a box"),
    ("run", ["real_images=-1"], "real_images=-1"),
    ("run", ["first_seed=-5"], "first_seed=-5"),
    ("run", ["real_images=5000"], "real_images=5000"),
    ("run", ["method.num_components=0"], "method.num_components=0"),
    ("run", ["method.num_samples=30"], "method.num_samples (30)"),
    ("run", ["method.batch_size=8"], "method.batch_size (8)"),
    ("run", ["method.mode=bogus"], "method.mode='bogus'"),
    ("run", ["method.sign_reference=bogus"], "method.sign_reference='bogus'"),
    ("run", ["method.sign_restart_overlap=1.5"], "method.sign_restart_overlap=1.5"),
    ("run", ["method=jacobian", "method.mask_box=[1,2,3]"], "method.mask_box=[1, 2, 3]"),
    ("run", ["method=jacobian", "method.mask_file={tmp}/mask.txt"], "method.mask_file="),
    ("run", ["method=jacobian", "method.mask_file={tmp}/none.png"], "method.mask_file="),
    ("run", ["method=jacobian", "method.solver=bogus"], "method.solver='bogus'"),
    ("run", ["method=jacobian", "method.scale_mode=bogus"], "method.scale_mode='bogus'"),
    ("run", ["method=jacobian", "method.tau=5000"], "method.tau=5000"),
    ("run", ["method=boundary", "edit=boundary_step", "method.t_mix=2000"], "method.t_mix=2000"),
    ("run", ["method=boundary", "edit=boundary_step", "method.bank=bogus"], "method.bank='bogus'"),
    ("run", ["method=boundary", "edit=boundary_step", "method.attribute=bogus"], "method.attribute='bogus'"),
    ("run", ["method=boundary", "edit=boundary_step", "method.test_fraction=1.5"], "method.test_fraction=1.5"),
    ("run", ["method=boundary", "edit=boundary_step", "edit.mode=bogus"], "edit.mode='bogus'"),
    ("run", ["method=boundary", "edit=boundary_step", "edit.x_scale=null", "edit.h_scale=null"], "edit.x_scale"),
    ("run", ["method=class_mean", "method.attributes=[]"], "method.attributes=[]"),
    ("run", ["method=class_mean", "method.attributes=[bogus]"], "bogus"),
    ("run", ["method=class_mean", "method.top_k=600"], "method.num_index=512"),
    ("run", ["method=pca", "edit=boundary_step"], "method=pca does not provide"),
    (
        "run",
        ["method=pca", "method.exact_max_n=8", "method.num_samples=8"],
        "method.num_components=25 needs at least 26",
    ),
    ("run", ["experiment=quick", "method=class_mean"], "ClassMeanDirections takes no setting 'num_samples'"),
    ("run", ["+metrics.targets.pc0=bogus"], "metrics.targets.pc0='bogus'"),
    ("run", ["+metrics.factor_targets.pc0=size"], "metrics.factor_targets.pc0='size'"),
    ("run", ["metrics.locality.region=box"], "metrics.locality.box"),
    ("run", ["metrics.locality.region=ellipse"], "metrics.locality.region must be one of"),
    ("run", ["metrics.locality.region=file", "metrics.locality.file=/no/mask.png"], "no mask image at metrics"),
    ("run", ["metrics.locality.region=box", "metrics.locality.box=[0,0,40,4]"], "inside the 32x32 image"),
    ("run", ["metrics.locality.region=box", "metrics.locality.box=[0,0,32,32]"], "covers the whole image"),
    ("run", ["method=jacobian", "method.mask_file={tmp}/images/a.png"], "images/a.png is black everywhere"),
    ("run", ["method=jacobian", "method.num_directions=769"], "more directions than the 768 values of h allow"),
    (
        "run",
        ["method=jacobian", "method.mask_box=[0,0,1,1]", "method.num_directions=4"],
        "method.num_directions=4 asks for more directions than the 3 masked values of eps allow: ask for at most 3",
    ),
    (
        "run",
        ["method=loco", "edit=xt_shift", "method.null_rank=4000"],
        "method.null_rank=4000 asks for more directions than the 3072 values of x_t allow",
    ),
    (
        "run",
        ["method=loco", "edit=xt_shift", "method.mask=box", "method.mask_box=[0,0,32,32]"],
        "method.null_rank=5 asks for more directions than the 0 values of x0 outside the region allow",
    ),
    ("run", ["method=class_mean", "method.attributes=[red,large,red]"], "method.attributes names red more than once"),
    ("run", ["metrics.fid=classifier"], "metrics.fid='classifier'"),
    ("run", ["metrics.fid.backend=inception"], "or use metrics.fid.backend=classifier"),  # a hint that composes
    ("run", ["metrics.fid.backend=bogus"], "metrics.fid.backend='bogus'"),
    ("run", ["metrics.fid.reference_split=bogus"], "metrics.fid.reference_split='bogus'"),
    ("run", ["metrics.fid.reference_split=val", "metrics.fid.reference_count=5000"], "but the val split of data"),
    ("run", ["metrics.disentanglement.num_images=5"], "metrics.disentanglement.num_images=5"),
    ("run", ["metrics.disentanglement.num_images=5000"], "metrics.disentanglement.num_images=5000"),
    (
        "run",
        ["data=image_folder", "data.root={tmp}/images", "metrics.disentanglement.num_images=16"],
        "needs images with known factors",
    ),
    ("run", ["directions_path={tmp}/none.safetensors"], "directions_path="),
    ("run", ["cache_dir={tmp}/mask.txt"], "is a file"),
    ("run", ["logger=wandb", "logger.wandb.mode=bogus"], "logger.wandb.mode='bogus' is not one of"),
    ("sample", ["num_samples=-1"], "num_samples=-1"),
    ("sample", ["sampler.num_steps=0"], "sampler.num_steps=0"),
    ("sample", ["batch_size=0"], "batch_size=0"),
    ("sample", ["output={tmp}/grid.jpg"], "output={tmp}/grid.jpg is not a .png file"),
    ("sample", ["model.weights={tmp}/words.ckpt"], "model.weights={tmp}/words.ckpt is a file, not a save_pretrained"),
    ("sample", ["output=/proc/x.png"], "output=/proc/x.png: /proc cannot be written"),
    ("sample", ["run_dir=/proc/hs_run"], "run_dir=/proc/hs_run: /proc cannot be written"),
    ("sample", ["sampler.eta=[1,1]"], "sampler.eta has 2 entries"),
    ("sample", ["model=shapes"], "model=shapes is not an option of model"),
    ("train", ["trainer.max_step=3"], "trainer.max_step is not a setting of hspace-train"),
    ("table", ["layout=sumary"], "layout=sumary is not an option of layout"),
    ("table", ["runs=[{tmp}/nowhere]"], "no runs at"),
    ("table", ["runs=[{tmp}/empty]"], "no finished runs"),
    ("train", ["ckpt_path={tmp}/none.ckpt"], "ckpt_path="),
    ("train", ["ckpt_path={tmp}/pickled.ckpt"], "does not load as weights only (it pickles datetime.date)"),
    ("train", ["ckpt_path={tmp}/mask.txt"], "does not load as weights only (it is damaged or not a torch checkpoint)"),
    ("train", ["ckpt_path={tmp}/words.ckpt"], "(it is damaged or not a torch checkpoint)"),
    ("train", ["data=image_folder", "data.root={tmp}/empty"], "holds no .png, .jpg or .webp images"),
    ("train", ["logger=wandb", "logger.wandb.mode=bogus"], "logger.wandb.mode='bogus' is not one of"),
    ("train", ["data.batch_size=0"], "data.batch_size=0 is below 1"),
    ("train", ["data.num_workers=-1"], "data.num_workers=-1 is below 0"),
    ("train", ["data.n_train=0"], "data.n_train=0 is below 1"),
    ("train", ["data.n_train=10", "data.batch_size=16"], "data.batch_size=16 is more than the 10 training images"),
    ("train", ["data.resolution=48"], "data.resolution=48 is not a Shapes resolution"),
    ("train", ["module.lr=-1"], "module.lr=-1 must be greater than 0"),
    ("train", ["module.ema_decay=2"], "module.ema_decay=2 is above 1"),
    ("train", ["module.warmup_steps=-5"], "module.warmup_steps=-5 is below 0"),
    ("train", ["model.unet.block_out_channels=[16,16]"], "model.unet does not make a UNet2DModel"),
    ("train", ["module=shapes_classifier", "module.channels=[32,64,128,256,256,256]"], "give 1 to 5 blocks"),
    ("train", ["module=shapes_classifier", "module.hidden=0"], "module.hidden=0 is below 1"),
    ("train", ["trainer.max_steps=0"], "trainer.max_steps=0 trains nothing"),
    ("train", ["trainer.max_steps=-1"], "trainer.max_steps=-1 sets no step limit"),
    ("train", ["trainer.max_steps=-2"], "trainer.max_steps=-2 is below -1"),
    ("train", ["+trainer.max_epochs=0", "trainer.max_steps=-1"], "trainer.max_epochs=0 trains nothing"),
    ("train", ["trainer.max_time=bogus"], "trainer.max_time='bogus' is not a time limit"),
    ("train", ["trainer.precision=bogus"], "trainer.precision='bogus' is not one of"),
    ("train", ["trainer.precision=bf16-true"], "rounds the least noisy timesteps to no noise; use bf16-mixed"),
    ("train", ["trainer.devices=0"], "trainer.devices=0 is below 1"),
    ("train", ["data.resolution=64"], "data.resolution=64 but the UNet is built for 32-pixel images"),
    (
        "train",
        ["module=shapes_classifier", "trainer.max_steps=-1", 'trainer.max_time="00:00:01:00"'],
        "schedules its learning rate over the whole training",
    ),
    ("train", ["trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val=-1 is below 0"),
    ("train", ["trainer.log_every_n_steps=0"], "trainer.log_every_n_steps=0 is below 1"),
    ("train", ["checkpoint_every_n_steps=0"], "checkpoint_every_n_steps=0 is below 1"),
    ("train", ["seed=-1"], "seed=-1 is below 0"),
    ("train", [f"module._target_={__name__}.ModuleWithoutExport"], "has no export to write what it trains"),
    ("train", ["data._target_=builtins.dict"], "data=builtins.dict is not a LightningDataModule"),
    ("train", ["progress=maybe"], "progress='maybe' is not true or false"),
    ("train", ["export_dir={tmp}/mask.txt"], "export_dir={tmp}/mask.txt is a file"),
    ("train", ["export_dir={tmp}/images"], "export_dir={tmp}/images already exists and holds a.png"),
    ("train", ["module.init_weights={tmp}/images", "export_dir={tmp}/images"], "is where module.init_weights are"),
    (  # a shipped model named as the weights training starts from, its folder as the export
        "train",
        [
            "module.init_weights=shapes32",
            f"export_dir={Path(__file__).resolve().parents[1]}/src/hspace/assets/shapes32",
        ],
        "is where module.init_weights are read from",
    ),
    ("train", ["run_dir={tmp}/mask.txt/run"], "{tmp}/mask.txt is a file, not a folder"),
    ("run", ["skip_done=maybe"], "skip_done='maybe' is not true or false"),
    ("run", ["verbose=maybe"], "verbose='maybe' is not true or false"),
    ("run", ["run_dir={tmp}/mask.txt"], "run_dir={tmp}/mask.txt is a file"),
    ("run", ["real_image_files={tmp}/none.png"], "no image at {tmp}/none.png (real_image_files)"),
    ("run", ["cache_dir=null"], "cache_dir=null names no folder"),
    ("run", ["logger=null"], "logger=null: logger is a config group, which takes one of its options: choose one of"),
    ("train", ["logger=null"], "logger=null: logger is a config group"),
    ("run", ["method=loco", "edit=xt_shift", "method.image_file={tmp}/none.png"], "no image at method.image_file="),
    (
        "run",
        ["method=loco", "edit=xt_shift", "method.image_file={tmp}/mask.txt"],
        "method.image_file={tmp}/mask.txt is not an image this can read",
    ),
    ("sample", ["output={tmp}/empty"], "output={tmp}/empty is a folder"),
    ("sample", ["shapes_quality=maybe"], "shapes_quality='maybe' is not true or false"),
    ("sample", ["sampler.clip_x0=maybe"], "sampler.clip_x0='maybe' is not true or false"),
    ("run", ["edit.window=[100,-1]"], "edit.window[1]=-1 is below 0"),
    ("run", ["edit.window=[10,0]"], "edit.window=[10, 0] holds no step of the 50-step grid"),
    ("run", ["metrics.threshold=50"], "metrics.threshold=50 must be smaller than 1.0"),
    ("run", ["metrics.threshold=0"], "metrics.threshold=0 must be greater than 0.0"),
    ("run", ["metrics.locality.region=object", "metrics.locality.margin=-1"], "metrics.locality.margin=-1 is below 0"),
    ("run", ["trainer.devices=2"], "trainer.devices=2 spreads the evaluation over 2 devices"),
    (
        "run",
        ["trainer.devices=2", "+trainer.strategy=ddp", "num_samples=1"],
        "num_samples=1 gives fewer images than the 2 processes",
    ),
    ("run", ["trainer.devices=0"], "trainer.devices=0 is below 1"),
    ("run", ["trainer.devices=two"], "trainer.devices='two' is not a whole number"),
    ("run", ["+trainer.strategy=fsdp"], "trainer.strategy='fsdp' is not one of"),
    ("run", ["method=boundary", "edit=boundary_step", "method.mixing.stride=0"], "method.mixing.stride=0 is below 1"),
    ("run", ["method=boundary", "edit=boundary_step", "method.mixing.select=best"], "method.mixing.select='best'"),
    ("run", ["method=boundary", "edit=boundary_step", "method.mixing.candidates=[]"], "method.mixing.candidates=[]"),
    ("run", ["method=boundary", "edit=boundary_step", "+method.mixing.selct=x"], "method.mixing.selct is not a"),
    ("run", ["method=random", "method.seed=1.5"], "method.seed=1.5 is not a whole number"),
    ("run", ["method=jacobian", "method.seed=-1"], "method.seed=-1 is below 0"),
    ("run", ["method=class_mean", "method.split=tarin"], "method.split='tarin' is not one of"),
    ("train", ["callbacks.sample_grid.num_steps=0"], "callbacks.sample_grid.num_steps=0 is below 1"),
    ("train", ["callbacks.sample_grid.every_n_steps=often"], "callbacks.sample_grid.every_n_steps='often'"),
    ("train", ["model.spacing=bogus"], "callbacks.sample_grid.spacing='bogus' is not one of"),
    ("train", ["callbacks.sample_grid.shapes_quality=no"], "callbacks.sample_grid.shapes_quality='no' is not true"),
    ("train", ["model.scheduler.rescale_betas_zero_snr=no"], "model.scheduler.rescale_betas_zero_snr='no' is not"),
    ("train", ["model.scheduler.beta_schedule=cosine"], "model.scheduler.beta_schedule='cosine' is not one of"),
    ("train", ["model.scheduler.beta_end=-0.02"], "model.scheduler.beta_end=-0.02 must be greater than 0"),
    ("train", ["model.scheduler.beta_start=0.03"], "model.scheduler.beta_start=0.03 is above beta_end=0.02"),
    ("train", ["model.scheduler.num_train_timesteps=0"], "model.scheduler.num_train_timesteps=0 is below 2"),
    ("train", ["model.scheduler.prediction_type=sample"], "model.scheduler.prediction_type='sample' is not one of"),
    ("train", ["module.max_timestep=299.5"], "module.max_timestep=299.5 is not a whole number"),
    ("train", ["module.max_timestep=1000"], "module.max_timestep=1000 is above 999"),
    (
        "train",
        ["module.lr_schedule=cosine", "module.decay_steps=100"],
        "module.lr_schedule=cosine decays from step 500",
    ),
    (
        "train",
        ["module.lr_schedule=cosine", "trainer.max_steps=-1", "trainer.max_time=00:00:01:00"],
        "module.lr_schedule=cosine decays from step 500",
    ),
    ("train", ["data=image_folder", "data.root={tmp}/images", "data.seed=-1"], "data.seed=-1 is below 0"),
    ("table", ["runs={tmp}/nowhere"], "no runs at {tmp}/nowhere:"),
    ("table", ["runs=[{tmp}/finished]", "digits=-1"], "digits=-1 is below 0"),
    ("table", ["runs=[{tmp}/finished]", "group_by=[methd]"], "group_by key 'methd' is neither"),
    ("table", ["runs=[{tmp}/finished]", "plot.metric=sucess"], "no run has per-strength values of 'sucess'"),
    ("table", ["runs=[{tmp}/finished]", "plot.directions=[pc9]"], "plot.directions names 'pc9', which no run has"),
    ("table", ["runs=[{tmp}/finished]", "layout.columns=[sucess]"], "column 'sucess' is not one the table pattern"),
    ("table", ["runs=[{tmp}/finished]", "layout.pattern='('"], "table pattern '(' is not a regular expression"),
    ("table", ["runs=[{tmp}/finished]", "output_dir={tmp}/mask.txt"], "output_dir={tmp}/mask.txt is a file"),
]
if not torch.cuda.is_available():
    CASES.append(("run", ["trainer.accelerator=gpu"], "trainer.accelerator=gpu"))
    CASES.append(("sample", ["device=cuda"], "device=cuda"))
    CASES.append(("train", ["trainer.accelerator=gpu"], "trainer.accelerator=gpu"))
    CASES.append(("run", ["trainer.devices=[0]"], "trainer.devices=[0] lists GPUs but the run is on the CPU"))
    CASES.append(("run", ["trainer.devices=-1"], "trainer.devices=-1 means every GPU, but the run is on the CPU"))


@pytest.fixture(autouse=True)
def restore_logging():
    """Hydra's main points the root logger at this test's captured streams: take those handlers away after it."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def call_main(command: str, overrides: list[str], monkeypatch) -> int:
    """Run a console script's main in this process with `overrides` as its command line; its exit code."""
    monkeypatch.setattr(sys, "argv", [f"hspace-{command}", *overrides])
    try:
        MAINS[command]()
    except SystemExit as exit_:
        return exit_.code
    return 0


@pytest.mark.parametrize("command, overrides, words", CASES, ids=[" ".join(c[1]) for c in CASES])
def test_bad_input_is_one_line_before_any_work(command, overrides, words, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    (tmp_path / "mask.txt").write_text("not an image")
    (tmp_path / "words.ckpt").write_text("hello world, just text\n")  # unpickles to a KeyError
    torch.save({"state_dict": {}, "made": datetime.date(2026, 1, 1)}, tmp_path / "pickled.ckpt")  # not weights only
    (tmp_path / "empty").mkdir()
    (tmp_path / "images").mkdir()
    Image.new("RGB", (32, 32)).save(tmp_path / "images" / "a.png")
    finished = tmp_path / "finished"  # a finished run for the table
    finished.mkdir()
    (finished / "metrics.json").write_text(
        json.dumps({"method": "pca", "edit/pc0/success": 0.5, "edit/pc0/success@1": 0.5})
    )
    (finished / "config.yaml").write_text("method:\n  num_samples: 8\n")
    run_dir, cache = tmp_path / "run", tmp_path / "cache"
    args = [o.format(tmp=tmp_path) for o in overrides]
    args.append(f"hydra.run.dir={run_dir}")
    if command == "run":
        args = [f"cache_dir={cache}", "logger=none", *args]  # a later cache_dir= wins
    code = call_main(command, args, monkeypatch)
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if not line.startswith("note:")]
    assert code == 2, err
    assert len(errors) == 1 and errors[0].startswith("error: "), err
    assert words.format(tmp=tmp_path) in errors[0], errors[0]
    assert "Traceback" not in "\n".join(err)
    left = sorted(p.name for p in run_dir.iterdir()) if run_dir.exists() else []
    if left:  # a failure after the run started: only its record, marked failed
        assert left == ["run_info.json"], left
        assert json.loads((run_dir / "run_info.json").read_text())["status"] == "failed"
    assert not [p for p in cache.rglob("*") if p.is_file()] if cache.is_dir() else True


@pytest.mark.parametrize(
    "overrides",
    [
        ["method=jacobian", "method.mask_box=[0,0,40,40]"],
        ["method=loco", "edit=xt_shift", "method.mask=box", "method.mask_box=[0,0,40,40]"],
        ["data.resolution=64"],
        ["method=jacobian", "method.num_directions=769"],
        ["method=loco", "edit=xt_shift", "method.mask=box", "method.mask_box=[0,0,32,32]"],
        ["metrics.locality.region=box", "metrics.locality.box=[0,0,32,32]"],
    ],
    ids=["jacobian mask", "loco mask", "data resolution", "jacobian rank", "loco null rank", "locality box"],
)
def test_what_needs_the_model_is_refused_before_the_run_starts(overrides, tmp_path, monkeypatch, capsys):
    """Checked once the model is loaded, before the FID reference or anything else: no run directory at all."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    run_dir, cache = tmp_path / "run", tmp_path / "cache"
    args = [f"cache_dir={cache}", "logger=none", *overrides, f"hydra.run.dir={run_dir}"]
    assert call_main("run", args, monkeypatch) == 2
    assert "error: " in capsys.readouterr().err
    assert not run_dir.exists() and not [p for p in cache.rglob("*") if p.is_file()]


def damage(directory, how: str) -> None:
    weights = directory / "diffusion_pytorch_model.safetensors"
    if how == "truncated weights":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif how == "weights of another model":
        from safetensors.torch import save_file

        save_file({"conv_in.weight": torch.zeros(4, 3, 3, 3)}, weights)
    elif how == "config of another class":
        config = json.loads((directory / "config.json").read_text())
        (directory / "config.json").write_text(json.dumps(config | {"_class_name": "UNet2DConditionModel"}))
    elif how == "no scheduler config":
        (directory / "scheduler_config.json").unlink()
    elif how == "scheduler config not JSON":
        (directory / "scheduler_config.json").write_text("{ not json")


DAMAGES = [
    ("truncated weights", "cannot load the UNet weights"),
    ("weights of another model", "cannot load the UNet weights"),
    ("config of another class", "describes a UNet2DConditionModel, not a UNet2DModel"),
    ("no scheduler config", "has no scheduler_config.json"),
    ("scheduler config not JSON", "scheduler_config.json as JSON"),
]


@pytest.mark.parametrize("how, words", DAMAGES, ids=[d[0] for d in DAMAGES])
def test_damaged_weights_are_one_line(how, words, tmp_path, monkeypatch, capsys):
    import shutil

    from hspace.diffusion.weights import SHIPPED_DIR

    weights = tmp_path / "weights"
    shutil.copytree(SHIPPED_DIR / "shapes32", weights)
    damage(weights, how)
    code = call_main("sample", [f"model.weights={weights}", f"hydra.run.dir={tmp_path / 'run'}"], monkeypatch)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and words in err[0] and str(weights) in err[0], err


def test_a_run_that_fails_after_it_started_keeps_only_its_failed_record(tmp_path, monkeypatch, capsys):
    import hspace.job
    from hspace.errors import UserError

    monkeypatch.setenv("WANDB_MODE", "disabled")
    run_dir = tmp_path / "run"
    args = ["logger=none", f"cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={run_dir}"]
    # weights that are missing are found before the run starts: nothing is left
    code = call_main("run", [f"model.weights={tmp_path / 'missing'}", *args], monkeypatch)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "model.weights" in err[0] and not run_dir.exists(), err

    def fails(job, loggers):
        raise UserError("the directions stage ran out of disk: free some space")

    monkeypatch.setattr(hspace.job, "run_edit_job", fails)
    code = call_main("run", ["metrics=none", *args], monkeypatch)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "ran out of disk" in err[0], err
    assert sorted(p.name for p in run_dir.iterdir()) == ["run_info.json"]
    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["status"] == "failed" and info["reason"] in err[0] and info["git_sha"] is not None


def test_a_failed_run_is_marked_failed_in_wandb_and_a_finished_one_finished(tmp_path, monkeypatch, capsys):
    """W&B records the exit code the run is finished with: 1 for a run that failed after its logger started (W&B
    shows it failed, and hspace-table, which reads finished runs, leaves it out), 0 for one that completed."""
    import hspace.job
    from hspace.errors import UserError
    from tests.wandb_records import exit_code

    monkeypatch.setenv("WANDB_MODE", "offline")
    real_job = hspace.job.run_edit_job

    def fails(job, loggers):
        raise UserError("the edit stage ran out of disk: free some space")

    for name, job, code in (("failed", fails, 1), ("finished", real_job, 0)):
        monkeypatch.setattr(hspace.job, "run_edit_job", job)
        args = [
            "logger=wandb",
            f"logger.wandb.save_dir={tmp_path / name / 'wandb_dir'}",
            "metrics=none",
            "num_samples=1",
            "real_images=0",
            "num_directions=1",
            "sampler.num_steps=2",
            "method=random",
            f"cache_dir={tmp_path / 'cache'}",
            f"hydra.run.dir={tmp_path / name / 'run'}",
        ]
        assert call_main("run", args, monkeypatch) == (2 if code else 0), capsys.readouterr().err
        (run_file,) = (tmp_path / name / "wandb_dir").glob("wandb/offline-run-*/run-*.wandb")
        assert exit_code(run_file) == code, name


def test_a_run_directory_used_before_holds_only_the_new_run(tmp_path, monkeypatch, capsys):
    """Once a run starts, the outputs of an earlier run in its directory are gone (a killed run cannot leave
    them beside its own) and run_info.json says running; the directions file the run reads stays, also when
    the run fails."""
    import hspace.job
    from hspace.diffusion.loading import load_model
    from hspace.diffusion.schedule import SamplerSettings
    from hspace.directions.container import Directions
    from hspace.errors import UserError

    model = load_model("shapes32")
    grid = SamplerSettings(num_steps=4, spacing="trailing").schedule(model.alphas_cumprod).timesteps
    run_dir = tmp_path / "run"
    (run_dir / "grids").mkdir(parents=True)
    for name in ("edits_real.safetensors", "edits.safetensors", "metrics.json", "config.yaml", "overrides.yaml"):
        (run_dir / name).write_text("an earlier run's")
    (run_dir / "grids" / "real_pc0.png").write_text("an earlier run's")
    for logs in ("wandb/offline-run-20261201_120000-abc123", "logs/version_0"):  # its loggers' records
        (run_dir / logs).mkdir(parents=True)
        (run_dir / logs / "metrics").write_text("an earlier run's")
    (run_dir / ".metrics.json.k1ll3d.tmp").write_text("a killed writer's")
    (run_dir / ".run_info.json.k1ll3d.tmp").write_text("a killed writer's")
    (run_dir / "run_info.json").write_text(json.dumps({"status": "completed"}))
    Directions(
        torch.ones(1, len(grid), *model.h_shape),
        torch.ones(1, len(grid)),
        grid,
        ["pc0"],
        "pca",
        "shapes32",
        model.weights_identity,
        {},
        noise_schedule=model.noise_schedule,
    ).save(run_dir / "directions.safetensors")
    seen = {}

    def stops(job, loggers):
        seen["files"] = sorted(p.name for p in run_dir.iterdir())
        seen["status"] = json.loads((run_dir / "run_info.json").read_text())["status"]
        raise UserError("stopped: the test looked at the run directory")

    monkeypatch.setattr(hspace.job, "run_edit_job", stops)
    args = [
        "logger=none",
        "metrics=none",
        "sampler.num_steps=4",
        f"directions_path={run_dir / 'directions.safetensors'}",
    ]
    code = call_main("run", [*args, f"cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={run_dir}"], monkeypatch)
    assert code == 2 and "stopped" in capsys.readouterr().err
    assert seen == {"files": ["directions.safetensors", "run_info.json"], "status": "running"}
    assert sorted(p.name for p in run_dir.iterdir()) == ["directions.safetensors", "run_info.json"]


def test_skip_done_takes_only_a_run_that_completed(tmp_path):
    from hspace.cli.run import completed

    (tmp_path / "metrics.json").write_text("{}")
    for status, done in (("completed", True), ("running", False), ("failed", False)):
        (tmp_path / "run_info.json").write_text(json.dumps({"status": status}))
        assert completed(tmp_path) == done, status
    (tmp_path / "metrics.json").unlink()
    (tmp_path / "run_info.json").write_text(json.dumps({"status": "completed"}))
    assert not completed(tmp_path)


def test_the_table_skips_a_failed_run_with_a_note(tmp_path, monkeypatch, capsys):
    from hspace.tables.collect import run_directories

    good, failed = tmp_path / "good", tmp_path / "failed"
    good.mkdir()
    failed.mkdir()
    (good / "metrics.json").write_text("{}")
    (good / "config.yaml").write_text("method: {}")
    (failed / "run_info.json").write_text(json.dumps({"status": "failed", "reason": "error: something"}))
    killed = tmp_path / "killed"  # an earlier run's metrics and config, its rerun killed before it finished
    killed.mkdir()
    (killed / "metrics.json").write_text("{}")
    (killed / "config.yaml").write_text("method: {}")
    (killed / "run_info.json").write_text(json.dumps({"status": "running"}))
    assert run_directories([tmp_path]) == [good]
    err = capsys.readouterr().err
    assert "skipping the failed run" in err and f"skipping the unfinished run {killed}" in err


def test_an_added_setting_that_nothing_reads_is_named(tmp_path, monkeypatch, capsys):
    args = ["+metrics.threshhold=0.3", "+metrics.targets.pc0=large", "num_samples=0", "logger=none"]
    call_main("run", [*args, f"cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'run'}"], monkeypatch)
    err = capsys.readouterr().err.strip().splitlines()
    notes = [line for line in err if line.startswith("note:")]
    assert len(notes) == 1 and "+metrics.threshhold adds a setting that nothing reads" in notes[0], err


def test_a_setting_added_to_a_class_is_left_to_the_class(tmp_path, monkeypatch, capsys):
    """The method's class takes or refuses what +method.<key> adds: one line, the class's, and no note saying that
    nothing reads it."""
    args = ["+method.foo=2", "logger=none", f"cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'run'}"]
    assert call_main("run", args, monkeypatch) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "error: PCA takes no setting 'foo' (set by an experiment or a +key on the command line): remove it, "
        "or choose the option it was written for"
    ], err


# A fresh interpreter per command: the test process has imported Lightning long before.
REFUSED_EARLY = [
    ("run", "num_samples=-1", "num_samples=-1"),
    ("run", "sampler.eta=-1", "sampler.eta=-1"),
    ("run", "method.num_components=0", "method.num_components=0"),  # the method is built before Lightning loads
    ("run", "edit.batch_size=0", "edit.batch_size=0"),
    ("run", "method=pcaa", "method=pcaa is not an option"),
    ("run", "method=boundary method.test_fraction=1.5", "method.test_fraction=1.5"),  # reads a datamodule's type only
    ("run", "method=class_mean method.split=tarin", "method.split='tarin'"),
    ("run", "model.weights={tmp}/none", "weights '{tmp}/none' not found"),  # named before torch is imported
    ("run", "model=adm_afhqdog256 model.weights={tmp}/none.pt", "no ADM checkpoint at model.weights={tmp}/none.pt"),
    ("sample", "num_samples=0", "num_samples=0"),
    ("sample", "model.weights=shapes23", "weights 'shapes23' not found"),
    ("train", "ckpt_path={tmp}/none.ckpt", "ckpt_path="),
    ("train", "export_dir={tmp}/run", "export_dir="),  # the export would replace the run's checkpoints
]


@pytest.mark.parametrize("command,override,words", REFUSED_EARLY)
def test_a_bad_setting_is_refused_before_lightning_is_imported(command, override, words, tmp_path):
    script = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('lightning imported:', 'pytorch_lightning' in sys.modules))\n"
        "atexit.register(lambda: print('torch imported:', 'torch' in sys.modules))\n"
        f"from hspace.cli.{command} import main\n"
        f"sys.argv = ['hspace-{command}', *{override.format(tmp=tmp_path).split()!r}, 'run_dir={tmp_path / 'run'}']\n"
        "main()\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.count("\n") == 1 and words.format(tmp=tmp_path) in result.stderr, result.stderr
    assert "lightning imported: False" in result.stdout
    if "weights" in override:  # the weights are checked first, before torch is imported
        assert "torch imported: False" in result.stdout
    assert not (tmp_path / "run").exists()


# (script and arguments, words the one line must contain); {tmp} is the test's empty temporary directory.
SHIPPED_DIR = Path(__file__).resolve().parents[1] / "src" / "hspace" / "assets"
SCRIPT_CASES = [
    (["h_dependence.py", "--weights", "{tmp}/none"], "{tmp}/none"),
    (["shapes_noise_stability.py", "--weights", "{tmp}/none"], "{tmp}/none"),
    (["shapes_noise_stability.py", "--json", "{tmp}"], "--json={tmp} is a folder"),
    (["shapes_noise_stability.py", "--steps", "0"], "--steps=0 is below 1"),
    (["shapes_noise_stability.py", "--steps", "2000"], "--steps=2000 is above 1000"),
    (["widen_shapes_model.py", "--weights", "{tmp}/none", "--out", "{tmp}/out"], "{tmp}/none"),
    (["deepen_shapes_model.py", "--out", str(SHIPPED_DIR / "shapes32")], "is where --weights are read from"),
    (["widen_shapes_model.py", "--out", str(SHIPPED_DIR.parent)], "holds __init__.py"),
    (["shapes_model_quality.py", "--classifier", "{tmp}/none"], "{tmp}/none"),
    (["shapes_model_quality.py", "--grid", "{tmp}"], "--grid={tmp} is a folder"),
    (["shapes_model_quality.py", "--num-samples", "0"], "--num-samples must be at least 1"),
    (["edit_grid.py", "{tmp}", "pc0", "{tmp}"], "out={tmp} is a folder"),
    (["shapes_judge_failures.py", "{tmp}/none"], "{tmp}/none is not a folder"),
    (["shapes_judge_failures.py", "{tmp}"], "no edits.safetensors under {tmp}"),
    (["shapes_judge_failures.py", "{tmp}", "--grid", "{tmp}"], "--grid={tmp} is a folder"),
    (["bench.py", "--json", "{tmp}"], "--json={tmp} is a folder"),
    (["bench_jacobian.py", "--tau", "1000"], "--tau=1000 is above 999"),
    (["bench_pca_memory.py", "--n", "128", "1"], "--n[1]=1 is below 65"),
    (["bench_pca_memory.py", "--n", "128", "--batch", "10"], "--batch=10 is below 65"),
    (["bench_jacobian.py", "--k", "5000", "--steps", "2"], "--k[0]=5000 is above 768"),
    (["shapes_leaderboard.py", "--seeds", "0", "-1", "--runs", "{tmp}/runs"], "--seeds[1]=-1 is below 0"),
    (["shapes_leaderboard.py", "--seeds", "0", "0", "--runs", "{tmp}/runs"], "--seeds 0 0 repeats a seed"),
    (["bench_full_size.py", "--device", "gpu"], "--device='gpu' is not one of auto, cuda, cpu"),
    (["bench_full_size.py", "--device", "cpu", "--methods", "pca", "jacobain"], "method=jacobain is not an option"),
    (["h_dependence.py", "--num-samples", "1"], "--num-samples=1 is below 2"),
    (["pca_sign_paths.py", "--num-samples", "64"], "--num-samples=64 is below 65"),
    (["pca_sign_paths.py", "--num-components", "57"], "--num-components=57 is above 56"),
    (["pca_sign_paths.py", "--cache", __file__], f"--cache={__file__} is a file"),
    (["pca_sign_paths.py", "--spacing", "even"], "--spacing='even' is not one of leading, trailing, linspace"),
    (["pca_sign_paths.py", "--weights", "{tmp}/none"], "{tmp}/none"),
    (["adm_reference_outputs.py", "--guided-diffusion", "{tmp}/none"], "{tmp}/none holds no guided_diffusion/unet.py"),
    (["adm_reference_outputs.py", "--guided-diffusion", "{tmp}", "--output", "{tmp}"], "--output={tmp} is a folder"),
]


@pytest.mark.parametrize("args, words", SCRIPT_CASES, ids=[" ".join(case[0]) for case in SCRIPT_CASES])
def test_a_script_given_a_bad_argument_says_so_in_one_line(args, words, tmp_path):
    scripts = Path(__file__).resolve().parents[1] / "scripts"
    command = [sys.executable, str(scripts / args[0]), *(a.format(tmp=tmp_path) for a in args[1:])]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    assert words.format(tmp=tmp_path) in result.stderr, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written


@pytest.mark.parametrize("overrides, words", [(["num_samples=-1"], "num_samples=-1"), (["method=pca,pcaa"], "pcaa")])
def test_a_refused_sweep_leaves_no_sweep_folder(overrides, words, tmp_path, monkeypatch, capsys):
    sweep = tmp_path / "sweep"
    args = ["-m", *overrides, "logger=none", f"cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={sweep}"]
    code = call_main("run", args, monkeypatch)
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line.startswith("error")]
    assert code == 2 and len(err) == 1 and words in err[0], err
    assert not sweep.exists()  # neither multirun.yaml nor the job's folder


def test_a_sweep_is_checked_with_every_option_of_each_swept_group():
    from hspace.cli import CONFIG_DIR
    from hspace.cli.command_line import check_command_line, override_sets

    sets = override_sets(["method=pca,jacobian", "num_samples=2", "first_seed=range(0,1000)", "edit=shift"], CONFIG_DIR)
    assert sets == [  # a swept value composes like its first: only the group's options are composed each
        ["method=pca", "num_samples=2", "first_seed=0", "edit=shift"],
        ["method=jacobian", "num_samples=2", "first_seed=0", "edit=shift"],
    ]
    assert override_sets(["first_seed=range(0,4,0)"], CONFIG_DIR) is None  # not a range: Hydra says so
    check_command_line(CONFIG_DIR, "run", "hspace-run", ["hydra.mode=MULTIRUN", "method=pca,random"])  # a sweep too


def test_a_setting_that_only_some_swept_options_have_names_those_that_lack_it():
    """random has num_samples, jacobian has not: the line names jacobian, and does not advise adding the key
    with +, which would fail for random instead. A key no option has is a misspelling, as without a sweep."""
    from hspace.cli import CONFIG_DIR
    from hspace.cli.command_line import check_command_line
    from hspace.errors import UserError

    for methods in ("method=random,jacobian", "method=jacobian,random"):
        with pytest.raises(UserError) as refused:
            check_command_line(CONFIG_DIR, "run", "hspace-run", ["-m", methods, "method.num_samples=32"])
        assert str(refused.value) == (
            "method.num_samples is not a setting of method=jacobian (the sweep's other options have it): run "
            "method=jacobian in a sweep of its own, without method.num_samples"
        )
    with pytest.raises(UserError, match=r"method.nonsense is not a setting of hspace-run: check its spelling"):
        check_command_line(CONFIG_DIR, "run", "hspace-run", ["-m", "method=random,jacobian", "method.nonsense=1"])


def test_a_sweep_refused_in_a_later_job_keeps_the_finished_jobs(tmp_path, monkeypatch, capsys):
    run = tmp_path / "finished"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"method": "pca", "edit/pc0/success": 0.5}))
    (run / "config.yaml").write_text("method:\n  num_samples: 8\n")
    sweep = tmp_path / "sweep"
    args = ["-m", "digits=3,-1", f"runs=[{run}]", "plot.metric=null", f"hydra.sweep.dir={sweep}"]
    code = call_main("table", args, monkeypatch)
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line.startswith("error")]
    assert code == 2 and err == ["error: digits=-1 is below 0: give at least 0"], err
    assert (sweep / "0" / "summary.md").is_file() and (sweep / "multirun.yaml").is_file()  # job 0's tables stay
    assert not (sweep / "1").exists()


def test_a_target_for_a_direction_the_run_does_not_edit_is_named(capsys):
    from hspace.job import note_unused_targets
    from hspace.metrics.evaluation import EvaluationSettings

    note_unused_targets(EvaluationSettings(targets={"pc0": "red"}, factor_targets={"pc0": "r"}), ["pc0", "pc1"])
    assert capsys.readouterr().err == ""
    note_unused_targets(EvaluationSettings(targets={"PC0": "red"}, factor_targets={"pc7": "r"}), ["pc0", "pc1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "note: metrics.targets names PC0, which this run does not edit (pc0, pc1): those targets are not used",
        "note: metrics.factor_targets names pc7, which this run does not edit (pc0, pc1): those targets are not used",
    ]


def test_targets_nothing_scores_are_named(capsys):
    """Targets with metrics=none, or factor targets without factor scores, are said to be unused."""
    from omegaconf import OmegaConf

    from hspace.cli.run import note_unscored_targets
    from hspace.metrics.evaluation import EvaluationSettings

    both = OmegaConf.create({"targets": {"pc0": "bogus"}, "factor_targets": {"pc9": "r"}})
    note_unscored_targets(both, None)
    assert capsys.readouterr().err.strip().splitlines() == [
        "note: metrics.targets are not used: this run has no metrics.classifier to score them (metrics=shapes has "
        "both)",
        "note: metrics.factor_targets are not used: this run has no metrics.factors to score them (metrics=shapes has "
        "both)",
    ]
    note_unscored_targets(both, EvaluationSettings(factors=True))
    assert "metrics.targets are not used" in capsys.readouterr().err
    note_unscored_targets(OmegaConf.create({"targets": None}), None)
    assert capsys.readouterr().err == ""


def test_an_experiments_disentanglement_count_on_a_group_without_disentanglement_is_a_note(capsys):
    """experiment=quick sets metrics.disentanglement.num_images; with metrics=none, which scores no
    disentanglement, the count is said to be unused instead of refused for the bins it lacks."""
    from hydra import compose, initialize_config_dir

    from hspace.cli import CONFIG_DIR
    from hspace.cli.validate import check_metrics, disentanglement_count

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="run", overrides=["experiment=quick", "metrics=none"])
        shapes = compose(config_name="run", overrides=["experiment=quick"])
    check_metrics(cfg.metrics)
    assert disentanglement_count(cfg.metrics) == 0
    assert "metrics.disentanglement.num_images=64 is set, but this metrics group scores no" in capsys.readouterr().err
    assert disentanglement_count(shapes.metrics) == 64 and capsys.readouterr().err == ""
