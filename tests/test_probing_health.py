"""Data-plane verdicts and hop localisation: a table over the hops' figures, then whole
histories through a tracker (a fault at each segment is named within two intervals and
clears again)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from eventmesh_health.model import Health, ObjectRef, Severity
from eventmesh_health.probing.health import (
    Culprit,
    HopObjects,
    HopState,
    ProbeThresholds,
    Problem,
    classify,
    evaluate,
)
from eventmesh_health.probing.heartbeat import Hop, new_heartbeat
from eventmesh_health.probing.tracker import HopStats, LatencySummary, RecentArrival, Tracker
from eventmesh_health.topology.kyma1 import DATA_PLANE

T0 = datetime(2020, 6, 15, 10, 0, tzinfo=UTC)
NOW = T0 + timedelta(minutes=10)
APP, NS = "commerce-mock", "prod"
S = timedelta(seconds=1)
LIMITS = ProbeThresholds()  # 10 s interval, K = 3, SLO 2 s, newest 2, 5 %, min 3 samples
IN, CH, BR = Hop.INGRESS, Hop.CHANNEL, Hop.BROKER


def arrivals(*latencies: float, duplicates: int = 0, settled: bool = True,
             ) -> tuple[RecentArrival, ...]:
    """The newest arrivals (oldest first), 10 s apart, the newest 2 s ago."""
    n = len(latencies)
    return tuple(RecentArrival("run", i, NOW - 2 * S - (n - 1 - i) * 10 * S, latency,
                               duplicates, settled) for i, latency in enumerate(latencies))


def figures(hop: Hop, spec: str) -> HopStats:
    """One hop's figures in words: fine, silent, never, lossy, unreceived, slow, dup, few,
    and their single-sample forms slow1, dup1 (one bad sample, awaiting confirmation)."""
    base = dict(application=APP, namespace=NS, hop=hop, now=NOW, window=timedelta(minutes=5))
    recent = NOW - 2 * S
    fine = dict(received=100, last_arrival=recent, first_arrival=T0, window_received=30,
                latency=LatencySummary(30, 0.05, 0.08, 0.1, 0.1, 0.05),
                window_sent=30, window_unreceived=0, window_isolated_unreceived=0,
                window_judged=30, recent=arrivals(0.05, 0.05, 0.06, 0.05))
    if spec == "fine":
        return HopStats(**base, **fine)
    if spec == "silent":
        return HopStats(**base, **{**fine, "last_arrival": NOW - 31 * S, "window_received": 27,
                                   "window_unreceived": 3, "unreceived_streak": 3,
                                   "streak_last_sent": NOW - 8 * S})
    if spec == "silent-rounds":  # rounds 2 and 3 (of 0-3) did not arrive
        return HopStats(**base, **{**fine, "last_arrival": NOW - 22 * S, "recent": arrivals(
            0.05, 0.05), "unreceived_streak": 2, "streak_last_sent": NOW - 2 * S,
            "streak_rounds": (("run", 3), ("run", 2))})
    if spec == "dropped-then-fine":  # round 2 lost, round 3 arrived (the fault just ended)
        return HopStats(**base, **{**fine, "recent": tuple(
            r for r in arrivals(0.05, 0.05, 0.06, 0.05) if r.sequence != 2)})
    if spec == "never":
        return HopStats(**base)
    if spec == "lossy":
        return HopStats(**base, **{**fine, "window_received": 27, "window_lost": 3,
                                   "window_unreceived": 3, "window_isolated_unreceived": 3})
    if spec == "unreceived":  # 2 isolated losses and the newest send missing
        return HopStats(**base, **{**fine, "window_unreceived": 3, "unreceived_streak": 1,
                                   "streak_last_sent": NOW - 8 * S,
                                   "window_isolated_unreceived": 2, "window_judged": 29,
                                   "last_arrival": NOW - 12 * S})
    if spec == "outage-over":  # 10 sends lost in a row, then arrivals again
        return HopStats(**base, **{**fine, "window_unreceived": 10, "window_lost": 10,
                                   "window_isolated_unreceived": 0, "window_judged": 20})
    if spec == "slow":
        return HopStats(**base, **{**fine, "latency": LatencySummary(30, 1.5, 2.5, 3.0, 3.0, 1.6),
                                   "recent": arrivals(0.05, 0.05, 2.5, 3.0)})
    if spec == "fine-before":  # fast, but the newest of a round before the others' bad ones
        return HopStats(**base, **{**fine, "recent": tuple(
            RecentArrival(r.run, r.sequence - 2, r.arrived_at - 20 * S, r.latency, 0, True)
            for r in arrivals(0.05, 0.05, 0.06, 0.05))})
    if spec == "fine-after":  # duplicated, then fine - but arrived after the others' newest
        return HopStats(**base, **{**fine, "window_duplicates": 1, "recent": (
            RecentArrival("run", 0, NOW - 12 * S, 0.05, 1, True),
            RecentArrival("run", 1, NOW - S, 0.9, 0, True))})
    if spec == "dup-new":  # duplicated in the two newest rounds, the newest just now
        return HopStats(**base, **{**fine, "window_duplicates": 2, "recent": (
            RecentArrival("run", 1, NOW - 12 * S, 0.05, 1, True),
            RecentArrival("run", 2, NOW - S, 0.05, 1, True))})
    if spec == "fine-unsettled":  # fine, the newest (round 2) not settled yet
        return HopStats(**base, **{**fine, "recent": (
            RecentArrival("run", 0, NOW - 22 * S, 0.05, 0, True),
            RecentArrival("run", 1, NOW - 12 * S, 0.05, 0, True),
            RecentArrival("run", 2, NOW - S, 0.05, 0, False))})
    if spec == "slow1":
        return HopStats(**base, **{**fine, "recent": arrivals(0.05, 0.05, 0.06, 3.0)})
    if spec == "slow-before":  # slow in the window, the newest fast again
        return HopStats(**base, **{**fine, "latency": LatencySummary(30, 1.5, 2.5, 3.0, 3.0, 1.6),
                                   "recent": arrivals(3.0, 3.0, 3.0, 0.05)})
    if spec == "dup":
        return HopStats(**base, **{**fine, "window_duplicates": 30,
                                   "recent": arrivals(0.05, 0.05, duplicates=1)})
    if spec == "dup1":  # the newest duplicated, the one before not
        return HopStats(**base, **{**fine, "window_duplicates": 1, "recent": (
            *arrivals(0.05, 0.05), RecentArrival("run", 9, NOW - S, 0.05, 1, True))})
    if spec == "dup-unsettled":  # duplicated so far, the newest not settled yet
        return HopStats(**base, **{**fine, "window_duplicates": 2, "recent": (
            *arrivals(0.05, 0.05, duplicates=1),
            RecentArrival("run", 9, NOW - S, 0.05, 0, False))})
    if spec == "few":  # a terrible ratio on too few samples
        return HopStats(**base, **{**fine, "window_received": 1, "window_lost": 1,
                                   "window_sent": 2, "window_unreceived": 1,
                                   "window_isolated_unreceived": 1, "window_judged": 2,
                                   "latency": LatencySummary(1, 9.0, 9.0, 9.0, 9.0, 9.0),
                                   "recent": arrivals(9.0)})
    raise AssertionError(spec)


OBJECTS = HopObjects.of(DATA_PLANE, APP, NS, "brokersub-hlb7j")
HTTP_SOURCE = OBJECTS.segment[IN]
BROKERSUB = OBJECTS.segment[CH]
BROKER = OBJECTS.segment[BR]
CHANNEL = OBJECTS.entry[CH]


def verdict(ingress: str, channel: str, broker: str | None, since: datetime = T0, **kw):
    stats = {IN: figures(IN, ingress), CH: figures(CH, channel)}
    if broker is not None:
        stats[BR] = figures(BR, broker)
    return classify(APP, NS, stats, now=NOW, since=since, thresholds=LIMITS, objects=OBJECTS,
                    **kw)


CASES = [
    # ingress, channel, broker -> health, [(reason, object)], culprits
    ("fine", "fine", "fine", Health.HEALTHY, [], []),
    ("silent", "silent", "silent", Health.UNHEALTHY, [("NoHeartbeat", BROKER)],
     [Culprit(BR, Problem.SILENT)]),
    ("never", "never", "never", Health.UNHEALTHY, [("NoHeartbeat", BROKER)],
     [Culprit(BR, Problem.SILENT)]),
    ("silent", "silent", "fine", Health.UNHEALTHY, [("NoHeartbeat", BROKERSUB)],
     [Culprit(CH, Problem.SILENT)]),
    ("silent", "fine", "fine", Health.UNHEALTHY, [("NoHeartbeat", HTTP_SOURCE)],
     [Culprit(IN, Problem.SILENT)]),
    ("fine", "silent", "fine", Health.DEGRADED, [("HeartbeatInjectionFailed", CHANNEL)],
     [Culprit(CH, Problem.SILENT, injection=True)]),
    ("fine", "fine", "silent", Health.DEGRADED, [("HeartbeatInjectionFailed", BROKER)],
     [Culprit(BR, Problem.SILENT, injection=True)]),
    ("silent", "fine", "silent", Health.UNHEALTHY,
     [("NoHeartbeat", HTTP_SOURCE), ("HeartbeatInjectionFailed", BROKER)],
     [Culprit(BR, Problem.SILENT, injection=True), Culprit(IN, Problem.SILENT)]),
    ("lossy", "fine", "fine", Health.DEGRADED, [("HeartbeatsLost", HTTP_SOURCE)],
     [Culprit(IN, Problem.LOSS)]),
    ("unreceived", "fine", "fine", Health.DEGRADED, [("HeartbeatsLost", HTTP_SOURCE)],
     [Culprit(IN, Problem.LOSS)]),
    ("lossy", "lossy", "fine", Health.DEGRADED, [("HeartbeatsLost", BROKERSUB)],
     [Culprit(CH, Problem.LOSS)]),
    ("lossy", "lossy", "lossy", Health.DEGRADED, [("HeartbeatsLost", BROKER)],
     [Culprit(BR, Problem.LOSS)]),
    ("slow", "slow", "slow", Health.DEGRADED, [("HeartbeatLatencyHigh", BROKER)],
     [Culprit(BR, Problem.LATENCY)]),
    ("slow", "fine", "fine", Health.DEGRADED, [("HeartbeatLatencyHigh", HTTP_SOURCE)],
     [Culprit(IN, Problem.LATENCY)]),
    ("dup", "dup", "dup", Health.DEGRADED, [("HeartbeatDuplicates", BROKER)],
     [Culprit(BR, Problem.DUPLICATES)]),
    ("dup", "dup", "fine", Health.DEGRADED, [("HeartbeatDuplicates", BROKERSUB)],
     [Culprit(CH, Problem.DUPLICATES)]),
    ("few", "few", "few", Health.HEALTHY, [], []),
    # one bad sample is only a suspicion (it awaits its confirmation probe): not judged,
    # and a suspect hop does not vouch for the segments below it
    ("slow1", "slow1", "slow1", Health.HEALTHY, [], []),
    ("slow", "slow1", "fine", Health.HEALTHY, [], []),  # until the channel's confirmation
    ("slow", "slow", "fine", Health.DEGRADED, [("HeartbeatLatencyHigh", BROKERSUB)],
     [Culprit(CH, Problem.LATENCY)]),
    ("dup1", "fine", "fine", Health.HEALTHY, [], []),
    ("dup-unsettled", "fine", "fine", Health.DEGRADED, [("HeartbeatDuplicates", HTTP_SOURCE)],
     [Culprit(IN, Problem.DUPLICATES)]),
    # a good sample from before the fault began vouches for nothing: wait for a newer one
    ("slow", "fine-before", "fine", Health.HEALTHY, [], []),
    ("slow", "fine", "fine", Health.DEGRADED, [("HeartbeatLatencyHigh", HTTP_SOURCE)],
     [Culprit(IN, Problem.LATENCY)]),
    # ... nor does one that passed after the fault ended (it ended during the newest round:
    # the broker's probe of that round passed before, the ingress probe after)
    ("fine-after", "dup", "dup", Health.DEGRADED, [("HeartbeatDuplicates", BROKER)],
     [Culprit(BR, Problem.DUPLICATES)]),
    # good samples that passed while the fault showed: the checker's own way in
    ("fine", "slow", "fine", Health.DEGRADED, [("HeartbeatInjectionFailed", CHANNEL)],
     [Culprit(CH, Problem.LATENCY, injection=True)]),
    # the same for silence: the ingress and channel probes passed in both silent rounds
    # of the broker's, or in only the newest (the fault ended while it was under way)
    ("fine", "fine", "silent-rounds", Health.DEGRADED, [("HeartbeatInjectionFailed", BROKER)],
     [Culprit(BR, Problem.SILENT, injection=True)]),
    ("dropped-then-fine", "dropped-then-fine", "silent-rounds", Health.UNHEALTHY,
     [("NoHeartbeat", BROKER)], [Culprit(BR, Problem.SILENT)]),
    # the channel waits for the broker's newest sample to settle; the ingress, which
    # crosses the channel's segment too, waits with it instead of being blamed itself
    ("dup", "dup-new", "fine-unsettled", Health.HEALTHY, [], []),
    ("dup", "dup-new", "fine", Health.DEGRADED, [("HeartbeatDuplicates", BROKERSUB)],
     [Culprit(CH, Problem.DUPLICATES)]),
    # the current state counts, not the window's: recovered
    ("slow-before", "slow-before", "fine", Health.HEALTHY, [], []),
    ("outage-over", "fine", "fine", Health.HEALTHY, [], []),
    # the broker not probed: the channel's segment is blamed, with a caveat
    ("silent", "silent", None, Health.UNHEALTHY, [("NoHeartbeat", BROKERSUB)],
     [Culprit(CH, Problem.SILENT)]),
    # silent hops are judged for silence only: no loss finding besides
    ("silent", "silent", "lossy", Health.UNHEALTHY,
     [("NoHeartbeat", BROKERSUB), ("HeartbeatsLost", BROKER)],
     [Culprit(CH, Problem.SILENT), Culprit(BR, Problem.LOSS)]),
]


@pytest.mark.parametrize(("ingress", "channel", "broker", "health", "findings", "culprits"),
                         CASES)
def test_classification_and_localisation(ingress, channel, broker, health, findings, culprits):
    result = verdict(ingress, channel, broker)
    assert result.health is health
    assert [(f.reason, f.object) for f in result.findings] == findings
    assert list(result.culprits) == culprits
    for finding in result.findings:
        assert finding.root_cause and finding.caused_by is None
        assert finding.severity is (Severity.ERROR if finding.health is Health.UNHEALTHY
                                    else Severity.WARNING)
        assert finding.message


def test_messages_name_the_segment_and_the_figures():
    found = verdict("silent", "silent", "fine").findings[0]
    assert "Channel → Broker (the brokersub- Subscription) is broken" in found.message
    assert "the ingress and channel hops" in found.message
    assert "31s ago" in found.message
    found = verdict("silent", "silent", None).findings[0]
    assert "further down that is not probed" in found.message
    found = verdict("slow", "slow", "slow").findings[0]
    assert "p99 3.00s" in found.message
    dl = "channel heartbeat #7 got HTTP 502 from http://x"
    found = verdict("silent", "silent", "fine", dead_letter=dl).findings[0]
    assert dl in found.message


def test_pending_until_k_intervals_after_start():
    result = verdict("never", "never", "never", since=NOW - 29 * S)
    assert result.health is Health.PROGRESSING
    assert [f.reason for f in result.findings] == ["HeartbeatPending"]
    assert {h.state for h in result.hops.values()} == {HopState.PENDING}
    assert verdict("never", "never", "never", since=NOW - 30 * S).health is Health.UNHEALTHY
    # one hop pending while the others arrive: judged on those
    assert verdict("fine", "fine", "never", since=NOW - 29 * S).health is Health.HEALTHY


def test_silence_from_the_senders_records():
    base = figures(IN, "fine")
    kw = dict(now=NOW, since=T0, thresholds=LIMITS, objects=OBJECTS)
    def with_streak(n: int, last_arrival: datetime) -> HopStats:
        return HopStats(APP, NS, IN, NOW, timedelta(minutes=5), received=100,
                        last_arrival=last_arrival, window_received=30,
                        latency=base.latency, window_sent=30, window_unreceived=n,
                        unreceived_streak=n, streak_last_sent=NOW - 6 * S)

    two = classify(APP, NS, {IN: with_streak(2, NOW - 14 * S)}, **kw)
    assert two.health is Health.UNHEALTHY and two.culprits == (Culprit(IN, Problem.SILENT),)
    one = classify(APP, NS, {IN: with_streak(1, NOW - 14 * S)}, **kw)
    assert one.health is not Health.UNHEALTHY
    arrived_since = classify(APP, NS, {IN: with_streak(2, NOW - 1 * S)}, **kw)
    assert arrived_since.health is not Health.UNHEALTHY


def test_not_meaningful_is_unknown_and_a_symptom_of_the_control_plane():
    cause = ObjectRef(api_version="knativekafka.kyma-project.io/v1alpha1", kind="KafkaChannel",
                      namespace="kyma-integration", name=APP)
    result = verdict("silent", "silent", "silent", not_meaningful="the Broker is not ready",
                     caused_by=cause)
    assert result.health is Health.UNKNOWN
    (finding,) = result.findings
    assert finding.reason == "DataPlaneNotProbed" and not finding.root_cause
    assert finding.caused_by == cause and "the Broker is not ready" in finding.message
    assert result.culprits == ()
    alone = verdict("fine", "fine", "fine", not_meaningful="probing disabled")
    assert alone.findings[0].root_cause and alone.findings[0].caused_by is None


def test_kyma1_objects():
    objects = HopObjects.of(DATA_PLANE, APP, NS)
    assert str(objects.segment[IN]) == "HTTPSource kyma-integration/commerce-mock"
    assert str(objects.segment[CH]) == "Subscription kyma-integration/<unnamed>"
    assert objects.segment[CH].name is None  # generated name unknown: null, as in the report
    assert str(objects.segment[BR]) == "Broker prod/default"
    assert str(objects.entry[CH]) == "Channel kyma-integration/commerce-mock"


def test_thresholds_are_validated():
    with pytest.raises(ValueError):
        ProbeThresholds(interval=timedelta(0))
    with pytest.raises(ValueError):
        ProbeThresholds(max_loss_ratio=1.5)


# --- whole histories through a tracker --------------------------------------------------

INTERVAL = 10 * S
RUN = "checker-0-abc"


class Mesh:
    """Sends one probe per hop per round; a broken segment drops every probe that crosses
    it; `delay` is added by each of `slow` segments; `duplicate` segments deliver twice.
    Like the runner, a round with a suspect probe (missing after the grace period, slow,
    duplicated) is followed by a confirmation round."""

    def __init__(self, tracker: Tracker, limits: ProbeThresholds) -> None:
        self.tracker = tracker
        self.limits = limits
        self.seq = 0
        self.broken: Hop | None = None
        self.slow: set[Hop] = set()
        self.duplicate: set[Hop] = set()
        self.delay = timedelta(milliseconds=200)
        self.base = timedelta(milliseconds=20)

    def send(self, at: datetime) -> bool:
        """One round at `at`; whether any probe of it is suspect."""
        self.seq += 1
        suspect = False
        for hop in Hop:
            ns = NS if hop is Hop.BROKER else None
            hb = new_heartbeat(APP, hop, self.seq, run=RUN, at=at, namespace=ns)
            self.tracker.record_sent(APP, hop, self.seq, run=RUN, at=at, namespace=ns)
            crossed = [h for h in Hop if h.position >= hop.position]
            if self.broken in crossed:
                suspect = True
                continue
            latency = self.base + self.delay * len(self.slow.intersection(crossed))
            self.tracker.record_arrival(hb, NS, at=at + latency)
            if self.duplicate.intersection(crossed):
                self.tracker.record_duplicate(hb, NS, at=at + latency)
                suspect = True
            suspect = suspect or latency > self.limits.latency_slo
        return suspect

    def round(self, at: datetime) -> datetime:
        """A regular round and, if needed, its confirmation after the grace period; when
        the last round's samples are settled (a grace period after their arrival: the
        runner evaluates then)."""
        settled = at + self.base + self.tracker.grace
        if self.send(at):
            self.send(at + self.tracker.grace)
            settled += self.tracker.grace
        return settled


def run_mesh(mesh: Mesh, start: datetime, intervals: int) -> datetime:
    at = start
    for _ in range(intervals):
        mesh.round(at)
        at += INTERVAL
    return at


LIVE = ProbeThresholds(interval=INTERVAL, latency_slo=timedelta(milliseconds=100),
                       min_samples=1)
GRACE = 4 * S  # 0.4 interval: detection within one interval plus twice this


def judge(tracker: Tracker, now: datetime):
    return evaluate(tracker, APP, NS, since=T0, now=now, thresholds=LIVE)


def live_tracker() -> Tracker:
    return Tracker(window=timedelta(seconds=60), grace=GRACE,
                   outage_sends=LIVE.silent_sends)


FAULTS = [
    ("broken", Hop.INGRESS, "NoHeartbeat", "HTTPSource"),
    ("broken", Hop.CHANNEL, "NoHeartbeat", "Subscription"),
    ("broken", Hop.BROKER, "NoHeartbeat", "Broker"),
    ("slow", Hop.INGRESS, "HeartbeatLatencyHigh", "HTTPSource"),
    ("slow", Hop.CHANNEL, "HeartbeatLatencyHigh", "Subscription"),
    ("slow", Hop.BROKER, "HeartbeatLatencyHigh", "Broker"),
    ("duplicate", Hop.INGRESS, "HeartbeatDuplicates", "HTTPSource"),
    ("duplicate", Hop.CHANNEL, "HeartbeatDuplicates", "Subscription"),
    ("duplicate", Hop.BROKER, "HeartbeatDuplicates", "Broker"),
]


@pytest.mark.parametrize(("fault", "hop", "reason", "blamed"), FAULTS)
def test_a_fault_is_named_within_two_intervals_and_clears_within_two(fault, hop, reason,
                                                                     blamed):
    tracker = live_tracker()
    mesh = Mesh(tracker, LIVE)
    now = run_mesh(mesh, T0, 10)  # healthy steady state: no false alarm at any point
    for step in range(10):
        assert judge(tracker, T0 + step * INTERVAL + 9 * S).health is Health.HEALTHY
    # The fault begins just after a round: the worst case, a whole interval until the next.
    began = now - INTERVAL + S
    if fault == "broken":
        mesh.broken = hop
    else:
        getattr(mesh, fault).add(hop)
    due = mesh.round(now)
    result = judge(tracker, due)
    assert due - began <= 2 * INTERVAL
    assert [(f.reason, f.object.kind, f.root_cause) for f in result.findings] == [
        (reason, blamed, True)]
    assert result.culprits[0].hop is hop
    # Removed just after the next round: cleared with the next round's samples.
    now = run_mesh(mesh, now + INTERVAL, 1)
    mesh.broken, mesh.slow, mesh.duplicate = None, set(), set()
    removed = now - INTERVAL + S
    mesh.round(now)
    # a heartbeat counts as not duplicated once the grace period passed after its arrival
    settled = now + mesh.base + GRACE
    cleared = judge(tracker, settled)
    assert cleared.health is Health.HEALTHY, cleared.findings
    assert settled - removed <= 2 * INTERVAL


def test_injected_delay_is_reported_and_localised():
    tracker = live_tracker()
    mesh = Mesh(tracker, LIVE)
    mesh.slow = {Hop.CHANNEL}  # the Channel -> Broker subscription adds 200 ms
    now = run_mesh(mesh, T0, 5)
    result = judge(tracker, now)
    assert result.culprits == (Culprit(Hop.CHANNEL, Problem.LATENCY),)
    ingress = result.hops[Hop.INGRESS].stats
    assert ingress is not None and ingress.latency.p99 == pytest.approx(0.22, abs=0.005)
    assert result.hops[Hop.BROKER].stats.latency.p99 == pytest.approx(0.02, abs=0.005)
    assert result.availability == 1.0
