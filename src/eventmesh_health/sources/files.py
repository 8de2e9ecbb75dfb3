"""Read a dump: a file or a folder (recursively) of .yaml / .yml / .json files.

Each file may hold `v1 List` objects (what `kubectl get -o yaml` prints),
several YAML documents, or single objects. A `SnapshotInfo` object of ours, if
present, says when the dump was taken and which kinds it covers.
"""

from __future__ import annotations

import gc
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from eventmesh_health.analysis.index import basic_problem
from eventmesh_health.snapshot import (
    SNAPSHOT_INFO_API_VERSION,
    SNAPSHOT_INFO_KIND,
    InputProblem,
    Snapshot,
)
from eventmesh_health.sources import fastjson, fastyaml
from eventmesh_health.sources.parse import ParseError, parse_json, parse_yaml
from eventmesh_health.sources.share import Sharer
from eventmesh_health.sources.slim import pruner
from eventmesh_health.topology import Profile, kind_key

SUFFIXES = {".yaml", ".yml", ".json"}


class SnapshotError(Exception):
    """The input cannot be read at all: one line, naming the file (and line where known)."""


def dump_files(path: Path) -> list[Path]:
    """Every .yaml/.yml/.json file under `path`. A folder that cannot be listed, or a link
    to a folder (not followed: it may loop), is an error, never silently skipped: the
    objects in it could be the broken ones."""
    if not path.exists():
        raise SnapshotError(f"{path}: no such file or directory")
    if not path.is_dir():
        return [path]
    files: list[Path] = []

    def unreadable(err: OSError) -> None:
        raise SnapshotError(f"{err.filename}: cannot read this folder: "
                            f"{err.strerror or err}")

    for folder, dirs, names in os.walk(path, onerror=unreadable):
        for name in dirs:
            if os.path.islink(os.path.join(folder, name)):
                raise SnapshotError(f"{os.path.join(folder, name)}: a link to a folder is "
                                    "not followed: give the folder itself")
        files.extend(Path(folder, name) for name in names
                     if Path(name).suffix.lower() in SUFFIXES)
    if not files:
        raise SnapshotError(f"{path}: no .yaml, .yml or .json files in this folder")
    return sorted(files)


def _documents(path: Path) -> list[Any]:
    try:
        if not stat.S_ISREG(path.stat().st_mode):  # a FIFO or device would block or never end
            raise SnapshotError(f"{path}: not a regular file")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise SnapshotError(f"{path}: cannot read: {reason[:200]}") from None
    try:
        if path.suffix.lower() == ".json":
            return [parse_json(text)]
        return parse_yaml(text)
    except ParseError as err:
        where = f"{path}:{err.line}" if err.line is not None else str(path)
        raise SnapshotError(f"{where}: {err}") from None


def _is_list(document: Any) -> bool:
    return (
        isinstance(document, dict)
        and isinstance(document.get("kind"), str)
        and document["kind"].endswith("List")
        and "items" in document
    )


def _items(document: Any) -> Iterator[Any]:
    """Flatten `List` documents (and `...List` kinds such as `DeploymentList`)."""
    if _is_list(document):
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


@dataclass
class RawDump:
    """A dump as read, before a profile gives meaning to its `SnapshotInfo`."""

    objects: list[Any] = field(default_factory=list)
    problems: list[InputProblem] = field(default_factory=list)
    info: dict[str, Any] | None = None
    info_file: Path | None = None
    # Objects of kinds no profile reads, dropped while reading: counts per kind key, and the
    # kind keys (plain and at their version) for detection.
    skipped: dict[str, int] = field(default_factory=dict)
    skipped_kinds: set[str] = field(default_factory=set)

    def kinds(self) -> frozenset[str]:
        """Kind keys of the objects, and the resources SnapshotInfo says were collected
        (a dump of an empty mesh still names its kinds there): what detection looks at."""
        present: set[str] = set(self.skipped_kinds)
        for obj in self.objects:
            api_version, kind = obj.get("apiVersion"), obj.get("kind")
            if isinstance(api_version, str) and isinstance(kind, str):
                present.update(_kind_keys(api_version, kind))
        collected = (self.info or {}).get("collected")
        if isinstance(collected, list):
            present.update(r for r in collected if isinstance(r, str))
        return frozenset(present)

    def profile_name(self) -> str | None:
        """The profile SnapshotInfo says the dump was read with (`dump` writes it)."""
        name = (self.info or {}).get("profile")
        return name if isinstance(name, str) and name else None

    def merge(self, other: RawDump) -> None:
        self.objects.extend(other.objects)
        self.problems.extend(other.problems)
        if other.info is not None:
            self.info, self.info_file = other.info, other.info_file
        for key, count in other.skipped.items():
            self.skipped[key] = self.skipped.get(key, 0) + count
        self.skipped_kinds |= other.skipped_kinds


