"""What was sent and what arrived, per (application, namespace, hop): the probing figures.

Pure bookkeeping, no I/O; time comes from an injected clock (or explicitly per call), so
tests replay any history exactly. One `Tracker` serves the receiver (arrivals), the
sender (sends) and the health evaluation and metrics (figures).

**Arrivals** are classified per (application, namespace, hop) and *run* (a sender
incarnation; sequences restart with every run, and two runs may overlap during a leader
change, so each keeps its own state — the last `max_runs` of them):

- the first arrival of a run sets its baseline: nothing before it is counted lost (the
  Trigger may be newer than the run);
- a sequence above the highest seen is *in order*; the ones it skips are *missing*,
  noticed now;
- a missing sequence that arrives within `grace` of being noticed is *out of order*
  (reordering is not loss); one still missing after `grace` is *lost* (counted whenever
  the tracker next looks, so figures do not depend on when it is asked; in the window
  at its estimated send time, interpolated between the send times of its neighbours, so
  the losses of an outage leave the window one window after they happened, not after
  the outage ended); one that arrives after that is *late*: it stays counted as lost (it missed
  its deadline), but counts as delivered for the sender-side figures and gives a latency
  sample;
- a sequence seen before is a *duplicate* (as is a repeated event id the receiver's
  replay cache caught: `record_duplicate`). Duplicates change nothing else: no arrival,
  no latency sample, no last-arrival time;
- gaps wider than `max_gap` are counted lost at once, not remembered one by one.

So for every run, `received + lost + missing` covers every sequence from its baseline to
its highest, once.

**Latency** = receive time - the heartbeat's `time` (the sender's clock; clamped at 0),
kept for the sliding `window` (percentiles) and in cumulative histogram buckets (metrics).

**Sends**: the sender records each send (`record_sent`: injection point, sequence, run,
time). For a (application, namespace, hop), the sends that should have arrived by now are
those older than `grace`, within the window, and not before the pair was expected
(`expect`, e.g. when its Trigger became ready; by default its first arrival on any hop).
Of those, the ones that did not arrive are *unreceived*: loss that sequence gaps cannot
see (nothing arrives after it), and `unreceived_streak` says how many of the newest in a
row are missing. The tracker assumes it sees every delivery of the runs it records: the
heartbeat Triggers must deliver to the replica that sends (the leader).

**The newest arrivals** (`HopStats.recent`, the last `RECENT` distinct heartbeats of a
series in send order, each with its latency and how many duplicates followed it) let the
health judge the *current* state ("the newest two were slow") rather than the window's,
so a verdict appears and clears within an interval or two. A heartbeat's duplicate count
is *settled* once a duplicate came or the grace period passed.

**Outages and isolated loss.** A run of at least `outage_sends` consecutive unreceived
sends is an outage (judged as silence while it lasts); the other unreceived sends, in runs
that ended with an arrival, are *isolated* losses: `judged_loss_ratio` counts only those,
so an outage that ended does not keep a loss verdict alive for a whole window. The
ongoing run of unreceived sends is neither yet.

Memory is bounded: per series at most `max_events` window events, `max_gap` missing and
lost sequences per run, `max_runs` runs; per injection point `max_events` sends.
`forget` / `retain` drop pairs that are no longer probed (their metric series vanish).

`ProbeMetrics` exports the figures to Prometheus at scrape time (thread-safe: the tracker
holds a lock, and the API serves `/metrics` from a worker thread).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from eventmesh_health.probing.heartbeat import Heartbeat, Hop, RejectReason

__all__ = [
    "LATENCY_BUCKETS",
    "RECENT",
    "Arrival",
    "HopStats",
    "LatencySummary",
    "ProbeMetrics",
    "RecentArrival",
    "Tracker",
]

# 5 ms ... 60 s: a healthy Kafka-backed mesh delivers in tens of milliseconds, retries
# with backoff take seconds.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)


# How many of the newest distinct arrivals a series remembers (`HopStats.recent`).
RECENT = 8


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Arrival(StrEnum):
    IN_ORDER = "InOrder"
    OUT_OF_ORDER = "OutOfOrder"
    LATE = "Late"
    DUPLICATE = "Duplicate"


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """End-to-end latency over the window, in seconds (None without samples)."""

    count: int
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    max: float | None = None
    mean: float | None = None

    @staticmethod
    def of(samples: list[float]) -> LatencySummary:
        if not samples:
            return LatencySummary(0)
        ordered = sorted(samples)
        return LatencySummary(
            count=len(ordered), p50=_rank(ordered, 0.50), p90=_rank(ordered, 0.90),
            p99=_rank(ordered, 0.99), max=ordered[-1], mean=math.fsum(ordered) / len(ordered),
        )


def _rank(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile: the smallest sample with at least q of them at or below."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass(frozen=True, slots=True)
class RecentArrival:
    """One of the newest distinct arrivals of a series."""

    run: str
    sequence: int
    arrived_at: datetime
    latency: float  # seconds
    duplicates: int  # further deliveries of it so far
    settled: bool  # a duplicate came, or the grace period passed since it arrived


@dataclass(frozen=True, slots=True)
class HopStats:
    """The figures of one (application, namespace, hop) at `now`."""

    application: str
    namespace: str
    hop: Hop
    now: datetime
    window: timedelta
    # since tracking began
    received: int = 0  # distinct heartbeats that arrived in time (not late, not duplicates)
    lost: int = 0  # sequence gaps older than the grace period
    duplicates: int = 0
    out_of_order: int = 0
    late: int = 0  # arrived after being counted lost
    dead_letters: int = 0
    first_arrival: datetime | None = None
    last_arrival: datetime | None = None  # of a non-duplicate (late ones included)
    pending_gaps: int = 0  # missing, still within the grace period
    # within the window
    window_received: int = 0
    window_lost: int = 0
    window_duplicates: int = 0
    window_out_of_order: int = 0
    latency: LatencySummary = LatencySummary(0)
    # from the sender's records (None when it recorded nothing for this hop or the pair
    # is not expected yet)
    window_sent: int | None = None  # sends that should have arrived by now
    window_unreceived: int | None = None
    unreceived_streak: int = 0  # the newest sends that should have arrived and did not
    streak_last_sent: datetime | None = None  # when the newest of those was sent
    # the rounds (run, sequence) of the newest `RECENT` of those, newest first
    streak_rounds: tuple[tuple[str, int], ...] = ()
    # unreceived sends outside outages (runs of >= outage_sends) and the ongoing run;
    # `window_judged`: the sends these are out of (the window's, minus both)
    window_isolated_unreceived: int | None = None
    window_judged: int | None = None
    recent: tuple[RecentArrival, ...] = ()  # newest last

    @property
    def judged_loss_ratio(self) -> float | None:
        """Loss the health judges: isolated unreceived sends (outages are silence) when
        the sender's records are there, else sequence gaps; None if no data."""
        if self.window_judged is not None:
            if not self.window_judged:
                return None
            return (self.window_isolated_unreceived or 0) / self.window_judged
        if self.window_received + self.window_lost:
            return self.window_lost / (self.window_received + self.window_lost)
        return None

    @property
    def judged_samples(self) -> int:
        """How many heartbeats `judged_loss_ratio` is based on."""
        if self.window_judged is not None:
            return self.window_judged
        return self.window_received + self.window_lost

    @property
    def loss_ratio(self) -> float | None:
        """The worse of gap loss and sender-side loss over the window; None if no data."""
        ratios = []
        if self.window_received + self.window_lost:
            ratios.append(self.window_lost / (self.window_received + self.window_lost))
        if self.window_sent:
            ratios.append((self.window_unreceived or 0) / self.window_sent)
        return max(ratios) if ratios else None

    @property
    def duplicate_ratio(self) -> float | None:
        """Duplicates per distinct arrival over the window (None if neither)."""
        if self.window_received:
            return self.window_duplicates / self.window_received
        return 1.0 if self.window_duplicates else None

    @property
    def availability(self) -> float | None:
        """Delivered / expected over the window: from the sender's records when there are
        any, else from sequence gaps (Xinfra Monitor's produce/consume availability)."""
        if self.window_sent:
            return (self.window_sent - (self.window_unreceived or 0)) / self.window_sent
        if self.window_received + self.window_lost:
            return self.window_received / (self.window_received + self.window_lost)
        return None

    @property
    def expected(self) -> int:
        """How many heartbeats the window's figures are based on."""
        return max(self.window_received + self.window_lost, self.window_sent or 0)


