"""Resolve a profile against a snapshot into a graph of judged nodes.

One node per link instance: an object that was found (and judged), or an
expected object that is missing. Nodes point at the nodes they need; the
causes module walks those edges to separate root causes from symptoms.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from operator import itemgetter
from string import Formatter
from typing import Any

from eventmesh_health import reasons
from eventmesh_health.analysis.fields import Malformed, Obj, get_list, get_map, get_str
from eventmesh_health.analysis.index import Index
from eventmesh_health.analysis.rules import (
    HEALTHY,
    SERVICE_RULES,
    Context,
    Thresholds,
    Verdict,
    decide,
    judge,
    plainly_available,
    plainly_provisioned,
    plainly_ready,
)
from eventmesh_health.model import Health, ObjectRef
from eventmesh_health.snapshot import Snapshot
from eventmesh_health.topology import (
    ByField,
    ByLabels,
    ByName,
    ByOwner,
    ByRef,
    ByReference,
    ByServiceClass,
    Component,
    Expect,
    Flow,
    Judge,
    Kind,
    Link,
    Profile,
    Scope,
    TypeFilter,
    judge_for,
    kind_key,
)
from eventmesh_health.topology.core import (
    DEPLOYMENT,
    ENDPOINT_SLICE,
    ENDPOINTS,
    POD,
    SERVICE,
    STATEFULSET,
)

SYSTEM_PREFIX = "system:"
# Workloads, judged with their Pods.
_WORKLOAD_JUDGES = {DEPLOYMENT.key: Judge.DEPLOYMENT, STATEFULSET.key: Judge.STATEFULSET}


@dataclass(eq=False, slots=True)
class Node:
    role: str
    description: str
    # The reference of a missing object; for a found one it is made from the object on demand
    # (most nodes are healthy and never need one).
    known_ref: ObjectRef | None
    obj: Obj | None
    verdict: Verdict
    need_ids: tuple[str, ...] = ()
    parent: Node | None = None
    values: dict[str, str] = field(default_factory=dict)
    # Set once, when the node is wired (needs) or its children found; most nodes have no
    # children, and the nodes of one link and kind share one tuple of needs: no two lists
    # per node (≈0.1 KiB each in `serve`, which keeps every node).
    needs: Sequence[Node] = ()
    children: Sequence[Node] = ()
    # For an expected object that is missing: the verdict on its absence, before causes
    # may soften it to NotYetCreated.
    absent: Verdict | None = None
    # For a found object: its own verdict, before causes may soften a failure that only
    # echoes something still starting upstream (`causes.settle`).
    judged: Verdict | None = None

    @property
    def failing(self) -> bool:
        return self.verdict.health is not Health.HEALTHY

    @property
    def ref(self) -> ObjectRef:
        if self.known_ref is None:
            assert self.obj is not None, "a node is either found or has a known reference"
            self.known_ref = _obj_ref(self.obj)
        return self.known_ref


@dataclass(slots=True)
class NamespaceUnit:
    name: str
    nodes: list[Node]
    state: int


@dataclass(slots=True)
class AppUnit:
    name: str
    nodes: list[Node]
    namespaces: list[NamespaceUnit]


@dataclass(slots=True)
class FlowUnit:
    """One flow (`topology.Flow`): its root object's kind, place, and the judged nodes."""

    flow: str
    kind: str
    namespace: str
    name: str
    nodes: list[Node]

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.kind, self.namespace, self.name)


@dataclass(slots=True)
class Graph:
    system: list[Node]
    apps: list[AppUnit]
    index: Index
    flows: list[FlowUnit] = field(default_factory=list)


def build_graph(profile: Profile, snapshot: Snapshot, thresholds: Thresholds) -> Graph:
    return _Builder(profile, snapshot, thresholds).build()


def _ref(kind: Kind | tuple[str, str], namespace: str | None, name: str | None) -> ObjectRef:
    api_version, kind_name = (kind.api_version, kind.kind) if isinstance(kind, Kind) else kind
    return ObjectRef(api_version=api_version, kind=kind_name, namespace=namespace, name=name)


def _obj_ref(obj: Obj) -> ObjectRef:
    meta = obj["metadata"]
    return ObjectRef(
        api_version=obj["apiVersion"],
        kind=obj["kind"],
        namespace=meta.get("namespace"),
        name=meta["name"],
    )


