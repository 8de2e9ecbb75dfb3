"""What the web page shows, as the REST API serves it: the grid summary (paged, filtered),
the chain of an application or flow as a tree (as `explain` prints it), and the history.

The page renders these same objects (server side, and the page's script from the JSON), so
it shows nothing the REST API does not.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from eventmesh_health import reasons
from eventmesh_health.analysis.causes import Causes
from eventmesh_health.analysis.graph import AppUnit, FlowUnit
from eventmesh_health.model import (
    ApplicationReport,
    Finding,
    FlowReport,
    Health,
    MeshReport,
    ObjectRef,
)
from eventmesh_health.outputs.tree import explain_flow_json, explain_json
from eventmesh_health.serve.history import History, Transition, flow_key

__all__ = [
    "PAGE_SIZE",
    "ApplicationTree",
    "FlowTree",
    "HistoryList",
    "Summary",
    "SummaryIndex",
    "TreeLink",
]

PAGE_SIZE = 100
HEALTH_ORDER = [h.value for h in Health]  # best to worst
MAX_PAGE_SIZE = 500
PROBLEM = "problem"  # the health filter for "anything but Healthy"


def _key(ref: ObjectRef) -> tuple[str, str, str | None, str | None]:
    return (ref.api_version, ref.kind, ref.namespace, ref.name)


def _summary(finding: Finding) -> str:
    return f"{finding.object}: {finding.reason}"


# --- the grid -------------------------------------------------------------------------------


class GridNamespace(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    name: str
    health: Health
    state: int
    root_cause: str = Field(alias="rootCause", description="The first root cause, or \"\".")


class GridApplication(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    name: str
    health: Health
    state: int
    root_cause: str = Field(alias="rootCause",
                            description='"Kind namespace/name: Reason" of the first root '
                                        'cause, or "".')
    last_transition_time: datetime | None = Field(alias="lastTransitionTime")
    namespaces: list[GridNamespace]


class GridFlow(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    flow: str
    kind: str
    namespace: str
    name: str
    health: Health
    root_cause: str = Field(alias="rootCause")
    last_transition_time: datetime | None = Field(alias="lastTransitionTime")


class ApplicationPage(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    total: int = Field(description="Applications matching the filter.")
    page: int
    pages: int
    page_size: int = Field(alias="pageSize")
    items: list[GridApplication]


class FlowPage(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    total: int
    page: int
    pages: int
    page_size: int = Field(alias="pageSize")
    items: list[GridFlow]


class SystemSummary(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    health: Health
    root_causes: list[str] = Field(alias="rootCauses")


class Summary(BaseModel):
    """The mesh at a glance: what the grid of the web page shows."""

    model_config = ConfigDict(populate_by_name=True)

    health: Health
    healthy: bool
    degraded_reason: str | None = Field(
        alias="degradedReason", description="Why the report cannot be trusted right now "
        "(e.g. the API server unreachable), or null.")
    taken_at: str | None = Field(alias="takenAt")
    profile: str
    counts: dict[str, int] = Field(description="Applications per health (all of them).")
    flow_counts: dict[str, int] = Field(alias="flowCounts",
                                        description="Flows per health (all of them).")
    system: SystemSummary
    applications: ApplicationPage
    flows: FlowPage


def _worst_first(health: Health, name: str) -> tuple[int, str]:
    return (-health.rank, name)


class SummaryIndex:
    """The grid's rows of one report, computed once (worst first, then by name); pages
    and filters are cut from them per request."""

    def __init__(self, report: MeshReport, history: History,
                 transitions: Mapping[str, datetime]) -> None:
        self.report = report
        roots = root_cause_index(report)
        apps: list[tuple[str, dict[str, Any]]] = []
        for app in report.applications:
            latest = history.latest(app.name)
            when = transitions.get(app.name) or (latest.at if latest else None)
            apps.append((app.name + " " + " ".join(ns.name for ns in app.namespaces), {
                "name": app.name, "health": app.health.value, "state": app.state,
                "rootCause": app_root_cause(app, roots),
                "lastTransitionTime": _iso(when),
                "namespaces": [
                    {"name": ns.name, "health": ns.health.value, "state": ns.state,
                     "rootCause": _first_root(ns.findings, roots)}
                    for ns in app.namespaces
                ],
            }))
        apps.sort(key=lambda row: _worst_first(Health(row[1]["health"]), row[1]["name"]))
        self.apps = apps
        flows: list[tuple[str, dict[str, Any]]] = []
        for flow in report.flows:
            latest = history.latest(flow_key(flow.namespace, flow.kind, flow.name))
            flows.append((f"{flow.namespace}/{flow.name} {flow.kind}".lower(), {
                "flow": flow.flow, "kind": flow.kind, "namespace": flow.namespace,
                "name": flow.name, "health": flow.health.value,
                "rootCause": _first_root(flow.findings, roots),
                "lastTransitionTime": _iso(latest.at if latest else None),
            }))
        flows.sort(key=lambda row: (-Health(row[1]["health"]).rank, row[1]["namespace"],
                                    row[1]["name"], row[1]["kind"]))
        self.flows = flows
        self.counts = _counts(a.health for a in report.applications)
        self.flow_counts = _counts(f.health for f in report.flows)
        self.system_roots = [_summary(f) for f in report.system.findings if f.root_cause]

    def summary(self, *, q: str = "", health: str = "", page: int = 1, flow_page: int = 1,
                page_size: int = PAGE_SIZE, degraded_reason: str | None = None
                ) -> dict[str, Any]:
        """The JSON of `Summary` for one page of each list."""
        report = self.report
        return {
            "health": report.health.value,
            "healthy": report.healthy,
            "degradedReason": degraded_reason,
            "takenAt": report.source.taken_at if report.source else None,
            "profile": report.source.profile if report.source else "",
            "counts": self.counts,
            "flowCounts": self.flow_counts,
            "system": {"health": report.system.health.value, "rootCauses": self.system_roots},
            "applications": _page(self.apps, q, health, page, page_size),
            "flows": _page(self.flows, q, health, flow_page, page_size),
        }


def _counts(values: Iterable[Health]) -> dict[str, int]:
    counts = {h.value: 0 for h in Health}
    for value in values:
        counts[value.value] += 1
    return counts


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment is not None else None


def _matches(health: str) -> Callable[[str], bool]:
    if not health:
        return lambda h: True
    if health == PROBLEM:
        return lambda h: h != Health.HEALTHY.value
    return lambda h: h == health


def _page(rows: list[tuple[str, dict[str, Any]]], q: str, health: str, page: int,
          size: int) -> dict[str, Any]:
    needle = q.strip().lower()
    ok = _matches(health)
    if needle or health:
        chosen = [row for text, row in rows if ok(row["health"]) and needle in text]
    else:
        chosen = [row for _, row in rows]
    pages = max(1, math.ceil(len(chosen) / size))
    page = min(max(1, page), pages)
    return {"total": len(chosen), "page": page, "pages": pages, "pageSize": size,
            "items": chosen[(page - 1) * size:page * size]}


def root_cause_index(report: MeshReport) -> dict[Any, Finding]:
    """Every root-cause finding of the report by its object, the first one of each."""
    found: dict[Any, Finding] = {}
    for finding in _all_findings(report):
        if finding.root_cause:
            found.setdefault(_key(finding.object), finding)
    return found


class LazyRootCauseIndex(Mapping[Any, Finding]):
    """`root_cause_index(report)`, made at the first lookup: only a part whose symptoms name
    a cause it does not hold looks one up, and the index reads the whole report."""

    def __init__(self, report: MeshReport) -> None:
        self._report = report
        self._index: dict[Any, Finding] | None = None

    def _made(self) -> dict[Any, Finding]:
        if self._index is None:
            self._index = root_cause_index(self._report)
        return self._index

    def __getitem__(self, key: Any) -> Finding:
        return self._made()[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._made())

    def __len__(self) -> int:
        return len(self._made())


def _all_findings(report: MeshReport) -> Iterable[Finding]:
    yield from report.system.findings
    for app in report.applications:
        yield from app.findings
        for ns in app.namespaces:
            yield from ns.findings
    for flow in report.flows:
        yield from flow.findings


def _first_root(findings: Iterable[Finding], roots: Mapping[Any, Finding]) -> str:
    """The first root cause among `findings`, or the one the first symptom names."""
    findings = list(findings)
    for finding in findings:
        if finding.root_cause:
            return _summary(finding)
    for finding in findings:
        if finding.caused_by is not None:
            root = roots.get(_key(finding.caused_by))
            return _summary(root) if root is not None else f"{finding.caused_by}"
    return ""


def app_root_cause(app: ApplicationReport, roots: Mapping[Any, Finding]) -> str:
    """As the EventMeshHealth printer column: the application's own chain first, then its
    namespaces', then a root cause elsewhere that its symptoms name."""
    return _first_root([*app.findings, *(f for ns in app.namespaces for f in ns.findings)],
                       roots)


