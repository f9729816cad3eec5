"""Errors that a person can fix: their message is one line saying what was wrong and what to do."""


class UserError(Exception):
    """Bad input (a path, a setting, an incompatible file). The CLI prints the message and exits 2."""