class _Builder:
    def __init__(self, profile: Profile, snapshot: Snapshot, thresholds: Thresholds) -> None:
        self.profile = profile
        self.snapshot = snapshot
        self.thresholds = thresholds
        self.index = Index(profile, snapshot.objects)
        self.verdicts: dict[tuple[int, Judge], Verdict] = {}
        # (namespace, flow root name) -> the event types known to be sent to it.
        self.sent_types: dict[tuple[str, str], set[str]] = {}
        self.components: dict[str, Node] = {}
        self.system: list[Node] = []
        self.order = {link.id: position for position, link in enumerate(profile.all_links)}
        plans = {link.id: self._plan(link) for link in profile.all_links}
        # (finder anywhere, the label naming the namespace served, if the objects carry one)
        self.namespace_sources = [
            (self._finder(link, anywhere=True),
             link.find.namespace_label if isinstance(link.find, ByLabels) else None)
            for link in (profile.link(source.link) for source in profile.namespace_sources)
        ]
        self.app_links = self._links(
            [link for link in profile.links if link.scope is Scope.APPLICATION], plans)
        self.ns_links = self._links(
            [link for link in profile.links if link.scope is Scope.NAMESPACE], plans)
        # A flow's root is bound to its object before the rest is resolved.
        self.flow_links = {
            flow.id: (plans[flow.links[0].id], self._links(list(flow.links), plans,
                                                           root=flow.links[0]))
            for flow in profile.flows
        }
        # A flow's root is made by a user: when it is missing, nothing it needs explains that.
        self.user_made = {flow.links[0].id for flow in profile.flows}
        self.edges = _edges(profile)
        self.base_context = Context(now=snapshot.taken_at, thresholds=thresholds)
        self.unobserved_context = replace(self.base_context, observes_generation=False)
        # Per kind key: does its controller write status.observedGeneration (the profile says).
        self.observes_generation = {k.key: k.observed_generation for k in profile.kinds}
        self.classes = {k.key: k.classes for k in profile.kinds if k.classes}
        # Per kind key judged as Knative: whether its generations are compared, or None for a
        # kind judged per class (never plainly Ready).
        self.plainly_judged: dict[str, bool | None] = {
            k.key: None if k.key in self.classes else k.observed_generation for k in profile.kinds
        }
        # (apiVersion, kind) of an object judged as Knative -> `plainly_judged` of its kind key
        self.plain_types: dict[tuple[Any, Any], object] = {}
        self.states = {
            link.id: (link.state, link.state_when) for link in profile.links
            if link.state is not None
        }

    # --- entry -----------------------------------------------------------------------------

    def build(self) -> Graph:
        self._system()
        apps = []
        if self.profile.application is not None:
            for obj in sorted(
                self.index.of_kind(self.profile.application.key),
                key=lambda o: str(o["metadata"]["name"]),
            ):
                apps.append(self._application(obj))
        flows = [self.flow(flow, obj) for flow, obj in self.flow_roots()]
        return Graph(self.system, apps, self.index, flows)

    def flow_roots(self, namespaces: set[str] | None = None) -> list[tuple[Flow, FlowRoot]]:
        """Every flow root (in `namespaces` only, if given), and every root that objects
        name but that does not exist (`Flow.referrers`), in report order: by flow, then
        namespace and name."""
        roots: list[tuple[Flow, FlowRoot]] = []
        for flow in self.profile.flows:
            owners = {k.kind for k in flow.not_if_owned_by}
            found: list[FlowRoot] = []
            present: set[tuple[str, str]] = set()
            for kind in flow.roots:
                for obj in self.index.of_kind(kind.key):
                    meta = obj["metadata"]
                    if namespaces is not None and meta.get("namespace") not in namespaces:
                        continue
                    present.add((str(meta.get("namespace")), str(meta["name"])))
                    if owners and any(isinstance(ref, dict) and ref.get("kind") in owners
                                      for ref in meta.get("ownerReferences") or []):
                        continue
                    found.append(obj)
            missing: set[tuple[str, str]] = set()
            for kind, path in flow.referrers:
                for obj in self.index.of_kind(kind.key):
                    namespace = obj["metadata"].get("namespace")
                    if namespaces is not None and namespace not in namespaces:
                        continue
                    # A controlled object (a Trigger's Subscription) is its owner's business.
                    if any(isinstance(ref, dict) and ref.get("controller")
                           for ref in obj["metadata"].get("ownerReferences") or []):
                        continue
                    name = _string_at(obj, path)
                    if name and (str(namespace), name) not in present:
                        missing.add((str(namespace), name))
            found.extend(_ref(flow.roots[0], ns, name) for ns, name in missing)
            found.sort(key=_root_order)
            roots.extend((flow, root) for root in found)
        return roots

    def flow(self, flow: Flow, root: FlowRoot) -> FlowUnit:
        """The flow rooted at `root`: an object, or the reference of one that is named but
        missing (its Triggers or Subscriptions are then its symptoms)."""
        root_plan, links = self.flow_links[flow.id]
        root_link = root_plan.link
        if isinstance(root, ObjectRef):
            namespace, name = str(root.namespace), str(root.name)
            values = {"flow": name, "namespace": namespace}
            absent = self._absent(root, root_link.description)
            node = Node(root_link.id, root_link.description, root, None, absent,
                        root_link.needs, None, values, absent=absent)
            kind = root.kind
        else:
            meta = root["metadata"]
            name, namespace = str(meta["name"]), str(meta.get("namespace"))
            values = {"flow": name, "namespace": namespace}
            node = Node(root_link.id, root_link.description, None, root,
                        self._judge(root, self._judge_of(root_link, root), root_link.label),
                        root_link.needs, None, values)
            kind = str(root["kind"])
        nodes = self._resolve(links, values, [], None, seed={root_link.id: [node]})
        return FlowUnit(flow.id, kind, namespace, name, nodes)

    def set_input(self, snapshot: Snapshot) -> None:
        """New time and kind coverage (the objects live in the index): judge afresh."""
        self.snapshot = snapshot
        self.base_context = Context(now=snapshot.taken_at, thresholds=self.thresholds)
        self.unobserved_context = replace(self.base_context, observes_generation=False)
        self.verdicts.clear()
        self.sent_types.clear()

    def refresh_system(self) -> tuple[bool, bool]:
        """Judge the system components again: (any verdict changed, structure changed).
        When the structure is the same, the existing nodes are updated in place, so the
        application nodes that need them stay wired."""
        old_system, old_components = self.system, self.components
        self.system, self.components = [], {}
        self._system()
        same = len(old_system) == len(self.system) and all(
            a.role == b.role and a.ref == b.ref for a, b in zip(old_system, self.system,
                                                                strict=True)
        )
        if not same:
            return True, True
        changed = False
        for old, new in zip(old_system, self.system, strict=True):
            # compared before any settling softened it; settled afresh at the next report
            before = old.absent or old.judged or old.verdict
            changed = changed or before != (new.absent or new.verdict)
            old.obj, old.verdict, old.absent, old.judged = new.obj, new.verdict, new.absent, None
        self.system, self.components = old_system, old_components
        return changed, False

    def application(self, app_obj: Obj) -> AppUnit:
        return self._application(app_obj)

    # --- judging ---------------------------------------------------------------------------

    def _context(self, obj: Obj, link_judge: Judge, label: tuple[str, str] | None) -> Context:
        if link_judge in (Judge.DEPLOYMENT, Judge.STATEFULSET):
            return Context(now=self.snapshot.taken_at, thresholds=self.thresholds,
                           pods=self._pods(obj))
        if label is not None:
            return Context(now=self.snapshot.taken_at, thresholds=self.thresholds, label=label)
        if link_judge is Judge.SERVICE:
            meta = obj["metadata"]
            return Context(now=self.snapshot.taken_at, thresholds=self.thresholds,
                           endpoints=self._endpoints(meta.get("namespace"), str(meta["name"])))
        if link_judge is Judge.KNATIVE:
            key = kind_key(str(obj.get("apiVersion")), str(obj.get("kind")))
            classes = self.classes.get(key)
            context = (self.base_context if self.observes_generation.get(key, False)
                       else self.unobserved_context)
            return replace(context, classes=classes) if classes else context
        return self.base_context

    def _endpoints(self, namespace: str | None, name: str) -> list[Obj]:
        """A Service's Endpoints and EndpointSlices."""
        return [
            *([e] if (e := self.index.get(ENDPOINTS.key, namespace, name)) else []),
            *self.index.with_label(ENDPOINT_SLICE.key, "kubernetes.io/service-name", name,
                                   namespace),
        ]

    def _judge(self, obj: Obj, link_judge: Judge, label: tuple[str, str] | None = None) -> Verdict:
        # The common cases first, each a function of the object alone: deciding one again
        # costs less than a (tuple) key and a dict entry per object.
        if link_judge is Judge.KNATIVE:
            if label is None:
                # what `judge` decides first for most objects, without making their Context
                type_ = (obj.get("apiVersion"), obj.get("kind"))
                observes = self.plain_types.get(type_, _UNSET)
                if observes is _UNSET:
                    observes = self.plainly_judged.get(kind_key(str(type_[0]), str(type_[1])),
                                                       False)
                    if len(self.plain_types) < 10_000:  # bounded: a dump may be hostile
                        self.plain_types[type_] = observes
                if observes is not None and plainly_ready(obj, observes is True):
                    return HEALTHY
        elif link_judge is Judge.EXISTS:
            # EXISTS_RULES' only rule, `being_deleted`, says nothing of most objects
            meta = obj.get("metadata")
            if type(meta) is dict and meta.get("deletionTimestamp") is None:
                return HEALTHY
        elif link_judge is Judge.SERVICE_INSTANCE:
            if plainly_provisioned(obj):
                return HEALTHY
        elif link_judge is Judge.NAMESPACE_LABEL and label is not None:
            # NAMESPACE_LABEL_RULES' common case: not being deleted, and labelled so
            meta = obj.get("metadata")
            if type(meta) is dict and meta.get("deletionTimestamp") is None:
                labels = meta.get("labels")
                if type(labels) is dict and labels.get(label[0]) == label[1]:
                    return HEALTHY
        key = (id(obj), link_judge)
        verdict = self.verdicts.get(key)
        if verdict is not None:
            return verdict
        if link_judge is Judge.DEPLOYMENT:
            try:
                pods: list[Obj] | None = self._pods(obj)
            except Malformed:
                pods = None  # the rules say so
            if pods is not None and plainly_available(obj, pods):
                verdict = HEALTHY
        if verdict is None:
            try:
                ctx = self._context(obj, link_judge, label)
            except Malformed as err:
                verdict = Verdict(Health.UNKNOWN, reasons.MALFORMED_OBJECT, str(err))
            else:
                verdict = judge(link_judge, obj, ctx)
        self.verdicts[key] = verdict
        return verdict

    def _pods(self, deployment: Obj) -> list[Obj]:
        selector = get_map(deployment, "spec", "selector", "matchLabels")
        if not selector:
            return []
        namespace = deployment["metadata"].get("namespace")
        (first_key, first_value), *rest = selector.items()
        if not isinstance(first_value, str):
            raise Malformed(("spec", "selector", "matchLabels", first_key), "a string", first_value)
        pods = self.index.with_label(POD.key, first_key, first_value, namespace)
        if not rest:
            return pods
        return [
            pod for pod in pods
            if all((pod["metadata"].get("labels") or {}).get(k) == v for k, v in rest)
        ]

    def _collected(self, key: str) -> bool:
        if self.snapshot.collected is not None:
            return key in self.snapshot.collected
        return self.index.has_kind(key)

    def _absent(self, ref: ObjectRef, description: str) -> Verdict:
        """The verdict on an expected object that is not in the snapshot."""
        key = kind_key(ref.api_version, ref.kind)
        if key in self.snapshot.unavailable:
            return Verdict(Health.UNKNOWN, reasons.KIND_NOT_AVAILABLE,
                           self.snapshot.unavailable[key])
        if not self._collected(key):
            return Verdict(
                Health.UNKNOWN,
                reasons.NOT_COLLECTED,
                f"the snapshot holds no {ref.kind} objects, so it cannot tell whether "
                f"{description} exists",
            )
        if self.index.bad_place(key, ref.namespace):
            return Verdict(
                Health.UNKNOWN,
                reasons.MALFORMED_CANDIDATE,
                f"not found, but a malformed {ref.kind} object here may be it",
            )
        return Verdict(Health.UNHEALTHY, reasons.NOT_FOUND, f"missing: {description}")

    # --- system components -------------------------------------------------------------------

    def _system(self) -> None:
        for component in self.profile.components:
            self._component(component)
        for kind in self.profile.webhook_kinds:
            for config in self.index.of_kind(kind.key):
                self._webhook_configuration(config)

    def _component(self, component: Component) -> None:
        required = component.required and (not component.required_if_any or any(
            self.index.has_kind(k.key) for k in component.required_if_any
        ))
        workload = component.workload or DEPLOYMENT
        obj = self.index.get(workload.key, component.namespace, component.deployment)
        if obj is None and not required:
            return
        description = f"the {component.role} {component.deployment}"
        ref = _ref(workload, component.namespace, component.deployment)
        absent = None if obj else self._absent(ref, description)
        verdict = self._judge(obj, _WORKLOAD_JUDGES[workload.key]) if obj else absent
        assert verdict is not None
        node = Node(f"{SYSTEM_PREFIX}{component.id}", description, ref, obj, verdict,
                    absent=absent)
        self.system.append(node)
        handle = node
        if component.service is not None:
            handle = self._service_node(component.namespace, component.service, node)
        self.components[component.id] = handle

    def _service_node(self, namespace: str, name: str, backend: Node | None) -> Node:
        role = f"service:{namespace}/{name}"
        for existing in self.system:
            if existing.role == role:
                return existing
        ref = _ref(SERVICE, namespace, name)
        obj = self.index.get(SERVICE.key, namespace, name)
        description = f"the Service {namespace}/{name}"
        absent = None
        if obj is None:
            verdict = absent = self._absent(ref, description)
        else:
            ctx = Context(now=self.snapshot.taken_at, thresholds=self.thresholds,
                          endpoints=self._endpoints(namespace, name))
            verdict = decide(SERVICE_RULES, obj, ctx)
        node = Node(role, description, ref, obj, verdict, absent=absent)
        if backend is not None:
            node.needs = node.children = (backend,)
        self.system.append(node)
        return node

    def _webhook_configuration(self, config: Obj) -> None:
        try:
            webhooks = get_list(config, "webhooks") or []
            targets: list[tuple[str, str, str, str]] = []
            for hook in webhooks:
                namespace = get_str(hook, "clientConfig", "service", "namespace")
                name = get_str(hook, "clientConfig", "service", "name")
                if namespace in self.profile.system_namespaces and name:
                    policy = get_str(hook, "failurePolicy") or "Fail"
                    targets.append((str(get_str(hook, "name")), namespace, name, policy))
        except Malformed as err:
            node = Node("webhook", "an admission webhook configuration", None, config,
                        Verdict(Health.UNKNOWN, reasons.MALFORMED_OBJECT, str(err)))
            self.system.append(node)
            return
        if not targets:
            return
        node = Node("webhook", "an admission webhook configuration of the mesh", None, config,
                    HEALTHY)
        backends: list[Node] = []
        for hook_name, namespace, name, policy in targets:
            backend = next(
                (
                    c for c in self.components.values()
                    if c.ref.namespace == namespace and c.ref.name == name
                    and c.ref.kind == SERVICE.kind
                ),
                None,
            ) or self._service_node(namespace, name, None)
            backends.append(backend)
            if backend.failing and node.verdict is HEALTHY:
                rejects = policy == "Fail"
                node.verdict = Verdict(
                    Health.UNHEALTHY if rejects else Health.DEGRADED,
                    reasons.WEBHOOK_UNAVAILABLE,
                    f"webhook {hook_name} calls Service {namespace}/{name}, which cannot answer: "
                    + ("the API server rejects the objects it admits (failurePolicy Fail)"
                       if rejects else "admission is skipped (failurePolicy Ignore)"),
                )
        node.needs = node.children = tuple(backends)
        self.system.append(node)

    # --- applications ------------------------------------------------------------------------

    def _application(self, app_obj: Obj) -> AppUnit:
        app = str(app_obj["metadata"]["name"])
        values = {"app": app}
        service_ids: list[str] = []
        services_problem: Malformed | None = None
        try:
            service_ids = _events_service_ids(app_obj, self.profile.events_entry_type)
        except Malformed as err:
            services_problem = err
        app_nodes = self._resolve(self.app_links, values, service_ids, None)
        app_by_link: dict[str, list[Node]] = {}
        for node in app_nodes:
            app_by_link.setdefault(node.role, []).append(node)
        if services_problem is not None:
            for node in app_nodes:
                if node.obj is app_obj and not node.failing:
                    node.verdict = Verdict(
                        Health.UNKNOWN, reasons.MALFORMED_OBJECT,
                        f"cannot tell its Events services: {services_problem}",
                    )
        namespaces = []
        for ns in sorted(self._bound_namespaces(app, service_ids)):
            ns_values = {**values, "namespace": ns}
            nodes = self._resolve(self.ns_links, ns_values, service_ids, app_by_link)
            namespaces.append(NamespaceUnit(ns, nodes, self._state(nodes)))
        return AppUnit(app, app_nodes, namespaces)

    def _bound_namespaces(self, app: str, service_ids: list[str]) -> set[str]:
        found: set[str] = set()
        values = {"app": app}
        for find, label in self.namespace_sources:
            for obj in find(values, service_ids, None):
                if label:
                    target = (obj["metadata"].get("labels") or {}).get(label)
                else:
                    target = obj["metadata"].get("namespace")
                if isinstance(target, str) and target:
                    found.add(target)
        return found

    def _state(self, nodes: Iterable[Node]) -> int:
        reached = {1}
        for node in nodes:
            link_state = self.states.get(node.role)
            if link_state is None or node.obj is None:
                continue
            level, when = link_state
            if when is not None:
                path, expected = when
                try:
                    if get_str(node.obj, *path) != expected:
                        continue
                except Malformed:
                    continue
            reached.add(level)
        state = 1
        while state + 1 in reached:
            state += 1
        return state

    def _resolve(
        self,
        links: _Links,
        values: dict[str, str],
        service_ids: list[str],
        app_by_link: dict[str, list[Node]] | None,
        seed: dict[str, list[Node]] | None = None,
    ) -> list[Node]:
        """The nodes of `links`; `seed` holds nodes already made (a flow's root)."""
        by_link: dict[str, list[Node]] = dict(seed or {})
        for plan in links.resolve:
            made: list[Node] = []
            # what gates a link is resolved before it (`_resolution_order`)
            expected = self._expected(plan, by_link) if plan.gated else plan.always
            if plan.parent is not None:
                for parent in by_link.get(plan.parent, []):
                    if parent.obj is None:
                        continue
                    # most parents were found with these very values
                    scoped = (values if parent.values is values
                              else {**values, **parent.values})
                    children = self._nodes_for(plan, scoped, service_ids, parent, expected)
                    if children:
                        parent.children = ([*parent.children, *children] if parent.children
                                           else children)
                        made.extend(children)
            else:
                made = self._nodes_for(plan, values, service_ids, None, expected)
            by_link[plan.id] = made
        # Report and display in the profile's (upstream-first) order, not resolution order:
        # each link's nodes are already together, so that order is their concatenation.
        nodes = [node for link_id in links.shown for node in by_link.get(link_id, ())]
        self._wire(links, by_link, app_by_link)
        return nodes

    def _expected(self, plan: _LinkPlan, by_link: dict[str, list[Node]]) -> bool:
        link = plan.link
        if plan.optional:
            return False
        if link.unexpected_when is not None:
            gate, path, value = link.unexpected_when
            for node in by_link.get(gate, []):
                try:
                    if node.obj is not None and get_str(node.obj, *path) == value:
                        return False
                except Malformed:
                    continue  # its own judgement says what is wrong with it
        if link.only_when is not None:
            gate, path, value = link.only_when
            if not any(node.obj is not None and _field_is(node.obj, path, value)
                       for node in by_link.get(gate, [])):
                return False
        if plan.always:
            return True
        return any(node.obj is not None for node in by_link.get(link.expected, []))

    def _nodes_for(
        self,
        plan: _LinkPlan,
        values: dict[str, str],
        service_ids: list[str],
        parent: Node | None,
        expected: bool,
    ) -> list[Node]:
        link = plan.link
        if plan.optional:
            expected = False
        if plan.by_ref is not None and expected:
            # Expected only where the parent refers to an object of a kind this link judges
            # (a subscriber given as a URI, or a kind the profile does not read: nothing).
            assert parent is not None and parent.obj is not None
            try:
                api_version, kind_name, _, _ = _kref(parent.obj, plan.by_ref)
            except Malformed:
                api_version = kind_name = None
            expected = api_version is not None and kind_name is not None and any(
                k.key == kind_key(api_version, kind_name) for k in link.kinds)
        try:
            found = plan.find(values, service_ids, parent)
        except Malformed as err:
            assert parent is not None and parent.obj is not None  # only parents' fields are read
            return [Node(plan.id, plan.description, _obj_ref(parent.obj), None,
                         Verdict(Health.UNKNOWN, reasons.MALFORMED_OBJECT, str(err)), plan.needs,
                         parent)]
        if not found:
            if not expected:
                return []
            ref = self._missing_ref(link, values, parent)
            absent = self._absent(ref, plan.description)
            return [Node(plan.id, plan.description, ref, None, absent, plan.needs, parent,
                         absent=absent)]
        if len(found) > 1:  # a stable order, whatever order the objects arrived in
            found.sort(key=lambda o: (o["metadata"].get("namespace") or "", o["metadata"]["name"]))
        nodes = []
        judge_ = plan.judge
        for obj in found:
            verdict = self._judge(obj, judge_ or self._judge_of(link, obj), plan.label)
            if plan.type_filter is not None and not verdict.health.rank:
                verdict = self._type_filter(plan.type_filter, obj, values) or verdict
            node_values = values
            if plan.service_class is not None:
                service_id = _matched_service_id(obj, plan.service_class, service_ids)
                node_values = {**values, "service_id": service_id}
            nodes.append(Node(plan.id, plan.description, None, obj, verdict,
                              plan.needs, parent, node_values))
        return nodes

    def _type_filter(self, check: TypeFilter, obj: Obj, values: dict[str, str]) -> Verdict | None:
        """FilterMatchesNoKnownType when the types known to reach the flow's root are known
        and the object's exact type filter is none of them."""
        try:
            wanted = get_str(obj, *check.path)
        except Malformed:
            return None  # the object's own judgement covers a broken spec
        if wanted is None:
            return None
        target = (values.get("namespace", ""), values.get("flow", ""))
        known = self.sent_types.get(target)
        if known is None:
            known = self.sent_types[target] = self._sent_types(check, *target)
        if not known or wanted in known:
            return None
        shown = ", ".join(sorted(known)[:10]) + (", ..." if len(known) > 10 else "")
        return Verdict(
            Health.DEGRADED, reasons.FILTER_MATCHES_NO_KNOWN_TYPE,
            f"filters on type {wanted!r}, which none of the event types known to reach "
            f"{target[1]} is ({shown}: from its EventTypes and sources); it receives nothing "
            "unless a sender they do not list posts that type",
        )

    def _sent_types(self, check: TypeFilter, namespace: str, name: str) -> set[str]:
        types: set[str] = set()
        for producer in check.producers:
            for obj in self.index.of_kind(producer.kind.key):
                if obj["metadata"].get("namespace") != namespace:
                    continue
                ref = _map_at(obj, producer.ref)
                if ref is None or ref.get("name") != name or ref.get("namespace") not in (
                        None, "", namespace):
                    continue
                items = _value_at(obj, producer.types)
                for item in items if isinstance(items, list) else []:
                    if not isinstance(item, dict):
                        continue
                    value = item.get("value") if item.get("name") == "type" else item.get("type")
                    if isinstance(value, str) and value:
                        types.add(value)
        return types

    def _judge_of(self, link: Link, obj: Obj) -> Judge:
        if not link.judges:
            return link.judge
        return judge_for(link, kind_key(str(obj.get("apiVersion")), str(obj.get("kind"))))

    def _missing_ref(self, link: Link, values: dict[str, str], parent: Node | None) -> ObjectRef:
        finder = link.find
        # Of alternative kinds (a version variant), the first this cluster has at all.
        kind = next(
            (k for k in link.kinds
             if k.key not in self.snapshot.unavailable and self._collected(k.key)),
            link.kinds[0],
        )
        if isinstance(finder, ByName):
            namespace = finder.namespace.format(**values) if finder.namespace else None
            return _ref(kind, namespace, finder.name.format(**values))
        if isinstance(finder, ByRef) and parent is not None and parent.obj is not None:
            api_version, kind_name, namespace, name = _kref(parent.obj, finder)
            if api_version and kind_name:
                return _ref((api_version, kind_name), namespace, name)
        if isinstance(finder, ByReference) and parent is not None and parent.obj is not None:
            api_version, kind_name, name = _referenced(parent.obj, finder)
            namespace = parent.obj["metadata"].get("namespace")
            if api_version and kind_name:
                return _ref((api_version, kind_name), namespace, name)
            return _ref(kind, namespace, name)
        namespace = getattr(finder, "namespace", None)
        return _ref(kind, namespace.format(**values) if namespace else None, None)

    # --- plans: what is decided once per profile, not per link instance ---------------------

    def _links(self, links: list[Link], plans: dict[str, _LinkPlan],
               root: Link | None = None) -> _Links:
        ordered = _resolution_order(links)
        if root is not None:
            assert ordered[0] is root, "a flow's first link is its root"
            ordered = ordered[1:]
        shown = tuple(sorted((link.id for link in links), key=self.order.__getitem__))
        return _Links([plans[link.id] for link in ordered], shown)

    def _plan(self, link: Link) -> _LinkPlan:
        finder = link.find
        return _LinkPlan(
            link, link.id, link.description, link.needs, link.parent,
            optional=link.expected is Expect.OPTIONAL,
            always=link.expected is Expect.ALWAYS,
            gated=not (link.expected is Expect.OPTIONAL or (
                link.unexpected_when is None and link.only_when is None
                and link.expected is Expect.ALWAYS)),
            judge=None if link.judges else link.judge,
            label=link.label,
            type_filter=link.type_filter,
            service_class=finder if isinstance(finder, ByServiceClass) else None,
            by_ref=finder if isinstance(finder, ByRef) else None,
            find=self._finder(link),
        )

    def _finder(self, link: Link, anywhere: bool = False) -> _Find:
        """How one link's objects are found, its kinds and templates bound once. With
        `anywhere`, ignoring the namespace being looked at (to discover which namespaces an
        application is bound to)."""
        finder = link.find
        keys = tuple(kind.key for kind in link.kinds)
        index = self.index
        if not keys:
            return lambda values, service_ids, parent: []
        if isinstance(finder, ByName):
            names = _template(finder.name)
            if anywhere:
                named = index.named

                def by_name_anywhere(values: dict[str, str], service_ids: list[str],
                                     parent: Node | None) -> list[Obj]:
                    name = names(values)
                    return [obj for key in keys for obj in named(key, name)]

                return by_name_anywhere
            get = index.get
            spaces = _template(finder.namespace) if finder.namespace else None
            if len(keys) == 1:
                key = keys[0]

                def by_name(values: dict[str, str], service_ids: list[str],
                            parent: Node | None) -> list[Obj]:
                    obj = get(key, spaces(values) if spaces else None, names(values))
                    return [] if obj is None else [obj]

                return by_name

            def by_names(values: dict[str, str], service_ids: list[str],
                         parent: Node | None) -> list[Obj]:
                name = names(values)
                namespace = spaces(values) if spaces else None
                found = []
                for key in keys:
                    obj = get(key, namespace, name)
                    if obj is not None:
                        found.append(obj)
                return found

            return by_names
        if isinstance(finder, ByLabels):
            with_label = index.with_label
            # The label naming the namespace served last, so that the first one looked up is
            # the one the lookup anywhere (which omits it) uses too: one label index, not two.
            labels = sorted(finder.labels, key=lambda item: item[0] == finder.namespace_label)
            wanted = [(key, _template(value)) for key, value in labels
                      if not (anywhere and key == finder.namespace_label)]
            (first_key, first_value), *rest = wanted
            label_spaces = _template(finder.namespace)

            def by_labels(values: dict[str, str], service_ids: list[str],
                          parent: Node | None) -> list[Obj]:
                value = first_value(values)
                others = [(key, template(values)) for key, template in rest]
                namespace = label_spaces(values)
                found: list[Obj] = []
                for key in keys:
                    candidates = with_label(key, first_key, value, namespace)
                    found.extend(
                        o for o in candidates
                        if all((o["metadata"].get("labels") or {}).get(k) == v for k, v in others)
                    )
                return found

            return by_labels
        if isinstance(finder, ByField):
            with_field = index.with_field
            path = finder.path
            field_spaces = None if anywhere else _template(finder.namespace)
            field_values = _template(finder.value)

            def by_field(values: dict[str, str], service_ids: list[str],
                         parent: Node | None) -> list[Obj]:
                found: list[Obj] = []
                for key in keys:
                    found.extend(with_field(key, path, field_values(values),
                                            field_spaces(values) if field_spaces else None))
                return found

            return by_field
        if isinstance(finder, ByServiceClass):
            return self._by_service_class(finder, keys, anywhere)
        if isinstance(finder, ByOwner):
            return self._by_owner(keys)
        if isinstance(finder, ByReference):
            return self._by_reference(finder, link.kinds)
        assert isinstance(finder, ByRef), f"a finder of each type is compiled, not {finder}"
        return self._by_ref(finder, link.kinds)

    def _by_service_class(self, finder: ByServiceClass, keys: tuple[str, ...],
                          anywhere: bool) -> _Find:
        with_field = self.index.with_field
        paths = finder.paths
        spaces = None if anywhere else _template(finder.namespace)

        def by_service_class(values: dict[str, str], service_ids: list[str],
                             parent: Node | None) -> list[Obj]:
            found: list[Obj] = []
            for key in keys:
                namespace = spaces(values) if spaces else None
                seen: set[int] = set()
                for service_id in service_ids:
                    for path in paths:
                        for obj in with_field(key, path, service_id, namespace):
                            if id(obj) not in seen:
                                seen.add(id(obj))
                                found.append(obj)
            return found

        return by_service_class

    def _by_owner(self, keys: tuple[str, ...]) -> _Find:
        owned_by = self.index.owned_by

        def by_owner(values: dict[str, str], service_ids: list[str],
                     parent: Node | None) -> list[Obj]:
            if parent is None or parent.obj is None:
                return []
            meta = parent.obj["metadata"]
            uid = meta.get("uid")
            namespace = meta.get("namespace")
            if not isinstance(uid, str):
                return []
            return [o for key in keys for o in owned_by(uid, key)
                    if o["metadata"].get("namespace") == namespace]

        return by_owner

    def _by_reference(self, finder: ByReference, kinds: tuple[Kind, ...]) -> _Find:
        get = self.index.get

        def by_reference(values: dict[str, str], service_ids: list[str],
                         parent: Node | None) -> list[Obj]:
            if parent is None or parent.obj is None:
                return []
            _api_version, kind_name, name = _referenced(parent.obj, finder)
            namespace = parent.obj["metadata"].get("namespace")
            found = []
            for kind in kinds:
                if kind_name is not None and kind_name != kind.kind:
                    continue
                obj = get(kind.key, namespace, name)
                if obj is not None:
                    found.append(obj)
            return found

        return by_reference

    def _by_ref(self, finder: ByRef, kinds: tuple[Kind, ...]) -> _Find:
        get = self.index.get

        def by_ref(values: dict[str, str], service_ids: list[str],
                   parent: Node | None) -> list[Obj]:
            if parent is None or parent.obj is None:
                return []
            api_version, kind_name, namespace, name = _kref(parent.obj, finder)
            found = []
            for kind in kinds:
                if (kind_name != kind.kind or api_version is None
                        or kind_key(api_version, kind_name) != kind.key):
                    continue
                obj = get(kind.key, namespace if kind.namespaced else None, name)
                if obj is not None:
                    found.append(obj)
            return found

        return by_ref

    # --- edges -------------------------------------------------------------------------------

    def _wire(
        self, links: _Links, by_link: dict[str, list[Node]],
        app_by_link: dict[str, list[Node]] | None,
    ) -> None:
        app_by_link = app_by_link or {}
        for link_id in links.shown:
            group = by_link.get(link_id)
            if not group:
                continue
            plan = self.edges[link_id]
            if plan.when:
                for node in group:
                    self._wire_node(node, plan, by_link, app_by_link)
                continue
            # What a found object of the link needs depends at most on its kind: worked out
            # once per kind for the link rather than once per node, and shared (a tuple).
            shared: dict[str, tuple[Node, ...] | None] = {}
            for node in group:
                obj = node.obj
                if obj is None:
                    self._wire_node(node, plan, by_link, app_by_link)
                    continue
                key = (kind_key(str(obj.get("apiVersion")), str(obj.get("kind")))
                       if plan.by_kind else "")
                if key in shared:
                    needs = shared[key]
                else:
                    steps = plan.found.get(key, plan.always)
                    needs = shared[key] = (None if plan.own.get(key, plan.always_own)
                                           else self._shared_needs(steps, by_link, app_by_link))
                if needs is None:
                    own = self._needs_of(node, plan.found.get(key, plan.always), by_link,
                                         app_by_link)
                    if own:
                        node.needs = own
                else:
                    node.needs = needs

    def _shared_needs(self, steps: list[_Step], by_link: dict[str, list[Node]],
                      app_by_link: dict[str, list[Node]]) -> tuple[Node, ...]:
        """The nodes `steps` lead to, none of which depends on the node itself."""
        needs: list[Node] = []
        for edge, target in steps:
            if edge is _Edge.SYSTEM:
                component = self.components.get(target)
                if component is not None:
                    needs.append(component)
            else:
                needs.extend(by_link.get(target) or app_by_link.get(target, []))
        return tuple(needs)

    def _wire_node(self, node: Node, plan: _Plan, by_link: dict[str, list[Node]],
                   app_by_link: dict[str, list[Node]]) -> None:
        steps = plan.always
        if node.obj is None and node.role in self.user_made:
            steps = []
        if plan.by_kind:
            obj = node.obj
            key = (kind_key(str(obj.get("apiVersion")), str(obj.get("kind")))
                   if obj is not None else kind_key(node.ref.api_version, node.ref.kind))
            steps = steps + plan.by_kind.get(key, [])
        if node.obj is None and plan.absent:
            steps = steps + plan.absent
        if plan.when and node.obj is not None:
            for path, value, more in plan.when:
                if _field_is(node.obj, path, value):
                    steps = steps + more
        needs = self._needs_of(node, steps, by_link, app_by_link)
        if needs:
            node.needs = needs

    def _needs_of(self, node: Node, steps: list[_Step], by_link: dict[str, list[Node]],
                  app_by_link: dict[str, list[Node]]) -> list[Node]:
        needs: list[Node] = []
        for edge, target in steps:
            if edge is _Edge.SYSTEM:
                component = self.components.get(target)
                if component is not None:
                    needs.append(component)
            elif edge is _Edge.PARENT:
                if node.parent is not None:
                    needs.append(node.parent)
            elif edge is _Edge.CHILDREN:
                needs.extend(c for c in node.children if c.role == target)
            else:
                needs.extend(by_link.get(target) or app_by_link.get(target, []))
        return needs


