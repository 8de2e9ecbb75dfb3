"""Indexes over a snapshot so that every lookup the profile needs is a dict access.

Built in one pass; the name, label, field and owner indexes are built lazily, per
kind, on first use. `add` and `remove` keep it current for `serve`: a change to
an object drops only the lazy indexes of its own kind.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from eventmesh_health.analysis.fields import Malformed, Obj
from eventmesh_health.analysis.namemap import NameMap
from eventmesh_health.model import printable
from eventmesh_health.topology import ByField, ByServiceClass, Profile, kind_key

NameKey = tuple[str, str | None, str]  # (kind key, namespace or None, name)
_Lookup = dict[tuple[str | None, str], list[Obj]]  # (namespace or None = anywhere, value)


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
        self._namespaced = {k.key: k.namespaced for k in profile.kinds}
        # kind key -> (namespace or None, name) -> object: one map (not also one by a
        # (kind, namespace, name) tuple), with no key tuple per object (`NameMap`): `serve`
        # keeps this index as long as it runs, and those were ≈0.15 KiB of each object.
        self._by_kind: dict[str, NameMap] = {}
        self._rejected: list[BadObject] = []
        self.skipped: dict[str, int] = defaultdict(int)
        self._labels: dict[tuple[str, str], _Lookup] = {}
        self._fields: dict[tuple[str, tuple[str, ...]], _Lookup] = {}
        # Objects whose fields could not be read while building a field index, per index.
        self._field_bad: dict[tuple[str, tuple[str, ...]], list[BadObject]] = {}
        # Every field the profile links by: a malformed one is reported whether or not an
        # application happened to look it up.
        # In the profile's order (a dict, not a set): the findings come out in this order, and
        # a set's would change with the process' string hashing.
        self._field_paths: dict[tuple[str, tuple[str, ...]], None] = dict.fromkeys(
            (kind.key, path)
            for link in profile.all_links
            for path in _field_paths_of(link.find)
            for kind in link.kinds
        )
        self._owned: dict[str, dict[str, list[Obj]]] = {}
        # (apiVersion, kind) of an object taken before -> (kind key, namespaced or None when
        # the profile does not read it): bounded, as a dump may be hostile.
        self._types: dict[tuple[str, str], tuple[str, bool | None]] = {}
        self._add_all(objects)

    def _add_all(self, objects: Iterable[Any]) -> None:
        """`add` for every object, nothing lazy built yet: the common case (a well-formed
        object of a type seen before) decided here in one go; anything else goes to `add`,
        which says what is wrong."""
        by_kind, types = self._by_kind, self._types
        for obj in objects:
            if type(obj) is dict:
                meta = obj.get("metadata")
                api_version, kind = obj.get("apiVersion"), obj.get("kind")
                if type(meta) is dict and type(api_version) is str and type(kind) is str:
                    known = types.get((api_version, kind))
                    if known is not None and _plainly_good(meta):
                        key, namespaced = known
                        if namespaced is None:
                            self.skipped[key] += 1
                            continue
                        ns = meta.get("namespace") if namespaced else None
                        if ns is not None or not namespaced:
                            of_kind = by_kind.get(key)
                            if of_kind is None:
                                of_kind = self._kind_map(key)
                            of_kind.put(ns, meta["name"], obj)
                            continue
            self.add(obj, invalidate=False)

    # --- keeping it current -------------------------------------------------------------------

    def add(self, obj: Any, invalidate: bool = True) -> NameKey | None:
        """Index `obj` (replacing an object of the same identity); its key, or None when it
        is rejected (recorded as bad) or of a kind the profile does not read (counted)."""
        problem = basic_problem(obj)
        if problem is not None:
            self._reject(obj, problem)
            return None
        key = kind_key(obj["apiVersion"], obj["kind"])
        namespaced = self._namespaced.get(key)
        if len(self._types) < 10_000:
            self._types[(obj["apiVersion"], obj["kind"])] = (key, namespaced)
        if namespaced is None:
            self.skipped[key] += 1
            return None
        meta = obj["metadata"]
        ns = meta.get("namespace") if namespaced else None
        if namespaced and not isinstance(ns, str):
            self._reject(obj, "metadata.namespace is missing for a namespaced kind")
            return None
        of_kind = self._by_kind.get(key) or self._kind_map(key)
        old = of_kind.put(ns, meta["name"], obj)
        if invalidate:
            self._update_lazy(key, old, obj)
        return (key, ns, meta["name"])

    def remove(self, name_key: NameKey) -> Obj | None:
        key, ns, name = name_key
        of_kind = self._by_kind.get(key)
        obj = of_kind.pop(ns, name) if of_kind is not None else None
        if obj is not None:
            self._update_lazy(key, obj, None)
        return obj

    def _kind_map(self, key: str) -> NameMap:
        of_kind = self._by_kind[key] = NameMap(
            _own_namespace if self._namespaced.get(key) else _no_namespace)
        return of_kind

    def key_of(self, obj: Obj) -> NameKey | None:
        if basic_problem(obj) is not None:
            return None
        key = kind_key(obj["apiVersion"], obj["kind"])
        namespaced = self._namespaced.get(key)
        if namespaced is None:
            return None
        return (key, obj["metadata"].get("namespace") if namespaced else None,
                obj["metadata"]["name"])

    def _update_lazy(self, key: str, old: Obj | None, new: Obj | None) -> None:
        """Move one object in the lazy indexes of its kind (cheaper than rebuilding them)."""
        for (kind, label), index in self._labels.items():
            if kind == key:
                if old is not None and (value := _label(old, label)) is not None:
                    _drop_twice(index, old, value)
                if new is not None and (value := _label(new, label)) is not None:
                    _add_twice(index, new, value)
        for (kind, path), index in self._fields.items():
            if kind == key:
                bad = self._field_bad[(kind, path)]
                if old is not None:
                    value, _ = _field(old, path)
                    if value is not None:
                        _drop_twice(index, old, value)
                    meta = old["metadata"]
                    bad[:] = [b for b in bad
                              if (b.namespace, b.name) != (meta.get("namespace"), meta["name"])]
                if new is not None:
                    value, problem = _field(new, path)
                    if value is not None:
                        _add_twice(index, new, value)
                    if problem is not None:
                        bad.append(problem)
        owned = self._owned.get(key)
        if owned is not None:
            if old is not None:
                for uid in _owner_uids(old):
                    _drop(owned[uid], old)
            if new is not None:
                for uid in _owner_uids(new):
                    owned[uid].append(new)

    def _reject(self, obj: object, message: str) -> None:
        api_version = kind = namespace = name = None
        if isinstance(obj, dict):
            api_version = obj.get("apiVersion") if isinstance(obj.get("apiVersion"), str) else None
            kind = obj.get("kind") if isinstance(obj.get("kind"), str) else None
            raw_meta = obj.get("metadata")
            meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
            namespace = meta.get("namespace") if isinstance(meta.get("namespace"), str) else None
            name = meta.get("name") if isinstance(meta.get("name"), str) else None
        # what identifies it is echoed in a finding: bounded and printable, as it may be bad
        self._rejected.append(BadObject(
            printable(api_version or "", 253), printable(kind or "", 100),
            None if namespace is None else printable(namespace, 63),
            None if name is None else printable(name, 253), message))

    # --- what could not be used ----------------------------------------------------------------

    @property
    def bad(self) -> list[BadObject]:
        # A field index dropped by a change is rebuilt here, so its bad objects are not lost.
        for key, path in [paths for paths in self._field_paths if paths not in self._fields]:
            self.with_field(key, path, "", None)
        found = list(self._rejected)
        for bad in self._field_bad.values():
            found.extend(bad)
        return found

    def bad_place(self, key: str, namespace: str | None) -> bool:
        """Whether an object of `key` in `namespace` could not be used: a "missing" object
        there may well be that one, so its absence is Unknown rather than NotFound."""
        return any(
            bad.kind and kind_key(bad.api_version, bad.kind) == key and bad.namespace == namespace
            for bad in self.bad
        )

    # --- lookups ---------------------------------------------------------------------------------

    def get(self, key: str, namespace: str | None, name: str) -> Obj | None:
        of_kind = self._by_kind.get(key)
        return of_kind.get(namespace, name) if of_kind is not None else None

    def of_kind(self, key: str) -> Iterable[Obj]:
        of_kind = self._by_kind.get(key)
        return of_kind.values() if of_kind is not None else ()

    def has_kind(self, key: str) -> bool:
        of_kind = self._by_kind.get(key)
        return of_kind is not None and len(of_kind) > 0

    def count(self) -> int:
        return sum(len(of_kind) for of_kind in self._by_kind.values())

    def count_of(self, key: str) -> int:
        of_kind = self._by_kind.get(key)
        return len(of_kind) if of_kind is not None else 0

    def named(self, key: str, name: str) -> list[Obj]:
        """Objects of `key` called `name`, in any namespace."""
        of_kind = self._by_kind.get(key)
        return of_kind.named(name) if of_kind is not None else []

    def with_label(self, key: str, label: str, value: str, namespace: str | None) -> list[Obj]:
        """Objects of `key` labelled label=value, in `namespace` (None: anywhere)."""
        index = self._labels.get((key, label))
        if index is None:
            index = defaultdict(list)
            for obj in self.of_kind(key):  # _label and _add_twice, unrolled: once per object
                meta = obj["metadata"]
                labels = meta.get("labels")
                if isinstance(labels, dict):
                    found = labels.get(label)
                    if isinstance(found, str):
                        own = meta.get("namespace")
                        if own is not None:
                            index[(own, found)].append(obj)
                        index[(None, found)].append(obj)
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
            bad: list[BadObject] = []
            for obj in self.of_kind(key):
                # The common cases (a string there, or nothing) walked without a call; the
                # rest by `_field`, which says what is wrong.
                current: Any = obj
                for part in path:
                    if type(current) is not dict:
                        break
                    current = current.get(part)
                else:
                    if type(current) is str:
                        _add_twice(index, obj, current)
                        continue
                if current is None:
                    continue
                found, problem = _field(obj, path)
                if found is not None:
                    _add_twice(index, obj, found)
                if problem is not None:
                    bad.append(problem)
            self._fields[(key, path)] = index
            self._field_bad[(key, path)] = bad
        return index.get((namespace, value), [])

    def owned_by(self, uid: str, key: str) -> list[Obj]:
        """Objects of `key` that list `uid` among their ownerReferences."""
        owned = self._owned.get(key)
        if owned is None:
            owned = defaultdict(list)
            for obj in self.of_kind(key):
                if obj["metadata"].get("ownerReferences") is not None:
                    for owner in _owner_uids(obj):
                        owned[owner].append(obj)
            self._owned[key] = owned
        return owned.get(uid, [])


def _label(obj: Obj, label: str) -> str | None:
    labels = obj["metadata"].get("labels")
    if isinstance(labels, dict):
        value = labels.get(label)
        if isinstance(value, str):
            return value
    return None


def _field(obj: Obj, path: tuple[str, ...]) -> tuple[str | None, BadObject | None]:
    """The string at `path` (None when absent), or what is wrong with the object there."""
    current: Any = obj
    for depth, part in enumerate(path):
        if current is None:
            return None, None
        if not isinstance(current, dict):
            return None, _bad_field(obj, Malformed(path[:depth], "a map", current))
        current = current.get(part)
    if current is None:
        return None, None
    if not isinstance(current, str):
        return None, _bad_field(obj, Malformed(path, "a string", current))
    return current, None


def _owner_uids(obj: Obj) -> list[str]:
    refs = obj["metadata"].get("ownerReferences")
    if not isinstance(refs, list):
        return []
    return [ref["uid"] for ref in refs if isinstance(ref, dict) and isinstance(ref.get("uid"), str)]


def _drop(objects: list[Obj], obj: Obj) -> None:
    """Remove `obj` itself (by identity: equal-looking objects are different objects)."""
    for position, candidate in enumerate(objects):
        if candidate is obj:
            del objects[position]
            return


def _drop_twice(index: _Lookup, obj: Obj, value: str) -> None:
    namespace = obj["metadata"].get("namespace")
    if namespace is not None:
        _drop(index[(namespace, value)], obj)
    _drop(index[(None, value)], obj)


def _field_paths_of(finder: object) -> tuple[tuple[str, ...], ...]:
    if isinstance(finder, ByField):
        return (finder.path,)
    if isinstance(finder, ByServiceClass):
        return finder.paths
    return ()


def _bad_field(obj: Obj, err: Malformed) -> BadObject:
    meta = obj["metadata"]
    return BadObject(
        obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"],
        f"cannot tell which application it belongs to: {err}",
    )


def _add_twice(index: _Lookup, obj: Obj, value: str) -> None:
    """Index under (its namespace, value) and under (None, value), meaning anywhere."""
    namespace = obj["metadata"].get("namespace")
    if namespace is not None:
        index[(namespace, value)].append(obj)
    index[(None, value)].append(obj)


def basic_problem(obj: object) -> str | None:
    # Called for every object of a dump: the common case (all well) is checked in one go,
    # the messages in their order only when something is wrong.
    if type(obj) is dict:
        api_version, kind, meta = obj.get("apiVersion"), obj.get("kind"), obj.get("metadata")
        if (type(api_version) is str and type(kind) is str and type(meta) is dict
                and (api_version, kind) in _GOOD_TYPES and _plainly_good(meta)):
            return None
    return _basic_problem(obj)


def _plainly_good(meta: dict[str, Any]) -> bool:
    """`basic_problem`'s common case for the metadata of an object of a type known good:
    True only when it would find nothing wrong."""
    get = meta.get
    name = get("name")
    if not (type(name) is str and name and len(name) <= 253 and name.isprintable()):
        return False
    labels = get("labels")
    if labels is not None and not (type(labels) is dict
                                   and _ONLY_STR.issuperset(map(type, labels.values()))):
        return False
    refs = get("ownerReferences")
    if refs is not None and not _good_refs(refs):
        return False
    # _METADATA_TYPES, unrolled (here rather than in a call: this runs for every object)
    if not (type(get("namespace")) in _STR_OR_NONE and type(get("uid")) in _STR_OR_NONE
            and type(get("creationTimestamp")) in _STR_OR_NONE
            and type(get("generation")) in _INT_OR_NONE
            and type(get("deletionTimestamp")) in _STR_OR_NONE):
        return False
    finalizers = get("finalizers")
    return finalizers is None or (type(finalizers) is list and all(map(_is_str, finalizers)))


_ONLY_STR = frozenset({str})
_STR_OR_NONE = frozenset({str, type(None)})
_INT_OR_NONE = frozenset({int, type(None)})
_GOOD_TYPES: set[tuple[str, str]] = set()  # (apiVersion, kind) known to be fine


def _is_str(value: object) -> bool:
    return type(value) is str


def _good_refs(refs: object) -> bool:
    return type(refs) is list and all(
        type(r) is dict and type(r.get("uid")) is str for r in refs)


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
    if len(meta["name"]) > 253 or not meta["name"].isprintable():
        return "metadata.name is not a Kubernetes name"
    if len(obj["kind"]) > 100 or len(obj["apiVersion"]) > 253 or not (
            obj["kind"].isprintable() and obj["apiVersion"].isprintable()):
        return "apiVersion or kind is not a Kubernetes name"
    if len(_GOOD_TYPES) < 10_000 and type(obj["kind"]) is str and type(obj["apiVersion"]) is str:
        _GOOD_TYPES.add((obj["apiVersion"], obj["kind"]))  # bounded, as a dump may be hostile
    # What links objects: read wrongly, an object would silently fall out of its chain. The
    # API server validates metadata, so only a dump can hold these (serve never sees them).
    labels = meta.get("labels")
    if labels is not None and (not isinstance(labels, dict) or not all(
            isinstance(v, str) for v in labels.values())):
        return "metadata.labels is not a map of strings"
    refs = meta.get("ownerReferences")
    if refs is not None and (not isinstance(refs, list) or not all(
            isinstance(r, dict) and isinstance(r.get("uid"), str) for r in refs)):
        return "metadata.ownerReferences is not a list of references with a uid"
    for field, expected in _METADATA_TYPES:
        value = meta.get(field)
        if value is not None and (not isinstance(value, expected) or isinstance(value, bool)):
            return f"metadata.{field} is a {type(value).__name__}, expected {_NAMES[expected]}"
    finalizers = meta.get("finalizers")
    if finalizers is not None and (not isinstance(finalizers, list) or not all(
            isinstance(f, str) for f in finalizers)):
        return "metadata.finalizers is not a list of strings"
    return None


# Metadata every judgement may read (ages, generations): checked once, for every object.
_METADATA_TYPES: tuple[tuple[str, type], ...] = (
    ("namespace", str), ("generation", int), ("creationTimestamp", str),
    ("deletionTimestamp", str), ("uid", str),
)
_NAMES: dict[type, str] = {str: "a string", int: "an integer"}


def _own_namespace(obj: Obj) -> str | None:
    namespace: str | None = obj["metadata"].get("namespace")
    return namespace


def _no_namespace(obj: Obj) -> None:
    return None
