"""The emulated mesh (`tests/emulator`): CloudEvents routed hop to hop by the Subscriptions and
Triggers of the real API server (the healthy example mesh), and every fault at every hop.

Nothing here sleeps for luck: "nothing arrived" is asserted once the emulator is idle (no hop
handling a request, no delivery or retry pending), after which nothing can arrive any more.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
import yaml
from lightkube import AsyncClient, KubeConfig
from lightkube.config.models import User
from lightkube.generic_resource import create_namespaced_resource

from tests.emulator import (
    HOPS,
    CloudEvent,
    Emulator,
    Fault,
    KubeWatcher,
    Receiver,
    Routes,
    ThreadedEmulator,
    from_http,
    matches,
    new_event,
    to_binary,
    to_structured,
)
from tests.envtest.controlplane import ControlPlane
from tests.live_objects import ApiServer, apply_example, clear_cluster

REPO = Path(__file__).resolve().parents[1]
HEALTHY = REPO / "examples" / "healthy-mesh"
APP = "commerce-mock"
STAGE = "order-processor.stage.svc.cluster.local"  # subscriber hosts of the healthy mesh
PROD = "order-processor.prod.svc.cluster.local"
CUSTOMER_SYNC = "customer-sync.stage.svc.cluster.local"
CAMPAIGN = "campaign-tracker.stage.svc.cluster.local"
Trigger = create_namespaced_resource("eventing.knative.dev", "v1alpha1", "Trigger", "triggers")
LEGACY = {"event-type": "order.created", "event-type-version": "v1",
          "event-time": "2020-06-15T10:00:00.123Z", "data": {"orderCode": "4711"}}


def healthy_routing_objects() -> list[dict[str, Any]]:
    objects = []
    for name in ("triggers.eventing.knative.dev.yaml", "subscriptions.messaging.knative.dev.yaml"):
        objects += yaml.safe_load((HEALTHY / name).read_text())["items"]
    return objects


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def healthy_mesh(control_plane: ControlPlane) -> Iterator[ControlPlane]:
    """The healthy example mesh in the API server, once for the module; cleared afterwards.

    Without its admission webhook configurations: they point at a webhook that does not run
    here, and the API server would reject every Trigger the tests create."""
    if not control_plane.apiserver_running:
        control_plane.start_apiserver()
    api = ApiServer(control_plane)
    try:
        apply_example(api, "healthy-mesh")
        for kind in ("validatingwebhookconfigurations", "mutatingwebhookconfigurations"):
            url = f"/apis/admissionregistration.k8s.io/v1/{kind}"
            for item in api.request("GET", url).json()["items"]:
                api.request("DELETE", f"{url}/{item['metadata']['name']}")
        yield control_plane
    finally:
        if not control_plane.apiserver_running:
            control_plane.start_apiserver()
        clear_cluster(api)
        api.close()


class Triggers:
    """Triggers a test creates in the API server (deleted afterwards)."""

    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self.created: list[tuple[str, str]] = []

    async def create(self, emu: Emulator, name: str, namespace: str, subscriber: str,
                     attributes: dict[str, str] | None = None,
                     delivery: dict[str, Any] | None = None) -> None:
        """Create a Trigger and wait until the emulator routes to it."""
        spec: dict[str, Any] = {"broker": "default", "subscriber": {"uri": subscriber}}
        if attributes is not None:
            spec["filter"] = {"attributes": attributes}
        if delivery is not None:
            spec["delivery"] = delivery
        await self.client.create(Trigger.from_dict({
            "apiVersion": "eventing.knative.dev/v1alpha1", "kind": "Trigger",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}))
        self.created.append((namespace, name))
        await emu.routes.wait_until(f"Trigger {namespace}/{name} routed",
                                    lambda: emu.routes.trigger(namespace, name) is not None)

    async def delete(self, emu: Emulator, name: str, namespace: str) -> None:
        """Delete a Trigger and wait until the emulator no longer routes to it."""
        await self.client.delete(Trigger, name, namespace=namespace)
        self.created.remove((namespace, name))
        await emu.routes.wait_until(f"Trigger {namespace}/{name} gone",
                                    lambda: emu.routes.trigger(namespace, name) is None)


@pytest.fixture
async def triggers(healthy_mesh: ControlPlane) -> AsyncIterator[Triggers]:
    client = AsyncClient(KubeConfig.from_file(healthy_mesh.kubeconfig_path), trust_env=False)
    made = Triggers(client)
    try:
        yield made
    finally:
        for namespace, name in made.created:
            with contextlib.suppress(Exception):
                await client.delete(Trigger, name, namespace=namespace)
        await client.close()


@pytest.fixture
async def emu(healthy_mesh: ControlPlane) -> AsyncIterator[Emulator]:
    """The emulator on the live healthy mesh; unmapped subscribers go to its stand-in."""
    emulator = Emulator(healthy_mesh.kubeconfig_path, retries=1, retry_backoff=0.02)
    await emulator.start()
    try:
        yield emulator
    finally:
        await emulator.stop()


@pytest.fixture
async def static_emu() -> AsyncIterator[Emulator]:
    """The emulator routing by the healthy mesh's objects as files (no API server)."""
    emulator = Emulator(routes=Routes.from_objects(healthy_routing_objects()), retries=1,
                        retry_backoff=0.02)
    await emulator.start()
    try:
        yield emulator
    finally:
        await emulator.stop()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=15, trust_env=False) as client:
        yield client


