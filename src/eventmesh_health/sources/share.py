"""Keep equal parts of the objects of one dump once, as they are read.

A decoded object is ~2.8 KiB of Python dicts, lists and strings (the synthetic mesh's,
already slimmed), and most of it repeats across objects: the `status` of every healthy
object of a kind set in the same second, the labels and selectors of one application, its
owner references, condition lists. Kept once, a dump of 550,000 objects needs about a third
of the memory. serve's watch cache does the same (`serve/compact.Compactor`), bottom-up,
every container hashed in Python: ~30 µs per object, which would make `check` on a large
dump slower than kstatus; this walks top-down and lets orjson (Rust) encode each part, so an
equal `status` is found in one step and only parts not seen before are walked into (~5 µs
per object). The object itself and its `metadata` are never shared (they hold its name and
uid); their repeated strings (kind, apiVersion, namespace, timestamps) are.

Two parts are shared only when equal as a reader sees them, exactly: equal orjson encodings
(same keys in the same order, `true` is not `1`, `1` is not `1.0`, `0.0` is not `-0.0`), and
where the encoding holds a `null`, equal by `==` as well (orjson writes NaN and infinities as
`null`). That is exact for what a decoder makes (dicts, lists, strings, numbers, booleans,
None: a tuple would pass for a list). A part orjson cannot encode (a key that is not a
string, from YAML; an integer beyond 64 bits; bytes) is kept as it is.

Sharing is only sound because nothing that reads the dump changes an object
(tests/test_share.py runs the analysis and `explain` on dumps whose shared parts refuse any
change).
"""

from __future__ import annotations

from typing import Any

import orjson

# metadata's strings that repeat across objects (the others, name, uid, resourceVersion and
# generateName, rarely do: a table entry each would cost more than it saves)
_REPEATED = frozenset(("namespace", "creationTimestamp", "deletionTimestamp"))
_SHORT = 64  # characters: longer strings (messages, URLs with names in them) seldom repeat
_encoded, _Unencodable = orjson.dumps, orjson.JSONEncodeError


class Sharer:
    """One dump's table of parts seen: `share` each object as it is read, then drop it."""

    def __init__(self) -> None:
        # by the hash of their encoding; the first part of each encoding wins its slot
        self._parts: dict[int, dict[Any, Any] | list[Any]] = {}
        self._strings: dict[str, str] = {}

    def share(self, obj: dict[str, Any]) -> dict[str, Any]:
        """`obj`, changed in place to hold the parts seen before instead of its own (the
        caller owns it: nothing else may hold its parts)."""
        strings = self._strings
        for key, value in obj.items():
            kind = type(value)
            if kind is dict:
                if key == "metadata":
                    self._metadata(value)
                else:
                    obj[key] = self._part(value)
            elif kind is list:
                obj[key] = self._part(value)
            elif kind is str:
                obj[key] = strings.setdefault(value, value)
        return obj

    def _metadata(self, metadata: dict[str, Any]) -> None:
        strings = self._strings
        for key, value in metadata.items():
            kind = type(value)
            if kind is dict or kind is list:
                metadata[key] = self._part(value)
            elif kind is str and key in _REPEATED:
                metadata[key] = strings.setdefault(value, value)

    def _part(self, value: dict[Any, Any] | list[Any]) -> Any:
        try:
            encoded = _encoded(value)
        except _Unencodable:
            return value
        parts = self._parts
        slot = hash(encoded)
        held = parts.get(slot)
        if held is not None:
            # (a part with another encoding of the same hash is kept as it is)
            if _encoded(held) == encoded and (b"null" not in encoded or held == value):
                return held
            return value
        parts[slot] = value
        # not seen before: what it holds may have been
        strings = self._strings
        if type(value) is dict:
            for key, item in value.items():
                kind = type(item)
                if kind is dict or kind is list:
                    value[key] = self._part(item)
                elif kind is str and len(item) <= _SHORT:
                    value[key] = strings.setdefault(item, item)
        else:
            for position, item in enumerate(value):
                kind = type(item)
                if kind is dict or kind is list:
                    value[position] = self._part(item)
                elif kind is str and len(item) <= _SHORT:
                    value[position] = strings.setdefault(item, item)
        return value
