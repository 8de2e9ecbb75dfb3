"""Heartbeats through the REAL Knative Eventing v1 data plane: `serve --probe` (in process,
profile knative-v1) on the knative mesh's API server (tests/knative), one Broker flow and one
Channel flow.

The checker makes a heartbeat Trigger on the Broker and a heartbeat Subscription on the
Channel; the upstream reconcilers make them Ready, and the upstream broker ingress, IMC
dispatcher and broker filter deliver the heartbeats to the checker's receiver on loopback
(direct: 127.0.0.1 is in the processes' NO_PROXY). Heartbeats are posted to the loopback
ports of the broker ingress and the dispatcher (`--flow-url-template`).

Faults are process-level, while every condition stays Ready (Deployment status and Endpoints
untouched): the control plane is Healthy throughout, only heartbeats can tell. Detection and
recovery are measured from the fault's injection (or removal) to the report showing it; the
interval is 2 s (grace 0.6 s), detection must be within 2 intervals. Every wait is on a
condition with a timeout.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from lightkube import AsyncClient, KubeConfig
from lightkube.core.exceptions import ApiError
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Namespace, Secret

from eventmesh_health.model import FlowReport, MeshReport
from eventmesh_health.probing import Hop, ProbeThresholds
from eventmesh_health.probing.flows import flow_key
from eventmesh_health.probing.receiver import ProbeError
from eventmesh_health.probing.runner import ProbeSettings, flow_findings
from eventmesh_health.serve.service import Service, Settings
from eventmesh_health.topology.registry import lookup
from tests.envtest.controlplane import free_port
from tests.knative.mesh import KnativeMesh

pytestmark = pytest.mark.knative

INTERVAL = 2.0
GRACE = 0.6
SLO = 1.0
POLL = 0.05
SECRET_NS, SECRET = "kyma-system", "eventmesh-health-heartbeat-keys"
BROKER, CHANNEL = "default", "orders"
HEARTBEAT = {"eventmesh-health.kyma-project.io/heartbeat": "true"}


async def wait_until(what: str, check: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        await asyncio.sleep(POLL)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def ensure_key_secret(mesh: KnativeMesh) -> None:
    with contextlib.suppress(ApiError):
        mesh.client.create(Namespace(metadata=ObjectMeta(name=SECRET_NS)))
    with contextlib.suppress(ApiError):
        mesh.client.create(Secret(metadata=ObjectMeta(name=SECRET, namespace=SECRET_NS),
                                  data={"k1": base64.b64encode(os.urandom(32)).decode()}))


def probe_settings(mesh: KnativeMesh, port: int, *, interval: float = INTERVAL,
                   grace: float = GRACE) -> ProbeSettings:
    """Probing for the knative mesh: receiver on loopback, heartbeats into the loopback ports
    of the broker ingress and the IMC dispatcher."""
    return ProbeSettings(
        interval=timedelta(seconds=interval), jitter=0.02,
        receiver_url_template=f"http://127.0.0.1:{port}/heartbeat/{{namespace}}/"
                              "{application}",
        flow_url_templates=(("broker", mesh.ingress_url("{namespace}", "{name}")),
                            ("channel", mesh.channel_url("{namespace}", "{name}"))),
        secret_namespace=SECRET_NS, secret_name=SECRET,
        window=timedelta(seconds=interval * 20), grace=timedelta(seconds=grace),
        thresholds=ProbeThresholds(interval=timedelta(seconds=interval),
                                   latency_slo=timedelta(seconds=SLO),
                                   max_loss_ratio=0.2, min_samples=5),
        evaluate_every=timedelta(seconds=interval / 8), timeout=3.0,
        key_reload=timedelta(seconds=5),
    )


@dataclass
class Probed:
    service: Service
    mesh: KnativeMesh
    ns: str
    port: int

    @property
    def report(self) -> MeshReport:
        report = self.service.state.report
        assert report is not None
        return report

    def flow(self, flow: str, name: str) -> FlowReport | None:
        return next((f for f in self.report.flows if f.flow == flow and f.name == name
                     and f.namespace == self.ns), None)

    def health(self, flow: str, name: str) -> str | None:
        report = self.flow(flow, name)
        return report.health.value if report else None

    def findings(self, flow: str, name: str) -> list[tuple[str, str, str | None, bool]]:
        """(reason, object kind, object name, root cause) of the flow's data-plane findings."""
        return [(f.reason, f.object.kind, f.object.name, f.root_cause)
                for fl, ns, n, f in flow_findings(self.report)
                if fl == flow and ns == self.ns and n == name]

    def received(self, flow: str, name: str, hop: Hop) -> int:
        assert self.service.prober is not None
        return self.service.prober.tracker.stats(flow_key(flow, self.ns, name), self.ns,
                                                 hop).received

    def healthy(self) -> bool:
        return all(self.health(f, n) == "Healthy" and not self.findings(f, n)
                   for f, n in (("broker", BROKER), ("channel", CHANNEL)))