async def send_legacy(http: httpx.AsyncClient, emu: Emulator, app: str = APP,
                      **fields: Any) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    answer = await http.post(emu.event_service_url(app), json={**LEGACY, **fields})
    return answer, started


def arrivals(emu: Emulator, host: str, event_id: str) -> list[float]:
    return [d.at for d in emu.delivered if d.host == host and d.event.id == event_id]


# --- end to end on the live healthy mesh ----------------------------------------------------


@pytest.mark.envtest
async def test_legacy_event_reaches_the_triggers_of_stage_and_prod(
    healthy_mesh: ControlPlane, http: httpx.AsyncClient
) -> None:
    async with (Receiver() as stage, Receiver() as prod, Receiver() as customer,
                Receiver() as campaign):
        emulator = Emulator(healthy_mesh.kubeconfig_path, host_map={
            STAGE: stage.url, PROD: prod.url, CUSTOMER_SYNC: customer.url,
            "campaign-tracker.*": campaign.url})
        async with emulator as emu:
            answer, _ = await send_legacy(http, emu)
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert body["status"] == "published"
            event_id = body["event-id"]
            for receiver in (stage, prod):
                (arrival,) = await receiver.wait_for(event_id)
                event = arrival.event
                assert event.attributes == {
                    "specversion": "1.0", "id": event_id, "source": APP,
                    "type": "order.created", "eventtypeversion": "v1",
                    "time": "2020-06-15T10:00:00.123Z", "datacontenttype": "application/json"}
                assert event.json() == {"orderCode": "4711"}
                assert not arrival.structured
            await emu.idle()
            # Same namespace, non-matching filters (type customer.created; source marketing).
            assert customer.arrivals == [] and campaign.arrivals == []
            assert len(stage.arrivals) == len(prod.arrivals) == 1
            assert emu.counters("broker-filter", namespace="stage").filtered == 2
            assert emu.counters("broker-filter", namespace="prod").filtered == 0
            assert emu.delivered == []  # everything went to the mapped hosts
            assert [t["hop"] for t in emu.trace(event_id) if t["what"] == "received"][:3] == [
                "event-service", "adapter", "channel"]

            # The other application reaches only its own Trigger.
            answer, _ = await send_legacy(http, emu, app="marketing",
                                          **{"event-type": "campaign.started"})
            await campaign.wait_for(answer.json()["event-id"])
            await emu.idle()
            assert len(stage.arrivals) == len(prod.arrivals) == 1


