"""Root cause versus symptom.

A failing node whose needs are all fine is a root cause. A failing node that
needs a failing node is a symptom; its cause is the most upstream failing node
reached through its needs (the first one, in the profile's order, if several).
"""

from __future__ import annotations

from collections.abc import Iterable

from eventmesh_health import reasons
from eventmesh_health.analysis.graph import Node
from eventmesh_health.analysis.rules import Verdict
from eventmesh_health.model import Health


class Causes:
    def __init__(self) -> None:
        self._roots: dict[int, list[Node]] = {}

    def roots(self, node: Node) -> list[Node]:
        """The root causes behind `node` ([node] itself when it is one; [] when healthy)."""
        if not node.failing:
            return []
        return self._walk(node, set())

    def _walk(self, node: Node, visiting: set[int]) -> list[Node]:
        cached = self._roots.get(id(node))
        if cached is not None:
            return cached
        visiting.add(id(node))
        roots: list[Node] = []
        for need in node.needs:
            # A cycle is a profile mistake; stop there rather than loop.
            if not need.failing or id(need) in visiting:
                continue
            for root in self._walk(need, visiting):
                if root not in roots:
                    roots.append(root)
        visiting.discard(id(node))
        result = roots or [node]
        self._roots[id(node)] = result
        return result


def settle_missing(nodes: Iterable[Node], causes: Causes) -> None:
    """An expected object that is missing only because something upstream is still being
    set up is not yet created (Progressing), not lost (Unhealthy)."""
    for node in nodes:
        if node.absent is None:
            continue
        node.verdict = node.absent  # settle afresh: the upstream may have changed since
        if node.absent.reason != reasons.NOT_FOUND:
            continue
        roots = causes.roots(node)
        if roots != [node] and any(r.verdict.health is Health.PROGRESSING for r in roots):
            node.verdict = Verdict(
                Health.PROGRESSING, reasons.NOT_YET_CREATED,
                f"{node.absent.message} (not yet created)"
            )