def flow_root_cause(flow: FlowReport, roots: Mapping[Any, Finding]) -> str:
    return _first_root(flow.findings, roots)


# --- trees (as `explain -o json`) -----------------------------------------------------------


class Condition(BaseModel):
    type: str
    status: str
    reason: str
    message: str


class TreeLink(BaseModel):
    """One link of the chain: an object the events pass (or need), with its verdict."""

    model_config = ConfigDict(populate_by_name=True)

    link: str = Field(description="The link's role in the chain (the profile's name).")
    description: str
    object: ObjectRef
    exists: bool
    health: Health
    reason: str
    message: str
    conditions: list[Condition] = Field(
        default_factory=list, description="The object's status conditions, as written.")
    root_cause: bool = Field(alias="rootCause")
    caused_by: ObjectRef | None = Field(default=None, alias="causedBy")
    children: list[TreeLink] = Field(default_factory=list)


class NamespaceTree(BaseModel):
    name: str
    health: Health
    state: int
    links: list[TreeLink]
    heartbeat: list[Finding] = Field(
        default_factory=list, description="The data-plane findings of this namespace "
        "(heartbeat probing: hops, latency, loss), when probing is on.")


class ApplicationTree(BaseModel):
    """An application's chain as `explain APP -o json` shows it."""

    name: str
    health: Health
    state: int
    links: list[TreeLink]
    namespaces: list[NamespaceTree]
    stale: str | None = Field(default=None, description="Why the links may be out of date "
                              "(the API server unreachable), or null.")