def _kind_keys(api_version: str, kind: str) -> tuple[str, str]:
    key = kind_key(api_version, kind)
    # and at its version: what tells Knative v1 from v0.12 (`Kind.versioned`)
    return key, f"{key}/{api_version.rpartition('/')[2]}"


class _Reader:
    """Takes the items of a dump into a RawDump. Lean (the default), it keeps of each object
    only what some profile's analysis reads (`sources.slim`, the allow-list beside each kind)
    and drops objects of kinds no profile reads, counting them, as the index would skip
    them: the whole objects never all live at once, and the report is the same. An object
    of such a kind that the index would reject is kept whole, so that its finding is the
    same too. The parts lean objects have alike are kept once (`sources.share`)."""

    def __init__(self, raw: RawDump, lean: bool, sharer: Sharer | None = None) -> None:
        self.raw = raw
        self.plans = _lean_plans() if lean else None
        self.sharer = (sharer or Sharer()) if lean else None
        self._share = self.sharer.share if self.sharer is not None else _unshared

    def document(self, document: Any, file: Path, number: int) -> None:
        plans = self.plans
        if plans is not None and type(document) is dict:
            # the common case first: an object of a kind some profile reads
            kind, api_version = document.get("kind"), document.get("apiVersion")
            if type(kind) is str and type(api_version) is str and not kind.endswith("List"):
                plan = plans.get(kind_key(api_version, kind))
                if plan is not None:  # (never SnapshotInfo: it is no profile's kind)
                    self.raw.objects.append(self._share(plan(document)))
                    return
        for item in _items(document):
            if _is_info(item):
                self.raw.info, self.raw.info_file = item, file
            elif isinstance(item, dict):
                self.object(item)
            else:
                self.raw.problems.append(InputProblem(
                    f"{file} (document {number})",
                    f"a {type(item).__name__} where an object was expected: {item!r:.60}",
                ))

    def object(self, obj: dict[str, Any]) -> None:
        plans = self.plans
        if plans is None:
            self.raw.objects.append(obj)
            return
        api_version, kind = obj.get("apiVersion"), obj.get("kind")
        if not isinstance(api_version, str) or not isinstance(kind, str):
            self.raw.objects.append(obj)  # rejected by the index, as it is
            return
        key = kind_key(api_version, kind)
        plan = plans.get(key)
        if plan is not None:
            # keeps every field `basic_problem` reads, as it is: the index judges it alike
            self.raw.objects.append(self._share(plan(obj)))
        elif basic_problem(obj) is not None:
            self.raw.objects.append(obj)
        else:
            raw = self.raw
            raw.skipped[key] = raw.skipped.get(key, 0) + 1
            raw.skipped_kinds.update(_kind_keys(api_version, kind))




def _unshared(obj: dict[str, Any]) -> dict[str, Any]:
    return obj


@lru_cache(maxsize=1)
def _lean_plans() -> dict[str, Callable[[dict[str, Any]], dict[str, Any]]]:
    """{kind key: its slimmer}, for every kind of every profile (the profile is chosen only
    after reading, from what was read): the union of what each profile reads of it."""
    from eventmesh_health.topology.registry import PROFILES

    fields: dict[str, dict[str, None]] = {}
    annotations: dict[str, dict[str, None]] = {}
    for profile in PROFILES.values():
        for kind in profile.kinds:
            fields.setdefault(kind.key, {}).update(dict.fromkeys(kind.fields))
            annotations.setdefault(kind.key, {}).update(dict.fromkeys(kind.annotations))
    # pruned in place: the reader has just decoded them and nothing else holds them
    return {key: pruner(tuple(fields[key]), tuple(annotations[key])) for key in fields}


