"""A small generic registry: names -> objects, with close matches suggested for a typo.

Example:
    >>> things = Registry("colour")
    >>> things.register("red", 1)
    1
    >>> things.get("red")
    1
    >>> things.get("rde")
    Traceback (most recent call last):
    ...
    vislab.core.errors.ConfigError: unknown colour 'rde'; did you mean 'red'? Known: red
    >>> things.get("blue")
    Traceback (most recent call last):
    ...
    vislab.core.errors.ConfigError: unknown colour 'blue'. Known: red
"""

from __future__ import annotations

import difflib
from typing import Generic, TypeVar

from vislab.core.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str, item: T) -> T:
        if not name:
            raise ValueError(f"a {self.kind} needs a name")
        self._items[name] = item
        return item

    def get(self, name: str) -> T:
        if name not in self._items:
            close = difflib.get_close_matches(name, list(self._items), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else "."
            raise ConfigError(f"unknown {self.kind} {name!r}{hint} Known: {', '.join(self.names())}")
        return self._items[name]

    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self._items))

    def __contains__(self, name: str) -> bool:
        return name in self._items
