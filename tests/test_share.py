"""A dump's equal parts kept once as it is read (sources/share.py): which parts are shared,
only strictly equal ones, never an object or its metadata; the lean reading's objects are
those of the plain reading; and nothing that reads a dump changes a shared part (the
analysis and `explain` run on dumps whose shared parts refuse any change)."""

from __future__ import annotations

import copy
import math
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from eventmesh_health.sources.files import read_dump
from eventmesh_health.sources.share import Sharer
from tests.rulecases import cases, load_case
from tests.test_compact import _frozen, _pod
from tests.test_lean_read import EXAMPLES, FOLDERS, explained, kubectl_json, report_of

sys.path.insert(0, str(Path(__file__).parent.parent / "benchmarks"))
import synthetic


def _shared(*objects: dict[str, Any]) -> list[dict[str, Any]]:
    sharer = Sharer()
    return [sharer.share(orjson.loads(orjson.dumps(o))) for o in objects]


def test_equal_parts_are_kept_once_and_the_objects_stay_equal() -> None:
    originals = [_pod("p1"), _pod("p2")]
    one, two = _shared(*originals)
    assert orjson.dumps([one, two]) == orjson.dumps(originals)  # same content, same order
    assert one["status"] is two["status"]
    assert one["metadata"]["labels"] is two["metadata"]["labels"]
    assert one["kind"] is two["kind"] and one["metadata"]["namespace"] is \
        two["metadata"]["namespace"]
    # the object and its metadata hold its name and uid: never shared
    assert one is not two and one["metadata"] is not two["metadata"]


def test_parts_of_parts_seen_before_are_shared() -> None:
    one, two = _shared(_pod("p1", extra={"n": 1}), _pod("p2", extra={"n": 2}))
    assert one["status"] is not two["status"]
    assert one["status"]["conditions"] is two["status"]["conditions"]
    assert one["status"]["conditions"][0]["type"] is two["status"]["conditions"][0]["type"]


@pytest.mark.parametrize(("first", "second"), [
    (1, True), (1, 1.0), (0.0, -0.0), (None, math.nan), (None, math.inf),
    ("1", 1),
])
def test_only_strictly_equal_parts_are_shared(first: Any, second: Any) -> None:
    sharer = Sharer()
    one = sharer.share(_pod("p1", extra={"n": first}))
    two = sharer.share(_pod("p2", extra={"n": second}))
    assert one["status"] is not two["status"]
    assert type(two["status"]["n"]) is type(second)
    assert str(two["status"]["n"]) == str(second)


def test_key_order_is_kept_and_tells_parts_apart() -> None:
    first = _pod("p1", extra={"a": 1, "b": 2})
    second = _pod("p2")
    second["status"] = {"conditions": second["status"]["conditions"], "b": 2, "a": 1}
    first["status"] = {"conditions": first["status"]["conditions"], "a": 1, "b": 2}
    one, two = _shared(first, second)
    assert one["status"] is not two["status"]
    assert list(two["status"]) == ["conditions", "b", "a"]


def test_what_orjson_cannot_encode_is_kept_as_it_is() -> None:
    odd = {1: "a", "big": 2**70}  # (YAML's non-string keys; integers past 64 bits)
    pods = [_pod(f"p{i}", extra={"odd": copy.deepcopy(odd)}) for i in range(2)]
    sharer = Sharer()
    one, two = (sharer.share(p) for p in pods)
    assert one["status"] == two["status"] == {**_pod("x")["status"], "odd": odd}
    assert one["status"] is not two["status"]


def test_anything_but_the_parts_passes_through() -> None:
    obj = {"apiVersion": 1, "kind": None, "metadata": "m", "spec": 0.5}
    assert Sharer().share(dict(obj)) == obj


def _parts(obj: dict[str, Any]) -> list[Any]:
    """The containers below the object and its metadata: what may be shared."""
    found: list[Any] = []

    def walk(value: Any, depth: int, name: str) -> None:
        if isinstance(value, dict | list):
            if depth > 1 or (depth == 1 and name != "metadata"):
                found.append(value)
            for key, item in (value.items() if isinstance(value, dict) else
                              ((name, item) for item in value)):
                walk(item, depth + 1, key)

    walk(obj, 0, "")
    return found


def _dump(objects: list[Any], folder: Path) -> Path:
    path = folder / "dump.json"
    path.write_text(kubectl_json(objects))
    return path


def test_the_analysis_changes_no_shared_part(tmp_path: Path) -> None:
    """Every rule case (broken and malformed objects included) and the synthetic mesh, read
    as kubectl's JSON: the same report from the dump's objects as read, and from them with
    every part that may be shared refusing changes."""
    sets = [load_case(path).objects for path in cases()]
    sets.append(synthetic.mesh(3, 2))
    held_alike = 0
    for number, objects in enumerate(sets):
        folder = tmp_path / str(number)
        folder.mkdir()
        raw = read_dump(_dump(objects, folder))
        seen: set[int] = set()
        for obj in raw.objects:
            for part in _parts(obj) if isinstance(obj, dict) else []:
                held_alike += id(part) in seen
                seen.add(id(part))
        expected = report_of(raw)
        raw.objects = [_frozen(o) for o in raw.objects]
        assert report_of(raw) == expected
    assert held_alike > 1000  # (the test is about shared parts: there are some)


@pytest.mark.parametrize("example", FOLDERS)
def test_explain_changes_no_shared_part(example: str, tmp_path: Path) -> None:
    raw = read_dump(_dump(read_dump(EXAMPLES / example, lean=False).objects, tmp_path))
    expected = explained(raw)
    raw.objects = [_frozen(o) for o in raw.objects]
    assert explained(raw) == expected


def test_the_synthetic_mesh_is_held_in_a_third_of_the_memory(tmp_path: Path) -> None:
    """What the goal rests on, in bytes: the lean objects of 10 synthetic applications hold
    their parts alike (the decoded, slimmed objects, ≈2.8 KiB each, at most 1 KiB each)."""
    objects = synthetic.mesh(10, 3)
    raw = read_dump(_dump(objects, tmp_path))
    seen: set[int] = set()

    def size(value: Any) -> int:
        if id(value) in seen:
            return 0
        seen.add(id(value))
        total = sys.getsizeof(value)
        if isinstance(value, dict):
            total += sum(size(k) + size(v) for k, v in value.items())
        elif isinstance(value, list):
            total += sum(size(v) for v in value)
        return total

    assert sum(size(o) for o in raw.objects) / len(raw.objects) < 1024