@pytest.mark.envtest
async def test_triggers_created_and_deleted_at_run_time(
    emu: Emulator, triggers: Triggers, http: httpx.AsyncClient
) -> None:
    async with (Receiver() as match, Receiver() as other_type, Receiver() as no_filter,
                Receiver() as absent_extension, Receiver() as any_version):
        before, _ = await send_legacy(http, emu)
        await emu.idle()
        await triggers.create(emu, "emu-match", "stage", match.url,
                             {"source": APP, "type": "order.created", "eventtypeversion": "v1"})
        await triggers.create(emu, "emu-other-type", "stage", other_type.url,
                             {"source": APP, "type": "order.deleted"})
        await triggers.create(emu, "emu-no-filter", "prod", no_filter.url)
        await triggers.create(emu, "emu-absent-extension", "prod", absent_extension.url,
                             {"source": APP, "heartbeathop": ""})
        await triggers.create(emu, "emu-any-version", "prod", any_version.url,
                             {"source": APP, "eventtypeversion": ""})

        answer, _ = await send_legacy(http, emu)
        event_id = answer.json()["event-id"]
        for receiver in (match, no_filter, any_version):
            await receiver.wait_for(event_id)
        await emu.idle()
        assert [e.id for e in match.events] == [event_id]  # not the one sent before
        assert before.json()["event-id"] != event_id
        assert other_type.arrivals == [] and absent_extension.arrivals == []
        assert emu.counters("broker-filter", trigger="emu-other-type").filtered == 1
        assert emu.counters("broker-filter", trigger="emu-absent-extension").filtered == 1

        # Deleted at run time: no more events.
        await triggers.delete(emu, "emu-match", "stage")
        answer, _ = await send_legacy(http, emu)
        await no_filter.wait_for(answer.json()["event-id"])
        await emu.idle()
        assert [e.id for e in match.events] == [event_id]


# --- faults: every kind at every hop ----------------------------------------------------------

APP_HOPS = ("event-service", "adapter", "channel")  # scoped by app: both namespaces affected


def scope_of(hop: str) -> dict[str, str]:
    """The scope of the faults of the matrix: the app before the brokers, then stage (the
    broker filter: stage's Trigger for order.created only)."""
    if hop in APP_HOPS:
        return {"app": APP}
    if hop == "broker-filter":
        return {"namespace": "stage", "trigger": "commerce-mock-order-created"}
    return {"namespace": "stage"}


def hop_url(emu: Emulator, hop: str) -> str:
    return {
        "event-service": emu.event_service_url(APP), "adapter": emu.adapter_url(APP),
        "channel": emu.channel_url(APP), "broker-ingress": emu.broker_ingress_url("stage"),
        "trigger-channel": emu.trigger_channel_url("stage"),
        "broker-filter": emu.broker_filter_url("stage", "commerce-mock-order-created"),
        "subscriber": emu.subscriber_url(STAGE),
    }[hop]


async def recovered(http: httpx.AsyncClient, emu: Emulator) -> None:
    """After the faults are cleared, events flow to both namespaces again."""
    await emu.clear_faults()
    answer, _ = await send_legacy(http, emu)
    assert answer.status_code == 200, answer.text
    event_id = answer.json()["event-id"]
    for host in (STAGE, PROD):
        await emu.wait_delivered(host=host, id=event_id)


@pytest.mark.envtest
@pytest.mark.parametrize("hop", HOPS)
async def test_drop(hop: str, emu: Emulator, http: httpx.AsyncClient) -> None:
    fault = await emu.inject(hop, "drop", **scope_of(hop))
    answer, _ = await send_legacy(http, emu)
    assert answer.status_code == 200, answer.text  # silent loss: every hop said yes
    event_id = answer.json()["event-id"]
    if hop not in APP_HOPS:
        await emu.wait_delivered(host=PROD, id=event_id)
    await emu.idle()
    assert arrivals(emu, STAGE, event_id) == []
    assert len(arrivals(emu, PROD, event_id)) == (0 if hop in APP_HOPS else 1)
    assert emu.counters(hop, **scope_of(hop)).dropped == 1
    assert fault.hits >= 1
    await recovered(http, emu)


@pytest.mark.envtest
@pytest.mark.parametrize("hop", HOPS)
async def test_delay(hop: str, emu: Emulator, http: httpx.AsyncClient) -> None:
    await emu.inject(hop, "delay", delay_ms=200, **scope_of(hop))
    answer, started = await send_legacy(http, emu)
    assert answer.status_code == 200, answer.text
    event_id = answer.json()["event-id"]
    affected = (STAGE, PROD) if hop in APP_HOPS else (STAGE,)
    for host in (STAGE, PROD):
        await emu.wait_delivered(host=host, id=event_id)
    for host in affected:
        (at,) = arrivals(emu, host, event_id)
        assert at - started >= 0.2, f"{host}: arrived after {at - started:.3f}s"
    await emu.idle()
    assert len(arrivals(emu, PROD, event_id)) == 1
    await recovered(http, emu)


