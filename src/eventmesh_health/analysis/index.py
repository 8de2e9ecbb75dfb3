"""Indexes over a snapshot so that every lookup the profile needs is a dict access.

Built once per analysis in one pass; the label, field and owner indexes are
built lazily, once per (kind, label) or (kind, field), on first use.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from eventmesh_health.analysis.fields import Malformed, Obj
from eventmesh_health.topology import Profile, kind_key

NameKey = tuple[str, str | None, str]  # (kind key, namespace or None, name)


@dataclass(frozen=True, slots=True)
class BadObject:
    """An object the index could not take: where it is and what is wrong with it."""

    api_version: str
    kind: str
    namespace: str | None
    name: str | None
    message: str


class Index:
    def __init__(self, profile: Profile, objects: Iterable[Any]) -> None:
        namespaced = {k.key: k.namespaced for k in profile.kinds}
        self.by_name: dict[NameKey, Obj] = {}
        self.by_kind: dict[str, list[Obj]] = defaultdict(list)
        self.by_kind_ns: dict[tuple[str, str | None], list[Obj]] = defaultdict(list)
        self.bad: list[BadObject] = []
        # (kind key, namespace) where an object could not be indexed: a "missing" object
        # there may well be that one, so its absence is Unknown rather than NotFound.
        self.bad_places: set[tuple[str, str | None]] = set()
        self.skipped: dict[str, int] = defaultdict(int)
        self._labels: dict[tuple[str, str], dict[tuple[str | None, str], list[Obj]]] = {}
        self._fields: dict[tuple[str, tuple[str, ...]], dict[tuple[str | None, str], list[Obj]]]
        self._fields = {}
        self._owned: dict[str, list[Obj]] | None = None
        self._names: dict[tuple[str, str], list[Obj]] | None = None

        for obj in objects:
            problem = _basic_problem(obj)
            if problem is not None:
                self._reject(obj, problem)
                continue
            key = kind_key(obj["apiVersion"], obj["kind"])
            if key not in namespaced:
                self.skipped[key] += 1
                continue
            meta = obj["metadata"]
            ns = meta.get("namespace") if namespaced[key] else None
            if namespaced[key] and not isinstance(ns, str):
                self._reject(obj, "metadata.namespace is missing for a namespaced kind")
                continue
            self.by_name[(key, ns, meta["name"])] = obj
            self.by_kind[key].append(obj)
            self.by_kind_ns[(key, ns)].append(obj)

    def _reject(self, obj: object, message: str) -> None:
        api_version = kind = namespace = name = None
        if isinstance(obj, dict):
            api_version = obj.get("apiVersion") if isinstance(obj.get("apiVersion"), str) else None
            kind = obj.get("kind") if isinstance(obj.get("kind"), str) else None
            raw_meta = obj.get("metadata")
            meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
            namespace = meta.get("namespace") if isinstance(meta.get("namespace"), str) else None
            name = meta.get("name") if isinstance(meta.get("name"), str) else None
        self.bad.append(BadObject(api_version or "", kind or "", namespace, name, message))
        if api_version and kind:
            self.bad_places.add((kind_key(api_version, kind), namespace))

    def get(self, key: str, namespace: str | None, name: str) -> Obj | None:
        return self.by_name.get((key, namespace, name))

    def has_kind(self, key: str) -> bool:
        return bool(self.by_kind.get(key))

    def in_namespace(self, key: str, namespace: str | None) -> list[Obj]:
        if namespace is None:
            return self.by_kind.get(key, [])
        return self.by_kind_ns.get((key, namespace), [])

    def named(self, key: str, name: str) -> list[Obj]:
        """Objects of `key` called `name`, in any namespace."""
        if self._names is None:
            names: dict[tuple[str, str], list[Obj]] = defaultdict(list)
            for (kind, _, obj_name), obj in self.by_name.items():
                names[(kind, obj_name)].append(obj)
            self._names = names
        return self._names.get((key, name), [])

    def with_label(self, key: str, label: str, value: str, namespace: str | None) -> list[Obj]:
        """Objects of `key` labelled label=value, in `namespace` (None: anywhere)."""
        index = self._labels.get((key, label))
        if index is None:
            index = defaultdict(list)
            for obj in self.by_kind.get(key, []):
                labels = obj["metadata"].get("labels")
                if isinstance(labels, dict):
                    found = labels.get(label)
                    if isinstance(found, str):
                        _add_twice(index, obj, found)
            self._labels[(key, label)] = index
        return index.get((namespace, value), [])

    def with_field(
        self, key: str, path: tuple[str, ...], value: str, namespace: str | None
    ) -> list[Obj]:
        """Objects of `key` whose string field at `path` equals `value`. Objects where the
        path runs into a wrong type are recorded as bad (they cannot be linked)."""
        index = self._fields.get((key, path))
        if index is None:
            index = defaultdict(list)
            for obj in self.by_kind.get(key, []):
                current: Any = obj
                for depth, part in enumerate(path):
                    if current is None:
                        break
                    if not isinstance(current, dict):
                        self._bad_field(obj, key, Malformed(path[:depth], "a map", current))
                        current = None
                        break
                    current = current.get(part)
                if current is None:
                    continue
                if not isinstance(current, str):
                    self._bad_field(obj, key, Malformed(path, "a string", current))
                    continue
                _add_twice(index, obj, current)
            self._fields[(key, path)] = index
        return index.get((namespace, value), [])

    def _bad_field(self, obj: Obj, key: str, err: Malformed) -> None:
        meta = obj["metadata"]
        self.bad.append(
            BadObject(
                obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"],
                f"cannot tell which application it belongs to: {err}",
            )
        )
        self.bad_places.add((key, meta.get("namespace")))

    def owned_by(self, uid: str) -> list[Obj]:
        if self._owned is None:
            owned: dict[str, list[Obj]] = defaultdict(list)
            for objs in self.by_kind.values():
                for obj in objs:
                    refs = obj["metadata"].get("ownerReferences")
                    if isinstance(refs, list):
                        for ref in refs:
                            if isinstance(ref, dict) and isinstance(ref.get("uid"), str):
                                owned[ref["uid"]].append(obj)
            self._owned = owned
        return self._owned.get(uid, [])


def _add_twice(index: dict[tuple[str | None, str], list[Obj]], obj: Obj, value: str) -> None:
    """Index under (its namespace, value) and under (None, value), meaning anywhere."""
    namespace = obj["metadata"].get("namespace")
    if namespace is not None:
        index[(namespace, value)].append(obj)
    index[(None, value)].append(obj)


def _basic_problem(obj: object) -> str | None:
    if not isinstance(obj, dict):
        return f"an item is a {type(obj).__name__}, expected an object (a map)"
    if not isinstance(obj.get("apiVersion"), str) or not obj.get("apiVersion"):
        return "apiVersion is missing or not a string"
    if not isinstance(obj.get("kind"), str) or not obj.get("kind"):
        return "kind is missing or not a string"
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return "metadata is missing or not a map"
    if not isinstance(meta.get("name"), str) or not meta.get("name"):
        return "metadata.name is missing: the object cannot be identified"
    return None
