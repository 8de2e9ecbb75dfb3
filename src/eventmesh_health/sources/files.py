"""Read a dump: a file or a folder (recursively) of .yaml / .yml / .json files.

Each file may hold `v1 List` objects (what `kubectl get -o yaml` prints),
several YAML documents, or single objects. A `SnapshotInfo` object of ours, if
present, says when the dump was taken and which kinds it covers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from eventmesh_health.snapshot import (
    SNAPSHOT_INFO_API_VERSION,
    SNAPSHOT_INFO_KIND,
    InputProblem,
    Snapshot,
)
from eventmesh_health.topology import Profile

SUFFIXES = {".yaml", ".yml", ".json"}
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class SnapshotError(Exception):
    """The input cannot be read at all: one line, naming the file (and line where known)."""


def dump_files(path: Path) -> list[Path]:
    if not path.exists():
        raise SnapshotError(f"{path}: no such file or directory")
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
    if not files:
        raise SnapshotError(f"{path}: no .yaml, .yml or .json files in this folder")
    return files


def _documents(path: Path) -> Iterator[Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise SnapshotError(f"{path}: cannot read: {reason}") from None
    if path.suffix.lower() == ".json":
        try:
            yield json.loads(text)
        except json.JSONDecodeError as err:
            raise SnapshotError(f"{path}:{err.lineno}: invalid JSON: {err.msg}") from None
        return
    try:
        yield from yaml.load_all(text, Loader=_Loader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise SnapshotError(f"{where}: invalid YAML: {problem}") from None


def _items(document: Any) -> Iterator[Any]:
    """Flatten `List` documents (and `...List` kinds such as `DeploymentList`)."""
    if (
        isinstance(document, dict)
        and isinstance(document.get("kind"), str)
        and document["kind"].endswith("List")
        and "items" in document
    ):
        items = document.get("items")
        if items is None:
            return
        if not isinstance(items, list):
            yield document  # the index reports it as malformed
            return
        for item in items:
            yield from _items(item)
        return
    if document is not None:
        yield document


def _is_info(obj: Any) -> bool:
    return (
        isinstance(obj, dict)
        and obj.get("apiVersion") == SNAPSHOT_INFO_API_VERSION
        and obj.get("kind") == SNAPSHOT_INFO_KIND
    )


def load_snapshot(path: Path, profile: Profile, now: datetime) -> Snapshot:
    """All objects under `path`. `now` is used when the dump does not say when it was taken."""
    objects: list[Any] = []
    problems: list[InputProblem] = []
    info: dict[str, Any] | None = None
    info_file: Path | None = None
    for file in dump_files(path):
        for number, document in enumerate(_documents(file), start=1):
            for item in _items(document):
                if _is_info(item):
                    info, info_file = item, file
                elif isinstance(item, dict):
                    objects.append(item)
                else:
                    problems.append(InputProblem(
                        f"{file} (document {number})",
                        f"a {type(item).__name__} where an object was expected: {item!r:.60}",
                    ))
    taken_at = now
    collected: frozenset[str] | None = None
    unavailable: dict[str, str] = {}
    if info is not None:
        taken_at, collected = _read_info(info, info_file, profile)
        unavailable = _read_unavailable(info, info_file, profile, collected)
    return Snapshot(objects=objects, taken_at=taken_at, collected=collected,
                    unavailable=unavailable, problems=problems)


def _read_unavailable(
    info: dict[str, Any], file: Path | None, profile: Profile, collected: frozenset[str] | None
) -> dict[str, str]:
    """SnapshotInfo.unavailable: {resource: why it could not be read} -> {kind key: why}."""
    raw = info.get("unavailable")
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in raw.items()
    ):
        raise SnapshotError(
            f"{file}: SnapshotInfo.unavailable must map resource names to messages"
        )
    by_resource = {kind.resource: kind.key for kind in profile.kinds}
    unknown = [r for r in raw if r not in by_resource]
    if unknown:
        names = ", ".join(unknown)
        raise SnapshotError(f"{file}: SnapshotInfo.unavailable names unknown resources: {names}")
    both = [r for r in raw if collected is not None and by_resource[r] in collected]
    if both:
        names = ", ".join(both)
        raise SnapshotError(
            f"{file}: SnapshotInfo lists {names} as both collected and unavailable"
        )
    return {by_resource[r]: message for r, message in raw.items()}


def _read_info(
    info: dict[str, Any], file: Path | None, profile: Profile
) -> tuple[datetime, frozenset[str] | None]:
    raw_time = info.get("takenAt")
    try:
        taken_at = datetime.fromisoformat(str(raw_time))
    except ValueError:
        raise SnapshotError(
            f"{file}: SnapshotInfo.takenAt {raw_time!r} is not a timestamp"
        ) from None
    if taken_at.tzinfo is None:
        raise SnapshotError(f"{file}: SnapshotInfo.takenAt {raw_time!r} has no time zone")
    raw_collected = info.get("collected")
    if raw_collected is None:
        return taken_at, None
    if not isinstance(raw_collected, list):
        raise SnapshotError(f"{file}: SnapshotInfo.collected must be a list of resource names")
    by_resource = {kind.resource: kind.key for kind in profile.kinds}
    unknown = [r for r in raw_collected if r not in by_resource]
    if unknown:
        names = ", ".join(map(str, unknown))
        raise SnapshotError(f"{file}: SnapshotInfo.collected names unknown resources: {names}")
    return taken_at, frozenset(by_resource[r] for r in raw_collected)
