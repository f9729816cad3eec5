"""Every setting that changes a cached artifact is part of its cache key: two calls that differ in one such
setting alone must not share an entry. The cache here records each key and computes nothing."""

import dataclasses

import torch
from torch import nn

from hspace.cache import content_key
from hspace.diffusion.schedule import SamplerSettings
from tests.test_distributed import Brightness


class RecordingCache:
    """Records the key of each entry asked for and returns a placeholder instead of computing it."""

    def __init__(self):
        self.keys: list[tuple[str, str]] = []
        self.hits: list[str] = []

    def get(self, kind, parts, compute, save=None, load=None):
        self.keys.append((kind, content_key(parts)))
        return torch.zeros(1)

    def get_across_ranks(self, kind, parts, compute, save=None, load=None, shard=None):
        return self.get(kind, parts, compute, save, load)


def h_key(model, sampler: SamplerSettings, clip_x0: bool = False) -> tuple[str, str]:
    from hspace.directions.h_collection import collect_h

    cache = RecordingCache()
    next(collect_h(model, sampler.schedule(model.alphas_cumprod), [0, 1], 2, cache, clip_x0))
    return cache.keys[0]


def test_the_collected_h_is_keyed_by_eta_the_final_alpha_and_clipping(model):
    plain = SamplerSettings(num_steps=4)
    keys = [
        h_key(model, plain),
        h_key(model, dataclasses.replace(plain, eta=1.0)),
        h_key(model, dataclasses.replace(plain, final_alpha="alpha_bar0")),
        h_key(model, plain, clip_x0=True),
    ]
    assert keys[0][0] == "h" and len(set(keys)) == 4


def test_a_model_is_told_apart_by_its_dtype_and_autocast(model):
    from hspace.diffusion.model import DiffusionModel

    def identity(unet, autocast="fp32"):  # weights named by a hash given as read, whatever their dtype in memory
        return DiffusionModel(unet, model.scheduler_config, weight_hash="read", autocast=autocast).identity()

    identities = [identity(model.unet), identity(model.unet, "bf16"), identity(model.unet.double())]
    assert len({content_key(identity) for identity in identities}) == 3


def test_the_boundary_bank_is_keyed_by_the_grid_and_the_final_alpha(model):
    """The same timestep t_m on another grid is another trajectory to it; another final alpha labels other x0."""
    from hspace.directions.boundary import BoundaryDirections

    method = BoundaryDirections(attribute="bright", classifier=Brightness(), num_bank=4, batch_size=2)

    def bank_key(sampler: SamplerSettings, t_m: int) -> str:
        schedule, cache = sampler.schedule(model.alphas_cumprod), RecordingCache()
        index = schedule.timesteps.tolist().index(t_m)
        method.make_bank(model, schedule, [index], list(range(4)), cache)
        return cache.keys[0][1]

    four, eight = SamplerSettings(num_steps=4, spacing="trailing"), SamplerSettings(num_steps=8, spacing="trailing")
    shared = set(four.schedule(model.alphas_cumprod).timesteps.tolist())
    t_m = max(shared & set(eight.schedule(model.alphas_cumprod).timesteps.tolist()) - {999})
    keys = {
        bank_key(four, t_m),
        bank_key(eight, t_m),
        bank_key(dataclasses.replace(four, final_alpha="alpha_bar0"), t_m),
    }
    assert len(keys) == 3


def test_directions_are_keyed_by_the_grid_they_walk_and_its_final_alpha(model):
    """The directions entry of a run (hspace.job.find) is keyed by the walked grid: PCA collects at its own eta,
    so the run's eta does not split its entries, while the grid and the final alpha do."""
    from hspace.directions.pca import PCA
    from hspace.job.find import directions_from_method

    def directions_key(sampler: SamplerSettings) -> str:
        cache = RecordingCache()
        directions_from_method(PCA(num_samples=8, num_components=2, exact_max_n=8), model, sampler, cache)
        assert cache.keys[0][0] == "directions"
        return cache.keys[0][1]

    plain = SamplerSettings(num_steps=4)
    assert directions_key(plain) == directions_key(dataclasses.replace(plain, eta=0.5))  # collected at eta 1
    others = [dataclasses.replace(plain, num_steps=5), dataclasses.replace(plain, final_alpha="alpha_bar0")]
    assert len({directions_key(plain), *(directions_key(sampler) for sampler in others)}) == 3


def test_fid_reference_statistics_are_keyed_by_the_image_count():
    from hspace.metrics.fid import FeatureBackend, cached_reference_statistics

    backend = FeatureBackend("flat", nn.Flatten(), 3 * 4 * 4, lambda: "flat-v1")
    cache = RecordingCache()
    for count in (8, 16):
        cached_reference_statistics(backend, {"name": "tiny"}, count, lambda: [], cache)
    assert cache.keys[0][0] == "fid_reference" and cache.keys[0] != cache.keys[1]
