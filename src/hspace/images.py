"""Converting model images to pixels, laying them out in grids and writing them atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image


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
    """Tile (N, H, W, C) uint8 images in rows of `ncols`, `pad` pixels apart. (H', W', C)"""
    n, h, w, c = pixels.shape
    nrows = -(-n // ncols)
    grid = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), pad_value, dtype=np.uint8)
    for i, image in enumerate(pixels):
        r, q = divmod(i, ncols)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + q * (w + pad) : pad + q * (w + pad) + w] = image
    return grid


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, write) -> Path:
    """Call write(file) on a temporary file beside `path`, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; a shared cache needs the usual mode
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically."""
    return atomic_write_bytes(path, lambda f: f.write(text.encode()))


def atomic_write_directory(directory: str | Path, fill) -> Path:
    """Call fill(staging_dir) on a new directory beside `directory`, then rename it into place, so a reader
    never sees a half-written directory. An existing `directory` is replaced only if it holds nothing but
    files the new one also has (an earlier write of the same kind); anything else is refused with a
    UserError before it is touched, since replacing it would delete files that are not this write's."""
    import shutil

    from hspace.errors import UserError

    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}."))
    try:
        fill(staging)
        if directory.exists():
            foreign = sorted({p.name for p in directory.iterdir()} - {p.name for p in staging.iterdir()})
            if foreign or not directory.is_dir():
                held = ", ".join(foreign[:4]) + (", ..." if len(foreign) > 4 else "")
                raise UserError(
                    f"{directory} already exists and holds {held or 'a file'}, which this write would delete: "
                    "choose a new or empty folder"
                )
            shutil.rmtree(directory)
        staging.rename(directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


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
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pixels = pixels[:max_rows]
    n, s, h, w, c = pixels.shape
    pad = 1
    height = 1.1 * n + 0.5
    # One image of all tiles in one axes: a figure of n x s axes takes seconds to lay out and draw.
    fig, ax = plt.subplots(figsize=(1.1 * s + 0.6, height))
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
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return atomic_write_bytes(path, lambda f: f.write(buffer.getvalue()))
