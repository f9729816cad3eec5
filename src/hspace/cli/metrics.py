"""The `metrics` config group as EvaluationSettings, and the FID reference (composition root only)."""

from __future__ import annotations

import functools

import torch
from omegaconf import DictConfig, OmegaConf

from hspace.cache import ArtifactCache
from hspace.classifiers import FeatureClassifier
from hspace.cli import build
from hspace.data.batch import image_batch
from hspace.errors import UserError
from hspace.identity import Identified
from hspace.metrics.evaluation import EvaluationSettings
from hspace.metrics.fid import cached_reference_statistics, classifier_backend, inception_backend
from hspace.metrics.locality import LocalityRegion


def evaluation_settings(metrics: DictConfig, device: torch.device) -> EvaluationSettings | None:
    backend_kind = "none" if metrics.get("fid") is None else metrics.fid.backend  # metrics.fid=null: no FID
    factors = bool(metrics.get("factors", False))
    locality = locality_region(metrics.get("locality"))
    if metrics.classifier is None and backend_kind == "none" and not factors and not locality.active:
        return None
    classifier = build(metrics.classifier, device=device) if metrics.classifier is not None else None
    if backend_kind == "classifier":
        if not isinstance(classifier, FeatureClassifier):
            raise UserError(
                "metrics.fid.backend=classifier needs a metrics.classifier with penultimate features (an AttributeCNN)"
            )
        backend = classifier_backend(classifier, metrics.fid.name)
    elif backend_kind == "inception":
        backend = inception_backend(metrics.fid.weights_path)
    elif backend_kind == "none":
        backend = None
    else:
        raise UserError(f"metrics.fid.backend must be classifier, inception or none, not {backend_kind!r}")
    targets = plain_dict(metrics.get("targets"))
    for name, target in targets.items():
        attribute = str(target).lstrip("+-")
        if classifier is not None and attribute not in classifier.attributes:
            raise UserError(
                f"metrics.targets.{name}={target!r} is not an attribute of metrics.classifier: it scores "
                f"{', '.join(classifier.attributes)} (a leading - lowers one)"
            )
    return EvaluationSettings(
        classifier=classifier,
        fid_backend=backend,
        targets=targets,
        factors=factors,
        factor_targets=plain_dict(metrics.get("factor_targets")),
        factor_pairs=metrics.get("factor_pairs", "valid"),
        threshold=metrics.get("threshold", 0.5),
        batch_size=metrics.get("batch_size", 16),
        locality=locality,
    )


def locality_region(node) -> LocalityRegion:
    """metrics.locality ({region, box, file, margin}) as a LocalityRegion; none where it is not set."""
    if node is None:
        return LocalityRegion()
    settings = plain_dict(node)
    box = settings.get("box")
    return LocalityRegion(
        kind=str(settings.get("region", "none")),
        box=tuple(box) if box is not None else None,
        file=settings.get("file"),
        margin=settings.get("margin", 1),
    )


def plain_dict(node) -> dict:
    """A config mapping (or nothing) as a plain dict."""
    return dict(OmegaConf.to_container(node, resolve=True)) if node is not None else {}


def fid_reference(
    evaluation: EvaluationSettings,
    data_cfg: DictConfig,
    split: str,
    count: int,
    cache: ArtifactCache | None,
    device,
    batch_size: int = 256,
) -> dict[str, torch.Tensor]:
    """FID reference statistics of the first `count` images of a split of the configured data, computed
    once per (backend, data, count) and cached; the data are identified by their config and by what the
    datamodule says they are (split lengths and items, ImageDataModule.identity), so a folder whose content
    changed at the same path is not served the old statistics."""

    data = functools.cache(lambda: build(data_cfg))  # built once: for the key (with a cache), on a miss for images

    def batches():
        dataset = data().datasets[split]
        if len(dataset) < count:
            raise UserError(
                f"metrics.fid.reference_count={count} but the {split} split has only {len(dataset)} images: lower the "
                "count"
            )
        for start in range(0, count, batch_size):
            yield image_batch(dataset, range(start, min(start + batch_size, count)))

    dataset_id = {"data": OmegaConf.to_container(data_cfg, resolve=True), "split": split}
    for key in ("batch_size", "num_workers"):  # loading settings do not change the images
        dataset_id["data"].pop(key, None)
    if cache is not None and isinstance(data(), Identified):
        dataset_id["content"] = data().identity()
    return cached_reference_statistics(evaluation.fid_backend, dataset_id, count, batches, cache, device)
