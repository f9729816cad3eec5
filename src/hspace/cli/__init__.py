"""Composition roots: the only code that sees a DictConfig. Library imports happen inside the tasks,
so `--help` and `--cfg job` answer quickly."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

CONFIG_DIR = str(Path(__file__).resolve().parents[3] / "conf")


def user_errors_exit(task):
    """Print a UserError as one line on stderr and exit with status 2 instead of a traceback."""

    @functools.wraps(task)
    def wrapped(*args, **kwargs):
        from hspace.errors import UserError

        try:
            return task(*args, **kwargs)
        except UserError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)

    return wrapped
