"""The contracts between config, method, edit and run (docs/design.md): the README's walk-throughs of a new
method and a new edit, method/edit pairing, cache identities of what a method holds, the README's
config-group table."""

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict
from safetensors.torch import load_file

from hspace.cache import ArtifactCache, content_key
from hspace.classifiers.cnn import AttributeCNN, CNNConfig
from hspace.cli import CONFIG_DIR
from hspace.cli.run import run
from hspace.diffusion.schedule import SamplerSettings
from hspace.directions.container import Directions
from hspace.directions.method import DirectionMethod, registered_methods
from hspace.edits.boundary_step import BoundaryStep
from hspace.edits.strategy import EditStrategy
from hspace.job.find import directions_from_method

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
TINY = ["sampler.num_steps=4", "num_samples=2", "real_images=2"]
TINY_PCA = [
    "method.num_samples=64",
    "method.num_components=4",
    "method.oversample=8",
    "method.batch_size=32",
    "num_directions=2",
]


def readme_blocks(heading: str) -> dict[str, str]:
    """The fenced blocks of a README section, keyed by the path in their first comment line (or the language)."""
    section = README.split(f"### {heading}\n", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    blocks = {}
    for language, body in re.findall(r"```(\w+)\n(.*?)```", section, re.S):
        first = body.splitlines()[0]
        key = first.lstrip("# ").strip() if first.startswith("# ") and "/" in first else language
        blocks[key] = body
    return blocks


@pytest.fixture
def user_code(tmp_path, monkeypatch):
    """The README's method and edit written where a user would put them: my_methods/ and my_conf/."""
    for heading in ("Adding a method", "Adding an edit"):
        for path, body in readme_blocks(heading).items():
            if "/" in path:
                (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
                (tmp_path / path).write_text(body)
    (tmp_path / "my_methods" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_readme_method_and_edit_run_end_to_end(user_code):
    command = readme_blocks("Adding a method")["bash"].strip()
    assert command.startswith("PYTHONPATH=. hspace-run hydra.searchpath=[file://$PWD/my_conf] method=mean_h")
    args = command.split("hspace-run ", 1)[1].replace("$PWD", str(user_code)).split()
    env = {
        **os.environ,
        "PYTHONPATH": str(user_code),
        "OMP_NUM_THREADS": "1",
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
    }
    run_dir, cache = user_code / "run", user_code / "cache"
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "hspace-run"),
            *args,
            "edit=late_shift",
            *TINY,
            "metrics.fid.reference_count=64",
            f"run_dir={run_dir}",
            f"cache_dir={cache}",
            "logger=none",
        ],
        cwd=user_code,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["method"] == "mean_h" and metrics["directions/mean_h/norm_first"] > 0
    edits = load_file(run_dir / "edits.safetensors")
    assert edits["images"].shape == (1, 2, 3, 3, 32, 32) and edits["strengths"].tolist() == [-2.0, 0.0, 2.0]
    assert metrics["edit/mean_h/mse@0"] == 0  # strength 0 is the plain sample the edit departs from
    assert metrics["edit/mean_h/mse@2"] > 0 and metrics["edit_real/mean_h/mse@0"] == 0
    assert sorted(p.name for p in (run_dir / "grids").iterdir()) == ["mean_h.png", "real_mean_h.png"]

    # The same method in process (its config read as the search path would): directions from the cache.
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            config_name="run",
            overrides=[
                "num_directions=1",
                "sampler.num_steps=4",
                "num_samples=1",
                f"run_dir={user_code / 'again'}",
                f"cache_dir={cache}",
                "logger=none",
                "metrics=none",
                "real_images=0",
            ],
        )
    with open_dict(cfg):
        cfg.method = OmegaConf.load(user_code / "my_conf" / "method" / "mean_h.yaml")
    again = run(cfg)
    assert again["cache/hits"] == 1 and again["cache/misses"] == 0
    assert torch.equal(
        load_file(run_dir / "directions.safetensors")["directions"],
        load_file(user_code / "again" / "directions.safetensors")["directions"],
    )


def compose_run(run_dir, extra):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(
            config_name="run",
            overrides=[*TINY, f"run_dir={run_dir}", f"cache_dir={run_dir.parent / 'cache'}", "logger=none", *extra],
        )


