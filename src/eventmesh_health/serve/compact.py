"""Share what repeats in the watch cache: one copy of each short string, and one copy of each
nested map or list that many objects hold alike, however many objects hold it.

JSON parsing makes a new string for every value: 550,000 cached objects repeat "True",
"Ready", the same apiVersions, kinds, labels, condition reasons and timestamps millions of
times, each copy 50-80 bytes. Interned, the cache keeps one of each. Names, uids and
resourceVersions are unique and gain nothing (uids and resourceVersions, never repeated, are
left out of the interpreter's table of interned strings). Long strings (messages) are left
alone: rarely repeated.

After the strings, the maps and lists themselves are most of the cache (≈8 per object, a
small dict is 200 bytes). Below the object's own level — a `spec` or `status`, a condition,
a `conditions` list, labels, a selector — they are often the same in many objects (the Pods
of one Deployment, objects made together by one controller, conditions of one type and
reason set in the same second); equal ones are kept once (`Compactor`). The object itself
and its `metadata` are never shared: they hold its name and uid (sharing them would only
cost a table entry each). Sharing is only sound because nothing that reads the cache changes
an object (tests/test_compact.py checks the analysis on cache objects that refuse any
change).

Two containers are shared only when equal the strict way a reader sees them: same keys in
the same order, values of the same types (`True` is not `1`); floats are never shared
(`0.0` equals `-0.0`).

What cannot be shared (the object itself, its `metadata`, an `ownerReferences` entry naming
one owner) is still a map each, and CPython's smallest dict holds 5 keys: a `metadata` of 6-8
keys takes 280 bytes, of 11 keys 472. Every map the cache keeps is therefore a *key-sharing*
dict, the kind CPython makes for an instance's `__dict__`: its keys live once in a table
shared by all dicts of the same keys, and each dict holds only its values (96 + 8 per key
bytes: 152 for 7 keys). It is a plain `dict` to every reader (type, equality, order, JSON);
only its memory differs. One layout (a class whose instances lend their `__dict__`) per
distinct tuple of keys, at most `LAYOUTS` of them; maps of other keys stay ordinary dicts.
"""

from __future__ import annotations

import sys
from typing import Any, TypeVar, cast

SHORT = 128  # characters; longer strings are kept as they are
LAYOUTS = 1024  # distinct key tuples given a key-sharing layout (each costs ≈1-2 KiB)
T = TypeVar("T")

_DICT, _LIST = object(), object()  # (kept apart in a structure's hash)
# Never repeated: interning them would only grow the interpreter's table (≈60 bytes each).
_UNIQUE = frozenset(("uid", "resourceVersion"))


class Compactor:
    """One cache's table of shared containers: `compact` an object as it enters the cache.

    The table holds every shared container by its structure's hash. Containers no object
    holds any more are dropped from it whenever it has doubled since it was last swept (by
    reference count: the table's own, while nothing else holds them), so it does not grow
    with the cache's churn.
    """

    def __init__(self, sweep_from: int = 4096) -> None:
        self._shared: dict[int, dict[Any, Any] | list[Any]] = {}
        self._layouts: dict[tuple[str, ...], type] = {}
        self._sweep_from = sweep_from
        self._sweep_at = sweep_from

    def compact(self, obj: T) -> T:
        return cast(T, self._compact(obj, 0, "")[0])

    def __len__(self) -> int:
        return len(self._shared)

    def _compact(self, value: Any, depth: int, name: str) -> tuple[Any, int | None]:
        """The value as kept and its structure's hash (None: never shared)."""
        if isinstance(value, str):
            if len(value) <= SHORT and not (depth == 2 and name in _UNIQUE):
                value = sys.intern(value)
            return value, hash(value)
        if isinstance(value, dict):
            kept: dict[Any, Any] = {}
            parts: list[Any] = [_DICT]
            shareable = True
            for k, v in value.items():
                if isinstance(k, str) and len(k) <= SHORT:
                    k = sys.intern(k)
                v, h = self._compact(v, depth + 1, k)
                kept[k] = v
                if h is None:
                    shareable = False
                elif shareable:
                    parts.append(k)
                    parts.append(h)
            if shareable:
                return self._share(kept, parts, depth, name)
            return self._key_sharing(kept), None
        if isinstance(value, list):
            items: list[Any] = []
            parts = [_LIST]
            shareable = True
            for item in value:
                item, h = self._compact(item, depth + 1, name)
                items.append(item)
                if h is None:
                    shareable = False
                elif shareable:
                    parts.append(h)
            return self._share(items, parts, depth, name) if shareable else (items, None)
        if value is None or isinstance(value, (bool, int)):
            return value, hash(value)
        return value, None  # floats, and whatever else a decoder might give

    def _share(self, container: Any, parts: list[Any], depth: int,
               name: str) -> tuple[Any, int]:
        h = hash(tuple(parts))
        if depth == 0 or (depth == 1 and name == "metadata"):
            return self._key_sharing(container), h
        held = self._shared.get(h)
        if held is not None and _same(held, container):
            return held, h
        container = self._key_sharing(container)
        if held is None:
            self._shared[h] = container
            if len(self._shared) >= self._sweep_at:
                self.sweep()
        return container, h  # (when held: another structure with the same hash, kept apart)

    def _key_sharing(self, container: Any) -> Any:
        """The same map, with its keys in a table shared with every map of the same keys
        (see the module docstring); a list, or keys that are not all strings, as they are."""
        if type(container) is not dict or not container:
            return container
        keys = tuple(container)
        layout = self._layouts.get(keys)
        if layout is None:
            if len(self._layouts) >= LAYOUTS or not all(type(k) is str for k in keys):
                return container
            layout = self._layouts[keys] = type("KeySharing", (), {})
        holder = layout()
        for k, v in container.items():
            setattr(holder, k, v)
        return holder.__dict__

    def sweep(self) -> None:
        """Drop the shared containers no object holds any more."""
        shared = self._shared
        # Newest first: a container comes after everything it holds, so dropping a
        # container first lets what it held go in the same pass.
        for h in reversed(list(shared)):
            if sys.getrefcount(shared[h]) <= 2:  # the table's and the argument's own
                del shared[h]
        self._sweep_at = max(self._sweep_from, 2 * len(shared))


def _same(a: Any, b: Any) -> bool:
    """Equal as a reader sees them; the containers inside are shared already, so those
    are the same object or not equal."""
    if type(a) is not type(b) or len(a) != len(b):
        return False
    if isinstance(a, dict):
        return all(ka == kb and _same_value(va, vb)
                   for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=True))
    return all(_same_value(x, y) for x, y in zip(a, b, strict=True))


def _same_value(a: Any, b: Any) -> bool:
    if isinstance(a, (dict, list)):
        return a is b
    return type(a) is type(b) and a == b
