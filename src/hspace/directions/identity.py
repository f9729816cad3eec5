"""What identifies a method's settings in a cache key when some settings are objects (a classifier, a
datamodule): their identity strings instead of the objects themselves."""

from __future__ import annotations


def data_identity(data) -> str:
    """A datamodule by the sizes of its splits (None when there is none)."""
    datasets = getattr(data, "datasets", None)
    return repr(datasets and {name: len(split) for name, split in datasets.items()})


def settings_identity(settings) -> dict:
    """A method's fields, with `classifier` replaced by its `identity` and `data` by `data_identity`."""
    identity = {k: v for k, v in settings.__dict__.items() if k not in ("classifier", "data")}
    identity["classifier"] = getattr(getattr(settings, "classifier", None), "identity", None)
    identity["data"] = data_identity(getattr(settings, "data", None))
    return identity
