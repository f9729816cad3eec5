import re
import subprocess
import sys
from pathlib import Path

import hydra
import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from torch.utils.data import TensorDataset

from hspace.bottleneck import HSpace
from hspace.cli import CONFIG_DIR
from hspace.cli.train import train
from hspace.data.datamodule import ImageDataModule
from hspace.diffusion.loading import load_model
from hspace.diffusion.skips import skip_weight_norm
from hspace.lightning.ddpm import DDPMTraining, model_from_checkpoint
from hspace.metrics.model_quality import draw_samples

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

# A UNet small enough to build and train in a test, for DDPMTraining directly.
TINY_UNET = dict(
    sample_size=16,
    block_out_channels=[8, 16],
    down_block_types=["DownBlock2D"] * 2,
    up_block_types=["UpBlock2D"] * 2,
    norm_num_groups=4,
)


def compose_train(overrides):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=TINY + overrides)


def test_train_writes_checkpoints_exports_and_resumes(tmp_path):
    run = tmp_path / "run"
    export = train(compose_train([f"run_dir={run}", "trainer.max_steps=4"]))
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "checkpoints" / "step_0000004.ckpt").is_file()
    assert sorted(p.name for p in (run / "samples").glob("*.png")) == ["step_0000002.png", "step_0000004.png"]
    assert "samples/pass_fraction" in (run / "logs" / "version_0" / "metrics.csv").read_text()
    assert sorted(p.name for p in export.iterdir()) == sorted(DDPMTraining.exported_files)
    model = load_model(str(export))  # the export loads through the pretrained-model path
    assert model.prediction_type == "v_prediction"
    assert skip_weight_norm(model.unet, 1) == 0  # the cut skips stayed cut through training, EMA and export
    assert skip_weight_norm(model.unet, 2) > 0
    three = draw_samples(model, 3, num_steps=3)
    alone = draw_samples(model, 2, batch_size=1, first_seed=1, num_steps=3).astype(int)  # seeds 1, 2
    assert np.abs(alone - three[1:]).max() <= 1  # the same samples (a CPU UNet's rounding depends on the batch)
    assert not np.array_equal(draw_samples(model, 3, num_steps=4), three)

    resumed_dir = tmp_path / "resumed"
    train(
        compose_train(
            [f"run_dir={resumed_dir}", "trainer.max_steps=6", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"]
        )
    )
    checkpoint = torch.load(resumed_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 6 and "ema" in checkpoint
    from_checkpoint = model_from_checkpoint(resumed_dir / "checkpoints" / "last.ckpt").unet.state_dict()
    exported = load_model(str(resumed_dir / "model")).unet.state_dict()
    assert all(torch.equal(exported[k], v) for k, v in from_checkpoint.items())  # the same EMA weights
    trained = model_from_checkpoint(resumed_dir / "checkpoints" / "last.ckpt", ema=False).unet.state_dict()
    unet_state = {k.removeprefix("unet."): v for k, v in checkpoint["state_dict"].items() if k.startswith("unet.")}
    assert unet_state.keys() == trained.keys() and all(torch.equal(trained[k], v) for k, v in unet_state.items())
    assert not all(torch.equal(trained[k], v) for k, v in from_checkpoint.items())
    # Resuming continued from step 4: only steps 5 and 6 were trained, so the first grid drawn is step 6.
    assert sorted(p.name for p in (resumed_dir / "samples").glob("*.png")) == ["step_0000006.png"]


def test_a_resumed_training_does_not_draw_its_first_steps_again(tmp_path, monkeypatch):
    """hspace-train seeds every stream with `seed` on resume too; the checkpoint's random states make the resumed
    steps draw new batches, timesteps and noise instead of the first steps' again."""
    drawn = []
    draw_timesteps, training_step = DDPMTraining.draw_timesteps, DDPMTraining.training_step

    def recording_draw(self, count, device="cpu"):
        taus = draw_timesteps(self, count, device)
        drawn[-1]["taus"] = taus.tolist()
        return taus

    def recording_step(self, batch, index):
        drawn.append({"step": self.global_step, "images": batch["index"].tolist()})
        return training_step(self, batch, index)

    monkeypatch.setattr(DDPMTraining, "draw_timesteps", recording_draw)
    monkeypatch.setattr(DDPMTraining, "training_step", recording_step)
    run = tmp_path / "run"
    train(compose_train([f"run_dir={run}", "trainer.max_steps=2", "callbacks.sample_grid.every_n_steps=100"]))
    fresh = list(drawn)
    drawn.clear()
    checkpoint = run / "checkpoints" / "last.ckpt"
    overrides = [f"run_dir={tmp_path / 'resumed'}", "trainer.max_steps=4", f"ckpt_path={checkpoint}"]
    train(compose_train([*overrides, "callbacks.sample_grid.every_n_steps=100"]))
    assert [d["step"] for d in fresh] == [0, 1] and [d["step"] for d in drawn] == [2, 3]
    for again, first in zip(drawn, fresh):
        assert again["images"] != first["images"] and again["taus"] != first["taus"]
    states = torch.load(checkpoint, map_location="cpu", weights_only=True)["random_states"]
    assert set(states) == {"torch", "cuda", "numpy", "python"}


def test_a_resumed_training_takes_the_steps_of_an_unbroken_one(tmp_path, monkeypatch, capsys):
    """Stopped by max_steps between two checkpoints, mid-epoch (8 batches an epoch), or by a SIGTERM, and resumed
    from last.ckpt, which holds the step it stopped at: the weights and the EMA are those of an unbroken run."""
    import os
    import signal

    from hspace.lightning.terminated import EXIT_STATUS

    steps = ["checkpoint_every_n_steps=5", "callbacks.sample_grid.every_n_steps=100"]

    def trained(run):
        checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        return checkpoint["global_step"], checkpoint["state_dict"], checkpoint["ema"]["shadow_params"]

    def resumed_to_14(run):
        last = run / "checkpoints" / "last.ckpt"
        train(compose_train([f"run_dir={run}_resumed", "trainer.max_steps=14", f"ckpt_path={last}", *steps]))
        return trained(Path(f"{run}_resumed"))

    train(compose_train([f"run_dir={tmp_path / 'unbroken'}", "trainer.max_steps=14", *steps]))
    step, weights, ema = trained(tmp_path / "unbroken")
    assert step == 14

    train(compose_train([f"run_dir={tmp_path / 'max_steps'}", "trainer.max_steps=11", *steps]))
    assert trained(tmp_path / "max_steps")[0] == 11  # not step 10, the last multiple of 5

    training_step = DDPMTraining.training_step

    def sigterm_in_step_7(self, batch, index):
        if self.global_step == 6:
            os.kill(os.getpid(), signal.SIGTERM)  # Lightning stops before the next step
        return training_step(self, batch, index)

    monkeypatch.setattr(DDPMTraining, "training_step", sigterm_in_step_7)
    previous = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(SystemExit) as stopped:
            train(compose_train([f"run_dir={tmp_path / 'sigterm'}", "trainer.max_steps=14", *steps]))
    finally:
        signal.signal(signal.SIGTERM, previous)
    monkeypatch.setattr(DDPMTraining, "training_step", training_step)
    assert stopped.value.code == EXIT_STATUS and "stopped by SIGTERM at step 7" in capsys.readouterr().err
    assert trained(tmp_path / "sigterm")[0] == 7

    for stopped in ("max_steps", "sigterm"):
        step_again, weights_again, ema_again = resumed_to_14(tmp_path / stopped)
        assert step_again == 14
        assert all(torch.equal(weights_again[k], v) for k, v in weights.items())
        assert all(torch.equal(a, b) for a, b in zip(ema_again, ema))


class ClassifierRuns:
    """Small classifier trainings in tmp_path (12 steps, a validation of 3 batches every 4) and what they logged."""

    def __init__(self, tmp_path, more=()):
        self.tmp_path = tmp_path
        self.settings = [
            "experiment=shapes_classifier",
            "data.n_train=64",
            "data.n_val=24",  # 3 validation batches
            "data.batch_size=8",
            "data.num_workers=0",
            "module.channels=[8,8]",
            "module.hidden=16",
            "trainer.max_steps=12",
            "trainer.val_check_interval=4",
            "checkpoint_every_n_steps=4",
            "trainer.enable_progress_bar=false",
            *more,
        ]

    def run(self, name, *resume):
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            train(compose(config_name="train", overrides=[*self.settings, f"run_dir={self.tmp_path / name}", *resume]))

    def stopped(self, monkeypatch, name, stop_at, *resume):
        """Run with a SIGTERM after batch 1 of the validation at step `stop_at` (Lightning stops before batch 2)."""
        import os
        import signal

        from hspace.lightning.classifier import AttributeClassifierTraining

        validation_step = AttributeClassifierTraining.validation_step

        def sigterm_after_batch_1(self, batch, index):
            if self.global_step == stop_at and index == 1:
                os.kill(os.getpid(), signal.SIGTERM)
            return validation_step(self, batch, index)

        monkeypatch.setattr(AttributeClassifierTraining, "validation_step", sigterm_after_batch_1)
        previous = signal.getsignal(signal.SIGTERM)
        try:
            with pytest.raises(SystemExit):
                self.run(name, *resume)
        finally:
            signal.signal(signal.SIGTERM, previous)
            monkeypatch.setattr(AttributeClassifierTraining, "validation_step", validation_step)

    def last(self, name):
        return self.tmp_path / name / "checkpoints" / "last.ckpt"

    def validations(self, name):
        import csv

        versions = sorted((self.tmp_path / name / "logs").glob("version_*"), key=lambda v: int(v.name.split("_")[1]))
        rows = [
            row for v in versions if (v / "metrics.csv").exists() for row in csv.DictReader(open(v / "metrics.csv"))
        ]
        return [(row["step"], row["val/acc_min"]) for row in rows if row.get("val/acc_min")]

    def weights(self, name):
        from safetensors.torch import load_file

        return load_file(self.tmp_path / name / "model" / "classifier.safetensors")  # what the training exported


@pytest.mark.parametrize(
    "more, stop_at",
    [
        ([], 8),  # step 8's checkpoint is written before its validation
        (["+trainer.accumulate_grad_batches=2", "trainer.val_check_interval=3"], 4),  # 2 batches a step
        ([], 12),  # the last: run after the resumed fit
        (["trainer.max_steps=-1", "+trainer.max_epochs=2"], 16),  # the last of max_epochs, resumed as it ran
    ],
    ids=["mid-training", "inside an accumulation", "the last validation", "the last validation of max_epochs"],
)
def test_a_classifier_stopped_by_a_sigterm_during_validation_resumes_as_an_unbroken_one(
    tmp_path, monkeypatch, capsys, more, stop_at
):
    """Lightning stops a validation between two batches at a SIGTERM. With steps to come, the resumed training
    runs it again, whole, before its next step, so it logs the validations of an unbroken run (before, the resume
    skipped it: step 8's was never logged). Inside a gradient accumulation the checkpoint is the last whole step's
    (it holds no gradients), and Lightning runs the validation again when the resume reaches it. At the last step
    Lightning ends the resume before any validation: hspace-train runs it after the resumed fit (before, it was
    lost). The exported weights are the unbroken run's in every case."""
    runs = ClassifierRuns(tmp_path, more)
    runs.run("unbroken")
    unbroken = runs.validations("unbroken")
    runs.stopped(monkeypatch, "stopped", stop_at)
    assert f"stopped by SIGTERM at step {stop_at}" in capsys.readouterr().err
    stopped = runs.validations("stopped")
    assert stopped == unbroken[: len(stopped)]

    runs.run("resumed", f"ckpt_path={runs.last('stopped')}")
    assert stopped + runs.validations("resumed") == unbroken
    assert all(torch.equal(runs.weights("resumed")[k], v) for k, v in runs.weights("unbroken").items())


def test_a_last_validation_cut_short_twice_is_owed_until_it_has_run(tmp_path, monkeypatch):
    """A SIGTERM in the validation that a resume runs after its fit (the last, cut short before) leaves the resume's
    own last.ckpt owing it too; the resume in that run that runs it whole clears the mark, so a further resume
    does not log it again."""
    from hspace.lightning.training_checkpoints import FINAL_VALIDATION_CUT_SHORT

    def owes(name):
        saved = torch.load(runs.last(name), map_location="cpu", weights_only=True)
        return saved.get(FINAL_VALIDATION_CUT_SHORT) is not None

    runs = ClassifierRuns(tmp_path)
    runs.run("unbroken")
    runs.stopped(monkeypatch, "stopped", 12)
    runs.stopped(monkeypatch, "again", 12, f"ckpt_path={runs.last('stopped')}")
    assert owes("stopped") and owes("again") and runs.validations("again") == []
    runs.run("again", f"ckpt_path={runs.last('again')}")  # in the same run directory
    assert runs.validations("stopped") + runs.validations("again") == runs.validations("unbroken")
    assert not owes("again")
    runs.run("once_more", f"ckpt_path={runs.last('again')}")
    assert runs.validations("once_more") == []


def test_a_validation_run_because_training_was_to_stop_is_owed_not_rerun_at_a_step_that_does_not_validate(
    tmp_path, monkeypatch, capsys
):
    """max_time (here: should_stop set in step 6's batch) makes Lightning validate at once, at a step that is no
    validation step. A SIGTERM in that validation marks the checkpoint as owing it, without touching Lightning's
    counts: a resume that trains on says in a note that it was not run again, and validates at the unbroken
    run's steps (before, the counts made every later validation log one step early)."""
    import torch

    from hspace.lightning.classifier import AttributeClassifierTraining
    from hspace.lightning.training_checkpoints import FINAL_VALIDATION_CUT_SHORT

    runs = ClassifierRuns(tmp_path)
    runs.run("unbroken")
    training_step = AttributeClassifierTraining.training_step

    def stop_after_step_6(self, batch, index):
        if self.global_step == 5:
            self.trainer.should_stop = True
        return training_step(self, batch, index)

    monkeypatch.setattr(AttributeClassifierTraining, "training_step", stop_after_step_6)
    runs.stopped(monkeypatch, "stopped", 6)
    monkeypatch.setattr(AttributeClassifierTraining, "training_step", training_step)
    checkpoint = torch.load(runs.last("stopped"), map_location="cpu", weights_only=True)
    assert checkpoint[FINAL_VALIDATION_CUT_SHORT] == 5 and checkpoint["global_step"] == 6  # logged at 5, as 4 at 3
    progress = checkpoint["loops"]["fit_loop"]["epoch_loop.val_loop.batch_progress"]["total"]
    assert progress["completed"] == progress["started"]  # Lightning's counts as it left them
    capsys.readouterr()
    runs.run("resumed", f"ckpt_path={runs.last('stopped')}")
    assert "the validation at step 6, which a SIGTERM cut short, was not run again" in capsys.readouterr().err
    unbroken = runs.validations("unbroken")
    assert runs.validations("resumed") == [v for v in unbroken if int(v[0]) > 6]


def test_a_training_limited_by_epochs_resumes_in_the_order_it_left_and_reloads_go_on_in_it(tmp_path, monkeypatch):
    """A checkpoint whose epoch has ended, with no max_steps (max_epochs; max_time stops the same way), is no
    restart to Lightning, which then hands the loader's place back to no loader: the datamodule keeps the place.
    Reloaded loaders go on in the order, and overfit_batches takes the same first batches every epoch."""
    epochs = ["trainer.max_steps=-1", "checkpoint_every_n_steps=100", "callbacks.sample_grid.every_n_steps=100"]

    def weights(run):
        return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]

    train(compose_train([f"run_dir={tmp_path / 'unbroken'}", "+trainer.max_epochs=2", *epochs]))
    train(compose_train([f"run_dir={tmp_path / 'one'}", "+trainer.max_epochs=1", *epochs]))
    last = tmp_path / "one" / "checkpoints" / "last.ckpt"
    train(compose_train([f"run_dir={tmp_path / 'two'}", "+trainer.max_epochs=2", f"ckpt_path={last}", *epochs]))
    unbroken, resumed = weights(tmp_path / "unbroken"), weights(tmp_path / "two")
    assert all(torch.equal(resumed[k], v) for k, v in unbroken.items())

    seen = []
    training_step = DDPMTraining.training_step

    def recording_step(self, batch, index):
        seen.append(batch["index"].tolist())
        return training_step(self, batch, index)

    monkeypatch.setattr(DDPMTraining, "training_step", recording_step)
    reload = ["+trainer.reload_dataloaders_every_n_epochs=1", "+trainer.max_epochs=2"]
    train(compose_train([f"run_dir={tmp_path / 'reloaded'}", *reload, *epochs]))
    first, second = sorted(i for b in seen[:8] for i in b), sorted(i for b in seen[8:] for i in b)
    assert len(seen) == 16 and first == second == list(range(64)) and seen[:8] != seen[8:]
    seen.clear()
    train(compose_train([f"run_dir={tmp_path / 'overfit'}", "+trainer.overfit_batches=2", "trainer.max_steps=6"]))
    assert len(seen) == 6 and seen[0:2] == seen[2:4] == seen[4:6] and seen[0] != seen[1]


def test_a_checkpoint_without_a_place_in_the_data_order_resumes_with_a_note(tmp_path, capsys):
    run = tmp_path / "run"
    quiet = ["callbacks.sample_grid.every_n_steps=100"]
    train(compose_train([f"run_dir={run}", "trainer.max_steps=2", *quiet]))
    last = run / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, map_location="cpu", weights_only=True)
    assert checkpoint.pop("ShapesDataModule") == {"training_batches": 2}
    assert checkpoint["loops"]["fit_loop"]["state_dict"].pop("combined_loader") == [{"batches": 2}]
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)  # as a checkpoint written before the datamodule kept the place
    capsys.readouterr()
    train(compose_train([f"run_dir={tmp_path / 'again'}", "trainer.max_steps=3", f"ckpt_path={old}", *quiet]))
    assert "holds no place in the training data's order" in capsys.readouterr().err
    resumed = torch.load(tmp_path / "again" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert resumed["global_step"] == 3 and resumed["ShapesDataModule"] == {"training_batches": 1}


def test_a_resume_with_another_checkpoint_interval_rewrites_last_ckpt_in_place(tmp_path):
    run = tmp_path / "run"
    quiet = ["callbacks.sample_grid.every_n_steps=100"]
    train(compose_train([f"run_dir={run}", "trainer.max_steps=6", "checkpoint_every_n_steps=4", *quiet]))
    last = run / "checkpoints" / "last.ckpt"
    train(
        compose_train(
            [f"run_dir={run}", "trainer.max_steps=9", "checkpoint_every_n_steps=3", f"ckpt_path={last}", *quiet]
        )
    )
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.ckpt", "step_0000009.ckpt"]
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 9


def test_a_resume_into_another_run_directory_reloads_no_list_of_checkpoints_and_warns_of_none(tmp_path):
    import warnings

    from hspace.lightning.training_checkpoints import TrainingCheckpoints

    old = TrainingCheckpoints(tmp_path / "first" / "checkpoints", 5)
    old.last_model_path = str(tmp_path / "first" / "checkpoints" / "last.ckpt")
    state = old.state_dict()
    same = TrainingCheckpoints(tmp_path / "first" / "checkpoints", 7)
    same.load_state_dict(state)
    assert same.last_model_path == old.last_model_path
    other = TrainingCheckpoints(tmp_path / "second" / "checkpoints", 5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Lightning's "The dirpath has changed" warning
        other.load_state_dict(state)
    assert other.last_model_path == "" and other.best_model_path == ""


def test_the_progress_bar_counts_toward_the_limit_that_ends_the_training(tmp_path, capsys):
    """One bar for the run, not Lightning's bar of each epoch: max_epochs counts the steps of those epochs,
    max_time alone its seconds, with the step beside them."""
    bar = ["progress=true", "trainer.enable_progress_bar=true", "trainer.max_steps=-1"]
    train(compose_train([f"run_dir={tmp_path / 'epochs'}", *bar, "+trainer.max_epochs=2"]))
    shown = capsys.readouterr().err
    assert "train steps: 100%" in shown and "16/16" in shown and "Epoch" not in shown  # 8 batches an epoch
    train(compose_train([f"run_dir={tmp_path / 'time'}", *bar, "trainer.max_time=00:00:00:02"]))
    shown = capsys.readouterr().err
    assert re.search(r"train time: +\d+%\|.*\| [\d:?]+ left, step=\d+, ", shown) and "Epoch" not in shown


def test_a_checkpoint_write_that_fails_leaves_the_previous_one_whole(tmp_path, monkeypatch):
    from hspace.lightning.training_checkpoints import AtomicCheckpointIO

    path = tmp_path / "last.ckpt"
    writer = AtomicCheckpointIO()
    writer.save_checkpoint({"global_step": 1}, path)

    def torn(checkpoint, file):
        file.write(b"half a checkpoint")
        raise OSError("killed while writing")

    monkeypatch.setattr(torch, "save", torn)
    with pytest.raises(OSError, match="killed"):
        writer.save_checkpoint({"global_step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"global_step": 1} and [p.name for p in tmp_path.iterdir()] == [
        "last.ckpt"
    ]


def test_each_rank_trains_on_its_own_rows_of_one_draw_of_timesteps_and_noise(monkeypatch):
    """Ranks seeded alike draw the timesteps and noise of every rank's images and take their own rows: rank 1 of
    2 gets the second half of what one process drawing for both would get; one process draws as randn_like."""
    from hspace.distributed import Shard
    from hspace.lightning import ddpm

    module = DDPMTraining(unet={**TINY_UNET, "layers_per_block": 1}, scheduler=dict(prediction_type="epsilon"))
    drawn = []
    monkeypatch.setattr(module, "noised", lambda x0, eps, tau: (drawn.append((eps, tau)), (x0, x0))[1])
    batch = {"image": torch.zeros(3, 3, 16, 16)}
    for shard in (Shard(1, 2), Shard(0, 1)):
        monkeypatch.setattr(ddpm.Shard, "current", classmethod(lambda cls, shard=shard: shard))
        torch.manual_seed(7)
        module.training_step(batch, 0)
    torch.manual_seed(7)
    both_taus, both_noise = torch.randint(0, 1000, (6,)), torch.randn(6, 3, 16, 16)
    (rank1_noise, rank1_taus), (alone_noise, alone_taus) = drawn
    assert torch.equal(rank1_taus, both_taus[3:]) and torch.equal(rank1_noise, both_noise[3:])
    torch.manual_seed(7)
    taus = torch.randint(0, 1000, (3,))
    assert torch.equal(alone_taus, taus) and torch.equal(alone_noise, torch.randn_like(batch["image"]))


def test_random_states_come_back_as_they_were_saved():
    import random

    from hspace.lightning.random_states import random_states, restore_random_states

    saved = random_states()
    first = (torch.rand(3), np.random.rand(3), random.random())
    torch.rand(5), np.random.rand(5), random.random()  # the streams move on
    restore_random_states(saved)
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(first[0], again[0]) and np.array_equal(first[1], again[1]) and first[2] == again[2]


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
        unet={**TINY_UNET, "layers_per_block": 1},
        scheduler=dict(prediction_type="epsilon"),
        warmup_steps=1,
    )
    before = [p.detach().clone() for p in module.unet.parameters()]
    trained = []  # the weights after each optimiser step

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, *args):
            trained.append([p.detach().clone() for p in pl_module.unet.parameters()])

    pl.Trainer(
        max_steps=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
        callbacks=[Record()],
    ).fit(module, datamodule=data)
    assert len(trained) == 3 and any(not torch.equal(a, b) for a, b in zip(before, module.unet.parameters()))
    # The EMA, written out: after optimiser step k it moves by (1 - d_k) towards the weights, with the warm-up
    # decay d_k = min(ema_decay, k / (9 + k)) from the second step on (d_1 = 0: the first step copies them).
    expected = [p.clone() for p in before]
    for k, weights in enumerate(trained, start=1):
        decay = 0.0 if k == 1 else min(0.999, k / (9 + k))
        expected = [decay * e + (1 - decay) * w for e, w in zip(expected, weights)]
    with module.ema_weights():
        ema = [p.detach().clone() for p in module.unet.parameters()]
    for got, want in zip(ema, expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert any(not torch.equal(a, b) for a, b in zip(ema, module.unet.parameters()))


def test_missing_checkpoint_is_one_line_and_exit_2(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "hspace.cli.train", f"ckpt_path={tmp_path}/none.ckpt", f"hydra.run.dir={tmp_path}/run"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "no checkpoint at ckpt_path=" in result.stderr


def test_learning_rate_schedules():
    from hspace.learning_rate import learning_rate_factor

    constant = [learning_rate_factor(s, 4, "constant", 4, 20, 0.0) for s in range(30)]
    assert constant[:4] == [0.25, 0.5, 0.75, 1.0] and set(constant[4:]) == {1.0}
    cosine = [learning_rate_factor(s, 4, "cosine", 4, 20, 0.1) for s in range(30)]
    assert cosine[:5] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert cosine[12] == pytest.approx(0.1 + 0.9 * 0.5) and cosine[20:] == [pytest.approx(0.1)] * 10
    assert all(a >= b for a, b in zip(cosine[4:], cosine[5:]))
    from hspace.errors import UserError
    from hspace.learning_rate import decay_range

    assert decay_range(4, None, 5, 100) == (4, 5)  # one step of decay
    with pytest.raises(UserError, match="decays from step 4 .* which is 4"):
        decay_range(4, None, 4, 100)  # a decay that would end where it starts
    stable_then_decay = [learning_rate_factor(s, 4, "cosine", 10, 20, 0.0) for s in range(30)]
    assert (
        stable_then_decay[4:11] == [1.0] * 7
        and stable_then_decay[15] == pytest.approx(0.5)
        and stable_then_decay[20] == 0.0
    )


def test_min_snr_weights_cap_the_x0_error_weight():
    """Weighted v loss = min(SNR + 1, gamma) x (x0 error), checked through the sampler's own conversion."""
    from hspace.diffusion.ddim import to_x0_eps
    from hspace.diffusion.schedule import training_alphas_cumprod
    from hspace.lightning.ddpm import eps_loss_weights, v_loss_weights

    alphas = training_alphas_cumprod(
        dict(num_train_timesteps=1000, beta_schedule="linear", rescale_betas_zero_snr=True)
    )
    weights = v_loss_weights(alphas, 5.0)
    assert weights[-1] == 1.0 and weights[0] < 0.01  # full weight at SNR 0, little on nearly clean images
    generator = torch.Generator().manual_seed(0)
    x_t, v, v_hat = (torch.randn(3, 8, 8, generator=generator, dtype=torch.float64) for _ in range(3))
    for tau in (0, 300, 700, 999):
        a = float(alphas[tau])
        x0_error = ((to_x0_eps(v_hat, x_t, a, "v_prediction")[0] - to_x0_eps(v, x_t, a, "v_prediction")[0]) ** 2).sum()
        snr = a / (1 - a)
        assert float(weights[tau] * ((v_hat - v) ** 2).sum()) == pytest.approx(
            min(snr + 1, 5.0) * float(x0_error), rel=1e-6
        )
    eps_alphas = training_alphas_cumprod(dict(num_train_timesteps=1000, beta_schedule="linear"))
    eps_weights = eps_loss_weights(eps_alphas, 5.0)
    snr = eps_alphas / (1 - eps_alphas)
    assert torch.allclose(eps_weights, torch.minimum(snr, torch.tensor(5.0, dtype=snr.dtype)) / snr)


def test_training_starts_from_init_weights_and_refuses_another_architecture(tmp_path):
    run = tmp_path / "run"
    export = train(compose_train([f"run_dir={run}", "trainer.max_steps=2"]))
    module = DDPMTraining(
        **{k: v for k, v in compose_train([]).module.items() if k != "_target_"} | {"init_weights": str(export)}
    )
    pretrained = load_model(str(export)).unet.state_dict()
    assert all(torch.equal(pretrained[k], v) for k, v in module.unet.state_dict().items())
    with module.ema_weights():  # the EMA starts at the same weights
        assert all(torch.equal(pretrained[k], v) for k, v in module.unet.state_dict().items())

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "hspace.cli.train",
            f"module.init_weights={export}",
            f"hydra.run.dir={tmp_path}/other",
            "trainer.max_steps=1",
        ],
        capture_output=True,
        text=True,
    )
    errors = [line for line in result.stderr.strip().splitlines() if not line.startswith("note: ")]
    assert result.returncode == 2 and len(errors) == 1 and "another architecture than model.unet" in errors[0]


def test_the_training_loss_is_the_min_snr_weighted_mean_and_the_ema_takes_its_decay():
    """One training step, replayed by hand with the same draws: the loss weights each image's error by its
    timestep's Min-SNR weight before averaging (the plain mean is logged beside it); the EMA is built with the
    configured decay."""
    module = DDPMTraining(
        unet={**TINY_UNET, "layers_per_block": 1},
        scheduler=dict(prediction_type="v_prediction", rescale_betas_zero_snr=True),
        loss_weighting="min_snr",
        ema_decay=0.75,
    )
    assert module.ema.decay == 0.75
    x0 = torch.rand(6, 3, 16, 16) * 2 - 1
    torch.manual_seed(0)
    loss = module.training_step({"image": x0}, 0)
    torch.manual_seed(0)
    tau = module.draw_timesteps(6, x0.device)
    x_t, target = module.noised(x0, torch.randn_like(x0), tau)
    with torch.no_grad():
        error = ((module.unet(x_t, tau).sample - target) ** 2).mean(dim=(1, 2, 3))
    weights = module.timestep_weights[tau]
    assert not torch.allclose(weights, torch.ones(6))
    torch.testing.assert_close(loss.detach(), (weights * error).mean())


def test_cosine_decay_reaches_its_minimum_and_min_snr_trains(tmp_path):
    images = torch.rand(16, 3, 16, 16) * 2 - 1
    data = ImageDataModule(TensorDataset(images), TensorDataset(images), TensorDataset(images), batch_size=4)
    module = DDPMTraining(
        unet={**TINY_UNET, "layers_per_block": 1},
        scheduler=dict(prediction_type="v_prediction", rescale_betas_zero_snr=True),
        lr=1e-3,
        warmup_steps=1,
        lr_schedule="cosine",
        min_lr_ratio=0.1,
        loss_weighting="min_snr",
    )
    trainer = pl.Trainer(
        max_steps=6, logger=False, enable_checkpointing=False, enable_progress_bar=False, default_root_dir=tmp_path
    )
    trainer.fit(module, datamodule=data)
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(1e-4)


def test_max_timestep_bounds_the_training_timesteps():

    torch.manual_seed(0)
    low = DDPMTraining(unet=TINY_UNET, scheduler={}, max_timestep=199).draw_timesteps(20_000)
    assert low.min() == 0 and low.max() == 199  # every timestep of the range, none above it
    every = DDPMTraining(unet=TINY_UNET, scheduler={}).draw_timesteps(20_000)
    assert every.max() == 999


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_training_noises_and_targets_as_diffusers_does(prediction_type):
    """x_t and the target against DDPMScheduler.add_noise and get_velocity, on the shipped model's schedule."""
    from diffusers import DDPMScheduler

    scheduler = {
        "beta_schedule": "linear",
        "rescale_betas_zero_snr": prediction_type == "v_prediction",
        "prediction_type": prediction_type,
    }
    module = DDPMTraining(unet=TINY_UNET, scheduler=scheduler)
    reference = DDPMScheduler(**scheduler)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(6, 3, 16, 16, generator=g), torch.randn(6, 3, 16, 16, generator=g)
    tau = torch.tensor([0, 1, 250, 500, 998, 999])
    x_t, target = module.noised(x0, eps, tau)
    torch.testing.assert_close(x_t, reference.add_noise(x0, eps, tau), rtol=1e-5, atol=1e-5)
    expected = eps if prediction_type == "epsilon" else reference.get_velocity(x0, eps, tau)
    torch.testing.assert_close(target, expected, rtol=1e-5, atol=1e-5)


def test_bad_training_settings_are_one_line():
    from hspace.errors import UserError

    for bad, message in [
        ({"lr_schedule": "linear"}, "module.lr_schedule"),
        ({"loss_weighting": "p2"}, "module.loss_weighting"),
        ({"min_lr_ratio": 2.0}, "module.min_lr_ratio"),
        ({"max_timestep": 1000}, "module.max_timestep"),
        ({"max_timestep": -1}, "module.max_timestep"),
        ({"lr": -1.0}, "module.lr=-1.0 must be greater than 0"),
        ({"lr": 0}, "module.lr=0 must be greater than 0"),
        ({"weight_decay": -0.1}, "module.weight_decay=-0.1 is below 0"),
        ({"warmup_steps": -5}, "module.warmup_steps=-5 is below 0"),
        ({"warmup_steps": 2.5}, "module.warmup_steps=2.5 is not a whole number"),
        ({"ema_decay": 2}, "module.ema_decay=2 is above 1"),
        ({"cut_skip_levels": -1}, "module.cut_skip_levels=-1 is below 0"),
        ({"decay_steps": -3}, "module.decay_steps=-3 is below 0"),
        ({"min_snr_gamma": 0}, "module.min_snr_gamma=0 must be greater than 0"),
        ({"unet": {**TINY_UNET, "block_out_channels": [8]}}, r"model.unet does not make a UNet2DModel \(Must provide"),
    ]:
        with pytest.raises(UserError, match=message):
            DDPMTraining(**{"unet": TINY_UNET, "scheduler": {}, **bad})


@pytest.mark.slow
def test_the_gpu_training_script_trains_exports_and_measures(tmp_path):
    """scripts/train_shapes_gpu.sh end to end with a tiny UNet, on the CPU (bf16 autocast included)."""
    import json
    import os
    from pathlib import Path

    root = Path(__file__).parents[1]
    overrides = [o for o in TINY if not o.startswith("data.num_workers")]
    command = [
        "bash",
        str(root / "scripts" / "train_shapes_gpu.sh"),
        "trainer.accelerator=cpu",
        "trainer.max_steps=4",
        "module.decay_start=2",
        "module.decay_steps=4",
        "data.num_workers=0",
        *overrides,
    ]
    env = {**os.environ, "RUN_DIR": str(tmp_path / "run"), "QUALITY_SAMPLES": "4", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=root)
    assert result.returncode == 0, result.stderr[-2000:]
    assert load_model(str(tmp_path / "run" / "model")).prediction_type == "v_prediction"
    report = json.loads((tmp_path / "run" / "quality.json").read_text())
    assert (
        report["num_samples"] == 4
        and set(report["judge"]) >= {"pass_fraction"}
        and "shape_clear_fraction" in report["clarity"]
    )
    assert (tmp_path / "run" / "quality_samples.png").is_file()


def test_a_training_across_two_processes_shards_its_batches_and_saves_its_place(tmp_path):
    """trainer=ddp on two CPU processes (gloo): the training loader takes each rank's part of every batch row
    itself (hspace.data.epoch_order), which Lightning must not replace by a DistributedSampler."""
    import os

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    tiny = [o for o in TINY if not o.startswith("callbacks.")]
    command = [str(Path(sys.executable).parent / "hspace-train"), *tiny, "callbacks=none", "logger=none"]
    devices = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32"]
    result = subprocess.run(
        [*command, *devices, "trainer.max_steps=3", f"run_dir={tmp_path / 'run'}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 3 and checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [
        {"batches": 3}
    ]


def test_a_short_cli_training_shows_its_steps_logs_its_loss_and_resumes_in_its_own_directory(tmp_path):
    import os

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    script = str(Path(sys.executable).parent / "hspace-train")
    common = [
        "data.batch_size=4",
        "data.num_workers=0",
        "callbacks=none",
        "checkpoint_every_n_steps=10",
        "progress=true",
    ]
    first = subprocess.run(
        [script, *common, "trainer.max_steps=20", f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert first.returncode == 0, first.stderr[-2000:]
    assert "train steps" in first.stderr and "20/20" in first.stderr and "Epoch 0/-" not in first.stderr
    assert "Total params" not in first.stdout  # Lightning's model summary only with verbose=true
    losses = [line for line in (tmp_path / "run" / "logs" / "version_0" / "metrics.csv").read_text().splitlines()[1:]]
    assert len(losses) >= 5  # logged every 2 steps in a 20-step run, not every 50
    first_record = (tmp_path / "run" / "config.yaml").read_text()

    second = subprocess.run(
        [
            script,
            *common,
            "trainer.max_steps=24",
            f"ckpt_path={tmp_path / 'run' / 'checkpoints' / 'last.ckpt'}",
            f"hydra.run.dir={tmp_path / 'elsewhere'}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert second.returncode == 0, second.stderr[-2000:]
    assert f"note: resuming the run in {tmp_path / 'run'}" in second.stderr
    assert not (tmp_path / "elsewhere").exists()
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["global_step"] == 24
    # the first training's record stays; the resumed one's goes beside it
    assert (tmp_path / "run" / "config.yaml").read_text() == first_record
    assert "max_steps: 24" in (tmp_path / "run" / "resume_1" / "config.yaml").read_text()


def test_the_global_h_recipe_builds_a_48x1x1_bottleneck_that_only_the_32x32_skip_bypasses():
    """conf/experiment/shapes32_ddpm_h1.yaml: h is one vector per sample, and every skip coarser than 32x32 is cut,
    so the decoder's only input besides h is the finest skip."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=["experiment=shapes32_ddpm_h1"])
    torch.manual_seed(0)
    unet = hydra.utils.instantiate(cfg.module, _convert_="all").unet  # as hspace-train builds it
    assert len(unet.up_blocks) == 6 and skip_weight_norm(unet, 5) == 0.0
    assert skip_weight_norm(unet, 6) > 0  # the 32x32 skips are kept
    with torch.no_grad(), HSpace(unet, capture=True) as hs:
        unet(torch.randn(2, 3, 32, 32), torch.tensor([500, 500]))
    assert tuple(hs.captured[0].shape) == (2, 48, 1, 1)


def test_a_sample_grid_is_drawn_once_per_step_when_gradients_accumulate(monkeypatch):
    from types import SimpleNamespace

    from hspace.lightning.sample_grid import SampleGrid

    grid, drawn = SampleGrid(every_n_steps=2), []

    def draw(trainer, module):
        grid.last_drawn_step = trainer.global_step
        drawn.append(trainer.global_step)

    monkeypatch.setattr(grid, "draw", draw)
    for step in (0, 0, 1, 1, 2, 2, 3, 3, 4, 4):  # two micro-batches per optimizer step
        grid.on_train_batch_end(SimpleNamespace(global_step=step), None, None, None, 0)
    assert drawn == [0, 2, 4]


def test_a_warm_up_as_long_as_the_run_is_named(capsys):
    from hspace.cli.validate import check_training

    for overrides, named in (
        (["trainer.max_steps=2"], True),  # TINY's warm-up of 2 steps
        (["trainer.max_steps=500", "module.warmup_steps=500"], True),
        (["trainer.max_steps=501", "module.warmup_steps=500"], False),
        (["trainer.max_steps=4", "module.warmup_steps=0"], False),
        (["trainer.max_steps=-1", "trainer.max_time=00:00:01:00"], False),  # no step count to compare with
    ):
        check_training(compose_train(["run_dir=unused", *overrides]))
        notes = [line for line in capsys.readouterr().err.splitlines() if "module.warmup_steps" in line]
        assert bool(notes) == named, overrides
        assert not notes or notes[0].startswith("note: ") and "never" not in notes[0]


def test_a_file_that_is_not_a_ddpm_checkpoint_is_one_line(tmp_path):
    """The scripts that read a training checkpoint (h_dependence, shapes_model_quality) refuse in one line what
    is not one: text, a checkpoint without the EMA, a classifier's checkpoint."""
    from hspace.errors import UserError

    text, no_ema, classifier = tmp_path / "text.ckpt", tmp_path / "no_ema.ckpt", tmp_path / "classifier.ckpt"
    text.write_text("just text\n")
    torch.save({"hyper_parameters": {"unet": {}, "scheduler": {}}, "state_dict": {}}, no_ema)
    torch.save({"hyper_parameters": {"attributes": ["a"]}, "state_dict": {}, "ema": {}}, classifier)
    for path, words in (
        (tmp_path / "none.ckpt", "no checkpoint at --checkpoint"),
        (text, "does not load as weights only (it is damaged or not a torch checkpoint)"),
        (no_ema, "is not a DDPM training checkpoint (it lacks ema)"),
        (classifier, "is not a DDPM training checkpoint (it lacks a UNet config)"),
    ):
        with pytest.raises(UserError, match=re.escape(words)):
            model_from_checkpoint(path)


def test_a_resumed_training_keeps_the_first_trainings_record(tmp_path):
    from hspace.cli.train import record_dir

    assert record_dir(tmp_path) == tmp_path  # a new run records in its own directory
    (tmp_path / "config.yaml").write_text("the first training's settings")
    assert record_dir(tmp_path) == tmp_path / "resume_1"
    (tmp_path / "resume_1").mkdir()
    assert record_dir(tmp_path) == tmp_path / "resume_2"


def test_a_recipes_callback_settings_under_callbacks_none_leave_the_callback_off(capsys):
    """A stage recipe sets callbacks.sample_grid.every_n_steps; with callbacks=none that entry has settings but no
    _target_: it is off, with a note, instead of reaching Lightning as a dict."""
    from omegaconf import OmegaConf

    from hspace.cli.train import configured_callbacks

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=["experiment=shapes32_ddpm_v2", "callbacks=none"])
    assert OmegaConf.to_container(cfg.callbacks) == {"sample_grid": {"every_n_steps": 1000}}
    assert configured_callbacks(cfg.callbacks) == []
    assert "note: callbacks.sample_grid sets every_n_steps but names no callback" in capsys.readouterr().err
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        kept = compose(config_name="train", overrides=["experiment=shapes32_ddpm_v2"]).callbacks
    assert [node["_target_"] for node in configured_callbacks(kept)] == ["hspace.lightning.sample_grid.SampleGrid"]


def test_a_checkpoint_the_configured_module_cannot_resume_is_one_line_before_training(tmp_path, capsys):
    """Weights of another architecture: one line, and the run writes nothing (before, a size-mismatch traceback
    after the run's config was recorded); other module settings: a note naming them, and the resume goes on."""
    run = tmp_path / "run"
    train(compose_train([f"run_dir={run}", "trainer.max_steps=2"]))
    last = run / "checkpoints" / "last.ckpt"
    wider = [f"run_dir={tmp_path / 'wider'}", "trainer.max_steps=4", f"ckpt_path={last}"]
    capsys.readouterr()
    with pytest.raises(SystemExit):
        train(compose_train([*wider, "model.unet.block_out_channels=[16,16]"]))
    err = capsys.readouterr().err
    assert "holds weights that do not fit the configured DDPMTraining (shape of unet.conv_in.weight" in err
    assert not (tmp_path / "wider").exists()
    train(
        compose_train(
            [f"run_dir={tmp_path / 'changed'}", "trainer.max_steps=4", f"ckpt_path={last}", "module.lr=0.002"]
        )
    )
    assert "resuming with module settings other than the checkpoint's (lr: 0.001 -> 0.002)" in capsys.readouterr().err


def test_a_one_cycle_schedule_is_not_lengthened_by_a_resume():
    """A module whose learning rate spans the whole training (the classifier's one-cycle schedule) cannot be
    resumed for another number of steps: one line naming the schedule's length, not a ValueError from the
    scheduler after training started."""
    from hspace.checkpoints import check_resumes
    from hspace.errors import UserError

    class OneCycle(torch.nn.Linear):
        needs_known_length = True
        hparams: dict = {}

    module = OneCycle(2, 2)
    checkpoint = {"state_dict": module.state_dict(), "lr_schedulers": [{"total_steps": 10}]}
    assert check_resumes(module, checkpoint, "ckpt_path=c", 10) == []
    with pytest.raises(
        UserError, match=r"ckpt_path=c follows a learning-rate schedule over 10 steps, .* trainer\.max_steps=10,"
    ):
        check_resumes(module, checkpoint, "ckpt_path=c", 20)
    for by_epochs in (-1, None):  # max_epochs or max_time sets the length, as when the schedule was built
        assert check_resumes(module, checkpoint, "ckpt_path=c", by_epochs) == []

    class Constant(OneCycle):  # a schedule that does not span the training (the DDPM's): any length resumes
        needs_known_length = False

    assert check_resumes(Constant(2, 2), checkpoint, "ckpt_path=c", 20) == []
    with pytest.raises(UserError, match="1 weights it does not have, e.g. extra"):
        check_resumes(module, {**checkpoint, "state_dict": {**module.state_dict(), "extra": torch.zeros(1)}}, "c", 10)