@pytest.mark.envtest
@pytest.mark.parametrize("hop", HOPS)
async def test_duplicate(hop: str, emu: Emulator, http: httpx.AsyncClient) -> None:
    await emu.inject(hop, "duplicate", **scope_of(hop))
    answer, _ = await send_legacy(http, emu)
    assert answer.status_code == 200, answer.text
    event_id = answer.json()["event-id"]
    await emu.wait_delivered(2, host=STAGE, id=event_id)
    await emu.wait_delivered(host=PROD, id=event_id)
    await emu.idle()
    assert len(arrivals(emu, STAGE, event_id)) == 2
    assert len(arrivals(emu, PROD, event_id)) == (2 if hop in APP_HOPS else 1)
    await recovered(http, emu)


# Where a failure at a hop shows up upstream: the hop before it counts a failed delivery.
UPSTREAM = {"adapter": "event-service", "channel": "adapter", "broker-ingress": "channel",
            "trigger-channel": "broker-ingress", "broker-filter": "trigger-channel",
            "subscriber": "broker-filter"}


@pytest.mark.envtest
@pytest.mark.parametrize("hop", HOPS)
async def test_error(hop: str, emu: Emulator, http: httpx.AsyncClient) -> None:
    await emu.inject(hop, "error", status=503, **scope_of(hop))
    answer, _ = await send_legacy(http, emu)
    if hop in APP_HOPS:  # synchronous up to the channel: the sender sees the 503
        assert answer.status_code == 503, answer.text
    else:  # the channel accepted it; the failure is downstream
        assert answer.status_code == 200, answer.text
        event_id = answer.json()["event-id"]
        await emu.wait_delivered(host=PROD, id=event_id)
    await emu.idle()
    assert [d.host for d in emu.delivered] == ([] if hop in APP_HOPS else [PROD])
    assert emu.counters(hop, **scope_of(hop)).rejected >= 1
    if hop != "event-service":
        assert emu.counters(UPSTREAM[hop]).failed >= 1
    await recovered(http, emu)


@pytest.mark.envtest
@pytest.mark.parametrize("hop", HOPS)
async def test_stop(hop: str, emu: Emulator, http: httpx.AsyncClient) -> None:
    await emu.inject(hop, "stop")  # the whole hop: its port refuses connections
    with pytest.raises(httpx.ConnectError):
        await http.post(hop_url(emu, hop), content=b"{}")
    if hop == "event-service":
        with pytest.raises(httpx.ConnectError):
            await send_legacy(http, emu)
    else:
        answer, _ = await send_legacy(http, emu)
        # Up to the channel the chain is synchronous: the event service says 502.
        assert answer.status_code == (502 if hop in APP_HOPS else 200), answer.text
        await emu.idle()
        failure = emu.trace()
        assert emu.counters(UPSTREAM[hop]).failed >= 1, failure
        assert any("ClientConnectorError" in t.get("detail", "") for t in failure), failure
    await emu.idle()
    assert emu.delivered == []
    await recovered(http, emu)


# --- dead letters, scoped stop, the channel edge, hop probes ------------------------------------


@pytest.mark.envtest
async def test_subscriber_5xx_goes_to_the_dead_letter_sink(
    emu: Emulator, triggers: Triggers, http: httpx.AsyncClient
) -> None:
    async with Receiver(status=503, body=b"function is down") as subscriber, \
            Receiver() as dead_letters:
        delivery = {"deadLetterSink": {"uri": dead_letters.url}, "retry": 2,
                    "backoffDelay": "PT0.01S", "backoffPolicy": "linear"}
        await triggers.create(emu, "emu-dead-letters", "stage", subscriber.url,
                             {"source": APP, "type": "order.created"}, delivery)
        # A subscriber in the cluster (the stand-in) failing through an injected fault.
        await triggers.create(emu, "emu-dead-letters-2", "prod",
                             "http://flaky-fn.prod.svc.cluster.local/hook",
                             {"source": APP}, delivery)
        await emu.inject("subscriber", "error", status=500, host="flaky-fn.prod.svc.cluster.local")

        answer, _ = await send_legacy(http, emu)
        event_id = answer.json()["event-id"]
        dead = await dead_letters.wait_for(event_id, count=2)
        await emu.idle()
        assert len(subscriber.of(event_id)) == 3  # the first attempt and two retries
        by_dest = {a.event["knativeerrordest"]: a.event for a in dead}
        assert set(by_dest) == {subscriber.url, "http://flaky-fn.prod.svc.cluster.local/hook"}
        direct = by_dest[subscriber.url]
        assert direct["knativeerrorcode"] == "503"
        assert base64.b64decode(direct["knativeerrordata"]) == b"function is down"
        faulted = by_dest["http://flaky-fn.prod.svc.cluster.local/hook"]
        assert faulted["knativeerrorcode"] == "500"
        for event in (direct, faulted):  # the event itself is unchanged
            assert (event.source, event.type, event["eventtypeversion"]) == (
                APP, "order.created", "v1")
            assert event.json() == {"orderCode": "4711"}
        assert emu.counters("broker-filter", trigger="emu-dead-letters").dead_lettered == 1
        assert emu.counters("broker-filter", trigger="emu-dead-letters").failed == 1
        assert emu.counters("subscriber", host="flaky-fn.prod.svc.cluster.local").rejected == 3


