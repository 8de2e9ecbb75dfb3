"""Data-plane health of one (application, namespace) from its heartbeat figures, and which
hop is broken. Pure: the figures (`tracker.HopStats` per hop) and the time come in.

**Verdicts** (`classify`; `evaluate` reads the figures from a `Tracker` first):

- `Unknown` when the caller says probing is not meaningful (`not_meaningful`, e.g. the
  control-plane chain is not ready): one `DataPlaneNotProbed` finding, a symptom of
  `caused_by` (the control-plane root cause) when given;
- `Unhealthy` (`NoHeartbeat`) when a hop's probes stopped arriving: none for
  `silent_intervals` (K) intervals, or the newest `silent_sends` sends that should have
  arrived by now all did not (this needs the sender's records, and is what detects a
  broken path within about `silent_sends` intervals plus the tracker's grace period);
- `Degraded` when over the tracker's window, with at least `min_samples` heartbeats to
  judge: latency p99 over the SLO (`HeartbeatLatencyHigh`), loss over
  `max_loss_ratio` (`HeartbeatsLost`), duplicates over `max_duplicate_ratio`
  (`HeartbeatDuplicates`), or probes injected at one hop fail while those injected
  further upstream arrive (`HeartbeatInjectionFailed`: the data path works, the
  checker's own way into it, e.g. its URL template for the Channel, does not);
- `Progressing` (`HeartbeatPending`) until the first heartbeat, for K intervals after
  probing started (`since`);
- `Healthy` otherwise. A Degraded verdict clears once the bad samples have left the
  window, so recovery from it takes up to the window's length.

**Hop localisation.** Hops, upstream first: `ingress` (event-service → HTTP adapter →
application Channel), `channel` (Channel → `brokersub-` Subscription → Broker), `broker`
(broker ingress → filter → Trigger → checker). A probe injected at a hop crosses that
hop's path segment and every one downstream, so each hop whose probes arrive fine
vouches for its own segment and all below. For each problem, the hops that show it are
taken downstream first; a hop already explained by a segment chosen for a hop below it
is a symptom; otherwise its own segment is blamed if no arriving hop vouches for it (when
the next hop down is not probed the message says the fault may lie further down), and
when every segment it crosses is vouched for, the fault is its injection. Hence: broker
probes arrive but channel ones do not → the `brokersub-` Subscription of that namespace;
channel probes arrive but ingress ones do not → the event-service/HTTP adapter path (the
HTTPSource); nothing arrives → the namespace's Broker. Hops still pending, not probed, or
with too few samples are neither blamed nor vouch; a silent hop is judged for silence
only. One finding per broken segment and problem, each a root cause naming the segment's
object (`HopObjects`), worst first, then upstream first; `DataPlaneVerdict.culprits` lists
the same root causes as (hop, problem, injection) for programs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from eventmesh_health.model import Finding, Health, ObjectRef, severity_for
from eventmesh_health.probing.heartbeat import Hop
from eventmesh_health.probing.tracker import HopStats, Tracker
from eventmesh_health.topology.kyma1 import (
    BROKER,
    CHANNEL,
    HTTP_SOURCE,
    INTEGRATION_NS,
    SUBSCRIPTION,
)

__all__ = [
    "Culprit",
    "DataPlaneVerdict",
    "HopObjects",
    "HopState",
    "HopVerdict",
    "ProbeThresholds",
    "Problem",
    "classify",
    "evaluate",
]

REASON_NO_HEARTBEAT = "NoHeartbeat"
REASON_LOST = "HeartbeatsLost"
REASON_LATENCY = "HeartbeatLatencyHigh"
REASON_DUPLICATES = "HeartbeatDuplicates"
REASON_INJECTION = "HeartbeatInjectionFailed"
REASON_PENDING = "HeartbeatPending"
REASON_NOT_PROBED = "DataPlaneNotProbed"


@dataclass(frozen=True, slots=True)
class ProbeThresholds:
    """When the data plane is judged Degraded or Unhealthy. Defaults:

    - `interval` 10 s: the sender's heartbeat interval (must match it);
    - `silent_intervals` 3: Unhealthy after three intervals without any heartbeat of a hop;
    - `silent_sends` 2: ... or as soon as the two newest sends that should have arrived
      (older than the tracker's grace period) are both missing;
    - `latency_p99` 2 s: the end-to-end latency SLO (a Kafka-backed mesh delivers in tens
      of milliseconds; seconds mean retries);
    - `max_loss_ratio` 0.05 and `max_duplicate_ratio` 0.05 over the tracker's window: with
      the default 5-minute window and 10 s interval, one heartbeat of 30 lost is
      tolerated, two are not;
    - `min_samples` 3: ratios and percentiles of fewer heartbeats are not judged.
    """

    interval: timedelta = timedelta(seconds=10)
    silent_intervals: int = 3
    silent_sends: int = 2
    latency_p99: timedelta = timedelta(seconds=2)
    max_loss_ratio: float = 0.05
    max_duplicate_ratio: float = 0.05
    min_samples: int = 3

    def __post_init__(self) -> None:
        if self.interval <= timedelta(0) or self.silent_intervals < 1 or self.silent_sends < 1:
            raise ValueError("interval, silent_intervals and silent_sends must be positive")
        if not (0 <= self.max_loss_ratio < 1 and self.max_duplicate_ratio >= 0):
            raise ValueError("ratios out of range")

    @property
    def silence(self) -> timedelta:
        return self.interval * self.silent_intervals


class HopState(StrEnum):
    OK = "Ok"  # arriving (maybe with problems other than silence)
    PENDING = "Pending"  # nothing yet, but probing started less than K intervals ago
    SILENT = "Silent"
    NOT_PROBED = "NotProbed"


class Problem(StrEnum):
    SILENT = "Silent"
    LOSS = "Loss"
    LATENCY = "Latency"
    DUPLICATES = "Duplicates"


_PROBLEM_REASON = {
    Problem.SILENT: REASON_NO_HEARTBEAT,
    Problem.LOSS: REASON_LOST,
    Problem.LATENCY: REASON_LATENCY,
    Problem.DUPLICATES: REASON_DUPLICATES,
}

SEGMENTS = {
    Hop.INGRESS: "the path event-service → HTTP adapter → application Channel",
    Hop.CHANNEL: "the path application Channel → Broker (the brokersub- Subscription)",
    Hop.BROKER: "the namespace's Broker (ingress → filter → Trigger → checker)",
}
_ENTRY = {
    Hop.INGRESS: "the application's event-service",
    Hop.CHANNEL: "the application Channel's address",
    Hop.BROKER: "the namespace's broker ingress",
}


@dataclass(frozen=True, slots=True)
class HopObjects:
    """The objects findings name: per hop, its path segment's and its entry's."""

    segment: Mapping[Hop, ObjectRef]
    entry: Mapping[Hop, ObjectRef]

    @staticmethod
    def kyma1(application: str, namespace: str, brokersub: str | None = None) -> HopObjects:
        """Kyma 1.x: the HTTPSource, the `brokersub-` Subscription (its generated name if
        known) and the namespace's Broker `default`."""
        source = _ref(HTTP_SOURCE.api_version, HTTP_SOURCE.kind, INTEGRATION_NS, application)
        channel = _ref(CHANNEL.api_version, CHANNEL.kind, INTEGRATION_NS, application)
        sub = _ref(SUBSCRIPTION.api_version, SUBSCRIPTION.kind, INTEGRATION_NS, brokersub)
        broker = _ref(BROKER.api_version, BROKER.kind, namespace, "default")
        return HopObjects(
            segment={Hop.INGRESS: source, Hop.CHANNEL: sub, Hop.BROKER: broker},
            entry={Hop.INGRESS: source, Hop.CHANNEL: channel, Hop.BROKER: broker},
        )


def _ref(api_version: str, kind: str, namespace: str, name: str | None) -> ObjectRef:
    return ObjectRef(api_version=api_version, kind=kind, namespace=namespace, name=name)


@dataclass(frozen=True, slots=True)
class HopVerdict:
    hop: Hop
    state: HopState
    problems: frozenset[Problem]
    stats: HopStats | None


@dataclass(frozen=True, slots=True)
class Culprit:
    """A root cause: the hop whose path segment (or, if `injection`, whose injection by
    the checker) shows `problem`."""

    hop: Hop
    problem: Problem
    injection: bool = False


@dataclass(frozen=True, slots=True)
class DataPlaneVerdict:
    """The data-plane health of one (application, namespace)."""

    application: str
    namespace: str
    health: Health
    findings: tuple[Finding, ...]
    hops: Mapping[Hop, HopVerdict] = field(default_factory=dict)
    culprits: tuple[Culprit, ...] = ()

    @property
    def availability(self) -> float | None:
        """End to end (ingress probes) over the window, when known."""
        verdict = self.hops.get(Hop.INGRESS)
        return verdict.stats.availability if verdict and verdict.stats else None


def evaluate(
    tracker: Tracker,
    application: str,
    namespace: str,
    *,
    since: datetime,
    now: datetime | None = None,
    thresholds: ProbeThresholds | None = None,
    hops: Iterable[Hop] = tuple(Hop),
    objects: HopObjects | None = None,
    not_meaningful: str | None = None,
    caused_by: ObjectRef | None = None,
    dead_letter: str | None = None,
) -> DataPlaneVerdict:
    """`classify` on the tracker's figures for the pair at `now` (the tracker's clock)."""
    now = now or tracker.clock()
    probed = tuple(hops)
    stats = {hop: tracker.stats(application, namespace, hop, now) for hop in probed}
    return classify(
        application, namespace, stats, now=now, since=since, thresholds=thresholds,
        hops=probed, objects=objects, not_meaningful=not_meaningful, caused_by=caused_by,
        dead_letter=dead_letter,
    )


def classify(
    application: str,
    namespace: str,
    stats: Mapping[Hop, HopStats],
    *,
    now: datetime,
    since: datetime,
    thresholds: ProbeThresholds | None = None,
    hops: Iterable[Hop] | None = None,
    objects: HopObjects | None = None,
    not_meaningful: str | None = None,
    caused_by: ObjectRef | None = None,
    dead_letter: str | None = None,
) -> DataPlaneVerdict:
    """The verdict for one (application, namespace); see the module docstring.

    `stats`: the figures per probed hop; `hops`: which hops are probed (default: those in
    `stats`); `since`: when probing of the pair started (its heartbeat Trigger became
    ready); `dead_letter`: a line about the latest dead-lettered heartbeat, added to the
    messages of loss and silence.
    """
    limits = thresholds or ProbeThresholds()
    refs = objects or HopObjects.kyma1(application, namespace)
    probed = [hop for hop in Hop if hop in set(hops if hops is not None else stats)]
    if not_meaningful is not None:
        finding = _finding(
            Health.UNKNOWN, refs.segment[Hop.BROKER], REASON_NOT_PROBED,
            f"heartbeats are not judged: {not_meaningful}", caused_by=caused_by)
        return DataPlaneVerdict(application, namespace, Health.UNKNOWN, (finding,), {
            hop: HopVerdict(hop, HopState.NOT_PROBED, frozenset(), stats.get(hop))
            for hop in Hop})

    verdicts: dict[Hop, HopVerdict] = {}
    for hop in Hop:
        if hop not in probed or hop not in stats:
            verdicts[hop] = HopVerdict(hop, HopState.NOT_PROBED, frozenset(), stats.get(hop))
            continue
        verdicts[hop] = _judge_hop(stats[hop], now, since, limits)

    ranked: list[tuple[int, int, Finding]] = []
    culprits: list[Culprit] = []
    blamed: set[tuple[str, ObjectRef]] = set()
    for problem in Problem:
        for hop, injection, ambiguous in _localise(problem, verdicts, limits):
            culprits.append(Culprit(hop, problem, injection))
            finding = _problem_finding(problem, hop, injection, ambiguous, verdicts, refs,
                                       limits, now, dead_letter)
            key = (finding.reason, finding.object)
            if key not in blamed:
                blamed.add(key)
                ranked.append((-finding.health.rank, hop.position, finding))
    # worst first, then upstream first
    findings = [finding for _, _, finding in sorted(ranked, key=lambda r: (r[0], r[1]))]

    if not findings and probed and all(
            verdicts[hop].state is HopState.PENDING for hop in probed):
        findings.append(_finding(
            Health.PROGRESSING, refs.segment[Hop.BROKER], REASON_PENDING,
            f"no heartbeat has arrived yet; probing started {_ago(now - since)} ago "
            f"(silence counts after {_secs(limits.silence)})"))
    health = Health.worst((f.health for f in findings), default=Health.HEALTHY)
    return DataPlaneVerdict(application, namespace, health, tuple(findings), verdicts,
                            tuple(culprits))


def _judge_hop(s: HopStats, now: datetime, since: datetime, limits: ProbeThresholds) -> HopVerdict:
    problems: set[Problem] = set()
    silent = False
    if s.last_arrival is None:
        silent = now - since >= limits.silence
    else:
        silent = now - s.last_arrival >= limits.silence
    if (s.unreceived_streak >= limits.silent_sends and s.streak_last_sent is not None
            and (s.last_arrival is None or s.last_arrival < s.streak_last_sent)):
        silent = True
    if silent:
        return HopVerdict(s.hop, HopState.SILENT, frozenset({Problem.SILENT}), s)
    if s.last_arrival is None:
        return HopVerdict(s.hop, HopState.PENDING, frozenset(), s)
    if _judged(Problem.LOSS, s, limits):
        ratio = s.loss_ratio
        if ratio is not None and ratio > limits.max_loss_ratio:
            problems.add(Problem.LOSS)
    if _judged(Problem.LATENCY, s, limits):
        p99 = s.latency.p99
        if p99 is not None and p99 > limits.latency_p99.total_seconds():
            problems.add(Problem.LATENCY)
    if _judged(Problem.DUPLICATES, s, limits):
        ratio = s.duplicate_ratio
        if ratio is not None and ratio > limits.max_duplicate_ratio:
            problems.add(Problem.DUPLICATES)
    return HopVerdict(s.hop, HopState.OK, frozenset(problems), s)


def _judged(problem: Problem, s: HopStats, limits: ProbeThresholds) -> bool:
    """Whether there are enough samples in the window to judge `problem` on this hop."""
    if problem is Problem.LOSS:
        return s.expected >= limits.min_samples
    if problem is Problem.LATENCY:
        return s.latency.count >= limits.min_samples
    if problem is Problem.DUPLICATES:
        return s.window_received + s.window_duplicates >= limits.min_samples
    return True


def _localise(
    problem: Problem, verdicts: Mapping[Hop, HopVerdict], limits: ProbeThresholds
) -> list[tuple[Hop, bool, bool]]:
    """(hop to blame, whether it is the hop's injection, whether the segment is ambiguous)
    for each root cause of `problem`, downstream first."""
    failing: list[Hop] = []
    vouched: set[Hop] = set()  # segments known to work for this problem
    for hop in Hop:
        verdict = verdicts[hop]
        if problem in verdict.problems:
            failing.append(hop)
            continue
        if verdict.state is not HopState.OK or verdict.stats is None:
            continue  # pending, silent (for other problems) or not probed: says nothing
        if problem is Problem.SILENT or _judged(problem, verdict.stats, limits):
            vouched.update(h for h in Hop if h.position >= hop.position)
    chosen: list[Hop] = []
    out: list[tuple[Hop, bool, bool]] = []
    for hop in reversed(failing):
        if any(c.position >= hop.position for c in chosen):
            continue  # a symptom of a segment further down
        if hop in vouched:
            out.append((hop, True, False))  # every segment it crosses works: its injection
            continue
        below = [h for h in Hop if h.position > hop.position and h not in vouched]
        ambiguous = bool(below) and verdicts[below[0]].state is not HopState.SILENT
        chosen.append(hop)
        out.append((hop, False, ambiguous))
    return out


def _problem_finding(
    problem: Problem, hop: Hop, injection: bool, ambiguous: bool,
    verdicts: Mapping[Hop, HopVerdict], refs: HopObjects, limits: ProbeThresholds,
    now: datetime, dead_letter: str | None,
) -> Finding:
    affected = [h for h in Hop if problem in verdicts[h].problems
                and (h.position <= hop.position if not injection else h is hop)]
    hops_text = _hops(affected)
    s = verdicts[hop].stats
    assert s is not None
    if injection:
        return _finding(
            Health.DEGRADED, refs.entry[hop], REASON_INJECTION,
            f"probes injected at {_ENTRY[hop]} ({hop.value}) show {_problem_text(problem)} "
            f"while those injected further upstream pass through the same path: the "
            f"checker's way into {_ENTRY[hop]} (its URL) does not work. "
            f"{_figures(problem, s, now)}")
    where = SEGMENTS[hop]
    if ambiguous:
        where += " (or a segment further down that is not probed)"
    note = f" Last dead letter: {dead_letter}" if dead_letter and problem in (
        Problem.SILENT, Problem.LOSS) else ""
    if problem is Problem.SILENT:
        return _finding(
            Health.UNHEALTHY, refs.segment[hop], REASON_NO_HEARTBEAT,
            f"no heartbeat injected at {hops_text} arrives: {where} is broken. "
            f"{_figures(problem, s, now)}{note}")
    what = {
        Problem.LOSS: "heartbeats are lost",
        Problem.LATENCY: "heartbeats are slow",
        Problem.DUPLICATES: "heartbeats are duplicated",
    }[problem]
    limit = {
        Problem.LOSS: f"more than {limits.max_loss_ratio:.0%}",
        Problem.LATENCY: f"p99 over {_secs(limits.latency_p99)}",
        Problem.DUPLICATES: f"more than {limits.max_duplicate_ratio:.0%}",
    }[problem]
    return _finding(
        Health.DEGRADED, refs.segment[hop], _PROBLEM_REASON[problem],
        f"{what} ({limit}) on {hops_text}: {where}. {_figures(problem, s, now)}{note}")


def _problem_text(problem: Problem) -> str:
    return {
        Problem.SILENT: "no arrivals", Problem.LOSS: "loss", Problem.LATENCY: "high latency",
        Problem.DUPLICATES: "duplicates",
    }[problem]


def _figures(problem: Problem, s: HopStats, now: datetime) -> str:
    window = _secs(s.window)
    if problem is Problem.SILENT:
        last = ("none yet" if s.last_arrival is None
                else f"{_ago(now - s.last_arrival)} ago")
        text = f"Last {s.hop.value} heartbeat: {last}"
        if s.window_sent is not None:
            text += (f"; {s.unreceived_streak} newest of {s.window_sent} sent in the last "
                     f"{window} missing")
        if s.dead_letters:
            text += f"; {s.dead_letters} dead-lettered"
        return text + "."
    if problem is Problem.LOSS:
        ratio = s.loss_ratio or 0.0
        return (f"{ratio:.1%} lost over the last {window} ({s.window_lost} sequence gaps, "
                f"{s.window_unreceived if s.window_unreceived is not None else '?'} of "
                f"{s.window_sent if s.window_sent is not None else '?'} sent unreceived, "
                f"{s.window_received} received).")
    if problem is Problem.LATENCY:
        lat = s.latency
        return (f"Latency over the last {window}: p50 {_f(lat.p50)}, p99 {_f(lat.p99)}, "
                f"max {_f(lat.max)} ({lat.count} heartbeats).")
    ratio = s.duplicate_ratio or 0.0
    return (f"{s.window_duplicates} duplicates for {s.window_received} heartbeats over the "
            f"last {window} ({ratio:.0%}).")


def _finding(
    health: Health, obj: ObjectRef, reason: str, message: str,
    caused_by: ObjectRef | None = None,
) -> Finding:
    return Finding(
        severity=severity_for(health), health=health, object=obj, reason=reason,
        message=message, root_cause=caused_by is None, caused_by=caused_by,
    )


def _hops(hops: list[Hop]) -> str:
    names = [h.value for h in hops]
    if len(names) > 1:
        return "the " + ", ".join(names[:-1]) + " and " + names[-1] + " hops"
    return f"the {names[0]} hop" if names else "no hop"


def _secs(delta: timedelta) -> str:
    seconds = delta.total_seconds()
    if seconds >= 120 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"


def _ago(delta: timedelta) -> str:
    return f"{max(0.0, delta.total_seconds()):.0f}s"


def _f(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.0f}ms" if seconds < 1 else f"{seconds:.2f}s"
