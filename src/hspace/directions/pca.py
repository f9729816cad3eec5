"""Unsupervised directions by per-timestep PCA of h (Haas et al. Sec. IV-A; docs/algorithms.md, "PCA").

For each step t: centre the N x D_h matrix of flattened h_t, take the top-k unit axes u_{j,t} and the
standard deviations s_{j,t} = S_{j,t} / sqrt(N - 1) along them, make the signs consistent across steps,
and edit with dh_t = gamma * s_{j,t} * u_{j,t} (gamma in per-step standard deviations).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace

import numpy as np
import torch
from sklearn.decomposition import IncrementalPCA

from hspace.cache import ArtifactCache
from hspace.checks import choice, integer, number
from hspace.diffusion.model import DiffusionModel
from hspace.diffusion.schedule import SamplerSettings
from hspace.directions.container import Directions
from hspace.directions.h_collection import collect_h
from hspace.directions.method import DirectionMethod
from hspace.directions.signs import canonical_margins_numpy, canonical_rows_numpy
from hspace.distributed import Shard
from hspace.errors import UserError


@dataclass
class PCAResult:
    axes: np.ndarray  # (k, T, D) unit axes, float64
    std: np.ndarray  # (k, T) standard deviation along each axis
    explained_variance_ratio: np.ndarray  # (k, T)
    num_samples: int


def exact_pca(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-k PCA of the rows of x (N, D) through the N x N kernel of the centred data, in float64.

    Returns unit axes (k, D), std (k,) and explained variance ratio (k,).
    """
    xc = x - x.mean(axis=0)
    kernel = xc @ xc.T
    eigenvalues, q = np.linalg.eigh(kernel)
    order = np.argsort(eigenvalues)[::-1][:k]
    singular = np.sqrt(np.clip(eigenvalues[order], 0, None))
    axes = (xc.T @ q[:, order]) / np.where(singular > 0, singular, 1)
    n = x.shape[0]
    total = np.clip(eigenvalues, 0, None).sum()
    ratio = singular**2 / total if total > 0 else np.zeros_like(singular)  # h constant at this step: no variance
    return axes.T, singular / np.sqrt(n - 1), ratio


class StreamingPCA:
    """Per-step (or joint) PCA fed batch by batch with sklearn's IncrementalPCA.

    Memory holds, per step, k + oversample axes and the running mean and variance, plus at most
    `batch_size + k + oversample` pending rows, whatever the number of samples. Tracking `oversample` extra
    axes makes the top k agree with exact PCA (an incremental update that keeps only k axes drops
    variance that later batches would have added to them).
    """

    def __init__(self, k: int, batch_size: int, joint: bool = False, oversample: int = 40):
        self.k, self.batch_size, self.joint = k, batch_size, joint
        self.tracked = k + oversample
        if batch_size < self.tracked:
            raise ValueError(
                f"the PCA batch size ({batch_size}) must be at least num_components + oversample ({self.tracked})"
            )
        self.models: list[IncrementalPCA] | None = None
        self.pending: list[np.ndarray] = []
        self.num_samples = 0

    def update(self, h: torch.Tensor) -> None:
        """Add a batch of h (b, T, *h_shape)."""
        x = h.reshape(h.shape[0], h.shape[1], -1).double().numpy()
        self.pending.append(x)
        self.num_samples += x.shape[0]
        rows = np.concatenate(self.pending)
        while rows.shape[0] >= self.batch_size + self.tracked:
            self._fit(rows[: self.batch_size])
            rows = rows[self.batch_size :]
        self.pending = [rows]

    def _fit(self, x: np.ndarray) -> None:
        if self.models is None:  # an h with fewer dimensions than tracked axes is kept whole
            features = x.shape[1] * x.shape[2] if self.joint else x.shape[2]
            axes = min(self.tracked, features)
            self.models = [IncrementalPCA(axes) for _ in range(1 if self.joint else x.shape[1])]
        if self.joint:
            self.models[0].partial_fit(x.reshape(x.shape[0], -1))
        else:
            for t, model in enumerate(self.models):
                model.partial_fit(x[:, t])

    def _flush(self) -> None:
        rows = np.concatenate(self.pending)
        if rows.shape[0]:
            if rows.shape[0] < self.tracked:
                raise ValueError(
                    f"streaming PCA needs at least num_components + oversample = {self.tracked} samples, got "
                    f"{self.num_samples}"
                )
            self._fit(rows)
            self.pending = []

    def sketch(self, num_steps: int) -> PCASketch:
        """This stream's axes and statistics as a mergeable sketch (the joint mode as one step)."""
        self._flush()
        singular = np.stack([m.singular_values_ for m in self.models], axis=1)  # (m, S)
        components = np.stack([m.components_ for m in self.models], axis=1)  # (m, S, D)
        return PCASketch(
            self.num_samples,
            np.stack([m.mean_ for m in self.models]),
            singular[..., None] * components,
            np.stack([m.var_.sum() * m.n_samples_seen_ for m in self.models]),
        )

    def result(self, num_steps: int) -> PCAResult:
        self._flush()
        k = self.k
        if self.joint:
            (m,) = self.models
            axes = m.components_[:k].reshape(k, num_steps, -1)
            std = np.repeat(np.sqrt(m.explained_variance_[:k])[:, None], num_steps, axis=1)
            ratio = np.repeat(m.explained_variance_ratio_[:k, None], num_steps, axis=1)
        else:
            axes = np.stack([m.components_[:k] for m in self.models], axis=1)
            std = np.stack([np.sqrt(m.explained_variance_[:k]) for m in self.models], axis=1)
            ratio = np.stack([m.explained_variance_ratio_[:k] for m in self.models], axis=1)
        # sklearn divides by the total variance: 0 / 0 where h does not vary at a step, which explains nothing
        return PCAResult(axes, std, np.nan_to_num(ratio, nan=0.0), self.num_samples)