_UNSET = object()  # not looked up yet (a marker, compared by identity)
_Find = Callable[[dict[str, str], list[str], "Node | None"], list[Obj]]


@dataclass(slots=True)
class _LinkPlan:
    """One link, with what `_resolve` asks of it per instance decided once per profile."""

    link: Link
    id: str
    description: str
    needs: tuple[str, ...]
    parent: str | None
    optional: bool
    always: bool
    # Whether being expected depends on other links' nodes (else it is `always`)
    gated: bool
    judge: Judge | None  # None: judged per kind (`Link.judges`)
    label: tuple[str, str] | None
    type_filter: TypeFilter | None
    service_class: ByServiceClass | None
    by_ref: ByRef | None
    find: _Find


@dataclass(slots=True)
class _Links:
    """Links resolved together: in resolution order, and their ids in report order."""

    resolve: list[_LinkPlan]
    shown: tuple[str, ...]


def _template(text: str) -> Callable[[dict[str, str]], str]:
    """A finder's string ("{app}-event-service") compiled once: most are one value or none."""
    parts = list(Formatter().parse(text))
    if not parts:
        return lambda values: ""
    if len(parts) == 1:
        literal, name, spec, conversion = parts[0]
        if name is None:
            return lambda values: literal
        if not literal and name.isidentifier() and not spec and conversion is None:
            return itemgetter(name)
    return text.format_map