@dataclass(frozen=True, slots=True)
class _SenderSide:
    sent: int | None = None
    unreceived: int | None = None
    streak: int = 0
    streak_last: datetime | None = None
    streak_rounds: tuple[tuple[str, int], ...] = ()
    isolated: int | None = None
    judged: int | None = None

    def stats(self, base: HopStats) -> HopStats:
        return replace(
            base, window_sent=self.sent, window_unreceived=self.unreceived,
            unreceived_streak=self.streak, streak_last_sent=self.streak_last,
            streak_rounds=self.streak_rounds,
            window_isolated_unreceived=self.isolated, window_judged=self.judged)


# Window event kinds.
_RECEIVED, _LOST, _DUPLICATE, _OUT_OF_ORDER = range(4)


class _Run:
    __slots__ = ("baseline", "below", "highest", "highest_sent", "lost", "missing")

    def __init__(self, sequence: int, sent: datetime) -> None:
        self.baseline = sequence
        self.highest = sequence
        self.highest_sent = sent  # the send time of `highest`
        # sequence -> (when the gap was noticed, estimated send time)
        self.missing: dict[int, tuple[datetime, datetime]] = {}
        self.lost: OrderedDict[int, None] = OrderedDict()  # counted lost, not yet arrived
        self.below: set[int] = set()  # arrived below the baseline

    def arrived(self, sequence: int) -> bool:
        if sequence < self.baseline:
            return sequence in self.below
        return (sequence <= self.highest and sequence not in self.missing
                and sequence not in self.lost)


