"""Heartbeat probing end to end: `serve --probe` (in process) on the envtest API server with
the healthy example mesh, sending through the emulated data plane (`tests/emulator`).

The checker creates its heartbeat Triggers in the API server; the emulator routes by them
to the checker's receiver on loopback. The envtest control plane runs no Knative
controller, so `knative` below plays its part for the checker's Triggers (status Ready, as
the eventing controller would set it); otherwise the control-plane analysis would judge
them not ready and the data plane would not be judged at all.

Intervals are 1 s; every wait is on a condition with a timeout.
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
from tests.emulator import Emulator
from tests.envtest.controlplane import ControlPlane, free_port
from tests.live_objects import ApiServer, apply_example, clear_cluster

pytestmark = pytest.mark.envtest

APP = "commerce-mock"
INTERVAL = 1.0
WINDOW = 10.0
GRACE = 1.0
Trigger = create_namespaced_resource("eventing.knative.dev", "v1alpha1", "Trigger", "triggers")
SECRET = "eventmesh-health-heartbeat-keys"
KEY = os.urandom(32)
MAPPINGS = "/apis/applicationconnector.kyma-project.io/v1alpha1/namespaces/{ns}/applicationmappings"


@pytest.fixture(scope="module")
def mesh(control_plane: ControlPlane) -> Iterator[ControlPlane]:
    """The healthy example mesh without its webhook configurations (they would reject the
    checker's Triggers), plus the heartbeat key Secret; cleared afterwards."""
    if not control_plane.apiserver_running:
        control_plane.start_apiserver()
    api = ApiServer(control_plane)
    try:
        apply_example(api, "healthy-mesh")
        for kind in ("validatingwebhookconfigurations", "mutatingwebhookconfigurations"):
            url = f"/apis/admissionregistration.k8s.io/v1/{kind}"
            for item in api.request("GET", url).json()["items"]:
                api.request("DELETE", f"{url}/{item['metadata']['name']}")
        answer = api.request("POST", "/api/v1/namespaces/kyma-system/secrets", {
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": SECRET, "namespace": "kyma-system"},
            "data": {"k1": base64.b64encode(KEY).decode()}})
        assert answer.status_code in (201, 409), answer.text
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
    emu: Emulator
    client: AsyncClient
    port: int

    @property
    def report(self) -> MeshReport:
        report = self.service.state.report
        assert report is not None
        return report

    def findings(self, namespace: str) -> list[tuple[str, str | None, bool]]:
        """(reason, object name, root cause) of the data-plane findings of (APP, namespace)."""
        return [(f.reason, f.object.name, f.root_cause)
                for app, ns, f in data_plane_findings(self.report)
                if app == APP and ns == namespace]

    def health(self, namespace: str) -> str:
        app = next(a for a in self.report.applications if a.name == APP)
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
    emu = Emulator(mesh.kubeconfig_path, retries=0, retry_backoff=0.02)
    await emu.start()
    port = free_port()
    templates = emu.url_templates()
    settings = Settings(
        host="127.0.0.1", port=port, leader_election=False, write=False, identity="probe-e2e",
        log_level="warning", tick=timedelta(seconds=1),
        probe=ProbeSettings(
            interval=timedelta(seconds=INTERVAL), jitter=0.05,
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
                                       max_loss_ratio=0.15, min_samples=5),
            evaluate_every=timedelta(seconds=0.25), timeout=3.0,
        ))
    service = Service(AsyncClient(KubeConfig.from_file(mesh.kubeconfig_path),
                                  trust_env=False), settings)
    task = asyncio.create_task(service.run())
    knative = asyncio.create_task(_play_knative(client))
    probed = Probed(service, emu, client, port)
    try:
        # Both namespaces of the application are probed and healthy on every hop.
        await wait_until("heartbeats arriving in stage and prod on every hop", lambda: (
            service.state.report is not None and service.prober is not None
            and all(service.prober.tracker.stats(APP, ns, hop).received >= 2
                    for ns in ("stage", "prod") for hop in Hop)), 60)
        try:
            await wait_until("both namespaces Healthy, control and data plane", lambda: all(
                probed.health(ns) == "Healthy" and not probed.findings(ns)
                for ns in ("stage", "prod")), 30)
        except AssertionError as err:
            seen = [_all_findings(probed, ns) for ns in ("stage", "prod")]
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
    # Healthy steady state over several intervals: no data-plane finding at all.
    steady_until = time.monotonic() + 5 * INTERVAL
    while time.monotonic() < steady_until:
        for ns in ("stage", "prod"):
            assert probed.findings(ns) == [], _all_findings(probed, ns)
            assert probed.health(ns) == "Healthy"
        await asyncio.sleep(0.1)

    # Drop at the channel -> broker edge of stage: ingress and channel probes stop
    # arriving there, broker probes still arrive -> the brokersub- Subscription.
    fault = await probed.emu.inject("channel", "drop", app=APP, namespace="stage")
    started = time.monotonic()
    found = await wait_until("NoHeartbeat on the brokersub- Subscription of stage", lambda: [
        f for f in probed.findings("stage") if f[0] == "NoHeartbeat"], 6 * INTERVAL)
    detected = time.monotonic() - started
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
        for keyring in (forger, None):
            hb = new_heartbeat(APP, Hop.CHANNEL, 10**6, run="forger-1",
                               at=tracker.clock())
            if keyring is not None:
                hb = keyring.sign(hb)
            headers, body = to_binary(hb)
            answer = await http.post(f"/heartbeat/stage/{APP}", headers=headers,
                                     content=body)
            assert answer.status_code == 401, answer.text
        after = tracker.stats(APP, "stage", Hop.CHANNEL)
        assert (after.received, after.last_arrival) == (before.received, before.last_arrival)
        assert probed.service.prober.receiver.rejected_counts()["BadSignature"] >= 1
        assert any(f[0] == "NoHeartbeat" for f in probed.findings("stage"))
        # A POST-only path answers 405 with its own Allow.
        answer = await http.get(f"/heartbeat/stage/{APP}")
        assert answer.status_code == 405 and answer.headers["allow"] == "POST"

    # Recovery: the silence clears within 2 intervals of the next arrival; the losses
    # of the outage leave the window after WINDOW.
    await probed.emu.remove_fault(fault)
    started = time.monotonic()
    await wait_until("NoHeartbeat to clear", lambda: not any(
        f[0] == "NoHeartbeat" for f in probed.findings("stage")), 4 * INTERVAL)
    cleared = time.monotonic() - started
    await wait_until("stage Healthy again", lambda: probed.health("stage") == "Healthy",
                     WINDOW + 4 * INTERVAL)
    print(f"silence cleared {cleared:.2f}s after the fault was removed; Healthy after "
          f"{time.monotonic() - started:.2f}s")


