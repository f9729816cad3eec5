"""Edit metrics accumulated as sums, so they stream over batches and reduce across processes.

Success, preservation and score deltas as docs/algorithms.md ("Classifier scores") defines them. For
every (direction, strength, attribute) the state counts what they need for any choice of target
afterwards: for an unsupervised direction the target is only known once the mean score changes are in
(the attribute it moves most). Results equal the dense computation on the full set of probabilities
(tests/reference_edit_metrics.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric


class EditScores(Metric):
    full_state_update = False

    def __init__(
        self, num_directions: int, num_strengths: int, attributes: Sequence[str], threshold: float = 0.5, **kwargs
    ):
        super().__init__(**kwargs)
        self.attributes, self.threshold = list(attributes), threshold
        d, s, a = num_directions, num_strengths, len(self.attributes)
        for name in ("delta_sum", "abs_delta_sum", *DECISION_COUNTS):
            self.add_state(name, torch.zeros(d, s, a, dtype=torch.float64), dist_reduce_fx="sum")
        for name in ("count", "mse_sum", "ssim_sum"):
            self.add_state(name, torch.zeros(d, s, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, before: torch.Tensor, after: torch.Tensor, mse: torch.Tensor, ssim: torch.Tensor) -> None:
        """before (B, A) probabilities of the unedited samples; after (B, D, S, A) of their edits;
        mse, ssim (B, D, S) pixel preservation of each edit against its unedited sample."""
        before = before.double()[:, None, None, :]
        after = after.double()
        above_b, above_a = before >= self.threshold, after >= self.threshold
        delta = after - before
        self.delta_sum += delta.sum(0)
        self.abs_delta_sum += delta.abs().sum(0)
        self.below_before += (~above_b).expand_as(above_a).double().sum(0)
        self.below_to_above += (~above_b & above_a).double().sum(0)
        self.above_before += above_b.expand_as(above_a).double().sum(0)
        self.above_to_below += (above_b & ~above_a).double().sum(0)
        self.flips += (above_b != above_a).double().sum(0)
        self.count += torch.ones_like(mse, dtype=torch.float64).sum(0)
        self.mse_sum += mse.double().sum(0)
        self.ssim_sum += ssim.double().sum(0)

    def compute(self) -> dict[str, torch.Tensor]:
        """Means (score changes, mse, ssim) and the decision counts, reduced across processes. Read success and
        preservation from these (`success`, `preserve`), not from the states: outside compute() a process's
        states hold its own samples only."""
        n = self.count.clamp(min=1)
        return {
            "score_delta": self.delta_sum / n[..., None],
            "score_abs_delta": self.abs_delta_sum / n[..., None],
            "mse": self.mse_sum / n,
            "ssim": self.ssim_sum / n,
            "count": self.count.clone(),
            **{name: getattr(self, name).clone() for name in DECISION_COUNTS},
        }


DECISION_COUNTS = ("below_before", "below_to_above", "above_before", "above_to_below", "flips")
PER_ATTRIBUTE = ("score_delta", "score_abs_delta", *DECISION_COUNTS)


def success(totals: dict[str, torch.Tensor], d: int, s: int, target: int, sign: int) -> float:
    """Of the samples on the wrong side of the threshold for `target` before the edit, the fraction on the intended
    side after it; NaN when there were none. `totals`: EditScores.compute() shaped (D, S[, A])."""
    wrong, moved = ("below_before", "below_to_above") if sign > 0 else ("above_before", "above_to_below")
    total = totals[wrong][d, s, target]
    return float(totals[moved][d, s, target] / total) if total > 0 else float("nan")


def preserve(totals: dict[str, torch.Tensor], d: int, s: int, target: int | None) -> float:
    """The fraction of (sample, other attribute) pairs whose decision the edit left unchanged (every attribute
    when the edit has no target)."""
    num_attributes = totals["flips"].shape[-1]
    others = [i for i in range(num_attributes) if i != target]
    if not others or totals["count"][d, s] == 0:
        return float("nan")
    return float(1 - totals["flips"][d, s, others].sum() / (totals["count"][d, s] * len(others)))
