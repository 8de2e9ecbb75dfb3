"""Where the trace of a failed heartbeat stops (`serve --trace-url`): a source, not analysis.

The health names the trace id of a hop's newest failed heartbeat (`health._trace`); the
runner then asks for it here (`want`), off the event loop (the backend client is blocking
and may take its timeout), and re-evaluates when an answer arrives. The answer is an input
of the next evaluation (`known`), like the receiver's latest dead letter: the analysis never
waits on the backend, and a backend that is down costs a line in the finding, nothing else.

A trace that stopped (or was delivered) is kept; one the backend did not have yet, or could
not be asked about, is asked again after `retry_after`. At most `max_entries` are kept.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from eventmesh_health.analysis.trace import diagnose
from eventmesh_health.model import HeartbeatTrace
from eventmesh_health.sources.tracing import TraceBackend, TraceBackendError, TraceNotFound

__all__ = ["TraceLookups"]

log = logging.getLogger(__name__)


@dataclass
class TraceLookups:
    backend: TraceBackend
    retry_after: float = 15.0
    max_entries: int = 1000
    clock: Callable[[], float] = time.monotonic
    # trace id -> (what is known, when, final: a whole trace that stopped or was delivered)
    _known: OrderedDict[str, tuple[HeartbeatTrace, float, bool]] = field(
        default_factory=OrderedDict)
    _pending: set[str] = field(default_factory=set)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    lookups: int = 0

    def known(self, trace_id: str) -> HeartbeatTrace | None:
        entry = self._known.get(trace_id)
        return entry[0] if entry is not None else None

    def want(self, trace_ids: Iterable[str], on_answer: Callable[[], None]) -> None:
        """Ask the backend about each trace id without a final answer (in the running loop,
        each in a thread); `on_answer()` after each answer."""
        now = self.clock()
        for trace_id in trace_ids:
            entry = self._known.get(trace_id)
            if trace_id in self._pending or (entry is not None and (
                    entry[2] or now - entry[1] < self.retry_after)):
                continue
            self._pending.add(trace_id)
            task = asyncio.get_running_loop().create_task(self._ask(trace_id, on_answer))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _ask(self, trace_id: str, on_answer: Callable[[], None]) -> None:
        try:
            answer, final = await asyncio.to_thread(self._lookup, trace_id)
        finally:
            self._pending.discard(trace_id)
        self._known[trace_id] = (answer, self.clock(), final)
        self._known.move_to_end(trace_id)
        while len(self._known) > self.max_entries:
            self._known.popitem(last=False)
        on_answer()

    def _lookup(self, trace_id: str) -> tuple[HeartbeatTrace, bool]:
        self.lookups += 1
        try:
            verdict = diagnose(trace_id, self.backend.trace(trace_id))
        except TraceNotFound:
            return HeartbeatTrace(trace_id=trace_id, outcome="unknown",
                                  detail=f"{self.backend.kind} has no span of it (yet)"), False
        except TraceBackendError as err:
            log.info("trace %s: %s", trace_id, err)
            return HeartbeatTrace(trace_id=trace_id, outcome="unknown", detail=str(err)), False
        except Exception as err:  # never let a lookup take the prober down
            log.exception("trace %s: lookup failed", trace_id)
            return HeartbeatTrace(trace_id=trace_id, outcome="unknown",
                                  detail=f"lookup failed: {type(err).__name__}"), False
        stop = verdict.stops[0] if verdict.stops else None
        final = verdict.outcome != "unknown" and verdict.orphans == 0
        return HeartbeatTrace(trace_id=trace_id, outcome=verdict.outcome,
                              stopped_at=stop.hop if stop else None,
                              detail=stop.reason if stop else verdict.summary), final

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
