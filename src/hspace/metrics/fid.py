"""FID through torchmetrics' FrechetInceptionDistance, with a pluggable feature backend.

A backend is a module mapping images in [-1, 1] (B, 3, H, W) to features (B, F), with a `name` (the
metric key is `fid/<name>`), `num_features` and an `identity` that keys cached reference statistics.

- `classifier_backend`: the penultimate features of an attribute classifier (the Shapes default,
  `fid/shapes_classifier`). Comparable between runs with the same classifier, never with Inception FID.
- `inception_backend`: Inception-v3 pool features (2048) from a local weights file, through
  torch-fidelity's network as torchmetrics wraps it. Where that package is missing or the file is absent,
  a one-line error says what to install or where to put the file.

Reference statistics of a dataset (feature sum, outer-product sum, count: torchmetrics' own states) are
computed once per (backend, dataset, count) and kept in the artifact cache.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance

from hspace.cache import ArtifactCache
from hspace.classifiers import FeatureClassifier
from hspace.errors import UserError
from hspace.files import atomic_write_safetensors
from hspace.images import unit_to_uint8

REAL_STATES = ("real_features_sum", "real_features_cov_sum", "real_features_num_samples")


class FeatureBackend(nn.Module):
    """images in [-1, 1] -> features, through `network` after `prepare` (e.g. conversion to uint8)."""

    def __init__(
        self,
        name: str,
        network: nn.Module,
        num_features: int,
        identify: Callable[[], str],
        prepare: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        super().__init__()
        self.name, self.network, self.num_features, self.identify = name, network, num_features, identify
        self.prepare = prepare
        self.network.eval().requires_grad_(False)

    def identity(self) -> str:
        """What the features are, asked each time (a classifier's weights may change after the backend is built);
        `identify` is picklable, as spawned evaluation processes need (a module-level function or a partial)."""
        return self.identify()

    def train(self, mode: bool = True):  # a fixed feature extractor: always in eval mode
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        images = images.float()
        if self.prepare is not None:
            images = self.prepare(images)
        features = self.network(images)
        return features[0] if isinstance(features, (tuple, list)) else features


class Penultimate(nn.Module):
    """The `features` of a classifier as a module's forward."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier

    def forward(self, images):
        return self.classifier.features(images)


def classifier_backend(classifier: FeatureClassifier, name: str) -> FeatureBackend:
    """Penultimate features of an attribute classifier (e.g. AttributeCNN)."""
    with torch.no_grad():
        size = classifier.resolution
        device = next(classifier.parameters()).device
        num_features = classifier.features(torch.zeros(1, 3, size, size, device=device)).shape[-1]
    return FeatureBackend(
        name, Penultimate(classifier), num_features, identify=partial(classifier_identity, classifier)
    )


def classifier_identity(classifier: FeatureClassifier) -> str:
    return f"classifier:{classifier.identity()}"


def torch_fidelity_inception(weights_path: Path) -> nn.Module:
    """Inception-v3 as used for FID (2048 pool features), weights from a local file."""
    try:
        from torchmetrics.image.fid import NoTrainInceptionV3

        return NoTrainInceptionV3(
            name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=str(weights_path)
        )
    except ModuleNotFoundError as error:
        raise UserError(
            f"Inception FID needs torch-fidelity ({error}): pip install 'hspace[inception]', or use the classifier "
            "feature backend"
        ) from None


def inception_backend(
    weights_path: str | Path | None,
    num_features: int = 2048,
    build: Callable[[Path], nn.Module] = torch_fidelity_inception,
) -> FeatureBackend:
    """Inception features from a local weights file (e.g. torch-fidelity's pt_inception-2015-12-05-6726825d.pth).

    `build` makes the network from the file; tests pass a small stand-in through the same path.
    """
    if weights_path is None or not Path(weights_path).expanduser().is_file():
        raise UserError(
            f"Inception FID asked for but no weights file at metrics.fid.weights_path={weights_path}: download "
            "pt_inception-2015-12-05-6726825d.pth (torch-fidelity's release) and set the path, or use "
            "metrics.fid.backend=classifier"
        )
    from hspace.diffusion.loading import file_sha256

    path = Path(weights_path).expanduser().resolve()
    weights = file_sha256(path)
    return FeatureBackend(
        "inception",
        build(path),
        num_features,
        identify=partial(str, f"inception:{weights}"),  # the cached reference statistics follow the weights' content
        prepare=unit_to_uint8,  # Inception networks for FID take uint8 pixels
    )


def psd_eigh(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues and eigenvectors of a symmetric positive semi-definite matrix, the eigenvalues that rounding
    alone can produce (below the largest times the size times the float epsilon, as numpy's matrix_rank takes it)
    set to zero: their square roots would otherwise add up over a rank-deficient matrix's null space."""
    values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    tolerance = values.abs().max() * len(values) * torch.finfo(values.dtype).eps
    return torch.where(values > tolerance, values, torch.zeros_like(values)), vectors


def psd_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    """The symmetric square root of a symmetric positive semi-definite matrix (psd_eigh)."""
    values, vectors = psd_eigh(matrix)
    return (vectors * values.sqrt()) @ vectors.T


ROOTS: OrderedDict[str, torch.Tensor] = OrderedDict()  # content hash of a matrix -> its psd_sqrt, latest last
KEPT_ROOTS = 4


def reference_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    """psd_sqrt of `matrix`, computed once for a matrix of this content: every FID of a run (each direction and
    strength) compares with the same reference covariance, whose root costs an eigendecomposition (seconds for
    Inception's 2048 features)."""
    key = hashlib.sha256(matrix.detach().double().cpu().contiguous().numpy().tobytes()).hexdigest()
    if key not in ROOTS:
        ROOTS[key] = psd_sqrt(matrix)
        if len(ROOTS) > KEPT_ROOTS:
            ROOTS.popitem(last=False)
    ROOTS.move_to_end(key)
    return ROOTS[key].to(matrix.device)


def frechet_distance(mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor) -> torch.Tensor:
    """||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^1/2), in float64.

    tr((sigma1 sigma2)^1/2) is taken as the sum of the square roots of the eigenvalues of the symmetric
    sigma1^1/2 sigma2 sigma1^1/2 (the same eigenvalues as sigma1 sigma2). torchmetrics takes the eigenvalues of the
    unsymmetric product itself; when the covariances are rank-deficient (fewer samples than features), rounding
    gives that product spurious complex eigenvalues, and a FID of two equal sets could come out as -11 instead of 0
    depending on how the features were summed (e.g. by how many processes).
    """
    mu1, sigma1, mu2, sigma2 = (t.double() for t in (mu1, sigma1, mu2, sigma2))
    root = reference_sqrt(sigma1)  # sigma1: the reference's, the same for every FID of a run
    inner = root @ sigma2 @ root
    cross = psd_eigh(inner)[0].sqrt().sum()
    return (mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * cross


class StableFID(FrechetInceptionDistance):
    """torchmetrics' FrechetInceptionDistance with the distance computed by `frechet_distance`."""

    def compute(self) -> torch.Tensor:
        if self.real_features_num_samples < 2 or self.fake_features_num_samples < 2:
            raise RuntimeError("FID needs at least two samples in each set")
        statistics = []
        for total, outer, count in (
            (self.real_features_sum, self.real_features_cov_sum, self.real_features_num_samples),
            (self.fake_features_sum, self.fake_features_cov_sum, self.fake_features_num_samples),
        ):
            mean = (total / count).unsqueeze(0)
            statistics += [mean.squeeze(0), (outer - count * mean.T @ mean) / (count - 1)]
        return frechet_distance(*statistics).to(self.orig_dtype)

    def sample_counts(self) -> tuple[int, int]:
        """(reference, generated) samples over all processes; a process's own states count only its samples.
        Every process must call it (it reduces across them, as compute() does)."""
        with self.sync_context():
            return int(self.real_features_num_samples), int(self.fake_features_num_samples)


def make_fid(backend: FeatureBackend) -> StableFID:
    """A FID metric over `backend` that keeps its reference (real) statistics across resets."""
    return StableFID(feature=backend, reset_real_features=False)


def reference_statistics(
    backend: FeatureBackend, images: Iterable[torch.Tensor], device: torch.device | str = "cpu"
) -> dict[str, torch.Tensor]:
    """torchmetrics' real-feature states over batches of reference images in [-1, 1]."""
    fid = make_fid(backend).to(device)
    for batch in images:
        fid.update(batch.to(device), real=True)
    return {name: getattr(fid, name).detach().cpu() for name in REAL_STATES}


def load_reference(fid: FrechetInceptionDistance, statistics: dict[str, torch.Tensor]) -> FrechetInceptionDistance:
    """Put cached reference statistics into a FID metric (on its device)."""
    for name in REAL_STATES:
        current = getattr(fid, name)
        if statistics[name].shape != current.shape:
            raise UserError(
                f"reference statistics have {name} of shape {tuple(statistics[name].shape)}, the feature backend "
                f"makes {tuple(current.shape)}: clear that cache entry"
            )
        setattr(fid, name, statistics[name].to(device=current.device, dtype=current.dtype))
    return fid


def cached_reference_statistics(
    backend: FeatureBackend,
    dataset_id: dict,
    count: int,
    images: Callable[[], Iterable[torch.Tensor]],
    cache: ArtifactCache | None,
    device="cpu",
) -> dict[str, torch.Tensor]:
    """Reference statistics of `count` images of a dataset, computed once per (backend, dataset, count)."""

    def compute():
        return reference_statistics(backend, images(), device)

    if cache is None:
        return compute()
    parts = {"backend": backend.identity(), "dataset": dataset_id, "count": count}

    def write(stats, path):
        atomic_write_safetensors(path, stats)

    return cache.get("fid_reference", parts, compute, save=write, load=lambda path: load_file(path))
