"""Reading an image (a file, or a PIL image already open) as a model input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from hspace.errors import UserError
from hspace.images import from_pixels


def image_tensor(image: Image.Image, resolution: int) -> torch.Tensor:
    """A PIL image as RGB, its centre square (the side of its shorter edge) resized (bicubic) to resolution x
    resolution, as (3, R, R) in [-1, 1]. The centre crop is what the DDPM and guided-diffusion codes do to
    LSUN's images, whose shorter side is 256 pixels: resizing the whole image would squeeze it."""
    image = image.convert("RGB")
    width, height = image.size
    if width != height:
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        image = image.crop((left, top, left + side, top + side))
    if image.size != (resolution, resolution):
        image = image.resize((resolution, resolution), Image.Resampling.BICUBIC, reducing_gap=None)
    return from_pixels(np.asarray(image))


def load_image(path: Path, resolution: int) -> torch.Tensor:
    """The image file at `path` as image_tensor gives it, or one line naming the file it cannot read."""
    try:
        with Image.open(path) as image:
            return image_tensor(image, resolution)
    except (OSError, UnidentifiedImageError) as error:
        raise UserError(f"cannot read the image {path}: {error}; replace or remove the file") from None


def check_image(path: str | Path, setting: str) -> None:
    """One line, before any work, when the file a setting names is missing or not an image PIL can read."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"no image at {setting}={path}: give an image file")
    try:
        with Image.open(path) as image:
            image.load()
    except (OSError, UnidentifiedImageError) as error:
        raise UserError(f"{setting}={path} is not an image this can read ({error}): give a PNG, JPEG or WebP") from None
