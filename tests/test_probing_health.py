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
from eventmesh_health.probing.tracker import HopStats, LatencySummary, Tracker

T0 = datetime(2020, 6, 15, 10, 0, tzinfo=UTC)
NOW = T0 + timedelta(minutes=10)
APP, NS = "commerce-mock", "prod"
S = timedelta(seconds=1)
LIMITS = ProbeThresholds()  # 10 s interval, K = 3, p99 2 s, 5 %, min 3 samples
IN, CH, BR = Hop.INGRESS, Hop.CHANNEL, Hop.BROKER


def figures(hop: Hop, spec: str) -> HopStats:
    """One hop's figures in words: fine, silent, never, lossy, unreceived, slow, dup, few."""
    base = dict(application=APP, namespace=NS, hop=hop, now=NOW, window=timedelta(minutes=5))
    recent = NOW - 2 * S
    fine = dict(received=100, last_arrival=recent, first_arrival=T0, window_received=30,
                latency=LatencySummary(30, 0.05, 0.08, 0.1, 0.1, 0.05),
                window_sent=30, window_unreceived=0)
    if spec == "fine":
        return HopStats(**base, **fine)
    if spec == "silent":
        return HopStats(**base, **{**fine, "last_arrival": NOW - 31 * S, "window_received": 27,
                                   "window_unreceived": 3, "unreceived_streak": 3,
                                   "streak_last_sent": NOW - 8 * S})
    if spec == "never":
        return HopStats(**base)
    if spec == "lossy":
        return HopStats(**base, **{**fine, "window_received": 27, "window_lost": 3})
    if spec == "unreceived":
        return HopStats(**base, **{**fine, "window_unreceived": 3, "unreceived_streak": 1,
                                   "streak_last_sent": NOW - 8 * S,
                                   "last_arrival": NOW - 12 * S})
    if spec == "slow":
        return HopStats(**base, **{**fine, "latency": LatencySummary(30, 1.5, 2.5, 3.0, 3.0, 1.6)})
    if spec == "dup":
        return HopStats(**base, **{**fine, "window_duplicates": 30})
    if spec == "few":  # a terrible ratio on too few samples
        return HopStats(**base, **{**fine, "window_received": 1, "window_lost": 1,
                                   "window_sent": 2, "window_unreceived": 1,
                                   "latency": LatencySummary(1, 9.0, 9.0, 9.0, 9.0, 9.0)})
    raise AssertionError(spec)


OBJECTS = HopObjects.kyma1(APP, NS, brokersub="brokersub-hlb7j")
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
    objects = HopObjects.kyma1(APP, NS)
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
    """Sends one probe per hop per interval; a broken segment drops every probe that
    crosses it; `delay` is added by each of `slow` segments."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker
        self.seq = 0
        self.broken: Hop | None = None
        self.slow: set[Hop] = set()
        self.delay = timedelta(milliseconds=200)
        self.base = timedelta(milliseconds=20)

    def tick(self, at: datetime) -> None:
        self.seq += 1
        for hop in Hop:
            ns = NS if hop is Hop.BROKER else None
            hb = new_heartbeat(APP, hop, self.seq, run=RUN, at=at, namespace=ns)
            self.tracker.record_sent(APP, hop, self.seq, run=RUN, at=at, namespace=ns)
            crossed = [h for h in Hop if h.position >= hop.position]
            if self.broken in crossed:
                continue
            latency = self.base + self.delay * len(self.slow.intersection(crossed))
            self.tracker.record_arrival(hb, NS, at=at + latency)


def run_mesh(mesh: Mesh, start: datetime, intervals: int) -> datetime:
    at = start
    for _ in range(intervals):
        mesh.tick(at)
        at += INTERVAL
    return at


LIVE = ProbeThresholds(interval=INTERVAL, latency_p99=timedelta(milliseconds=100),
                       silent_sends=1, min_samples=1)


def judge(tracker: Tracker, now: datetime):
    return evaluate(tracker, APP, NS, since=T0, now=now, thresholds=LIVE)


@pytest.mark.parametrize(("broken", "blamed"), [
    (Hop.INGRESS, "HTTPSource"), (Hop.CHANNEL, "Subscription"), (Hop.BROKER, "Broker"),
])
def test_a_broken_segment_is_named_within_two_intervals_and_clears(broken, blamed):
    tracker = Tracker(window=timedelta(seconds=20), grace=5 * S)
    mesh = Mesh(tracker)
    now = run_mesh(mesh, T0, 30)  # healthy steady state: no false alarm at any point
    for step in range(30):
        assert judge(tracker, T0 + step * INTERVAL + 9 * S).health is Health.HEALTHY
    mesh.broken = broken
    now = run_mesh(mesh, now, 2)  # the fault began at `now - 2 intervals`
    result = judge(tracker, now)
    assert result.health is Health.UNHEALTHY
    assert result.culprits[0] == Culprit(broken, Problem.SILENT)
    assert result.findings[0].object.kind == blamed
    assert result.findings[0].reason == "NoHeartbeat"
    mesh.broken = None
    now = run_mesh(mesh, now, 2)
    assert judge(tracker, now).health is Health.HEALTHY, judge(tracker, now).findings


def test_injected_delay_is_reported_and_localised():
    tracker = Tracker(window=timedelta(seconds=20), grace=5 * S)
    mesh = Mesh(tracker)
    mesh.slow = {Hop.CHANNEL}  # the Channel -> Broker subscription adds 200 ms
    now = run_mesh(mesh, T0, 5)
    result = judge(tracker, now)
    assert result.culprits == (Culprit(Hop.CHANNEL, Problem.LATENCY),)
    ingress = result.hops[Hop.INGRESS].stats
    assert ingress is not None and ingress.latency.p99 == pytest.approx(0.22, abs=0.005)
    assert result.hops[Hop.BROKER].stats.latency.p99 == pytest.approx(0.02, abs=0.005)
    assert result.availability == 1.0
