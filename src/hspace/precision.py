"""Full float32 where precision matters more than speed: the Jacobian solvers' products (Jacobian, LOCO).

PyTorch lets cuDNN run float32 convolutions in TF32 by default (`torch.backends.cudnn.conv.fp32_precision` is
"tf32"), on Ampere and newer GPUs: a 10-bit mantissa, so products through a UNet carry relative errors of about
1e-3, the size of the solvers' default tolerance. Their products run inside `ieee_float32()`, through
`float32_model()`: a model with half-precision weights (bf16 rounds at about 1e-2) is copied to float32. On the
CPU with a float32 model nothing changes.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from hspace.diffusion.model import DiffusionModel


@contextmanager
def ieee_float32() -> Iterator[None]:
    """Convolutions and matrix products of float32 tensors in full float32 within, as they were after."""
    conv, matmul = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    before = conv.fp32_precision, matmul.fp32_precision
    conv.fp32_precision = matmul.fp32_precision = "ieee"
    try:
        yield
    finally:
        conv.fp32_precision, matmul.fp32_precision = before


def float32_model(model: DiffusionModel) -> DiffusionModel:
    """`model` itself, or a float32 copy where its weights are in half precision. The copy has the model's
    identity: hspace.identity hashes weights as float32, so directions found on it fit the model."""
    if model.dtype not in (torch.float16, torch.bfloat16):
        return model
    return dataclasses.replace(model, unet=copy.deepcopy(model.unet).float())
