"""Collection across processes: the merge of per-rank PCA sketches, and PCA, class means and the boundary
bank found by two gloo processes on the CPU, against one process."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

from hspace.diffusion.model import DiffusionModel
from hspace.diffusion.schedule import SamplerSettings
from hspace.directions.boundary_bank import generated_bank
from hspace.directions.class_mean import ClassMeanDirections
from hspace.directions.pca import (
    PCA,
    StreamingPCA,
    exact_pca,
    merge_sketches,
    result_of_sketch,
    sketch_of_rows,
)
from hspace.distributed import Shard, run_across_processes
from hspace.job.find import find_across_processes
from tests.conftest import GOOGLE_SCHEDULER, tiny_unet

SAMPLER = SamplerSettings(num_steps=6)


class Brightness:
    """P(bright) and P(red) of an image, from its mean value: a classifier with an identity for cache keys."""

    attributes = ["bright", "red"]

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        images = images.float().cpu()
        return torch.stack(
            [torch.sigmoid(20 * images.mean(dim=(1, 2, 3))), torch.sigmoid(20 * images[:, 0].mean((1, 2)))], 1
        )

    def identity(self) -> str:
        return "brightness-v1"


def tiny_model() -> DiffusionModel:
    return DiffusionModel(tiny_unet(), dict(DDPMScheduler(**GOOGLE_SCHEDULER).config), name="tiny")


def assert_same_axes(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-3) -> None:
    """|cos| > 1 - tol per direction and step, for unit vectors (k, T, ...)."""
    cos = torch.einsum("ktd,ktd->kt", a.flatten(2).double(), b.flatten(2).double()).abs()
    assert cos.min() > 1 - tol, cos.min()


def test_shards_are_contiguous_blocks_that_cover_the_items():
    items = list(range(11))
    blocks = [Shard(r, 3).take(items) for r in range(3)]
    assert sum(blocks, []) == items
    assert sorted(len(b) for b in blocks) == [3, 4, 4]
    assert Shard().take(items) == items and not Shard().is_split


def test_merged_sketches_equal_the_pca_of_all_rows():
    g = np.random.default_rng(0)
    rows = g.normal(size=(90, 2, 30)) * np.linspace(3, 0.1, 30) + g.normal(size=30)
    parts = [rows[:20], rows[20:55], rows[55:]]  # unequal blocks, each mean different from the pooled one
    merged = result_of_sketch(merge_sketches([sketch_of_rows(p) for p in parts]), 5)
    for t in range(2):
        axes, std, ratio = exact_pca(rows[:, t], 5)
        np.testing.assert_allclose(np.abs((merged.axes[:, t] * axes).sum(-1)), 1, atol=1e-9)
        np.testing.assert_allclose(merged.std[:, t], std, rtol=1e-9)
        np.testing.assert_allclose(merged.explained_variance_ratio[:, t], ratio, rtol=1e-9)
    assert merged.num_samples == 90


def test_streaming_sketches_merge_like_one_stream():
    g = np.random.default_rng(1)
    rows = torch.from_numpy(g.normal(size=(240, 1, 40)) * np.linspace(4, 0.05, 40))
    one = StreamingPCA(3, 40, oversample=20)
    one.update(rows)
    parts = []
    for block in (rows[:120], rows[120:]):
        stream = StreamingPCA(3, 40, oversample=20)
        stream.update(block)
        parts.append(stream.sketch(1))
    merged = result_of_sketch(merge_sketches(parts), 3)
    single = one.result(1)
    np.testing.assert_allclose(np.abs((merged.axes * single.axes).sum(-1)), 1, atol=1e-3)
    np.testing.assert_allclose(merged.std, single.std, rtol=1e-2)
    # the explained variance ratio: the share of the total variance, whose sum of squares each part tracks
    # exactly, so the merged ratio matches exact PCA of all rows as closely as the axes' variances do
    _, exact_std, exact_ratio = exact_pca(rows[:, 0].numpy(), 3)
    np.testing.assert_allclose(merged.std[:, 0], exact_std, rtol=1e-2)
    np.testing.assert_allclose(merged.explained_variance_ratio[:, 0], exact_ratio, rtol=2e-2)
    np.testing.assert_allclose(single.explained_variance_ratio, merged.explained_variance_ratio, rtol=2e-2)


PCA_SETTINGS = {
    "exact": dict(num_samples=24, num_components=3, exact_max_n=100),  # every rank sends all its axes
    # streaming sketches, tracking as many axes as a batch holds rows, so both sides are exact
    "streaming": dict(num_samples=96, num_components=3, batch_size=48, oversample=45),
    "joint": dict(num_samples=24, num_components=2, exact_max_n=100, mode="joint"),
}


def class_means() -> ClassMeanDirections:
    return ClassMeanDirections(attributes=["bright", "red"], classifier=Brightness(), num_index=20, top_k=6)


def bank(model: DiffusionModel) -> dict:
    schedule = SAMPLER.schedule(model.alphas_cumprod)
    latents = generated_bank(model, schedule, [2], list(range(7)), Brightness(), batch_size=3)
    return {
        "x": torch.from_numpy(latents.x[2]),
        "h": torch.from_numpy(latents.h[2]),
        "scores": torch.from_numpy(latents.scores),
    }


def everything_on_rank(model: DiffusionModel, cache_root: str) -> dict:
    """Run in each of two processes: gather and sum, then every collecting method and the bank."""
    shard = Shard.current()
    rows = torch.arange(shard.rank * 10, shard.rank * 10 + 2 + shard.rank, dtype=torch.float64)[:, None]
    out = {"gathered": shard.gather(rows), "sum": shard.sum(torch.tensor([shard.rank + 1.0])), "rank": shard.rank}
    for name, settings in PCA_SETTINGS.items():
        directions = PCA(**settings).find(model, SAMPLER)
        out[f"pca/{name}/vectors"], out[f"pca/{name}/scales"] = directions.vectors, directions.scales
        out[f"pca/{name}/num_samples"] = directions.info["num_samples"]
    directions = class_means().find(model, SAMPLER)
    out["class_mean/vectors"], out["class_mean/scales"] = directions.vectors, directions.scales
    out["class_mean/counts"] = directions.info["counts"]
    out |= cached_bank(model, cache_root)
    return out | {f"bank/{key}": value for key, value in bank(model).items()}


def cached_bank(model: DiffusionModel, root: str) -> dict:
    """The boundary bank built through the cache by the ranks together (rank 0 saves it), then read back by
    every rank: what each rank's cache counted."""
    from hspace.cache import ArtifactCache
    from hspace.directions.boundary import BoundaryDirections

    method = BoundaryDirections(attribute="bright", classifier=Brightness(), num_bank=7, batch_size=3)
    schedule, cache = SAMPLER.schedule(model.alphas_cumprod), ArtifactCache(root)
    for _ in range(2):
        method.make_bank(model, schedule, [2], list(range(7)), cache)
    counts = torch.tensor([len(cache.hits), len(cache.misses)])
    return {"cached_bank/counts": Shard.current().gather(counts[None])}


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    model, root = tiny_model(), tmp_path_factory.mktemp("cache")
    return model, run_across_processes(everything_on_rank, (model, str(root)), 2) | {"cache_root": root}