class _Series:
    """One (application, namespace, hop)."""

    __slots__ = (
        "buckets", "dead_letters", "duplicates", "events", "first_arrival", "last_arrival",
        "late", "latency_count", "latency_sum", "lost", "out_of_order", "received", "recent",
        "runs",
    )

    def __init__(self, max_events: int, n_buckets: int) -> None:
        self.runs: OrderedDict[str, _Run] = OrderedDict()
        self.received = self.lost = self.duplicates = self.out_of_order = self.late = 0
        self.dead_letters = 0
        self.first_arrival: datetime | None = None
        self.last_arrival: datetime | None = None
        # (time, kind, value): value = latency for _RECEIVED, count for _LOST
        self.events: deque[tuple[datetime, int, float]] = deque(maxlen=max_events)
        self.buckets = [0] * n_buckets
        self.latency_count = 0
        self.latency_sum = 0.0
        self.recent: deque[_Recent] = deque(maxlen=RECENT)  # newest distinct arrivals

    def duplicated(self, run: str, sequence: int) -> None:
        for entry in reversed(self.recent):
            if entry.run == run and entry.sequence == sequence:
                entry.duplicates += 1
                return


class _Recent:
    __slots__ = ("at", "duplicates", "latency", "run", "sequence")

    def __init__(self, run: str, sequence: int, at: datetime, latency: float) -> None:
        self.run, self.sequence, self.at, self.latency = run, sequence, at, latency
        self.duplicates = 0


