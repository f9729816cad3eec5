"""The dense, obvious computation of the edit metrics from attribute probabilities (docs/algorithms.md,
"Classifier scores"): the reference that hspace.metrics.edit_scores, which accumulates them as sums, is
tested against.

- success: of the samples on the wrong side of the threshold for the target attribute before the edit,
  the fraction on the intended side after it ("+": p >= tau, "-": p < tau);
- preserve: over the other attributes, the fraction of (sample, attribute) pairs whose binarised
  prediction is unchanged, with the mean |change| of their probability;
- score_delta: the mean signed and absolute change of every attribute's probability (the Table I matrix row).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def edit_metrics(
    before: torch.Tensor,
    after: torch.Tensor,
    attributes: Sequence[str],
    target: str,
    sign: int = 1,
    threshold: float = 0.5,
) -> dict[str, float]:
    """Metrics of one edit. before, after: (N, A) probabilities of the same samples unedited and edited."""
    if sign not in (1, -1):
        raise ValueError(f"edit sign must be +1 or -1, not {sign}")
    t = list(attributes).index(target)
    wrong_side = before[:, t] < threshold if sign > 0 else before[:, t] >= threshold
    moved = after[:, t] >= threshold if sign > 0 else after[:, t] < threshold
    others = [i for i in range(len(attributes)) if i != t]
    unchanged = (before[:, others] >= threshold) == (after[:, others] >= threshold)
    delta = after - before
    metrics = {
        "success": float(moved[wrong_side].float().mean()) if wrong_side.any() else float("nan"),
        "success_count": int(wrong_side.sum()),
        "target_delta": float(delta[:, t].mean()),
        "preserve": float(unchanged.float().mean()) if others else float("nan"),
        "preserve_abs_delta": float(delta[:, others].abs().mean()) if others else float("nan"),
    }
    for i, name in enumerate(attributes):
        metrics[f"score_delta/{name}"] = float(delta[:, i].mean())
        metrics[f"score_abs_delta/{name}"] = float(delta[:, i].abs().mean())
    return metrics


def strongest_attribute(before: torch.Tensor, after: torch.Tensor, attributes: Sequence[str]) -> tuple[str, int]:
    """The attribute whose probability an edit changes most on average, and the sign of that change:
    the target an unsupervised direction (e.g. a PC) edits, according to the classifier."""
    delta = (after - before).mean(dim=0)
    i = int(delta.abs().argmax())
    return attributes[i], 1 if delta[i] >= 0 else -1