async def test_delay_of_200ms_is_reported_as_latency(probed: Probed) -> None:
    assert probed.service.prober is not None
    tracker = probed.service.prober.tracker
    await probed.emu.inject("broker-ingress", "delay", delay_ms=200, namespace="prod")
    since = tracker.clock()

    def delayed() -> list[float]:
        return [lat for lat, at in _latencies(probed, "prod") if at > since]

    samples = await wait_until("5 delayed broker heartbeats in prod",
                               lambda: len(d := delayed()) >= 5 and d, 12 * INTERVAL)
    stage = tracker.stats(APP, "stage", Hop.BROKER).latency
    median = sorted(samples)[len(samples) // 2]
    print(f"prod broker latency with 200 ms delay: median {median * 1000:.0f} ms; "
          f"stage p50 {1000 * (stage.p50 or 0):.0f} ms")
    # Every delayed heartbeat took at least the injected 200 ms; the median is the
    # undelayed path's (stage, same moments) plus 200 ms, within 500 ms (the loaded
    # test machine's jitter).
    assert min(samples) >= 0.2, samples
    assert abs(median - ((stage.p50 or 0.0) + 0.2)) <= 0.5, (samples, stage)
    assert probed.findings("prod") == []  # 200 ms is within the 2 s SLO
    await probed.emu.clear_faults()


def _all_findings(probed: Probed, namespace: str) -> list[tuple[str, str, str | None]]:
    app = next(a for a in probed.report.applications if a.name == APP)
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
    assert spec["subscriber"]["uri"] == f"http://127.0.0.1:{probed.port}/heartbeat/stage/{APP}"
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
