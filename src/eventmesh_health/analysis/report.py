"""Turn a judged graph into the report (the JSON contract)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from eventmesh_health import reasons
from eventmesh_health.analysis.causes import Causes, settle
from eventmesh_health.analysis.graph import AppUnit, FlowUnit, Graph, Node
from eventmesh_health.analysis.index import Index
from eventmesh_health.model import (
    ApplicationReport,
    Finding,
    FlowReport,
    Health,
    MeshReport,
    NamespaceReport,
    ObjectRef,
    Severity,
    SourceInfo,
    SystemReport,
    severity_for,
)
from eventmesh_health.snapshot import Snapshot
from eventmesh_health.topology import Profile
from eventmesh_health.topology.core import CRD


def finding_for(node: Node, causes: Causes) -> Finding:
    roots = causes.roots(node)
    root = roots == [node]
    health = node.verdict.health
    return Finding.model_construct(
        severity=severity_for(health),
        health=health,
        object=node.ref,
        reason=node.verdict.reason,
        message=node.verdict.message,
        root_cause=root,
        caused_by=None if root else roots[0].ref,
    )


def _findings(nodes: Iterable[Node], causes: Causes) -> list[Finding]:
    seen: set[int] = set()
    findings = []
    healthy = Health.HEALTHY
    for node in nodes:
        if node.verdict.health is not healthy and id(node) not in seen:
            seen.add(id(node))
            findings.append(finding_for(node, causes))
    # Root causes first: they are what to fix; symptoms follow in chain order.
    findings.sort(key=lambda f: not f.root_cause)
    return findings


def _health(nodes: Sequence[Node], extra: Iterable[Health] = ()) -> Health:
    # each health once: most nodes are Healthy
    return Health.worst({*(n.verdict.health for n in nodes), *extra})


def input_findings(graph: Graph, snapshot: Snapshot, profile: Profile) -> list[Finding]:
    """What in the input could not be used: malformed objects, unreadable kinds."""
    findings = []
    for bad in graph.index.bad:
        findings.append(Finding.model_construct(
            severity=Severity.WARNING, health=Health.UNKNOWN,
            object=ObjectRef(api_version=bad.api_version, kind=bad.kind, namespace=bad.namespace,
                             name=bad.name),
            reason=reasons.MALFORMED_OBJECT, message=bad.message, root_cause=True, caused_by=None,
        ))
    for problem in snapshot.problems:
        findings.append(Finding.model_construct(
            severity=Severity.WARNING, health=Health.UNKNOWN,
            object=ObjectRef(api_version="", kind="", namespace=None, name=None),
            reason=reasons.UNUSABLE_INPUT, message=f"{problem.where}: {problem.message}",
            root_cause=True, caused_by=None,
        ))
    optional = {k.key for k in profile.optional_kinds}
    for key, message in sorted(snapshot.unavailable.items()):
        kind = profile.kind(key)
        if key in optional or kind is None:
            continue
        findings.append(Finding.model_construct(
            severity=Severity.WARNING, health=Health.UNKNOWN,
            object=ObjectRef(api_version=CRD.api_version, kind=CRD.kind, namespace=None,
                             name=kind.resource),
            reason=reasons.KIND_NOT_AVAILABLE, message=message, root_cause=True, caused_by=None,
        ))
    return findings


def nodes_of(app: AppUnit) -> list[Node]:
    every = list(app.nodes)
    for ns in app.namespaces:
        every.extend(ns.nodes)
    return every


def system_report(
    graph: Graph, snapshot: Snapshot, profile: Profile, causes: Causes
) -> SystemReport:
    settle(graph.system, causes)
    extra = input_findings(graph, snapshot, profile)
    return SystemReport.model_construct(
        health=_health(graph.system, (f.health for f in extra)),
        findings=[*_findings(graph.system, causes), *extra],
    )


def application_report(app: AppUnit, causes: Causes) -> ApplicationReport:
    settle(nodes_of(app), causes)
    app_health = _health(app.nodes)
    namespaces = [
        NamespaceReport.model_construct(
            name=ns.name,
            health=Health.worst([_health(ns.nodes), app_health]),
            state=ns.state,
            findings=_findings(ns.nodes, causes),
        )
        for ns in app.namespaces
    ]
    return ApplicationReport.model_construct(
        name=app.name,
        health=Health.worst([app_health, *(ns.health for ns in namespaces)]),
        state=max((ns.state for ns in namespaces), default=1),
        findings=_findings(app.nodes, causes),
        namespaces=namespaces,
    )


def flow_report(flow: FlowUnit, causes: Causes) -> FlowReport:
    """A flow's health and findings. Unlike an application's, they include the failing
    system components the flow's objects need: a dead dispatcher leaves every Knative v1
    InMemoryChannel Ready (DispatcherReady does not gate it), yet no event gets through."""
    settle(flow.nodes, causes)
    seen = {id(node) for node in flow.nodes}
    pending = [need for node in flow.nodes for need in node.needs]
    system = []
    while pending:  # a component's Service needs its Deployment: follow needs all the way
        need = pending.pop()
        if id(need) in seen:
            continue
        seen.add(id(need))
        if need.failing:
            system.append(need)
        pending.extend(need.needs)
    every = [*flow.nodes, *system]
    return FlowReport.model_construct(
        flow=flow.flow, kind=flow.kind, namespace=flow.namespace, name=flow.name,
        health=_health(every), findings=_findings(every, causes),
    )


def mesh_report(
    system: SystemReport,
    applications: list[ApplicationReport],
    index: Index,
    snapshot: Snapshot,
    profile: str = "",
    flows: list[FlowReport] | None = None,
) -> MeshReport:
    flows = flows or []
    health = Health.worst([system.health, *(a.health for a in applications),
                           *(f.health for f in flows)])
    return MeshReport.model_construct(
        healthy=health is Health.HEALTHY,
        health=health,
        system=system,
        applications=applications,
        flows=flows,
        source=SourceInfo.model_construct(
            taken_at=snapshot.taken_at.isoformat().replace("+00:00", "Z"),
            objects=index.count(),
            skipped_kinds=dict(sorted({**snapshot.skipped, **index.skipped}.items())),
            profile=profile,
        ),
    )


def build_report(
    graph: Graph, snapshot: Snapshot, profile: Profile, causes: Causes | None = None
) -> MeshReport:
    causes = causes or Causes()
    system = system_report(graph, snapshot, profile, causes)
    applications = [application_report(app, causes) for app in graph.apps]
    flows = [flow_report(flow, causes) for flow in graph.flows]
    return mesh_report(system, applications, graph.index, snapshot, profile.name, flows)
