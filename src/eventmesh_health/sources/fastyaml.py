"""Read a `kubectl get -o yaml` List a block of items at a time, or say it cannot.

`parse.parse_yaml` reads any YAML stream, but whole: the text and every whole object live
at once (≈8 KiB per kubectl object at peak). This reader takes the one layout kubectl
prints and hands the items over a block (~4 MiB of text) at a time, each block parsed by
the same parser (yaml-rs, same options), so the caller can slim each object at once.

kubectl's layout: `kubectl get` puts the objects in a List
(kubernetes/kubectl v0.34.0 pkg/cmd/get/get.go, `printGeneric`: `"kind": "List",
"apiVersion": "v1", "metadata": {"resourceVersion": ...}`), and its YAML printer
(kubernetes/cli-runtime v0.34.0 pkg/printers/yaml.go) writes it with sigs.k8s.io/yaml
v1.6.0, JSON to go.yaml.in/yaml/v2: map keys sorted, indentation 2, and a sequence that is
a mapping's value not indented (yaml/go-yaml v2.4.0 emitterc.go
`yaml_emitter_emit_block_sequence_item`: `increase_indent(..., mapping_context &&
!indention)`). So the file is

    apiVersion: v1
    items:
    - apiVersion: ...        each item starts with `- ` at column 0,
      kind: ...              everything in it is indented (or an empty line)
    kind: List
    metadata:
      resourceVersion: ""

In YAML 1.2 the entries of that `items` sequence are parsed exactly as those of a sequence
standing alone at column 0 (`seq-spaces(0, block-out)` = -1, as for a top-level sequence:
entries `c-l-block-seq-entry(0)` either way), and an entry ends at the next line that is
not indented. So a run of whole entries, cut at `- ` at column 0, parses alone to the same
values as within the file. The reader makes sure it is such a run, and otherwise returns
None so that the caller reads the file with `parse_yaml`, which then reports the precise
problem (with its line number):

- only three kinds of lines between `items:` and the rest of the List: `- ` at column 0
  (an item starts), an indented line, an empty line. Anything else at column 0 (a document
  marker `---` or `...`, a directive, a comment, a lone `-`, a second key of the List) sends
  the file to `parse_yaml`; after the items only `kind:` and `metadata:` may start a line;
- no tab, CR, BOM, NEL, line or paragraph separator, nor any control character anywhere:
  some are line breaks to some parser, the others `parse_yaml` refuses;
- each block must parse (so a quoted scalar or a flow collection left open at a cut, an
  alias, a duplicate key, too deep a nesting are all `parse_yaml`'s to report) to exactly
  one item per `- ` at column 0 (nothing spans an item start);
- nesting and integers are checked as `parse_yaml` checks them, at the items' own depth
  (`_checked`, which also shares the keys' strings);
- the List around the items is parsed strictly, on its own, with `items: []`: a second
  `items` is a duplicate key there as in the file.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import yaml_rs

from eventmesh_health.sources.parse import MAX_DEPTH, ParseError, parse_yaml

BLOCK = 4 * 2**20
_HEAD = b"apiVersion: v1\nitems:\n"
_ITEM = b"\n- "  # a line that starts an item
# Not one of the three kinds of lines in the items: where they end, or the file is not
# kubectl's.
_OTHER_LINE = re.compile(rb"\n(?=[^ \n])(?!- )")
_TAIL_LINE = re.compile(rb"\n(?=[^ \n])(?!kind:|metadata:)")
# Bytes that are sure: LF, printable ASCII, and those of other UTF-8 characters, but for
# the few below. (Tab, CR, the other C0 controls and DEL are not.)
_SURE_BYTES = b"\n" + bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100))
# NEL, LS and PS (line breaks to YAML 1.1), and a BOM, in UTF-8.
_UNSURE_CHARACTERS = (b"\xc2\x85", b"\xe2\x80\xa8", b"\xe2\x80\xa9", b"\xef\xbb\xbf")
_NO_ALIASES = yaml_rs.AliasLimits(max_total_replayed_events=0)
_ITEMS_DEPTH = 2  # what `parse_yaml` counts for the List's items: the List 1, items 2
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


class _NotSure(Exception):
    """This reader cannot vouch for the file: read it with `parse_yaml`."""


def read_list(path: Path, take: Callable[[Any], None]) -> dict[str, Any] | None:
    """Call `take` on every item of the kubectl List at `path`, in order, and return the
    List without its items; None when the file is not in kubectl's layout or holds anything
    this reader cannot vouch `parse_yaml` would read alike (some items may then have been
    taken already: the caller starts again)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block: parse_yaml says so
            return None
        with path.open("rb") as file:
            return _read(file, take)
    except (_NotSure, OSError):
        return None


