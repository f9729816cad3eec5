"""Deepening a trained UNet2DModel: coarser levels under its bottleneck, so a model with a smaller h starts from what
the shallower one learned at every resolution they share.

`levels` new levels of the coarsest width (block_out_channels[-1]) are added below the old coarsest one, each a
`DownBlock2D` and an `UpBlock2D`, so h shrinks by 2**levels in each spatial dimension (48x4x4 -> 48x1x1 for two
levels on the Shapes model). The old blocks keep their weights and their place relative to the image: down block i
stays down block i, up block j becomes up block j + levels, and each still reads the skips it read before. Only
what did not exist is drawn fresh by diffusers' initialisation: the new blocks, and the downsampler the old coarsest
down block now needs. The mid block and the time embedding keep their weights. The deepened model computes what the
old one computed down to the old bottleneck and from the old coarsest up block on, given the same inputs there; what
reaches that up block from below is new, so its output differs until training teaches the new levels to carry
what the old h held.
"""

from __future__ import annotations

import re

import torch
from diffusers import UNet2DModel

NEW_DOWN, NEW_UP = "DownBlock2D", "UpBlock2D"


def deepened_config(unet: UNet2DModel, levels: int) -> dict:
    """The config of `unet` with `levels` more levels of its coarsest width; ValueError if h would vanish."""
    config = {k: v for k, v in dict(unet.config).items() if not k.startswith("_")}
    if levels < 1:
        raise ValueError(f"add at least one level, not {levels}")
    widths = list(config["block_out_channels"])
    total = len(widths) + levels
    size = config["sample_size"]
    halvings = (size & -size).bit_length() - 1  # how often the image side halves evenly
    if total - 1 > halvings:
        raise ValueError(
            f"{size}x{size} images halve evenly {halvings} times: add at most {halvings - len(widths) + 1} levels"
        )
    config["block_out_channels"] = widths + [widths[-1]] * levels
    config["down_block_types"] = list(config["down_block_types"]) + [NEW_DOWN] * levels
    config["up_block_types"] = [NEW_UP] * levels + list(config["up_block_types"])
    return config


def old_key(key: str, levels: int) -> str | None:
    """The name in the shallower model of the deepened model's parameter `key`, or None where it is new."""
    up = re.match(r"up_blocks\.(\d+)\.(.*)", key)
    if up:
        index = int(up.group(1)) - levels
        return f"up_blocks.{index}.{up.group(2)}" if index >= 0 else None
    return key


def deepen_bottleneck(unet: UNet2DModel, levels: int, seed: int = 0) -> UNet2DModel:
    """A copy of `unet` with `levels` more coarse levels (module docstring); new weights are drawn with `seed`."""
    config = deepened_config(unet, levels)
    torch.manual_seed(seed)
    deep = UNet2DModel(**config)
    old_state = unet.state_dict()
    state = deep.state_dict()
    for key, target in state.items():
        source = old_key(key, levels)
        if source is None or source not in old_state:
            continue
        if old_state[source].shape != target.shape:
            raise ValueError(f"{key}: {tuple(old_state[source].shape)} in the old model, {tuple(target.shape)} here")
        state[key] = old_state[source].clone()
    deep.load_state_dict(state)
    return deep


def new_parameters(shallow: UNet2DModel, deep: UNet2DModel, levels: int) -> list[str]:
    """The names of `deep`'s tensors that have no counterpart in `shallow` (drawn fresh by deepen_bottleneck)."""
    old_state = shallow.state_dict()
    return [k for k in deep.state_dict() if old_key(k, levels) not in old_state]
