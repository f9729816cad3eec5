"""Converting model images to pixels and back, laying them out in grids, and saving them as PNGs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hspace.files import atomic_write_bytes


def unit_to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Model images in [-1, 1] (..., C, H, W) as uint8 (..., C, H, W), rounded as the PNGs are, on their device."""
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def uint8_to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (..., C, H, W) as model images in [-1, 1] (float32, same layout)."""
    return images.float() / 127.5 - 1


def from_pixels(pixels: np.ndarray | torch.Tensor) -> torch.Tensor:
    """RGB pixels (..., H, W, C) uint8 (a PIL image's array, a render) as model images (..., C, H, W) in [-1, 1]."""
    tensor = pixels if isinstance(pixels, torch.Tensor) else torch.from_numpy(np.array(pixels, dtype=np.uint8))
    return uint8_to_unit(tensor.movedim(-1, -3))


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Images in [-1, 1] (B, C, H, W) as RGB pixels (B, H, W, C) uint8."""
    return unit_to_uint8(images).cpu().permute(0, 2, 3, 1).numpy()


def image_grid(pixels: np.ndarray, ncols: int, pad: int = 1, pad_value: int = 255) -> np.ndarray:
    """Tile (N, H, W, C) uint8 images in rows of `ncols` (at most N), `pad` pixels apart. (H', W', C)"""
    n, h, w, c = pixels.shape
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    grid = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), pad_value, dtype=np.uint8)
    for i, image in enumerate(pixels):
        r, q = divmod(i, ncols)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + q * (w + pad) : pad + q * (w + pad) + w] = image
    return grid


def save_png(pixels: np.ndarray, path: str | Path, scale: int = 1) -> Path:
    """Write (H, W, C) uint8 pixels as a PNG, enlarged `scale` times without smoothing."""
    image = Image.fromarray(pixels)
    if scale > 1:
        image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    return atomic_write_bytes(path, lambda f: image.save(f, format="PNG"))


def save_edit_grid(
    pixels: np.ndarray, strengths, title: str, path: str | Path, row_labels=None, max_rows: int = 16
) -> Path:
    """A labelled edit grid: rows are the first `max_rows` samples, columns strengths. pixels: (N, S, H, W, C) uint8."""

    from hspace.plots import pyplot, save_figure

    pixels = pixels[:max_rows]
    n, s, h, w, c = pixels.shape
    pad = 1
    height = 1.1 * n + 0.5
    # One image of all tiles in one axes: a figure of n x s axes takes seconds to lay out and draw.
    fig, ax = pyplot().subplots(figsize=(1.1 * s + 0.6, height))
    ax.imshow(image_grid(pixels.reshape(n * s, h, w, c), s, pad=pad), interpolation="nearest")
    ax.set_xticks([pad + q * (w + pad) + (w - 1) / 2 for q in range(s)], [f"{v:+g}" for v in strengths], fontsize=8)
    ax.xaxis.tick_top()
    labels = [] if row_labels is None else [str(x) for x in row_labels[:n]]
    ax.set_yticks([pad + r * (h + pad) + (h - 1) / 2 for r in range(len(labels))], labels, fontsize=7)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    # One line, a fixed 0.08 in from the top however tall; smaller type where a long title would be cut off.
    fontsize = min(9.0, 9.0 * 13 * (1.1 * s + 0.6) / max(len(title), 1))
    fig.suptitle(title, fontsize=fontsize, y=1 - 0.08 / height, va="top")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / height))
    return save_figure(fig, path, dpi=100)
