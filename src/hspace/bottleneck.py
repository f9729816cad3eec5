"""Reading and editing h, the bottleneck of a UNet, through a hook on `unet.mid_block`.

h_t is the output of `unet.mid_block` during the call eps_theta(x_t, tau_t) (docs/algorithms.md, "h-space").
The forward pass itself is never copied: a forward hook sees the natural h and may return an edited one.
Skip connections do not pass through the mid block, so an edit reaches them only through later x_t.
This is the only module that registers hooks.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class HSpace:
    """Context manager that captures, offsets or replaces h on every call of the UNet.

    - `capture=True` records the natural (pre-edit) h of each call in `captured`, detached.
    - `add(delta, rows)` sets h <- h + delta for the next calls; `replace(h, rows)` sets h <- h.
      `rows` (indices or a bool mask over the batch) limits the edit to some batch rows; delta and the
      replacement then have one row per selected batch row. `clear()` stops editing.

    The hook is removed on exit, also when the body raises.
    """

    def __init__(self, unet: nn.Module, *, capture: bool = False):
        self.mid_block = unet.mid_block
        self.capture = capture
        self.captured: list[Tensor] = []
        self._mode: str | None = None
        self._value: Tensor | None = None
        self._rows: Tensor | slice = slice(None)
        self._handle = None

    def add(self, delta: Tensor | None, rows: Tensor | list[int] | None = None) -> None:
        self._set("add" if delta is not None else None, delta, rows)

    def replace(self, h: Tensor, rows: Tensor | list[int] | None = None) -> None:
        self._set("replace", h, rows)

    def clear(self) -> None:
        self._set(None, None, None)

    def _set(self, mode: str | None, value: Tensor | None, rows) -> None:
        self._mode, self._value = mode, value
        self._rows = slice(None) if rows is None else torch.as_tensor(rows)

    def edit(self, h: Tensor) -> Tensor:
        """The h that the UNet continues with, given the natural h."""
        if self.capture:  # at least float32: h recorded under autocast feeds statistics (PCA, class means, banks)
            self.captured.append(h.detach().to(torch.promote_types(h.dtype, torch.float32)))
        if self._mode is None:
            return h
        value = self._value.to(dtype=h.dtype, device=h.device)
        if isinstance(self._rows, slice):
            return h + value if self._mode == "add" else value.expand_as(h)
        edited = h.clone()
        edited[self._rows] = h[self._rows] + value if self._mode == "add" else value
        return edited

    def __enter__(self) -> HSpace:
        self._handle = self.mid_block.register_forward_hook(lambda _, __, output: self.edit(output))
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


@torch.no_grad()
def capture_h(model, x_t: Tensor, timestep: Tensor | int, autocast: bool = True) -> Tensor:
    """The natural h of one call of `model` (a DiffusionModel) at x_t (B, C, H, W) and a timestep, under
    the model's autocast unless `autocast` is False. (B, *h_shape)"""
    with HSpace(model.unet, capture=True) as hs:
        model(x_t, timestep, autocast=autocast)
    return hs.captured[0]


def h_shape(unet: nn.Module) -> tuple[int, ...]:
    """The shape of h for one sample, found with one probe forward at the UNet's own resolution."""
    size = unet.config.sample_size
    size = (size, size) if isinstance(size, int) else tuple(size)
    param = next(unet.parameters())
    x = torch.zeros(1, unet.config.in_channels, *size, dtype=param.dtype, device=param.device)
    with torch.no_grad(), HSpace(unet, capture=True) as hs:
        unet(x, torch.zeros(1, dtype=torch.long, device=param.device))
    return tuple(hs.captured[0].shape[1:])