def test_every_method_that_lacks_what_boundary_step_reads_is_refused_in_one_line(tmp_path, capsys):
    configured = {path.stem for path in (Path(CONFIG_DIR) / "method").glob("*.yaml")}
    lacking = sorted(
        name
        for name, cls in registered_methods().items()
        if name in configured and not set(BoundaryStep.requires) <= set(cls.provides)
    )
    assert {"pca", "random", "jacobian", "class_mean"} <= set(lacking) and "boundary" not in lacking
    for name in lacking:
        run_dir = tmp_path / name
        with pytest.raises(SystemExit) as exit_:
            run(compose_run(run_dir, [f"method={name}", "edit=boundary_step"]))
        assert exit_.value.code == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        assert f"method={name}" in err and "x_normal" in err and "use method=boundary" in err, err
        assert not run_dir.exists()  # refused before anything was written


def test_mismatched_pairing_from_the_command_line(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "hspace-run"),
            "method=pca",
            "edit=boundary_step",
            f"run_dir={tmp_path / 'run'}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: edit=boundary_step reads x_normal, offsets from its directions, which method=pca does not provide: "
        "use method=boundary with it, or choose another edit"
    )
    assert not (tmp_path / "run").exists()


def test_an_edit_that_moves_h_refuses_directions_without_h_vectors(tmp_path):
    """LOCO's directions move x_t and have no h vectors: an edit that moves h along them would draw the unedited
    sample at every strength. Refused for the method, for a directions file, and in the Python API."""
    from hspace import api
    from hspace.directions.method import registered_methods
    from hspace.edits.strategy import check_pairing, registered_edits
    from hspace.errors import UserError

    without_h = sorted(name for name, cls in registered_methods().items() if not cls.finds_h)
    reading_h = sorted(name for name, cls in registered_edits().items() if cls.reads_h and "hspace." in cls.__module__)
    assert without_h == ["loco"] and reading_h == ["boundary_step", "shift"]
    for name in reading_h:
        edit = registered_edits()[name]
        with pytest.raises(UserError, match=f"edit={name} moves h .* method=loco gives .* use edit=xt_shift"):
            check_pairing(edit, edit.requires, "method=loco", finds_h=False)
    model = api.load_model("shapes32")
    grid = api.SamplerSettings(num_steps=4, spacing="trailing").schedule(model.alphas_cumprod).timesteps
    loco = Directions(
        torch.zeros(1, 4, *model.h_shape), torch.ones(1, 4), grid, ["loco0"], "loco", "shapes32", model.weight_hash,
        {"num_steps": 4, "spacing": "trailing", "final_alpha": "one"},
        extra={"x_directions": torch.ones(1, *model.image_shape)}, noise_schedule=model.noise_schedule,
    )  # fmt: skip
    assert not loco.finds_h
    with pytest.raises(UserError, match="edit=shift moves h .* these directions give"):
        api.edit_images(model, loco, torch.zeros(1, *model.image_shape))
    loco.save(tmp_path / "loco.safetensors")
    with pytest.raises(SystemExit):
        run(compose_run(tmp_path / "run", [f"directions_path={tmp_path / 'loco.safetensors'}", "metrics=none"]))
    assert not (tmp_path / "run").exists()


def test_a_directions_file_without_what_the_edit_reads_is_refused(tmp_path, capsys):
    run(compose_run(tmp_path / "pca", [*TINY_PCA, "metrics=none", "real_images=0"]))
    capsys.readouterr()  # the first run's stage lines
    with pytest.raises(SystemExit):
        run(
            compose_run(
                tmp_path / "edit",
                [f"directions_path={tmp_path / 'pca' / 'directions.safetensors'}", "edit=boundary_step"],
            )
        )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "the directions file" in err and "use method=boundary" in err, err


@dataclass
class ScoreWeighted(DirectionMethod):
    """A method that holds a classifier: its directions depend on the classifier's weights."""

    classifier: AttributeCNN
    scale: float = 1.0

    name = "test_score_weighted"

    def find(self, model, sampler, cache=None):
        schedule = sampler.schedule(model.alphas_cumprod)
        bias = float(self.classifier.head.bias[0])
        vectors = torch.full((1, schedule.num_steps, *model.h_shape), bias)
        return self.directions(model, sampler, vectors, torch.full((1, schedule.num_steps), self.scale), ["w"])


