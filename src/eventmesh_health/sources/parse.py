"""Turn the text of one dump file into documents, strictly.

A dump may come from anyone, so the reader refuses what Kubernetes objects never need and
what could make a small file expensive or ambiguous:

- YAML is read as YAML 1.2 by `yaml-rs` (Rust): an unquoted `2020-02-30` stays the string
  kubectl meant, not a date (PyYAML's YAML 1.1 turns it into one, or fails); a duplicated
  key is an error, never "the last one wins"; aliases are refused (kubectl never writes
  them, and chained ones are the "billion laughs"); nesting is bounded by the parser.
  It is also ~16x faster than PyYAML's C loader on a 38 MB `kubectl get -o yaml` dump
  (see benchmarks/bench_yaml.py).
- JSON is read by the standard library with duplicate keys reported, nesting bounded, and
  integers of more than 4300 digits refused (Python's own limit).

Every failure is a `ParseError` with a one-line message; nothing here raises anything else.
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml_rs

# Kubernetes objects are shallow (a Deployment's pod template is about 12 levels); this is
# generous and keeps the standard library's recursive decoder far from Python's limit.
MAX_DEPTH = 100
# YAML allows no C0 control character but tab, LF and CR (and no DEL) in a stream.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_INT64_PROBLEM = "an integer beyond 64 bits (Kubernetes stores int64)"
_NO_ALIASES = yaml_rs.AliasLimits(max_total_replayed_events=0)


class ParseError(Exception):
    """The text is not a usable dump document: `line` (1-based) where known."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


def parse_yaml(text: str) -> list[Any]:
    """The documents of a (multi-document) YAML stream; empty documents are None."""
    binary = _CONTROL.search(text)
    if binary is not None:
        line = text.count("\n", 0, binary.start()) + 1
        raise ParseError(f"invalid YAML: control character {binary.group()!r} "
                         "(a binary file?)", line)
    try:
        loaded = yaml_rs.loads(text, parse_datetime=False, alias_limits=_NO_ALIASES)
    except yaml_rs.YAMLDecodeError as err:
        raise _yaml_error(str(err)) from None
    except (ValueError, RecursionError, OverflowError) as err:
        raise ParseError(_first_line(str(err)) or type(err).__name__) from None
    documents = _split_documents(text, loaded)
    for document in documents:
        if isinstance(document, dict | list):
            _check_depth(document)
        elif type(document) is int:
            _check_depth([document])
    return documents


def parse_json(text: str) -> Any:
    try:
        document = json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as err:
        raise ParseError(f"invalid JSON: {err.msg}", err.lineno) from None
    except _DuplicateKey as err:
        raise ParseError(f"invalid JSON: duplicate key {err.key!r}") from None
    except RecursionError:
        raise ParseError("invalid JSON: nested too deeply") from None
    except ValueError as err:  # an integer beyond Python's 4300-digit limit, so beyond int64
        raise ParseError(f"invalid JSON: {_INT64_PROBLEM}" if "digits" in str(err)
                         else f"invalid JSON: {_first_line(str(err))}") from None
    _check_depth([document])
    return document


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key[:100])
            seen.add(key)
    return result


def _split_documents(text: str, loaded: Any) -> list[Any]:
    """yaml-rs returns one document as itself and several as a list: tell them apart by
    whether the stream has more than one document start."""
    if isinstance(loaded, list) and _several_documents(text):
        return loaded
    return [loaded]


def _several_documents(text: str) -> bool:
    starts = 0
    for line in text.splitlines():
        if line.startswith("---") and (len(line) == 3 or line[3] in " \t"):
            starts += 1
            if starts > 1:
                return True
        elif starts == 0 and line.strip() and not line.startswith(("#", "%")):
            starts = 1  # content before the first `---` is the first document
    return False


def _check_depth(document: Any) -> None:
    """Nesting within MAX_DEPTH and integers within int64 (what Kubernetes stores; a
    5000-digit one cannot even be printed). Iteratively, so a hostile depth cannot exhaust
    Python's stack while we look."""
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ParseError(f"nested more than {MAX_DEPTH} levels deep")
        items = value.values() if isinstance(value, dict) else value
        for item in items:
            if isinstance(item, dict | list):
                stack.append((item, depth + 1))
            elif type(item) is int and not _INT64_MIN <= item <= _INT64_MAX:
                raise ParseError(_INT64_PROBLEM)


def _yaml_error(message: str) -> ParseError:
    first = _first_line(message)
    if "alias" in first:
        return ParseError("invalid YAML: aliases (*name) are not accepted in a dump "
                          "(Kubernetes objects never need them)")
    line = None
    marker = " at line "
    if marker in first:
        head, _, rest = first.partition(marker)
        number = rest.split(",")[0].split()[0]
        if number.isdigit():
            line = int(number)
        detail = next((x.strip() for x in reversed(message.splitlines())
                       if x.strip() and not x.lstrip().startswith(("|", "^"))
                       and not x.strip()[0].isdigit()), "")
        first = detail or head
    return ParseError(f"invalid YAML: {first[:200]}", line)


def _first_line(message: str) -> str:
    return message.strip().splitlines()[0][:200] if message.strip() else ""