async def start_probed(mesh: KnativeMesh, ns: str, settings: ProbeSettings | None = None,
                       port: int | None = None) -> tuple[Service, asyncio.Task[None], int]:
    port = port or free_port()
    service = Service(
        AsyncClient(KubeConfig.from_file(mesh.kubeconfig_path), trust_env=False),
        Settings(host="127.0.0.1", port=port, leader_election=False, write=False,
                 identity="knative-probe", log_level="warning", tick=timedelta(seconds=0.5),
                 profile=lookup("knative-v1"),
                 probe=settings or probe_settings(mesh, port)))
    return service, asyncio.create_task(service.run()), port


def make_flows(mesh: KnativeMesh, ns: str) -> None:
    mesh.create_broker(ns, BROKER)
    mesh.create_channel(ns, CHANNEL)
    mesh.wait_ready("Broker", ns, BROKER)
    mesh.wait_ready("Channel", ns, CHANNEL)
    mesh.wait_settled(ns)


async def remove_heartbeat_objects(mesh: KnativeMesh, ns: str) -> None:
    for kind in ("Trigger", "Subscription"):
        for obj in mesh.list(kind, ns):
            labels = obj["metadata"].get("labels") or {}
            if labels.get("eventmesh-health.kyma-project.io/heartbeat") == "true":
                with contextlib.suppress(ApiError):
                    mesh.delete(kind, ns, obj["metadata"]["name"])
    for kind, name in (("Broker", BROKER), ("Channel", CHANNEL)):
        with contextlib.suppress(ApiError):
            mesh.delete(kind, ns, name)


@pytest.fixture
async def probed(knative_mesh: KnativeMesh, knative_namespace: str) -> AsyncIterator[Probed]:
    mesh, ns = knative_mesh, knative_namespace
    ensure_key_secret(mesh)
    make_flows(mesh, ns)
    service, task, port = await start_probed(mesh, ns)
    probed = Probed(service, mesh, ns, port)
    try:
        await wait_until("two heartbeats of each flow", lambda: (
            service.state.report is not None
            and probed.received("broker", BROKER, Hop.BROKER) >= 2
            and probed.received("channel", CHANNEL, Hop.CHANNEL) >= 2), 30)
        since: list[float] = []

        def settled() -> bool:
            if not probed.healthy():
                since.clear()
                return False
            since.append(time.monotonic())
            return since[-1] - since[0] >= INTERVAL

        try:
            await wait_until("both flows Healthy, control and data plane, for an interval",
                             settled, 30)
        except AssertionError as err:
            flows = [f for f in probed.report.flows if f.namespace == ns]
            raise AssertionError(f"{err}: {flows}") from None
        yield probed
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await service.client.close()
        await remove_heartbeat_objects(mesh, ns)