class _Edge(Enum):
    SYSTEM = "a system component"
    PARENT = "the node this one was found from"
    CHILDREN = "the nodes found from this one"
    SCOPE = "every node of that link in the namespace, else in the application"


_Step = tuple[_Edge, str]


@dataclass(slots=True)
class _Plan:
    """How one link's needs are wired: always, by the kind of object, when it is missing."""

    always: list[_Step]
    by_kind: dict[str, list[_Step]]
    absent: list[_Step]
    # (path, value, steps): further needs when the object has `value` at `path`.
    when: list[tuple[tuple[str, ...], str, list[_Step]]] = field(default_factory=list)
    # Per kind key with needs of its own: those of a found object (`always` for the rest),
    # and whether they depend on the node itself (its parent, its children), else they are
    # the same for all the link's nodes of that kind in one application or namespace.
    found: dict[str, list[_Step]] = field(init=False)
    own: dict[str, bool] = field(init=False)
    always_own: bool = field(init=False)

    def __post_init__(self) -> None:
        self.found = {key: self.always + steps for key, steps in self.by_kind.items()}
        self.own = {key: _own(steps) for key, steps in self.found.items()}
        self.always_own = _own(self.always)


def _own(steps: list[_Step]) -> bool:
    return any(edge in (_Edge.PARENT, _Edge.CHILDREN) for edge, _ in steps)


