"""Stage 3 of a run: scoring edits against what they depart from (hspace.metrics.evaluation)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch

from hspace.images import unit_to_uint8
from hspace.metrics.evaluation import EvaluationSettings, evaluate_edits, headline_index
from hspace.metrics.factor_scores import factor_scores
from hspace.metrics.keys import PREFIX, direction_values, edit_key, parse_edit_key


@dataclass
class Scores:
    metrics: dict = field(default_factory=dict)
    tables: dict[str, tuple[list[str], list[list]]] = field(default_factory=dict)  # W&B tables: key -> (columns, rows)

    def __ior__(self, other: Scores) -> Scores:
        self.metrics |= other.metrics
        self.tables |= other.tables
        return self


def strength_table(
    metrics: dict, names: Sequence[str], strengths: Sequence[float], prefix: str = PREFIX
) -> tuple[list[str], list[list]]:
    """One row per (direction, strength): target, success, preserve, MSE, SSIM and FID where measured."""
    parsed = [parse_edit_key(name, prefix) for name in metrics]
    fid_keys = sorted({k.metric for k in parsed if k and k.strength is not None and k.metric.startswith("fid/")})
    columns = ["direction", "strength", "target", "success", "preserve", "mse", "ssim", *fid_keys]
    rows = []
    for name in names:
        for strength in strengths:
            row = [name, strength, metrics.get(edit_key(name, "target", prefix=prefix))]
            row += [
                metrics.get(edit_key(name, metric, strength=strength, prefix=prefix))
                for metric in ("success", "preserve", "mse", "ssim", *fid_keys)
            ]
            rows.append(row)
    return columns, rows


def rename(key: str, prefix: str) -> str:
    """An evaluation key under `prefix`: edit/<rest> -> <prefix><rest>; the unedited samples' own keys (their FID)
    stay as they are for generated samples and go under <prefix>unedited/ for others."""
    if prefix == PREFIX:
        return key
    return prefix + key.removeprefix(PREFIX) if key.startswith(PREFIX) else f"{prefix}unedited/{key}"


def with_generated_targets(evaluation: EvaluationSettings, metrics: dict, names: Sequence[str]) -> EvaluationSettings:
    """The settings for scoring real-image edits: the classifier and factor targets found on the generated
    samples, so that both sets are judged on the same attribute and factor, or on none where the generated
    samples found none (targets given in the config win)."""
    return replace(
        evaluation,
        targets=direction_values(metrics, "target", names, keep_none=True) | evaluation.targets,
        factor_targets=direction_values(metrics, "factors/target", names, keep_none=True) | evaluation.factor_targets,
    )


def score_stage(
    evaluation: EvaluationSettings,
    originals: torch.Tensor,
    edited: torch.Tensor,
    names,
    strengths,
    trainer_kwargs: dict | None,
    prefix: str = PREFIX,
) -> Scores:
    """Metrics and W&B tables of edits (D, N, S, C, H, W) against their unedited samples (N, C, H, W); keys
    start with `prefix` (edit/ for generated samples, edit_real/ for inverted real images)."""
    originals, edited = unit_to_uint8(originals), unit_to_uint8(edited)
    results, tables = {}, {}
    if evaluation.fid_backend is not None and len(originals) < 2:  # FID compares sets (noted before the run)
        results[rename(f"fid/{evaluation.fid_backend.name}", prefix)] = None
        evaluation = replace(evaluation, fid_backend=None)
    if evaluation.uses_loop:
        evaluated = evaluate_edits(evaluation, originals, edited, names, strengths, trainer_kwargs)
        results |= {rename(k, prefix): v for k, v in evaluated.results.items()}
        if evaluation.classifier is not None:
            tables[prefix + "score_matrix"] = evaluated.score_matrix()
            tables[prefix + "by_strength"] = strength_table(results, names, strengths, prefix)
    if evaluation.factors:
        head = headline_index(strengths)
        measured, matrix = factor_scores(
            originals, edited, names, strengths, evaluation.factor_targets, head, pairs=evaluation.factor_pairs
        )
        results |= {rename(k, prefix): v for k, v in measured.items()}
        tables[prefix + "factor_matrix"] = matrix
    return Scores(results, tables)