def small_classifier(seed: int) -> AttributeCNN:
    torch.manual_seed(seed)
    return AttributeCNN(CNNConfig(attributes=["a", "b"], resolution=32, channels=[8], hidden=8)).eval()


def test_a_method_holding_a_classifier_is_keyed_by_its_weights(model, tmp_path):
    first, same, other = small_classifier(0), small_classifier(0), small_classifier(1)
    assert ScoreWeighted(first).identity() == ScoreWeighted(same).identity()
    assert ScoreWeighted(first).identity() != ScoreWeighted(other).identity()
    assert content_key({"config": ScoreWeighted(first).identity()}) != content_key(
        {"config": ScoreWeighted(other).identity()}
    )

    cache, sampler = ArtifactCache(tmp_path), SamplerSettings(num_steps=3)
    a, cached_a = directions_from_method(ScoreWeighted(first), model, sampler, cache)
    b, cached_b = directions_from_method(ScoreWeighted(same), model, sampler, cache)
    c, cached_c = directions_from_method(ScoreWeighted(other), model, sampler, cache)
    assert (cached_a, cached_b, cached_c) == (False, True, False)
    assert torch.equal(a.vectors, b.vectors) and not torch.equal(a.vectors, c.vectors)
    assert a.config["classifier"] == {"type": "AttributeCNN", "identity": first.identity()}


@dataclass
class EtaSum(DirectionMethod):
    """A method whose directions depend on the eta it samples with, as every sampling method's do."""

    fixed_eta: float | None = None

    name = "test_eta_sum"

    def walked_sampler(self, sampler):
        return sampler if self.fixed_eta is None else replace(sampler, eta=self.fixed_eta)

    def find(self, model, sampler, cache=None):
        walked = self.walked_sampler(sampler)
        schedule = walked.schedule(model.alphas_cumprod)
        vectors = torch.full((1, schedule.num_steps, *model.h_shape), 1.0 + float(schedule.eta.sum()))
        return self.directions(model, walked, vectors, torch.ones(1, schedule.num_steps), ["w"])


def test_cache_keys_follow_what_computes_the_numbers(unet, tmp_path):
    """Models without a weights file, an architecture setting that keeps every weight's shape, a classifier's
    attribute names and the code's version each change the key; equal numbers of other types do not."""
    import numpy as np
    from diffusers import DDPMScheduler, UNet2DModel

    from hspace.cache import ALGORITHM_VERSIONS
    from hspace.diffusion.model import DiffusionModel
    from hspace.identity import identity_of
    from tests.conftest import GOOGLE_SCHEDULER, tiny_unet

    assert identity_of(np.int64(3)) == 3 and identity_of(np.float32(0.5)) == 0.5
    assert content_key({"C": identity_of(1.0), "n": identity_of([2.0])}) == content_key({"C": 1, "n": [2]})

    config = dict(DDPMScheduler(**GOOGLE_SCHEDULER).config)
    first, same, other = (DiffusionModel(u, config) for u in (unet, tiny_unet(0), tiny_unet(1)))
    assert first.weights_identity and first.identity() == same.identity() != other.identity()
    loaded = DiffusionModel(unet, config, weight_hash="abc")  # a weights file's hash wins over the weights in memory
    assert loaded.weights_identity == "abc"
    heads = UNet2DModel.from_config({**unet.config, "attention_head_dim": 4})  # same shapes, other attention
    heads.load_state_dict(unet.state_dict())
    assert DiffusionModel(heads, config).weights_identity == first.weights_identity
    assert DiffusionModel(heads, config).identity() != first.identity()

    classifier = small_classifier(0)
    swapped = AttributeCNN(CNNConfig(attributes=["b", "a"], resolution=32, channels=[8], hidden=8)).eval()
    swapped.load_state_dict(classifier.state_dict())
    assert classifier.identity() != swapped.identity()

    cache = ArtifactCache(tmp_path)
    before = cache.path("h", {"key": 1})
    ALGORITHM_VERSIONS["h"] += 1
    try:
        assert cache.path("h", {"key": 1}) != before
    finally:
        ALGORITHM_VERSIONS["h"] -= 1


