import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from hspace.cli import CONFIG_DIR

SCRIPTS = Path(sys.executable).parent


def run(args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=env, timeout=300)


def test_sample_console_script_from_any_directory(tmp_path):
    result = run(
        [
            str(SCRIPTS / "hspace-sample"),
            "num_samples=4",
            "ncols=2",
            "sampler.num_steps=4",
            f"hydra.run.dir={tmp_path}/run",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    png = tmp_path / "run" / "samples.png"
    assert f"samples: {png}" in result.stdout and "pass_fraction" in result.stdout
    assert Image.open(png).size == (2 * (2 * 33 + 1), 2 * (2 * 33 + 1))


@pytest.mark.parametrize("extra", [[], ["num_samples=0"]], ids=["finished", "refused"])
def test_a_job_written_elsewhere_leaves_no_empty_directory_behind(tmp_path, extra):
    args = ["num_samples=1", "sampler.num_steps=2", f"run_dir={tmp_path / 'mine'}", *extra]
    result = run([str(SCRIPTS / "hspace-sample"), *args], cwd=tmp_path)
    assert result.returncode == (2 if extra else 0), result.stderr
    assert (tmp_path / "mine" / "samples.png").is_file() != bool(extra)
    assert not (tmp_path / "outputs").exists()  # nor outputs/sample/<date>/<time>, nor the folders above it


def test_module_entry_point_prints_the_composed_config(tmp_path):
    result = run([sys.executable, "-m", "hspace.cli.sample", "--cfg", "job", "sampler.eta=1.0"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "eta: 1.0" in result.stdout and "weights: shapes32" in result.stdout


def test_user_config_directory_is_searched(tmp_path):
    mine = tmp_path / "myconf" / "model"
    mine.mkdir(parents=True)
    shutil.copy(Path(__file__).parents[1] / "conf" / "model" / "shapes32.yaml", mine / "mine.yaml")
    result = run(
        [
            sys.executable,
            "-m",
            "hspace.cli.sample",
            "--cfg",
            "job",
            "model=mine",
            f"hydra.searchpath=[file://{tmp_path / 'myconf'}]",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr


def test_unknown_weights_are_one_line(tmp_path):
    result = run(
        [str(SCRIPTS / "hspace-sample"), f"model.weights={tmp_path}/missing", f"hydra.run.dir={tmp_path}/run"],
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "missing" in result.stderr
    assert not (tmp_path / "run" / "samples.png").exists()


@pytest.mark.gpu
def test_sampling_on_cuda_matches_cpu():
    import torch

    from hspace.diffusion.loading import load_model
    from hspace.diffusion.sampler import initial_noise, sample
    from hspace.diffusion.schedule import make_schedule

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    cpu, gpu = load_model("shapes32"), load_model("shapes32", device="cuda")
    schedule = make_schedule(cpu.alphas_cumprod, 20, "trailing", eta=1.0)
    x_T, z = initial_noise(range(8), cpu.image_shape, 20)
    a = sample(cpu, schedule, x_T, z, record_h=True)
    b = sample(gpu, schedule, x_T, z, record_h=True)
    torch.testing.assert_close(b.x0.cpu(), a.x0, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(b.h, a.h, rtol=1e-3, atol=1e-3)


def test_values_left_at_missing_are_named_in_one_line(tmp_path):
    result = run(
        [str(SCRIPTS / "hspace-run"), "experiment=haas2023_table1_celebahq", f"hydra.run.dir={tmp_path}"], cwd=tmp_path
    )
    assert result.returncode == 2 and result.stderr.strip() == (
        "error: not set: celeba_classifier (??? in the config): give it on the command line, e.g. celeba_classifier=..."
    )


def test_trainer_configs_for_one_and_several_gpus():
    from hydra import compose, initialize_config_dir

    from hspace.cli import CONFIG_DIR
    from hspace.cli.run import evaluation_trainer

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        assert evaluation_trainer(compose(config_name="run", overrides=["trainer=gpu"]).trainer) == {
            "accelerator": "gpu",
            "devices": 1,
        }
        assert (
            evaluation_trainer(compose(config_name="run", overrides=["trainer=ddp"]).trainer)["strategy"] == "ddp_spawn"
        )
        listed = evaluation_trainer(
            compose(config_name="run", overrides=["trainer=ddp", "trainer.devices=[0,1]"]).trainer
        )
        assert type(listed["devices"]) is list and listed["devices"] == [0, 1]  # a plain list reaches Lightning
        train = compose(config_name="train", overrides=["trainer=ddp"]).trainer
    assert train.strategy == "ddp" and train.precision == "bf16-mixed" and train.max_steps == 20000


def test_every_experiment_config_composes():
    from pathlib import Path

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from hspace.cli import CONFIG_DIR

    names = sorted(p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml"))
    training = {n for n in names if n.startswith("shapes32_ddpm")} | {"shapes_classifier", "celebahq_classifier"}
    assert len(names) >= 15
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        for name in names:
            cfg = compose(config_name="train" if name in training else "run", overrides=[f"experiment={name}"])
            assert OmegaConf.to_container(cfg, resolve=False)["model"]["name"], name
            # A ??? merged onto a value a group sets leaves that value: the experiment must use ${required:...}.
            for path in missing_in(OmegaConf.load(Path(CONFIG_DIR) / "experiment" / f"{name}.yaml")):
                parent, _, key = path.rpartition(".")
                assert OmegaConf.is_missing(OmegaConf.select(cfg, parent) if parent else cfg, key), (name, path)


def test_a_model_config_needs_only_its_name_and_weights():
    """The sampler reads the model's grid and clipping, leading and off where its config names none."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf, open_dict

    from hspace.cli import CONFIG_DIR, sampler_settings

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="run")
    with open_dict(cfg):
        cfg.model = OmegaConf.create({"name": "mine", "weights": "shapes32"})
    settings = sampler_settings(cfg.sampler)
    assert (settings.spacing, settings.clip_x0) == ("leading", False)


def test_haas_pca_experiments_keep_the_official_demos_settings():
    """The demo collects h over 500 samples of a 10-step grid at eta 1 and edits samples drawn at eta 1 along 25
    PCs at -5..5 per-step standard deviations; an edit at eta 0 would apply directions found on stochastic paths
    to deterministic ones."""
    from hydra import compose, initialize_config_dir

    from hspace.cli import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        for data in ("celebahq", "church", "bedroom"):
            cfg = compose(config_name="run", overrides=[f"experiment=haas2023_pca_{data}"])
            assert (cfg.sampler.num_steps, cfg.sampler.eta, cfg.method.collection_eta) == (10, 1.0, 1.0), data
            assert (cfg.method.num_samples, cfg.method.num_components) == (500, 25), data
            assert (min(cfg.edit.strengths), max(cfg.edit.strengths)) == (-5.0, 5.0), data


def missing_in(node, prefix: str = ""):
    """The dotted paths of the values left at ??? in a loaded config file."""
    from omegaconf import OmegaConf

    for key in node.keys():
        if OmegaConf.is_missing(node, key):
            yield f"{prefix}{key}"
        elif OmegaConf.is_dict(node._get_node(key)):
            yield from missing_in(node._get_node(key), f"{prefix}{key}.")


def test_stage_recipes_refuse_to_start_without_their_init_weights():
    """Every Shapes DDPM stage recipe continues from earlier weights; without module.init_weights it would train from
    scratch, so it is refused, naming the weights it needs, and runs as given with them."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from hspace.cli import CONFIG_DIR, require_complete, user_error_in
    from hspace.errors import UserError

    stages = sorted(p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("shapes32_ddpm_v*.yaml"))
    assert len(stages) >= 7
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        for name in stages:
            cfg = compose(config_name="train", overrides=[f"experiment={name}"])
            with pytest.raises(UserError, match=r"^not set: module\.init_weights \(the v\d+ weights[^)]*\): give it"):
                require_complete(cfg)
            # Resolved anywhere else, the marker still refuses in one line rather than meaning "from scratch".
            with pytest.raises(Exception) as resolved:
                OmegaConf.to_container(cfg.module, resolve=True)
            assert str(user_error_in(resolved.value)).startswith("not set: the v")
            given = compose(config_name="train", overrides=[f"experiment={name}", "module.init_weights=/weights/v5"])
            require_complete(given)
            assert given.module.init_weights == "/weights/v5"


def test_a_stage_recipe_without_its_weights_exits_in_one_line_before_any_work(tmp_path):
    run_dir = tmp_path / "run"
    result = run(
        [str(SCRIPTS / "hspace-train"), "experiment=shapes32_ddpm_v6_polish", f"hydra.run.dir={run_dir}"], cwd=tmp_path
    )
    assert result.returncode == 2 and result.stderr.strip() == (
        "error: not set: module.init_weights (the v5 weights, git archive f015013 src/hspace/assets/shapes32): give it "
        "on the command line, e.g. module.init_weights=..."
    )
    assert not run_dir.exists()


def test_shapes_experiments_refuses_an_unknown_step_before_any_work(tmp_path):
    script = Path(__file__).resolve().parents[1] / "scripts" / "shapes_experiments.sh"
    root = tmp_path / "runs"
    result = run(["bash", str(script), str(root), "shapes_loco", "loco"], cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: unknown step 'loco'; the steps are: quality default_run shapes_pca_eval haas2023_table1 "
        "boundarydiffusion2023 shapes_loco shapes_leaderboard"
    ]
    assert not root.exists()


def test_objects_built_from_a_config_receive_plain_lists_and_dicts():
    from omegaconf import OmegaConf

    from hspace.cli import build

    node = OmegaConf.create({"_target_": "builtins.dict", "classes": ["cat", "dog"], "nested": {"tags": ["a"]}})
    settings = build(node, extra=["x"])
    assert type(settings["classes"]) is list and type(settings["nested"]) is dict
    assert type(settings["nested"]["tags"]) is list and settings["extra"] == ["x"]


def test_train_help_lists_every_training_experiment():
    help_text = (Path(CONFIG_DIR) / "hydra" / "help" / "train.yaml").read_text()
    (line,) = [line for line in help_text.splitlines() if line.strip().startswith("experiment ")]
    listed = {name.strip() for name in line.split(None, 1)[1].split(",")}
    training = {
        p.stem
        for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml")
        if p.stem.startswith("shapes32_ddpm") or p.stem.endswith("_classifier")
    }
    assert listed == training


def test_table_help_lists_every_layout():
    help_text = (Path(CONFIG_DIR) / "hydra" / "help" / "table.yaml").read_text()
    (line,) = [line for line in help_text.splitlines() if line.strip().startswith("layout ")]
    listed = {name.strip().removesuffix(" (default)") for name in line.split(None, 1)[1].split(",")}
    assert listed == {p.stem for p in (Path(CONFIG_DIR) / "layout").glob("*.yaml")}


def test_hspace_sample_notes_a_grid_that_starts_far_down_the_schedule(tmp_path):
    args = ["num_samples=1", "sampler.num_steps=2", f"run_dir={tmp_path}", "shapes_quality=false"]
    leading = run([str(SCRIPTS / "hspace-sample"), *args, "sampler.spacing=leading"], cwd=tmp_path)
    assert leading.returncode == 0, leading.stderr
    assert "note: sampler.spacing=leading with sampler.num_steps=2 starts at timestep 500" in leading.stderr
    trailing = run([str(SCRIPTS / "hspace-sample"), *args], cwd=tmp_path)
    assert trailing.returncode == 0 and "note:" not in trailing.stderr, trailing.stderr


def test_a_config_group_set_to_null_lists_the_options_of_the_search_path_too(tmp_path):
    from hspace.cli import CONFIG_DIR
    from hspace.cli.command_line import check_command_line
    from hspace.errors import UserError

    (tmp_path / "method").mkdir()
    (tmp_path / "method" / "my_pca.yaml").write_text("_target_: hspace.directions.pca.PCA\n")
    with pytest.raises(UserError, match=r"method=null: .* choose one of boundary, .*, loco, my_pca, pca, random"):
        check_command_line(CONFIG_DIR, "run", "hspace-run", [f"hydra.searchpath=[file://{tmp_path}]", "method=null"])


class UnreadableImages(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, index):
        from hspace.errors import UserError

        raise UserError("cannot read the image /data/a.png (OSError): remove or replace it")


def test_a_refusal_in_a_dataloader_worker_is_its_own_one_line(capsys):
    """torch hands a worker's exception back wrapped in the worker's traceback: the command says its last line."""
    from hspace.cli import user_errors_exit

    @user_errors_exit
    def train():
        for _ in torch.utils.data.DataLoader(UnreadableImages(), num_workers=1):
            pass

    with pytest.raises(SystemExit) as exit_:
        train()
    assert exit_.value.code == 2
    assert capsys.readouterr().err == "error: cannot read the image /data/a.png (OSError): remove or replace it\n"
