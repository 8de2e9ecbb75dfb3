"""Objects of one kind by (namespace, name), keyed by the name alone while no other namespace
holds an object of that name: the watch cache's maps and the index's (`serve` keeps both as
long as it runs).

A map keyed by a `(namespace, name)` tuple costs that tuple per object: 56 bytes, ≈30 MiB at
550,000 objects, per map. Most names are in one namespace only, and the object itself says
which: there the name (the object's own string) is the whole key. A name in several
namespaces (every namespace's `default` Broker) holds a small map by namespace instead. (Maps
per namespace, then per name, cost more than the tuples: most namespaces hold one or two
objects of a kind, and a map is 200 bytes and more.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

Obj = dict[str, Any]


Namespace = str | None  # None: cluster-scoped, for a map whose caller says so


class _Namespaces(dict[Namespace, Obj]):
    """The objects of one name, by namespace (a type of its own: an object is a dict too)."""

    __slots__ = ()


class NameMap:
    """(namespace, name) -> object. `namespace_of(obj)` must give the namespace an object is
    put under, and stay so while it is held: the map reads it instead of keeping it."""

    __slots__ = ("_by_name", "_count", "_namespace_of")

    def __init__(self, namespace_of: Callable[[Obj], Namespace]) -> None:
        self._by_name: dict[str, Obj | _Namespaces] = {}
        self._count = 0
        self._namespace_of = namespace_of

    def __len__(self) -> int:
        return self._count

    def get(self, namespace: Namespace, name: str) -> Obj | None:
        held = self._by_name.get(name)
        if held is None:
            return None
        if isinstance(held, _Namespaces):
            return held.get(namespace)
        return held if self._namespace_of(held) == namespace else None

    def put(self, namespace: Namespace, name: str, obj: Obj) -> Obj | None:
        """Hold `obj`; the object it replaces, if any."""
        held = self._by_name.get(name)
        if held is None:
            self._by_name[name] = obj
            self._count += 1
            return None
        if isinstance(held, _Namespaces):
            old = held.get(namespace)
            held[namespace] = obj
        else:
            held_in = self._namespace_of(held)
            if held_in == namespace:
                old = held
                self._by_name[name] = obj
            else:
                old = None
                self._by_name[name] = _Namespaces({held_in: held, namespace: obj})
        if old is None:
            self._count += 1
        return old

    def pop(self, namespace: Namespace, name: str) -> Obj | None:
        """Drop the object; it, or None when there was none."""
        held = self._by_name.get(name)
        if held is None:
            return None
        if isinstance(held, _Namespaces):
            old = held.pop(namespace, None)
            if len(held) == 1:
                self._by_name[name] = next(iter(held.values()))
        elif self._namespace_of(held) == namespace:
            old = held
            del self._by_name[name]
        else:
            old = None
        if old is not None:
            self._count -= 1
        return old

    def values(self) -> Iterator[Obj]:
        for held in self._by_name.values():
            if isinstance(held, _Namespaces):
                yield from held.values()
            else:
                yield held

    def named(self, name: str) -> list[Obj]:
        """The objects called `name`, in any namespace."""
        held = self._by_name.get(name)
        if held is None:
            return []
        if isinstance(held, _Namespaces):
            return list(held.values())
        return [held]

    def items(self) -> Iterator[tuple[Namespace, str, Obj]]:
        """(namespace, name, object) of every object."""
        for name, held in self._by_name.items():
            if isinstance(held, _Namespaces):
                for namespace, obj in held.items():
                    yield namespace, name, obj
            else:
                yield self._namespace_of(held), name, held
