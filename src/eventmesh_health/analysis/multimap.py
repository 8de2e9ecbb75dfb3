"""A map from a key to the values held under it, where one value is the common case.

The incremental analysis maps every watched object (its uid, its name key) to the
applications whose chain holds it: at 550,000 objects a `set` per key, nearly always of one
name, was ≈200 bytes each. Here a key holds its one value itself, and a set only once a
second value arrives (and again the value alone when it drops back to one). A value must not
be a `set` itself.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V", bound=Hashable)


class OneOrMany(Generic[K, V]):
    __slots__ = ("_held",)

    def __init__(self) -> None:
        self._held: dict[K, V | set[V]] = {}

    def add(self, key: K, value: V) -> None:
        held = self._held.get(key)
        if held is None:
            self._held[key] = value
        elif isinstance(held, set):
            held.add(value)
        elif held != value:
            self._held[key] = {held, value}

    def discard(self, key: K, value: V) -> None:
        held = self._held.get(key)
        if held is None:
            return
        if not isinstance(held, set):
            if held == value:
                del self._held[key]
            return
        held.discard(value)
        if len(held) == 1:
            self._held[key] = next(iter(held))
        elif not held:  # (not reached by add/discard alone; kept for safety)
            del self._held[key]

    def get(self, key: K) -> set[V]:
        """The values under `key`: a new set, the caller's to change."""
        held = self._held.get(key)
        if held is None:
            return set()
        if isinstance(held, set):
            return set(held)
        return {held}

    def __contains__(self, key: object) -> bool:
        return key in self._held

    def __len__(self) -> int:
        return len(self._held)

    def __iter__(self) -> Iterator[K]:
        return iter(self._held)
