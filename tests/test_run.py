"""The main job end to end on tiny settings with the shipped Shapes model."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from safetensors.torch import load_file

from hspace.cli import CONFIG_DIR
from hspace.cli.run import run
from hspace.data.shapes import ATTRIBUTES
from hspace.directions.container import Directions
from tests.wandb_records import history, run_settings, summary

TINY = [
    "method.num_samples=64",
    "method.num_components=4",
    "method.oversample=8",
    "method.batch_size=32",
    "sampler.num_steps=4",
    "num_samples=2",
    "real_images=2",
    "num_directions=2",
    "edit.strengths=[-2.0,0.0,2.0]",
    "metrics.fid.reference_count=64",
    "metrics.disentanglement.num_images=0",
]


@pytest.fixture(autouse=True)
def offline_wandb(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")


def compose_run(run_dir, cache_dir, extra=()):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="run", overrides=[*TINY, f"run_dir={run_dir}", f"cache_dir={cache_dir}", *extra])


def test_run_writes_every_output_and_logs_to_wandb(tmp_path):
    run_dir = tmp_path / "run"
    metrics = run(compose_run(run_dir, tmp_path / "cache", ["metrics.disentanglement.num_images=64"]))
    for name in (
        "config.yaml",
        "run_info.json",
        "metrics.json",
        "directions.safetensors",
        "edits.safetensors",
        "edits_real.safetensors",
    ):
        assert (run_dir / name).is_file(), name
    assert sorted(p.name for p in (run_dir / "grids").iterdir()) == [
        "pc0.png",
        "pc1.png",
        "real_pc0.png",
        "real_pc1.png",
    ]
    info = json.loads((run_dir / "run_info.json").read_text())
    assert info["packages"]["torch"] and "git_sha" in info
    written = json.loads((run_dir / "metrics.json").read_text())  # strict JSON: not measured (NaN) is null
    assert written == pytest.approx({k: None if v != v else v for k, v in metrics.items()})
    assert info["status"] == "completed"
    for stage in ("directions", "edit", "invert", "edit_real", "write"):
        assert metrics[f"time/{stage}_s"] >= 0
    assert 0 <= metrics["inversion/mse"] < 0.1  # DDIM inversion with 4 steps is coarse

    edits = load_file(run_dir / "edits.safetensors")
    assert edits["images"].shape == (2, 2, 3, 3, 32, 32) and edits["images"].dtype == torch.uint8
    assert edits["strengths"].tolist() == [-2.0, 0.0, 2.0] and edits["seeds"].tolist() == [0, 1]
    assert load_file(run_dir / "edits_real.safetensors")["images"].shape == (2, 2, 3, 3, 32, 32)
    # Column 0 strength is the unedited sample for every direction.
    assert torch.equal(edits["images"][0, :, 1], edits["images"][1, :, 1])

    (offline_run,) = (run_dir / "wandb").glob("offline-run-*")
    logged = history(next(offline_run.glob("run-*.wandb")))
    assert logged["inversion/mse"] == pytest.approx(metrics["inversion/mse"])
    # The text metrics a W&B table groups and checks runs by are in the run's summary.
    texts = {key: value for key, value in metrics.items() if isinstance(value, str)}
    assert texts["method"] == "pca" and "edit/pc0/target" in texts and "edit/pc0/factors/target" in texts
    assert texts.items() <= summary(next(offline_run.glob("run-*.wandb"))).items()
    assert logged["time/edit_s"] == pytest.approx(metrics["time/edit_s"])
    # Grids of one size per key (W&B warns about mixed sizes): the generated samples', the real images'.
    assert sorted(logged["grids/captions"]) == ["pc0", "pc1"] and logged["grids_real/captions"] == [
        "real_pc0",
        "real_pc1",
    ]
    for filename in [*logged["grids/filenames"], *logged["grids_real/filenames"]]:
        assert (offline_run / "files" / filename).is_file()
    # The evaluation: classifier scores, pixel preservation and FID of the generated and the edited samples.
    assert metrics["fid/shapes_classifier/num_samples"] == 2 and metrics["fid/shapes_classifier/num_reference"] == 64
    assert metrics["edit/fid/shapes_classifier/num_samples"] == 2 and metrics["fid/shapes_classifier"] > 0
    for key in (
        "edit/pc0/success@2",
        "edit/pc0/preserve@-2",
        "edit/pc0/mse@2",
        "edit/pc1/ssim@2",
        "edit/pc1/fid/shapes_classifier@-2",
        "edit/score_delta/pc0/large",
    ):
        assert key in metrics, key
    assert metrics["edit/pc0/mse@0"] == 0 and metrics["edit/pc0/preserve@0"] == 1
    assert metrics["edit/pc0/target"].lstrip("-") in ATTRIBUTES
    # The inverted real images' edits, scored the same way against their reconstructions.
    # Strength 0 is the reconstruction, computed in another batch: a float that lands on a grey-level boundary may
    # round the other way (one channel of one pixel of the two images moves the MSE by 2.5e-9).
    assert metrics["edit_real/pc0/mse@0"] < 1e-7 and "edit_real/pc1/success@2" in metrics
    assert (
        metrics["edit_real/unedited/fid/shapes_classifier/num_samples"] == 2
        and metrics["edit_real/fid/shapes_classifier/num_samples"] == 2
    )
    assert logged["fid/shapes_classifier"] == pytest.approx(metrics["fid/shapes_classifier"])
    assert logged["edit/score_matrix/_type"] == "table-file" and logged["edit/by_strength/_type"] == "table-file"
    assert logged["edit/score_matrix/ncols"] == 1 + len(ATTRIBUTES) and logged["edit/by_strength/nrows"] == 2 * 3
    # The Shapes factors measured from pixels: the edit-by-factor matrix in metrics.json and W&B.
    assert metrics["edit/pc0/factors/target"] and 0 <= metrics["factors/valid"] <= 1
    for key in ("success@2", "leakage@-2", "valid@2", "change/r@2", "change/shape@-2", "success", "leakage"):
        assert f"edit/pc1/factors/{key}" in metrics, key
    assert metrics["edit/pc0/factors/change/cx@0"] == 0 and metrics["edit/pc0/factors/leakage@0"] == 0
    # judged on the same classifier attribute and factor as the generated samples
    assert metrics["edit_real/pc0/target"] == metrics["edit/pc0/target"]
    assert metrics["edit_real/pc0/factors/target"] == metrics["edit/pc0/factors/target"]
    assert logged["edit/factor_matrix/_type"] == "table-file" and logged["edit/factor_matrix/nrows"] == 2 * 3
    assert logged["edit/pc0/factors/leakage"] == pytest.approx(metrics["edit/pc0/factors/leakage"])
    # Locality against the unedited object, for the generated and the real images' edits.
    assert metrics["edit/pc0/locality/mse_in@0"] == 0 and metrics["edit/pc0/locality/kept_out@0"] == 1
    assert 0 <= metrics["edit/pc1/locality/outside_share@2"] <= 1 and "edit_real/pc1/locality/mse_out@2" in metrics
    # The directions as codes of the true factors of 64 inverted test images, beside the x_T baseline.
    assert metrics["disentangle/num_images"] == 64 and metrics["disentangle/num_codes"] == 2
    for key in ("dci_d", "dci_c", "dci_i", "mig", "x_T_pca/dci_d", "x_T_pca/mig"):
        assert 0 <= metrics[f"disentangle/{key}"] <= 1, key
    assert logged["disentangle/mig"] == pytest.approx(metrics["disentangle/mig"])


def test_second_identical_run_hits_the_cache_and_a_truncated_entry_is_recomputed(tmp_path):
    cache = tmp_path / "cache"
    first = run(compose_run(tmp_path / "a", cache))
    # two h batches, the directions, FID reference statistics
    assert first["cache/hits"] == 0 and first["cache/misses"] == 4
    second = run(compose_run(tmp_path / "b", cache))
    assert second["cache/hits"] == 2 and second["cache/misses"] == 0  # directions and reference straight from the cache
    a, b = (
        Directions.load(tmp_path / "a" / "directions.safetensors"),
        Directions.load(tmp_path / "b" / "directions.safetensors"),
    )
    assert torch.equal(a.vectors, b.vectors) and torch.equal(a.scales, b.scales)

    (entry,) = (cache / "directions").glob("*.safetensors")
    entry.write_bytes(entry.read_bytes()[:100])
    third = run(compose_run(tmp_path / "c", cache))
    assert third["cache/misses"] == 1 and third["cache/hits"] == 3  # recomputed from the cached h batches
    c = Directions.load(tmp_path / "c" / "directions.safetensors")
    assert torch.equal(a.vectors, c.vectors)


def test_clipping_with_real_images_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        run(compose_run(tmp_path / "run", tmp_path / "cache", ["sampler.clip_x0=true", "logger=none"]))
    assert exit_.value.code == 2 and "clip_x0" in capsys.readouterr().err
    assert not (tmp_path / "run" / "edits_real.safetensors").exists()


def test_csv_logger_alternative(tmp_path):
    metrics = run(compose_run(tmp_path / "run", tmp_path / "cache", ["logger=csv"]))
    (csv,) = (tmp_path / "run" / "logs").glob("*/metrics.csv")
    header, row = csv.read_text().splitlines()[:2]
    values = dict(zip(header.split(","), row.split(",")))
    assert float(values["inversion/mse"]) == pytest.approx(metrics["inversion/mse"])
    assert not (tmp_path / "run" / "wandb").exists()


def test_random_control_matches_the_pca_norms(tmp_path):
    run(compose_run(tmp_path / "pca", tmp_path / "cache"))
    run(compose_run(tmp_path / "random", tmp_path / "cache", ["method=random"]))
    pca, rnd = (Directions.load(tmp_path / name / "directions.safetensors") for name in ("pca", "random"))
    norm = lambda d: d.vectors.flatten(2).norm(dim=-1) * d.scales  # noqa: E731  ||dh_t|| at strength 1
    torch.testing.assert_close(norm(rnd), norm(pca), rtol=1e-5, atol=1e-6)
    assert rnd.names[0] == "random0" and not torch.allclose(rnd.vectors, pca.vectors)


def cli(args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    return subprocess.run(
        [str(Path(sys.executable).parent / "hspace-run"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


@pytest.mark.slow  # about 25 s: a sweep of two jobs logging to wandb
def test_multirun_gives_one_wandb_run_per_job_and_shares_the_cache(tmp_path):
    result = cli(
        ["-m", "method=pca,random", *TINY, f"cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    runs = sorted((tmp_path / "sweep").glob("*/wandb/offline-run-*"))
    assert len(runs) == 2 and runs[0].parent.parent.name == "0" and runs[1].parent.parent.name == "1"
    # One W&B group per sweep, the job type, tags from the chosen options, the config flat for filtering.
    settings = [run_settings(next(run.glob("run-*.wandb"))) for run in runs]
    assert settings[0]["group"] == settings[1]["group"] == "sweep" and settings[0]["job_type"] == "run"
    assert "method=pca" in settings[0]["tags"] and "method=random" in settings[1]["tags"]
    assert settings[0]["config"]["method.num_samples"] == 64 and settings[1]["config"]["choice/method"] == "random"
    random_metrics = json.loads((tmp_path / "sweep" / "1" / "metrics.json").read_text())
    assert random_metrics["cache/hits"] == 3  # the random job reused the pca job's h and FID reference
    assert (tmp_path / "sweep" / "0" / "overrides.yaml").is_file() and not (
        tmp_path / "sweep" / "0" / ".hydra"
    ).exists()


def test_incompatible_directions_file_is_one_line(tmp_path):
    from hspace.diffusion.loading import load_model
    from hspace.diffusion.schedule import SamplerSettings
    from hspace.directions.container import Directions

    model = load_model("shapes32")  # directions of the shipped model on the 4-step grid, as a run writes them
    grid = SamplerSettings(num_steps=4, spacing="trailing").schedule(model.alphas_cumprod).timesteps
    Directions(
        torch.randn(2, 4, *model.h_shape),
        torch.ones(2, 4),
        grid,
        ["pc0", "pc1"],
        "pca",
        "shapes32",
        model.weights_identity,
        {},
        noise_schedule=model.noise_schedule,
    ).save(tmp_path / "a" / "directions.safetensors")
    result = cli(
        [
            *TINY,
            "sampler.num_steps=6",
            "logger=none",
            f"directions_path={tmp_path / 'a' / 'directions.safetensors'}",
            f"hydra.run.dir={tmp_path / 'b'}",
        ],
        tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "4-step grid" in result.stderr


@pytest.mark.slow  # about 20 s: a run, then the script
def test_edit_grid_script_redraws_chosen_strengths(tmp_path):
    from PIL import Image

    run(
        compose_run(
            tmp_path / "run",
            tmp_path / "cache",
            ["metrics.fid.backend=none", "logger=none", "edit.strengths=[-0.3,0.0,0.3]"],
        )
    )
    script = Path(__file__).parents[1] / "scripts" / "edit_grid.py"
    out = tmp_path / "grid.png"
    done = subprocess.run(
        [
            sys.executable,
            str(script),
            str(tmp_path / "run"),
            "pc1",
            str(out),
            "--strengths",
            "0.3",
            "-0.3",
            "--rows",
            "1",
            "--real",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    single = Image.open(out).size
    subprocess.run(
        [sys.executable, str(script), str(tmp_path / "run"), "pc1", str(out), "--rows", "2"],
        check=True,
        capture_output=True,
    )
    assert Image.open(out).size[0] > single[0] and Image.open(out).size[1] > single[1]  # three columns, two rows
    bad = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "run"), "pc9", str(tmp_path / "bad.png")],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "has no direction 'pc9'" in bad.stderr and not (tmp_path / "bad.png").exists()
    empty = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "run"), "pc1", str(tmp_path / "bad.png"), "--strengths"],
        capture_output=True,
        text=True,
    )
    assert empty.returncode == 2 and "nothing to draw" in empty.stderr and not (tmp_path / "bad.png").exists()


@pytest.mark.parametrize(
    "extra, null_key",
    [
        (["num_samples=1", "real_images=0"], "fid/shapes_classifier"),
        (["num_samples=2", "real_images=1"], "edit_real/unedited/fid/shapes_classifier"),
    ],
)
def test_the_smallest_runs_finish_with_a_null_fid_and_a_note(tmp_path, capsys, extra, null_key):
    overrides = [*extra, "num_directions=1", "edit.strengths=[2.0]"]
    metrics = run(compose_run(tmp_path / "run", tmp_path / "cache", overrides))
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written[null_key] is None and metrics[null_key] is None
    assert "FID needs at least 2 images" in capsys.readouterr().err
    # one edited sample, which the pixel judge may fail: the factor target is then null, not missing
    assert "edit/pc0/factors/target" in written and "edit/pc0/mse@2" in written


def test_null_fid_and_disentanglement_sections_mean_none(tmp_path):
    """metrics.fid=null and metrics.disentanglement=null (or removing them, ~metrics.fid) turn those scores off, as
    metrics.fid.backend=none and metrics.disentanglement.num_images=0 do."""
    overrides = ["num_samples=2", "real_images=0", "num_directions=1", "edit.strengths=[2.0]"]
    nulled = ["metrics.fid=null", "metrics.disentanglement=null"]
    metrics = run(compose_run(tmp_path / "run", tmp_path / "cache", [*overrides, *nulled]))
    scored_off = [key for key in metrics if "fid" in key or key.startswith("disentangle/")]
    assert "edit/pc0/mse@2" in metrics and not scored_off, scored_off


@pytest.mark.slow  # about 25 s: a sweep of two jobs side by side
def test_parallel_jobs_share_the_cores(tmp_path):
    """Two joblib jobs on this machine get cpu_count / 2 torch threads each instead of one per core each."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env |= {"WANDB_MODE": "offline"}
    args = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "method=pca,random", *TINY, "real_images=0"]
    args += [
        "metrics.classifier=null",
        "metrics.fid.backend=none",
        "logger=none",
        f"cache_dir={tmp_path / 'cache'}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]
    result = subprocess.run(
        [str(Path(sys.executable).parent / "hspace-run"), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for job in ("0", "1"):
        info = json.loads((tmp_path / "sweep" / job / "run_info.json").read_text())
        assert info["torch_threads"] == max(1, (os.cpu_count() or 1) // 2) and info["status"] == "completed"
