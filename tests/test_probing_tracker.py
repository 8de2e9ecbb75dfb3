"""The tracker's figures match what a test injects (injected clock, exact times): latency,
loss after the grace period, reordering, late arrivals, duplicates, runs, the sender's
side, the window; and the Prometheus metrics made of them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from eventmesh_health.probing.heartbeat import Heartbeat, Hop, new_heartbeat
from eventmesh_health.probing.tracker import Arrival, ProbeMetrics, Tracker

T0 = datetime(2020, 6, 15, 10, 0, tzinfo=UTC)
APP, NS = "commerce-mock", "prod"
RUN = "checker-0-abc"
S = timedelta(seconds=1)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def hb(seq: int, sent: datetime, hop: Hop = Hop.INGRESS, run: str = RUN,
       namespace: str | None = None) -> Heartbeat:
    return new_heartbeat(APP, hop, seq, run=run, at=sent, namespace=namespace)


def tracker(**kw: object) -> Tracker:
    kw.setdefault("window", timedelta(minutes=5))
    kw.setdefault("grace", timedelta(seconds=30))
    return Tracker(**kw)  # type: ignore[arg-type]


def deliver(t: Tracker, seqs: list[int], delay: timedelta = timedelta(milliseconds=200),
            interval: timedelta = 10 * S, hop: Hop = Hop.INGRESS) -> list[Arrival]:
    """Heartbeat n is sent at T0 + n*interval and arrives `delay` later."""
    return [t.record_arrival(hb(n, T0 + n * interval, hop), NS,
                             at=T0 + n * interval + delay) for n in seqs]


def test_latency_matches_the_injected_delay():
    t = tracker()
    assert deliver(t, list(range(1, 11))) == [Arrival.IN_ORDER] * 10
    s = t.stats(APP, NS, Hop.INGRESS, T0 + 101 * S)
    assert s.received == 10 and s.window_received == 10 and s.lost == 0
    assert s.latency.count == 10
    assert s.latency.p50 == pytest.approx(0.2) and s.latency.p99 == pytest.approx(0.2)
    assert s.last_arrival == T0 + 100 * S + timedelta(milliseconds=200)
    assert s.availability == 1.0 and s.loss_ratio == 0.0


def test_percentiles_over_a_spread():
    t = tracker()
    for n in range(1, 101):  # latencies 10 ms ... 1000 ms
        t.record_arrival(hb(n, T0 + n * S), NS, at=T0 + n * S + n * timedelta(milliseconds=10))
    lat = t.stats(APP, NS, Hop.INGRESS, T0 + 102 * S).latency
    assert (lat.p50, lat.p90, lat.p99, lat.max) == pytest.approx((0.5, 0.9, 0.99, 1.0))
    assert lat.mean == pytest.approx(0.505)


def test_gaps_become_loss_only_after_the_grace_period():
    t = tracker()
    deliver(t, [1, 2, 3, 5, 6, 8, 9, 10])
    # 8 arrives at 80.2 s: 7 is missing since then; 4 since 50.2 s
    early = t.stats(APP, NS, Hop.INGRESS, T0 + 100 * S)
    assert (early.lost, early.pending_gaps) == (1, 1)  # 4 is past the grace period, 7 not
    late = t.stats(APP, NS, Hop.INGRESS, T0 + 111 * S)
    assert (late.lost, late.pending_gaps, late.received) == (2, 0, 8)
    assert late.window_lost == 2 and late.loss_ratio == pytest.approx(0.2)


def test_reordering_within_grace_is_not_loss():
    t = tracker()
    arrivals = [t.record_arrival(hb(n, T0 + n * S), NS, at=T0 + at * S)
                for n, at in [(1, 1), (2, 2), (4, 4), (3, 5), (5, 6)]]
    assert arrivals == [Arrival.IN_ORDER] * 3 + [Arrival.OUT_OF_ORDER, Arrival.IN_ORDER]
    s = t.stats(APP, NS, Hop.INGRESS, T0 + 100 * S)
    assert (s.received, s.lost, s.out_of_order, s.duplicates) == (5, 0, 1, 0)
    assert s.window_out_of_order == 1


def test_late_arrival_stays_lost_but_counts_as_delivered():
    t = tracker(grace=10 * S)
    deliver(t, [1, 3], interval=S)
    assert t.record_arrival(hb(2, T0 + 2 * S), NS, at=T0 + 20 * S) is Arrival.LATE
    s = t.stats(APP, NS, Hop.INGRESS, T0 + 21 * S)
    assert (s.received, s.lost, s.late) == (2, 1, 1)
    assert s.latency.max == pytest.approx(18.0)  # the late one's latency is a sample
    assert t.record_arrival(hb(2, T0 + 2 * S), NS, at=T0 + 22 * S) is Arrival.DUPLICATE


def test_duplicates_change_nothing_else():
    t = tracker()
    deliver(t, [1, 2])
    before = t.stats(APP, NS, Hop.INGRESS, T0 + 30 * S)
    assert t.record_arrival(hb(2, T0 + 20 * S), NS, at=T0 + 25 * S) is Arrival.DUPLICATE
    t.record_duplicate(hb(1, T0 + 10 * S), NS, at=T0 + 26 * S)  # caught by the replay cache
    after = t.stats(APP, NS, Hop.INGRESS, T0 + 30 * S)
    assert after.duplicates == 2 and after.window_duplicates == 2
    assert after.duplicate_ratio == pytest.approx(1.0)
    for field in ("received", "lost", "last_arrival", "latency", "out_of_order"):
        assert getattr(after, field) == getattr(before, field)


def test_runs_are_tracked_apart_and_the_first_arrival_is_the_baseline():
    t = tracker()
    # the Trigger is newer than the run: sequence 500 first is no loss
    t.record_arrival(hb(500, T0), NS, at=T0 + S)
    t.record_arrival(hb(501, T0 + S), NS, at=T0 + 2 * S)
    # a new leader starts a new run at 1, the old one still sends a last one
    assert t.record_arrival(hb(1, T0 + 2 * S, run="checker-1-def"), NS,
                            at=T0 + 3 * S) is Arrival.IN_ORDER
    assert t.record_arrival(hb(502, T0 + 2 * S), NS, at=T0 + 3 * S) is Arrival.IN_ORDER
    assert t.record_arrival(hb(2, T0 + 3 * S, run="checker-1-def"), NS,
                            at=T0 + 4 * S) is Arrival.IN_ORDER
    # below the baseline: reordered, then a duplicate
    assert t.record_arrival(hb(499, T0), NS, at=T0 + 5 * S) is Arrival.OUT_OF_ORDER
    assert t.record_arrival(hb(499, T0), NS, at=T0 + 6 * S) is Arrival.DUPLICATE
    s = t.stats(APP, NS, Hop.INGRESS, T0 + 100 * S)
    assert (s.received, s.lost, s.duplicates) == (6, 0, 1)


def test_wide_gaps_are_counted_at_once():
    t = tracker(max_gap=100)
    deliver(t, [1, 1002])
    s = t.stats(APP, NS, Hop.INGRESS, T0 + 10021 * S)
    assert s.lost == 1000 and s.pending_gaps == 0


def test_sent_but_never_arrived():
    clock = Clock()
    t = tracker(clock=clock, grace=5 * S)
    t.expect(APP, NS, T0)
    for n in range(1, 7):
        t.record_sent(APP, Hop.INGRESS, n, run=RUN, at=T0 + n * 10 * S)
    deliver(t, [1, 2, 3])  # nothing after 3: no gap for the sequence check to see
    clock.now = T0 + 61 * S  # 6 was sent at 60 s: not yet due
    s = t.stats(APP, NS, Hop.INGRESS)
    assert (s.window_sent, s.window_unreceived, s.unreceived_streak) == (5, 2, 2)
    assert s.streak_last_sent == T0 + 50 * S
    assert s.streak_rounds == ((RUN, 5), (RUN, 4))  # newest first
    assert s.lost == 0 and s.loss_ratio == pytest.approx(0.4)
    assert s.availability == pytest.approx(0.6)
    clock.now = T0 + 66 * S
    assert t.stats(APP, NS, Hop.INGRESS).unreceived_streak == 3
    # another namespace expected only from 35 s on, its heartbeats all arrived
    t.expect(APP, "stage", T0 + 35 * S)
    for n in (4, 5, 6):
        t.record_arrival(hb(n, T0 + n * 10 * S), "stage", at=T0 + n * 10 * S + S)
    other = t.stats(APP, "stage", Hop.INGRESS)
    assert (other.window_sent, other.window_unreceived, other.unreceived_streak) == (3, 0, 0)
    assert t.sent_totals() == {(APP, Hop.INGRESS): 6}


def test_broker_sends_are_per_namespace():
    t = tracker(grace=S)
    for ns in (NS, "stage"):
        t.expect(APP, ns, T0)
        t.record_sent(APP, Hop.BROKER, 1, run=RUN, at=T0, namespace=ns)
    t.record_arrival(hb(1, T0, Hop.BROKER, namespace=NS), NS, at=T0 + S)
    assert t.stats(APP, NS, Hop.BROKER, T0 + 5 * S).window_unreceived == 0
    assert t.stats(APP, "stage", Hop.BROKER, T0 + 5 * S).window_unreceived == 1
    assert t.sent_totals() == {(APP, Hop.BROKER): 2}


def test_the_window_slides_totals_stay():
    t = tracker(window=timedelta(minutes=1), grace=5 * S)
    deliver(t, [1, 2, 4], interval=10 * S)
    s = t.stats(APP, NS, Hop.INGRESS, T0 + 50 * S)
    assert (s.window_received, s.window_lost) == (3, 1)
    s = t.stats(APP, NS, Hop.INGRESS, T0 + 200 * S)
    assert (s.window_received, s.window_lost, s.latency.count) == (0, 0, 0)
    assert (s.received, s.lost) == (3, 1)
    assert s.loss_ratio is None and s.availability is None


def test_forget_and_retain():
    t = tracker()
    t.record_arrival(hb(1, T0), NS, at=T0)
    t.record_arrival(hb(1, T0), "stage", at=T0)
    t.record_sent(APP, Hop.INGRESS, 1, run=RUN, at=T0)
    t.record_sent("other", Hop.INGRESS, 1, run=RUN, at=T0)
    t.retain([(APP, NS)])
    assert t.pairs() == [(APP, NS)]
    assert t.sent_totals() == {(APP, Hop.INGRESS): 1}
    t.forget(APP)
    assert t.pairs() == [] and t.sent_totals() == {}
    assert t.stats(APP, NS, Hop.INGRESS, T0).received == 0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 40), st.integers(0, 2)),
                min_size=1, max_size=40))
def test_every_sequence_is_accounted_for_once(plan):
    """Heartbeat 1 arrives first; then each n>1 is dropped or delivered `delay` s after
    being sent (at n s), `copies` extra times: received + lost covers 1..highest, every
    copy beyond the first is a duplicate."""
    t = tracker(grace=10 * S)
    deliveries = [(T0 + S, 1)]
    for n, (delivered, delay, copies) in enumerate(plan, start=2):
        if delivered:
            deliveries += [(T0 + (n + delay + c) * S, n) for c in range(1 + copies)]
    deliveries.sort()
    for at, n in deliveries:
        t.record_arrival(hb(n, T0 + n * S), NS, at=at)
    s = t.stats(APP, NS, Hop.INGRESS, deliveries[-1][0] + 11 * S)
    highest = max(n for _, n in deliveries)
    distinct = len({n for _, n in deliveries})
    assert s.received + s.lost == highest
    assert s.received + s.late == distinct
    assert s.duplicates == len(deliveries) - distinct
    assert s.pending_gaps == 0


def metric_values(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]],
                                                       float]:
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text) for sample in family.samples
    }


def test_probe_metrics():
    clock = Clock()
    t = tracker(clock=clock, grace=5 * S)
    t.expect(APP, NS, T0)
    for n in range(1, 6):
        t.record_sent(APP, Hop.INGRESS, n, run=RUN, at=T0 + n * 10 * S)
    deliver(t, [1, 2, 4, 5])
    t.record_duplicate(hb(5, T0 + 50 * S), NS, at=T0 + 51 * S)
    t.record_arrival(hb(1, T0, Hop.CHANNEL), NS, at=T0 + S)
    t.record_dead_letter(APP, NS, Hop.CHANNEL)
    clock.now = T0 + 100 * S
    registry = CollectorRegistry()
    ProbeMetrics(t, lambda: {"BadSignature": 3}).register(registry)
    values = metric_values(registry)
    ingress = (("application", APP), ("hop", "ingress"), ("namespace", NS))
    assert values[("eventmesh_heartbeats_sent_total",
                   (("application", APP), ("hop", "ingress")))] == 5
    assert values[("eventmesh_heartbeats_received_total", ingress)] == 4
    assert values[("eventmesh_heartbeats_lost_total", ingress)] == 1
    assert values[("eventmesh_heartbeats_duplicated_total", ingress)] == 1
    assert values[("eventmesh_heartbeats_dead_lettered_total",
                   (("application", APP), ("hop", "channel"), ("namespace", NS)))] == 1
    assert values[("eventmesh_heartbeats_rejected_total", (("reason", "BadSignature"),))] == 3
    assert values[("eventmesh_heartbeats_rejected_total", (("reason", "Stale"),))] == 0
    pair = (("application", APP), ("namespace", NS))
    assert values[("eventmesh_heartbeat_latency_seconds_count", pair)] == 4
    assert values[("eventmesh_heartbeat_latency_seconds_sum", pair)] == pytest.approx(0.8)
    assert values[("eventmesh_heartbeat_latency_seconds_bucket",
                   (*pair[:1], ("le", "0.1"), pair[1]))] == 0
    assert values[("eventmesh_heartbeat_latency_seconds_bucket",
                   (*pair[:1], ("le", "0.25"), pair[1]))] == 4
    assert values[("eventmesh_heartbeat_availability_ratio", pair)] == pytest.approx(0.8)
    assert ("eventmesh_heartbeat_latency_objective_seconds", ()) not in values  # not given
    with_objective = CollectorRegistry()
    ProbeMetrics(t, latency_objective=1.5).register(with_objective)
    assert metric_values(with_objective)[
        ("eventmesh_heartbeat_latency_objective_seconds", ())] == 1.5
    t.forget(APP)
    assert not any(name.startswith("eventmesh_heartbeat_latency") and labels
                   for name, labels in metric_values(registry))


def test_isolated_losses_and_outages_are_told_apart():
    """Sends 1..12, 10 s apart: 3 lost alone, 6-8 lost in a row (an outage), 12 the ongoing
    run (newest, missing): judged loss counts only the isolated one."""
    clock = Clock()
    t = tracker(clock=clock, grace=5 * S, outage_sends=2)
    t.expect(APP, NS, T0)
    lost = {3, 6, 7, 8, 12}
    for n in range(1, 13):
        t.record_sent(APP, Hop.INGRESS, n, run=RUN, at=T0 + n * 10 * S)
        if n not in lost:
            t.record_arrival(hb(n, T0 + n * 10 * S), NS, at=T0 + n * 10 * S + S)
    clock.now = T0 + 126 * S  # 12 is due
    s = t.stats(APP, NS, Hop.INGRESS)
    assert (s.window_sent, s.window_unreceived, s.unreceived_streak) == (12, 5, 1)
    assert (s.window_isolated_unreceived, s.window_judged) == (1, 12 - 1 - 3)
    assert s.judged_loss_ratio == pytest.approx(1 / 8)
    assert s.judged_samples == 8
    # with outages of at least 4 sends, every closed run here is isolated
    single = tracker(clock=clock, grace=5 * S, outage_sends=4)
    single.expect(APP, NS, T0)
    for n in range(1, 13):
        single.record_sent(APP, Hop.INGRESS, n, run=RUN, at=T0 + n * 10 * S)
        if n not in lost:
            single.record_arrival(hb(n, T0 + n * 10 * S), NS, at=T0 + n * 10 * S + S)
    s = single.stats(APP, NS, Hop.INGRESS)
    assert (s.window_isolated_unreceived, s.window_judged) == (4, 11)
    # without the sender's records: sequence gaps
    gaps = tracker(grace=5 * S)
    deliver(gaps, [1, 2, 4, 5])
    s = gaps.stats(APP, NS, Hop.INGRESS, T0 + 60 * S)
    assert s.window_judged is None and s.judged_loss_ratio == pytest.approx(1 / 5)


def test_recent_arrivals_carry_latency_and_duplicates():
    clock = Clock()
    t = tracker(clock=clock, grace=5 * S)
    for n in range(1, 12):
        sent = T0 + n * 10 * S
        t.record_arrival(hb(n, sent), NS, at=sent + n * 100 * timedelta(milliseconds=1))
    t.record_arrival(hb(10, T0 + 100 * S), NS, at=T0 + 102 * S)  # a duplicate by sequence
    t.record_duplicate(hb(11, T0 + 110 * S), NS, at=T0 + 111.2 * S)  # by event id
    t.record_duplicate(hb(11, T0 + 110 * S), NS, at=T0 + 111.3 * S)
    clock.now = T0 + 113 * S
    recent = t.stats(APP, NS, Hop.INGRESS).recent
    assert [r.sequence for r in recent] == list(range(4, 12))  # the newest RECENT = 8
    assert [r.duplicates for r in recent[-3:]] == [0, 1, 2]
    assert recent[-1].latency == pytest.approx(1.1)
    assert recent[-1].arrived_at == T0 + 111.1 * S
    # settled: duplicated, or older than the grace period
    assert [r.settled for r in recent[-4:]] == [True, True, True, True]
    t.record_arrival(hb(12, T0 + 120 * S), NS, at=T0 + 120.5 * S)
    clock.now = T0 + 121 * S
    assert t.stats(APP, NS, Hop.INGRESS).recent[-1].settled is False
    clock.now = T0 + 126 * S
    assert t.stats(APP, NS, Hop.INGRESS).recent[-1].settled is True
    assert t.arrived(APP, NS, Hop.INGRESS, RUN, 12)
    assert not t.arrived(APP, NS, Hop.INGRESS, RUN, 13)
    assert not t.arrived(APP, "stage", Hop.INGRESS, RUN, 12)
    assert t.expecting(APP, NS) and not t.expecting(APP, "stage")


def test_recent_arrivals_are_in_send_order_not_arrival_order():
    """A straggler of an earlier round arriving last is not the newest sample."""
    t = tracker(grace=5 * S)
    t.record_arrival(hb(1, T0), NS, at=T0 + 0.1 * S)
    t.record_arrival(hb(3, T0 + 20 * S), NS, at=T0 + 20.1 * S)
    t.record_arrival(hb(2, T0 + 10 * S), NS, at=T0 + 21 * S)  # 11 s late
    recent = t.stats(APP, NS, Hop.INGRESS, T0 + 30 * S).recent
    assert [r.sequence for r in recent] == [1, 2, 3]
    assert recent[1].latency == pytest.approx(11)