def _read(file: BinaryIO, take: Callable[[Any], None]) -> dict[str, Any]:
    buffer, start = file.read(BLOCK), 0
    while True:  # past comment lines before the List (our examples cite their sources there)
        line_end = buffer.find(b"\n", start) if buffer.startswith(b"#", start) else start
        if line_end >= 0 and len(buffer) >= line_end + len(_HEAD) + 2:
            if line_end == start:
                break
            start = line_end + 1
            continue
        more = file.read(BLOCK)
        if not more:
            raise _NotSure
        buffer += more
    if not buffer.startswith(_HEAD + b"- ", start):
        raise _NotSure
    buffer = buffer[start + len(_HEAD):]  # from the first item's `- `
    keys: dict[str, str] = {}  # (distinct keys: no more than the text has)
    at_end = False
    while True:
        if not at_end:
            more = file.read(BLOCK)
            at_end = not more
            buffer += more
        if at_end:
            end = _OTHER_LINE.search(buffer)
            if end is None:
                raise _NotSure  # no `kind: List`: not kubectl's
            _take_block(buffer[:end.start() + 1], take, keys)
            return _skeleton(buffer[end.start() + 1:])
        cut = buffer.rfind(_ITEM)
        if cut < 0:
            continue  # one item longer than a block: read on
        _take_block(buffer[:cut + 1], take, keys)
        buffer = buffer[cut + 1:]


def _take_block(text: bytes, take: Callable[[Any], None], keys: dict[str, str]) -> None:
    """Parse `text`, whole items each starting with `- ` and ending with a newline."""
    if _unsure(text) or _OTHER_LINE.search(text):
        raise _NotSure
    items = _parse(text)
    if not isinstance(items, list) or len(items) != text.count(_ITEM) + 1:
        raise _NotSure
    _checked(items, _ITEMS_DEPTH, keys)
    for item in items:
        take(item)


def _checked(value: dict[Any, Any] | list[Any], depth: int,
             keys: dict[str, str]) -> Any:
    """`value` if `parse_yaml`'s depth check would pass it at `depth` (nesting within MAX_DEPTH,
    integers within int64), its maps made again with keys shared: yaml-rs makes a new string
    of every key of every object, ~1.5 KiB per synthetic object (orjson shares them itself).
    Lists are changed in place."""
    if depth > MAX_DEPTH:
        raise _NotSure
    if type(value) is dict:
        shared = {}
        for key, item in value.items():
            kind = type(item)
            if kind is dict or kind is list:
                item = _checked(item, depth + 1, keys)
            elif kind is int and not _INT64_MIN <= item <= _INT64_MAX:
                raise _NotSure
            shared[keys.setdefault(key, key) if type(key) is str else key] = item
        return shared
    for position, item in enumerate(value):
        kind = type(item)
        if kind is dict or kind is list:
            value[position] = _checked(item, depth + 1, keys)
        elif kind is int and not _INT64_MIN <= item <= _INT64_MAX:
            raise _NotSure
    return value


def _unsure(text: bytes) -> bool:
    """Whether `text` holds a character that may be a line break, or is refused, anywhere."""
    if text.translate(None, _SURE_BYTES):
        return True
    return not text.isascii() and any(c in text for c in _UNSURE_CHARACTERS)


def _parse(text: bytes) -> Any:
    try:
        return yaml_rs.loads(text.decode("utf-8"), parse_datetime=False,
                             alias_limits=_NO_ALIASES)
    except (yaml_rs.YAMLDecodeError, ValueError, RecursionError, OverflowError):
        raise _NotSure from None  # (UnicodeDecodeError is a ValueError)


def _skeleton(tail: bytes) -> dict[str, Any]:
    """The List around the items, from the rest of the file after them."""
    if (not tail.startswith((b"kind:", b"metadata:")) or _unsure(tail)
            or _TAIL_LINE.search(tail)):
        raise _NotSure
    try:
        documents = parse_yaml("apiVersion: v1\nitems: []\n" + tail.decode("utf-8"))
    except (ParseError, ValueError):
        raise _NotSure from None
    if len(documents) != 1 or not isinstance(documents[0], dict):
        raise _NotSure
    document: dict[str, Any] = documents[0]
    if document.get("items") != []:
        raise _NotSure
    return document
