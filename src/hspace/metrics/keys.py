"""The names of a run's per-edit metrics (docs/design.md, "Metric names"): written and read here only.

A per-direction metric is `edit/<direction>/<metric>`, its value at one edit strength
`edit/<direction>/<metric>@<strength>` (the strength as `strength_label` writes it), and the value at the
headline strength also stands without the suffix. Real-image edits use the prefix `edit_real/`. A direction
name holds no slash; a metric name may (`factors/leakage/r`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

PREFIX = "edit/"
REAL_PREFIX = "edit_real/"  # edits of inverted real images
DIRECTIONS_FILE_KEY = "directions/file_sha256"  # a run's directions_path, by content (runs that find their own: none)


def strength_label(strength: float) -> str:
    """How a strength is written after `@`: 4.0 -> "4", -0.5 -> "-0.5"."""
    return f"{strength:g}"


def edit_key(*parts: str, strength: float | None = None, prefix: str = PREFIX) -> str:
    """`<prefix><part>/<part>...`, with `@<strength>` for the value at one strength:
    edit_key("pc0", "success", strength=4) is `edit/pc0/success@4`."""
    key = prefix + "/".join(parts)
    return key if strength is None else f"{key}@{strength_label(strength)}"


@dataclass(frozen=True)
class EditKey:
    """A parsed per-direction metric name."""

    direction: str
    metric: str
    strength: float | None  # None for a value without the `@<strength>` suffix


def parse_edit_key(name: str, prefix: str = PREFIX) -> EditKey | None:
    """The parts of `<prefix><direction>/<metric>[@<strength>]`, or None for any other name."""
    if not name.startswith(prefix):
        return None
    rest, strength = name[len(prefix) :], None
    base, at, label = rest.rpartition("@")
    if at:
        try:
            strength = float(label)
        except ValueError:
            return None
        rest = base
    direction, slash, metric = rest.partition("/")
    if not (direction and slash and metric):
        return None
    return EditKey(direction, metric, strength)


# Metrics measured against a direction's target, and the target they are measured against (a run guesses it when
# metrics.targets / metrics.factor_targets do not give it, so runs may differ in it).
TARGETED = (
    ("success", "target"),
    ("preserve", "target"),
    ("factors/success", "factors/target"),
    ("factors/leakage", "factors/target"),
)


def target_key(name: str) -> str | None:
    """The name of the target a per-direction metric is measured against (`edit/pc0/success@4` -> `edit/pc0/target`,
    `edit_real/pc0/factors/leakage/r` -> `edit_real/pc0/factors/target`), or None for a metric that has none."""
    for prefix in (PREFIX, REAL_PREFIX):
        key = parse_edit_key(name, prefix)
        if key is None:
            continue
        for measured, target in TARGETED:
            if key.metric == measured or key.metric.startswith(measured + "/"):
                return edit_key(key.direction, target, prefix=prefix)
    return None


def with_headline(metrics: dict, strength: float) -> dict:
    """`metrics` with every value at `strength` (the headline strength) also under its name without the suffix."""
    suffix = "@" + strength_label(strength)
    return metrics | {name[: -len(suffix)]: value for name, value in metrics.items() if name.endswith(suffix)}


def per_strength(metrics: dict, metric: str, prefix: str = PREFIX) -> dict[str, dict[float, object]]:
    """direction -> strength -> the value of `<prefix><direction>/<metric>@<strength>`, in the order of `metrics`."""
    values: dict[str, dict[float, object]] = {}
    for name, value in metrics.items():
        key = parse_edit_key(name, prefix)
        if key is not None and key.metric == metric and key.strength is not None:
            values.setdefault(key.direction, {})[key.strength] = value
    return values


def direction_values(
    metrics: dict, key: str, names: Sequence[str] | None = None, keep_none: bool = False
) -> dict[str, object]:
    """direction -> the value of `edit/<direction>/<key>`, for `names` (those that have one), or for every
    direction that has one, in the order of `metrics`. `key` may hold slashes (`factors/target`). A value of
    None (nothing was measured, e.g. no target) counts as none, unless `keep_none`."""
    if names is None:
        names = [
            parsed.direction
            for parsed in map(parse_edit_key, metrics)
            if parsed is not None and parsed.metric == key and parsed.strength is None
        ]
    present = (lambda k: k in metrics) if keep_none else (lambda k: metrics.get(k) is not None)
    return {name: metrics[edit_key(name, key)] for name in names if present(edit_key(name, key))}
