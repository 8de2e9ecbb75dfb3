"""kubectl's YAML List read a block of items at a time (`sources/fastyaml.py`) gives what the
strict whole read (`parse.parse_yaml`) gives: the same report and `explain` for every
example, the same values or the same error (with its line number) for hostile input, cut
into blocks at every item start it could be cut at."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import yaml

from eventmesh_health.sources import fastyaml
from eventmesh_health.sources.files import read_dump
from eventmesh_health.sources.parse import ParseError, parse_yaml
from tests.test_hostile_input import base_objects
from tests.test_lean_read import (
    EXAMPLES,
    FOLDERS,
    block_reads,
    explained,
    outcome,
    random_value,
    report_of,
)


class _KubectlDumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
    """Writes as kubectl's go-yaml v2 does: keys sorted, sequences in mappings not
    indented (as PyYAML does too), strings with a newline as literal blocks
    (yaml/go-yaml v2.4.0 encode.go: `strings.Contains(s, "\\n")` → LITERAL style)."""


def _string(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    # (PyYAML falls back to double quotes where a literal block cannot hold the string)
    return dumper.represent_scalar("tag:yaml.org,2002:str", value,
                                   style="|" if "\n" in value else None)


_KubectlDumper.add_representer(str, _string)


def kubectl_yaml(objects: list[Any]) -> str:
    """What `kubectl get -o yaml` prints: a v1 List, items at column 0."""
    return yaml.dump({"apiVersion": "v1", "items": objects, "kind": "List",
                      "metadata": {"resourceVersion": ""}},
                     Dumper=_KubectlDumper, allow_unicode=True, sort_keys=True)


@pytest.fixture
def fast_reads(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether the block reader read each YAML file (else the strict reader did)."""
    return block_reads(monkeypatch, "_read_kubectl_yaml")