@pytest.mark.envtest
async def test_scoped_stop_cuts_one_namespace(emu: Emulator, http: httpx.AsyncClient) -> None:
    await emu.inject("broker-ingress", "stop", namespace="stage")
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):  # closed, no answer
        await http.post(emu.broker_ingress_url("stage"), headers=to_binary(
            new_event(APP, "order.created"))[0])
    answer, _ = await send_legacy(http, emu)
    event_id = answer.json()["event-id"]
    await emu.wait_delivered(host=PROD, id=event_id)
    await emu.idle()
    assert arrivals(emu, STAGE, event_id) == []
    assert emu.counters("channel", namespace="stage").failed == 1
    assert emu.counters("channel", namespace="prod").forwarded == 1
    await recovered(http, emu)


@pytest.mark.envtest
async def test_channel_edge_fault_breaks_one_subscription(
    emu: Emulator, http: httpx.AsyncClient
) -> None:
    """The Channel -> Broker Subscription of stage is broken: probes injected at the channel
    reach prod only, probes injected at stage's broker ingress still arrive."""
    await emu.inject("channel", "drop", app=APP, namespace="stage")
    via_channel = new_event(APP, "order.created", {"probe": "channel"}, eventtypeversion="v1")
    via_broker = new_event(APP, "order.created", {"probe": "broker"}, eventtypeversion="v1")
    for url, event in ((emu.channel_url(APP), via_channel),
                       (emu.broker_ingress_url("stage"), via_broker)):
        headers, body = to_binary(event)
        answer = await http.post(url, headers=headers, content=body)
        assert answer.status_code == 202, answer.text
    await emu.wait_delivered(host=PROD, id=via_channel.id)
    await emu.wait_delivered(host=STAGE, id=via_broker.id)
    await emu.idle()
    assert arrivals(emu, STAGE, via_channel.id) == []
    assert emu.counters("channel", app=APP, namespace="stage").dropped == 1


@pytest.mark.envtest
async def test_cloudevents_entering_at_each_hop(emu: Emulator, http: httpx.AsyncClient) -> None:
    """Binary and structured CloudEvents at the event service, the adapter (which overwrites
    the source), the channel and the broker ingress."""
    spoofed = "spoofed-source"  # the adapter overwrites it; the hops after it do not
    sent = []
    for url, structured, source in (
            (emu.event_service_cloudevents_url(APP), True, spoofed),
            (emu.adapter_url(APP), True, spoofed), (emu.adapter_url(APP), False, spoofed),
            (emu.channel_url(APP), False, APP), (emu.broker_ingress_url("stage"), True, APP)):
        event = new_event(source, "order.created", {"url": url}, eventtypeversion="v1")
        headers, body = (to_structured if structured else to_binary)(event)
        answer = await http.post(url, headers=headers, content=body)
        assert answer.status_code in (200, 202), (url, answer.text)
        sent.append(event)
    for event in sent:
        try:
            (delivered,) = await emu.wait_delivered(host=STAGE, id=event.id)
        except AssertionError:
            raise AssertionError(f"{event.attributes} not delivered: {emu.trace()}") from None
        assert delivered.event.source == APP
        assert delivered.event.json() == event.json()
    bad = await http.post(emu.adapter_url(APP), content=b"not a cloudevent")
    assert bad.status_code == 400
    assert emu.counters("adapter").rejected == 1


