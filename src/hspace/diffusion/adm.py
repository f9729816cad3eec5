"""The ADM / improved-DDPM UNet (Dhariwal & Nichol 2021; Nichol & Dhariwal 2021), written for hspace so that
checkpoints in the guided-diffusion format load by their original parameter names.

Only what inference needs: no gradient checkpointing, no fp16 conversion, no class conditioning.
The output has 2 x in_channels channels when the variance is learned; `ADMUNet` returns eps as `.sample`
(and the variance channels as `.variance`), so samplers treat it like a diffusers UNet2DModel, and it
exposes `mid_block` (the middle block, whose output is h) for hspace.bottleneck.HSpace.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import FrozenDict
from torch import nn


@dataclass
class ADMConfig:
    image_size: int = 256
    in_channels: int = 3
    model_channels: int = 128
    num_res_blocks: int = 1
    attention_resolutions: tuple[int, ...] = (16,)  # image sizes (not factors) with self-attention
    channel_mult: tuple[int, ...] | None = None  # default by image size, as guided-diffusion
    num_heads: int = 4
    num_head_channels: int = 64  # -1: use num_heads
    num_heads_upsample: int = -1
    use_scale_shift_norm: bool = True
    resblock_updown: bool = True
    learn_sigma: bool = True
    dropout: float = 0.0
    extra: dict = field(default_factory=dict)

    def multipliers(self) -> tuple[int, ...]:
        if self.channel_mult is not None:
            return tuple(self.channel_mult)
        defaults = {
            512: (0.5, 1, 1, 2, 2, 4, 4),
            256: (1, 1, 2, 2, 4, 4),
            128: (1, 1, 2, 3, 4),
            64: (1, 2, 3, 4),
            32: (1, 2, 2, 2),
        }
        if self.image_size not in defaults:
            raise ValueError(f"no default channel_mult for image size {self.image_size}: give channel_mult")
        return defaults[self.image_size]

    @property
    def out_channels(self) -> int:
        return self.in_channels * (2 if self.learn_sigma else 1)


def normalization(channels: int) -> nn.GroupNorm:
    return GroupNorm32(32, channels)


class GroupNorm32(nn.GroupNorm):
    def forward(self, x):
        return super().forward(x.float()).type(x.dtype)


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: int = 10000) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half)
    args = timesteps[:, None].float() * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding


class TimestepBlock(nn.Module):
    """A block whose forward takes the timestep embedding as well."""


class TimestepEmbedSequential(nn.Sequential, TimestepBlock):
    def forward(self, x, emb):
        for layer in self:
            x = layer(x, emb) if isinstance(layer, TimestepBlock) else layer(x)
        return x


class Upsample(nn.Module):
    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None):
        super().__init__()
        self.use_conv = use_conv
        if use_conv:
            self.conv = nn.Conv2d(channels, out_channels or channels, 3, padding=1)

    def forward(self, x):
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.use_conv else x


class Downsample(nn.Module):
    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None):
        super().__init__()
        self.op = (
            nn.Conv2d(channels, out_channels or channels, 3, stride=2, padding=1) if use_conv else nn.AvgPool2d(2, 2)
        )

    def forward(self, x):
        return self.op(x)


class ResBlock(TimestepBlock):
    def __init__(
        self,
        channels: int,
        emb_channels: int,
        dropout: float,
        out_channels: int | None = None,
        use_scale_shift_norm: bool = False,
        up: bool = False,
        down: bool = False,
    ):
        super().__init__()
        out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(
            normalization(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.updown = up or down
        if up:
            self.h_upd, self.x_upd = Upsample(channels, False), Upsample(channels, False)
        elif down:
            self.h_upd, self.x_upd = Downsample(channels, False), Downsample(channels, False)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        self.emb_layers = nn.Sequential(
            nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels if use_scale_shift_norm else out_channels)
        )
        self.out_layers = nn.Sequential(
            normalization(out_channels),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        self.skip_connection = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x, emb):
        if self.updown:
            h = self.in_layers[:-1](x)
            h, x = self.h_upd(h), self.x_upd(x)
            h = self.in_layers[-1](h)
        else:
            h = self.in_layers(x)
        emb_out = self.emb_layers(emb).type(h.dtype)[..., None, None]
        if self.use_scale_shift_norm:
            scale, shift = emb_out.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Self-attention over spatial positions with the "legacy" head layout of guided-diffusion
    (qkv reshaped per head before splitting)."""

    def __init__(self, channels: int, num_heads: int = 1, num_head_channels: int = -1):
        super().__init__()
        self.num_heads = channels // num_head_channels if num_head_channels != -1 else num_heads
        self.norm = normalization(channels)
        self.qkv = nn.Conv1d(channels, channels * 3, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x):
        b, c, *spatial = x.shape
        x = x.reshape(b, c, -1)
        qkv = self.qkv(self.norm(x))
        length = qkv.shape[-1]
        ch = qkv.shape[1] // (3 * self.num_heads)
        q, k, v = qkv.reshape(b * self.num_heads, ch * 3, length).split(ch, dim=1)
        scale = 1 / math.sqrt(math.sqrt(ch))
        weight = torch.einsum("bct,bcs->bts", q * scale, k * scale).float().softmax(dim=-1).type(q.dtype)
        h = torch.einsum("bts,bcs->bct", weight, v).reshape(b, -1, length)
        return (x + self.proj_out(h)).reshape(b, c, *spatial)


