"""Evaluation of a run's edits as a Lightning test loop: the same code on one CPU or several GPUs, with
torchmetrics states reduced across processes.

Each test item is one sample: its unedited image and its edits (D directions x S strengths). The loop
scores them with the attribute classifier (success, preservation, score changes), measures pixel
preservation (MSE on [0, 1], SSIM) and feeds FID metrics: unedited samples, and each (direction,
strength) edited set, against cached reference statistics of the data.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from torchmetrics import Metric
from torchmetrics.functional.image import structural_similarity_index_measure

import hspace.quiet
from hspace.classifiers import AttributeClassifier
from hspace.distributed import Shard
from hspace.images import uint8_to_unit
from hspace.lightning.terminated import stopped_by_sigterm
from hspace.metrics.edit_scores import PER_ATTRIBUTE, EditScores, preserve, success
from hspace.metrics.fid import FeatureBackend, load_reference, make_fid
from hspace.metrics.keys import edit_key, with_headline
from hspace.metrics.locality import LocalityRegion, LocalityScores, locality_metrics

# The least change of an attribute's mean probability, at the headline strength, that makes it a guessed target.
MIN_SCORE_CHANGE = 0.01


@dataclass
class EvaluationSettings:
    classifier: AttributeClassifier | None = None
    fid_backend: FeatureBackend | None = None
    reference: dict[str, torch.Tensor] | None = None  # FID reference statistics (see metrics.fid)
    # direction -> "attribute" or "-attribute"; None: the direction has no target (the generated samples found none)
    targets: dict[str, str | None] = field(default_factory=dict)
    factors: bool = False  # also score edits by the Shapes factors measured from pixels (hspace.metrics.factor_scores)
    factor_targets: dict[str, str | None] = field(default_factory=dict)  # direction -> e.g. "-r", "colour=red"; None
    factor_pairs: str = "valid"  # the pairs factor effects are taken over (hspace.metrics.factor_scores.PAIRS)
    threshold: float = 0.5
    batch_size: int = 16
    locality: LocalityRegion = field(default_factory=LocalityRegion)  # change inside vs outside a region

    @property
    def uses_loop(self) -> bool:
        """Whether scoring runs the Lightning test loop (evaluate_edits), whose Trainer reads trainer.devices and
        trainer.strategy; the Shapes factors alone are measured without it."""
        return self.classifier is not None or self.fid_backend is not None or self.locality.active


def headline_index(strengths: Sequence[float]) -> int:
    """The strength reported without a suffix: the largest positive one (else the largest in magnitude)."""
    positive = [i for i, s in enumerate(strengths) if s > 0]
    candidates = positive or range(len(strengths))
    return max(candidates, key=lambda i: abs(strengths[i]))


class EditSamples(Dataset):
    """Item n: (unedited image n, its edits (D, S, C, H, W)), both as uint8."""

    def __init__(self, originals: torch.Tensor, edits: torch.Tensor):
        self.originals, self.edits = originals, edits

    def __len__(self):
        return len(self.originals)

    def __getitem__(self, n):
        return self.originals[n], self.edits[:, n]


class EachOnce(Sampler[int]):
    """This process's block of `size` items (Shard.bounds, read in the process that iterates): across the
    processes every item exactly once. Lightning's DistributedSampler repeats items to give every process as
    many, which would count them twice in the summed metric states."""

    def __init__(self, size: int):
        self.size = size

    def indices(self) -> range:
        return range(*Shard.current().bounds(self.size))

    def __iter__(self):
        return iter(self.indices())

    def __len__(self) -> int:
        return len(self.indices())


class EditEvaluation(pl.LightningModule):
    def __init__(self, settings: EvaluationSettings, names: Sequence[str], strengths: Sequence[float]):
        super().__init__()
        self.settings, self.names, self.strengths = settings, list(names), list(strengths)
        classifier = settings.classifier
        self.classifier = classifier if isinstance(classifier, nn.Module) else None
        if classifier is not None:
            self.scores = EditScores(len(names), len(strengths), classifier.attributes, settings.threshold)
        if settings.fid_backend is not None:
            if settings.reference is None:
                raise ValueError("FID needs reference statistics of the data (hspace.metrics.fid.reference_statistics)")
            self.fid_unedited = make_fid(settings.fid_backend)
            self.fid_edited = nn.ModuleList(make_fid(settings.fid_backend) for _ in range(len(names) * len(strengths)))
        if settings.locality.active:
            self.locality = LocalityScores(len(names), len(strengths))
        self.fixed_mask: torch.Tensor | None = None  # the box or file region, read once
        self.results: dict = {}
        # where rank 0 writes `results` for the parent when the loop runs in spawned processes: Lightning passes
        # what they log back through a pipe it reads only after they exit, so hundreds of logged metrics would
        # fill the pipe and hang the run
        self.results_file: str | None = None
        self.quiet_workers = hspace.quiet.QUIETED  # spawned processes are as quiet as this one

    def __setstate__(self, state):
        """In a process spawned for the loop (ddp_spawn), before Lightning starts its process group there."""
        super().__setstate__(state)
        if self.quiet_workers and not hspace.quiet.QUIETED:
            hspace.quiet.quiet()

    def on_test_start(self):
        # Fresh states in every process: ddp_spawn on CPU hands this module to its processes through shared
        # memory, so without them every process would add into the same tensors and the reduction would count
        # each sample once per process.
        for metric in self.modules():
            if isinstance(metric, Metric):
                metric.reset()
        # The reference enters once: FID states are summed across processes, so only rank 0 holds it.
        if self.settings.fid_backend is not None and self.trainer.is_global_zero:
            for fid in [self.fid_unedited, *self.fid_edited]:
                load_reference(fid, self.settings.reference)

    def test_step(self, batch, batch_idx):
        originals, edits = batch
        b, d, s = edits.shape[:3]
        x0, xe = uint8_to_unit(originals), uint8_to_unit(edits)
        flat = xe.flatten(0, 2)
        repeated = x0[:, None, None].expand_as(xe).flatten(0, 2)
        mse = (((flat - repeated) / 2) ** 2).mean(dim=(1, 2, 3)).view(b, d, s)
        ssim = structural_similarity_index_measure(
            (flat + 1) / 2, (repeated + 1) / 2, data_range=1.0, reduction="none"
        ).view(b, d, s)
        if self.settings.classifier is not None:
            before = self.settings.classifier.probabilities(x0).to(self.device)
            after = self.settings.classifier.probabilities(flat).to(self.device).view(b, d, s, -1)
            self.scores.update(before, after, mse, ssim)
        if self.settings.locality.active:
            region = self.settings.locality
            if self.fixed_mask is None:
                self.fixed_mask = region.fixed_mask(tuple(originals.shape[1:]))
            fixed = self.fixed_mask
            masks, found = region.masks(originals.permute(0, 2, 3, 1).cpu().numpy(), fixed)
            self.locality.update(originals, edits, masks, found)
        if self.settings.fid_backend is not None:
            self.fid_unedited.update(x0, real=False)
            for j in range(d):
                for k in range(s):
                    self.fid_edited[j * s + k].update(xe[:, j, k], real=False)

    def on_test_epoch_end(self):
        self.results = self.summary()  # torchmetrics states are reduced across processes here
        if self.results_file is not None and self.trainer.world_size > 1 and self.trainer.is_global_zero:
            Path(self.results_file).write_text(json.dumps(self.results, default=float))

    def summary(self) -> dict:
        metrics: dict = {}
        head = headline_index(self.strengths)
        if self.settings.classifier is not None:
            metrics |= self.classifier_metrics(head)
        if self.settings.locality.active:
            metrics |= locality_metrics(self.locality, self.names, self.strengths)
        backend = self.settings.fid_backend
        if backend is not None:
            key = f"fid/{backend.name}"
            metrics[key] = float(self.fid_unedited.compute())
            metrics[f"{key}/num_reference"], metrics[f"{key}/num_samples"] = self.fid_unedited.sample_counts()
            for j, name in enumerate(self.names):
                for k, strength in enumerate(self.strengths):
                    fid = self.fid_edited[j * len(self.strengths) + k]
                    metrics[edit_key(name, key, strength=strength)] = float(fid.compute())
            metrics[edit_key(key, "num_samples")] = self.fid_edited[0].sample_counts()[1]
        return with_headline(metrics, self.strengths[head])

    def target_of(self, j: int, delta: torch.Tensor, head: int) -> tuple[int, int] | None:
        """(attribute index, sign) a direction edits: from `targets` (None there: no target), else the attribute
        whose score the headline strength moves most (its sign times the strength's); None when that strength
        moves no attribute's mean probability by MIN_SCORE_CHANGE: such an edit has no target."""
        attributes = self.scores.attributes
        if self.names[j] in self.settings.targets:
            wanted = self.settings.targets[self.names[j]]
            if wanted is None:
                return None
            sign = -1 if wanted.startswith("-") else 1
            name = wanted.lstrip("+-")
            if name not in attributes:
                raise ValueError(
                    f"target attribute {name!r} of direction {self.names[j]} is not one of the classifier's: "
                    f"{', '.join(attributes)}"
                )
            return attributes.index(name), sign
        row = delta[j, head]
        t = int(row.abs().argmax())
        if not row[t].abs() >= MIN_SCORE_CHANGE:
            return None
        return t, (1 if row[t] >= 0 else -1) * (1 if self.strengths[head] >= 0 else -1)

    def shaped_scores(self) -> dict[str, torch.Tensor]:
        """The EditScores results as (D, S[, A]): torchmetrics squeezes one-element results to scalars."""
        d, s, a = len(self.names), len(self.strengths), len(self.scores.attributes)
        scores = self.scores.compute()
        return {key: value.reshape((d, s, a) if key in PER_ATTRIBUTE else (d, s)) for key, value in scores.items()}

    def classifier_metrics(self, head: int) -> dict:
        """The classifier's per-strength metrics; the headline strength (index `head`) picks each direction's
        target."""
        scores = self.shaped_scores()
        delta, abs_delta, mse, ssim = scores["score_delta"], scores["score_abs_delta"], scores["mse"], scores["ssim"]
        attributes = self.scores.attributes
        metrics: dict = {}
        for j, name in enumerate(self.names):
            target = self.target_of(j, delta, head)
            t, target_sign = target if target is not None else (None, 0)
            metrics[edit_key(name, "target")] = None if t is None else ("-" if target_sign < 0 else "") + attributes[t]
            for k, strength in enumerate(self.strengths):
                if strength != 0:
                    sign = target_sign * (1 if strength > 0 else -1)
                    measured = success(scores, j, k, t, sign) if t is not None else float("nan")
                    metrics[edit_key(name, "success", strength=strength)] = measured
                metrics[edit_key(name, "preserve", strength=strength)] = preserve(scores, j, k, t)
                metrics[edit_key(name, "mse", strength=strength)] = float(mse[j, k])
                metrics[edit_key(name, "ssim", strength=strength)] = float(ssim[j, k])
                for a, attribute in enumerate(attributes):
                    metrics[edit_key("score_delta", name, attribute, strength=strength)] = float(delta[j, k, a])
                    metrics[edit_key("score_abs_delta", name, attribute, strength=strength)] = float(abs_delta[j, k, a])
        metrics["edit/headline_strength"] = self.strengths[head]
        return metrics

    def score_matrix(self) -> tuple[list[str], list[list]]:
        """The Table I matrix at the headline strength: rows = directions, columns = attributes (from `results`,
        which also hold the numbers of a loop that ran in spawned processes)."""
        attributes = self.scores.attributes
        rows = [
            [name, *(round(float(self.results[edit_key("score_delta", name, a)]), 4) for a in attributes)]
            for name in self.names
        ]
        return ["direction", *attributes], rows


def evaluate_edits(
    settings: EvaluationSettings,
    originals: torch.Tensor,
    edits: torch.Tensor,
    names: Sequence[str],
    strengths: Sequence[float],
    trainer_kwargs: dict | None = None,
) -> EditEvaluation:
    """Run the test loop over uint8 originals (N, C, H, W) and edits (D, N, S, C, H, W); the returned
    module holds `results` (metrics) and the score matrix."""
    module = EditEvaluation(settings, names, strengths)
    samples = EditSamples(originals, edits)
    loader = DataLoader(samples, batch_size=settings.batch_size, sampler=EachOnce(len(samples)))
    options = {"accelerator": "cpu", "devices": 1} | (trainer_kwargs or {})
    trainer = pl.Trainer(
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,  # EachOnce shards the samples
        **options,
    )
    with tempfile.TemporaryDirectory() as folder:
        module.results_file = str(Path(folder) / "results.json")
        with stopped_by_sigterm(trainer, lambda: "the evaluation was stopped by SIGTERM: run it again"):
            trainer.test(module, dataloaders=loader, verbose=False)
        if not module.results:  # the loop ran in spawned processes: take what rank 0 wrote
            module.results = json.loads(Path(module.results_file).read_text())
        module.results_file = None
    return module
