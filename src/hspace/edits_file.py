"""The edits file of a run (edits.safetensors, edits_real.safetensors): every direction's edits of every image at
every strength as uint8 (D, N, S, C, H, W), with the strengths, the seeds or image indices, and the direction names.
Written by hspace-run; read by the analysis scripts without loading Lightning."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from hspace.errors import UserError
from hspace.files import atomic_write_safetensors
from hspace.images import unit_to_uint8

LAYOUT = "direction,sample,strength,channel,height,width"
ID_KINDS = ("seeds", "indices")  # generated samples by seed, inverted real images by their index


@dataclass
class EditsFile:
    images: torch.Tensor  # (D, N, S, C, H, W) uint8
    strengths: list[float]
    ids: list[int]  # the seed or image index of each row
    id_kind: str  # seeds | indices
    names: list[str]  # the directions, in the order of the first axis

    def __post_init__(self):
        if self.images.ndim != 6:
            raise ValueError(f"images of shape {tuple(self.images.shape)}, not ({LAYOUT})")
        expected = (len(self.names), len(self.ids), len(self.strengths))
        if tuple(self.images.shape[:3]) != expected:
            raise ValueError(
                f"images of shape {tuple(self.images.shape)} for {expected[0]} directions, {expected[1]} "
                f"{self.id_kind} and {expected[2]} strengths"
            )


def save_edits(path: Path, edited: torch.Tensor, strengths: Sequence[float], ids: Sequence[int], id_kind: str,
               names: Sequence[str]) -> Path:  # fmt: skip
    """Edits in [-1, 1] (D, N, S, C, H, W) as an edits file, rounded to uint8 as the PNGs are. The direction
    names are stored joined by commas, so a name may not hold one."""
    if any("," in name for name in names):
        raise ValueError(f"direction names {list(names)} may not hold a comma (the edits file joins them by commas)")
    tensors = {
        "images": unit_to_uint8(edited),
        "strengths": torch.tensor(list(strengths), dtype=torch.float32),
        id_kind: torch.tensor(list(ids)),
    }
    return atomic_write_safetensors(path, tensors, {"directions": ",".join(names), "layout": LAYOUT})


def load_edits(path: str | Path) -> EditsFile:
    """An edits file, or one line saying why it cannot be read."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"no edits file at {path}: give the edits.safetensors of a finished hspace-run")
    try:
        with safe_open(str(path), "pt") as f:
            tensors = {key: f.get_tensor(key) for key in f.keys()}
            names = f.metadata()["directions"].split(",")
        (id_kind,) = [kind for kind in ID_KINDS if kind in tensors]
        return EditsFile(tensors["images"], tensors["strengths"].tolist(), tensors[id_kind].tolist(), id_kind, names)
    except (SafetensorError, KeyError, ValueError, TypeError, OSError) as error:
        raise UserError(
            f"{path} is not a readable edits file ({type(error).__name__}: {error}): give one hspace-run wrote"
        ) from None