def read_dump(path: Path, lean: bool = True) -> RawDump:
    """Every object under `path` (`lean`: slimmed, see `_Reader`), and our SnapshotInfo if
    there is one."""
    raw = RawDump()
    reader = _Reader(raw, lean)
    # Reading allocates containers by the million and frees none: the cyclic GC would only
    # scan them again and again.
    collecting = gc.isenabled()
    gc.disable()
    try:
        for file in dump_files(path):
            if lean and _read_kubectl(file, reader):
                continue
            for number, document in enumerate(_documents(file), start=1):
                reader.document(document, file, number)
    finally:
        if collecting:
            gc.enable()
    return raw


def _read_kubectl(file: Path, reader: _Reader) -> bool:
    """The file read a block at a time into `reader`'s dump, if it is a kubectl List whose
    block reader can vouch for it."""
    suffix = file.suffix.lower()
    if suffix == ".json":
        return _read_kubectl_json(file, reader)
    return _read_kubectl_yaml(file, reader)


def _read_kubectl_json(file: Path, reader: _Reader) -> bool:
    return _read_blocks(file, reader, fastjson.read_list)


def _read_kubectl_yaml(file: Path, reader: _Reader) -> bool:
    return _read_blocks(file, reader, fastyaml.read_list)


def _read_blocks(file: Path, reader: _Reader,
                 read_list: Callable[[Path, Callable[[Any], None]], dict[str, Any] | None],
                 ) -> bool:
    """The file read by `read_list` into `reader`'s dump, if it can vouch for it."""
    part = RawDump()
    into = _Reader(part, lean=True, sharer=reader.sharer)
    skeleton = read_list(file, lambda item: into.document(item, file, 1))
    if skeleton is None or not _is_list(skeleton):
        return False  # (not a List: its items would be one object's field; never kubectl's)
    reader.raw.merge(part)
    return True


def load_snapshot(path: Path, profile: Profile, now: datetime) -> Snapshot:
    """All objects under `path`. `now` is used when the dump does not say when it was taken."""
    return snapshot_of(read_dump(path), profile, now)


def snapshot_of(raw: RawDump, profile: Profile, now: datetime) -> Snapshot:
    """The snapshot of a dump read with `read_dump`, its SnapshotInfo read for `profile`."""
    taken_at = now
    collected: frozenset[str] | None = None
    unavailable: dict[str, str] = {}
    if raw.info is not None:
        taken_at, collected = _read_info(raw.info, raw.info_file, profile)
        unavailable = _read_unavailable(raw.info, raw.info_file, profile, collected)
    return Snapshot(objects=raw.objects, taken_at=taken_at, collected=collected,
                    unavailable=unavailable, skipped=dict(raw.skipped), problems=raw.problems)


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
        names = ", ".join(r[:100] for r in unknown[:5])
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
        if not isinstance(raw_time, str):
            raise ValueError(raw_time)
        taken_at = datetime.fromisoformat(raw_time)
    except ValueError:
        raise SnapshotError(
            f"{file}: SnapshotInfo.takenAt {raw_time!r:.60} is not a timestamp"
        ) from None
    if taken_at.tzinfo is None:
        raise SnapshotError(f"{file}: SnapshotInfo.takenAt {raw_time!r:.60} has no time zone")
    raw_collected = info.get("collected")
    if raw_collected is None:
        return taken_at, None
    if not isinstance(raw_collected, list) or not all(isinstance(r, str) for r in raw_collected):
        raise SnapshotError(f"{file}: SnapshotInfo.collected must be a list of resource names")
    by_resource = {kind.resource: kind.key for kind in profile.kinds}
    unknown = [r for r in raw_collected if r not in by_resource]
    if unknown:
        names = ", ".join(r[:100] for r in unknown[:5])
        raise SnapshotError(f"{file}: SnapshotInfo.collected names unknown resources: {names}")
    return taken_at, frozenset(by_resource[r] for r in raw_collected)
