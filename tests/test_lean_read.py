"""The lean reading of a dump (slimmed objects, kinds no profile reads dropped, kubectl's JSON
read a block at a time by orjson) gives the report (and what `explain` shows) the plain
reading gives, and refuses exactly what the plain reader refuses."""

from __future__ import annotations

import copy
import json
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from eventmesh_health.analysis import analyse, analyse_graph
from eventmesh_health.outputs.tree import explain_flow_json, explain_json
from eventmesh_health.sources import fastjson, files
from eventmesh_health.sources.files import (
    RawDump,
    SnapshotError,
    read_dump,
    snapshot_of,
)
from eventmesh_health.topology.registry import ProfileError, detect, lookup
from tests.test_hostile_input import _WRONG, _damage_cases, _set, base_objects

EXAMPLES = Path(__file__).parent.parent / "examples"
NOW = datetime(2020, 6, 15, 10, 0, tzinfo=UTC)
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
FOLDERS = sorted(
    str(folder.relative_to(EXAMPLES)) for folder in EXAMPLES.rglob("*")
    if folder.is_dir() and any(folder.glob("*.yaml"))
)


def report_of(raw: RawDump) -> dict[str, Any]:
    name = raw.profile_name()
    profile = lookup(name) if name else detect(raw.kinds(), "the dump")
    return analyse(snapshot_of(raw, profile, NOW), profile).to_json_dict()


def explained(raw: RawDump) -> list[Any]:
    """What `explain` shows of every application and flow."""
    name = raw.profile_name()
    profile = lookup(name) if name else detect(raw.kinds(), "the dump")
    analysis = analyse_graph(snapshot_of(raw, profile, NOW), profile)
    return [
        *(explain_json(unit, report, analysis.causes) for unit, report
          in zip(analysis.graph.apps, analysis.report.applications, strict=True)),
        *(explain_flow_json(unit, report, analysis.causes) for unit, report
          in zip(analysis.graph.flows, analysis.report.flows, strict=True)),
    ]


def kubectl_json(objects: list[Any]) -> str:
    """What `kubectl get -o json` prints: a v1 List, keys sorted, indented by 4 spaces."""
    return json.dumps({"apiVersion": "v1", "items": objects, "kind": "List",
                       "metadata": {"resourceVersion": ""}}, indent=4) + "\n"


def objects_of(folder: Path) -> list[Any]:
    return read_dump(folder, lean=False).objects


def outcome(path: Path, lean: bool) -> Any:
    try:
        raw = read_dump(path, lean=lean)
    except SnapshotError as err:
        return ("error", str(err))
    try:
        return report_of(raw)
    except ProfileError as err:
        return ("no profile", str(err))


def block_reads(monkeypatch: pytest.MonkeyPatch, reader: str) -> list[bool]:
    """Whether `files.<reader>` (a block reader) read each file it was given (else the
    strict reader did), in order."""
    calls: list[bool] = []
    real = getattr(files, reader)

    def spy(*args: Any) -> bool:
        result = real(*args)
        calls.append(result)
        return bool(result)

    monkeypatch.setattr(files, reader, spy)
    return calls