@pytest.mark.parametrize("block", [fastyaml.BLOCK, 700])
@pytest.mark.parametrize("example", FOLDERS)
def test_examples_as_kubectl_yaml_give_the_same_report(
    example: str, block: int, tmp_path: Path, fast_reads: list[bool],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(fastyaml, "BLOCK", block)
    plain = read_dump(EXAMPLES / example, lean=False)
    info = [plain.info] if plain.info is not None else []
    path = tmp_path / "mesh.yaml"
    path.write_text(kubectl_yaml(info + plain.objects))
    expected = report_of(plain)
    lean = read_dump(path)
    assert fast_reads == [True]
    assert report_of(lean) == expected
    assert explained(lean) == explained(plain)
    assert report_of(read_dump(path, lean=False)) == expected


# --- what the block reader must not read differently ---------------------------------------

_MARK = "  kind: Trigger\n"  # a line of an item (indented by 2 under its `- `)


def _poisoned(text: str) -> dict[str, str]:
    """kubectl YAML of a mesh with one thing that is not kubectl's layout, or that a block
    could read differently from the whole file if the reader were not careful."""
    assert _MARK in text and text.startswith("apiVersion: v1\nitems:\n- ")

    def add(lines: str) -> str:
        return text.replace(_MARK, _MARK + lines, 1)

    def last(lines: str) -> str:  # at the end of the item (before the next item's `- `)
        end = text.index("\n- ", text.index(_MARK)) + 1
        return text[:end] + lines + text[end:]

    tail = "kind: List\nmetadata:\n  resourceVersion: ''\n"
    assert text.endswith(tail)
    return {
        # read alike: the block reader reads them itself
        "anchor-unused": add("  x: &a 1\n"),
        "tag-in-item": add("  x: !!str 12\n"),
        "comment-indented": add("  # a comment\n"),
        "dash-in-block-scalar": add("  x: |\n    a\n    - b\n"),
        "dash-ends-block-scalar": last("  x: |\n    a\n- b\n"),  # `- b`: an item of its own
        "keep-chomping": last("  x: |+\n    a\n\n\n"),
        "keep-chomping-inside": add("  x: |+\n    a\n\n\n"),
        "folded-plain": add("  x: a\n    - b\n"),
        "just-deep-enough": add("  x: " + "[" * 97 + "]" * 97 + "\n"),
        "int64-max": add("  x: 9223372036854775807\n"),
        "int64-min": add("  x: [-9223372036854775808]\n"),
        "keys-not-strings": add("  x:\n    1: a\n    false: b\n    null: c\n    '1': d\n"),
        "non-ascii": add("  x: é😀\n"),
        "empty-line": add("\n"),
        "no-final-newline": text[:-1],
        "leading-comments": "# source: somewhere\n#\n" + text,
        # a problem the strict reader reports, or a layout the block reader leaves to it
        "duplicate-key": add("  kind: Pod\n"),
        "duplicate-nested": add("  x:\n    a: 1\n    a: 2\n"),
        "alias": add("  x: &a [1]\n  y: *a\n"),
        "alias-across-items": add("  x: &a [1]\n- *a\n"),
        "alias-at-top": text.replace("items:\n", "items: &i\n", 1) + "other: *i\n",
        "tag-at-top": text.replace("items:\n", "items: !!seq\n", 1),
        "one-too-deep": add("  x: " + "[" * 98 + "]" * 98 + "\n"),
        "huge-depth": add("  x: " + "[" * 5000 + "]" * 5000 + "\n"),
        "deep-blocks": add("".join(f"{'  ' * (d + 1)}k{d}:\n" for d in range(120))
                           + "  " * 122 + "v: 1\n"),
        "int-beyond-int64": add("  x: 9223372036854775808\n"),
        "int-below-int64": add("  x: [-9223372036854775809]\n"),
        "hex-beyond-int64": add("  x: 0xFFFFFFFFFFFFFFFFF\n"),
        "control": add("  x: \"a\x01b\"\n"),
        "tab": add("  x:\ta\n"),
        "tab-in-string": add("  x: \"a\tb\"\n"),
        "crlf": text.replace("\n", "\r\n"),
        "cr-once": add("  x: a\rb\n"),
        "bom": "\ufeff" + text,
        "bom-inside": add("  x: a\ufeffb\n"),
        "nel": add("  x: a\x85- b\n"),
        "line-separator": add("  x: a\u2028- b\n"),
        "quoted-spanning-items": add("  x: \"a\n- b\"\n"),
        "flow-spanning-items": add("  x: [a,\n- b]\n"),
        "flow-at-column-0": add("  x: [a,\nb]\n"),
        "column-0-key": add("x: 1\n"),
        "column-0-comment": add("# a comment\n"),
        "lone-dash": add("-\n  a: 1\n"),
        "document-start": "---\n" + text,
        "document-inside": add("---\n"),
        "document-end": add("...\n"),
        "second-document": text + "---\nkind: Pod\n",
        "directive": "%YAML 1.2\n---\n" + text,
        "comment-then-directive": "# c\n%YAML 1.2\n---\n" + text,
        "comment-then-document": "# c\n---\n" + text,
        "comment-without-end": "# c" + " " * 70000,
        "items-twice": text + "items: []\n",
        "kind-twice": text + "kind: List\n",
        "not-a-list": text.replace("kind: List", "kind: Thing"),
        "no-tail": text[:-len(tail)],
        "other-key-in-tail": text + "other: 1\n",
        "items-indented": text.replace("\n- ", "\n  - ").replace("\n  ", "\n    ")
                          .replace("items:\n    - ", "items:\n  - ", 1),
        "empty-items": "apiVersion: v1\nitems: []\n" + tail,
        "binary": add("  x: \x00\n"),
        "invalid-utf8": "",  # written as bytes below
    }


def _three() -> list[Any]:
    """Two objects around a Trigger: the poison in the middle item."""
    objects = base_objects()
    trigger = next(o for o in objects if o["kind"] == "Trigger")
    return [objects[0], trigger, objects[1]]


_SMALL = kubectl_yaml(_three())
_BASE = kubectl_yaml(base_objects())
CASES = sorted(_poisoned(_SMALL))
VOUCHED = {"anchor-unused", "tag-in-item", "comment-indented", "dash-in-block-scalar",
           "dash-ends-block-scalar", "keep-chomping", "folded-plain", "just-deep-enough",
           "int64-max", "non-ascii", "empty-line", "no-final-newline", "keep-chomping-inside",
           "int64-min", "keys-not-strings", "leading-comments"}


def _write(path: Path, case: str, text: str) -> Path:
    if case == "invalid-utf8":
        path.write_bytes(text.replace(_MARK, _MARK + "  x: a", 1).encode() + b"\xff\n")
    else:
        path.write_bytes(text.encode())
    return path


def _strict(path: Path) -> Any:
    try:
        return parse_yaml(path.read_text(encoding="utf-8"))
    except ParseError as err:
        return ("error", str(err), err.line)
    except UnicodeDecodeError:
        return ("not UTF-8",)


@pytest.mark.parametrize("case", CASES)
def test_every_cut_reads_alike(case: str, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Three items with the poison in one, read with blocks of every size from 1 byte to
    the whole file: whatever the block reader vouches for is the strict reader's document."""
    path = _write(tmp_path / "mesh.yaml", case, _poisoned(_SMALL)[case])
    strict = _strict(path)
    vouched = []
    for block in range(1, path.stat().st_size + 2, 3):
        monkeypatch.setattr(fastyaml, "BLOCK", block)
        items: list[Any] = []
        skeleton = fastyaml.read_list(path, items.append)
        vouched.append(skeleton is not None)
        if skeleton is not None:
            assert strict == [{**skeleton, "items": items}], block
    # (a List of another kind is read alike too: `files` then reads it as one object)
    assert set(vouched) == {case in VOUCHED or case == "not-a-list"}


@pytest.mark.parametrize("block", [fastyaml.BLOCK, 700])
@pytest.mark.parametrize("case", CASES)
def test_hostile_input_gives_the_same_report_or_error(
    case: str, block: int, tmp_path: Path, fast_reads: list[bool],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The whole base mesh with the poison, through `read_dump` and the analysis: the
    same report, or the same one-line error with the same line number."""
    monkeypatch.setattr(fastyaml, "BLOCK", block)
    path = _write(tmp_path / "mesh.yaml", case, _poisoned(_BASE)[case])
    plain, lean = outcome(path, lean=False), outcome(path, lean=True)
    assert lean == plain
    assert fast_reads == [case in VOUCHED]


_ALPHABET = ["[", "]", "{", "}", '"', "'", "\\", ":", ",", "a", "\n", "é", "- ", "#", "&",
             "*", "!", "|", ">", "---", "...", " ", "%", "?", "@", "`", "\u2028", "\t", "0x1"]


def _value(rng: random.Random, depth: int) -> Any:
    return random_value(rng, _ALPHABET, 8, depth)


@pytest.mark.parametrize("seed", range(20))
def test_random_values_in_items_read_alike(seed: int, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Strings full of YAML indicators, quotes, newlines (literal blocks), nesting, in
    fields the analysis does not read and in one it does, cut into small blocks: the same
    report as the strict reader."""
    monkeypatch.setattr(fastyaml, "BLOCK", 500)
    rng = random.Random(seed)
    objects = base_objects()
    for obj in rng.sample(objects, 10):
        obj["x"] = _value(rng, 0)
        obj.setdefault("status", {})["y"] = _value(rng, 0)
    path = tmp_path / "mesh.yaml"
    path.write_text(kubectl_yaml(objects))
    assert outcome(path, lean=True) == outcome(path, lean=False)
    items: list[Any] = []
    skeleton = fastyaml.read_list(path, items.append)
    if skeleton is not None:
        assert _strict(path) == [{**skeleton, "items": items}]


def test_the_file_is_parsed_a_block_at_a_time_with_keys_shared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fastyaml, "BLOCK", 2000)
    parsed: list[int] = []
    real = fastyaml._parse

    def spy(text: bytes) -> Any:
        parsed.append(len(text))
        return real(text)

    monkeypatch.setattr(fastyaml, "_parse", spy)
    path = tmp_path / "mesh.yaml"
    path.write_text(_BASE)
    items: list[Any] = []
    assert fastyaml.read_list(path, items.append) is not None
    assert len(parsed) > 5 and max(parsed) < 4000 < path.stat().st_size
    assert _strict(path)[0]["items"] == items
    # each key one string, whichever object it is in
    first, second = (next(iter(item["metadata"])) for item in items[:2])
    assert first == second and first is second
