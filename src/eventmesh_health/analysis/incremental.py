"""Keep an analysis current as objects change, re-evaluating only what a change can touch.

`serve` feeds it the changes its watches see. For each changed object it works out which
applications could include it — those whose chain held it (or expected it and found it
missing), and those the profile's finders would match it to (an object called `<app>`,
labelled `application-name: <app>`, in a namespace bound to the app, ...) — and runs the
same per-application analysis as `check` for those alone. Flows (`topology.Flow`) live in
one namespace: a change re-judges the flows of its namespace and those whose chain held
it (a subscriber in another namespace). The system components are
judged again on every batch (a handful of objects); when one of them changes, the causes
of every application with a failing link are worked out again.

Pure, like the rest of `analysis`: the caller passes the time and the kinds it could read.
"""

from __future__ import annotations

import gc
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from typing import Any

from eventmesh_health.analysis.causes import Causes
from eventmesh_health.analysis.fields import Obj
from eventmesh_health.analysis.graph import AppUnit, FlowUnit, Graph, Node, _Builder
from eventmesh_health.analysis.index import NameKey
from eventmesh_health.analysis.multimap import OneOrMany
from eventmesh_health.analysis.report import (
    application_report,
    flow_report,
    mesh_report,
    nodes_of,
    system_report,
)
from eventmesh_health.analysis.rules import Thresholds
from eventmesh_health.model import ApplicationReport, FlowReport, MeshReport, SystemReport
from eventmesh_health.snapshot import Snapshot
from eventmesh_health.topology import (
    ByField,
    ByLabels,
    ByName,
    ByOwner,
    ByReference,
    ByServiceClass,
    Profile,
    kind_key,
)
from eventmesh_health.topology.core import DEPLOYMENT, POD

_FlowKey = tuple[str, str, str]  # (root kind, namespace, name)
_NodeKey = tuple[str, str | None, str | None]  # (kind key, namespace, name); name None: any
_ANY = re.compile(r"\{(\w+)\}")


def _pattern(template: str) -> re.Pattern[str]:
    """`{app}-event-service` -> a regex that recovers `app` from a name."""
    parts = _ANY.split(template)
    regex = "".join(
        f"(?P<{part}>.+?)" if i % 2 else re.escape(part) for i, part in enumerate(parts)
    )
    return re.compile(regex)


