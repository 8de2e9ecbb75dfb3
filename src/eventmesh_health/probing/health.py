"""Data-plane health of one (application, namespace) from its heartbeat figures, and which
hop is broken. Pure: the figures (`tracker.HopStats` per hop) and the time come in.

**Verdicts** (`classify`; `evaluate` reads the figures from a `Tracker` first):

- `Unknown` when the caller says probing is not meaningful (`not_meaningful`, e.g. the
  control-plane chain is not ready): one `DataPlaneNotProbed` finding, a symptom of
  `caused_by` (the control-plane root cause) when given;
- `Unhealthy` (`NoHeartbeat`) when a hop's probes stopped arriving: the newest
  `silent_sends` sends that should have arrived by now (older than the tracker's grace
  period) all did not, or none arrived for `silent_intervals` (K) intervals;
- `Degraded` when the newest `confirm_samples` heartbeats of a hop were all over the
  latency SLO (`HeartbeatLatencyHigh`) or were all delivered more than once
  (`HeartbeatDuplicates`, counting a heartbeat once its duplicates are settled); when
  isolated losses (not part of an outage, which is silence) are over `max_loss_ratio` of
  the window's sends, with at least `min_samples` of them (`HeartbeatsLost`); or when
  probes injected at one hop fail while those injected further upstream arrive
  (`HeartbeatInjectionFailed`: the data path works, the checker's own way into it, e.g.
  its URL template for the Channel, does not);
- `Progressing` (`HeartbeatPending`) until the first heartbeat, for K intervals after
  probing started (`since`);
- `Healthy` otherwise.

**Timing.** Silence, latency and duplicates are judged on the newest samples, and the
runner sends a *confirmation* probe into a hop as soon as one of its regular probes is
suspect (not arrived after the grace period, slow, duplicated), so a fault is confirmed
within one interval plus twice the grace period (plus the delivery time), and a verdict
clears with the first good heartbeat after the fault is gone. Loss is a rate over the
window: a Degraded loss verdict clears once the isolated losses left the window.

**Hop localisation.** Hops, upstream first: `ingress` (event-service → HTTP adapter →
application Channel), `channel` (Channel → `brokersub-` Subscription → Broker), `broker`
(broker ingress → filter → Trigger → checker). A probe injected at a hop crosses that
hop's path segment and every one downstream, so each hop whose probes arrive fine
vouches for its own segment and all below. For each problem, the hops that show it are
taken downstream first; a hop already explained by a segment chosen for a hop below it
is a symptom; otherwise its own segment is blamed if no arriving hop vouches for it (a
hop vouches only when its own newest sample is good: a suspect one, awaiting its
confirmation, says nothing, and no segment above it is blamed until it is confirmed or
cleared, which takes one delivery; and it vouches only if its probes passed in every
round the failing hop is judged bad on, since a fault may begin or end between the
moments two probes of one round cross the faulty point; a failing hop that waits for a
hop below it keeps the failing hops above it waiting too, as they may be its symptoms; when
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

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from eventmesh_health import reasons
from eventmesh_health.model import Finding, Health, HeartbeatTrace, ObjectRef, severity_for
from eventmesh_health.probing.heartbeat import Hop, trace_context
from eventmesh_health.probing.tracker import HopStats, RecentArrival, Tracker
from eventmesh_health.topology import ByPairLabels, DataPlane, ObjectAt
from eventmesh_health.topology.registry import DEFAULT

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

# What a tracing backend said about a trace id (None: not asked, or no answer yet).
TraceLookup = Callable[[str], HeartbeatTrace | None]

REASON_NO_HEARTBEAT = reasons.NO_HEARTBEAT
REASON_LOST = reasons.HEARTBEATS_LOST
REASON_LATENCY = reasons.HEARTBEAT_LATENCY_HIGH
REASON_DUPLICATES = reasons.HEARTBEAT_DUPLICATES
REASON_INJECTION = reasons.HEARTBEAT_INJECTION_FAILED
REASON_PENDING = reasons.HEARTBEAT_PENDING
REASON_NOT_PROBED = reasons.DATA_PLANE_NOT_PROBED


@dataclass(frozen=True, slots=True)
class ProbeThresholds:
    """When the data plane is judged Degraded or Unhealthy. Defaults:

    - `interval` 10 s: the sender's heartbeat interval (must match it);
    - `silent_sends` 2: Unhealthy as soon as the two newest sends that should have
      arrived (older than the tracker's grace period) are both missing (the second is
      normally the runner's confirmation probe, sent when the first is overdue);
    - `silent_intervals` 3: ... or after three intervals without any heartbeat of a hop;
    - `latency_slo` 2 s: the end-to-end latency objective (a Kafka-backed mesh delivers
      in tens of milliseconds; seconds mean retries); `confirm_samples` 2: Degraded when
      the newest two heartbeats of a hop were both slower (or both duplicated);
    - `max_loss_ratio` 0.05 over the tracker's window: with the default 5-minute window
      and 10 s interval, one isolated loss in 30 sends is tolerated, two are not;
      `max_duplicate_ratio` 0.05 is reported in the figures;
    - `min_samples` 3: loss ratios of fewer sends are not judged.
    """

    interval: timedelta = timedelta(seconds=10)
    silent_intervals: int = 3
    silent_sends: int = 2
    latency_slo: timedelta = timedelta(seconds=2)
    confirm_samples: int = 2
    max_loss_ratio: float = 0.05
    max_duplicate_ratio: float = 0.05
    min_samples: int = 3

    def __post_init__(self) -> None:
        if (self.interval <= timedelta(0) or self.silent_intervals < 1
                or self.silent_sends < 1 or self.confirm_samples < 1):
            raise ValueError("interval, silent_intervals, silent_sends and confirm_samples "
                             "must be positive")
        if not (0 <= self.max_loss_ratio < 1 and self.max_duplicate_ratio >= 0):
            raise ValueError("ratios out of range")
        if self.latency_slo <= timedelta(0):
            raise ValueError("latency_slo must be positive")

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

@dataclass(frozen=True, slots=True)
class HopObjects:
    """The objects findings name, per hop: its path segment's and its entry's, with the
    words that describe them (all from the profile's `DataPlane`)."""

    segment: Mapping[Hop, ObjectRef]
    entry: Mapping[Hop, ObjectRef]
    segment_text: Mapping[Hop, str] = field(default_factory=dict)
    entry_text: Mapping[Hop, str] = field(default_factory=dict)
    # Hops whose segment reaches the receiver (a flow's one hop): nothing further down
    # that is not probed.
    terminal: frozenset[Hop] = frozenset()

    @staticmethod
    def single(hop: Hop, obj: ObjectRef, segment_text: str, entry_text: str) -> HopObjects:
        """One hop whose segment is `obj` all the way to the receiver (a flow's root)."""
        return HopObjects({hop: obj}, {hop: obj}, {hop: segment_text}, {hop: entry_text},
                          frozenset({hop}))

    def subject(self) -> ObjectRef:
        """What a finding about the whole pair names: the most downstream hop's segment."""
        return self.segment[max(self.segment, key=lambda hop: hop.position)]

    @staticmethod
    def of(data_plane: DataPlane, application: str, namespace: str,
           generated: str | None = None) -> HopObjects:
        """The pair's objects; `generated`: the name of a segment object whose name is
        generated (the `brokersub-` Subscription on Kyma 1.x), if known (else null)."""
        segment: dict[Hop, ObjectRef] = {}
        entry: dict[Hop, ObjectRef] = {}
        segment_text: dict[Hop, str] = {}
        entry_text: dict[Hop, str] = {}
        for data_hop in data_plane.hops:
            hop = Hop(data_hop.id)
            segment[hop] = _object(data_hop.segment, application, namespace, generated)
            entry[hop] = _object(data_hop.entry, application, namespace, generated)
            segment_text[hop] = data_hop.segment_text
            entry_text[hop] = data_hop.entry_text
        return HopObjects(segment, entry, segment_text, entry_text)


def _object(where: ObjectAt | ByPairLabels, application: str, namespace: str,
            generated: str | None) -> ObjectRef:
    if isinstance(where, ObjectAt):
        ns, name = where.place(application, namespace)
        return _ref(where.kind.api_version, where.kind.kind, ns, name)
    return _ref(where.kind.api_version, where.kind.kind, where.namespace, generated)


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
    traces: TraceLookup | None = None,
) -> DataPlaneVerdict:
    """`classify` on the tracker's figures for the pair at `now` (the tracker's clock)."""
    now = now or tracker.clock()
    probed = tuple(hops)
    stats = {hop: tracker.stats(application, namespace, hop, now) for hop in probed}
    return classify(
        application, namespace, stats, now=now, since=since, thresholds=thresholds,
        hops=probed, objects=objects, not_meaningful=not_meaningful, caused_by=caused_by,
        dead_letter=dead_letter, traces=traces,
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
    traces: TraceLookup | None = None,
) -> DataPlaneVerdict:
    """The verdict for one (application, namespace); see the module docstring.

    `stats`: the figures per probed hop; `hops`: which hops are probed (default: those in
    `stats`); `since`: when probing of the pair started (its heartbeat Trigger became
    ready); `dead_letter`: a line about the latest dead-lettered heartbeat, added to the
    messages of loss and silence; `traces`: what a tracing backend said about a trace id,
    when it was asked (`serve --trace-url`), attached to those findings with the trace of
    their newest failed heartbeat.
    """
    limits = thresholds or ProbeThresholds()
    if objects is None:
        assert DEFAULT.data_plane is not None
        objects = HopObjects.of(DEFAULT.data_plane, application, namespace)
    refs = objects
    probed = [hop for hop in Hop if hop in set(hops if hops is not None else stats)]
    if not_meaningful is not None:
        finding = _finding(
            Health.UNKNOWN, refs.subject(), REASON_NOT_PROBED,
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
        for hop, injection, ambiguous in _localise(problem, verdicts, limits, refs.terminal):
            culprits.append(Culprit(hop, problem, injection))
            finding = _problem_finding(problem, hop, injection, ambiguous, verdicts, refs,
                                       limits, now, dead_letter, traces)
            key = (finding.reason, finding.object)
            if key not in blamed:
                blamed.add(key)
                ranked.append((-finding.health.rank, hop.position, finding))
    # worst first, then upstream first
    findings = [finding for _, _, finding in sorted(ranked, key=lambda r: (r[0], r[1]))]

    if not findings and probed and all(
            verdicts[hop].state is HopState.PENDING for hop in probed):
        findings.append(_finding(
            Health.PROGRESSING, refs.subject(), REASON_PENDING,
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
    for problem in (Problem.LOSS, Problem.LATENCY, Problem.DUPLICATES):
        if _judged(problem, s, limits) and _bad(problem, s, limits):
            problems.add(problem)
    return HopVerdict(s.hop, HopState.OK, frozenset(problems), s)


def _newest(problem: Problem, s: HopStats, limits: ProbeThresholds) -> list[RecentArrival]:
    """The newest samples that judge `problem` (latency: arrivals; duplicates: arrivals
    whose duplicates are settled)."""
    samples = [r for r in s.recent if problem is Problem.LATENCY or r.settled]
    return samples[-limits.confirm_samples:]


def _bad(problem: Problem, s: HopStats, limits: ProbeThresholds) -> bool:
    """Whether the hop shows `problem` (given that it can be judged)."""
    if problem is Problem.LOSS:
        ratio = s.judged_loss_ratio
        return ratio is not None and ratio > limits.max_loss_ratio
    if problem is Problem.LATENCY:
        slo = limits.latency_slo.total_seconds()
        return all(r.latency > slo for r in _newest(problem, s, limits))
    if problem is Problem.DUPLICATES:
        return all(r.duplicates > 0 for r in _newest(problem, s, limits))
    return False


def _suspect(problem: Problem, s: HopStats, limits: ProbeThresholds) -> bool:
    """The hop's newest sample shows `problem`, unconfirmed: it must not vouch for it."""
    if problem in (Problem.SILENT, Problem.LOSS):
        return s.unreceived_streak > 0
    newest = _newest(problem, s, limits)[-1:]
    if problem is Problem.LATENCY:
        return any(r.latency > limits.latency_slo.total_seconds() for r in newest)
    return any(r.duplicates > 0 for r in newest)


def _judged(problem: Problem, s: HopStats, limits: ProbeThresholds) -> bool:
    """Whether there are enough samples to judge `problem` on this hop."""
    if problem is Problem.LOSS:
        return s.judged_samples >= limits.min_samples
    if problem in (Problem.LATENCY, Problem.DUPLICATES):
        return len(_newest(problem, s, limits)) >= limits.confirm_samples
    return True


def _localise(
    problem: Problem, verdicts: Mapping[Hop, HopVerdict], limits: ProbeThresholds,
    terminal: frozenset[Hop] = frozenset(),
) -> list[tuple[Hop, bool, bool]]:
    """(hop to blame, whether it is the hop's injection, whether the segment is ambiguous)
    for each root cause of `problem`, downstream first."""
    failing: list[Hop] = []
    waiting: set[Hop] = set()  # suspect: awaiting a confirmation
    vouchers: dict[Hop, set[_Round] | None] = {}  # hop -> the rounds of its good samples
    for hop in Hop:
        verdict = verdicts[hop]
        if problem in verdict.problems:
            failing.append(hop)
            continue
        if verdict.state is not HopState.OK or verdict.stats is None:
            continue  # pending, silent (for other problems) or not probed: says nothing
        if _suspect(problem, verdict.stats, limits):
            waiting.add(hop)
            continue
        if problem is Problem.SILENT or _judged(problem, verdict.stats, limits):
            vouchers[hop] = _good_rounds(problem, verdict.stats, limits)
    chosen: list[Hop] = []
    deferred: list[Hop] = []  # failing, but waiting for a hop further down
    out: list[tuple[Hop, bool, bool]] = []
    for hop in reversed(failing):
        if any(c.position >= hop.position for c in chosen):
            continue  # a symptom of a segment further down
        if deferred:
            continue  # may be a symptom of the deferred hop's segment: wait with it
        stats = verdicts[hop].stats
        assert stats is not None
        bad = _bad_rounds(problem, stats, limits)
        fresh = {h for h, good in vouchers.items()
                 if good is None or bad is None or bad <= good}
        stale = set(vouchers) - fresh
        vouched = {h for v in fresh for h in Hop if h.position >= v.position}
        if hop in vouched:
            out.append((hop, True, False))  # every segment it crosses works: its injection
            continue
        below = ([] if hop in terminal else
                 [h for h in Hop if h.position > hop.position and h not in vouched])
        if any(h in waiting or h in stale for h in below):
            deferred.append(hop)  # a hop further down may be the one: wait for its sample
            continue
        ambiguous = bool(below) and verdicts[below[0]].state is not HopState.SILENT
        chosen.append(hop)
        out.append((hop, False, ambiguous))
    return out


# A probing round: (run, sequence). Every round - regular or confirmation - sends one probe
# into every hop of an application (and every namespace), so a sequence names a round.
#
# A hop vouches for a failing one only if its probes passed in *every* round the failing
# hop is judged bad on (at least two): a fault can begin or end in the middle of a round,
# between the moments two probes of that round cross the faulty point, so one round in
# which one probe passed and the other did not proves nothing; two in a row do.
_Round = tuple[str, int]


def _bad_rounds(problem: Problem, s: HopStats, limits: ProbeThresholds) -> set[_Round] | None:
    """The rounds a failing hop is judged bad on; None when not known (loss is a rate;
    silence without the sender's records)."""
    if problem is Problem.SILENT:
        return set(s.streak_rounds[:limits.silent_sends]) or None
    if problem in (Problem.LATENCY, Problem.DUPLICATES):
        return {(r.run, r.sequence) for r in _newest(problem, s, limits)} or None
    return None


def _good_rounds(problem: Problem, s: HopStats, limits: ProbeThresholds) -> set[_Round] | None:
    """The rounds of the hop's good samples (for `problem`) among the newest; None for
    loss (a rate, not judged on samples)."""
    if problem is Problem.SILENT:
        return {(r.run, r.sequence) for r in s.recent}
    if problem is Problem.LATENCY:
        slo = limits.latency_slo.total_seconds()
        return {(r.run, r.sequence) for r in s.recent if r.latency <= slo}
    if problem is Problem.DUPLICATES:
        return {(r.run, r.sequence) for r in s.recent if r.settled and not r.duplicates}
    return None


def _problem_finding(
    problem: Problem, hop: Hop, injection: bool, ambiguous: bool,
    verdicts: Mapping[Hop, HopVerdict], refs: HopObjects, limits: ProbeThresholds,
    now: datetime, dead_letter: str | None, traces: TraceLookup | None = None,
) -> Finding:
    affected = [h for h in Hop if problem in verdicts[h].problems
                and (h.position <= hop.position if not injection else h is hop)]
    hops_text = _hops(affected)
    s = verdicts[hop].stats
    assert s is not None
    entry = refs.entry_text.get(hop) or str(refs.entry[hop])
    if injection:
        return _finding(
            Health.DEGRADED, refs.entry[hop], REASON_INJECTION,
            f"probes injected at {entry} ({hop.value}) show {_problem_text(problem)} "
            f"while those injected further upstream pass through the same path: the "
            f"checker's way into {entry} (its URL) does not work. "
            f"{_figures(problem, s, now)}")
    where = refs.segment_text.get(hop) or str(refs.segment[hop])
    if ambiguous:
        where += " (or a segment further down that is not probed)"
    note = f" Last dead letter: {dead_letter}" if dead_letter and problem in (
        Problem.SILENT, Problem.LOSS) else ""
    trace = _trace(s, traces) if problem in (Problem.SILENT, Problem.LOSS) else None
    if trace is not None:
        note += f" Trace of the newest failed heartbeat: {trace.trace_id}"
        note += (f", stops at {trace.stopped_at}: {trace.detail}." if trace.stopped_at
                 else ".")
    if problem is Problem.SILENT:
        return _finding(
            Health.UNHEALTHY, refs.segment[hop], REASON_NO_HEARTBEAT,
            f"no heartbeat injected at {hops_text} arrives: {where} is broken. "
            f"{_figures(problem, s, now)}{note}").model_copy(update={"trace": trace})
    what = {
        Problem.LOSS: "heartbeats are lost",
        Problem.LATENCY: "heartbeats are slow",
        Problem.DUPLICATES: "heartbeats are duplicated",
    }[problem]
    limit = {
        Problem.LOSS: f"more than {limits.max_loss_ratio:.0%}",
        Problem.LATENCY: f"the newest {limits.confirm_samples} over "
                         f"{_secs(limits.latency_slo)}",
        Problem.DUPLICATES: f"the newest {limits.confirm_samples} delivered more than once",
    }[problem]
    return _finding(
        Health.DEGRADED, refs.segment[hop], _PROBLEM_REASON[problem],
        f"{what} ({limit}) on {hops_text}: {where}. {_figures(problem, s, now)}{note}",
    ).model_copy(update={"trace": trace})


def _trace(s: HopStats, traces: TraceLookup | None) -> HeartbeatTrace | None:
    """The trace of a heartbeat of the hop that should have arrived and did not: the newest
    one the tracing backend has answered about, else the newest (so the finding keeps one
    answer while newer heartbeats fail, instead of dropping it every round)."""
    ids = [trace_context(s.application, s.hop, sequence, run=run,
                         namespace=s.namespace if s.hop is Hop.BROKER else None)[0]
           for run, sequence in s.streak_rounds]
    if not ids:
        return None
    for trace_id in ids if traces is not None else ():
        known = traces(trace_id) if traces is not None else None
        if known is not None:
            return known
    return HeartbeatTrace(trace_id=ids[0])


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
        ratio = s.judged_loss_ratio or 0.0
        if s.window_judged is not None:
            return (f"{ratio:.1%} lost over the last {window}: {s.window_isolated_unreceived}"
                    f" of {s.window_judged} sends unreceived outside outages "
                    f"({s.window_lost} sequence gaps, {s.window_received} received).")
        return (f"{ratio:.1%} lost over the last {window} ({s.window_lost} sequence gaps, "
                f"{s.window_received} received).")
    if problem is Problem.LATENCY:
        lat = s.latency
        newest = ", ".join(_f(r.latency) for r in s.recent[-3:])
        return (f"Newest: {newest}; over the last {window}: p50 {_f(lat.p50)}, "
                f"p99 {_f(lat.p99)}, max {_f(lat.max)} ({lat.count} heartbeats).")
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
