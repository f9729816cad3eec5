"""Classes registered by their config name (methods, edits): a subclass with a `name` registers itself when its
module is imported, and `all()` imports the built-in modules first, so it lists them and any other imported
subclass."""

from __future__ import annotations

import importlib
from collections.abc import Sequence


class Registry:
    def __init__(self, package: str, built_in: Sequence[str]):
        self.package, self.built_in = package, tuple(built_in)
        self.classes: dict[str, type] = {}

    def add(self, cls: type) -> None:
        """Register `cls` under its `name`, when it defines one itself (an abstract base does not). A built-in's
        name is refused to a class from elsewhere, which would silently take its place (in the refusals that
        name the classes providing what an edit needs, for one); a class of one's own defined again (a notebook
        cell run twice) takes the place of the earlier one."""
        if "name" not in cls.__dict__:
            return
        if not self.is_built_in(cls):
            self.load_built_in()  # so that a built-in's name is known to be taken whatever was imported first
        taken = self.classes.get(cls.name)
        if taken is not None and self.is_built_in(taken) and qualified(taken) != qualified(cls):
            raise TypeError(
                f"{qualified(cls)} is named {cls.name!r}, the name of {qualified(taken)}: give it another name"
            )
        self.classes[cls.name] = cls

    def is_built_in(self, cls: type) -> bool:
        return cls.__module__ in {f"{self.package}.{module}" for module in self.built_in}

    def load_built_in(self) -> None:
        for module in self.built_in:
            importlib.import_module(f"{self.package}.{module}")

    def all(self) -> dict[str, type]:
        self.load_built_in()
        return dict(self.classes)


def qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
