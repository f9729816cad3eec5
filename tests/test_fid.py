"""FID with both feature backends: ~0 for a set against itself, growing with perturbation; cached references."""

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from hspace.cache import ArtifactCache
from hspace.classifiers.cnn import AttributeCNN
from hspace.data.batch import image_batch
from hspace.data.shapes import ShapesDataset
from hspace.errors import UserError
from hspace.metrics.fid import (
    cached_reference_statistics,
    classifier_backend,
    frechet_distance,
    inception_backend,
    load_reference,
    make_fid,
)


def shapes_images(n, seed=7):
    ds = ShapesDataset(n, "test", seed=seed)
    return image_batch(ds, range(n))


def fid_between(backend, real, fake):
    fid = make_fid(backend)
    fid.update(real, real=True)
    fid.update(fake, real=False)
    return float(fid.compute())


class TinyInception(nn.Module):
    """A stand-in for Inception with the same input contract: uint8 images -> pooled features."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 5, stride=2)

    def forward(self, images):
        assert images.dtype == torch.uint8
        return self.conv((images.float() - 128) / 128).abs().mean(dim=(2, 3))


def build_tiny(path):
    net = TinyInception()
    net.load_state_dict(load_file(path))
    return net


@pytest.fixture
def tiny_inception_file(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "inception.safetensors"
    save_file(TinyInception().state_dict(), path)
    return path


def check_zero_and_growing(backend, images):
    assert fid_between(backend, images, images) == pytest.approx(0, abs=1e-3)
    previous = 0.0
    for sigma in (0.1, 0.3, 0.6):
        noisy = (images + sigma * torch.randn(images.shape, generator=torch.Generator().manual_seed(1))).clamp(-1, 1)
        value = fid_between(backend, images, noisy)
        assert value > previous + 1e-3
        previous = value


def gaussian_sets(n, d, seed, shift=0.1):
    generator = torch.Generator().manual_seed(seed)
    mixing = torch.randn(d, d, generator=generator, dtype=torch.float64) / d**0.5
    x = torch.randn(n, d, generator=generator, dtype=torch.float64) @ mixing
    y = torch.randn(n, d, generator=generator, dtype=torch.float64) @ mixing + shift
    return x, y


@pytest.mark.parametrize("n,d", [(400, 24), (60, 40)])
def test_frechet_distance_is_the_textbook_formula(n, d):
    """Against scipy's dense matrix square root of sigma1 sigma2, on full-rank covariances."""
    from scipy.linalg import sqrtm

    for seed in range(3):
        x, y = gaussian_sets(n, d, seed)
        mu1, mu2, s1, s2 = x.mean(0), y.mean(0), torch.cov(x.T), torch.cov(y.T)
        cross = sqrtm((s1 @ s2).numpy()).real.trace()
        textbook = float((mu1 - mu2).square().sum() + s1.trace() + s2.trace() - 2 * cross)
        assert float(frechet_distance(mu1, s1, mu2, s2)) == pytest.approx(textbook, rel=1e-7)


@pytest.mark.parametrize("n1,n2,d", [(16, 24, 256), (40, 30, 64)])
def test_frechet_distance_of_unequal_rank_deficient_sets(n1, n2, d):
    """Fewer samples than features and different covariances: with centred data X1, X2 the cross term
    tr((S1 S2)^1/2) is the nuclear norm of X1 X2^T over sqrt((n1 - 1)(n2 - 1)), an independent route."""
    for seed in range(3):
        x, _ = gaussian_sets(n1, d, seed)
        y = gaussian_sets(n2, d, seed + 10)[1] * torch.linspace(0.5, 2.0, d, dtype=x.dtype)
        xc, yc = x - x.mean(0), y - y.mean(0)
        s1, s2 = xc.T @ xc / (n1 - 1), yc.T @ yc / (n2 - 1)
        cross = torch.linalg.matrix_norm(xc @ yc.T, ord="nuc") / ((n1 - 1) * (n2 - 1)) ** 0.5
        expected = float((x.mean(0) - y.mean(0)).square().sum() + s1.trace() + s2.trace() - 2 * cross)
        assert float(frechet_distance(x.mean(0), s1, y.mean(0), s2)) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_of_equal_rank_deficient_sets_is_zero_however_summed():
    """16 samples in 256 features, the covariance summed in one go or in two halves (as two processes would):
    the distance of a set to itself stays at 0, where the eigenvalues of the unsymmetric product could drift."""
    for seed in range(5):
        x, _ = gaussian_sets(16, 256, seed)
        mean = x.mean(0, keepdim=True)
        whole = (x.T @ x - 16 * mean.T @ mean) / 15
        halves = (x[:8].T @ x[:8] + x[8:].T @ x[8:] - 16 * mean.T @ mean) / 15
        for sigma in (whole, halves):
            assert float(frechet_distance(mean[0], whole, mean[0], sigma)) == pytest.approx(0, abs=1e-8)
        assert float(frechet_distance(mean[0], whole, mean[0] + 0.5, halves)) == pytest.approx(0.25 * 256, rel=1e-9)