async def test_healthy_flows_get_heartbeats_and_no_data_plane_finding(probed: Probed) -> None:
    mesh, ns = probed.mesh, probed.ns
    # The heartbeat Trigger: on the Broker, filtering on the heartbeat attributes, to the
    # receiver, dead letters to the receiver's dead-letter URL; Ready (by Knative).
    triggers = [t for t in mesh.list("Trigger", ns)
                if (t["metadata"].get("labels") or {}).get(
                    "eventmesh-health.kyma-project.io/heartbeat") == "true"]
    (trigger,) = triggers
    spec = trigger["spec"]
    key = flow_key("broker", ns, BROKER)
    assert spec["broker"] == BROKER
    assert spec["filter"]["attributes"] == {"source": key, "type": "eventmesh-health.heartbeat",
                                            "eventtypeversion": "v1"}
    assert spec["subscriber"]["uri"].startswith(
        f"http://127.0.0.1:{probed.port}/heartbeat/{ns}/{key}?pair=")
    assert spec["delivery"]["deadLetterSink"]["uri"].startswith(
        f"http://127.0.0.1:{probed.port}/deadletter/{ns}/{key}?pair=")
    mesh.wait_ready("Trigger", ns, trigger["metadata"]["name"])
    subscriptions = [s for s in mesh.list("Subscription", ns)
                     if (s["metadata"].get("labels") or {}).get(
                         "eventmesh-health.kyma-project.io/heartbeat") == "true"]
    (subscription,) = subscriptions
    assert subscription["spec"]["channel"] == {
        "apiVersion": "messaging.knative.dev/v1", "kind": "Channel", "name": CHANNEL}
    mesh.wait_ready("Subscription", ns, subscription["metadata"]["name"])

    # Several intervals: no data-plane finding, both flows Healthy, heartbeats keep coming.
    before = (probed.received("broker", BROKER, Hop.BROKER),
              probed.received("channel", CHANNEL, Hop.CHANNEL))
    until = time.monotonic() + 3 * INTERVAL
    while time.monotonic() < until:
        assert probed.healthy(), [f for f in probed.report.flows if f.namespace == ns]
        await asyncio.sleep(POLL)
    assert probed.received("broker", BROKER, Hop.BROKER) >= before[0] + 2
    assert probed.received("channel", CHANNEL, Hop.CHANNEL) >= before[1] + 2
    assert probed.report.system.health.value == "Healthy"


async def _detect(probed: Probed, expected: dict[tuple[str, str], tuple[str, str]],
                  healthy: tuple[tuple[str, str], ...]) -> float:
    """Seconds until each flow of `expected` has exactly its (kind, name) NoHeartbeat root
    cause; the flows in `healthy` must stay without a data-plane finding meanwhile."""
    started = time.monotonic()

    def found() -> bool:
        for flow, name in healthy:
            assert probed.findings(flow, name) == [], (flow, name, probed.findings(flow, name))
        return all(probed.findings(flow, name) == [("NoHeartbeat", kind, obj, True)]
                   for (flow, name), (kind, obj) in expected.items())

    await wait_until(f"NoHeartbeat on {expected}", found, 6 * INTERVAL)
    return time.monotonic() - started


async def test_dispatcher_stopped_while_everything_stays_ready(probed: Probed) -> None:
    mesh = probed.mesh
    mesh.stop_dispatcher()  # Deployment status and Endpoints untouched: all conditions Ready
    try:
        detected = await _detect(probed, {("broker", BROKER): ("Broker", BROKER),
                                          ("channel", CHANNEL): ("Channel", CHANNEL)}, ())
        print(f"dispatcher stopped: reported after {detected:.2f}s "
              f"({detected / INTERVAL:.2f} intervals)")
        assert detected <= 2 * INTERVAL + POLL
        for flow, name in (("broker", BROKER), ("channel", CHANNEL)):
            assert probed.health(flow, name) == "Unhealthy"
            # the control plane says nothing: only the heartbeats do
            flow_report = probed.flow(flow, name)
            assert flow_report is not None
            assert all(f.reason == "NoHeartbeat" for f in flow_report.findings), flow_report
        assert probed.report.health.value == "Unhealthy"
    finally:
        mesh.start_dispatcher()
    started = time.monotonic()
    await wait_until("both flows Healthy again", probed.healthy, 6 * INTERVAL)
    cleared = time.monotonic() - started
    print(f"dispatcher restarted: cleared after {cleared:.2f}s ({cleared / INTERVAL:.2f} "
          "intervals)")


