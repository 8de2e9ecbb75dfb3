"""The analysis: (profile, snapshot) -> report. Pure: no I/O, no clock of its own."""

from __future__ import annotations

import gc
from dataclasses import dataclass

from eventmesh_health.analysis.causes import Causes
from eventmesh_health.analysis.graph import Graph, build_graph
from eventmesh_health.analysis.report import build_report
from eventmesh_health.analysis.rules import Thresholds
from eventmesh_health.model import MeshReport
from eventmesh_health.snapshot import Snapshot
from eventmesh_health.topology import Profile
from eventmesh_health.topology.registry import DEFAULT

__all__ = ["Analysis", "Thresholds", "analyse", "analyse_graph"]


@dataclass(frozen=True)
class Analysis:
    """The judged graph (for `explain`), its causes, and the report built from them."""

    graph: Graph
    causes: Causes
    report: MeshReport


def analyse_graph(
    snapshot: Snapshot, profile: Profile | None = None, thresholds: Thresholds | None = None
) -> Analysis:
    """The analysis of `snapshot` by `profile` (default: `topology.registry.DEFAULT`)."""
    profile = profile or DEFAULT
    # The analysis allocates many small containers and frees none of them until it ends;
    # letting the cyclic GC scan the whole snapshot again and again meanwhile costs a third
    # of the run. It is switched back on (if it was on) before returning.
    collecting = gc.isenabled()
    gc.disable()
    try:
        graph = build_graph(profile, snapshot, thresholds or Thresholds())
        causes = Causes()
        return Analysis(graph, causes, build_report(graph, snapshot, profile, causes))
    finally:
        if collecting:
            gc.enable()


def analyse(
    snapshot: Snapshot, profile: Profile | None = None, thresholds: Thresholds | None = None
) -> MeshReport:
    return analyse_graph(snapshot, profile, thresholds).report