def test_the_metric_equals_torchmetrics_fid_on_full_rank_features(tiny_inception_file):
    """On more samples than features, where torchmetrics' own distance is well defined, StableFID's compute
    (its means, its unbiased covariances and frechet_distance) gives torchmetrics' number, and the textbook
    formula on the features themselves."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    backend = inception_backend(tiny_inception_file, num_features=16, build=build_tiny)
    real, fake = shapes_images(200, seed=7), shapes_images(150, seed=8)
    fid = make_fid(backend)
    fid.update(real, real=True)
    fid.update(fake, real=False)
    ours = float(fid.compute())
    assert ours == pytest.approx(float(FrechetInceptionDistance.compute(fid)), rel=1e-6)
    x, y = (backend(images).double() for images in (real, fake))
    dense = frechet_distance(x.mean(0), torch.cov(x.T), y.mean(0), torch.cov(y.T))
    assert ours == pytest.approx(float(dense), rel=1e-6) and ours > 1e-3


def test_classifier_backend_self_zero_and_grows():
    backend = classifier_backend(AttributeCNN.load("shapes_attributes"), "shapes_classifier")
    assert backend.num_features == 256
    check_zero_and_growing(backend, shapes_images(300))


def test_inception_backend_through_the_same_path(tiny_inception_file):
    backend = inception_backend(tiny_inception_file, num_features=16, build=build_tiny)
    assert backend.name == "inception"
    check_zero_and_growing(backend, shapes_images(100))
    # the cache knows the weights by their content: other weights of the same name and size are other features
    torch.manual_seed(1)
    other = tiny_inception_file.parent / "other" / tiny_inception_file.name
    other.parent.mkdir()
    save_file(TinyInception().state_dict(), other)
    assert other.stat().st_size == tiny_inception_file.stat().st_size
    assert inception_backend(other, num_features=16, build=build_tiny).identity() != backend.identity()


def test_inception_backend_without_weights_is_one_line(tmp_path):
    for path in (None, tmp_path / "missing.pth"):
        with pytest.raises(UserError, match="Inception FID asked for but no weights file") as error:
            inception_backend(path, build=build_tiny)
        assert "\n" not in str(error.value)


def test_reference_statistics_are_cached(tmp_path, tiny_inception_file):
    backend = inception_backend(tiny_inception_file, num_features=16, build=build_tiny)
    images = shapes_images(64)
    calls = []

    def batches():
        calls.append(1)
        return images.split(16)

    cache = ArtifactCache(tmp_path / "cache")
    first = cached_reference_statistics(backend, {"data": "shapes", "seed": 7}, 64, batches, cache)
    second = cached_reference_statistics(backend, {"data": "shapes", "seed": 7}, 64, batches, cache)
    assert len(calls) == 1 and len(cache.hits) == 1
    assert int(second["real_features_num_samples"]) == 64
    fid = load_reference(make_fid(backend), second)
    fid.update(images, real=False)
    assert float(fid.compute()) == pytest.approx(0, abs=1e-3)
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_the_reference_root_is_computed_once_per_reference(monkeypatch):
    """Every FID of a run compares with one reference covariance: its square root is taken once, and the
    distances are those of a fresh computation."""
    import hspace.metrics.fid as fid

    g = torch.Generator().manual_seed(4)
    a, b, c = (torch.randn(30, 6, generator=g, dtype=torch.float64) for _ in range(3))
    reference = (a.mean(0), torch.cov(a.T))
    fresh = [fid.frechet_distance(*reference, x.mean(0), torch.cov(x.T)) for x in (b, c)]
    calls, original = [], fid.psd_sqrt
    monkeypatch.setattr(fid, "psd_sqrt", lambda m: calls.append(1) or original(m))
    monkeypatch.setattr(fid, "ROOTS", fid.OrderedDict())
    again = [fid.frechet_distance(*reference, x.mean(0), torch.cov(x.T)) for x in (b, c)]
    assert len(calls) == 1 and [float(d) for d in again] == [float(d) for d in fresh]
    fid.frechet_distance(b.mean(0), torch.cov(b.T), *reference)
    assert len(calls) == 2  # another reference