@pytest.fixture
def fast_reads(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether the block reader read each JSON file (else the plain reader did)."""
    return block_reads(monkeypatch, "_read_kubectl_json")


@pytest.mark.parametrize("example", FOLDERS)
def test_lean_and_plain_reading_give_the_same_report(
    example: str, tmp_path: Path, fast_reads: list[bool]
) -> None:
    folder = EXAMPLES / example
    plain = read_dump(folder, lean=False)
    lean = read_dump(folder)
    assert lean.kinds() == plain.kinds()
    expected = report_of(plain)
    assert report_of(lean) == expected
    assert explained(lean) == explained(plain)
    # the same objects as one `kubectl get -o json` List, read by the block reader
    info = [plain.info] if plain.info is not None else []
    path = tmp_path / "mesh.json"
    path.write_text(kubectl_json(info + plain.objects))
    before = len(fast_reads)
    assert report_of(read_dump(path)) == expected
    assert fast_reads[before:] == [True]
    assert report_of(read_dump(path, lean=False)) == expected


def test_lean_reading_drops_what_no_profile_reads() -> None:
    raw = read_dump(EXAMPLES / "healthy-mesh")
    plain = read_dump(EXAMPLES / "healthy-mesh", lean=False)
    assert raw.skipped
    assert sum(raw.skipped.values()) + len(raw.objects) == len(plain.objects)
    assert all(o["kind"] not in {"ConfigMap", "ReplicaSet"} for o in raw.objects)
    pod = next(o for o in raw.objects if o["kind"] == "Pod")
    assert "annotations" not in pod["metadata"] or all(
        k.startswith("eventmesh-health") for k in pod["metadata"]["annotations"])


# --- what the block reader must not decode differently -----------------------------------

def _poisoned(text: str) -> dict[str, str]:
    """kubectl JSON of the base mesh with one thing in one item that orjson alone would read
    differently from the standard library, or a layout the block reader cannot split."""
    marker = '"kind": "Trigger",'
    assert marker in text
    return {
        "duplicate-key": text.replace(marker, marker + ' "kind": "Pod",', 1),
        "duplicate-nested": text.replace(marker, marker + ' "x": {"a": 1, "a": 2},', 1),
        "duplicate-in-status": text.replace(
            '"status": {', '"status": {"phase": "a", "phase": "b", ', 1),
        "int-beyond-int64": text.replace(marker, marker + ' "x": 9223372036854775808,', 1),
        "int-beyond-uint64": text.replace(marker, marker + ' "x": 18446744073709551616,', 1),
        "int64-max": text.replace(marker, marker + ' "x": 9223372036854775807,', 1),
        "escaped-colon": text.replace(marker, marker + ' "x": "a\\u003ab",', 1),
        "deep": text.replace(marker, marker + ' "x": ' + "[" * 150 + "]" * 150 + ",", 1),
        "just-deep-enough": text.replace(marker, marker + ' "x": ' + "[" * 96 + "]" * 96
                                         + ",", 1),
        "one-too-deep": text.replace(marker, marker + ' "x": ' + "[" * 97 + "]" * 97 + ",", 1),
        "nan": text.replace(marker, marker + ' "x": NaN,', 1),
        "lone-surrogate": text.replace(marker, marker + ' "x": "\\ud800",', 1),
        "false-boundary": text.replace(
            marker, marker + '\n "x": [\n        {"a": 1\n        },\n        {"b": 2}],', 1),
        "false-end": text.replace(
            marker, marker + '\n "x": [\n        {"a": 1\n        }\n    ]\n, "y": 1,', 1),
        "not-a-list": text.replace('"kind": "List"', '"kind": "Thing"'),
        "items-twice": text.replace('"kind": "List"', '"items": [], "kind": "List"'),
        "trailing": text + "{}",
    }


CASES = sorted(_poisoned('"kind": "Trigger", "status": {'))
# Read alike, so the block reader may read them itself.
VOUCHED = {"just-deep-enough", "false-end"}  # (19 digits, even int64 max, are left to it)


@pytest.mark.parametrize("case", CASES)
def test_the_block_reader_reads_nothing_differently(
    case: str, tmp_path: Path, fast_reads: list[bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fastjson, "BLOCK", 700)  # so that a false boundary is a cut
    text = _poisoned(kubectl_json(base_objects()))[case]
    path = tmp_path / "mesh.json"
    path.write_text(text)
    plain, lean = outcome(path, lean=False), outcome(path, lean=True)
    assert lean == plain
    assert fast_reads == [case in VOUCHED], "only what it reads alike"


def test_the_block_reader_reads_in_blocks(
    tmp_path: Path, fast_reads: list[bool], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Blocks much smaller than the file and than some items: the same report."""
    monkeypatch.setattr(fastjson, "BLOCK", 700)
    path = tmp_path / "mesh.json"
    path.write_text(kubectl_json(base_objects()))
    assert outcome(path, lean=True) == outcome(path, lean=False)
    assert fast_reads == [True]


_ALPHABET = ['[', ']', '{', '}', '"', '\\', ':', ',', 'a', '\n', 'é', '\u2028']


def random_value(rng: random.Random, alphabet: list[str], longest: int = 6,
                 depth: int = 0) -> Any:
    """A random JSON-like value: strings of `alphabet` (up to `longest` pieces), int64-range
    numbers, floats, booleans, nulls, lists and maps nested up to 6 deep."""
    roll = rng.random()
    if depth > 5 or roll < 0.3:
        return rng.choice([
            "".join(rng.choice(alphabet) for _ in range(rng.randint(0, longest))),
            rng.randint(-10**18, 10**18), rng.random(), True, None])
    if roll < 0.6:
        return [random_value(rng, alphabet, longest, depth + 1)
                for _ in range(rng.randint(0, 3))]
    return {"".join(rng.choice(alphabet) for _ in range(rng.randint(0, 4))):
            random_value(rng, alphabet, longest, depth + 1) for _ in range(rng.randint(0, 3))}


def _value(rng: random.Random, depth: int) -> Any:
    return random_value(rng, _ALPHABET, 6, depth)


@pytest.mark.parametrize("seed", range(20))
def test_random_values_in_items_read_alike(seed: int, tmp_path: Path) -> None:
    """Strings full of brackets, quotes, colons and backslashes, numbers, nesting, in fields
    the analysis does not read and in one it does: the same as the plain reader."""
    rng = random.Random(seed)
    objects = base_objects()
    for obj in rng.sample(objects, 10):
        obj["x"] = _value(rng, 0)
        obj.setdefault("status", {})["y"] = _value(rng, 0)
    path = tmp_path / "mesh.json"
    path.write_text(kubectl_json(objects))
    assert outcome(path, lean=True) == outcome(path, lean=False)


@pytest.mark.parametrize("example", ["malformed-objects", "kafka-quota-reached",
                                     "knative-v1/subscriber-gone"])
def test_check_json_is_what_json_dumps_writes(example: str, tmp_path: Path) -> None:
    """`check -o json` lets pydantic-core write the report: byte for byte what
    json.dumps(indent=2, ensure_ascii=False) writes of the same report, even for text with
    control characters, line separators and non-ASCII in it."""
    raw = read_dump(EXAMPLES / example)
    name = raw.profile_name()
    profile = lookup(name) if name else detect(raw.kinds(), "the dump")
    report = analyse(snapshot_of(raw, profile, NOW), profile)
    assert report.model_dump_json(indent=2, by_alias=True) == json.dumps(
        report.to_json_dict(), indent=2, ensure_ascii=False)
    odd = "\x00\x1b[2J\n\t\"\\/\u2028\u2029é\U0001f600\x7f"
    if report.applications:
        report.applications[0].name = odd
    report.source.profile = odd
    assert report.model_dump_json(indent=2, by_alias=True) == json.dumps(
        report.to_json_dict(), indent=2, ensure_ascii=False)


def test_every_damaged_field_reads_alike(tmp_path: Path) -> None:
    """Each wrong type in each field the analysis reads of the base mesh
    (`test_hostile_input`'s damage cases): read lean, the same report as read plainly, so
    no field the analysis reads is missing from the slimming allow-lists."""
    cases = _damage_cases()
    original = base_objects()
    differ = []
    for position, path, wrong in cases:
        objects = copy.deepcopy(original)
        _set(objects[position], path, copy.deepcopy(_WRONG[wrong]))
        file = tmp_path / "mesh.yaml"
        file.write_text(yaml.dump_all(objects, Dumper=_DUMPER))
        if outcome(file, lean=True) != outcome(file, lean=False):
            differ.append(f"{objects[position]['kind']} {'.'.join(map(str, path))} "
                          f"= {_WRONG[wrong]!r:.20}")
    assert not differ, "\n".join(differ)
