"""Locality of edits: how much an edit changes the pixels inside a region against outside it, for every method.

The region is the part of the image an edit is meant to change: on Shapes, the object of the unedited sample
measured from its pixels (grown by `margin` pixels); elsewhere a pixel box or a mask image (white inside),
the same for every sample. Per direction and strength, over the samples that have a region:

- `edit/<d>/locality/mse_in@<s>`, `mse_out@<s>`: mean squared change per pixel (images on [0, 1], channels
  averaged) inside and outside the region;
- `edit/<d>/locality/outside_share@<s>`: the share of the total squared change that falls outside the region
  (0: all of it inside);
- `edit/<d>/locality/kept_out@<s>`: the share of pixels outside the region whose every channel stays within
  10 grey levels (LOCO Edit's "the rest of the image is left alone").

Sums are torchmetrics states, so the numbers reduce across processes like the other edit metrics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchmetrics import Metric

from hspace.checks import integer
from hspace.errors import UserError
from hspace.metrics.keys import edit_key

KEPT_LEVELS = 10  # grey levels (of 255) a pixel outside the region may move and still count as kept
REGIONS = ("object", "box", "file", "none")


@dataclass(frozen=True)
class LocalityRegion:
    """Where edits are meant to act: `object` (Shapes), `box` [top, left, bottom, right), `file`, or `none`."""

    kind: str = "none"
    box: tuple[int, int, int, int] | None = None
    file: str | None = None
    margin: int = 1

    def __post_init__(self):
        if self.kind not in REGIONS:
            raise UserError(f"metrics.locality.region must be one of {', '.join(REGIONS)}, not {self.kind!r}")
        # A negative margin would grow the object's region until it covers the image (every edit "local").
        object.__setattr__(self, "margin", integer(self.margin, "metrics.locality.margin", 0))
        if self.kind == "box" and self.box is None:
            raise UserError("metrics.locality.region=box needs metrics.locality.box: [top, left, bottom, right)")
        if self.kind == "file" and self.file is None:
            raise UserError("metrics.locality.region=file needs metrics.locality.file: a mask image, white inside")
        if self.kind == "box" and (len(self.box) != 4 or not (self.box[0] < self.box[2] and self.box[1] < self.box[3])):
            raise UserError(f"metrics.locality.box={list(self.box)} is not a box [top, left, bottom, right)")
        if self.kind == "file":
            from hspace.directions.jacobian import read_mask_image

            read_mask_image(
                self.file, "metrics.locality.file"
            )  # one line now if it is missing or unreadable, not after the edits

    @property
    def active(self) -> bool:
        return self.kind != "none"

    def fixed_mask(self, image_shape: tuple[int, int, int]) -> torch.Tensor | None:
        """The (H, W) mask shared by every sample (box, file), checked against the image size; None for object."""
        from hspace.directions.jacobian import region_mask

        if self.kind in ("box", "file"):
            box = list(self.box) if self.box else None
            mask = region_mask(image_shape, box, self.file, ("metrics.locality.box", "metrics.locality.file"))[0] > 0.5
            if bool(mask.all()):
                setting = f"metrics.locality.box={box}" if box else f"metrics.locality.file={self.file}"
                raise UserError(
                    f"{setting} covers the whole image, so no pixel lies outside it to measure: give a smaller region"
                )
            return mask
        return None

    def masks(self, originals: np.ndarray, fixed: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Masks (B, H, W) bool of the unedited samples (uint8 (B, H, W, 3)) and which samples have one (B,)."""
        if fixed is not None:
            return fixed.expand(len(originals), *fixed.shape), torch.ones(len(originals), dtype=torch.bool)
        from hspace.data.shapes_factors import object_region

        regions = [object_region(pixels, self.margin) for pixels in originals]
        empty = np.zeros(originals.shape[1:3], dtype=bool)
        masks = torch.stack([torch.from_numpy(empty if r is None else r) for r in regions])
        return masks, torch.tensor([r is not None for r in regions])


class LocalityScores(Metric):
    """Per (direction, strength): squared change inside and outside the region, their pixel counts, and the
    pixels outside that are kept."""

    full_state_update = False

    def __init__(self, num_directions: int, num_strengths: int, **kwargs):
        super().__init__(**kwargs)
        for name in ("in_sum", "out_sum", "in_pixels", "out_pixels", "kept_out"):
            self.add_state(name, torch.zeros(num_directions, num_strengths, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, originals: torch.Tensor, edits: torch.Tensor, masks: torch.Tensor, found: torch.Tensor) -> None:
        """originals (B, C, H, W) and edits (B, D, S, C, H, W) uint8; masks (B, H, W) bool; found (B,) bool."""
        if not bool(found.any()):
            return
        x0 = originals[found].double()[:, None, None]
        xe = edits[found].double()
        inside = masks[found].to(xe.device)[:, None, None].double()  # (b, 1, 1, H, W)
        change = ((xe - x0) / 255.0) ** 2
        per_pixel = change.mean(dim=3)  # (b, D, S, H, W)
        kept = ((xe - x0).abs() <= KEPT_LEVELS).all(dim=3).double()
        self.in_sum += (per_pixel * inside).sum(dim=(0, 3, 4))
        self.out_sum += (per_pixel * (1 - inside)).sum(dim=(0, 3, 4))
        self.in_pixels += inside.sum(dim=(0, 3, 4)).expand_as(self.in_pixels)
        self.out_pixels += (1 - inside).sum(dim=(0, 3, 4)).expand_as(self.out_pixels)
        self.kept_out += (kept * (1 - inside)).sum(dim=(0, 3, 4))

    def compute(self) -> dict[str, torch.Tensor]:
        total = self.in_sum + self.out_sum
        return {
            "pixels": self.in_pixels + self.out_pixels,  # 0 when no sample of any process had a region
            # no pixel inside (or outside) the regions: NaN (null), not the 0 of an edit that moved none of them
            "mse_in": per_pixel(self.in_sum, self.in_pixels),
            "mse_out": per_pixel(self.out_sum, self.out_pixels),
            # an edit that changed nothing has no share anywhere: NaN (null), not the 0 of a perfectly local edit
            "outside_share": torch.where(total > 0, self.out_sum / total.clamp(min=1e-30), torch.nan),
            "kept_out": per_pixel(self.kept_out, self.out_pixels),
        }


def per_pixel(sums: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
    """sums / pixels, NaN where there are no pixels."""
    return torch.where(pixels > 0, sums / pixels.clamp(min=1), torch.nan)


def locality_metrics(scores: LocalityScores, names: list[str], strengths: list[float]) -> dict[str, float]:
    """The per-strength metric keys of the module docstring (the evaluation adds the headline ones). Every process
    calls compute(), which reduces the states across them: a process whose own samples had no region must still
    take part, and whether any sample had one is read from the reduced states."""
    results = {key: value.reshape(len(names), len(strengths)) for key, value in scores.compute().items()}
    if float(results.pop("pixels").sum()) == 0:  # no sample had a region
        return {}
    metrics: dict[str, float] = {}
    for j, name in enumerate(names):
        for key, values in results.items():
            for k, strength in enumerate(strengths):
                metrics[edit_key(name, "locality", key, strength=strength)] = float(values[j, k])
    return metrics
