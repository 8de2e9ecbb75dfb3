"""Read a `kubectl get -o json` List fast and a block at a time, or say it cannot.

`parse.parse_json` (the standard library with a hook per object and a walk over the
result) is the reader every JSON file can rely on; it costs ~70 µs and ~5 KiB per
kubectl object, and it holds the whole text and every whole object at once. This reader
takes the one layout kubectl prints (`{`, `"apiVersion": "v1"`, `"items": [` with each item
indented by 8 spaces, 4-space indentation throughout) and hands the items over a block
(~4 MiB of text) at a time, so the caller can slim each object and drop the rest while
reading. Each block is decoded by orjson (Rust).

It must accept exactly what `parse_json` accepts and decode it to the same values, so for
anything it is not sure of it returns None and the caller reads the file with
`parse_json`, which then reports the precise problem. Where orjson differs:

- duplicate keys: orjson keeps the last one silently. A block's text has one `:` per key
  plus those inside strings; re-encoding the decoded block has one per key that survived
  plus the same ones inside strings, unless a string wrote a colon as `\\u003a`. So equal
  counts (and no `\\u003` in the text) prove there was no duplicate.
- integers beyond int64: orjson makes floats of those beyond uint64 and keeps the others.
  Any run of 19 digits in the text (where int64 ends) sends the file to `parse_json`.
- nesting: orjson allows 1024 levels, `parse_json` MAX_DEPTH; the height of each block is
  measured on its re-encoding with the strings taken out.
- NaN/Infinity, lone surrogates, invalid UTF-8, a BOM: orjson refuses them, so they go to
  `parse_json` too.

A block boundary is a line `        },` followed by a line `        {`; a false one (an
object inside an item laid out at that indentation) cannot decode as whole values, so it
sends the file to `parse_json` as well: a block that decodes as `[<block>]` is a run of
complete items, whatever is in them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from eventmesh_health.sources.parse import MAX_DEPTH

BLOCK = 4 * 2**20
# What kubectl prints first (keys sorted, 4-space indentation): the items are then those of
# the List itself, at the top level.
_HEAD = b'{\n    "apiVersion": "v1",\n    "items": [\n'
_BETWEEN = b"\n        },\n        {"  # the end of one item and the start of the next
_LAST = b"\n        }\n    ]"  # the end of the last item and of the items
_DIGITS = bytes.maketrans(b"0123456789", b"0000000000")
_INT64_DIGITS = b"0" * 19  # int64 has 19 digits: anything this long might not fit
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b'{}[]"')
_PARENS = bytes.maketrans(b"{}[]", b"()()")  # decoded, the kinds of brackets cannot mix
# depth of a List item in `parse_json`'s count: [document] > List > items > item
_ITEM_DEPTH = 4


class _NotSure(Exception):
    """This reader cannot vouch for the file: read it with `parse_json`."""


def read_list(path: Path, take: Callable[[Any], None]) -> dict[str, Any] | None:
    """Call `take` on every item of the kubectl List at `path`, in order, and return the
    List without its items; None when the file is not in kubectl's layout or holds anything
    this reader does not decode exactly as `parse_json` would (some items may then have
    been taken already: the caller starts again)."""
    try:
        with path.open("rb") as file:
            return _read(file, take)
    except (_NotSure, orjson.JSONDecodeError, OSError, UnicodeError):
        return None


def _read(file: BinaryIO, take: Callable[[Any], None]) -> dict[str, Any]:
    buffer = file.read(max(BLOCK, len(_HEAD)))
    if not buffer.startswith(_HEAD):
        raise _NotSure
    buffer = buffer[len(_HEAD) - 1:]  # from the newline before the first item
    at_end = False
    while True:
        if not at_end:
            more = file.read(BLOCK)
            at_end = not more
            buffer += more
        if at_end:
            end = buffer.rfind(_LAST)
            if end < 0:
                raise _NotSure
            _take_block(buffer[:end + 10], take)  # through the last item's `}`
            return _skeleton(buffer[end + 10:])
        cut = buffer.rfind(_BETWEEN)
        if cut < 0:
            continue  # one item longer than a block: read on
        _take_block(buffer[:cut + 10], take)
        buffer = buffer[cut + 11:]  # from the newline before the next item's `{`


def _take_block(text: bytes, take: Callable[[Any], None]) -> None:
    items = _decode(b"[" + text + b"]", _ITEM_DEPTH - 1)
    for item in items:
        take(item)


def _skeleton(tail: bytes) -> dict[str, Any]:
    """The List around the items: kubectl's head, no items, and the rest of the file."""
    document = _decode(_HEAD.rstrip(b"\n") + tail, 2)
    if not isinstance(document, dict) or document.get("items") != []:
        raise _NotSure
    return document


def _decode(text: bytes, depth: int) -> Any:
    """`text` decoded, if `parse_json` would decode it to the same value; `depth` is what
    `parse_json` counts for the outermost value here."""
    if b"\\u003" in text:  # `\u003a` or `\u003A` (and `\u0030`..`\u003f`, all rare)
        raise _NotSure
    if _INT64_DIGITS in text.translate(_DIGITS):
        raise _NotSure
    value = orjson.loads(text)
    encoded = orjson.dumps(value)
    if encoded.count(b":") != text.count(b":"):
        raise _NotSure  # a duplicate key, dropped by orjson
    if depth - 1 + _height(encoded) > MAX_DEPTH:
        raise _NotSure
    return value


def _height(encoded: bytes) -> int:
    """How deeply containers nest in compact JSON: its brackets outside strings, as `(`
    and `)`, with the innermost pairs taken away (one level per pass) until none is left."""
    unescaped = encoded.replace(b"\\\\", b"").replace(b'\\"', b"")
    # Two quotes in a row, once all but brackets and quotes are gone, are an empty string or
    # the end of one and the start of the next with nothing between: no bracket either way.
    brackets = unescaped.translate(_PARENS, _NOT_BRACKETS).replace(b'""', b"")
    if b'"' in brackets:  # strings with brackets in them
        brackets = b"".join(brackets.split(b'"')[::2])
    height = 0
    while brackets:
        brackets = brackets.replace(b"()", b"")
        height += 1
        if height > MAX_DEPTH:
            raise _NotSure
    return height
