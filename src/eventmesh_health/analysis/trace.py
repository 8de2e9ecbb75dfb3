"""Where did an event stop: a trace's spans mapped to the mesh's hops (pure: no I/O, no clock).

Spans come from :mod:`eventmesh_health.sources.tracing` (Jaeger or Zipkin), already normalised
to :class:`Span`. Knative names its processes differently per release (TRACING.md; the
sources are cited in tests/fixtures/traces/README.md):

- v0.11-0.13 (Kyma 1.x, OpenCensus → Zipkin): ``<broker>-broker.<ns>`` (ingress),
  ``<broker>-broker-filter.<ns>`` (filter), ``imc-dispatcher``; one SERVER span per request
  received and one CLIENT span per request sent, named by URL path;
- v0.16-1.18: ``broker-ingress.knative-eventing``, ``broker-filter.knative-eventing``;
- ≥ 1.19 (OpenTelemetry, knative.dev/eventing v0.48.0): ``broker.ingress``, ``broker.filter``,
  ``inmemorychannel.dispatcher`` (``pkg/observability/otel`` ``SetupObservabilityOrDie``), an
  otelhttp SERVER span ``POST /path``, an INTERNAL ``broker:<b>.<ns>`` / ``trigger:<t>.<ns>``
  span, an INTERNAL ``send <url>`` span per delivery (``pkg/kncloudevents/event_dispatcher.go``)
  and one otelhttp CLIENT span per attempt under it.

A *visit* is what one process did with the event: the connected spans of one service. Each
visit's outgoing *deliveries* (a ``send`` span, or for OpenCensus a CLIENT span) say where the
event went next, with every attempt's HTTP status; a delivery whose target left no spans is
judged by its status alone. The verdict is ``delivered`` when every branch reached a
subscriber, ``stopped`` when one did not (with the hop and why), ``unknown`` when the trace
cannot tell.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

__all__ = [
    "HOP_LABELS",
    "Delivery",
    "Span",
    "Stop",
    "TraceVerdict",
    "Visit",
    "diagnose",
    "hop_of_service",
    "verdict_json",
]

Hop = Literal["sender", "event-service", "adapter", "dispatcher", "ingress", "filter", "subscriber"]
Outcome = Literal["delivered", "stopped", "unknown"]

HOP_LABELS: Mapping[str, str] = {
    "sender": "sender",
    "event-service": "event-service",
    "adapter": "HTTP adapter",
    "dispatcher": "channel dispatcher",
    "ingress": "broker ingress",
    "filter": "broker filter",
    "subscriber": "subscriber",
}


@dataclass(frozen=True)
class Span:
    """One span, whichever backend it came from. Times in microseconds since the epoch."""

    trace_id: str
    span_id: str
    parent_id: str | None
    service: str
    name: str
    kind: str  # "server", "client", "producer", "consumer", "internal" or ""
    start_us: int
    duration_us: int
    tags: Mapping[str, str] = field(default_factory=dict)
    error: bool = False
    error_message: str = ""

    @property
    def end_us(self) -> int:
        return self.start_us + self.duration_us

    @property
    def status_code(self) -> int | None:
        for key in ("http.response.status_code", "http.status_code"):
            value = self.tags.get(key, "")
            if value.isdigit():
                return int(value)
        return None

    @property
    def url(self) -> str:
        for key in ("url.full", "http.url"):
            if self.tags.get(key):
                return self.tags[key]
        if self.name.startswith("send "):
            return self.name[len("send "):]
        return ""


# --- which hop a service is -------------------------------------------------------------------

_SERVICE_HOPS: tuple[tuple[re.Pattern[str], Hop], ...] = (
    # >= 1.19 (OTel component names), 0.16-1.18 (Deployment.namespace), Kafka broker.
    (re.compile(r"^(broker\.ingress|(mt-)?broker-ingress(\..+)?|kafka-broker-receiver.*)$"),
     "ingress"),
    (re.compile(r"^(broker\.filter|(mt-)?broker-filter(\..+)?|kafka-broker-dispatcher.*)$"),
     "filter"),
    # 0.11-0.13: <broker>-broker-filter.<ns> before <broker>-broker.<ns> (longer match first).
    (re.compile(r"^.+-broker-filter\.[^.]+$"), "filter"),
    (re.compile(r"^.+-broker\.[^.]+$"), "ingress"),
    (re.compile(r"^(inmemorychannel[.-]dispatcher|imc-dispatcher|natss-ch-dispatcher"
                r"|kafka-ch-dispatcher|kafkachannel-dispatcher).*$"), "dispatcher"),
    (re.compile(r"event-service"), "event-service"),
    (re.compile(r"(^|[-.])(http-?source|adapter)([-.]|$)"), "adapter"),
)

# Hosts of the cluster-internal Services a delivery can target (for a target without spans).
_HOST_HOPS: tuple[tuple[re.Pattern[str], Hop], ...] = (
    (re.compile(r"^(imc-dispatcher|.+-kn-channel)\."), "dispatcher"),
    (re.compile(r"^broker-ingress\.|^.+-broker\.[^.]+(\.svc|$)"), "ingress"),
    (re.compile(r"^broker-filter\.|^.+-broker-filter\.[^.]+(\.svc|$)"), "filter"),
    (re.compile(r"event-service"), "event-service"),
)


def hop_of_service(service: str) -> Hop:
    """The hop a span's service name is, per release naming; any other service is a subscriber."""
    for pattern, hop in _SERVICE_HOPS:
        if pattern.search(service):
            return hop
    return "subscriber"


