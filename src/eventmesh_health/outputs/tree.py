"""`explain`: one application's or flow's whole chain as a tree, each link with its status."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.text import Text
from rich.tree import Tree

from eventmesh_health.analysis.causes import Causes
from eventmesh_health.analysis.graph import AppUnit, FlowUnit, Node
from eventmesh_health.model import ApplicationReport, FlowReport, Health, printable
from eventmesh_health.outputs.text import MARK, STYLE, health_text


def _label(node: Node, causes: Causes) -> Text:
    health = node.verdict.health
    text = Text(f"{MARK[health]} ", style=STYLE[health])
    text.append(str(node.ref), style="bold" if node.failing else "")
    if node.obj is None:
        text.append(" (missing)", style=STYLE[health])
    text.append(f"  {node.verdict.reason}", style=STYLE[health])
    if node.verdict.message:
        text.append(f": {node.verdict.message}", style="" if node.failing else "dim")
    roots = causes.roots(node)
    if roots == [node]:
        text.append("  ◀ ROOT CAUSE", style="bold red" if health is Health.UNHEALTHY else "bold")
    elif roots:
        text.append(f"  ← caused by {roots[0].ref}", style="dim")
    text.append(f"   [{node.description}]", style="dim italic")
    return text


def _add(tree: Tree, nodes: Sequence[Node], causes: Causes) -> None:
    for node in nodes:
        branch = tree.add(_label(node, causes))
        _add(branch, node.children, causes)


def explain_tree(unit: AppUnit, report: ApplicationReport, causes: Causes) -> Tree:
    title = Text(f"Application {unit.name}  ")
    title.append_text(health_text(report.health))
    title.append(f"  state {report.state}/4", style="dim")
    tree = Tree(title)
    _add(tree, [n for n in unit.nodes if n.parent is None], causes)
    for ns_unit, ns_report in zip(unit.namespaces, report.namespaces, strict=True):
        label = Text(f"namespace {ns_unit.name}  ")
        label.append_text(health_text(ns_report.health))
        label.append(f"  state {ns_report.state}/4", style="dim")
        branch = tree.add(label)
        _add(branch, [n for n in ns_unit.nodes if n.parent is None], causes)
    if not unit.namespaces:
        tree.add(Text("not bound to any namespace (state 1)", style="dim"))
    return tree


CONDITION_TEXT_LIMIT = 500  # characters of a condition's reason or message shown


def _conditions(node: Node) -> list[dict[str, str]]:
    """The object's status conditions as its controller wrote them (type, status, reason,
    message), each text printable and cut short; [] for a missing object or none."""
    status = node.obj.get("status") if node.obj is not None else None
    found = status.get("conditions") if isinstance(status, dict) else None
    if not isinstance(found, list):
        return []
    result = []
    for condition in found[:20]:
        if isinstance(condition, dict) and isinstance(condition.get("type"), str):
            result.append({key: printable(str(condition.get(key) or ""), CONDITION_TEXT_LIMIT)
                           for key in ("type", "status", "reason", "message")})
    return result


def _node_json(node: Node, causes: Causes) -> dict[str, Any]:
    roots = causes.roots(node)
    return {
        "link": node.role,
        "description": node.description,
        "object": node.ref.model_dump(mode="json", by_alias=True),
        "exists": node.obj is not None,
        "health": node.verdict.health.value,
        "reason": node.verdict.reason,
        "message": node.verdict.message,
        "conditions": _conditions(node),
        "rootCause": roots == [node],
        "causedBy": None if not roots or roots == [node]
        else roots[0].ref.model_dump(mode="json", by_alias=True),
        "children": [_node_json(c, causes) for c in node.children],
    }


def explain_json(unit: AppUnit, report: ApplicationReport, causes: Causes) -> dict[str, Any]:
    return {
        "name": unit.name,
        "health": report.health.value,
        "state": report.state,
        "links": [_node_json(n, causes) for n in unit.nodes if n.parent is None],
        "namespaces": [
            {
                "name": ns_unit.name,
                "health": ns_report.health.value,
                "state": ns_report.state,
                "links": [_node_json(n, causes) for n in ns_unit.nodes if n.parent is None],
            }
            for ns_unit, ns_report in zip(unit.namespaces, report.namespaces, strict=True)
        ],
    }


def _system_needs(unit: FlowUnit) -> list[Node]:
    """The system components the flow's objects need directly (dispatcher, ingress, ...)."""
    own = {id(node) for node in unit.nodes}
    found: dict[int, Node] = {}
    for node in unit.nodes:
        for need in node.needs:
            if id(need) not in own:
                found.setdefault(id(need), need)
    return list(found.values())


def explain_flow_tree(unit: FlowUnit, report: FlowReport, causes: Causes) -> Tree:
    title = Text(f"{unit.kind} {unit.namespace}/{unit.name} ({unit.flow} flow)  ")
    title.append_text(health_text(report.health))
    tree = Tree(title)
    _add(tree, [n for n in unit.nodes if n.parent is None], causes)
    system = _system_needs(unit)
    if system:
        branch = tree.add(Text("system components it needs", style="dim"))
        for node in system:
            _add(branch, [node], causes)
    return tree


def explain_flow_json(unit: FlowUnit, report: FlowReport, causes: Causes) -> dict[str, Any]:
    return {
        "flow": unit.flow,
        "kind": unit.kind,
        "namespace": unit.namespace,
        "name": unit.name,
        "health": report.health.value,
        "links": [_node_json(n, causes) for n in unit.nodes if n.parent is None],
        "system": [_node_json(n, causes) for n in _system_needs(unit)],
    }
