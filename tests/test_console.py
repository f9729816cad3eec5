"""What a person sees on the terminal: progress bars and one line per stage, no third-party banners."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_run import TINY

BANNERS = (
    "litlogger",
    "LeafSpec",
    "Images sizes do not match",
    "wandb: Tracking run",
    "anonymous setting",
    "TPU available",
)


@pytest.mark.slow  # about 30 s: a run logging to wandb, in its own process
def test_a_run_shows_progress_and_stage_lines_and_no_banners(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    env.pop("WANDB_SILENT", None)
    command = [str(Path(sys.executable).parent / "hspace-run"), *TINY, "progress=true", "logger=wandb"]
    command += [f"run_dir={tmp_path / 'run'}", f"cache_dir={tmp_path / 'cache'}"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    err = result.stderr
    assert "collect h:" in err and "%|" in err  # a tqdm bar while h is collected
    for stage in (
        "directions: pca, 4 directions found in this run",
        "edit: 2 samples x 3 strengths x 2 directions",
        "write:",
    ):
        assert stage in err, stage
    for banner in BANNERS:
        assert banner not in err + result.stdout, banner
    assert "run directory:" in result.stdout


@pytest.mark.slow  # about 25 s: a second run, logging to wandb
def test_verbose_brings_the_banners_back(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    env.pop("WANDB_SILENT", None)
    command = [str(Path(sys.executable).parent / "hspace-run"), *TINY, "progress=true", "logger=wandb"]
    verbose = subprocess.run(
        [*command, f"run_dir={tmp_path / 'again'}", f"cache_dir={tmp_path / 'cache'}", "verbose=true"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert verbose.returncode == 0 and "TPU available" in verbose.stderr + verbose.stdout  # verbose brings them back


QUIETED = """
import warnings
from hspace.quiet import quiet
quiet()
warnings.warn_explicit("Attempted to insert a get_attr Node", UserWarning, "const_fold.py", 366,
                       module="torch.fx.experimental.const_fold")
warnings.warn("Checkpoint directory /x/checkpoints exists and is not empty.")
warnings.warn("The number of training batches (8) is smaller than the logging interval Trainer(log_every_n_steps=50)")
warnings.warn("anything else still shows")
"""


def test_known_harmless_warnings_are_silenced_by_message_or_by_module_and_others_show():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", QUIETED], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    shown = [line for line in result.stderr.splitlines() if "Warning" in line]
    assert len(shown) == 1 and "anything else still shows" in shown[0], result.stderr
