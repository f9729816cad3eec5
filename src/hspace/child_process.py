"""Running a command to its end for a script that measures it (the benchmarks): its stdout, or one line that
carries the command's own last error line, since its output is captured and a traceback would hide it."""

from __future__ import annotations

import subprocess
from pathlib import Path

from hspace.errors import UserError


def run_to_end(command: list[str], env: dict | None = None) -> str:
    """The stdout of `command`; a non-zero exit raises a UserError naming the command (each argument cut to its
    first line and 40 characters) and its last line on stderr."""
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no error output"])[-1]
        shown = [Path(command[0]).name, *(short(arg) for arg in command[1:4])] + (["..."] if len(command) > 4 else [])
        raise UserError(f"{' '.join(shown)} failed with exit {result.returncode}: {last}")
    return result.stdout


def short(argument: str, width: int = 40) -> str:
    first = argument.strip().splitlines()[0] if argument.strip() else argument
    return first if len(first) <= width and first == argument.strip() else first[:width] + "..."
