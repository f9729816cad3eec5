"""`method=class_mean`: supervised directions v = mean(h+_{T:1}) - mean(h-_{T:1}) (Haas et al. eq. 11;
docs/algorithms.md, "Supervised directions"), one per attribute, optionally disentangled from other
attributes (eq. 12).

Label sources:
- `classifier`: pass 1 generates seeds first_seed .. first_seed+num_index-1 and scores their x_0 with an
  attribute classifier, keeping only (seed, scores); pass 2 regenerates the top_k and bottom_k seeds of
  each attribute and accumulates per-class sums of h. Memory does not grow with num_index.
- `dataset`: labelled real images (items with `image` and `attributes`, names from the datamodule) are
  inverted (DDIM, or edit-friendly when eta > 0) and decoded again recording h, so the h are those the
  sampler sees; positives and negatives are the images whose label is 1 and 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from hspace.cache import ArtifactCache
from hspace.checks import boolean, choice, integer
from hspace.classifiers import AttributeClassifier, place_classifier
from hspace.data.batch import labelled_batches
from hspace.diffusion.inversion import invert
from hspace.diffusion.model import DiffusionModel
from hspace.diffusion.sampler import noise_for, sample
from hspace.diffusion.schedule import SamplerSettings
from hspace.directions.container import Directions
from hspace.directions.h_collection import collect_h
from hspace.directions.method import DirectionMethod
from hspace.directions.projection import LEFT_TOL, project_out
from hspace.distributed import Shard
from hspace.errors import UserError
from hspace.progress import bar

if TYPE_CHECKING:  # a datamodule is handed in; importing its module would load Lightning
    from hspace.data.datamodule import ImageDataModule


class ClassSums:
    """Per attribute and class, the running sum and count of h_{T:1}."""

    def __init__(self, attributes: list[str]):
        self.attributes = attributes
        self.sums: dict[tuple[str, int], torch.Tensor] = {}
        self.counts: dict[tuple[str, int], int] = {(a, c): 0 for a in attributes for c in (0, 1)}

    def add(self, attribute: str, positive: bool, h: torch.Tensor) -> None:
        key = (attribute, int(positive))
        total = h.double().sum(dim=0)
        self.sums[key] = self.sums[key] + total if key in self.sums else total
        self.counts[key] += h.shape[0]

    def merged(self, shard: Shard, shape: tuple[int, ...]) -> ClassSums:
        """The sums and counts of every rank (each rank's h of shape `shape`)."""
        if not shard.is_split:
            return self
        keys = sorted(self.counts)
        sums = torch.stack([self.sums.get(key, torch.zeros(shape, dtype=torch.float64)) for key in keys])
        sums = shard.sum(sums)
        counts = shard.sum(torch.tensor([self.counts[key] for key in keys], dtype=torch.long)).tolist()
        merged = ClassSums(self.attributes)
        for key, total, count in zip(keys, sums, counts):
            merged.counts[key] = int(count)
            if count:
                merged.sums[key] = total
        return merged

    def difference(self, attribute: str) -> torch.Tensor:
        for c, name in ((1, "positive"), (0, "negative")):
            if self.counts[(attribute, c)] == 0:
                raise UserError(f"no {name} examples of {attribute!r}: class-mean directions need both classes")
        return (
            self.sums[(attribute, 1)] / self.counts[(attribute, 1)]
            - self.sums[(attribute, 0)] / self.counts[(attribute, 0)]
        )


@dataclass
class ClassMeanDirections(DirectionMethod):
    attributes: list[str] = field(default_factory=list)  # one direction per attribute
    label_source: str = "classifier"  # classifier | dataset
    classifier: AttributeClassifier | None = None  # classifier mode: images -> P(attribute) (e.g. AttributeCNN)
    num_index: int = 1000  # classifier mode: generated samples scored
    top_k: int = 100  # classifier mode: positives = top k, negatives = bottom k
    first_seed: int = 2_000_000  # classifier mode: index seeds, apart from edited seeds
    data: ImageDataModule | None = None  # dataset mode: a datamodule with attribute labels
    split: str = "train"
    max_images: int = 1000  # dataset mode: at most this many images
    batch_size: int = 64
    condition_on: list[str] | str | None = None  # attributes to project out; "others": all other attributes
    keep_original: bool = False  # with condition_on: also keep the raw directions

    name = "class_mean"
    version = 2  # 2: the projection's basis comes from an SVD
    collects_across_processes = True

    def __post_init__(self):
        if isinstance(self.attributes, str):
            raise UserError(
                f"method.attributes={self.attributes!r} is one name, not a list: give e.g. [{self.attributes}]"
            )
        if not self.attributes or not all(isinstance(a, str) for a in self.attributes):
            raise UserError(f"method.attributes={self.attributes!r}: name the attributes to find directions for")
        repeated = sorted({a for a in self.attributes if list(self.attributes).count(a) > 1})
        if repeated:
            raise UserError(
                f"method.attributes names {', '.join(repeated)} more than once: each attribute gives one direction, "
                "so name each once"
            )
        choice(self.label_source, "method.label_source", ("classifier", "dataset"))
        boolean(self.keep_original, "method.keep_original")
        integer(self.top_k, "method.top_k", 1)
        integer(self.num_index, "method.num_index", 2)
        if self.num_index < 2 * self.top_k:
            raise UserError(
                f"method.num_index={self.num_index} is below twice method.top_k={self.top_k} (its top and bottom "
                f"{self.top_k} of the scored samples): give method.num_index of at least {2 * self.top_k}, or a "
                "smaller top_k"
            )
        integer(self.max_images, "method.max_images", 2)
        integer(self.batch_size, "method.batch_size", 1)
        integer(self.first_seed, "method.first_seed", 0)
        choice(self.split, "method.split", ("train", "val", "test"))
        if self.condition_on not in (None, "others") and not isinstance(self.condition_on, (list, tuple)):
            raise UserError(f"method.condition_on={self.condition_on!r} must be null, others, or a list of attributes")
        if self.label_source == "classifier":
            if self.classifier is None:
                raise UserError(
                    "method.label_source=classifier needs method.classifier (e.g. the shipped shapes_attributes)"
                )
            missing = [a for a in self.all_attributes() if a not in self.classifier.attributes]
            if missing:
                raise UserError(
                    f"method.attributes: the classifier does not know {', '.join(missing)}: it scores "
                    f"{', '.join(self.classifier.attributes)}"
                )

    def conditions_for(self, attribute: str) -> list[str]:
        if self.condition_on is None:
            return []
        if self.condition_on == "others":
            return [a for a in self.attributes if a != attribute]
        return [a for a in self.condition_on if a != attribute]

    def all_attributes(self) -> list[str]:
        extra = (
            [] if self.condition_on in (None, "others") else [a for a in self.condition_on if a not in self.attributes]
        )
        return list(self.attributes) + extra

    def place(self, device: torch.device) -> None:
        place_classifier(self.classifier, device)

    def classifier_sums(self, model, schedule, attributes, cache, clip_x0: bool = False) -> ClassSums:
        if self.classifier is None:
            raise UserError(
                "method.label_source=classifier needs method.classifier (e.g. the shipped shapes_attributes)"
            )
        missing = [a for a in attributes if a not in self.classifier.attributes]
        if missing:
            raise UserError(
                f"the classifier does not know {', '.join(missing)}: it scores {', '.join(self.classifier.attributes)}"
            )
        if 2 * self.top_k > self.num_index:
            raise UserError(
                f"method.top_k={self.top_k} positives and as many negatives need num_index >= {2 * self.top_k}, not "
                f"{self.num_index}"
            )
        seeds = list(range(self.first_seed, self.first_seed + self.num_index))
        shard = Shard.current()  # each rank scores and collects its block; the ranks merge scores and sums
        own = shard.take(seeds)
        scores = []
        batches = range(0, len(own), self.batch_size)
        for start in bar(batches, "class means: scoring the index", unit="batch"):  # pass 1: (seed, scores) only
            x_T, z = noise_for(own[start : start + self.batch_size], model, schedule)
            scores.append(self.classifier.probabilities(sample(model, schedule, x_T, z, clip_x0=clip_x0).x0).cpu())
        scores = shard.gather(torch.cat(scores) if scores else torch.zeros(0, len(self.classifier.attributes)))
        sums = ClassSums(attributes)
        for attribute in bar(attributes, "class means: h of the selected", unit="attribute"):  # pass 2: h
            order = scores[:, self.classifier.attributes.index(attribute)].argsort(descending=True, stable=True)
            for positive, chosen in ((True, order[: self.top_k]), (False, order[-self.top_k :])):
                chosen_seeds = shard.take([seeds[i] for i in chosen.tolist()])
                for h in collect_h(model, schedule, chosen_seeds, self.batch_size, cache, clip_x0):
                    sums.add(attribute, positive, h)
        return sums.merged(shard, (schedule.num_steps, *model.h_shape))

    def dataset_sums(self, model, schedule, attributes, clip_x0: bool = False) -> ClassSums:
        if self.data is None:
            raise UserError(
                "method.label_source=dataset needs method.data: a datamodule whose items carry attribute labels"
            )
        columns = {attribute: self.data.label_column(attribute) for attribute in attributes}
        dataset = self.data.datasets[self.split]
        count = min(len(dataset), self.max_images)
        shard = Shard.current()  # each rank inverts its block of images; the ranks merge their sums
        first, stop = shard.bounds(count)
        sums = ClassSums(attributes)
        batches = labelled_batches(dataset, first, stop, self.batch_size, "class means: labelled images")
        for indices, images, labels in batches:
            inverted = invert(model, schedule, images.to(model.device, model.dtype), seeds=indices)
            h = sample(model, schedule, inverted.x_T, inverted.z, record_h=True, clip_x0=clip_x0).h
            for attribute in attributes:
                positive = labels[:, columns[attribute]] > 0.5
                if positive.any():
                    sums.add(attribute, True, h[positive])
                if (~positive).any():
                    sums.add(attribute, False, h[~positive])
        return sums.merged(shard, (schedule.num_steps, *model.h_shape))

    def find(self, model: DiffusionModel, sampler: SamplerSettings, cache: ArtifactCache | None = None) -> Directions:
        # the index and the inverted images walk the run's grid and eta
        schedule = sampler.schedule(model.alphas_cumprod)
        num_steps = schedule.num_steps
        attributes = self.all_attributes()
        sums = (
            self.classifier_sums(model, schedule, attributes, cache, sampler.clip_x0)
            if self.label_source == "classifier"
            else self.dataset_sums(model, schedule, attributes, sampler.clip_x0)
        )
        raw = {a: sums.difference(a).flatten() for a in attributes}  # (T * D_h,) float64
        vectors, names, info = (
            [],
            [],
            {"counts": {f"{a}/{'pos' if c else 'neg'}": n for (a, c), n in sums.counts.items()}},
        )
        for attribute in self.attributes:
            conditions = self.conditions_for(attribute)
            if conditions and self.keep_original:
                vectors.append(raw[attribute])
                names.append(attribute)
            if conditions:
                v = project_out(raw[attribute], torch.stack([raw[c] for c in conditions]))
                if v.norm() <= LEFT_TOL * raw[attribute].norm():
                    raise UserError(
                        f"the class-mean difference of {attribute!r} lies in the span of those of "
                        f"{', '.join(conditions)} (one-hot labels are: circle, square and triangle), so nothing is "
                        "left once they are projected out: leave one of them out of method.condition_on"
                    )
                info[f"{attribute}/conditioned_on"] = conditions
                info[f"{attribute}/norm_ratio"] = float(v.norm() / raw[attribute].norm())
                vectors.append(v)
                names.append(f"{attribute}_disentangled" if self.keep_original else attribute)
            else:
                vectors.append(raw[attribute])
                names.append(attribute)
        stacked = torch.stack(vectors).reshape(len(vectors), num_steps, -1)
        norms = stacked.norm(dim=-1)
        unit = stacked / norms.clamp(min=1e-30)[..., None]
        return self.directions(
            model,
            sampler,
            unit.float().reshape(len(vectors), num_steps, *model.h_shape),
            norms.float(),
            names,
            info=info,
        )
