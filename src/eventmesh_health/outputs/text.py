"""The human report of `check`: a summary table, then root causes with their symptoms."""

from __future__ import annotations

from collections import defaultdict

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from eventmesh_health.model import Finding, Health, MeshReport, ObjectRef

STYLE = {
    Health.HEALTHY: "green",
    Health.PROGRESSING: "cyan",
    Health.UNKNOWN: "yellow",
    Health.DEGRADED: "dark_orange",
    Health.UNHEALTHY: "bold red",
}
MARK = {
    Health.HEALTHY: "✓",
    Health.PROGRESSING: "…",
    Health.UNKNOWN: "?",
    Health.DEGRADED: "!",
    Health.UNHEALTHY: "✗",
}


def health_text(health: Health) -> Text:
    return Text(f"{MARK[health]} {health.value}", style=STYLE[health])


def _located(report: MeshReport) -> list[tuple[str, Finding]]:
    """Every finding with where it was reported ('system', 'app', 'app/ns', 'Kind ns/name'
    for a flow)."""
    located = [("system", f) for f in report.system.findings]
    for app in report.applications:
        located.extend((app.name, f) for f in app.findings)
        for ns in app.namespaces:
            located.extend((f"{app.name}/{ns.name}", f) for f in ns.findings)
    for flow in report.flows:
        located.extend((f"{flow.kind} {flow.namespace}/{flow.name}", f) for f in flow.findings)
    return located


def _key(ref: ObjectRef) -> tuple[str, str, str | None, str | None]:
    return (ref.api_version, ref.kind, ref.namespace, ref.name)


def render_check(report: MeshReport) -> RenderableType:
    parts: list[RenderableType] = []
    header = Text("Event mesh: ")
    header.append_text(health_text(report.health))
    if report.source is not None:
        skipped = sum(report.source.skipped_kinds.values())
        header.append(
            f"   ({report.source.objects} objects read at {report.source.taken_at}"
            + (f", {skipped} of other kinds skipped" if skipped else "")
            + ")",
            style="dim",
        )
    parts.append(header)

    table = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
    for column in ("APPLICATION", "NAMESPACE", "HEALTH", "STATE", "ROOT CAUSE"):
        table.add_column(column)
    # A mesh without applications (Knative v1) has the system row here, its flows below.
    table.add_row("(system)", "", health_text(report.system.health), "", _cause(
        report.system.findings))
    for app in report.applications:
        unbound = "" if app.namespaces else "not bound to any namespace"
        table.add_row(app.name, "", health_text(app.health), f"{app.state}/4",
                      _cause(app.findings) or unbound)
        for ns in app.namespaces:
            table.add_row("", ns.name, health_text(ns.health), f"{ns.state}/4",
                          _cause(ns.findings, app.findings))
    parts.append(Text(""))
    parts.append(table)
    if report.flows:
        flows = Table(show_edge=False, pad_edge=False, box=None, header_style="bold")
        for column in ("FLOW", "NAMESPACE", "NAME", "HEALTH", "ROOT CAUSE"):
            flows.add_column(column)
        for flow in report.flows:
            flows.add_row(flow.kind, flow.namespace, flow.name, health_text(flow.health),
                          _cause(flow.findings))
        parts.append(Text(""))
        parts.append(flows)

    located = _located(report)
    roots = [(where, f) for where, f in located if f.root_cause]
    if roots:
        parts.append(Text(""))
        parts.append(Text("Root causes", style="bold underline"))
        symptoms: dict[tuple[str, str, str | None, str | None], list[tuple[str, Finding]]] = (
            defaultdict(list)
        )
        for where, finding in located:
            if not finding.root_cause and finding.caused_by is not None:
                symptoms[_key(finding.caused_by)].append((where, finding))
        shown: set[tuple[str, str, str | None, str | None]] = set()
        number = 0
        for _, finding in roots:
            key = _key(finding.object)
            if key in shown:
                continue
            shown.add(key)
            number += 1
            affected = sorted({w for w, f in roots if _key(f.object) == key})
            line = Text(f"{number:>2}. ")
            line.append(f"{finding.health.value:<11}", style=STYLE[finding.health])
            line.append(str(finding.object), style="bold")
            line.append(f"  {finding.reason}", style=STYLE[finding.health])
            parts.append(line)
            if finding.message:
                parts.append(Text(f"      {finding.message}"))
            parts.append(Text(f"      seen in: {', '.join(affected)}", style="dim"))
            caused = symptoms.get(key, [])
            if caused:
                parts.append(Text(f"      causes {len(caused)} symptom(s):", style="dim"))
                for s_where, symptom in caused:
                    parts.append(Text(
                        f"        - [{s_where}] {symptom.object}: {symptom.reason}"
                        + (f" — {symptom.message}" if symptom.message else ""),
                        style="dim",
                    ))
    return Group(*parts)


def _cause(findings: list[Finding], upstream: list[Finding] | None = None) -> Text | str:
    for finding in findings:
        if finding.root_cause:
            return Text(f"{finding.object}: {finding.reason}", style=STYLE[finding.health])
    for finding in findings:
        if finding.caused_by is not None:
            return Text(f"← {finding.caused_by}", style="dim")
    if upstream:
        return Text("← the application's own chain", style="dim")
    return ""


def print_check(report: MeshReport, console: Console) -> None:
    console.print(render_check(report))