def _edges(profile: Profile) -> dict[str, _Plan]:
    """How each link's needs are wired, decided once per profile rather than per node."""
    parents = {link.id: link.parent for link in profile.all_links}

    def steps(link: Link, needs: Iterable[str]) -> list[_Step]:
        plan = []
        for need in needs:
            if need.startswith(SYSTEM_PREFIX):
                plan.append((_Edge.SYSTEM, need[len(SYSTEM_PREFIX):]))
            elif need == link.parent:
                plan.append((_Edge.PARENT, need))
            elif parents.get(need) == link.id:
                plan.append((_Edge.CHILDREN, need))
            else:
                plan.append((_Edge.SCOPE, need))
        return plan

    return {
        link.id: _Plan(
            steps(link, link.needs),
            {kind.key: steps(link, needs) for kind, needs in link.needs_by_kind},
            steps(link, link.created_by),
            [(path, value, steps(link, needs)) for path, value, needs in link.needs_when],
        )
        for link in profile.all_links
    }


def _resolution_order(links: list[Link]) -> list[Link]:
    """Profile order, except that a link's parent and its `expected` gate come first."""
    ids = {link.id for link in links}
    ordered: list[Link] = []
    placed: set[str] = set()
    pending = list(links)
    while pending:
        for link in pending:
            before = {link.parent, link.expected if isinstance(link.expected, str) else None,
                      link.unexpected_when[0] if link.unexpected_when else None}
            if all(dep is None or dep in placed or dep not in ids for dep in before):
                ordered.append(link)
                placed.add(link.id)
                pending.remove(link)
                break
        else:
            raise ValueError(f"cycle among parents/gates of links {[x.id for x in pending]}")
    return ordered