@pytest.mark.parametrize("component", ["filter", "ingress"])
async def test_broker_process_stopped_is_the_broker_hop(probed: Probed, component: str) -> None:
    mesh = probed.mesh
    mesh.stop_component(component)
    try:
        detected = await _detect(probed, {("broker", BROKER): ("Broker", BROKER)},
                                 (("channel", CHANNEL),))
        print(f"broker {component} stopped: reported after {detected:.2f}s "
              f"({detected / INTERVAL:.2f} intervals)")
        assert detected <= 2 * INTERVAL + POLL
        assert probed.health("broker", BROKER) == "Unhealthy"
        assert probed.health("channel", CHANNEL) == "Healthy"
    finally:
        mesh.start_component(component)
    await wait_until("the Broker flow Healthy again", probed.healthy, 6 * INTERVAL)


async def test_subscriber_errors_arrive_as_dead_letters(probed: Probed) -> None:
    """The checker's receiver answers the Broker flow's heartbeats 500: the mesh gives up
    (no retries configured) and delivers them to the heartbeat Trigger's dead-letter sink."""
    assert probed.service.prober is not None
    receiver = probed.service.prober.receiver
    key = flow_key("broker", probed.ns, BROKER)
    handle = receiver.handle_heartbeat

    def failing(namespace: str, application: str, *args: Any) -> Any:
        if application == key:
            return 500, ProbeError(error="Test", detail="the subscriber fails")
        return handle(namespace, application, *args)

    receiver.handle_heartbeat = failing  # type: ignore[method-assign]
    try:
        await _detect(probed, {("broker", BROKER): ("Broker", BROKER)}, (("channel", CHANNEL),))
        await wait_until("dead letters of the Broker flow", lambda: receiver.latest_dead_letter(
            key, probed.ns), 4 * INTERVAL)
        letter = receiver.latest_dead_letter(key, probed.ns)
        assert letter is not None
        stats = probed.service.prober.tracker.stats(key, probed.ns, Hop.BROKER)
        assert stats.dead_letters >= 1
        await wait_until("the finding naming the dead letter", lambda: any(
            "dead letter" in f.message.lower() for fl, ns, name, f in flow_findings(
                probed.report) if (fl, ns, name) == ("broker", probed.ns, BROKER)),
            4 * INTERVAL)
    finally:
        receiver.handle_heartbeat = handle  # type: ignore[method-assign]
    await wait_until("the Broker flow Healthy again", probed.healthy, 6 * INTERVAL)


async def test_opted_out_flow_is_not_probed(knative_mesh: KnativeMesh,
                                            knative_namespace: str) -> None:
    mesh, ns = knative_mesh, knative_namespace
    ensure_key_secret(mesh)
    mesh.create_channel(ns, CHANNEL)
    mesh.client.patch(_resource("Channel"), CHANNEL, {"metadata": {"annotations": {
        "eventmesh-health.kyma-project.io/probe": "false"}}}, namespace=ns,
        patch_type=_merge())
    mesh.wait_ready("Channel", ns, CHANNEL)
    service, task, _ = await start_probed(mesh, ns)
    try:
        await wait_until("a report with the Channel flow", lambda: service.state.report
                         is not None and any(f.name == CHANNEL and f.namespace == ns
                                             for f in service.state.report.flows), 20)
        assert service.prober is not None
        await wait_until("a probing round", lambda: service.prober is not None
                         and service.prober.rounds >= 2, 10)
        assert flow_key("channel", ns, CHANNEL) not in service.prober.flow_targets()
        assert not [s for s in mesh.list("Subscription", ns)
                    if (s["metadata"].get("labels") or {}).get(
                        "eventmesh-health.kyma-project.io/heartbeat") == "true"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await service.client.close()
        await remove_heartbeat_objects(mesh, ns)


def _resource(kind: str) -> Any:
    from tests.knative.mesh import resource

    return resource(kind)


def _merge() -> Any:
    from lightkube.types import PatchType

    return PatchType.MERGE
