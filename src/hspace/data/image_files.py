"""Reading one image file as a model input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from hspace.errors import UserError
from hspace.images import from_pixels


def load_image(path: Path, resolution: int) -> torch.Tensor:
    """An RGB image resized to resolution x resolution, as (3, R, R) in [-1, 1]."""
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            if image.size != (resolution, resolution):
                image = image.resize((resolution, resolution), Image.Resampling.BICUBIC, reducing_gap=None)
            pixels = np.asarray(image)
    except (OSError, UnidentifiedImageError) as error:
        raise UserError(f"cannot read the image {path}: {error}; replace or remove the file") from None
    return from_pixels(pixels)