def _events_service_ids(app: Obj, entry_type: str) -> list[str]:
    ids = []
    for index, service in enumerate(get_list(app, "spec", "services") or []):
        if not isinstance(service, dict):
            raise Malformed(("spec", "services", str(index)), "a map", service)
        service_id = get_str(service, "id")
        entries = get_list(service, "entries") or []
        if service_id and any(isinstance(e, dict) and e.get("type") == entry_type
                              for e in entries):
            ids.append(service_id)
    return ids


def _matched_service_id(obj: Obj, finder: ByServiceClass, service_ids: list[str]) -> str:
    for path in finder.paths:
        try:
            value = get_str(obj, *path)
        except Malformed:
            continue
        if value in service_ids:
            return value
    return ""


FlowRoot = Obj | ObjectRef  # a root object, or a missing one that others name


def _root_order(root: FlowRoot) -> tuple[str, str, str]:
    if isinstance(root, ObjectRef):
        return (str(root.namespace), str(root.name), root.kind)
    return (str(root["metadata"].get("namespace")), str(root["metadata"]["name"]),
            str(root["kind"]))


def _value_at(obj: Obj, path: tuple[str, ...]) -> Any:
    current: Any = obj
    for part in path:
        if not isinstance(current, dict):
            return None
        current = current.get(part)
    return current