@pytest.mark.envtest
async def test_control_api(emu: Emulator, http: httpx.AsyncClient) -> None:
    control = emu.control_url
    urls = (await http.get(f"{control}/_urls")).json()
    assert urls["templates"]["event_service"].format(app=APP) == emu.event_service_url(APP)
    assert urls["templates"]["broker_ingress"].format(namespace="stage") == \
        emu.broker_ingress_url("stage")
    routes = (await http.get(f"{control}/_routes")).json()
    assert {s["namespace"] for s in routes["channels"][APP]} == {"stage", "prod"}
    assert {t["trigger"] for t in routes["brokers"]["stage/default"]} == {
        "commerce-mock-order-created", "commerce-mock-customer-created",
        "marketing-campaign-started"}

    bad = await http.post(f"{control}/_faults", json={"hop": "adapter", "kind": "explode"})
    assert bad.status_code == 400 and "explode" in bad.json()["error"]
    bad = await http.post(f"{control}/_faults", json={"hop": "adapter", "kind": "drop",
                                                      "namespace": "stage"})
    assert bad.status_code == 400
    created = await http.post(f"{control}/_faults", json={"hop": "adapter", "kind": "drop",
                                                          "app": APP, "ratio": 1})
    assert created.status_code == 201
    fault = created.json()
    assert (await http.get(f"{control}/_faults")).json() == [fault]
    answer, _ = await send_legacy(http, emu)
    assert (await http.post(f"{control}/_idle")).status_code == 204
    counters = (await http.get(f"{control}/_counters")).json()
    assert counters["hops"]["adapter"]["dropped"] == 1
    assert counters["hops"]["channel"]["received"] == 0
    assert (await http.delete(f"{control}/_faults/{fault['id']}")).status_code == 204
    assert (await http.get(f"{control}/_faults")).json() == []

    mapped = await http.post(f"{control}/_hosts", json={"pattern": "*.prod.svc.cluster.local",
                                                        "url": emu.subscriber_url("mapped")})
    assert mapped.status_code == 201
    answer, _ = await send_legacy(http, emu)
    event_id = answer.json()["event-id"]
    await emu.wait_delivered(host="mapped", id=event_id)
    delivered = (await http.get(f"{control}/_delivered", params={"host": "mapped"})).json()
    assert [d["attributes"]["id"] for d in delivered] == [event_id]
    assert (await http.delete(f"{control}/_counters")).status_code == 204
    assert emu.counters().received == 0


@pytest.mark.envtest
def test_command_line_demo(healthy_mesh: ControlPlane) -> None:
    """`python -m tests.emulator --kubeconfig K --port-base P`."""
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.emulator", "--kubeconfig",
         str(healthy_mesh.kubeconfig_path), "--port-base", "0"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line, process.stderr.read() if process.stderr else ""
        urls = json.loads(line)
        with httpx.Client(timeout=15, trust_env=False) as client:
            answer = client.post(urls["templates"]["event_service"].format(app=APP), json=LEGACY)
            assert answer.status_code == 200, answer.text
            event_id = answer.json()["event-id"]
            idle = client.post(f"{urls['hops']['control']}/_idle")
            assert idle.status_code == 204, idle.text
            delivered = client.get(f"{urls['hops']['control']}/_delivered").json()
            assert sorted(d["host"] for d in delivered if d["attributes"]["id"] == event_id) \
                == sorted([PROD, STAGE])
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            assert process.wait(15) == 0
        finally:
            if process.poll() is None:
                process.kill()


# --- without an API server ----------------------------------------------------------------------


async def test_static_routes_and_legacy_validation(static_emu: Emulator,
                                                   http: httpx.AsyncClient) -> None:
    answer, _ = await send_legacy(http, static_emu)
    event_id = answer.json()["event-id"]
    for host in (STAGE, PROD):
        await static_emu.wait_delivered(host=host, id=event_id)
    missing = await http.post(static_emu.event_service_url(APP), json={"data": {}})
    assert missing.status_code == 400
    assert {d["field"] for d in missing.json()["details"]} == {
        "event-type", "event-type-version", "event-time"}
    too_big = await http.post(static_emu.adapter_url(APP), content=b"x" * (2 << 20))
    assert too_big.status_code == 413
    health = await http.get(static_emu.base_url("event-service") + "/v1/health")
    assert health.status_code == 200