def test_a_model_keys_alike_however_it_was_loaded(unet, tmp_path):
    """diffusers' private config keys (the load path, its version, and a list whose order follows the process's
    string hashing) stay out of the model's identity."""
    from diffusers import UNet2DModel

    from hspace.identity import config_hash

    unet.save_pretrained(tmp_path / "a")
    unet.save_pretrained(tmp_path / "b")
    loaded = [UNet2DModel.from_pretrained(tmp_path / name) for name in ("a", "b")]
    assert loaded[0].config["_name_or_path"] != loaded[1].config["_name_or_path"]
    assert config_hash(loaded[0].config) == config_hash(loaded[1].config) == config_hash(unet.config)
    built = UNet2DModel.from_config({"sample_size": 16, "block_out_channels": [8, 8, 8, 8], "norm_num_groups": 4})
    defaults = list(built.config["_use_default_values"])  # built from a set: its order follows the string hashing
    assert len(defaults) > 2
    reordered = {**built.config, "_use_default_values": defaults[::-1]}
    assert config_hash(reordered) == config_hash(built.config)


def test_a_directions_file_of_another_noise_schedule_is_refused(model, tmp_path):
    from hspace.errors import UserError
    from hspace.job.find import find_stage

    sampler = SamplerSettings(num_steps=3)
    found = ScoreWeighted(small_classifier(0)).find(model, sampler)
    replace(found, noise_schedule={**found.noise_schedule, "prediction_type": "v_prediction"}).save(tmp_path / "d.st")
    with pytest.raises(UserError, match="were found under prediction_type v_prediction"):
        find_stage(ScoreWeighted(small_classifier(0)), model, sampler, 1, None, tmp_path / "d.st")


def test_directions_are_cached_by_the_eta_their_method_walks(model, tmp_path):
    cache = ArtifactCache(tmp_path)
    deterministic, stochastic = SamplerSettings(num_steps=3), SamplerSettings(num_steps=3, eta=1.0)
    a, cached_a = directions_from_method(EtaSum(), model, deterministic, cache)
    b, cached_b = directions_from_method(EtaSum(), model, stochastic, cache)
    assert (cached_a, cached_b) == (False, False)  # a run at another eta walks other trajectories
    assert not torch.equal(a.vectors, b.vectors) and b.sampler["eta"] == 1.0
    # a method that fixes its eta (PCA's collection_eta, the boundary bank's DDIM) is reused at any run eta
    c, cached_c = directions_from_method(EtaSum(fixed_eta=0.5), model, deterministic, cache)
    d, cached_d = directions_from_method(EtaSum(fixed_eta=0.5), model, stochastic, cache)
    assert (cached_c, cached_d) == (False, True) and torch.equal(c.vectors, d.vectors)


def test_a_setting_without_an_identity_is_refused():
    @dataclass
    class HoldsAModule(DirectionMethod):
        network: torch.nn.Module

        name = "test_holds_a_module"

        def find(self, model, sampler, cache=None):
            raise AssertionError("never reached")

    with pytest.raises(TypeError, match=r"method.network holds a Linear, which has no identity\(\)"):
        HoldsAModule(torch.nn.Linear(2, 2)).identity()


def test_readme_config_group_table_lists_every_option_in_conf():
    section = README.split("## Config groups\n", 1)[1].split("\n## ", 1)[0]
    listed = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and re.fullmatch(r"`\w+`", cells[0]):
            listed[cells[0].strip("`")] = set(re.findall(r"`(\w+)`", cells[1]))
    folders = [p for p in Path(CONFIG_DIR).iterdir() if p.is_dir() and p.name != "hydra"]  # hydra/: Hydra's own
    groups = {p.name: {f.stem for f in p.glob("*.yaml")} for p in folders}
    assert listed == groups


@dataclass
class Nameless(DirectionMethod):
    def find(self, model, sampler, cache=None):
        raise AssertionError("never reached")


class NotADataclass(DirectionMethod):
    name = "test_not_a_dataclass"

    def find(self, model, sampler, cache=None):
        raise AssertionError("never reached")


