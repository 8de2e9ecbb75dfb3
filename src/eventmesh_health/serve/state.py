"""What the outputs of `serve` read: the current report and how it came about.

The orchestrator (serve/app.py) owns one `HealthState` and replaces its fields as
analysis results arrive; the REST API and the metrics only read it. Everything runs
in one asyncio event loop, so plain attribute reads are consistent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from eventmesh_health.model import ApplicationReport, FlowReport, Health, MeshReport
from eventmesh_health.serve.history import History


@dataclass
class HealthState:
    # None until the caches have synced and the first analysis ran.
    report: MeshReport | None = None
    # Application name -> when its health last changed (first seen counts as a change).
    transitions: dict[str, datetime] = field(default_factory=dict)
    # Application name -> its health before the last change (for Events and metrics).
    previous: dict[str, Health] = field(default_factory=dict)
    caches_synced: bool = False
    leader_election_running: bool = False
    is_leader: bool = False
    # Why the report cannot be trusted right now (e.g. watches disconnected), or None.
    degraded_reason: str | None = None
    # The transitions of each application and flow (health or first root cause changed).
    history: History = field(default_factory=History)
    # The chain of an application / a flow of the current report as `explain -o json` has it
    # (set by the orchestrator, which holds the analysis); None: not available.
    explain: Callable[[ApplicationReport], dict[str, Any] | None] | None = None
    explain_flow: Callable[[FlowReport], dict[str, Any] | None] | None = None

    def ready(self) -> tuple[bool, str]:
        """Readiness: caches synced and leader election running (when enabled)."""
        if not self.caches_synced:
            return False, "caches not yet synced"
        if not self.leader_election_running:
            return False, "leader election not running"
        return True, "ok"