async def test_drop_ratio_is_exact(static_emu: Emulator, http: httpx.AsyncClient) -> None:
    await static_emu.inject("broker-ingress", "drop", ratio=0.25, namespace="prod")
    for _ in range(8):
        answer, _ = await send_legacy(http, static_emu)
        assert answer.status_code == 200
    await static_emu.idle()
    assert static_emu.counters("broker-ingress", namespace="prod").dropped == 2
    assert len([d for d in static_emu.delivered if d.host == PROD]) == 6
    assert len([d for d in static_emu.delivered if d.host == STAGE]) == 8


async def test_resolve_maps_cluster_names_to_hops(static_emu: Emulator) -> None:
    emu = static_emu
    assert emu.resolve("http://default-broker.stage") == emu.broker_ingress_url("stage")
    assert emu.resolve("http://default-broker.prod.svc.cluster.local/") == \
        emu.broker_ingress_url("prod")
    assert emu.resolve(
        "http://default-broker-filter.stage.svc.cluster.local/triggers/stage/t/u") == \
        emu.broker_filter_url("stage", "t", "u")
    assert emu.resolve("http://default-kne-trigger-kn-channel.stage.svc.cluster.local") == \
        emu.trigger_channel_url("stage")
    assert emu.resolve("http://commerce-mock-kn-channel.kyma-integration.svc.cluster.local") == \
        emu.channel_url(APP)
    assert emu.resolve("http://order-processor.stage.svc.cluster.local/") == \
        emu.subscriber_url(STAGE)
    assert emu.resolve("https://example.com/x?y=1") == emu.subscriber_url("example.com",
                                                                          "/x?y=1")
    assert emu.resolve("http://127.0.0.1:9/hook") == "http://127.0.0.1:9/hook"
    emu.map_host("*.stage.svc.cluster.local", "http://127.0.0.1:9999/base")
    assert emu.resolve("http://fn.stage.svc.cluster.local/hook") == \
        "http://127.0.0.1:9999/base/hook"


def test_threaded_emulator_for_synchronous_tests() -> None:
    with ThreadedEmulator(routes=Routes.from_objects(healthy_routing_objects())) as emu, \
            httpx.Client(timeout=15, trust_env=False) as client:
        emu.inject("adapter", "stop")
        with pytest.raises(httpx.ConnectError):
            client.post(emu.adapter_url(APP), content=b"")
        emu.clear_faults()
        answer = client.post(emu.event_service_url(APP), json=LEGACY)
        assert answer.status_code == 200, answer.text
        emu.idle()
        assert emu.counters("broker-filter").forwarded == 2  # stage and prod


# --- the pieces -------------------------------------------------------------------------------


def test_cloudevents_binding_round_trips() -> None:
    event = new_event("app", "t.created", {"a": "ü"}, eventtypeversion="v1",
                      subject='with space "and" % percent')
    headers, body = to_binary(event)
    assert headers["ce-subject"] == "with%20space%20%22and%22%20%25%20percent"
    assert from_http(headers, body) == event
    headers, body = to_structured(event)
    assert from_http(headers, body) == event
    raw = CloudEvent({**event.attributes, "datacontenttype": "application/octet-stream"},
                     b"\x00\xff")
    assert from_http(*to_structured(raw)) == raw
    for headers, body in (({"ce-id": "1"}, b""),
                          ({"content-type": "application/cloudevents+json"}, b"[1]"),
                          ({"content-type": "application/cloudevents-batch+json"}, b"[]"),
                          ({"ce-specversion": "0.3", "ce-id": "1", "ce-source": "s",
                            "ce-type": "t"}, b"")):
        with pytest.raises(ValueError):
            from_http(headers, body)


@pytest.mark.parametrize(("flt", "expected"), [
    (None, True),
    ({}, True),
    ({"attributes": {}}, True),
    ({"attributes": {"source": APP, "type": "order.created", "eventtypeversion": "v1"}}, True),
    ({"attributes": {"type": "order.deleted"}}, False),
    ({"attributes": {"eventtypeversion": "v2"}}, False),
    ({"attributes": {"type": ""}}, True),  # empty: any value
    ({"attributes": {"subject": ""}}, True),  # a standard attribute always exists
    ({"attributes": {"subject": "x"}}, False),
    ({"attributes": {"heartbeat": ""}}, False),  # an absent extension never matches (v0.12)
    ({"attributes": {"source": "Commerce-Mock"}}, False),  # exact, case-sensitive
    ({"sourceAndType": {"source": APP, "type": ""}}, True),
    ({"sourceAndType": {"type": "order.deleted"}}, False),
])
def test_filter_as_knative_v012(flt: dict[str, Any] | None, expected: bool) -> None:
    event = new_event(APP, "order.created", {}, eventtypeversion="v1")
    trigger = {"spec": {"broker": "default"} | ({"filter": flt} if flt is not None else {})}
    assert matches(trigger, event) is expected