@dataclass
class PCASketch:
    """What one process's PCA of its rows keeps, per step (S steps): enough to merge processes.

    count: rows seen; mean (S, D); scaled (m, S, D): the kept axes times their singular values (S_j V_j);
    sum_squares (S,): the rows' total sum of squares about their own mean. With every axis kept (m >= rows)
    the merge is exact; with the top m (streaming), as exact as IncrementalPCA is within one process.
    """

    count: int
    mean: np.ndarray
    scaled: np.ndarray
    sum_squares: np.ndarray

    def to_tensors(self) -> dict[str, torch.Tensor]:
        return {
            "count": torch.tensor([self.count], dtype=torch.float64),
            "mean": torch.from_numpy(self.mean)[None],
            "scaled": torch.from_numpy(self.scaled),
            "sum_squares": torch.from_numpy(self.sum_squares)[None],
        }


def sketch_of_rows(x: np.ndarray) -> PCASketch:
    """The exact sketch of rows x (N, S, D): every axis of each step's centred rows."""
    mean = x.mean(axis=0)
    xc = x - mean
    scaled = []
    for t in range(x.shape[1]):
        _, singular, vt = np.linalg.svd(xc[:, t], full_matrices=False)
        scaled.append(singular[:, None] * vt)
    return PCASketch(x.shape[0], mean, np.stack(scaled, axis=1), (xc**2).sum(axis=(0, 2)))


def merge_sketches(parts: list[PCASketch]) -> PCASketch:
    """One sketch of the union of the parts' rows: the pooled mean, and per step the top axes of the stacked
    scaled axes plus each part's mean offset (sqrt(n_i) (mean_i - mean)), whose Gram matrix is the pooled
    scatter matrix."""
    count = sum(p.count for p in parts)
    mean = sum(p.count * p.mean for p in parts) / count
    offsets = [np.sqrt(p.count) * (p.mean - mean) for p in parts]
    rows = np.concatenate([np.concatenate([p.scaled, o[None]]) for p, o in zip(parts, offsets)])
    scaled = []
    for t in range(mean.shape[0]):
        _, singular, vt = np.linalg.svd(rows[:, t], full_matrices=False)
        scaled.append(singular[:, None] * vt)
    sum_squares = sum(p.sum_squares + (o**2).sum(axis=-1) for p, o in zip(parts, offsets))
    return PCASketch(count, mean, np.stack(scaled, axis=1), sum_squares)


def result_of_sketch(sketch: PCASketch, k: int) -> PCAResult:
    """Top-k unit axes, standard deviations and explained variance ratios of a (merged) sketch."""
    singular = np.linalg.norm(sketch.scaled[:k], axis=-1)  # (k, S)
    axes = sketch.scaled[:k] / np.where(singular > 0, singular, 1)[..., None]
    std = singular / np.sqrt(sketch.count - 1)
    ratio = singular**2 / np.where(sketch.sum_squares > 0, sketch.sum_squares, 1)
    return PCAResult(axes, std, ratio, sketch.count)


