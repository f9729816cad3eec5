"""What identifies a setting in a cache key: plain values as they are, objects by their content.

A cache key must change whenever the result would. Plain settings (numbers, strings, lists, dicts,
dataclasses of them) identify themselves. An object a method holds (a classifier, a datamodule) must
say what it computes, by implementing `Identified`: a classifier by the hash of its weights, a
datamodule by what its images are. Anything else is refused: a `repr` would be unstable (memory
addresses) or blind (two weight files of the same architecture print alike).
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Identified(Protocol):
    def identity(self) -> str:
        """A string that changes whenever what the object computes changes (e.g. a weight hash)."""
        ...


def identity_of(value, where: str = "setting"):
    """A JSON-able description of `value` for a cache key; raises TypeError for an object without an identity."""
    if isinstance(value, np.generic):  # numpy scalars, as settings checked by hspace.checks may be
        value = value.item()
    if isinstance(value, float) and value.is_integer():  # 1.0 and 1 compute alike: one key for both
        return int(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [identity_of(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {str(k): identity_of(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, Identified):
        return {"type": type(value).__name__, "identity": value.identity()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: identity_of(getattr(value, f.name), f"{where}.{f.name}") for f in dataclasses.fields(value)}
    raise TypeError(
        f"{where} holds a {type(value).__name__}, which has no identity(): give it one (hspace.identity.Identified) "
        "so cache keys follow its content"
    )


def state_hash(module) -> str:
    """A hash of a torch module's weights and buffers, in a fixed order: the identity of weights in memory."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(memoryview(tensor.detach().float().cpu().contiguous().numpy()).cast("B"))  # no copy for fp32
    return digest.hexdigest()[:16]


def weights_identity(module, file_hash: str | None, loaded_state: str | None) -> str:
    """The hash of the weights file `module` was loaded from while its weights in memory are still the ones it
    read (`loaded_state`: their state_hash when it was loaded; None trusts `file_hash` as given), else the hash of
    the weights in memory: a module built by hand, or one whose loaded weights were changed (fine-tuned, edited in a
    notebook), never shares cache entries or directions with the file's."""
    if not file_hash:
        return state_hash(module)
    if not loaded_state:
        return file_hash
    current = state_hash(module)
    return file_hash if current == loaded_state else current


def tensor_hash(tensor) -> str:
    """A hash of a tensor's content (its dtype, shape and values): the identity of data held in memory."""
    import torch

    values = tensor.detach().cpu().contiguous()
    digest = hashlib.sha256(f"{values.dtype}:{tuple(values.shape)};".encode())
    digest.update(memoryview(values.view(-1).view(torch.uint8).numpy()))
    return digest.hexdigest()[:32]


def config_hash(config) -> str:
    """A hash of a JSON-able mapping (an architecture's config, e.g. a UNet's `config`), whatever its key order.
    diffusers' private keys are left out: where the weights were loaded from (`_name_or_path`), the library's
    version, and `_use_default_values`, a list whose order changes from one process to the next."""
    public = {key: value for key, value in dict(config).items() if not str(key).startswith("_")}
    canonical = json.dumps(public, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
