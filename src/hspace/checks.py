"""Checks of settings that end in one line naming the setting, the bad value and the fix (a UserError)."""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence

from hspace.errors import UserError


def integer(value, setting: str, minimum: int | None = None, maximum: int | None = None) -> int:
    """`value` as an int within [minimum, maximum], or one line naming the setting."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{setting}={value!r} is not a whole number: give an integer, e.g. {setting}={minimum or 1}")
    if minimum is not None and value < minimum:
        raise UserError(f"{setting}={value} is below {minimum}: give at least {minimum}")
    if maximum is not None and value > maximum:
        raise UserError(f"{setting}={value} is above {maximum}: give at most {maximum}")
    return value


def number(value, setting: str, minimum: float | None = None, maximum: float | None = None) -> float:
    """`value` as a finite float within [minimum, maximum], or one line naming the setting."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"{setting}={value!r} is not a finite number: give one, e.g. {setting}=1.0")
    if minimum is not None and value < minimum:
        raise UserError(f"{setting}={value} is below {minimum}: give at least {minimum}")
    if maximum is not None and value > maximum:
        raise UserError(f"{setting}={value} is above {maximum}: give at most {maximum}")
    return float(value)


def choice(value, setting: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise UserError(f"{setting}={value!r} is not one of {', '.join(choices)}: choose one of them")
    return value


def note(message: str) -> None:
    """One line on stderr about something the run decided for the user (not an error)."""
    print(f"note: {message}", file=sys.stderr)