class IncrementalAnalysis:
    def __init__(
        self, snapshot: Snapshot, profile: Profile, thresholds: Thresholds | None = None
    ) -> None:
        self.profile = profile
        self.builder = _Builder(profile, snapshot, thresholds or Thresholds())
        self.units: dict[str, AppUnit] = {}
        self.reports: dict[str, ApplicationReport] = {}
        # Which applications (flows) hold an object or a namespace: the inverse of the
        # stored units, worked out again from a unit when it is forgotten (not kept twice).
        self._apps_by_ref: OneOrMany[_NodeKey, str] = OneOrMany()
        self._apps_by_ns: OneOrMany[str, str] = OneOrMany()
        self._apps_by_service: OneOrMany[str, str] = OneOrMany()
        self._apps_by_uid: OneOrMany[str, str] = OneOrMany()
        self._inverse = self._inverse_finders()
        self.flows: dict[_FlowKey, FlowUnit] = {}
        self.flow_reports: dict[_FlowKey, FlowReport] = {}
        self._flows_by_ref: OneOrMany[_NodeKey, _FlowKey] = OneOrMany()
        with _no_cyclic_gc():
            graph = self.builder.build()
            causes = Causes()
            self.system: SystemReport = system_report(graph, snapshot, profile, causes)
            for unit in graph.apps:
                self._store(unit, causes)
            for flow in graph.flows:
                self._store_flow(flow, causes)
        # What the first build alone needed, dropped now rather than at the first change
        # (`set_input` would): its verdicts by object (≈120 bytes per object) and the list
        # of all objects (the index holds them).
        self.builder.verdicts.clear()
        self.builder.snapshot = replace(snapshot, objects=())

    # --- the report ----------------------------------------------------------------------------

    def report(self) -> MeshReport:
        applications = [self.reports[name] for name in sorted(self.reports)]
        order = {flow.id: i for i, flow in enumerate(self.profile.flows)}
        flows = sorted(self.flow_reports.values(),
                       key=lambda f: (order.get(f.flow, 0), f.namespace, f.name, f.kind))
        return mesh_report(self.system, applications, self.builder.index, self.builder.snapshot,
                           self.profile.name, flows)

    # --- changes -------------------------------------------------------------------------------

    def apply(
        self,
        upserts: Iterable[Obj],
        deletions: Iterable[Obj],
        now: datetime,
        collected: frozenset[str] | None = None,
        unavailable: Mapping[str, str] | None = None,
    ) -> set[str]:
        """Take changed objects into account; the names of applications whose report may
        have changed (an application that appeared or went away included)."""
        with _no_cyclic_gc():
            return self._apply(upserts, deletions, now, collected, unavailable)

    def _apply(
        self,
        upserts: Iterable[Obj],
        deletions: Iterable[Obj],
        now: datetime,
        collected: frozenset[str] | None,
        unavailable: Mapping[str, str] | None,
    ) -> set[str]:
        index = self.builder.index
        snapshot = self.builder.snapshot
        upserts, deletions = list(upserts), list(deletions)
        coverage_changed = (
            (collected is not None and collected != snapshot.collected)
            or (unavailable is not None and dict(unavailable) != dict(snapshot.unavailable))
        )
        self.builder.set_input(replace(
            snapshot,
            objects=(),
            taken_at=now,
            collected=snapshot.collected if collected is None else collected,
            unavailable=snapshot.unavailable if unavailable is None else unavailable,
        ))
        # Without a list of collected kinds, a kind with no object at all counts as not
        # collected: its first object arriving or its last one going changes what every
        # application's missing objects mean (NotFound or NotCollected).
        inferred = self.builder.snapshot.collected is None
        touched = {index.key_of(obj) for obj in (*deletions, *upserts)} - {None}
        present = {key[0]: index.has_kind(key[0]) for key in touched if key is not None}
        affected: set[str] = set()
        flow_spaces: set[str] = set()  # namespaces whose flows are judged again
        for obj in deletions:
            key = index.key_of(obj)
            if key is not None:
                old = index.remove(key)
                affected |= self._candidates(obj)
                flow_spaces |= self._flow_namespaces(key)
                if old is not None:
                    affected |= self._candidates(old)
        for obj in upserts:
            key = index.key_of(obj)
            old = index.get(*key) if key is not None else None
            if old is not None:
                affected |= self._candidates(old)
            index.add(obj)
            affected |= self._candidates(obj)
            if key is not None:
                flow_spaces |= self._flow_namespaces(key)
        if inferred and any(index.has_kind(kind) != had for kind, had in present.items()):
            coverage_changed = True
        if coverage_changed:
            affected |= set(self.units)
            flow_spaces |= {key[1] for key in self.flows}
        return self._reevaluate(affected, flow_spaces)

    def tick(self, now: datetime) -> set[str]:
        """Judge again what depends on the clock (how long something has been Progressing,
        Terminating or stuck): every application with a link that is not Healthy."""
        snapshot = self.builder.snapshot
        self.builder.set_input(replace(snapshot, taken_at=now))
        with _no_cyclic_gc():
            return self._reevaluate(
                {name for name, unit in self.units.items()
                 if any(node.failing for node in nodes_of(unit))},
                {key[1] for key, flow in self.flows.items()
                 if any(node.failing for node in flow.nodes)},
            )

    def _reevaluate(self, affected: set[str], flow_spaces: set[str] | None = None) -> set[str]:
        system_changed, restructured = self.builder.refresh_system()
        flow_spaces = set(flow_spaces or ())
        if restructured:
            affected |= set(self.units)
            flow_spaces |= {key[1] for key in self.flows}
        causes = Causes()
        application = self.profile.application
        for name in sorted(affected):
            app_obj = (self.builder.index.get(application.key, None, name)
                       if application is not None else None)
            self._forget(name)
            if app_obj is not None:
                self._store(self.builder.application(app_obj), causes)
        if flow_spaces:
            for key in [k for k in self.flows if k[1] in flow_spaces]:
                self._forget_flow(key)
            for kind, root in self.builder.flow_roots(flow_spaces):
                self._store_flow(self.builder.flow(kind, root), causes)
        if system_changed:
            # Causes may now lead to (or away from) a system component.
            for name, unit in self.units.items():
                if name not in affected and any(n.failing for n in nodes_of(unit)):
                    self.reports[name] = application_report(unit, causes)
                    affected.add(name)
            # A flow carries the failing components it needs (`flow_report`): all of them.
            for key, flow_unit in self.flows.items():
                if key[1] not in flow_spaces:
                    self.flow_reports[key] = flow_report(flow_unit, causes)
        graph = Graph(self.builder.system, [], self.builder.index)
        self.system = system_report(graph, self.builder.snapshot, self.profile, causes)
        return affected

    # --- bookkeeping -------------------------------------------------------------------------

    def _store(self, unit: AppUnit, causes: Causes) -> None:
        self.units[unit.name] = unit
        self.reports[unit.name] = application_report(unit, causes)
        self._index_app(unit, OneOrMany.add)

    def _index_app(self, unit: AppUnit, change: Callable[[OneOrMany[Any, str], Any, str], None],
                   ) -> None:
        """`change` (add or discard) the unit's name under everything it holds. A stored unit
        is never changed, so forgetting it discards exactly what storing it added."""
        name = unit.name
        for node in nodes_of(unit):
            # A found object by its uid alone (`_candidates` looks it up by the uid of what
            # the index holds under its name): a name key per object is ≈100 bytes more.
            uid = node.obj["metadata"].get("uid") if node.obj is not None else None
            if isinstance(uid, str):
                change(self._apps_by_uid, uid, name)
            else:
                change(self._apps_by_ref, self._node_key(node), name)
            service_id = node.values.get("service_id")
            if service_id:
                change(self._apps_by_service, service_id, name)
        for ns in unit.namespaces:
            change(self._apps_by_ns, ns.name, name)

    def _store_flow(self, flow: FlowUnit, causes: Causes) -> None:
        key = flow.key
        self.flows[key] = flow
        self.flow_reports[key] = flow_report(flow, causes)
        self._index_flow(flow, OneOrMany.add)

    def _index_flow(self, flow: FlowUnit,
                    change: Callable[[OneOrMany[Any, _FlowKey], Any, _FlowKey], None]) -> None:
        key = flow.key
        for node in flow.nodes:
            ref = self._node_key(node)
            change(self._flows_by_ref, ref, key)
            change(self._flows_by_ref, (ref[0], ref[1], None), key)

    def _forget_flow(self, key: tuple[str, str, str]) -> None:
        flow = self.flows.pop(key, None)
        self.flow_reports.pop(key, None)
        if flow is not None:
            self._index_flow(flow, OneOrMany.discard)
            _unlink(flow.nodes)

    def _flow_namespaces(self, key: NameKey) -> set[str]:
        """The namespaces whose flows a change of the object `key` may touch: its own, and
        those of flows whose chain held it (or missed it)."""
        if not self.profile.flows:
            return set()
        spaces = {key[1]} if key[1] is not None else set()
        for ref in (key, (key[0], key[1], None)):
            spaces |= {flow_key[1] for flow_key in self._flows_by_ref.get(ref)}
        return spaces

    def _forget(self, name: str) -> None:
        unit = self.units.pop(name, None)
        self.reports.pop(name, None)
        if unit is not None:
            self._index_app(unit, OneOrMany.discard)
            _unlink(nodes_of(unit))

    @staticmethod
    def _node_key(node: Node) -> _NodeKey:
        # From the object itself when found: `node.ref` would make (and keep) a pydantic
        # ObjectRef for every node, a fifth of what the analysis held.
        ref, obj = node.known_ref, node.obj
        if ref is None and obj is not None:
            meta = obj["metadata"]
            return (kind_key(obj["apiVersion"], obj["kind"]), meta.get("namespace"),
                    meta["name"])
        ref = node.ref
        return (kind_key(ref.api_version, ref.kind), ref.namespace, ref.name)

    # --- which applications can an object belong to ----------------------------------------------

    def _inverse_finders(self) -> dict[str, list[Any]]:
        """Per kind key, the finders that can match objects of that kind, precompiled."""
        inverse: dict[str, list[Any]] = defaultdict(list)
        for link in self.profile.links:  # flows are found by namespace (`_flow_namespaces`)
            finder = link.find
            for kind in link.kinds:
                if isinstance(finder, ByName):
                    inverse[kind.key].append((
                        "name",
                        _pattern(finder.namespace) if finder.namespace else None,
                        _pattern(finder.name),
                    ))
                elif isinstance(finder, ByLabels):
                    inverse[kind.key].append(("labels", finder.labels))
                elif isinstance(finder, ByField):
                    inverse[kind.key].append(("field", finder.path, finder.value))
                elif isinstance(finder, ByServiceClass):
                    inverse[kind.key].append(("class", finder.paths))
                elif isinstance(finder, ByOwner):
                    inverse[kind.key].append(("owner",))
                elif isinstance(finder, ByReference):
                    parent = self.profile.link(link.parent or "")
                    inverse[kind.key].append((
                        "reference", tuple(k.key for k in parent.kinds),
                        _pattern(finder.name),
                    ))
        return inverse

    def _bindings(self, found: Mapping[str, str]) -> set[str]:
        if "app" in found:
            return {found["app"]}
        if "namespace" in found:
            return self._apps_by_ns.get(found["namespace"])
        if "service_id" in found:
            return self._apps_by_service.get(found["service_id"])
        return set()

    def _candidates(self, obj: Obj) -> set[str]:
        key = self.builder.index.key_of(obj)
        if key is None:
            return set()
        kind, namespace, name = key
        meta = obj["metadata"]
        apps = self._apps_by_ref.get(key)
        apps |= self._apps_by_ref.get((kind, namespace, None))
        if isinstance(meta.get("uid"), str):
            apps |= self._apps_by_uid.get(meta["uid"])
        labels = meta.get("labels") if isinstance(meta.get("labels"), dict) else {}
        for rule in self._inverse.get(kind, ()):
            if rule[0] == "name":
                _, ns_pattern, name_pattern = rule
                found: dict[str, str] = {}
                if ns_pattern is not None:
                    match = ns_pattern.fullmatch(namespace or "")
                    if match is None:
                        continue
                    found.update(match.groupdict())
                match = name_pattern.fullmatch(name)
                if match is None:
                    continue
                found.update(match.groupdict())
                apps |= self._bindings(found)
            elif rule[0] == "labels":
                for label, template in rule[1]:
                    value = labels.get(label)
                    if isinstance(value, str) and template.startswith("{"):
                        apps |= self._bindings({template.strip("{}"): value})
            elif rule[0] == "field":
                value = _field(obj, rule[1])
                if value is not None and rule[2].startswith("{"):
                    apps |= self._bindings({rule[2].strip("{}"): value})
            elif rule[0] == "class":
                for path in rule[1]:
                    value = _field(obj, path)
                    if value is not None:
                        apps |= self._bindings({"service_id": value})
            elif rule[0] == "owner":
                for ref in meta.get("ownerReferences") or []:
                    if isinstance(ref, dict) and isinstance(ref.get("uid"), str):
                        apps |= self._apps_by_uid.get(ref["uid"])
            elif rule[0] == "reference":
                match = rule[2].fullmatch(name)
                if match is None:
                    continue
                for parent_kind in rule[1]:
                    apps |= self._holding((parent_kind, namespace, match.group("parent")))
                for ref in meta.get("ownerReferences") or []:  # owned by its parent
                    if isinstance(ref, dict) and isinstance(ref.get("uid"), str):
                        apps |= self._apps_by_uid.get(ref["uid"])
        if kind == POD.key:
            apps |= self._pod_owners(obj, namespace)
        return apps

    def _pod_owners(self, pod: Obj, namespace: str | None) -> set[str]:
        """Applications whose chain holds the Deployment that runs this Pod. A Deployment's
        Pods are named `<deployment>-<replicaset hash>-<suffix>`; the Deployment's selector
        must also match, so a look-alike name is not enough."""
        labels = pod["metadata"].get("labels")
        parts = str(pod["metadata"]["name"]).rsplit("-", 2)
        if not isinstance(labels, dict) or len(parts) != 3:
            return set()
        deployment = self.builder.index.get(DEPLOYMENT.key, namespace, parts[0])
        if deployment is None:
            return set()
        selector = _field(deployment, ("spec", "selector", "matchLabels"), want=dict)
        if not selector or any(labels.get(k) != v for k, v in selector.items()):
            return set()
        return self._holding((DEPLOYMENT.key, namespace, parts[0]))

    def _holding(self, key: NameKey) -> set[str]:
        """Applications whose chain holds the object the index has under `key`, or expected
        it and found it missing."""
        apps = self._apps_by_ref.get(key)
        obj = self.builder.index.get(*key)
        uid = obj["metadata"].get("uid") if obj is not None else None
        if isinstance(uid, str):
            apps |= self._apps_by_uid.get(uid)
        return apps


def _unlink(nodes: list[Node]) -> None:
    """Cut a forgotten unit's nodes from each other (a child names its parent, a parent its
    children), so that reference counting alone frees them: serve keeps what its first
    sync built out of the cyclic GC's reach (`gc.freeze`), where cycles would stay."""
    for node in nodes:
        node.parent = None
        node.needs = ()
        node.children = ()


@contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """As in `analyse`: no cyclic GC passes over the whole cache in the middle of an update."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def _field(obj: Obj, path: tuple[str, ...], want: type = str) -> Any:
    current: Any = obj
    for part in path:
        if not isinstance(current, dict):
            return None
        current = current.get(part)
    return current if isinstance(current, want) else None