def gathered_sketch(sketch: PCASketch, shard: Shard) -> PCASketch:
    """The merge of every rank's sketch (ranks may keep different numbers of axes)."""
    tensors = {key: shard.gather(value) for key, value in sketch.to_tensors().items()}
    sizes = shard.gather(torch.tensor([sketch.scaled.shape[0]])).tolist()
    bounds = np.cumsum([0, *sizes])
    parts = [
        PCASketch(
            int(tensors["count"][r]),
            tensors["mean"][r].numpy(),
            tensors["scaled"][bounds[r] : bounds[r + 1]].numpy(),
            tensors["sum_squares"][r].numpy(),
        )
        for r in range(shard.world_size)
    ]
    return merge_sketches(parts)


def exact_per_step_pca(batches: Iterable[torch.Tensor], k: int, joint: bool = False) -> PCAResult:
    """The same result computed exactly from all samples at once (memory grows with N)."""
    h = torch.cat(list(batches)).double().numpy()
    n, num_steps = h.shape[:2]
    if joint:
        axes, std, ratio = exact_pca(h.reshape(n, -1), k)
        return PCAResult(
            axes.reshape(k, num_steps, -1),
            np.repeat(std[:, None], num_steps, 1),
            np.repeat(ratio[:, None], num_steps, 1),
            n,
        )
    per_step = [exact_pca(h[:, t].reshape(n, -1), k) for t in range(num_steps)]
    return PCAResult(*(np.stack(parts, axis=1) for parts in zip(*per_step)), n)


SIGN_REFERENCES = ("noisiest", "chain", "chain_restart")
RESTART_OVERLAP = 0.3  # chain_restart's default: below it a step's axis is taken for another than its neighbour's


def align_signs(
    axes: np.ndarray, reference: str = "noisiest", restart_overlap: float = RESTART_OVERLAP
) -> tuple[np.ndarray, np.ndarray]:
    """Make axis signs consistent across steps. (k, T, D) -> aligned axes, overlaps |<u_t, u_{t+1}>| (k, T-1).

    The reference step (idx 0, the noisiest) gets its largest-|entry| component positive; then every step
    is flipped to agree with it ("noisiest") or with its noisier neighbour ("chain"). "chain_restart" follows
    the neighbour where the two overlap by at least `restart_overlap` and elsewhere, where the axis is not the
    neighbour's (two components swapped order), starts afresh from the step's own canonical sign.
    Sign alignment cannot repair order swaps between components of similar variance: low overlaps show them.
    """
    if reference not in SIGN_REFERENCES:
        raise ValueError(f"sign reference must be one of {SIGN_REFERENCES}, not {reference!r}")
    axes = axes.copy()
    axes[:, 0] = canonical_rows_numpy(axes[:, 0])
    k, num_steps = axes.shape[:2]
    for j in range(k):
        for t in range(1, num_steps):
            anchor = axes[j, 0] if reference == "noisiest" else axes[j, t - 1]
            overlap = axes[j, t] @ anchor
            if reference == "chain_restart" and abs(overlap) < restart_overlap:
                axes[j, t] = canonical_rows_numpy(axes[j, t][None])[0]
            elif overlap < 0:
                axes[j, t] = -axes[j, t]
    overlaps = np.abs(np.einsum("ktd,ktd->kt", axes[:, 1:], axes[:, :-1]))
    return axes, overlaps


def restarted_steps(axes: np.ndarray, restart_overlap: float = RESTART_OVERLAP) -> np.ndarray:
    """(k, T-1) bool: the steps after the first that "chain_restart" gives their own canonical sign, those that
    overlap their noisier neighbour by less than `restart_overlap`."""
    return np.abs(np.einsum("ktd,ktd->kt", axes[:, 1:], axes[:, :-1])) < restart_overlap


def anchor_overlaps(
    axes: np.ndarray, reference: str = "noisiest", restart_overlap: float = RESTART_OVERLAP
) -> np.ndarray:
    """|<u_t, anchor_t>| (k, T-1) for the steps after the first: the overlaps align_signs decided each step's sign
    by. Near 0, rounding decides it, and another path to the same axes (streaming against exact PCA, a collection
    split across processes) may give that step the other sign. A step that "chain_restart" restarts reports the
    margin its canonical sign was decided by (hspace.directions.signs.canonical_margins_numpy), near 0 likewise."""
    anchors = axes[:, :1] if reference == "noisiest" else axes[:, :-1]
    decisive = np.abs(np.einsum("ktd,ktd->kt", axes[:, 1:], np.broadcast_to(anchors, axes[:, 1:].shape)))
    if reference == "chain_restart":
        restarted = restarted_steps(axes, restart_overlap)
        margins = canonical_margins_numpy(axes[:, 1:].reshape(-1, axes.shape[-1])).reshape(restarted.shape)
        decisive = np.where(restarted, margins, decisive)
    return decisive


