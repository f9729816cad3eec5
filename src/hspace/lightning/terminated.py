"""A SIGTERM (kill, timeout, a scheduler's time limit) that lands in a Lightning loop stops the command.

Outside Lightning's loops the signal ends the process at once (exit status 143). Inside `fit` and `test`, Lightning
installs its own handler: the loop raises SIGTERMException, a SystemExit without a status, so the process would
exit 0 as if it had finished; and a signal in the last batch only sets `trainer.received_sigterm`, which nothing
reads, so the command went on. `stopped_by_sigterm` turns both into Terminated, which the command line prints as
one line and exits 143 with.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

EXIT_STATUS = 143  # 128 + SIGTERM, as a process the signal ends


class Terminated(Exception):
    """A SIGTERM stopped a Lightning loop; the message says what was left undone and how to go on."""


@contextmanager
def stopped_by_sigterm(trainer, what: Callable[[], str]) -> Iterator[None]:
    """Run a Lightning loop of `trainer`; raise Terminated(what()) when a SIGTERM arrived during it (`what` is
    called then, so it can say where the loop stopped)."""
    try:
        yield
    except SystemExit:
        if trainer.received_sigterm:
            raise Terminated(what()) from None
        raise
    if trainer.received_sigterm:
        raise Terminated(what())