def _hop_of_url(url: str) -> Hop:
    host = urlsplit(url).hostname or ""
    for pattern, hop in _HOST_HOPS:
        if pattern.search(host):
            return hop
    return "subscriber"


# --- visits and deliveries --------------------------------------------------------------------


@dataclass
class Delivery:
    """One event sent by a visit to a target, with every attempt."""

    target: str  # URL (or the span name when the backend recorded no URL)
    target_hop: Hop
    start_us: int
    end_us: int
    codes: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    attempts: int = 0
    child: Visit | None = None  # the callee's visit (of the first attempt)
    dead_letter: bool = False
    dead_letters: list[Delivery] = field(default_factory=list)  # sent when this one failed

    @property
    def ok(self) -> bool:
        if self.codes:
            return 200 <= self.codes[-1] < 300
        return not self.errors and self.attempts > 0


@dataclass
class Visit:
    """What one process (one service) did with the event."""

    hop: Hop
    service: str
    name: str  # the span name of its first span (path, broker:/trigger: name)
    start_us: int
    end_us: int
    code: int | None  # the status its SERVER span answered
    error: str
    deliveries: list[Delivery] = field(default_factory=list)
    orphans: list[Visit] = field(default_factory=list)  # children reached not via a delivery
    span_ids: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Stop:
    hop: str  # e.g. "broker ingress → channel dispatcher"
    reason: str


@dataclass(frozen=True)
class TraceVerdict:
    trace_id: str
    outcome: Outcome
    path: tuple[Visit, ...]  # root visits (usually one)
    stops: tuple[Stop, ...]
    delivered_to: tuple[str, ...]
    summary: str
    # spans whose parent is not in the trace besides the trace's entry: spans still arriving
    # at the backend, or a process that does not export
    orphans: int = 0


def _children(spans: Sequence[Span]) -> dict[str | None, list[Span]]:
    ids = {s.span_id for s in spans}
    children: dict[str | None, list[Span]] = {}
    for span in sorted(spans, key=lambda s: (s.start_us, s.span_id)):
        parent = span.parent_id if span.parent_id in ids else None
        children.setdefault(parent, []).append(span)
    return children


def _is_send(span: Span) -> bool:
    """A delivery span: OTel's ``send <url>``, or an OpenCensus/otelhttp CLIENT span."""
    return span.name.startswith("send ") or span.kind in ("client", "producer")


def _groups(spans: Iterable[Span]) -> list[list[Span]]:
    """Spans with one parent, grouped by service: one group = one process's visit. (Knative
    1.21 opens two SERVER spans per request received, ``kncloudevents.receive`` and
    ``POST /path``, both children of the caller's span.)"""
    groups: dict[str, list[Span]] = {}
    for span in spans:
        groups.setdefault(span.service, []).append(span)
    return list(groups.values())


def _build_visit(roots: list[Span], children: Mapping[str | None, list[Span]]) -> Visit:
    """The visit of the spans `roots` (one service, one parent) and the spans of that service
    below them: its deliveries, and the visits of other services they reached."""
    first = roots[0]
    named = next((r for r in roots if children.get(r.span_id)), first)
    visit = Visit(hop=hop_of_service(first.service), service=first.service, name=named.name,
                  start_us=min(r.start_us for r in roots), end_us=first.end_us, code=None,
                  error="")
    stack = list(roots)
    foreign: list[Span] = []
    while stack:
        span = stack.pop()
        visit.span_ids.add(span.span_id)
        visit.end_us = max(visit.end_us, span.end_us)
        if span.kind == "server" and visit.code is None:
            visit.code = span.status_code
        if span.error and not visit.error and not _is_send(span):
            visit.error = span.error_message or "error"
        if _is_send(span):
            visit.deliveries.append(_build_delivery(span, children))
            continue
        for child in children.get(span.span_id, []):
            (stack if child.service == first.service else foreign).append(child)
    visit.orphans = [_build_visit(group, children) for group in _groups(foreign)]
    visit.deliveries.sort(key=lambda d: d.start_us)
    _mark_dead_letters(visit)
    return visit


