"""Checks of settings that end in one line naming the setting, the bad value and the fix (a UserError)."""

from __future__ import annotations

import math
import numbers
import sys
from collections.abc import Sequence
from pathlib import Path

from hspace.errors import UserError


def integer(value, setting: str, minimum: int | None = None, maximum: int | None = None) -> int:
    """`value` as an int within [minimum, maximum] (numpy integers included), or one line naming the setting."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise UserError(f"{setting}={value!r} is not a whole number: give an integer, e.g. {setting}={minimum or 1}")
    if minimum is not None and value < minimum:
        raise UserError(f"{setting}={value} is below {minimum}: give at least {minimum}")
    if maximum is not None and value > maximum:
        raise UserError(f"{setting}={value} is above {maximum}: give at most {maximum}")
    return int(value)


def number(
    value,
    setting: str,
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
    below: float | None = None,
) -> float:
    """`value` as a finite float within [minimum, maximum] and, where `above` or `below` is given, strictly
    greater or smaller than it, or one line naming the setting."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise UserError(f"{setting}={value!r} is not a finite number: give one, e.g. {setting}=1.0")
    if above is not None and value <= above:
        raise UserError(f"{setting}={value} must be greater than {above}: give a larger value")
    if below is not None and value >= below:
        raise UserError(f"{setting}={value} must be smaller than {below}: give a smaller value")
    if minimum is not None and value < minimum:
        raise UserError(f"{setting}={value} is below {minimum}: give at least {minimum}")
    if maximum is not None and value > maximum:
        raise UserError(f"{setting}={value} is above {maximum}: give at most {maximum}")
    return float(value)


def boolean(value, setting: str) -> bool:
    """`value` as a bool, or one line naming the setting: a string such as "maybe" is not read as true."""
    if not isinstance(value, bool):
        raise UserError(f"{setting}={value!r} is not true or false: give {setting}=true or {setting}=false")
    return value


def choice(value, setting: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise UserError(f"{setting}={value!r} is not one of {', '.join(choices)}: choose one of them")
    return value


def note(message: str) -> None:
    """One line on stderr about something the run decided for the user (not an error)."""
    print(f"note: {message}", file=sys.stderr)


def output_path(value, setting: str, kind: str) -> Path:
    """`value` as a path a command can write a `kind` ("file" or "folder") to, or one line naming the setting: a
    file where a folder goes or the reverse, or a file standing where a folder above it would be made, is
    refused before any work instead of failing when the result is written."""
    path = Path(str(value)).expanduser()
    if kind == "file" and path.is_dir():
        raise UserError(f"{setting}={value} is a folder: give the path of a file to write (one inside it will do)")
    if kind == "folder" and path.exists() and not path.is_dir():
        raise UserError(f"{setting}={value} is a file: give a folder path, or move the file away")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"{setting}={value}: {parent} is a file, not a folder: choose another path")
            break
    return path
