"""Share the strings of the watch cache: one copy of each short string, however many objects
hold it.

JSON parsing makes a new string for every value: 550,000 cached objects repeat "True",
"Ready", the same apiVersions, kinds, labels, condition reasons and timestamps millions of
times, each copy 50-80 bytes. Interned, the cache keeps one of each. Names, uids and
resourceVersions are unique and gain nothing, but cost nothing either (an interned string
is freed with its last reference). Long strings (messages) are left alone: rarely repeated.
"""

from __future__ import annotations

import sys
from typing import Any, TypeVar, cast

SHORT = 128  # characters; longer strings are kept as they are
T = TypeVar("T")


def compact(value: T) -> T:
    """`value` rebuilt with its short strings (keys and values) interned."""
    return cast(T, _compact(value))


def _compact(value: Any) -> Any:
    if isinstance(value, str):
        return sys.intern(value) if len(value) <= SHORT else value
    if isinstance(value, dict):
        return {(sys.intern(k) if isinstance(k, str) and len(k) <= SHORT else k): _compact(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_compact(item) for item in value]
    return value
