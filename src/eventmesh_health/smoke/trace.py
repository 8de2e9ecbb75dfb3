"""The smoke event's trace, when a tracing backend is given (`smoke --trace-url`).

Knative's processes export spans in batches (OpenTelemetry's batch span processor, the
OpenCensus Zipkin exporter), so right after the event arrived — or did not — its trace may be
missing spans. The trace is asked for until it is whole (delivered or stopped, no span
whose parent the backend lacks) or `wait` has passed; then what the backend holds is reported
as it is, with the note that it may be partial. A backend that cannot be read costs a line in
the report, never the smoke test's verdict: that comes from the receiver.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from eventmesh_health.analysis.trace import TraceVerdict, diagnose
from eventmesh_health.sources.tracing import TraceBackend, TraceBackendError, TraceNotFound

__all__ = ["SmokeTrace", "look_up"]

PAUSE = 0.5  # between asks while the trace is incomplete


@dataclass(frozen=True)
class SmokeTrace:
    trace_id: str
    outcome: str  # delivered | stopped | unknown
    stopped_at: str | None
    detail: str
    complete: bool

    def to_json(self) -> dict[str, Any]:
        return {"traceId": self.trace_id, "outcome": self.outcome,
                "stoppedAt": self.stopped_at, "detail": self.detail,
                "complete": self.complete}

    def line(self) -> str:
        where = f" at {self.stopped_at}" if self.stopped_at else ""
        partial = "" if self.complete else " (the backend may not hold every span yet)"
        return f"trace {self.trace_id}: {self.outcome}{where}: {self.detail}{partial}"


def _whole(verdict: TraceVerdict) -> bool:
    return verdict.outcome != "unknown" and verdict.orphans == 0


def look_up(backend: TraceBackend, trace_id: str, wait: float,
            clock: Callable[[], float] = time.monotonic,
            pause: Callable[[float], None] = time.sleep) -> SmokeTrace:
    """Blocking (run it in a thread): ask until the trace is whole or `wait` has passed."""
    deadline = clock() + wait
    verdict: TraceVerdict | None = None
    problem = ""
    while True:
        try:
            verdict = diagnose(trace_id, backend.trace(trace_id))
            problem = ""
        except TraceNotFound:
            problem = f"{backend.kind} has no span of it"
        except TraceBackendError as err:
            return SmokeTrace(trace_id, "unknown", None, str(err), False)
        if (verdict is not None and _whole(verdict)) or clock() >= deadline:
            break
        pause(PAUSE)
    if verdict is None:
        return SmokeTrace(trace_id, "unknown", None, f"{problem} after {wait:.0f}s", False)
    stop = verdict.stops[0] if verdict.stops else None
    return SmokeTrace(trace_id, verdict.outcome, stop.hop if stop else None,
                      stop.reason if stop else verdict.summary, _whole(verdict))
