"""The quality of a Shapes DDPM, measured from pixels: the numbers of its model card (scripts/shapes_model_quality.py).

Seeds 0..N-1 are drawn with deterministic 50-step DDIM on the trailing grid (other seeds and step counts on
request) and judged by
- the pixel judge (hspace.data.shapes_quality): pass fraction and each criterion;
- shape clarity (hspace.data.shapes_factors): the shares of samples whose object's fill ratio and whose
  sub-pixel fill ratio lie in the band that rendered images of its shape class occupy, the share whose fill
  ratio does and that also fits a rendered shape as well as rendered images do, the median fit error and the
  shape classes found;
- the dependence of the output on h (hspace.metrics.h_dependence) at six timesteps;
- optionally, how often an attribute classifier agrees with the factors measured from the pixels of the valid
  samples (whether the shipped classifier still judges this model's samples correctly).
"""

from __future__ import annotations

import numpy as np

from hspace.data.shapes_factors import clarity_report, measure_all
from hspace.data.shapes_quality import quality_report
from hspace.diffusion.model import DiffusionModel
from hspace.diffusion.sampler import sample_seeds
from hspace.diffusion.schedule import make_schedule
from hspace.images import from_pixels, to_uint8
from hspace.metrics.h_dependence import h_swap_change


def draw_samples(
    model: DiffusionModel, num_samples: int, batch_size: int = 128, first_seed: int = 0, num_steps: int = 50
) -> np.ndarray:
    """Seeds first_seed..first_seed+num_samples-1 by deterministic DDIM of `num_steps` steps (the model card's
    50 by default) on the trailing grid. (N, H, W, 3) uint8"""
    schedule = make_schedule(model.alphas_cumprod, num_steps, "trailing")
    return to_uint8(sample_seeds(model, schedule, range(first_seed, first_seed + num_samples), batch_size))


def model_quality(
    model: DiffusionModel,
    num_samples: int = 256,
    batch_size: int = 128,
    with_h_swap: bool = True,
    first_seed: int = 0,
    num_steps: int = 50,
) -> tuple[dict, np.ndarray]:
    """The judge, clarity and (unless with_h_swap is false) h-dependence numbers of the samples draw_samples()
    draws from `model`, and their pixels (N, H, W, 3)."""
    pixels = draw_samples(model, num_samples, batch_size, first_seed, num_steps)
    report = {
        "num_samples": num_samples,
        "first_seed": first_seed,
        "num_steps": num_steps,
        "judge": quality_report(pixels),
        "clarity": clarity_report(measure_all(pixels)),
    }
    if with_h_swap:
        report["h_swap_change"] = h_swap_change(model)
    return report, pixels


def classifier_agreement(pixels: np.ndarray, classifier) -> dict[str, float]:
    """Per attribute, the share of valid samples (pixels (N, H, W, 3) uint8) on which the classifier's decision
    (p >= 0.5) equals the attribute of the factors measured from the pixels."""
    import torch

    from hspace.data.shapes import ATTRIBUTES

    measured = [m for m in measure_all(pixels)]
    keep = [i for i, m in enumerate(measured) if m.valid and m.factors is not None]
    if not keep:
        return {}
    truth = np.stack([measured[i].factors.attributes(pixels.shape[1]) for i in keep]) > 0.5
    images = from_pixels(pixels[keep])
    with torch.no_grad():
        decided = classifier.probabilities(images).cpu().numpy() >= 0.5
    names = list(classifier.attributes)
    return {
        a: float((decided[:, names.index(a)] == truth[:, j]).mean()) for j, a in enumerate(ATTRIBUTES) if a in names
    }
