"""Reading an image (a file, or a PIL image already open) as a model input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from hspace.errors import UserError
from hspace.images import from_pixels

# Raise it when decoding changes what an image file gives: the data's identity (ImageDataModule.identity) and a
# method's image files enter cache keys with it, so statistics and directions of the old pixels are not reused.
# 2: 16-bit grey images scaled to 8 bits, non-square images centre-cropped.
DECODING_VERSION = 2

SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")  # PIL's modes of 16-bit grey images (PNG, TIFF)


def as_rgb(image: Image.Image) -> Image.Image:
    """A PIL image as 8-bit RGB. 16-bit grey levels are scaled to 8 bits (PIL's own conversion clips them at 255,
    so such an image would come out nearly white). 32-bit integer and float pixels have no known range: refused
    in one line."""
    if image.mode in SIXTEEN_BIT:
        levels = np.asarray(image).astype(np.float64) / 257.0  # 65535 -> 255
        return Image.fromarray(np.round(levels).astype(np.uint8)).convert("RGB")
    if image.mode in ("I", "F"):
        kind = "32-bit integer" if image.mode == "I" else "floating-point"
        raise UserError(
            f"the image holds {kind} pixels (PIL mode {image.mode}), whose range is not known: save it as an 8- or "
            "16-bit PNG"
        )
    return image.convert("RGB")


def image_tensor(image: Image.Image, resolution: int) -> torch.Tensor:
    """A PIL image as RGB (as_rgb), its centre square (the side of its shorter edge) resized (bicubic) to resolution x
    resolution, as (3, R, R) in [-1, 1]. The centre crop is what the DDPM and guided-diffusion codes do to
    LSUN's images, whose shorter side is 256 pixels: resizing the whole image would squeeze it."""
    image = as_rgb(image)
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
    except UserError as error:
        raise UserError(f"{path}: {error}") from None


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