def opposite_signs(
    first: np.ndarray, second: np.ndarray, reference: str = "noisiest", restart_overlap: float = RESTART_OVERLAP
) -> np.ndarray:
    """(k,): per component, the steps at which two fits of the same axes (k, T, D), e.g. streaming and exact PCA
    of one collection, point opposite ways once each is aligned by `reference`. A fit's rounding decides a sign
    only where the overlap that decided it is near 0."""
    a, b = align_signs(first, reference, restart_overlap)[0], align_signs(second, reference, restart_overlap)[0]
    return (np.einsum("ktd,ktd->kt", a, b) < 0).sum(axis=1)


def reversals(aligned: np.ndarray, min_overlap: float = 0.0) -> np.ndarray:
    """(k,): per component, the neighbouring steps of aligned axes (k, T, D) that point against each other (an
    overlap below -min_overlap), where an edit along the component turns round from one step to the next. With
    min_overlap > 0 only the axes that stay nearly the same count, not two components that swapped order."""
    return (np.einsum("ktd,ktd->kt", aligned[:, 1:], aligned[:, :-1]) < -min_overlap).sum(axis=1)


@dataclass
class PCA(DirectionMethod):
    """`method=pca`: directions from generated samples (seeds first_seed..first_seed+num_samples-1)."""

    num_samples: int = 256
    num_components: int = 25
    batch_size: int = 96
    oversample: int = 40  # extra axes the streaming path tracks so that the top k match exact PCA
    collection_eta: float | None = 1.0  # eta of the collection runs (the paper: 1); None: the run's sampler.eta
    mode: str = "per_step"  # or "joint": one PCA over the whole h_{T:1}
    sign_reference: str = "chain_restart"  # or "noisiest" (the reference code's), "chain"
    sign_restart_overlap: float = (
        RESTART_OVERLAP  # chain_restart: below this overlap with its neighbour a step starts afresh
    )
    exact_max_n: int = 0  # at most this many samples: exact kernel PCA in memory (grows with N) instead of streaming
    first_seed: int = 1_000_000  # collection seeds, kept apart from the seeds that are edited

    name = "pca"
    collects_across_processes = True

    def __post_init__(self):
        integer(self.num_components, "method.num_components", 1)
        integer(self.oversample, "method.oversample", 0)
        integer(self.batch_size, "method.batch_size", 1)
        integer(self.exact_max_n, "method.exact_max_n", 0)
        integer(self.first_seed, "method.first_seed", 0)
        choice(self.mode, "method.mode", ("per_step", "joint"))
        choice(self.sign_reference, "method.sign_reference", SIGN_REFERENCES)
        number(self.sign_restart_overlap, "method.sign_restart_overlap", 0.0, 1.0)
        if self.collection_eta is not None:
            number(self.collection_eta, "method.collection_eta", 0.0, 1.0)
        integer(self.num_samples, "method.num_samples", 2)
        if self.num_components >= self.num_samples:  # n samples span at most n - 1 axes around their mean
            raise UserError(
                f"method.num_components={self.num_components} needs at least {self.num_components + 1} collection "
                f"samples (n samples span at most n - 1 axes around their mean), not method.num_samples="
                f"{self.num_samples}: raise method.num_samples or lower method.num_components"
            )
        if self.num_samples > self.exact_max_n:  # the streaming path: each batch must hold the tracked axes
            tracked = self.num_components + self.oversample
            if self.num_samples < tracked or self.batch_size < tracked:
                raise UserError(
                    f"streaming PCA tracks method.num_components + method.oversample = {tracked} axes, so "
                    f"method.num_samples ({self.num_samples}) and method.batch_size ({self.batch_size}) must be at "
                    f"least {tracked}: raise them or lower the two"
                )

    def walked_sampler(self, sampler: SamplerSettings) -> SamplerSettings:
        """The run's grid with the collection's eta."""
        return sampler if self.collection_eta is None else replace(sampler, eta=self.collection_eta)

    def fit(self, model: DiffusionModel, sampler: SamplerSettings, cache: ArtifactCache | None = None) -> PCAResult:
        if self.mode not in ("per_step", "joint"):
            raise ValueError(f"pca mode must be 'per_step' or 'joint', not {self.mode!r}")
        schedule = self.walked_sampler(sampler).schedule(model.alphas_cumprod)
        dimensions = math.prod(model.h_shape) * (schedule.num_steps if self.mode == "joint" else 1)
        if self.num_components > dimensions:
            raise UserError(
                f"method.num_components={self.num_components} exceeds the {dimensions} dimensions of "
                f"{'h over all steps' if self.mode == 'joint' else 'h'} {tuple(model.h_shape)}: "
                f"ask for at most {dimensions}"
            )
        seeds = range(self.first_seed, self.first_seed + self.num_samples)
        shard = Shard.current()
        if shard.is_split:  # this rank's block of seeds; the ranks merge their sketches
            return self.fit_shard(model, schedule, shard.take(seeds), shard, cache, sampler.clip_x0)
        batches = collect_h(model, schedule, seeds, self.batch_size, cache, sampler.clip_x0)
        if self.num_samples <= self.exact_max_n:
            return exact_per_step_pca(batches, self.num_components, self.mode == "joint")
        stream = StreamingPCA(self.num_components, self.batch_size, self.mode == "joint", self.oversample)
        for h in batches:
            stream.update(h)
        return stream.result(schedule.num_steps)

    def fit_shard(self, model, schedule, seeds: list[int], shard: Shard, cache, clip_x0: bool = False) -> PCAResult:
        """One rank's part of the fit: its seeds' sketch (exact below exact_max_n samples in all, else
        streaming), merged with the other ranks'. Every rank returns the same result."""
        joint = self.mode == "joint"
        batches = collect_h(model, schedule, seeds, self.batch_size, cache, clip_x0)
        if self.num_samples <= self.exact_max_n or len(seeds) < self.num_components + self.oversample:
            h = torch.cat(list(batches)).double().numpy()
            rows = h.reshape(h.shape[0], 1 if joint else h.shape[1], -1)
            sketch = sketch_of_rows(rows)
        else:
            stream = StreamingPCA(self.num_components, self.batch_size, joint, self.oversample)
            for h in batches:
                stream.update(h)
            sketch = stream.sketch(schedule.num_steps)
        result = result_of_sketch(gathered_sketch(sketch, shard), self.num_components)
        if joint:
            k, num_steps = self.num_components, schedule.num_steps
            return PCAResult(
                result.axes.reshape(k, num_steps, -1),
                np.repeat(result.std, num_steps, axis=1),
                np.repeat(result.explained_variance_ratio, num_steps, axis=1),
                result.num_samples,
            )
        return result

    def find(self, model: DiffusionModel, sampler: SamplerSettings, cache: ArtifactCache | None = None) -> Directions:
        result = self.fit(model, sampler, cache)
        if self.mode == "joint":  # one vector over all steps: its step slices keep their relative signs
            axes = canonical_rows_numpy(result.axes)  # each whole component
            overlaps = decisive = restarted = np.zeros((self.num_components, 0))
        else:
            axes, overlaps = align_signs(result.axes, self.sign_reference, self.sign_restart_overlap)
            decisive = anchor_overlaps(axes, self.sign_reference, self.sign_restart_overlap)
            restarted = restarted_steps(axes, self.sign_restart_overlap) & (self.sign_reference == "chain_restart")
        names = [f"pc{j}" for j in range(self.num_components)]
        ratio = result.explained_variance_ratio.tolist()
        return self.directions(
            model,
            self.walked_sampler(sampler),
            torch.from_numpy(axes).float().reshape(self.num_components, sampler.num_steps, *model.h_shape),
            torch.from_numpy(result.std).float(),
            names,
            info={
                "explained_variance_ratio": ratio,
                "sign_overlap_min": overlaps.min(axis=1).tolist() if overlaps.size else [],
                # per axis, the smallest overlap a step's sign was decided by: near 0, rounding decided it
                "sign_anchor_overlap_min": decisive.min(axis=1).tolist() if decisive.size else [],
                "sign_restarts": restarted.sum(axis=1).tolist() if restarted.size else [],  # per axis (chain_restart)
                "num_samples": result.num_samples,
            },
            metrics={
                f"directions/{name}/explained_variance_ratio": float(torch.tensor(ratio[j]).mean())
                for j, name in enumerate(names)
            },
        )
