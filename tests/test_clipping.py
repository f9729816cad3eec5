"""With sampler.clip_x0 on, every method finds its directions on the clipped trajectories the run edits (the
Jacobians belong to the image that is edited, the PCA and class-mean h to the path the shift is added to, the
boundary bank's x_tm to the state the single step moves), and the cache keeps clipped and unclipped apart."""

import pytest

from hspace.api import default_sampler
from hspace.diffusion.schedule import SamplerSettings
from hspace.directions import boundary_bank, class_mean, h_collection, jacobian, loco
from hspace.directions.boundary import BoundaryDirections
from hspace.directions.class_mean import ClassMeanDirections
from hspace.directions.jacobian import JacobianDirections
from hspace.directions.loco import LocoDirections
from hspace.directions.pca import PCA
from tests.test_distributed import Brightness

METHODS = {
    "pca": lambda: PCA(num_samples=4, num_components=2, batch_size=4, oversample=0, exact_max_n=8),
    "jacobian": lambda: JacobianDirections(num_directions=1, scale_mode="sigma_tau", max_iters=5),
    "loco": lambda: LocoDirections(edit_rank=1, null_rank=1, mask="none", max_iters=5),
    "class_mean": lambda: ClassMeanDirections(attributes=["bright"], classifier=Brightness(), num_index=6, top_k=2),
    "boundary": lambda: BoundaryDirections(
        attribute="bright", classifier=Brightness(), num_bank=8, batch_size=4, t_mix=500, min_per_class=1
    ),
}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_trajectory_a_method_walks_is_clipped_when_the_run_clips(name, model, monkeypatch):
    real = h_collection.sample
    seen = []

    def recording(*args, clip_x0=False, **kwargs):
        seen.append(clip_x0)
        return real(*args, clip_x0=clip_x0, **kwargs)

    for module in (h_collection, jacobian, loco, class_mean, boundary_bank):
        monkeypatch.setattr(module, "sample", recording)
    clipped = METHODS[name]().find(model, SamplerSettings(num_steps=3, clip_x0=True))
    assert seen and all(seen), seen
    seen.clear()
    plain = METHODS[name]().find(model, SamplerSettings(num_steps=3))
    assert seen and not any(seen), seen
    # the Python API edits along them on the path they were found on, clipping included
    assert default_sampler(clipped).clip_x0 and not default_sampler(plain).clip_x0


def test_clipping_is_part_of_the_walk_only_when_on():
    """The walk keys cached directions: clipped and unclipped directions never share an entry, and entries made
    before clipping counted keep their keys."""
    plain = SamplerSettings(num_steps=3).walk()
    assert "clip_x0" not in plain and SamplerSettings(num_steps=3, clip_x0=True).walk() == plain | {"clip_x0": True}
