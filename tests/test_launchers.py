"""Sweeps through submitit: the SLURM launcher's config composes, and its local twin runs a two-job sweep that a
second submission with skip_done=true resumes (only the job that had not finished runs again)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from hspace.cli import CONFIG_DIR
from tests.test_run import TINY


def test_the_slurm_launcher_composes_with_the_settings_people_change():
    overrides = ["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.array_parallelism=4"]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="run", overrides=overrides, return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher") and launcher.partition == "gpu"
    assert launcher.array_parallelism == 4 and launcher.gpus_per_node == 1 and launcher.timeout_min == 120


def sweep(tmp_path, extra=()):
    args = ["-m", "hydra/launcher=local_jobs", "method=pca,random", *TINY, "real_images=0", "logger=none"]
    args += ["metrics.classifier=null", "metrics.fid.backend=none", "skip_done=true"]
    args += [f"cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={tmp_path / 'sweep'}", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    script = str(Path(sys.executable).parent / "hspace-run")
    return subprocess.run([script, *args], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=900)


@pytest.mark.slow  # about 40 s: two sweeps of two jobs through submitit's local executor
def test_a_local_submitit_sweep_resumes_without_repeating_finished_jobs(tmp_path):
    first = sweep(tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    jobs = [tmp_path / "sweep" / str(i) for i in (0, 1)]
    assert all(json.loads((job / "run_info.json").read_text())["status"] == "completed" for job in jobs)
    kept = (jobs[0] / "metrics.json").stat().st_mtime_ns
    (jobs[1] / "metrics.json").unlink()  # as if the second job had been killed before it finished
    second = sweep(tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert (jobs[0] / "metrics.json").stat().st_mtime_ns == kept  # the finished job was not run again
    assert json.loads((jobs[1] / "metrics.json").read_text())["method"] == "random"


@pytest.mark.skipif(shutil.which("srun") is not None, reason="SLURM is here: the sweep would be submitted")
def test_a_slurm_sweep_without_slurm_is_one_line_and_leaves_no_folder(tmp_path):
    """Refused before Hydra makes the sweep's folder: the one named by hydra.sweep.dir, or the dated default."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    script = str(Path(sys.executable).parent / "hspace-run")
    for named in ([f"hydra.sweep.dir={tmp_path / 'sweep'}"], []):
        args = ["-m", "hydra/launcher=slurm", "num_samples=4,8", "logger=none", *named]
        result = subprocess.run([script, *args], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
        assert result.returncode == 2 and result.stderr.strip().splitlines() == [
            "error: hydra/launcher=slurm needs SLURM (srun) on this machine: submit the sweep from the cluster, or "
            "try it here with hydra/launcher=local_jobs"
        ], result.stderr[-3000:]
        assert sorted(p.name for p in tmp_path.iterdir()) == [], named


@pytest.mark.slow  # about 20 s: a sweep of two jobs through submitit's local executor
def test_a_job_refused_in_a_local_submitit_sweep_is_one_line(tmp_path):
    """The jobs run in processes of their own; the one a setting refuses is said in its own line, and the job that
    finished keeps its results."""
    result = sweep(tmp_path, ["num_samples=2,0"])
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert result.returncode == 2 and errors == [
        f"error: num_samples=0 is below 1: give at least 1 (in a job of the sweep; its logs are in "
        f"{tmp_path / 'sweep' / '.submitit'})"
    ], result.stderr[-3000:]
    assert "Traceback" not in result.stderr
