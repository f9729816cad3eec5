"""Widening the finest level of a trained UNet2DModel, so a wider model starts from what a narrower one learned.

The finest level's `c` channels (block_out_channels[0]) become `r * c`: every channel is copied `r` times and every
weight that reads a copied channel is divided by `r`, so each copy carries the old activation and the next layer sums
them back to it (Net2Net widening). Copies are placed group by group: new group `q` of a group norm holds the
channels of old group `q`, each `r` times, so its mean and variance are the old group's. The time embedding widens
with the level (its sinusoid has `c` features and its MLP `4 c`): the sinusoid of `r c` features contains the old
one's frequencies at every `r`-th index (when `freq_shift` is 0), so the new MLP reads those and ignores the rest.

Exact except in two places. A group norm that sees the concatenation of an unwidened decoder path and a widened
skip (the first resnet of the finest up block, the last of the next coarser one) changes its group size, so its
statistics are taken over other channel sets. And a resnet whose input and output widths become equal (the first
of the next coarser level, when it has as many channels as the widened level) has no 1x1 shortcut convolution in
diffusers, so the identity replaces its old shortcut. `noise` adds Gaussian noise of that fraction of each
widened tensor's standard deviation, so the copies, identical otherwise, learn different features.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers import UNet2DModel

SUPPORTED_BLOCKS = {"DownBlock2D", "UpBlock2D"}


def group_copies(channels: int, factor: int, group_size: int) -> np.ndarray:
    """For each of the `factor * channels` new channels, the old channel it copies: old group q (`group_size`
    channels) becomes new group q, each of its channels `factor` times."""
    new = np.arange(channels * factor)
    group = new // (group_size * factor)
    return group * group_size + (new - group * group_size * factor) % group_size


def check_widenable(unet: UNet2DModel, channels: int) -> int:
    """The widening factor for `channels`, or ValueError saying why this UNet cannot be widened to it."""
    config = unet.config
    base = config.block_out_channels[0]
    kinds = set(config.down_block_types) | set(config.up_block_types)
    if not kinds <= SUPPORTED_BLOCKS:
        unsupported = sorted(kinds - SUPPORTED_BLOCKS)
        raise ValueError(f"only {sorted(SUPPORTED_BLOCKS)} blocks can be widened, not {unsupported}")
    if config.time_embedding_type != "positional" or config.freq_shift != 0 or config.time_embedding_dim is not None:
        raise ValueError("only a positional time embedding with freq_shift 0 and the default width can be widened")
    if channels <= base or channels % base:
        raise ValueError(f"the finest level has {base} channels: widen it to a larger multiple, not {channels}")
    if base % config.norm_num_groups or base % 2:
        raise ValueError(f"{base} channels do not split into {config.norm_num_groups} groups of an even size")
    return channels // base


def widened_config(unet: UNet2DModel, channels: int) -> dict:
    config = dict(unet.config)
    config["block_out_channels"] = [channels, *config["block_out_channels"][1:]]
    return {k: v for k, v in config.items() if not k.startswith("_")}


def channel_maps(unet: UNet2DModel, factor: int) -> dict[str, tuple[np.ndarray | None, np.ndarray | None]]:
    """Per module name, (the old input channel each new input channel copies, the same for outputs); None where
    that side is unchanged. Index -1 marks a new input that the module ignores (zero weight)."""
    config = unet.config
    widths = list(config.block_out_channels)
    fine = widths[0]
    copies = group_copies(fine, factor, fine // config.norm_num_groups)
    same = {w: np.arange(w) for w in set(widths)}
    time_hidden = np.arange(4 * fine * factor) // factor
    half = fine // 2
    sinusoid = np.full(fine * factor, -1)
    sinusoid[np.arange(half) * factor] = np.arange(half)  # cos part: frequency i / half = (factor i) / (factor half)
    sinusoid[half * factor + np.arange(half) * factor] = half + np.arange(half)  # sin part

    def level(i: int) -> np.ndarray:
        return copies if i == 0 else same[widths[i]]

    maps: dict[str, tuple[np.ndarray | None, np.ndarray | None]] = {
        "conv_in": (None, copies),
        "time_embedding.linear_1": (sinusoid, time_hidden),
        "time_embedding.linear_2": (time_hidden, time_hidden),
        "conv_norm_out": (None, copies),
        "conv_out": (copies, None),
    }

    def resnet(name: str, inputs: np.ndarray, outputs: np.ndarray) -> None:
        maps[f"{name}.norm1"] = (None, inputs)
        maps[f"{name}.conv1"] = (inputs, outputs)
        maps[f"{name}.time_emb_proj"] = (time_hidden, outputs)
        maps[f"{name}.norm2"] = (None, outputs)
        maps[f"{name}.conv2"] = (outputs, outputs)
        maps[f"{name}.conv_shortcut"] = (inputs, outputs)

    skips = [copies]
    previous = copies
    for i, block in enumerate(unet.down_blocks):
        for j in range(len(block.resnets)):
            resnet(f"down_blocks.{i}.resnets.{j}", previous, level(i))
            previous = level(i)
            skips.append(previous)
        if block.downsamplers is not None:
            maps[f"down_blocks.{i}.downsamplers.0.conv"] = (previous, previous)
            skips.append(previous)
    for j in range(len(unet.mid_block.resnets)):
        resnet(f"mid_block.resnets.{j}", same[widths[-1]], same[widths[-1]])
    previous = same[widths[-1]]
    for i, block in enumerate(unet.up_blocks):
        out = level(len(widths) - 1 - i)
        for j in range(len(block.resnets)):
            skip = skips.pop()
            resnet(f"up_blocks.{i}.resnets.{j}", np.concatenate([previous, int(previous.max()) + 1 + skip]), out)
            previous = out
        if block.upsamplers is not None:
            maps[f"up_blocks.{i}.upsamplers.0.conv"] = (out, out)
    return maps


def copy_weight(old: torch.Tensor, inputs: np.ndarray | None, outputs: np.ndarray | None) -> torch.Tensor:
    """`old` with its output rows copied by `outputs` and its input columns by `inputs` (each divided by how often
    its old column is copied; -1 gives zeros). A 1-d tensor (bias, norm scale) follows `outputs`."""
    new = old
    if outputs is not None:
        new = new[torch.as_tensor(outputs)]
    if inputs is not None and new.ndim > 1:
        index = torch.as_tensor(np.maximum(inputs, 0))
        counts = np.bincount(inputs[inputs >= 0], minlength=old.shape[1])
        scale = np.where(inputs >= 0, 1.0 / np.maximum(counts[np.maximum(inputs, 0)], 1), 0.0)
        shape = (1, -1) + (1,) * (new.ndim - 2)
        new = new[:, index] * torch.as_tensor(scale, dtype=new.dtype).reshape(shape)
    return new.clone()


def widen_finest_level(unet: UNet2DModel, channels: int, noise: float = 0.0, seed: int = 0) -> UNet2DModel:
    """A copy of `unet` whose finest level has `channels` channels, computing what `unet` computes (up to the two
    group norms the module docstring names, and `noise`)."""
    factor = check_widenable(unet, channels)
    wide = UNet2DModel(**widened_config(unet, channels))
    maps = channel_maps(unet, factor)
    old_state = unet.state_dict()
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, target in wide.state_dict().items():
        module, _ = key.rsplit(".", 1)
        old = old_state[key]
        if module in maps and old.ndim > 0:
            new = copy_weight(old, *maps[module])
            if noise > 0 and new.ndim > 1 and new.shape != old.shape:
                new = new + noise * old.std() * torch.randn(new.shape, generator=generator, dtype=new.dtype)
        else:
            new = old
        if new.shape != target.shape:
            raise ValueError(f"{key}: widened to {tuple(new.shape)}, the wide model has {tuple(target.shape)}")
        state[key] = new
    wide.load_state_dict(state)
    return wide