def _build_delivery(send: Span, children: Mapping[str | None, list[Span]]) -> Delivery:
    url = send.url
    delivery = Delivery(target=url or send.name, target_hop=_hop_of_url(url) if url else
                        "subscriber", start_us=send.start_us, end_us=send.end_us)
    below = children.get(send.span_id, [])
    attempts = [c for c in below if c.service == send.service and c.kind == "client"]
    # A ``send`` inside a failed ``send``: Knative 1.21 dispatches to the dead letter sink
    # within the span of the delivery that failed (event_dispatcher.go ``dispatchToDLQ``).
    delivery.dead_letters = [_build_delivery(c, children) for c in below
                             if c.service == send.service and c.name.startswith("send ")]
    for letter in delivery.dead_letters:
        letter.dead_letter = True
    # OTel: one CLIENT span per attempt under ``send``; OpenCensus: the CLIENT span is the one.
    for attempt in attempts or [send]:
        delivery.attempts += 1
        if attempt.status_code is not None:
            delivery.codes.append(attempt.status_code)
        elif attempt.error:
            delivery.errors.append(attempt.error_message or "error")
        # The callee's SERVER spans (maybe of the same service: a dispatcher sending to
        # another channel it serves, as the reply channel in the docs trace).
        callee = [c for c in children.get(attempt.span_id, [])
                  if not (c.service == send.service and (c.kind == "client"
                                                         or c.name.startswith("send ")))]
        if delivery.child is None and callee:
            delivery.child = _build_visit(_groups(callee)[0], children)
            delivery.target_hop = delivery.child.hop
    if not attempts and send.status_code is None and send.error:
        delivery.errors = [send.error_message or "error"]
    return delivery


def _mark_dead_letters(visit: Visit) -> None:
    """A delivery to another target right after a failed one is its dead letter sink (Knative
    dispatches there only when the subscriber failed: event_dispatcher.go ``dispatchToDLQ``)."""
    failed_before = False
    for delivery in visit.deliveries:
        if failed_before and visit.hop in ("dispatcher", "filter"):
            delivery.dead_letter = True
        failed_before = failed_before or not delivery.ok


# --- judging ---------------------------------------------------------------------------------


def _describe_failure(d: Delivery) -> str:
    tries = f" after {d.attempts} attempts" if d.attempts > 1 else ""
    if d.codes:
        codes = ", ".join(str(c) for c in d.codes)
        return f"HTTP {d.codes[-1]}{tries} (answers: {codes})" if d.attempts > 1 else \
            f"HTTP {d.codes[-1]}"
    error = d.errors[-1] if d.errors else "no answer"
    return f"{error}{tries}"


def _label(hop: str) -> str:
    return HOP_LABELS.get(hop, hop)


def _judge(visit: Visit, stops: list[Stop], delivered: list[str], unknown: list[str],
           filtered: list[str]) -> None:
    here = _label(visit.hop)
    if visit.code is not None and visit.code >= 400 and not visit.deliveries:
        stops.append(Stop(here, f"answered HTTP {visit.code}"
                          + (f": {visit.error}" if visit.error else "")))
        return
    if visit.error and not visit.deliveries and visit.hop != "subscriber":
        stops.append(Stop(here, visit.error))
        return
    failed = [d for d in visit.deliveries if not d.ok and not d.dead_letter]
    siblings = [d for d in visit.deliveries if d.dead_letter]
    for d in failed:
        suffix = ""
        if d.attempts > 1 and d.child is not None:
            suffix += f"; {d.attempts} attempts by the {here}"
        for letter in (d.dead_letters or siblings)[:1]:
            suffix += (f"; dead-lettered by the {here} to {letter.target}"
                       + (f" (HTTP {letter.codes[-1]})" if letter.codes else
                          f" ({letter.errors[-1]})" if letter.errors else ""))
        if d.child is not None:
            # The callee left spans: where it stopped is deeper (a filter answering 503
            # because its subscriber answered 503), unless it did nothing wrong itself.
            deeper: list[Stop] = []
            _judge(d.child, deeper, delivered, unknown, filtered)
            if deeper:
                stops.extend(Stop(stop.hop, stop.reason + suffix) for stop in deeper)
                continue
        where = f"{here} → {_label(d.target_hop)}"
        failure = _describe_failure(d)
        reason = failure if d.target in failure else f"{failure} from {d.target}"
        stops.append(Stop(where, reason + suffix))
    for d in visit.deliveries:
        if d in failed:
            continue
        if d.child is not None:
            _judge(d.child, stops, delivered, unknown, filtered)
        elif d.dead_letter:
            continue
        elif d.ok and d.target_hop == "subscriber":
            delivered.append(d.target)
        elif d.ok:
            unknown.append(f"{here} → {_label(d.target_hop)}: accepted ({_codes(d)}) but the "
                           f"{_label(d.target_hop)} left no span (not exporting or not sampled)")
        else:  # a failed dead letter
            continue
    for orphan in visit.orphans:
        _judge(orphan, stops, delivered, unknown, filtered)
    if visit.deliveries or visit.orphans:
        return
    if visit.hop == "filter":
        # Normal for one Trigger of several; a stop only when no branch delivered (diagnose).
        filtered.append(visit.name)
    elif visit.hop == "dispatcher":
        stops.append(Stop(here, "the channel sent the event to no subscriber (no Subscription, "
                                "or its dispatcher has not picked it up)"))
    elif visit.hop == "ingress":
        stops.append(Stop(here, "the broker ingress accepted the event but sent it nowhere"))
    elif visit.hop in ("event-service", "adapter"):
        stops.append(Stop(here, f"the {here} sent the event nowhere"))
    elif visit.hop == "subscriber":
        delivered.append(visit.service)