@dataclass
class WithoutStrengths(EditStrategy):
    name = "test_without_strengths"

    def apply(self, model, schedule, directions, index, x_T, z, clip_x0=False, states=None):
        raise AssertionError("never reached")


@dataclass
class MovesH(EditStrategy):
    strengths: list = field(default_factory=lambda: [-1.0, 1.0])

    name = "test_moves_h"  # reads_h is not set: it moves h, as an edit does unless it says otherwise

    def apply(self, model, schedule, directions, index, x_T, z, clip_x0=False, states=None):
        raise AssertionError("never reached")


@pytest.mark.parametrize(
    "group, node, message",
    [
        ("method", {"_target_": "tests.test_contracts.Nameless"}, "method=tests.test_contracts.Nameless has no name"),
        ("method", {"_target_": "tests.test_contracts.NotADataclass"}, "is not a dataclass, so the cache cannot key"),
        ("edit", {"_target_": "tests.test_contracts.WithoutStrengths"}, "edit.strengths=None must be a non-empty"),
        ("edit", {"_target_": "tests.test_contracts.MovesH", "strengths": []}, "edit.strengths=[] must be a non-empty"),
        ("edit", {"_target_": "tests.test_contracts.MovesH", "strengths": [1, "x"]}, "edit.strengths[1]='x'"),
        (
            "method",
            {"_target_": "not_installed.methods.Mine"},
            "_target_=not_installed.methods.Mine cannot be imported",
        ),
        ("edit", {"_target_": "tests.test_contracts.MovesH"}, "edit=test_moves_h moves h along the directions' h"),
    ],
    ids=["nameless", "not_dataclass", "no_strengths", "no_strength", "bad_strength", "not_importable", "reads_h"],
)
def test_a_method_or_edit_of_ones_own_that_breaks_the_contract_is_one_line_before_any_work(
    tmp_path, capsys, group, node, message
):
    cfg = compose_run(tmp_path / "run", ["method=loco"] if node.get("_target_", "").endswith("MovesH") else [])
    with open_dict(cfg):
        cfg[group] = node
    with pytest.raises(SystemExit) as exit_:
        run(cfg)
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "run").exists()


@dataclass
class ReturnsATuple(DirectionMethod):
    name = "test_returns_a_tuple"

    def find(self, model, sampler, cache=None):
        return torch.zeros(1), ["d"]


@dataclass
class OneColumn(EditStrategy):
    strengths: list = field(default_factory=lambda: [-1.0, 1.0])

    name = "test_one_column"

    def apply(self, model, schedule, directions, index, x_T, z, clip_x0=False, states=None):
        return x_T.clone()  # (N, C, H, W): no strength axis


def test_what_a_method_or_edit_of_ones_own_hands_back_is_checked(model):
    from hspace.errors import UserError
    from hspace.job.edit import StartingPoints, edit_all

    with pytest.raises(UserError, match="ReturnsATuple.find returned a tuple, not Directions"):
        directions_from_method(ReturnsATuple(), model, SamplerSettings(num_steps=3), None)
    directions = EtaSum().find(model, SamplerSettings(num_steps=3))
    schedule = SamplerSettings(num_steps=3).schedule(model.alphas_cumprod)
    start = StartingPoints([0, 1], "seeds", torch.zeros(2, *model.image_shape), None)
    with pytest.raises(UserError, match=r"OneColumn.apply returned \(2, 3, 16, 16\) for 2 samples at 2 strengths"):
        edit_all(OneColumn(), model, schedule, directions, 1, start, False)


def test_a_built_in_name_is_not_taken_silently_and_a_class_of_ones_own_may_be_defined_again():
    from hspace.directions.boundary import BoundaryDirections
    from hspace.edits.strategy import check_pairing
    from hspace.errors import UserError

    with pytest.raises(TypeError, match="is named 'boundary', the name of hspace.directions.boundary.Boundary"):

        @dataclass
        class Mine(DirectionMethod):
            name = "boundary"

            def find(self, model, sampler, cache=None):
                raise AssertionError("never reached")

    assert registered_methods()["boundary"] is BoundaryDirections
    with pytest.raises(UserError, match="use method=boundary with it"):  # the refusal still names the built-in
        check_pairing(BoundaryStep(), (), "method=pca")
    for _ in range(2):  # a notebook cell run twice

        @dataclass
        class Again(DirectionMethod):
            name = "test_defined_again"

            def find(self, model, sampler, cache=None):
                raise AssertionError("never reached")

    assert registered_methods()["test_defined_again"] is Again