def test_gather_and_sum_across_two_processes(two_processes):
    _, out = two_processes
    assert out["rank"] == 0
    assert out["gathered"].flatten().tolist() == [0.0, 1.0, 10.0, 11.0, 12.0]
    assert out["sum"].item() == 3.0


@pytest.mark.parametrize("name", PCA_SETTINGS)
def test_pca_across_two_processes_equals_one(two_processes, name):
    model, out = two_processes
    one = PCA(**PCA_SETTINGS[name]).find(model, SAMPLER)
    vectors, scales = out[f"pca/{name}/vectors"], out[f"pca/{name}/scales"]
    assert out[f"pca/{name}/num_samples"] == PCA_SETTINGS[name]["num_samples"]
    if name == "joint":  # one unit vector over all steps
        assert_same_axes(vectors.flatten(1)[:, None], one.vectors.flatten(1)[:, None])
    else:
        assert_same_axes(vectors, one.vectors)
    torch.testing.assert_close(scales, one.scales, rtol=1e-2, atol=0)


@pytest.mark.slow  # about 22 s: a process group of its own (the fixture above checks PCA across ranks)
def test_find_stage_splits_pca_across_processes():
    """The entry point of hspace-run trainer=ddp: the directions written by rank 0, loaded in this process."""
    model, method = tiny_model(), PCA(**PCA_SETTINGS["streaming"])
    two = find_across_processes(method, model, SAMPLER, None, 2)
    one = method.find(model, SAMPLER)
    assert two.names == one.names and two.method == "pca"
    assert_same_axes(two.vectors, one.vectors)
    torch.testing.assert_close(two.scales, one.scales, rtol=1e-2, atol=0)


def test_class_means_across_two_processes_equal_one(two_processes):
    model, out = two_processes
    one = class_means().find(model, SAMPLER)
    assert out["class_mean/counts"] == one.info["counts"]
    torch.testing.assert_close(out["class_mean/vectors"], one.vectors, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out["class_mean/scales"], one.scales, rtol=1e-4, atol=0)