@dataclass(slots=True)
class _Sent:
    total: int
    records: deque[tuple[datetime, str, int]]  # (time, run, sequence)


class Tracker:
    """Arrivals, losses, duplicates, latency and sends; see the module docstring."""

    def __init__(
        self,
        *,
        window: timedelta = timedelta(minutes=5),
        grace: timedelta = timedelta(seconds=30),
        clock: Callable[[], datetime] = _utcnow,
        max_runs: int = 4,
        max_gap: int = 1000,
        max_events: int = 10_000,
        buckets: tuple[float, ...] = LATENCY_BUCKETS,
        outage_sends: int = 2,
    ) -> None:
        if grace >= window:
            raise ValueError("the grace period must be shorter than the window")
        if outage_sends < 1:
            raise ValueError("outage_sends must be positive")
        self.outage_sends = outage_sends
        self.window = window
        self.grace = grace
        self.clock = clock
        self.max_runs = max_runs
        self.max_gap = max_gap
        self.max_events = max_events
        self.buckets = tuple(buckets)
        self._lock = threading.RLock()
        self._series: dict[tuple[str, str, Hop], _Series] = {}
        self._sent: dict[tuple[str, Hop, str | None], _Sent] = {}
        self._expected: dict[tuple[str, str], datetime] = {}
        self._first: dict[tuple[str, str], datetime] = {}  # first arrival of a pair, any hop

    # --- recording --------------------------------------------------------------------

    def record_sent(
        self, application: str, hop: Hop, sequence: int, *, run: str,
        at: datetime | None = None, namespace: str | None = None,
    ) -> None:
        """The sender sent `sequence` of `run` into `hop` (`namespace`: broker probes)."""
        at = at or self.clock()
        key = (application, hop, namespace if hop is Hop.BROKER else None)
        with self._lock:
            sent = self._sent.get(key)
            if sent is None:
                sent = self._sent[key] = _Sent(0, deque(maxlen=self.max_events))
            sent.total += 1
            sent.records.append((at, run, sequence))
            horizon = at - self.window
            while sent.records and sent.records[0][0] < horizon:
                sent.records.popleft()

    def record_arrival(
        self, hb: Heartbeat, namespace: str, *, at: datetime | None = None
    ) -> Arrival:
        """A verified heartbeat arrived at `namespace`'s receiver at `at`."""
        at = at or self.clock()
        with self._lock:
            series = self._get(hb.application, namespace, hb.hop)
            self._mature(series, at)
            run = series.runs.get(hb.run)
            seq = hb.sequence
            if run is None:
                run = series.runs[hb.run] = _Run(seq, hb.time)
                while len(series.runs) > self.max_runs:
                    series.runs.popitem(last=False)
                kind = Arrival.IN_ORDER
            else:
                series.runs.move_to_end(hb.run)
                kind = self._classify(series, run, hb, at)
            if kind is Arrival.DUPLICATE:
                series.duplicates += 1
                series.events.append((at, _DUPLICATE, 1.0))
                series.duplicated(hb.run, seq)
                return kind
            latency = max(0.0, (at - hb.time).total_seconds())
            series.recent.append(_Recent(hb.run, seq, at, latency))
            if kind is not Arrival.LATE:
                series.received += 1
                series.events.append((at, _RECEIVED, latency))
            else:
                series.events.append((at, _RECEIVED, -1.0 - latency))  # late: not counted
            if kind is Arrival.OUT_OF_ORDER:
                series.out_of_order += 1
                series.events.append((at, _OUT_OF_ORDER, 1.0))
            self._observe(series, latency)
            if series.first_arrival is None:
                series.first_arrival = at
            series.last_arrival = at if series.last_arrival is None else max(
                series.last_arrival, at)
            self._first.setdefault((hb.application, namespace), at)
            return kind

    def _classify(self, series: _Series, run: _Run, hb: Heartbeat, at: datetime) -> Arrival:
        seq = hb.sequence
        if seq > run.highest:
            gap = seq - run.highest - 1
            if gap > self.max_gap:
                self._count_lost(series, gap, at)
            else:
                step = (hb.time - run.highest_sent) / (gap + 1)
                for i, missing in enumerate(range(run.highest + 1, seq), start=1):
                    run.missing[missing] = (at, run.highest_sent + step * i)
            run.highest = seq
            run.highest_sent = hb.time
            return Arrival.IN_ORDER
        if seq < run.baseline:
            if seq in run.below:
                return Arrival.DUPLICATE
            if len(run.below) < self.max_gap:
                run.below.add(seq)
            return Arrival.OUT_OF_ORDER
        if run.missing.pop(seq, None) is not None:
            return Arrival.OUT_OF_ORDER
        if seq in run.lost:
            del run.lost[seq]
            series.late += 1
            return Arrival.LATE
        return Arrival.DUPLICATE

    def record_duplicate(
        self, hb: Heartbeat, namespace: str, *, at: datetime | None = None
    ) -> None:
        """A repeated delivery of an event id already recorded (the receiver's replay
        cache): counted as a duplicate, nothing else."""
        at = at or self.clock()
        with self._lock:
            series = self._get(hb.application, namespace, hb.hop)
            series.duplicates += 1
            series.events.append((at, _DUPLICATE, 1.0))
            series.duplicated(hb.run, hb.sequence)

    def expecting(self, application: str, namespace: str) -> bool:
        """Whether sends to the pair are counted yet (`expect`ed, or a first arrival)."""
        with self._lock:
            pair = (application, namespace)
            return pair in self._expected or pair in self._first

    def arrived(
        self, application: str, namespace: str, hop: Hop, run: str, sequence: int
    ) -> bool:
        """Whether `sequence` of `run` arrived at `namespace` (late ones included)."""
        with self._lock:
            series = self._series.get((application, namespace, hop))
            found = series.runs.get(run) if series is not None else None
            return found is not None and found.arrived(sequence)

    def record_dead_letter(
        self, application: str, namespace: str, hop: Hop, *, at: datetime | None = None
    ) -> None:
        """The mesh gave up delivering a heartbeat of `hop` to `namespace`."""
        del at  # the count is what matters; kept for symmetry
        with self._lock:
            self._get(application, namespace, hop).dead_letters += 1

    def expect(self, application: str, namespace: str, since: datetime) -> None:
        """Heartbeats sent from `since` on should reach `namespace` (e.g. its Trigger is
        ready). Without it, from the pair's first arrival."""
        with self._lock:
            self._expected[(application, namespace)] = since

    def forget(self, application: str, namespace: str | None = None) -> None:
        """Drop everything about an application (or one of its namespaces)."""
        with self._lock:
            for key in [k for k in self._series
                        if k[0] == application and namespace in (None, k[1])]:
                del self._series[key]
            for pair_map in (self._expected, self._first):
                for pair in [p for p in pair_map
                             if p[0] == application and namespace in (None, p[1])]:
                    del pair_map[pair]
            for sent_key in [k for k in self._sent if k[0] == application and (
                    namespace is None or k[2] == namespace)]:
                del self._sent[sent_key]

    def retain(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Forget every (application, namespace) not in `pairs`, and the sends of
        applications with none."""
        keep = set(pairs)
        apps = {app for app, _ in keep}
        with self._lock:
            for key in [k for k in self._series if (k[0], k[1]) not in keep]:
                del self._series[key]
            for pair_map in (self._expected, self._first):
                for pair in [p for p in pair_map if p not in keep]:
                    del pair_map[pair]
            for sent_key in [k for k in self._sent if k[0] not in apps or (
                    k[2] is not None and (k[0], k[2]) not in keep)]:
                del self._sent[sent_key]

    # --- reading ----------------------------------------------------------------------

    def pairs(self) -> list[tuple[str, str]]:
        """Every (application, namespace) the tracker has figures or expectations for."""
        with self._lock:
            found = {(k[0], k[1]) for k in self._series} | set(self._expected)
        return sorted(found)

    def sent_totals(self) -> dict[tuple[str, Hop], int]:
        """Heartbeats sent per (application, hop) since tracking began."""
        with self._lock:
            out: dict[tuple[str, Hop], int] = {}
            for (app, hop, _), sent in self._sent.items():
                out[(app, hop)] = out.get((app, hop), 0) + sent.total
        return out

    def stats(
        self, application: str, namespace: str, hop: Hop, now: datetime | None = None
    ) -> HopStats:
        now = now or self.clock()
        with self._lock:
            series = self._series.get((application, namespace, hop))
            side = self._sender_side(series, application, namespace, hop, now)
            if series is None:
                return side.stats(HopStats(application, namespace, hop, now, self.window))
            self._mature(series, now)
            horizon = now - self.window
            while series.events and series.events[0][0] < horizon:
                series.events.popleft()
            counts = [0, 0, 0, 0]
            samples: list[float] = []
            for when, kind, value in series.events:
                if when > now or when < horizon:  # lost events are appended late
                    continue
                if kind == _RECEIVED:
                    if value >= 0:
                        counts[_RECEIVED] += 1
                        samples.append(value)
                    else:
                        samples.append(-1.0 - value)
                elif kind == _LOST:
                    counts[_LOST] += int(value)
                else:
                    counts[kind] += 1
            return side.stats(HopStats(
                application, namespace, hop, now, self.window,
                received=series.received, lost=series.lost, duplicates=series.duplicates,
                out_of_order=series.out_of_order, late=series.late,
                dead_letters=series.dead_letters, first_arrival=series.first_arrival,
                last_arrival=series.last_arrival,
                pending_gaps=sum(len(run.missing) for run in series.runs.values()),
                window_received=counts[_RECEIVED], window_lost=counts[_LOST],
                window_duplicates=counts[_DUPLICATE], window_out_of_order=counts[_OUT_OF_ORDER],
                latency=LatencySummary.of(samples),
                recent=self._recent(series, now),
            ))

    def pair_stats(
        self, application: str, namespace: str, now: datetime | None = None
    ) -> dict[Hop, HopStats]:
        now = now or self.clock()
        return {hop: self.stats(application, namespace, hop, now) for hop in Hop}

    def _sender_side(
        self, series: _Series | None, application: str, namespace: str, hop: Hop,
        now: datetime,
    ) -> _SenderSide:
        sent = self._sent.get((application, hop, namespace if hop is Hop.BROKER else None))
        pair = (application, namespace)
        since = self._expected.get(pair, self._first.get(pair))
        if sent is None or since is None:
            return _SenderSide()
        start = max(since, now - self.window)
        due = now - self.grace
        # delivered or not, of the sends that should have arrived, newest first
        outcomes: list[bool] = []
        streak = 0
        streak_last: datetime | None = None
        streak_rounds: list[tuple[str, int]] = []
        for at, run_id, seq in reversed(sent.records):
            if at > due:
                continue
            if at < start:
                break
            run = series.runs.get(run_id) if series is not None else None
            arrived = run is not None and run.arrived(seq)
            if not arrived and streak == len(outcomes):  # still in the newest run
                streak += 1
                streak_last = streak_last or at
                if len(streak_rounds) < RECENT:
                    streak_rounds.append((run_id, seq))
            outcomes.append(arrived)
        isolated = outage = 0
        gap = 0
        for ok in outcomes[streak:]:  # the closed runs of unreceived sends
            if not ok:
                gap += 1
                continue
            if gap >= self.outage_sends:
                outage += gap
            else:
                isolated += gap
            gap = 0
        if gap >= self.outage_sends:  # the oldest run (its start may be before the window)
            outage += gap
        else:
            isolated += gap
        return _SenderSide(
            sent=len(outcomes), unreceived=outcomes.count(False), streak=streak,
            streak_last=streak_last, streak_rounds=tuple(streak_rounds), isolated=isolated,
            judged=len(outcomes) - streak - outage)

    # --- internals --------------------------------------------------------------------

    def _recent(self, series: _Series, now: datetime) -> tuple[RecentArrival, ...]:
        """The newest arrivals in send order (run, then sequence), not arrival order: a
        straggler of an earlier round is not the newest sample."""
        runs = {run: i for i, run in enumerate(series.runs)}
        ordered = sorted((r for r in series.recent if r.at <= now),
                         key=lambda r: (runs.get(r.run, -1), r.sequence))
        return tuple(RecentArrival(r.run, r.sequence, r.at, r.latency, r.duplicates,
                                   settled=bool(r.duplicates) or r.at + self.grace <= now)
                     for r in ordered)

    def _get(self, application: str, namespace: str, hop: Hop) -> _Series:
        key = (application, namespace, hop)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series(self.max_events, len(self.buckets))
        return series

    def _mature(self, series: _Series, now: datetime) -> None:
        """Missing sequences older than the grace period become lost."""
        for run in series.runs.values():
            if not run.missing:
                continue
            due = [seq for seq, (noticed, _) in run.missing.items()
                   if noticed + self.grace <= now]
            for seq in sorted(due):
                _, sent = run.missing.pop(seq)
                run.lost[seq] = None
                if len(run.lost) > self.max_gap:
                    run.lost.popitem(last=False)
                series.lost += 1
                series.events.append((sent, _LOST, 1.0))

    def _count_lost(self, series: _Series, count: int, at: datetime) -> None:
        series.lost += count
        series.events.append((at, _LOST, float(count)))

    def _observe(self, series: _Series, latency: float) -> None:
        for i, bound in enumerate(self.buckets):
            if latency <= bound:
                series.buckets[i] += 1
        series.latency_count += 1
        series.latency_sum += latency

    def _histograms(self) -> list[tuple[str, str, list[int], int, float]]:
        """(application, namespace, cumulative bucket counts, count, sum) of the end-to-end
        (ingress) latency, per pair."""
        with self._lock:
            return [
                (app, ns, list(series.buckets), series.latency_count, series.latency_sum)
                for (app, ns, hop), series in sorted(self._series.items())
                if hop is Hop.INGRESS
            ]

    def _totals(self) -> list[tuple[str, str, Hop, int, int, int, int, int]]:
        with self._lock:
            return [
                (app, ns, hop, s.received, s.lost, s.duplicates, s.out_of_order, s.dead_letters)
                for (app, ns, hop), s in sorted(self._series.items())
            ]


class ProbeMetrics(Collector):
    """The probing figures as Prometheus metrics, read from the tracker at scrape time.

    | metric | type | labels |
    |---|---|---|
    | `eventmesh_heartbeats_sent_total` | counter | application, hop |
    | `eventmesh_heartbeats_received_total` | counter | application, namespace, hop |
    | `eventmesh_heartbeats_lost_total` | counter | application, namespace, hop |
    | `eventmesh_heartbeats_duplicated_total` | counter | application, namespace, hop |
    | `eventmesh_heartbeats_out_of_order_total` | counter | application, namespace, hop |
    | `eventmesh_heartbeats_dead_lettered_total` | counter | application, namespace, hop |
    | `eventmesh_heartbeats_rejected_total` | counter | reason |
    | `eventmesh_heartbeat_latency_seconds` | histogram | application, namespace |
    | `eventmesh_heartbeat_availability_ratio` | gauge | application, namespace |
    | `eventmesh_heartbeat_latency_objective_seconds` | gauge | |

    `reason` is a `RejectReason` (all of them present from 0). Latency and availability
    are end to end: of the probes injected at the ingress; availability over the window.
    Labels are bounded: application and namespace names of probed pairs, three hops, the
    twelve reasons. The latency objective (`--probe-latency-slo`, when given) is exported so
    that alerts and dashboards compare against the one the checker judges by. Register it
    with `registry.register(metrics)` or `register(registry)`.
    """

    def __init__(
        self,
        tracker: Tracker,
        rejected: Callable[[], Mapping[str, int]] | None = None,
        latency_objective: float | None = None,
    ) -> None:
        self.tracker = tracker
        self._rejected = rejected
        self._latency_objective = latency_objective

    def register(self, registry: CollectorRegistry) -> ProbeMetrics:
        registry.register(self)
        return self

    def collect(self) -> Iterator[Metric]:
        tracker = self.tracker
        sent = CounterMetricFamily(
            "eventmesh_heartbeats_sent", "Heartbeats the checker sent, per injection hop.",
            labels=["application", "hop"])
        for (app, hop), n in sorted(tracker.sent_totals().items()):
            sent.add_metric([app, hop.value], float(n))
        yield sent
        families = [
            CounterMetricFamily(
                "eventmesh_heartbeats_received",
                "Distinct heartbeats that arrived within the grace period.",
                labels=["application", "namespace", "hop"]),
            CounterMetricFamily(
                "eventmesh_heartbeats_lost",
                "Heartbeats counted lost: a sequence gap older than the grace period.",
                labels=["application", "namespace", "hop"]),
            CounterMetricFamily(
                "eventmesh_heartbeats_duplicated",
                "Heartbeats delivered again (same event id or sequence).",
                labels=["application", "namespace", "hop"]),
            CounterMetricFamily(
                "eventmesh_heartbeats_out_of_order",
                "Heartbeats that arrived after a later one, within the grace period.",
                labels=["application", "namespace", "hop"]),
            CounterMetricFamily(
                "eventmesh_heartbeats_dead_lettered",
                "Heartbeats the mesh gave up on and sent to the dead-letter endpoint.",
                labels=["application", "namespace", "hop"]),
        ]
        for app, ns, hop, *values in tracker._totals():
            for family, value in zip(families, values, strict=True):
                family.add_metric([app, ns, hop.value], float(value))
        yield from families
        rejected = CounterMetricFamily(
            "eventmesh_heartbeats_rejected",
            "Requests to the heartbeat endpoints that were turned down, by reason.",
            labels=["reason"])
        counts = self._rejected() if self._rejected is not None else {}
        for reason in RejectReason:
            rejected.add_metric([reason.value], float(counts.get(reason.value, 0)))
        yield rejected
        latency = HistogramMetricFamily(
            "eventmesh_heartbeat_latency_seconds",
            "End-to-end latency of heartbeats injected at the application's ingress: "
            "receive time minus send time.",
            labels=["application", "namespace"])
        for app, ns, buckets, count, total in tracker._histograms():
            latency.add_metric(
                [app, ns],
                [*((repr(float(b)), float(n)) for b, n in zip(tracker.buckets, buckets,
                                                              strict=True)),
                 ("+Inf", float(count))],
                total)
        yield latency
        availability = GaugeMetricFamily(
            "eventmesh_heartbeat_availability_ratio",
            "Share of the heartbeats injected at the ingress over the window that arrived "
            "(absent while there is nothing to judge).",
            labels=["application", "namespace"])
        now = tracker.clock()
        for app, ns in tracker.pairs():
            ratio = tracker.stats(app, ns, Hop.INGRESS, now).availability
            if ratio is not None:
                availability.add_metric([app, ns], ratio)
        yield availability
        if self._latency_objective is not None:
            yield GaugeMetricFamily(
                "eventmesh_heartbeat_latency_objective_seconds",
                "The end-to-end heartbeat latency objective the checker judges by "
                "(--probe-latency-slo).", value=self._latency_objective)