def test_fault_validation() -> None:
    with pytest.raises(ValueError, match="hop"):
        Fault("nowhere", "drop")
    with pytest.raises(ValueError, match="scoped by namespace"):
        Fault("event-service", "drop", namespace="stage")
    with pytest.raises(ValueError, match="ratio"):
        Fault("channel", "drop", ratio=2)
    assert Fault("broker-filter", "delay", delay_ms=5, trigger="t").to_json()["delay_ms"] == 5


async def test_hop_stop_and_restart_keep_the_port() -> None:
    emulator = Emulator(routes=Routes())
    async with emulator as emu, httpx.AsyncClient(trust_env=False) as client:
        port = emu.port("channel")
        await emu.inject("channel", "stop")
        with pytest.raises(httpx.ConnectError):
            await client.post(emu.channel_url(APP))
        await emu.clear_faults("channel")
        assert emu.port("channel") == port
        answer = await client.post(emu.channel_url(APP), headers=to_binary(
            new_event(APP, "x"))[0])
        assert answer.status_code == 202
        await asyncio.wait_for(emu.idle(), 5)


async def test_watcher_lists_again_after_a_watch_error() -> None:
    """A 410 in the watch stream: the Triggers are listed again, so one deleted in the gap
    stops being routed to (a plain re-watch would never tell)."""
    def trigger(name: str, version: str) -> dict[str, Any]:
        return {"apiVersion": "eventing.knative.dev/v1alpha1", "kind": "Trigger",
                "metadata": {"name": name, "namespace": "stage", "uid": name,
                             "resourceVersion": version},
                "spec": {"broker": "default", "subscriber": {"uri": f"http://{name}.stage"}}}

    def listing(items: list[dict[str, Any]], version: str) -> httpx2.Response:
        return httpx2.Response(200, json={"apiVersion": "v1", "kind": "List", "items": items,
                                          "metadata": {"resourceVersion": version}})

    gone = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 410,
            "reason": "Expired", "message": "too old resource version"}
    trigger_lists = [listing([trigger("a", "4"), trigger("b", "5")], "5"),
                     listing([trigger("a", "4"), trigger("c", "7")], "9")]
    trigger_watches = [[{"type": "ADDED", "object": trigger("c", "7")},
                        {"type": "ERROR", "object": gone}]]
    requests: list[str] = []
    hang = asyncio.Event()

    async def handle(request: httpx2.Request) -> httpx2.Response:
        watch = request.url.params.get("watch") == "true"
        requests.append(f"{'WATCH' if watch else 'LIST'} {request.url.path.split('/')[-1]}")
        if "subscriptions" in request.url.path:
            events: list[dict[str, Any]] = []
            if not watch:
                return listing([], "1")
        elif not watch:
            return trigger_lists.pop(0)
        else:
            events = trigger_watches.pop(0) if trigger_watches else []

        async def stream() -> AsyncIterator[bytes]:
            for event in events:
                yield json.dumps(event).encode() + b"\n"
            if not events:
                await hang.wait()

        return httpx2.Response(200, content=stream())

    config = KubeConfig.from_server("http://fake.invalid").get()
    config = config._replace(user=User())
    client = AsyncClient(config, transport=httpx2.MockTransport(handle), trust_env=False)
    routes = Routes()
    watcher = KubeWatcher(client, routes, retry_max=0.2)
    watcher.start()
    try:
        await watcher.wait_synced(5)
        await routes.wait_until("the re-list", lambda: not trigger_lists, 5)
        await routes.wait_until("b gone, c routed", lambda: [
            t.name for t in routes.broker_triggers("stage")] == ["a", "c"], 5)
        assert requests.count("LIST triggers") == 2
    finally:
        hang.set()
        await watcher.stop()
        await client.close()