@dataclass
class NegatedEtaSum(EtaSum):
    """A subclass that inherits its parent's name and settings but computes other directions."""

    def find(self, model, sampler, cache=None):
        found = super().find(model, sampler, cache)
        return replace(found, vectors=-found.vectors)


def test_the_cache_keeps_a_subclass_and_a_new_version_apart(model, tmp_path, monkeypatch):
    """The key holds a method's name and settings, the class of one outside hspace and its version: a subclass
    that inherits the name does not get its parent's directions, nor does code whose version was raised."""
    cache, sampler = ArtifactCache(tmp_path), SamplerSettings(num_steps=3)
    parent, _ = directions_from_method(EtaSum(), model, sampler, cache)
    child, cached = directions_from_method(NegatedEtaSum(), model, sampler, cache)
    assert NegatedEtaSum.name == EtaSum.name and not cached and torch.equal(child.vectors, -parent.vectors)
    assert directions_from_method(EtaSum(), model, sampler, cache)[1]
    monkeypatch.setattr(EtaSum, "version", 2)
    assert not directions_from_method(EtaSum(), model, sampler, cache)[1]


def test_the_api_caches_directions_as_a_run_does(model, tmp_path):
    from hspace import api

    sampler = SamplerSettings(num_steps=3)
    first = api.find_directions(model, EtaSum(), sampler, cache_dir=tmp_path)
    assert directions_from_method(EtaSum(), model, sampler, ArtifactCache(tmp_path))[1]  # the entry the run reads
    assert torch.equal(api.find_directions(model, EtaSum(), sampler, cache_dir=tmp_path).vectors, first.vectors)


def test_directions_of_another_model_are_named_as_such_before_their_noise_schedule(model, tmp_path):
    from hspace.errors import UserError
    from hspace.job.find import find_stage

    sampler = SamplerSettings(num_steps=3)
    found = EtaSum().find(model, sampler)
    other = replace(found, weight_hash="0" * 64, noise_schedule={**found.noise_schedule, "prediction_type": "sample"})
    other.save(tmp_path / "d.st")
    with pytest.raises(UserError, match="were made for model tiny .* recompute them for this model"):
        find_stage(EtaSum(), model, sampler, 1, None, tmp_path / "d.st")


def test_a_loaded_model_whose_weights_change_in_memory_is_identified_by_them(tmp_path):
    """A model loaded from a file is identified by the file's hash while its weights are the file's. Changed in
    place (fine-tuned or edited in a notebook), it is identified by the weights in memory: the cache serves it
    nothing found for the file's weights, and directions found for those are refused for it."""
    from hspace import api
    from hspace.diffusion.loading import load_model
    from hspace.diffusion.schedule import SamplerSettings
    from hspace.directions.random import RandomDirections
    from hspace.errors import UserError
    from hspace.identity import state_hash

    model = load_model("shapes32")
    file_hash = model.weight_hash
    assert model.weights_identity == file_hash and model.loaded_state == state_hash(model.unet)
    sampler = SamplerSettings(num_steps=4)
    found = api.find_directions(
        model,
        RandomDirections(num_samples=16, num_components=2, oversample=2, batch_size=16),
        sampler,
        cache_dir=tmp_path,
    )
    model.unet.to("cpu")  # a move keeps the weights: still the file's
    assert model.weights_identity == file_hash

    with torch.no_grad():
        for parameter in model.unet.parameters():
            parameter.mul_(0.5)
    assert model.weights_identity == state_hash(model.unet) != file_hash
    with pytest.raises(UserError, match="weights"):
        found.check_fits(model, sampler.schedule(model.alphas_cumprod).timesteps)
    again = api.find_directions(
        model,
        RandomDirections(num_samples=16, num_components=2, oversample=2, batch_size=16),
        sampler,
        cache_dir=tmp_path,
    )
    assert again.weight_hash == model.weights_identity
