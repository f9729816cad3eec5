"""The mixing step t_m of BoundaryDiffusion (docs/algorithms.md, "BoundaryDiffusion"): where sampled and
inverted latents agree.

On a fine grid (every `stride` training steps, plus the candidates), sampled x_t (deterministic DDIM from
x_999 ~ N(0, I), with x0_hat clipped where the run clips it) and inverted x_t (DDIM inversion of real images,
which never clips) are compared by their radius
r(t) = ||x_t|| / sqrt(D_x):

    Delta(t) = |mean r_s(t) - mean r_i(t)| / mean r_s(t)
    t_m = the largest candidate t such that Delta(t') <= epsilon for every candidate t' <= t

falling back to `fallback` (with the reason recorded) when even the smallest candidate fails.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from hspace.diffusion.inversion import ddim_invert
from hspace.diffusion.model import DiffusionModel
from hspace.diffusion.sampler import noise_for, sample
from hspace.diffusion.schedule import SamplingSchedule, schedule_from_timesteps
from hspace.plots import LinePlot


@dataclass
class MixingCurve:
    candidates: list[int]
    radius_sampled: list[float]
    radius_inverted: list[float]
    delta: list[float]
    t_mix: int
    reason: str
    accuracy: dict[str, list[float]] = field(default_factory=dict)  # space -> validation SVM accuracy per candidate

    def as_info(self) -> dict:
        return {"mixing/" + k: v for k, v in self.__dict__.items()}

    def plot(self) -> LinePlot:
        """Delta(t) and the validation SVM accuracies against the candidate steps, the chosen t_m marked."""
        return LinePlot(
            x=list(self.candidates),
            x_label="training timestep t",
            left_label="Delta(t)",
            series={"radius gap Delta(t)": list(self.delta)},
            right_label="validation SVM accuracy",
            right_series={f"validation acc ({space})": list(values) for space, values in self.accuracy.items()},
            vertical_lines=[self.t_mix],
        )


def fine_schedule(model: DiffusionModel, candidates: list[int], stride: int) -> SamplingSchedule:
    top = model.num_train_timesteps - 1
    return schedule_from_timesteps(model.alphas_cumprod, [*range(top, 0, -stride), *candidates, top])


def admitted(candidates: list[int], delta: list[float], epsilon: float) -> list[int]:
    """The candidate steps the radius criterion admits: Delta <= epsilon at the step and at every smaller one."""
    steps = []
    for t, d in sorted(zip(candidates, delta)):
        if d > epsilon:
            break
        steps.append(t)
    return steps


def choose_t_mix(candidates: list[int], delta: list[float], epsilon: float, fallback: int) -> tuple[int, str]:
    steps = admitted(candidates, delta, epsilon)
    if not steps:
        return fallback, f"Delta exceeds {epsilon} already at t = {min(candidates)}: fallback {fallback}"
    return max(steps), f"largest candidate with Delta <= {epsilon} at it and every smaller candidate"


def most_accurate(candidates: list[int], steps: list[int], accuracy: dict[str, list[float]]) -> int | None:
    """Of the admitted `steps`, the one whose x and h SVMs have the highest summed validation accuracy (ties: the
    larger step); None when none is admitted (the fallback stands)."""
    scored = [(accuracy["x"][j] + accuracy["h"][j], t) for j, t in enumerate(candidates) if t in steps]
    return max(scored)[1] if scored else None


@torch.no_grad()
def radius_curves(
    model: DiffusionModel,
    schedule: SamplingSchedule,
    candidates: list[int],
    seeds: list[int],
    real_images: torch.Tensor,
    batch_size: int = 64,
    clip_x0: bool = False,
) -> tuple[list[float], list[float]]:
    """Mean ||x_t|| / sqrt(D) at each candidate for sampled latents (x0_hat clipped with `clip_x0`) and for
    inverted ones."""
    index = [int((schedule.timesteps == t).nonzero()[0]) for t in candidates]
    dim = real_images[0].numel()

    def mean_radius(states: list[torch.Tensor]) -> list[float]:
        x = torch.cat(states)  # (N, T + 1, ...)
        return [float(x[:, i].flatten(1).norm(dim=1).mean() / dim**0.5) for i in index]

    sampled = [
        sample(
            model, schedule, noise_for(seeds[i : i + batch_size], model, schedule)[0], record_x=True, clip_x0=clip_x0
        ).x_t
        for i in range(0, len(seeds), batch_size)
    ]
    inverted = [
        ddim_invert(model, schedule, real_images[i : i + batch_size], record_h=False, record_x=True).x_t
        for i in range(0, len(real_images), batch_size)
    ]
    return mean_radius(sampled), mean_radius(inverted)


def search_t_mix(
    model: DiffusionModel,
    real_images: torch.Tensor,
    candidates: list[int],
    stride: int = 10,
    num_sampled: int = 100,
    epsilon: float = 0.01,
    fallback: int = 500,
    first_seed: int = 4_000_000,
    clip_x0: bool = False,
) -> MixingCurve:
    schedule = fine_schedule(model, candidates, stride)
    seeds = list(range(first_seed, first_seed + num_sampled))
    r_s, r_i = radius_curves(model, schedule, candidates, seeds, real_images, clip_x0=clip_x0)
    delta = [abs(s - i) / s for s, i in zip(r_s, r_i)]
    t_mix, reason = choose_t_mix(candidates, delta, epsilon, fallback)
    return MixingCurve(list(candidates), r_s, r_i, delta, t_mix, reason)
