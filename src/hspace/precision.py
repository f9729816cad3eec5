"""Full float32 where precision matters more than speed.

PyTorch lets cuDNN run float32 convolutions in TF32 by default (`torch.backends.cudnn.conv.fp32_precision` is
"tf32"), on Ampere and newer GPUs: a 10-bit mantissa, so products through a UNet carry relative errors of about
1e-3, the size of the Jacobian solvers' default tolerance. Their products run inside `ieee_float32()`. On the CPU
nothing changes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


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
