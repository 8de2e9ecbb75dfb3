"""Heartbeat probing end to end: `serve --probe` (in process) on the envtest API server with
the healthy example mesh, sending through the emulated data plane (`tests/emulator`).

The checker creates its heartbeat Triggers in the API server; the emulator routes by them
to the checker's receiver on loopback. The envtest control plane runs no Knative
controller, so `knative` below plays its part for the checker's Triggers (status Ready, as
the eventing controller would set it); otherwise the control-plane analysis would judge
them not ready and the data plane would not be judged at all.

The interval is 8 s (grace 3.5 s, latency SLO 1.5 s: on this 2-core machine a heartbeat
takes up to ~1.4 s through the emulated hops at times, even when nothing else runs); every
wait is on a condition with a
timeout. The emulator runs in a process of its own, as a real mesh would. Detection and
recovery times are measured from the moment the fault is injected or removed to the moment
the report shows it, and must be within 2 intervals.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
import yaml
from lightkube import AsyncClient, KubeConfig
from lightkube.generic_resource import create_namespaced_resource
from lightkube.types import PatchType

from eventmesh_health.model import MeshReport
from eventmesh_health.probing import (
    Hop,
    Key,
    Keyring,
    ProbeThresholds,
    new_heartbeat,
    to_binary,
)
from eventmesh_health.probing.runner import ProbeSettings, data_plane_findings
from eventmesh_health.probing.triggers import HEARTBEAT_LABEL, trigger_name
from eventmesh_health.serve.service import Service, Settings
from tests.emulator.process import EmulatorProcess
from tests.envtest.controlplane import ControlPlane, free_port
from tests.live_objects import ApiServer, apply_example, clear_cluster

pytestmark = pytest.mark.envtest

APP = "commerce-mock"
INTERVAL = 8.0
WINDOW = 80.0
GRACE = 3.5
SLO = 1.5
POLL = 0.05  # how often the tests look at the report: the slack of a measured time
Trigger = create_namespaced_resource("eventing.knative.dev", "v1alpha1", "Trigger", "triggers")
SECRET = "eventmesh-health-heartbeat-keys"
KEY = os.urandom(32)
MAPPINGS = "/apis/applicationconnector.kyma-project.io/v1alpha1/namespaces/{ns}/applicationmappings"
# The probed (application, namespace) pairs of the healthy example and their brokersub-
# Subscriptions (Channel -> Broker).
PAIRS = [("commerce-mock", "stage"), ("commerce-mock", "prod"), ("marketing", "stage")]
BROKERSUB = {("commerce-mock", "stage"): "brokersub-gp4fq",
             ("commerce-mock", "prod"): "brokersub-hlb7j",
             ("marketing", "stage"): "brokersub-jvssr"}


def apply_probe_mesh(api: ApiServer, key: bytes) -> None:
    """The healthy example mesh without its webhook configurations (they would reject the
    checker's Triggers), plus the heartbeat key Secret (`k1` = `key`)."""
    apply_example(api, "healthy-mesh")
    for kind in ("validatingwebhookconfigurations", "mutatingwebhookconfigurations"):
        url = f"/apis/admissionregistration.k8s.io/v1/{kind}"
        for item in api.request("GET", url).json()["items"]:
            api.request("DELETE", f"{url}/{item['metadata']['name']}")
    answer = api.request("POST", "/api/v1/namespaces/kyma-system/secrets", {
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": SECRET, "namespace": "kyma-system"},
        "data": {"k1": base64.b64encode(key).decode()}})
    assert answer.status_code in (201, 409), answer.text


@pytest.fixture(scope="module")
def mesh(control_plane: ControlPlane) -> Iterator[ControlPlane]:
    """The healthy example mesh without its webhook configurations (they would reject the
    checker's Triggers), plus the heartbeat key Secret; cleared afterwards."""
    if not control_plane.apiserver_running:
        control_plane.start_apiserver()
    api = ApiServer(control_plane)
    try:
        apply_probe_mesh(api, KEY)
        yield control_plane
    finally:
        if not control_plane.apiserver_running:
            control_plane.start_apiserver()
        clear_cluster(api)
        api.close()


async def wait_until(what: str, check: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@dataclass
class Probed:
    service: Service
    emu: EmulatorProcess
    client: AsyncClient
    port: int

    @property
    def report(self) -> MeshReport:
        report = self.service.state.report
        assert report is not None
        return report

    def findings(self, namespace: str, application: str = APP,
                 ) -> list[tuple[str, str | None, bool]]:
        """(reason, object name, root cause) of the data-plane findings of a pair."""
        return [(f.reason, f.object.name, f.root_cause)
                for app, ns, f in data_plane_findings(self.report)
                if app == application and ns == namespace]

    def root_causes(self, namespace: str, application: str = APP,
                    ) -> set[tuple[str, str, str | None]]:
        """(reason, object kind, object name) of the data-plane root causes of a pair."""
        return {(f.reason, f.object.kind, f.object.name)
                for app, ns, f in data_plane_findings(self.report)
                if app == application and ns == namespace and f.root_cause}

    def health(self, namespace: str, application: str = APP) -> str:
        app = next(a for a in self.report.applications if a.name == application)
        return next(ns.health.value for ns in app.namespaces if ns.name == namespace)


async def _play_knative(client: AsyncClient) -> None:
    """Set the checker's Triggers Ready, as the eventing controller would."""
    while True:
        try:
            async for trigger in client.list(Trigger, namespace="*",
                                             labels={HEARTBEAT_LABEL: "true"}):
                raw = trigger.to_dict()
                status = raw.get("status") or {}
                if any(c.get("type") == "Ready" for c in status.get("conditions") or []):
                    continue
                meta = raw["metadata"]
                await client.patch(Trigger.Status, meta["name"], {"status": {
                    "observedGeneration": meta.get("generation", 1),
                    "subscriberURI": raw["spec"]["subscriber"]["uri"],
                    "conditions": [
                        {"type": t, "status": "True",
                         "lastTransitionTime": "2020-06-03T14:22:52Z"}
                        for t in ("BrokerReady", "DependencyReady", "Ready", "Subscribed",
                                  "SubscriberResolved")]}},
                    namespace=meta["namespace"],
                    patch_type=PatchType.MERGE)
        except Exception as exc:  # the next pass tries again
            print("knative stand-in:", repr(exc))
        await asyncio.sleep(0.2)


@pytest.fixture
async def probed(mesh: ControlPlane) -> AsyncIterator[Probed]:
    client = AsyncClient(KubeConfig.from_file(mesh.kubeconfig_path), trust_env=False)
    emu = EmulatorProcess(mesh.kubeconfig_path, retries=0, retry_backoff=0.02)
    await emu.start()
    port = free_port()
    templates = emu.url_templates()
    settings = Settings(
        host="127.0.0.1", port=port, leader_election=False, write=False, identity="probe-e2e",
        log_level="warning", tick=timedelta(seconds=1),
        probe=ProbeSettings(
            interval=timedelta(seconds=INTERVAL), jitter=0.02,
            receiver_url_template=f"http://127.0.0.1:{port}/heartbeat/{{namespace}}/"
                                  "{application}",
            event_service_url_template=templates["event_service"],
            channel_url_template=templates["channel"],
            broker_url_template=templates["broker_ingress"],
            secret_namespace="kyma-system", secret_name=SECRET,
            # Scaled down from the defaults (30 s interval, 5 min window): a loaded test
            # machine takes up to ~1 s per delivery through eight hops at times, so
            # one late heartbeat in a handful must not count as loss.
            window=timedelta(seconds=WINDOW), grace=timedelta(seconds=GRACE),
            thresholds=ProbeThresholds(interval=timedelta(seconds=INTERVAL),
                                       latency_slo=timedelta(seconds=SLO),
                                       max_loss_ratio=0.15, min_samples=5),
            evaluate_every=timedelta(seconds=0.5), timeout=3.0,
        ))
    service = Service(AsyncClient(KubeConfig.from_file(mesh.kubeconfig_path),
                                  trust_env=False), settings)
    task = asyncio.create_task(service.run())
    knative = asyncio.create_task(_play_knative(client))
    probed = Probed(service, emu, client, port)
    try:
        # Both namespaces of the application are probed and healthy on every hop.
        await wait_until("heartbeats arriving in every probed pair on every hop", lambda: (
            service.state.report is not None and service.prober is not None
            and all(service.prober.tracker.stats(app, ns, hop).received >= 2
                    for app, ns in PAIRS for hop in Hop)), 60)
        try:
            # ... and stays so for an interval (start-up is slow: the first deliveries
            # open connections while everything else starts too)
            healthy_since: list[float] = []

            def settled() -> bool:
                if not all(probed.health(ns, app) == "Healthy" and not probed.findings(ns, app)
                           for app, ns in PAIRS):
                    healthy_since.clear()
                    return False
                if not healthy_since:
                    healthy_since.append(time.monotonic())
                return time.monotonic() - healthy_since[0] >= INTERVAL

            await wait_until("every pair Healthy, control and data plane, for an interval",
                             settled, 60)
        except AssertionError as err:
            seen = [_all_findings(probed, ns, app) for app, ns in PAIRS]
            raise AssertionError(f"{err}: {seen}") from None
        yield probed
    finally:
        knative.cancel()
        task.cancel()
        await asyncio.gather(task, knative, return_exceptions=True)
        await service.client.close()
        await emu.stop()
        # The checker's Triggers (a crashed run leaves them; the next adopts them).
        with contextlib.suppress(Exception):
            async for trigger in client.list(Trigger, namespace="*",
                                             labels={HEARTBEAT_LABEL: "true"}):
                await client.delete(Trigger, trigger.metadata.name,
                                    namespace=trigger.metadata.namespace)
        await client.close()


async def test_steady_state_then_channel_to_broker_drop_is_localised_and_recovers(
    probed: Probed,
) -> None:
    # Healthy steady state over several intervals: no data-plane finding at all, in any
    # pair, and no confirmation probe needed.
    assert probed.service.prober is not None
    confirmations = probed.service.prober.confirmations
    steady_until = time.monotonic() + 4 * INTERVAL
    while time.monotonic() < steady_until:
        for app, ns in PAIRS:
            assert probed.findings(ns, app) == [], _all_findings(probed, ns, app)
            assert probed.health(ns, app) == "Healthy"
        await asyncio.sleep(POLL)
    print(f"steady state: {probed.service.prober.confirmations - confirmations} "
          "confirmation probes")
    # Each round of the steady state sent a heartbeat into every hop of every probed pair
    # (ingress and channel once per application, the broker once per namespace; a
    # confirmation sent meanwhile counts too) in far less than an interval.
    steady = [r for r in probed.service.prober.recent_rounds
              if r.started.timestamp() >= time.time() - 4 * INTERVAL]
    assert len(steady) >= 3, _rounds(probed)
    for record in steady:
        assert record.outcome.startswith("sent"), _rounds(probed)
        assert record.heartbeats >= 2 * len({app for app, _ in PAIRS}) + len(PAIRS), \
            _rounds(probed)
        assert record.seconds < INTERVAL / 2, _rounds(probed)

    # Drop at the channel -> broker edge of stage: ingress and channel probes stop
    # arriving there, broker probes still arrive -> the brokersub- Subscription.
    fault = await probed.emu.inject("channel", "drop", app=APP, namespace="stage")
    started = time.monotonic()
    found = await wait_until("NoHeartbeat on the brokersub- Subscription of stage", lambda: [
        f for f in probed.findings("stage") if f[0] == "NoHeartbeat"], 6 * INTERVAL)
    detected = time.monotonic() - started
    assert detected <= 2 * INTERVAL + POLL
    assert found == [("NoHeartbeat", "brokersub-gp4fq", True)], probed.findings("stage")
    assert probed.health("stage") == "Unhealthy"
    assert probed.findings("prod") == []
    assert probed.service.prober is not None
    lat = probed.service.prober.tracker.stats(APP, "prod", Hop.INGRESS).latency
    print(f"prod ingress latency p50 {lat.p50} p99 {lat.p99} max {lat.max}")
    verdict = probed.service.prober.verdicts(
        probed.service.analysis.report(),  # type: ignore[union-attr]
        probed.service.analysis.builder.index)[(APP, "stage")]  # type: ignore[union-attr]
    assert [(c.hop, c.problem.value) for c in verdict.culprits] == [(Hop.CHANNEL, "Silent")]
    print(f"channel->broker drop detected after {detected:.2f}s ({detected / INTERVAL:.1f} "
          "intervals)")

    # The same through REST and metrics.
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{probed.port}",
                                 trust_env=False, timeout=10) as http:
        stage = (await http.get(f"/api/v1/applications/{APP}/namespaces/stage")).json()
        assert stage["health"] == "Unhealthy"
        assert any(f["reason"] == "NoHeartbeat" and f["object"]["kind"] == "Subscription"
                   for f in stage["findings"])
        metrics = (await http.get("/metrics")).text
        assert ('eventmesh_namespace_health{application="commerce-mock",health="Unhealthy",'
                'namespace="stage"} 1.0') in metrics
        assert "eventmesh_heartbeats_sent_total" in metrics

        # Forged and unsigned heartbeats for the silent hop are rejected, change nothing.
        tracker = probed.service.prober.tracker
        before = tracker.stats(APP, "stage", Hop.CHANNEL)
        forger = Keyring(Key("k1", b"f" * 32))
        # at the Trigger's own URL (pair token and all, as one who can read Triggers), and
        # without the token
        token = probed.service.prober.triggers.tokens[("stage", APP)]
        for keyring, query, reason in ((forger, {"pair": token}, "BadSignature"),
                                       (None, {"pair": token}, "Unsigned"),
                                       (forger, {}, "BadPairToken")):
            hb = new_heartbeat(APP, Hop.CHANNEL, 10**6, run="forger-1",
                               at=tracker.clock())
            if keyring is not None:
                hb = keyring.sign(hb)
            headers, body = to_binary(hb)
            answer = await http.post(f"/heartbeat/stage/{APP}", headers=headers,
                                     content=body, params=query)
            assert answer.status_code == 401, answer.text
            assert answer.json()["error"] == reason, answer.text
        after = tracker.stats(APP, "stage", Hop.CHANNEL)
        assert (after.received, after.last_arrival) == (before.received, before.last_arrival)
        assert probed.service.prober.receiver.rejected_counts()["BadSignature"] >= 1
        assert any(f[0] == "NoHeartbeat" for f in probed.findings("stage"))
        # A POST-only path answers 405 with its own Allow.
        answer = await http.get(f"/heartbeat/stage/{APP}")
        assert answer.status_code == 405 and answer.headers["allow"] == "POST"

    # Recovery within 2 intervals: the outage's losses are not held against the pair
    # (they were the silence, reported while it lasted); the metrics keep them.
    await probed.emu.remove_fault(fault)
    started = time.monotonic()
    await wait_until("stage Healthy again", lambda: probed.health("stage") == "Healthy"
                     and not probed.findings("stage"), 2 * INTERVAL + POLL)
    print(f"stage Healthy {time.monotonic() - started:.2f}s after the fault was removed")
    lost = probed.service.prober.tracker.stats(APP, "stage", Hop.CHANNEL)
    assert lost.window_unreceived and lost.window_unreceived >= 2


# --- each fault at each hop ---------------------------------------------------------------

# The emulated hops, in three phases that run their faults at the same time on different
# pairs (event-service and adapter faults act on a whole application). Each: (hop, scope,
# the segment the checker must blame).
PHASES: list[list[tuple[str, dict[str, str], Hop]]] = [
    [("event-service", {"app": "commerce-mock"}, Hop.INGRESS),
     ("adapter", {"app": "marketing"}, Hop.INGRESS)],
    [("channel", {"app": "commerce-mock", "namespace": "stage"}, Hop.CHANNEL),
     ("broker-ingress", {"app": "commerce-mock", "namespace": "prod"}, Hop.BROKER),
     ("trigger-channel", {"app": "marketing", "namespace": "stage"}, Hop.BROKER)],
    [("broker-filter", {"app": "commerce-mock", "namespace": "stage"}, Hop.BROKER),
     # (the emulator's `subscriber` hop is its stand-in for other subscribers: the
     # checker's receiver is reached from the broker filter directly)
     ("broker-filter", {"app": "marketing", "namespace": "stage"}, Hop.BROKER)],
]
# fault kind -> (its parameters, the reason of the finding it must cause)
FAULTS: dict[str, tuple[dict[str, Any], str]] = {
    "drop": ({}, "NoHeartbeat"),
    "delay": ({"delay_ms": 2000}, "HeartbeatLatencyHigh"),  # over the SLO, within the grace
    "duplicate": ({}, "HeartbeatDuplicates"),
    "error": ({"status": 503}, "NoHeartbeat"),
    "stop": ({}, "NoHeartbeat"),
}


def _blamed(hop: Hop, app: str, namespace: str) -> tuple[str, str]:
    """(kind, name) of the object a broken `hop` segment of the pair is reported on."""
    return {Hop.INGRESS: ("HTTPSource", app),
            Hop.CHANNEL: ("Subscription", BROKERSUB[(app, namespace)]),
            Hop.BROKER: ("Broker", "default")}[hop]


Pair = tuple[str, str]
Causes = frozenset[tuple[str, str, str | None]]


@pytest.mark.parametrize("kind", list(FAULTS))
async def test_each_fault_at_each_hop_is_localised_within_two_intervals_and_recovers(
    probed: Probed, kind: str,
) -> None:
    times: list[tuple[str, str, str, float, float]] = []
    for phase in PHASES:
        times += await _run_phase(probed, kind, phase)
    for hop_name, app, ns, found, cleared in times:
        print(f"{kind} at {hop_name} ({app}/{ns}): reported after {found:.2f}s "
              f"({found / INTERVAL:.2f} intervals), cleared {cleared:.2f}s "
              f"({cleared / INTERVAL:.2f} intervals) after removal")
    # Within 2 intervals (plus the polling step of this test).
    late = [t for t in times if t[3] > 2 * INTERVAL + POLL or t[4] > 2 * INTERVAL + POLL]
    assert not late, late


async def _run_phase(probed: Probed, kind: str, phase: list[tuple[str, dict[str, str], Hop]],
                     ) -> list[tuple[str, str, str, float, float]]:
    """Injects the phase's faults, waits until each affected pair reports exactly its
    root cause and every other pair nothing, removes them, waits until every pair is
    Healthy; (hop, application, namespace, detection s, recovery s) per affected pair."""
    params, reason = FAULTS[kind]
    expected: dict[Pair, Causes] = {}
    hop_of: dict[Pair, str] = {}
    for hop_name, scope, hop in phase:
        for app, ns in PAIRS:
            if app == scope["app"] and scope.get("namespace", ns) == ns:
                expected[(app, ns)] = frozenset({(reason, *_blamed(hop, app, ns))})
                hop_of[(app, ns)] = hop_name
    # every set of root causes reported per pair, with when and the figures then
    seen: dict[Pair, dict[Causes, str]] = {pair: {} for pair in PAIRS}

    def look(when: str) -> dict[Pair, Causes]:
        now = {pair: frozenset(probed.root_causes(pair[1], pair[0])) for pair in PAIRS}
        for pair, causes in now.items():
            if causes and causes not in seen[pair]:
                seen[pair][causes] = f"{when}\n{_diagnosis(probed)}"
        return now

    faults = [await probed.emu.inject(hop_name, kind, **scope, **params)
              for hop_name, scope, _ in phase]
    started = time.monotonic()
    detected: dict[Pair, float] = {}
    while len(detected) < len(expected):
        elapsed = time.monotonic() - started
        assert elapsed < 4 * INTERVAL, (
            f"{kind}: not all reported after {elapsed:.1f}s: detected {detected}, "
            f"now {look('now')}\n{_diagnosis(probed)}")
        for pair, causes in look(f"{elapsed:.2f}s after the injection").items():
            if pair not in detected and pair in expected and causes == expected[pair]:
                detected[pair] = elapsed
                # the namespace's health follows: Unhealthy for silence, else Degraded
                want = "Unhealthy" if reason == "NoHeartbeat" else "Degraded"
                assert probed.health(pair[1], pair[0]) == want
        await asyncio.sleep(POLL)
    for fault in faults:
        await probed.emu.remove_fault(fault)
    removed = time.monotonic()
    recovered: dict[Pair, float] = {}
    while len(recovered) < len(PAIRS):
        elapsed = time.monotonic() - removed
        assert elapsed < 4 * INTERVAL, (
            f"{kind}: not recovered after {elapsed:.1f}s: "
            f"{[(p, _all_findings(probed, p[1], p[0])) for p in PAIRS]}\n{_diagnosis(probed)}")
        for pair, causes in look(f"{elapsed:.2f}s after the removal").items():
            if (pair not in recovered and not causes
                    and probed.health(pair[1], pair[0]) == "Healthy"):
                recovered[pair] = elapsed
        await asyncio.sleep(POLL)
    # Nothing but the right root cause was ever reported, and only where the fault was.
    for pair in PAIRS:
        wrong = {causes: when for causes, when in seen[pair].items()
                 if causes != expected.get(pair)}
        assert not wrong, f"{kind} {phase}: {pair} reported {wrong}"
    return [(hop_of[pair], *pair, detected[pair], recovered[pair]) for pair in expected]


async def test_latency_and_loss_figures_match_what_the_emulator_injected(
    probed: Probed,
) -> None:
    assert probed.service.prober is not None
    tracker = probed.service.prober.tracker
    await probed.emu.inject("broker-ingress", "delay", delay_ms=200, namespace="prod")
    since = tracker.clock()

    def delayed() -> list[float]:
        return [lat for lat, at in _latencies(probed, "prod") if at > since]

    samples = await wait_until("3 delayed broker heartbeats in prod",
                               lambda: len(d := delayed()) >= 3 and d, 6 * INTERVAL)
    stage = tracker.stats(APP, "stage", Hop.BROKER).latency
    median = sorted(samples)[len(samples) // 2]
    print(f"prod broker latency with 200 ms delay: median {median * 1000:.0f} ms; "
          f"stage p50 {1000 * (stage.p50 or 0):.0f} ms")
    # Every delayed heartbeat took at least the injected 200 ms; the median is the
    # undelayed path's (stage, same moments) plus 200 ms, within 500 ms (the loaded
    # test machine's jitter).
    assert min(samples) >= 0.2, samples
    assert abs(median - ((stage.p50 or 0.0) + 0.2)) <= 0.5, (samples, stage)
    assert probed.findings("prod") == []  # 200 ms is within the SLO
    await probed.emu.clear_faults()

    # Every 4th request into prod's broker ingress for the application dropped: what the
    # checker counts unreceived (all hops: every probe for prod crosses it) is exactly what
    # the emulator dropped, once every send is due.
    for hop in Hop:
        assert tracker.stats(APP, "prod", hop).window_unreceived == 0
    fault = await probed.emu.inject("broker-ingress", "drop", ratio=0.25, app=APP,
                                    namespace="prod")

    async def dropped() -> int:
        rows = await probed.emu.counter_table()
        return sum(r["dropped"] for r in rows if r["hop"] == "broker-ingress"
                   and r.get("app") == APP and r.get("namespace") == "prod")

    deadline = time.monotonic() + 10 * INTERVAL
    while await dropped() < 4:
        assert time.monotonic() < deadline, "the emulator did not drop 4 heartbeats"
        await asyncio.sleep(POLL)
    await probed.emu.remove_fault(fault)
    sent_before = sum(tracker.stats(APP, "prod", hop).window_sent or 0 for hop in Hop)
    await asyncio.sleep(GRACE + 0.5)  # until what was sent before the removal is due
    figures = [tracker.stats(APP, "prod", hop) for hop in Hop]
    unreceived = sum(s.window_unreceived or 0 for s in figures)
    sent = sum(s.window_sent or 0 for s in figures)
    print(f"prod: emulator dropped {await dropped()}, checker counts {unreceived} "
          f"unreceived (of {sent} sent in the window)")
    assert unreceived == await dropped()
    assert sent >= sent_before


def _diagnosis(probed: Probed) -> str:
    """The probing figures of every pair and hop, and the emulator's counters (for failure
    messages)."""
    prober = probed.service.prober
    assert prober is not None
    lines = [f"sender failures {prober.sender.failures}; confirmations {prober.confirmations}"]
    for app, ns in PAIRS:
        for hop in Hop:
            st = prober.tracker.stats(app, ns, hop)
            lines.append(
                f"{app}/{ns}/{hop.value}: received {st.received} last {st.last_arrival} "
                f"sent {st.window_sent} unreceived {st.window_unreceived} streak "
                f"{st.unreceived_streak} dups {st.window_duplicates} recent "
                f"{[(r.sequence, round(r.latency, 3), r.duplicates) for r in st.recent[-3:]]}")
    # what the newest evaluation judged on: (sequence, latency, duplicates, settled, age)
    for (app, ns), verdict in sorted(prober.latest.items()):
        for hop, judged in verdict.hops.items():
            if judged.stats is None:
                continue
            s = judged.stats
            recent = [(r.sequence, round(r.latency, 2), r.duplicates, r.settled,
                       round((s.now - r.arrived_at).total_seconds(), 2)) for r in s.recent[-4:]]
            lines.append(
                f"judged at {s.now:%H:%M:%S.%f} {app}/{ns}/{hop.value}: {judged.state.value} "
                f"{sorted(p.value for p in judged.problems)} streak {s.unreceived_streak} "
                f"{list(s.streak_rounds[:3])} recent {recent}")
    lines.append(_rounds(probed))
    return "\n".join(lines)


def _rounds(probed: Probed) -> str:
    """The prober's last sending rounds: when, how long, for how many, what they did."""
    prober = probed.service.prober
    assert prober is not None
    return "rounds: " + "; ".join(
        f"{r.started:%H:%M:%S.%f} {r.seconds:.2f}s targets {r.targets} heartbeats "
        f"{r.heartbeats} {r.outcome}" for r in list(prober.recent_rounds)[-8:])


def _all_findings(probed: Probed, namespace: str, application: str = APP,
                  ) -> list[tuple[str, str, str | None]]:
    app = next(a for a in probed.report.applications if a.name == application)
    ns = next(n for n in app.namespaces if n.name == namespace)
    return [(f.reason, f.message, f.object.name) for f in ns.findings]


def _latencies(probed: Probed, namespace: str) -> list[tuple[float, Any]]:
    assert probed.service.prober is not None
    tracker = probed.service.prober.tracker
    series = tracker._series.get((APP, namespace, Hop.BROKER))  # the window's samples
    if series is None:
        return []
    return [(value, at) for at, kind, value in list(series.events) if kind == 0 and value >= 0]


async def test_heartbeat_triggers_follow_bindings_user_triggers_untouched(
    probed: Probed, mesh: ControlPlane,
) -> None:
    client = probed.client

    async def ours() -> dict[tuple[str, str], dict[str, Any]]:
        return {(t.metadata.namespace, t.metadata.name): t.to_dict()
                async for t in client.list(Trigger, namespace="*",
                                           labels={HEARTBEAT_LABEL: "true"})}

    async def users() -> dict[tuple[str, str], Any]:
        return {(t.metadata.namespace, t.metadata.name): t.metadata.resourceVersion
                async for t in client.list(Trigger, namespace="*")
                if HEARTBEAT_LABEL not in (t.metadata.labels or {})}

    name = trigger_name(APP)
    owned = await ours()
    assert {("stage", name), ("prod", name)} <= set(owned)
    spec = owned[("stage", name)]["spec"]
    assert spec["broker"] == "default"
    assert spec["filter"]["attributes"] == {
        "source": APP, "type": "eventmesh-health.heartbeat", "eventtypeversion": "v1"}
    token = probed.service.prober.triggers.tokens[("stage", APP)]
    assert spec["subscriber"]["uri"] == \
        f"http://127.0.0.1:{probed.port}/heartbeat/stage/{APP}?pair={token}"
    assert "delivery" not in spec  # v1alpha1 (Knative v0.12) has no spec.delivery
    user_before = await users()

    # Unbind commerce-mock from prod: its heartbeat Trigger there goes, stage's stays.
    api = ApiServer(mesh)
    try:
        url = MAPPINGS.format(ns="prod")
        mapping = api.request("GET", f"{url}/{APP}").json()
        assert api.request("DELETE", f"{url}/{APP}").status_code == 200
        await wait_until("the prod heartbeat Trigger removed", lambda: probed.service.prober
                         is not None and (APP, "prod") not in probed.service.prober.pairs(),
                         15)
        async def gone() -> bool:
            return ("prod", name) not in await ours()
        deadline = time.monotonic() + 15
        while not await gone():
            assert time.monotonic() < deadline, "prod heartbeat Trigger not deleted"
            await asyncio.sleep(0.1)
        assert ("stage", name) in await ours()
        assert await users() == user_before  # user Triggers untouched

        # Bound again: recreated (a deterministic name, no duplicate).
        for field in ("resourceVersion", "uid", "creationTimestamp", "managedFields"):
            mapping["metadata"].pop(field, None)
        assert api.request("POST", url, mapping).status_code == 201
        deadline = time.monotonic() + 20
        while ("prod", name) not in await ours():
            assert time.monotonic() < deadline, "prod heartbeat Trigger not recreated"
            await asyncio.sleep(0.1)
        assert [k for k in await ours() if k[0] == "prod"] == [("prod", name)]
        assert await users() == user_before
    finally:
        api.close()


def test_example_mapping_exists() -> None:
    """The unbinding test relies on the example's ApplicationMapping of prod."""
    from pathlib import Path

    items = yaml.safe_load((Path(__file__).parents[1] / "examples" / "healthy-mesh"
                            / "applicationmappings.yaml").read_text())["items"]
    assert any(i["metadata"]["namespace"] == "prod" and i["metadata"]["name"] == APP
               for i in items)