def _codes(d: Delivery) -> str:
    return "HTTP " + ", ".join(str(c) for c in d.codes) if d.codes else "no status"


def diagnose(trace_id: str, spans: Iterable[Span]) -> TraceVerdict:
    """Map a trace's spans to hops and decide whether, where and why the event stopped."""
    spans = [s for s in spans if s.trace_id.lower().lstrip("0") == trace_id.lower().lstrip("0")]
    if not spans:
        return TraceVerdict(trace_id, "unknown", (), (), (), "the trace has no spans")
    children = _children(spans)
    roots = [_build_visit(group, children) for group in _groups(children.get(None, []))]
    for root in roots:
        if root.hop == "subscriber":
            root.hop = "sender"  # what started the trace, not a destination
    stops: list[Stop] = []
    delivered: list[str] = []
    unknown: list[str] = []
    filtered: list[str] = []
    for root in roots:
        _judge(root, stops, delivered, unknown, filtered)
    if filtered and not delivered and not stops:
        stops.append(Stop(HOP_LABELS["filter"], "filter matched no Trigger: the event did not "
                          "pass the filter of " + ", ".join(dict.fromkeys(filtered))))
    if stops:
        outcome: Outcome = "stopped"
        summary = "; ".join(f"stopped at {s.hop}: {s.reason}" for s in stops)
    elif unknown or not delivered:
        outcome = "unknown"
        summary = "; ".join(unknown) or "cannot tell where the event went: no delivery recorded"
    else:
        outcome = "delivered"
        summary = "delivered to " + ", ".join(dict.fromkeys(delivered))
    ids = {s.span_id for s in spans}
    parents = {s.parent_id for s in spans if s.parent_id and s.parent_id not in ids}
    return TraceVerdict(trace_id, outcome, tuple(roots), tuple(stops),
                        tuple(dict.fromkeys(delivered)), summary, max(0, len(parents) - 1))


# --- JSON ---------------------------------------------------------------------------------------


def _delivery_json(d: Delivery, origin_us: int) -> dict[str, object]:
    return {
        "target": d.target, "targetHop": d.target_hop, "attempts": d.attempts,
        "statusCodes": d.codes, "errors": d.errors, "ok": d.ok, "deadLetter": d.dead_letter,
        "durationMs": round((d.end_us - d.start_us) / 1000, 3),
        "next": _visit_json(d.child, origin_us) if d.child is not None else None,
        "deadLetters": [_delivery_json(letter, origin_us) for letter in d.dead_letters],
    }


def _visit_json(visit: Visit, origin_us: int) -> dict[str, object]:
    return {
        "hop": visit.hop, "label": _label(visit.hop), "service": visit.service,
        "span": visit.name,
        "startMs": round((visit.start_us - origin_us) / 1000, 3),
        "durationMs": round((visit.end_us - visit.start_us) / 1000, 3),
        "statusCode": visit.code, "error": visit.error or None,
        "deliveries": [_delivery_json(d, origin_us) for d in visit.deliveries],
        "alsoReached": [_visit_json(o, origin_us) for o in visit.orphans],
    }


def verdict_json(verdict: TraceVerdict) -> dict[str, object]:
    origin = min((v.start_us for v in verdict.path), default=0)
    return {
        "traceId": verdict.trace_id,
        "outcome": verdict.outcome,
        "summary": verdict.summary,
        "stops": [{"hop": s.hop, "reason": s.reason} for s in verdict.stops],
        "deliveredTo": list(verdict.delivered_to),
        "missingParents": verdict.orphans,
        "path": [_visit_json(v, origin) for v in verdict.path],
    }
