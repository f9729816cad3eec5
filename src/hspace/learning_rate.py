"""The training learning-rate schedule: linear warm-up, then constant or a cosine decay (warm-up-stable-decay
when the decay starts late). Kept free of Lightning, so that hspace-train checks it before anything loads."""

from __future__ import annotations

import math

from hspace.errors import UserError

LR_SCHEDULES = ("constant", "cosine")


def learning_rate_factor(
    step: int, warmup_steps: int, schedule: str, decay_start: int, decay_steps: int, min_lr_ratio: float
) -> float:
    """The factor on the base learning rate at optimiser step `step` (0-based): a linear warm-up over
    `warmup_steps`, then constant, or constant until `decay_start` and a cosine from 1 down to
    `min_lr_ratio` at `decay_steps` (decay_start = warmup_steps is the usual cosine schedule; a late
    decay_start is warm-up-stable-decay, whose stable phase can be resumed and annealed at any step)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant" or step < decay_start:
        return 1.0
    progress = min(1.0, (step - decay_start) / max(decay_steps - decay_start, 1))
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def decay_range(warmup_steps: int, decay_start: int | None, decay_steps: int | None, max_steps: int) -> tuple[int, int]:
    """(first, last) step of the cosine decay: from `decay_start` (default the end of the warm-up) to
    `decay_steps` (default the trainer's max_steps), or one line when it would end before it starts (a run
    limited by time alone has no max_steps to default to)."""
    start = warmup_steps if decay_start is None else decay_start
    end = decay_steps or max_steps
    if end is None or end <= start:
        raise UserError(
            f"module.lr_schedule=cosine decays from step {start} (module.decay_start) to module.decay_steps "
            f"(default trainer.max_steps), which is {end}: set module.decay_steps after the decay start"
        )
    return start, end
