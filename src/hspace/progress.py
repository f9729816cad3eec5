"""Progress of long work: bars on stderr while it runs, one line per stage when it ends.

Bars show when stderr is a terminal, or everywhere with `show_progress(True)` (the `progress` setting of
the commands; `false` turns them off). Stage lines ("directions: pca, 25 directions found in this run, 21.3 s") go to
stderr unless `show_stages(False)`. Library code calls `bar(...)` and `stage_line(...)`; the commands decide.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
_settings: dict[str, bool | None] = {"bars": None, "stages": True}


def show_progress(enabled: bool | None) -> None:
    """True: always draw bars; False: never; None: only when stderr is a terminal."""
    _settings["bars"] = enabled


def show_stages(enabled: bool) -> None:
    _settings["stages"] = enabled


def bars_enabled() -> bool:
    wanted = _settings["bars"]
    return sys.stderr.isatty() if wanted is None else bool(wanted)


def bar(items: Iterable[T], desc: str, total: int | None = None, unit: str = "it") -> Iterator[T]:
    """`items`, with a progress bar on stderr while they are consumed (when bars are enabled)."""
    if not bars_enabled():
        yield from items
        return
    from tqdm.auto import tqdm

    with tqdm(items, desc=desc, total=total, unit=unit, file=sys.stderr, leave=False, dynamic_ncols=True) as wrapped:
        yield from wrapped


def stage_line(name: str, detail: str, seconds: float) -> None:
    """One line when a stage ends: its name, what it covered and how long it took."""
    if _settings["stages"]:
        print(f"{name}: {detail + ', ' if detail else ''}{seconds:.1f} s", file=sys.stderr, flush=True)
