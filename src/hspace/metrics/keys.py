"""Reading a run's per-direction metrics, named `edit/<direction>/<key>` (docs/design.md, "Metric names")."""

from __future__ import annotations

from collections.abc import Sequence

PREFIX = "edit/"


def direction_values(metrics: dict, key: str, names: Sequence[str] | None = None) -> dict[str, object]:
    """direction -> the value of `edit/<direction>/<key>`, for `names` (those that have one), or for every
    direction that has one, in the order of `metrics`. `key` may hold slashes (`factors/target`); a direction
    name holds none."""
    if names is None:
        suffix = f"/{key}"
        candidates = (
            name[len(PREFIX) : -len(suffix)] for name in metrics if name.startswith(PREFIX) and name.endswith(suffix)
        )
        names = [name for name in candidates if name and "/" not in name]
    return {name: metrics[f"{PREFIX}{name}/{key}"] for name in names if f"{PREFIX}{name}/{key}" in metrics}
