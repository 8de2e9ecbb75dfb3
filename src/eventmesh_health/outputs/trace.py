"""`trace`: an event's path through the mesh as plain lines, each hop with its timing."""

from __future__ import annotations

from eventmesh_health.analysis.trace import HOP_LABELS, Delivery, TraceVerdict, Visit

_MARK = {"delivered": "✓ delivered", "stopped": "✗ stopped", "unknown": "? cannot tell"}


def _ms(us: int) -> str:
    return f"{us / 1000:.1f} ms"


def _delivery_line(d: Delivery) -> str:
    what = "→ dead letter sink " if d.dead_letter else f"→ {HOP_LABELS.get(d.target_hop)} "
    codes = ", ".join(str(c) for c in d.codes)
    outcome = f"HTTP {codes}" if codes else ("; ".join(d.errors[-1:]) or "no status")
    attempts = f", {d.attempts} attempts" if d.attempts > 1 else ""
    mark = "ok" if d.ok else "FAILED"
    return (f"{what}{d.target}  "
            f"{outcome}{attempts} ({_ms(d.end_us - d.start_us)}) {mark}")


def _visit_lines(visit: Visit, origin: int, depth: int, out: list[str]) -> None:
    pad = "  " * depth
    code = f" answered {visit.code}" if visit.code is not None else ""
    error = f" error: {visit.error}" if visit.error else ""
    out.append(f"{pad}{'+' + _ms(visit.start_us - origin):>10}  {HOP_LABELS[visit.hop]:<18} "
               f"{visit.service}  {visit.name}  ({_ms(visit.end_us - visit.start_us)}){code}"
               f"{error}")
    for d in visit.deliveries:
        out.append(f"{pad}{'':>11}  {_delivery_line(d)}")
        if d.child is not None:
            _visit_lines(d.child, origin, depth + 1, out)
        for letter in d.dead_letters:
            out.append(f"{pad}{'':>11}  {_delivery_line(letter)}")
    if visit.hop == "filter" and not visit.deliveries and not visit.orphans:
        out.append(f"{pad}{'':>11}  (sent nothing on: the Trigger's filter did not match)")
    for orphan in visit.orphans:
        _visit_lines(orphan, origin, depth + 1, out)


def trace_lines(verdict: TraceVerdict) -> list[str]:
    """The report `trace` prints: the verdict, the path, then where and why it stopped."""
    out = [f"Trace {verdict.trace_id}: {_MARK[verdict.outcome]}", ""]
    origin = min((v.start_us for v in verdict.path), default=0)
    for root in verdict.path:
        _visit_lines(root, origin, 0, out)
    out.append("")
    if verdict.stops:
        for stop in verdict.stops:
            out.append(f"Stopped at {stop.hop}: {stop.reason}")
    else:
        out.append(verdict.summary[:1].upper() + verdict.summary[1:])
    if verdict.orphans:
        out.append(f"note: {verdict.orphans} part(s) of the trace hang from spans the backend "
                   "does not have: the trace may be incomplete (spans still arriving, or a "
                   "process that does not export them)")
    return out
