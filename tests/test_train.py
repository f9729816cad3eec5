import subprocess
import sys

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from torch.utils.data import TensorDataset

from hspace.cli import CONFIG_DIR
from hspace.cli.train import train
from hspace.data.datamodule import ImageDataModule
from hspace.diffusion.loading import load_model
from hspace.diffusion.skips import skip_weight_norm
from hspace.lightning.ddpm import DDPMTraining

TINY = [
    "model.unet.block_out_channels=[8,8]",
    "model.cut_skip_levels=1",
    "model.unet.down_block_types=[DownBlock2D,DownBlock2D]",
    "model.unet.up_block_types=[UpBlock2D,UpBlock2D]",
    "model.unet.norm_num_groups=4",
    "model.unet.attention_head_dim=8",
    "data.n_train=64",
    "data.batch_size=8",
    "data.num_workers=0",
    "callbacks.sample_grid.num_samples=4",
    "callbacks.sample_grid.num_steps=3",
    "callbacks.sample_grid.every_n_steps=2",
    "checkpoint_every_n_steps=2",
    "trainer.enable_progress_bar=false",
    "module.warmup_steps=2",
]


def compose_train(overrides):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=TINY + overrides)


def test_train_writes_checkpoints_exports_and_resumes(tmp_path):
    run = tmp_path / "run"
    export = train(compose_train([f"run_dir={run}", "trainer.max_steps=4"]))
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "checkpoints" / "step_0000004.ckpt").is_file()
    assert sorted(p.name for p in (run / "samples").glob("*.png")) == ["step_0000002.png", "step_0000004.png"]
    assert "samples/pass_fraction" in (run / "logs" / "version_0" / "metrics.csv").read_text()
    model = load_model(str(export))  # the export loads through the pretrained-model path
    assert model.prediction_type == "v_prediction"
    assert skip_weight_norm(model.unet, 1) == 0  # the cut skips stayed cut through training, EMA and export
    assert skip_weight_norm(model.unet, 2) > 0

    resumed_dir = tmp_path / "resumed"
    train(compose_train([f"run_dir={resumed_dir}", "trainer.max_steps=6", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"]))
    checkpoint = torch.load(resumed_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == 6 and "ema" in checkpoint
    # Resuming continued from step 4: only steps 5 and 6 were trained, so the first grid drawn is step 6.
    assert sorted(p.name for p in (resumed_dir / "samples").glob("*.png")) == ["step_0000006.png"]


def test_wandb_logger_receives_the_sample_grids(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "run"
    train(compose_train([f"run_dir={run}", "trainer.max_steps=4", "logger=wandb"]))
    (offline_run,) = (run / "wandb").glob("offline-run-*")
    images = sorted(p.name.split("_")[0] for p in (offline_run / "files" / "media" / "images").glob("*.png"))
    assert images == ["samples", "samples"]  # steps 2 and 4, not drawn twice at the end
    import wandb

    assert wandb.run is None  # the run was closed


def test_training_works_on_any_image_datamodule(tmp_path):
    images = torch.rand(16, 3, 16, 16) * 2 - 1
    data = ImageDataModule(TensorDataset(images), TensorDataset(images), TensorDataset(images), batch_size=4)
    module = DDPMTraining(
        unet=dict(sample_size=16, block_out_channels=[8, 16], down_block_types=["DownBlock2D"] * 2, up_block_types=["UpBlock2D"] * 2, norm_num_groups=4, layers_per_block=1),
        scheduler=dict(prediction_type="epsilon"),
        warmup_steps=1,
    )
    before = [p.detach().clone() for p in module.unet.parameters()]
    pl.Trainer(max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False, default_root_dir=tmp_path).fit(module, datamodule=data)
    assert any(not torch.equal(a, b) for a, b in zip(before, module.unet.parameters()))
    with module.ema_weights():
        ema = [p.detach().clone() for p in module.unet.parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(ema, module.unet.parameters()))


def test_missing_checkpoint_is_one_line_and_exit_2(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "hspace.cli.train", f"ckpt_path={tmp_path}/none.ckpt", f"hydra.run.dir={tmp_path}/run"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "no checkpoint at ckpt_path=" in result.stderr