class ADMUNet(nn.Module):
    def __init__(self, config: ADMConfig):
        super().__init__()
        self.adm_config = config
        # read as diffusers' UNet2DModel.config is: by attribute (sample_size, in_channels) and as a mapping
        settings = {**asdict(config), "channel_mult": list(config.multipliers())}  # the default spelled out: one key
        self.config = FrozenDict(**settings, sample_size=config.image_size, out_channels=config.out_channels)
        mc, mult = config.model_channels, config.multipliers()
        emb = mc * 4
        attention_at = {config.image_size // r for r in config.attention_resolutions}  # as downsampling factors
        heads_up = config.num_heads if config.num_heads_upsample == -1 else config.num_heads_upsample

        def res(ch_in, ch_out, up=False, down=False):
            return ResBlock(ch_in, emb, config.dropout, ch_out, config.use_scale_shift_norm, up, down)

        self.time_embed = nn.Sequential(nn.Linear(mc, emb), nn.SiLU(), nn.Linear(emb, emb))
        ch = int(mult[0] * mc)
        input_ch = ch
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(config.in_channels, ch, 3, padding=1))])
        chans, ds = [ch], 1
        for level, m in enumerate(mult):
            for _ in range(config.num_res_blocks):
                layers = [res(ch, int(m * mc))]
                ch = int(m * mc)
                if ds in attention_at:
                    layers.append(AttentionBlock(ch, config.num_heads, config.num_head_channels))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                chans.append(ch)
            if level != len(mult) - 1:
                self.input_blocks.append(
                    TimestepEmbedSequential(
                        res(ch, ch, down=True) if config.resblock_updown else Downsample(ch, True, ch)
                    )
                )
                chans.append(ch)
                ds *= 2
        self.middle_block = TimestepEmbedSequential(
            res(ch, ch), AttentionBlock(ch, config.num_heads, config.num_head_channels), res(ch, ch)
        )
        self.output_blocks = nn.ModuleList()
        for level, m in list(enumerate(mult))[::-1]:
            for i in range(config.num_res_blocks + 1):
                layers = [res(ch + chans.pop(), int(mc * m))]
                ch = int(mc * m)
                if ds in attention_at:
                    layers.append(AttentionBlock(ch, heads_up, config.num_head_channels))
                if level and i == config.num_res_blocks:
                    layers.append(res(ch, ch, up=True) if config.resblock_updown else Upsample(ch, True, ch))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))
        self.out = nn.Sequential(normalization(ch), nn.SiLU(), nn.Conv2d(input_ch, config.out_channels, 3, padding=1))

    @property
    def mid_block(self) -> nn.Module:
        """The middle block: its output is h (hspace.bottleneck.HSpace hooks it like a diffusers mid_block)."""
        return self.middle_block

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor | int):
        timesteps = torch.as_tensor(timesteps, device=x.device)
        if timesteps.ndim == 0:
            timesteps = timesteps.expand(x.shape[0])
        emb = self.time_embed(timestep_embedding(timesteps, self.adm_config.model_channels))
        skips, h = [], x
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        out = self.out(h)
        c = self.adm_config.in_channels
        return SimpleNamespace(sample=out[:, :c], variance=out[:, c:] if self.adm_config.learn_sigma else None)
