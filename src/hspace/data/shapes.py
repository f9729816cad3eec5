"""The Shapes benchmark (v1): one coloured shape on a grey background, with known factors.

Sample i of split s is a pure function of (dataset seed, split, i); nothing is read from disk.
See docs/design.md, "The Shapes benchmark".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from hspace.errors import UserError
from hspace.images import from_pixels

BACKGROUNDS = {"dark": (40, 40, 40), "light": (210, 210, 210)}
COLOURS = {
    "red": (220, 50, 50),
    "green": (50, 190, 70),
    "blue": (50, 90, 230),
    "yellow": (235, 205, 50),
}
SHAPES = ("circle", "square", "triangle")
ATTRIBUTES = (
    "light_background",
    "red",
    "green",
    "blue",
    "yellow",
    "circle",
    "square",
    "triangle",
    "large",
    "left",
    "top",
)
SPLITS = {"train": 0, "val": 1, "test": 2}

SIZE_RANGE = (0.15, 0.32)  # half-extent r, as a fraction of the resolution
CENTRE_RANGE = (0.30, 0.70)  # cx, cy, as a fraction of the resolution
LARGE_THRESHOLD = 0.235
SUPERSAMPLING = 4


@dataclass(frozen=True)
class ShapesFactors:
    """The generative factors of one sample; r, cx, cy are in pixels of the output resolution."""

    background: str
    colour: str
    shape: str
    r: float
    cx: float
    cy: float

    def attributes(self, resolution: int) -> np.ndarray:
        values = {
            "light_background": self.background == "light",
            **{c: self.colour == c for c in COLOURS},
            **{s: self.shape == s for s in SHAPES},
            "large": self.r > LARGE_THRESHOLD * resolution,
            "left": self.cx < 0.5 * resolution,
            "top": self.cy < 0.5 * resolution,
        }
        return np.array([values[a] for a in ATTRIBUTES], dtype=np.float32)


def draw_factors(seed: int, split: str, index: int, resolution: int) -> ShapesFactors:
    """The factors of sample `index` of `split`: a pure function of its arguments."""
    rng = np.random.default_rng([seed, SPLITS[split], index])
    background = ("dark", "light")[rng.integers(2)]
    colour = tuple(COLOURS)[rng.integers(len(COLOURS))]
    shape = SHAPES[rng.integers(len(SHAPES))]
    r = rng.uniform(*SIZE_RANGE) * resolution
    cx, cy = rng.uniform(*CENTRE_RANGE, size=2) * resolution
    return ShapesFactors(background, colour, shape, float(r), float(cx), float(cy))


def object_mask(factors: ShapesFactors, resolution: int, supersampling: int = SUPERSAMPLING) -> np.ndarray:
    """Coverage in [0, 1] of each output pixel by the object, box-filtered from a finer grid. (H, W)"""
    n = resolution * supersampling
    coords = (np.arange(n) + 0.5) / supersampling  # sub-pixel centres in output-pixel units
    x, y = np.meshgrid(coords, coords)
    dx, dy = x - factors.cx, y - factors.cy
    r = factors.r
    if factors.shape == "circle":
        inside = dx**2 + dy**2 <= r**2
    elif factors.shape == "square":
        inside = (np.abs(dx) <= r) & (np.abs(dy) <= r)
    else:  # upright isosceles triangle: apex (cx, cy - r), base from (cx - r, cy + r) to (cx + r, cy + r)
        height = dy + r  # 0 at the apex, 2r at the base
        inside = (dy <= r) & (height >= 0) & (np.abs(dx) <= height / 2)
    return inside.reshape(resolution, supersampling, resolution, supersampling).mean(axis=(1, 3))


def render(factors: ShapesFactors, resolution: int) -> np.ndarray:
    """The anti-aliased RGB image of `factors`. (H, W, 3) uint8"""
    coverage = object_mask(factors, resolution)[..., None]
    background = np.array(BACKGROUNDS[factors.background], dtype=np.float64)
    colour = np.array(COLOURS[factors.colour], dtype=np.float64)
    image = (1 - coverage) * background + coverage * colour
    return np.rint(image).astype(np.uint8)


class ShapesDataset(Dataset):
    """`length` procedurally rendered Shapes samples of one split.

    Each item is a dict: `image` (3, H, W) float in [-1, 1], `attributes` (11,) float in {0, 1}
    in the order of ATTRIBUTES, `factors` (3,) float: r, cx, cy in pixels, and `index`.
    """

    def __init__(self, length: int, split: str = "train", seed: int = 0, resolution: int = 32):
        if split not in SPLITS:
            raise ValueError(f"unknown Shapes split {split!r}: use one of {', '.join(SPLITS)}")
        if resolution not in (32, 64):
            raise UserError(f"data.resolution={resolution} is not a Shapes resolution: use 32 or 64")
        self.length, self.split, self.seed, self.resolution = length, split, seed, resolution

    def __len__(self) -> int:
        return self.length

    def fingerprint(self) -> str:
        """Every item is a function of (seed, split, index, resolution)."""
        return f"shapes:{self.seed}:{self.split}:{self.length}:{self.resolution}"

    def factors(self, index: int) -> ShapesFactors:
        return draw_factors(self.seed, self.split, index, self.resolution)

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} samples")
        factors = self.factors(index)
        image = from_pixels(render(factors, self.resolution))
        return {
            "image": image,
            "attributes": torch.from_numpy(factors.attributes(self.resolution)),
            "factors": torch.tensor([factors.r, factors.cx, factors.cy], dtype=torch.float32),
            "index": index,
        }
