"""The random number streams of a training, saved in its checkpoints and restored on resume.

hspace-train seeds every stream with `seed` when it starts, resumed or not. Without the streams' states a
resumed training would draw again the batches, timesteps and noise its first steps drew. The states are kept as
tensors, integers and floats, so checkpoints still load with `torch.load(weights_only=True)`.

The training data loader keeps its own place in its order (hspace.data.epoch_order) and draws nothing from these
streams, so a resumed training takes the same steps as an unbroken one.
"""

from __future__ import annotations

import random

import numpy as np
import torch


def random_states() -> dict:
    """The states of Python's, NumPy's and torch's global generators (torch's generator of this process's GPU where
    CUDA is up)."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    version, python_state, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        # this process's GPU only: under a process group every rank restores rank 0's checkpoint, whose states of
        # the other GPUs would be their seeding states, not where those ranks' streams had got to
        "cuda": [torch.cuda.get_rng_state()] if torch.cuda.is_initialized() else [],
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": {"version": version, "state": list(python_state), "gauss": gauss},
    }


def restore_random_states(states: dict) -> None:
    """Put back what random_states() returned."""
    torch.set_rng_state(states["torch"])
    if len(states["cuda"]) == 1 and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"][0])
    elif states["cuda"] and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])  # a checkpoint that holds every GPU's state
    state = states["numpy"]
    keys = state["keys"].numpy().astype(np.uint32)
    np.random.set_state((state["kind"], keys, state["position"], state["has_gauss"], state["cached"]))
    python = states["python"]
    random.setstate((python["version"], tuple(python["state"]), python["gauss"]))