def _string_at(obj: Obj, path: tuple[str, ...]) -> str | None:
    value = _value_at(obj, path)
    return value if isinstance(value, str) else None


def _map_at(obj: Obj, path: tuple[str, ...]) -> dict[str, Any] | None:
    value = _value_at(obj, path)
    return value if isinstance(value, dict) else None


def _field_is(obj: Obj, path: tuple[str, ...], value: str) -> bool:
    current: Any = obj
    for part in path:
        if not isinstance(current, dict):
            return False
        current = current.get(part)
    return bool(current == value)


def _kref(parent: Obj, finder: ByRef) -> tuple[str | None, str | None, str | None, str]:
    """(apiVersion, kind, namespace, name) of the `KReference` at the finder's path; the
    parent's namespace when it names none. Nones when the parent has no ref there."""
    ref = get_map(parent, *finder.path)
    own = parent["metadata"].get("namespace")
    if not ref:
        return None, None, own, ""
    name = get_str(ref, "name") or ""
    return (get_str(ref, "apiVersion"), get_str(ref, "kind"),
            get_str(ref, "namespace") or own, name)


def _referenced(parent: Obj, finder: ByReference) -> tuple[str | None, str | None, str]:
    """(apiVersion, kind, name) of the object `parent` refers to (see `ByReference`)."""
    default_name = finder.name.format(parent=parent["metadata"]["name"])
    ref = get_map(parent, *finder.ref)
    if ref:
        name = get_str(ref, "name") or default_name
        return get_str(ref, "apiVersion"), get_str(ref, "kind"), name
    template: Any = get_map(parent, *finder.template) or {}
    return get_str(template, "apiVersion"), get_str(template, "kind"), default_name
