"""Process-wide objects made once, on first use, from any thread."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Registry(Generic[K, V]):
    """A dict whose values are made on first request, at most once per key, however
    many threads ask at the same time (the common path takes no lock)."""

    def __init__(self) -> None:
        self._items: dict[K, V] = {}
        self._lock = threading.Lock()

    def get(self, key: K, make: Callable[[], V]) -> V:
        """The value for `key`, made with `make()` if there is none yet. Whatever `make`
        raises propagates (and nothing is stored)."""
        item = self._items.get(key)
        if item is None:
            with self._lock:
                item = self._items.get(key)
                if item is None:
                    item = make()
                    self._items[key] = item
        return item

    def values(self) -> list[V]:
        """The values made so far."""
        with self._lock:
            return list(self._items.values())
