"""BoundaryDiffusion (Zhu et al. 2023; docs/algorithms.md, "BoundaryDiffusion"): linear SVM boundaries
in x_t and h at a mixing step t_m, fitted on a labelled latent bank.

With `t_mix=auto` the mixing step is searched (hspace.directions.mixing) and the held-out accuracy of both SVMs is
recorded at every candidate step. The bank here holds generated samples: x_T is drawn per seed, deterministic DDIM
takes it to t_m, h_tm is the mid-block output of the call at (x_tm, t_m), and the label is an attribute classifier's
decision on the finished sample (continued with deterministic DDIM). Each space gets `SVC(kernel="linear")` with
balanced class weights (optional cross-validated C), fitted on a train split and scored on a disjoint, stratified
test split. The unit normals and offsets b / ||w|| are saved as plain tensors.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
import torch

from hspace.cache import ArtifactCache
from hspace.checks import choice, integer, number
from hspace.classifiers import AttributeClassifier, place_classifier
from hspace.data.batch import image_batch
from hspace.diffusion.model import DiffusionModel
from hspace.diffusion.schedule import SamplerSettings
from hspace.directions.boundary_bank import LatentBank, generated_bank, inverted_bank, load_bank, save_bank
from hspace.directions.container import Directions
from hspace.directions.method import DirectionMethod
from hspace.directions.mixing import MixingCurve, admitted, fine_schedule, most_accurate, search_t_mix
from hspace.distributed import Shard
from hspace.errors import UserError

if TYPE_CHECKING:  # a datamodule is handed in; importing its module would load Lightning
    from hspace.data.datamodule import ImageDataModule

C_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
MIXING_DEFAULTS = {
    "candidates": list(range(100, 901, 50)),
    "stride": 10,
    "num_sampled": 100,
    "num_real": 100,
    "epsilon": 0.01,
    "fallback": 500,
    "select": "radius",
}


def check_mixing(mixing) -> dict:
    """The t_mix=auto search settings (method.mixing) with the defaults filled in, each checked: a bad one would
    otherwise stop the search after sampling and inverting, or silently change it."""
    if not isinstance(mixing, dict):
        raise UserError(f"method.mixing={mixing!r} must map settings to values, e.g. method.mixing.stride=10")
    unknown = [key for key in mixing if key not in MIXING_DEFAULTS]
    if unknown:
        raise UserError(
            f"method.mixing.{unknown[0]} is not a mixing setting: they are {', '.join(MIXING_DEFAULTS)} (check the "
            "spelling)"
        )
    settings = {**MIXING_DEFAULTS, **mixing}
    candidates = settings["candidates"]
    if isinstance(candidates, (str, bytes)) or not isinstance(candidates, (list, tuple)) or not candidates:
        raise UserError(f"method.mixing.candidates={candidates!r} must be a non-empty list of training timesteps")
    settings["candidates"] = [integer(t, f"method.mixing.candidates[{i}]", 0, 999) for i, t in enumerate(candidates)]
    settings["stride"] = integer(settings["stride"], "method.mixing.stride", 1)
    settings["num_sampled"] = integer(settings["num_sampled"], "method.mixing.num_sampled", 1)
    settings["num_real"] = integer(settings["num_real"], "method.mixing.num_real", 1)
    settings["epsilon"] = number(settings["epsilon"], "method.mixing.epsilon", 0.0)
    settings["fallback"] = integer(settings["fallback"], "method.mixing.fallback", 0, 999)
    choice(settings["select"], "method.mixing.select", ("radius", "accuracy"))
    return settings


@dataclass
class Boundary:
    normal: np.ndarray  # (D,) unit normal, pointing to the positive class
    offset: float  # b / ||w||: signed distance = <n, v> + offset
    val_acc: float
    train_acc: float
    C: float
    counts: dict


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    train, test = [], []
    for value in (-1, 1):
        members = np.flatnonzero(labels == value)
        rng.shuffle(members)
        cut = min(max(1, round(len(members) * test_fraction)), len(members) - 1)  # each class keeps a train example
        test.extend(members[:cut])
        train.extend(members[cut:])
    return np.sort(train), np.sort(test)


def check_labels(labels: np.ndarray, min_per_class: int, what: str) -> None:
    counts = {value: int((labels == value).sum()) for value in (-1, 1)}
    if min(counts.values()) < min_per_class:
        raise UserError(
            f"{what} has {counts[1]} positive and {counts[-1]} negative examples; a boundary needs at least "
            f"{min_per_class} of each (method.min_per_class): label more samples or choose another attribute"
        )


def fit_boundary(
    features: np.ndarray,
    labels: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    C: float | str = 1.0,
    class_weight: str | None = "balanced",
    folds: int = 3,
) -> Boundary:
    """A linear SVM on float64 features; C a number or "cv" (stratified k-fold over C_GRID on train)."""
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.svm import SVC

    x = features.astype(np.float64)
    fewest = min(int((labels[train] == value).sum()) for value in (-1, 1))
    if C == "cv" and fewest < folds:
        raise UserError(
            f"method.C=cv chooses C by {folds}-fold cross-validation on the training split, which holds {fewest} "
            f"example(s) of one class: give a number for method.C, more bank samples, or a lower method.test_fraction"
        )
    if C == "cv":
        search = GridSearchCV(
            SVC(kernel="linear", class_weight=class_weight),
            {"C": list(C_GRID)},
            cv=StratifiedKFold(folds, shuffle=True, random_state=0),
        )
        search.fit(x[train], labels[train])
        C = float(search.best_params_["C"])
    svm = SVC(kernel="linear", C=float(C), class_weight=class_weight).fit(x[train], labels[train])
    w = svm.coef_.ravel()
    norm = float(np.linalg.norm(w))
    if norm == 0:  # no hyperplane: every training example has the same features
        raise UserError(
            "the SVM found no boundary: the training examples of both classes have the same features; label more "
            "varied samples or choose another attribute"
        )
    sign = 1.0 if svm.classes_[1] == 1 else -1.0  # sklearn's coef_ points to classes_[1]
    return Boundary(
        normal=sign * w / norm,
        offset=sign * float(svm.intercept_[0]) / norm,
        val_acc=float(svm.score(x[test], labels[test])) if len(test) else float("nan"),
        train_acc=float(svm.score(x[train], labels[train])),
        C=float(C),
        counts={
            "train": len(train),
            "test": len(test),
            "positive": int((labels == 1).sum()),
            "negative": int((labels == -1).sum()),
        },
    )


@dataclass
class BoundaryDirections(DirectionMethod):
    """`method=boundary`: one attribute's boundaries in x_t and h at the mixing step. Its directions carry
    the unit x_t normal (`x_normal`, (k, C, H, W)) and the offsets b / ||w|| of both spaces (`offsets`, (k, 2))
    beside the h normal at t_m; edit=boundary_step reads them."""

    attribute: str = "light_background"
    bank: str = "generated"  # generated: samples labelled by `classifier` | inverted: labelled real images of `data`
    # labels the generated bank: images -> P(attribute) (an AttributeCNN or CLIP zero-shot)
    classifier: AttributeClassifier | None = None
    t_mix: int | str = 500  # mixing step (training timestep; the nearest grid step), or "auto"
    # inverted bank (train split) and t_mix=auto (test split): a labelled datamodule
    data: ImageDataModule | None = None
    # t_mix=auto: candidates, stride, num_sampled, num_real, epsilon, fallback, select
    mixing: dict = field(default_factory=dict)
    num_bank: int = 200  # generated samples in the bank
    test_fraction: float = 0.5  # held out, stratified, disjoint by seed
    first_seed: int = 3_000_000
    C: float | str = 1.0  # a number, or "cv"
    class_weight: str | None = "balanced"
    min_per_class: int = 5
    batch_size: int = 64

    name = "boundary"
    # 2: t_mix=auto chooses on a validation part of the training split, the split keeps a training example of each
    # class, and the mixing search walks the clipped paths a clip_x0 run edits
    version = 2
    collects_across_processes = True
    provides = ("x_normal", "offsets")

    def __post_init__(self):
        choice(self.bank, "method.bank", ("generated", "inverted"))
        if self.t_mix != "auto":
            integer(self.t_mix, "method.t_mix", 0, 999)
        integer(self.min_per_class, "method.min_per_class", 1)
        integer(self.num_bank, "method.num_bank", 2)  # too few of a class is refused with the labels in hand
        integer(self.batch_size, "method.batch_size", 1)
        integer(self.first_seed, "method.first_seed", 0)
        if not 0 < number(self.test_fraction, "method.test_fraction") < 1:
            raise UserError(f"method.test_fraction={self.test_fraction} must lie strictly between 0 and 1")
        if self.C != "cv":
            number(self.C, "method.C", 1e-12)
        if self.class_weight not in (None, "balanced"):
            raise UserError(f"method.class_weight={self.class_weight!r} must be balanced or null")
        if self.bank == "generated" and (self.classifier is None or self.attribute not in self.classifier.attributes):
            known = ", ".join(self.classifier.attributes) if self.classifier is not None else ""
            raise UserError(
                f"method.attribute={self.attribute!r} is not scored by method.classifier ({known or 'none given'})"
            )
        if self.bank == "inverted" and self.data is None:
            raise UserError("method.bank=inverted needs method.data: labelled images, e.g. method.data=${data}")
        check_mixing(self.mixing)  # the settings stay as given: they are part of the method's cache key

    def make_bank(
        self, model, schedule, t_indices, seeds, cache: ArtifactCache | None = None, clip_x0: bool = False
    ) -> LatentBank:
        """The latents at each grid index with every attribute's scores, from the cache when an identical bank
        was built (for any of the attributes it scores)."""
        if self.bank == "generated":
            source = {"seeds": [seeds[0], len(seeds)], "classifier": self.classifier.identity()}
            if clip_x0:  # named only when on, so banks made without it keep their keys
                source["clip_x0"] = True

            def compute():
                return generated_bank(model, schedule, t_indices, seeds, self.classifier, self.batch_size, clip_x0)
        elif self.bank == "inverted":  # __post_init__ made sure there is data
            dataset = self.data.datasets["train"]
            names = list(self.data.attributes)
            column = self.data.label_column(self.attribute)
            count = min(len(dataset), self.num_bank)
            # refuse a one-sided bank before inverting anything
            check_labels(
                np.array([1 if dataset[i]["attributes"][column] >= 0.5 else -1 for i in range(count)]),
                self.min_per_class,
                f"the bank of {self.attribute!r}",
            )
            source = {"data": self.data.identity(), "count": count, "type": type(dataset).__name__}

            def compute():
                return inverted_bank(model, schedule, t_indices, dataset, names, count, self.batch_size)
        else:
            raise UserError(f"method.bank must be generated or inverted, not {self.bank!r}")
        if cache is None:
            return compute()
        parts = {
            "model": model.identity(),
            "timesteps": schedule.timesteps[t_indices].tolist(),
            "grid": schedule.timesteps.tolist(),
            "final_alpha": float(schedule.alpha_bar_prev[-1]),  # the generated bank is labelled on its x0
            "bank": self.bank,
            **source,
        }
        # the ranks of a split collection build the bank together (they gather it): none may wait on a lock
        return cache.get_across_ranks(
            "boundary_bank", parts, compute, save=save_bank, load=load_bank, shard=Shard.current()
        )

    def fit_spaces(
        self, x: np.ndarray, h: np.ndarray, labels: np.ndarray, validation: bool = False
    ) -> dict[str, Boundary]:
        """The x_t and h boundaries, fitted on the training split and scored on the held-out one; `validation`:
        fitted and scored within the training split alone (a part of it held out as the test split is), so that
        choosing among them leaves the held-out split unseen."""
        train, test = stratified_split(labels, self.test_fraction)
        if validation:
            inner, held = stratified_split(labels[train], self.test_fraction, seed=1)
            train, test = train[inner], train[held]
        return {
            space: fit_boundary(features, labels, train, test, self.C, self.class_weight)
            for space, features in (("x", x), ("h", h))
        }

    def search(
        self, model: DiffusionModel, seeds: list[int], cache: ArtifactCache | None = None, clip_x0: bool = False
    ) -> MixingCurve:
        """t_mix=auto: the radius criterion, plus the SVM accuracy at every candidate on a validation part of the
        training split (`fit_spaces(validation=True)`), both on the sampled paths the edits walk (x0_hat clipped
        with `clip_x0`)."""
        settings = check_mixing(self.mixing)
        if self.data is None:
            raise UserError("method.t_mix=auto needs method.data (real images to invert), e.g. method.data=${data}")
        dataset = self.data.datasets["test"]
        count = min(len(dataset), settings["num_real"])
        real = image_batch(dataset, range(count))
        candidates = list(settings["candidates"])
        curve = search_t_mix(
            model,
            real,
            candidates,
            settings["stride"],
            settings["num_sampled"],
            settings["epsilon"],
            settings["fallback"],
            clip_x0=clip_x0,
        )
        fine = fine_schedule(model, candidates, settings["stride"])
        indices = [int((fine.timesteps == t).nonzero()[0]) for t in candidates]
        bank = self.make_bank(model, fine, indices, seeds, cache, clip_x0)
        labels = bank.labels(self.attribute)
        check_labels(labels, self.min_per_class, f"the bank of {self.attribute!r}")
        # scored within the training split: t_mix chosen by them leaves the held-out accuracy of the run unbiased
        fits = [self.fit_spaces(bank.x[i], bank.h[i], labels, validation=True) for i in indices]
        curve.accuracy = {space: [f[space].val_acc for f in fits] for space in ("x", "h")}
        if settings["select"] == "accuracy":
            steps = admitted(candidates, curve.delta, settings["epsilon"])
            best = most_accurate(candidates, steps, curve.accuracy)
            if best is not None:  # with no step admitted, the fallback stands
                curve.t_mix = best
                curve.reason += "; then the highest mean validation accuracy among them"
        return curve

    def place(self, device: torch.device) -> None:
        place_classifier(self.classifier, device)

    def walked_sampler(self, sampler: SamplerSettings) -> SamplerSettings:
        """The run's grid, deterministic: the bank reaches t_m by DDIM, whatever the run's eta after it."""
        return replace(sampler, eta=0.0)

    def find(self, model: DiffusionModel, sampler: SamplerSettings, cache: ArtifactCache | None = None) -> Directions:
        walked = self.walked_sampler(sampler)
        schedule = walked.schedule(model.alphas_cumprod)
        num_steps = schedule.num_steps
        low, high = int(schedule.timesteps.min()), int(schedule.timesteps.max())
        if self.t_mix != "auto" and not low <= int(self.t_mix) <= high:
            raise UserError(
                f"method.t_mix={self.t_mix} lies outside this run's grid ({high}..{low}): choose a step within it"
            )
        seeds = list(range(self.first_seed, self.first_seed + self.num_bank))
        curve = self.search(model, seeds, cache, sampler.clip_x0) if self.t_mix == "auto" else None
        t_index = schedule.index_of(curve.t_mix if curve else int(self.t_mix))
        timer = {}
        start = time.perf_counter()
        bank = self.make_bank(model, schedule, [t_index], seeds, cache, sampler.clip_x0)
        labels = bank.labels(self.attribute)
        timer["time/bank_s"] = round(time.perf_counter() - start, 3)
        check_labels(labels, self.min_per_class, f"the bank of {self.attribute!r}")
        start = time.perf_counter()
        fits = self.fit_spaces(bank.x[t_index], bank.h[t_index], labels)
        timer["time/svm_fit_s"] = round(time.perf_counter() - start, 3)
        vectors = torch.zeros(1, num_steps, *model.h_shape)
        vectors[0, t_index] = torch.from_numpy(fits["h"].normal).float().view(model.h_shape)
        scales = torch.zeros(1, num_steps)
        scales[0, t_index] = 1.0
        fit_info = {
            f"boundary/{space}/{key}": getattr(fit, key)
            for space, fit in fits.items()
            for key in ("val_acc", "train_acc", "C", "counts")
        }
        metrics = {k: v for k, v in fit_info.items() if isinstance(v, (int, float))} | timer
        if curve:
            metrics["mixing/t_mix"] = curve.t_mix
        return self.directions(
            model,
            walked,
            vectors,
            scales,
            [self.attribute],
            extra={
                "x_normal": torch.from_numpy(fits["x"].normal).float().view(1, *model.image_shape),
                "offsets": torch.tensor([[fits["x"].offset, fits["h"].offset]], dtype=torch.float32),  # (k, [x, h])
            },
            info={
                "t_mix": int(schedule.timesteps[t_index]),
                "t_index": t_index,
                **fit_info,
                **(curve.as_info() if curve else {}),
            },
            metrics=metrics,
            plots={"mixing_curve": curve.plot()} if curve else {},
        )
