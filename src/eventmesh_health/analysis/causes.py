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


def settle(nodes: Iterable[Node], causes: Causes) -> None:
    """Soften what only follows from something upstream that is still being set up:

    - an expected object that is missing is not yet created (Progressing), not lost;
    - a found object that fails only because of it (a HTTPSource's `SinkNotFound` while
      its young Channel gets its address) is Progressing too, with its own reason: the
      echo of a start must not make an application Unhealthy. Once the upstream is past
      its progress deadline (Degraded), the echo counts again.
    """
    candidates = []
    for node in nodes:  # afresh: the upstream may have changed since the last settling
        if node.absent is not None:
            node.verdict = node.absent
        elif node.obj is not None:
            if node.judged is None:
                if node.verdict.health is Health.HEALTHY:
                    continue  # never softened (only failures are), nor to be: most nodes
                node.judged = node.verdict
            node.verdict = node.judged
        if node.verdict.health in _SOFTENED:
            candidates.append(node)
    for node in candidates:  # once every verdict is reset: causes read other nodes' verdicts
        own = node.verdict
        if node.absent is not None and own.reason != reasons.NOT_FOUND:
            continue
        roots = causes.roots(node)
        if roots == [node] or not roots:
            continue
        if node.absent is not None:
            if any(r.verdict.health is Health.PROGRESSING for r in roots):
                node.verdict = Verdict(Health.PROGRESSING, reasons.NOT_YET_CREATED,
                                       f"{own.message} (not yet created)")
        elif all(r.verdict.health is Health.PROGRESSING for r in roots):
            node.verdict = Verdict(
                Health.PROGRESSING, own.reason,
                f"{own.message} (while {roots[0].ref} is still being set up)")


# What `settle` may soften: failures, not "cannot tell".
_SOFTENED = frozenset({Health.UNHEALTHY, Health.DEGRADED})
