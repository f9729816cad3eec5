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
        """Register `cls` under its `name`, when it defines one itself (an abstract base does not)."""
        if "name" in cls.__dict__:
            self.classes[cls.name] = cls

    def all(self) -> dict[str, type]:
        for module in self.built_in:
            importlib.import_module(f"{self.package}.{module}")
        return dict(self.classes)
