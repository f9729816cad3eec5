"""Attribute classifiers: what evaluation, supervised directions and boundary banks need of one."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class AttributeClassifier(Protocol):
    """P(attribute) for images in [-1, 1], with an identity for cache keys (the hash of its weights)."""

    @property
    def attributes(self) -> list[str]: ...

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [-1, 1] -> (B, A) in [0, 1], columns in the order of `attributes`."""
        ...

    def identity(self) -> str: ...


@runtime_checkable
class FeatureClassifier(AttributeClassifier, Protocol):
    """A classifier whose penultimate features can serve as an FID feature space."""

    @property
    def resolution(self) -> int:
        """The image size the features are defined at."""
        ...

    def features(self, images: torch.Tensor) -> torch.Tensor: ...


def place_classifier(classifier: AttributeClassifier | None, device: torch.device) -> None:
    """Move a classifier that is a torch module to `device`; any other computes where it is (its `probabilities`
    takes images from any device)."""
    if isinstance(classifier, torch.nn.Module):
        classifier.to(device)
