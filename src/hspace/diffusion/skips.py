"""Cutting a UNet's skip connections at its coarsest levels, so that its decoder must read the bottleneck.

A diffusers `UpBlock2D` concatenates [decoder path, skip] along channels before each resnet. Cutting a
level's skips sets the weights that read the skip channels (`conv1` and the 1x1 `conv_shortcut`) to zero
and keeps their gradients zero, so the model stays a plain `UNet2DModel` that loads anywhere. The group
norm in front of `conv1` must not mix the two parts, or the skip would still leak through the group
statistics: every group has to lie wholly in the decoder channels or wholly in the skip channels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import UNet2DModel


@dataclass(frozen=True)
class SkipInput:
    """One up-block resnet whose input is [decoder path (first `decoder_channels`), skip (the rest)]."""

    level: int  # 0 = the coarsest up block
    resnet: torch.nn.Module
    decoder_channels: int

    @property
    def skip_channels(self) -> int:
        return self.resnet.in_channels - self.decoder_channels


def skip_inputs(unet: UNet2DModel, levels: int) -> list[SkipInput]:
    """The resnets of the `levels` coarsest up blocks that take a skip connection, coarsest first."""
    if not 0 <= levels <= len(unet.up_blocks):
        raise ValueError(f"cut_skip_levels must be between 0 and {len(unet.up_blocks)}, got {levels}")
    found = []
    previous_out = unet.config.block_out_channels[-1]  # the mid block's output width
    for level, block in enumerate(unet.up_blocks[:levels]):
        for index, resnet in enumerate(block.resnets):
            decoder = previous_out if index == 0 else resnet.out_channels
            found.append(SkipInput(level, resnet, decoder))
        previous_out = block.resnets[-1].out_channels
    return found


def check_groups_separate(entry: SkipInput) -> None:
    norm = entry.resnet.norm1
    group_size = norm.num_channels // norm.num_groups
    if entry.decoder_channels % group_size:
        raise ValueError(
            f"up block {entry.level}: group norm groups of {group_size} channels straddle the {entry.decoder_channels} "
            f"decoder and {entry.skip_channels} skip channels; choose block_out_channels and norm_num_groups so they "
            "align"
        )


def cut_skips(unet: UNet2DModel, levels: int) -> list[torch.nn.Parameter]:
    """Zero the skip-reading weights of the `levels` coarsest up blocks and keep their gradients zero.

    Returns the affected parameters. Zero gradients keep Adam(W) moments at zero, so the weights stay
    exactly zero through training (weight decay of zero is zero) and through EMA.
    """
    touched = []
    for entry in skip_inputs(unet, levels):
        check_groups_separate(entry)
        if entry.resnet.conv_shortcut is None:
            raise ValueError(
                f"up block {entry.level}: a resnet with an identity shortcut passes its skip through; it cannot be cut"
            )
        convs = [entry.resnet.conv1, entry.resnet.conv_shortcut]
        for conv in convs:
            mask = torch.ones_like(conv.weight)
            mask[:, entry.decoder_channels :] = 0
            with torch.no_grad():
                conv.weight.mul_(mask)
            conv.weight.register_hook(lambda grad, mask=mask: grad * mask.to(grad.device))
            touched.append(conv.weight)
    return touched


def skip_weight_norm(unet: UNet2DModel, levels: int) -> float:
    """The largest absolute weight reading a skip in the `levels` coarsest up blocks (0 when they are cut)."""
    largest = 0.0
    for entry in skip_inputs(unet, levels):
        for conv in (entry.resnet.conv1, entry.resnet.conv_shortcut):
            largest = max(largest, conv.weight[:, entry.decoder_channels :].abs().max().item())
    return largest