class FlowTree(BaseModel):
    """A flow's chain as `explain NAMESPACE/NAME -o json` shows it."""

    flow: str
    kind: str
    namespace: str
    name: str
    health: Health
    links: list[TreeLink]
    system: list[TreeLink] = Field(description="The system components the flow needs.")
    heartbeat: list[Finding] = Field(default_factory=list)
    stale: str | None = None


def data_plane(findings: Iterable[Finding]) -> list[Finding]:
    return [f for f in findings if f.reason in reasons.DATA_PLANE]


def application_tree(unit: AppUnit | None, app: ApplicationReport,
                     stale: str | None = None) -> dict[str, Any] | None:
    """`ApplicationTree` as JSON: `explain -o json` of the unit, judged as `app` says (its
    health, namespaces and data-plane findings); None when the unit does not fit `app`."""
    if unit is None or len(unit.namespaces) != len(app.namespaces):
        return None
    data = explain_json(unit, app, Causes())
    for ns_json, ns in zip(data["namespaces"], app.namespaces, strict=True):
        ns_json["heartbeat"] = [f.model_dump(mode="json", by_alias=True)
                                for f in data_plane(ns.findings)]
    data["stale"] = stale
    return data


def flow_tree(unit: FlowUnit | None, flow: FlowReport, stale: str | None = None
              ) -> dict[str, Any] | None:
    """`FlowTree` as JSON (`explain NAMESPACE/NAME -o json`), or None without a unit."""
    if unit is None:
        return None
    data = explain_flow_json(unit, flow, Causes())
    data["heartbeat"] = [f.model_dump(mode="json", by_alias=True)
                         for f in data_plane(flow.findings)]
    data["stale"] = stale
    return data


# --- history --------------------------------------------------------------------------------


class HistoryEntry(BaseModel):
    time: datetime
    health: Health
    previous: Health | None = Field(description="The health before; null: first seen.")
    root_cause: str = Field(alias="rootCause")


class HistoryList(BaseModel):
    """Transitions, oldest first: when the health or the first root cause changed."""

    transitions: list[HistoryEntry]


def history_json(entries: list[Transition]) -> dict[str, Any]:
    return {"transitions": [t.to_json() for t in entries]}