def test_boundary_bank_across_two_processes_equals_one(two_processes):
    model, out = two_processes
    one = bank(model)
    torch.testing.assert_close(out["bank/scores"], one["scores"], rtol=1e-4, atol=1e-5)
    # float32 convolutions of different batch compositions differ in the last digits
    torch.testing.assert_close(out["bank/x"], one["x"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out["bank/h"], one["h"], rtol=1e-4, atol=1e-5)


def test_collection_processes_follow_the_trainer_config():
    from omegaconf import OmegaConf

    from hspace.cli.run import collection_processes

    trainer = lambda **kw: OmegaConf.create({"accelerator": "cpu", "devices": 1, **kw})  # noqa: E731
    assert collection_processes(trainer()) == 1
    assert collection_processes(trainer(devices=2)) == 1  # no ddp strategy: one process
    assert collection_processes(trainer(strategy="ddp", devices=2)) == 2
    assert collection_processes(trainer(strategy="ddp_spawn", devices=[0, 1, 2])) == 3
    assert collection_processes(trainer(strategy="ddp", devices=-1)) == 1  # cpu: "all devices" is one process


def test_listed_gpus_place_the_run_and_its_collection(monkeypatch):
    import torch
    from omegaconf import OmegaConf

    from hspace.cli.run import listed_gpus, run_device

    trainer = lambda **kw: OmegaConf.create({"accelerator": "gpu", "devices": 1, **kw})  # noqa: E731
    assert listed_gpus(trainer(devices=[2, 3])) == (2, 3) and listed_gpus(trainer(devices="1,3")) == (1, 3)
    assert listed_gpus(trainer(devices=2)) == () and listed_gpus(trainer(devices="2")) == ()
    assert run_device(trainer(accelerator="cpu", devices=2)) == torch.device("cpu")
    assert run_device(trainer(devices=[2, 3])) == torch.device("cuda", 2)  # not cuda:0, what "gpu" alone gives
    assert run_device(trainer(devices=2)) == torch.device("cuda")


def refuses_on_rank_one() -> None:
    from hspace.errors import UserError

    if Shard.current().rank == 1:
        raise UserError("rank 1 refused: fix the setting it names")
    Shard.current().barrier()  # rank 0 waits in a collective, as a rank of a real collection would


def test_ranks_build_a_cached_bank_together_and_read_it_back(two_processes):
    """The ranks build a cached bank together without waiting on each other's lock (before, rank 0 held the
    lock while gathering from rank 1, which waited on it: the run hung), rank 0 alone writes it, and both read
    it back on the second call."""
    from hspace.directions.boundary_bank import load_bank

    model, out = two_processes
    assert out["cached_bank/counts"].tolist() == [[1, 1], [1, 0]]  # (hits, misses) of rank 0 and rank 1
    (entry,) = (out["cache_root"] / "boundary_bank").glob("*.safetensors")
    torch.testing.assert_close(torch.from_numpy(load_bank(entry).h[2]), bank(model)["h"], rtol=1e-4, atol=1e-5)


@pytest.mark.slow  # about 10 s: a process group of its own
def test_a_refusal_in_one_rank_reaches_the_caller_as_its_one_line():
    from hspace.errors import UserError

    with pytest.raises(UserError, match=r"^rank 1 refused: fix the setting it names$"):
        run_across_processes(refuses_on_rank_one, (), 2)


class ModuleBrightness(torch.nn.Module, Brightness):
    """Brightness as a torch module, recording the devices it is moved to."""

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.placed: list[str] = []

    def to(self, device):
        self.placed.append(str(device))
        return super().to(device)


def test_methods_move_a_classifier_that_is_a_module_and_leave_any_other_where_it_is():
    from hspace.directions.boundary import BoundaryDirections

    for method in (
        ClassMeanDirections(attributes=["bright"], classifier=ModuleBrightness(), num_index=20, top_k=6),
        BoundaryDirections(attribute="bright", classifier=ModuleBrightness(), num_bank=7, batch_size=3),
    ):
        method.place(torch.device("meta"))
        assert method.classifier.anchor.device.type == "meta", type(method).__name__
    ClassMeanDirections(attributes=["bright"], classifier=Brightness(), num_index=20, top_k=6).place(
        torch.device("meta")
    )  # not a module: it scores where it is
    PCA(**PCA_SETTINGS["exact"]).place(torch.device("meta"))  # nothing to move


def test_a_collection_across_processes_hands_the_classifier_over_on_the_cpu_and_each_rank_places_it(monkeypatch):
    """The ranks receive the classifier through CPU memory, each puts it on its own device (the CPU here), and
    the caller gets it back on the model's device."""
    import hspace.job.find as find

    model, classifier = tiny_model(), ModuleBrightness()
    method = ClassMeanDirections(attributes=["bright", "red"], classifier=classifier, num_index=20, top_k=6)
    handed_over = []

    def in_this_process(fn, args, world_size, gpus=()):
        handed_over.append(list(classifier.placed))
        return fn(*args)

    monkeypatch.setattr(find, "run_across_processes", in_this_process)
    directions = find.find_across_processes(method, model, SAMPLER, None, 2)
    assert handed_over == [["cpu"]]
    assert classifier.placed == ["cpu", "cpu", str(model.device)]  # handed over, placed by the rank, given back
    torch.testing.assert_close(directions.vectors, method.find(model, SAMPLER).vectors)
