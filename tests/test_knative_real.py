"""What the REAL Knative Eventing v1 (v0.48.0 = Knative 1.21) does, healthy and under faults.

These tests characterise the upstream components that tests/knative runs (reconcilers, IMC
dispatcher, broker ingress and filter); the data plane's Deployment status and Endpoints are
test-written (see tests/knative/mesh.py). Each assertion is a fact about Knative that the
product's rules and the emulator must agree with; when a Knative upgrade changes one, the test
says which.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.knative.common import conditions, describe
from tests.knative.mesh import SYSTEM_NAMESPACE, KnativeMesh, is_ready
from tests.knative.receiver import Receiver

pytestmark = pytest.mark.knative

READY_TIMEOUT = 30.0
DELIVERY_TIMEOUT = 15.0
ORDER_CREATED = "order.created"


def service_ref(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "name": name}


@pytest.fixture
def subscriber(knative_mesh: KnativeMesh, knative_namespace: str) -> Iterator[Receiver]:
    """A receiver at the cluster name ``subscriber.<ns>`` (Service + Endpoints → its port)."""
    with Receiver("subscriber") as rcv:
        knative_mesh.expose(knative_namespace, "subscriber", rcv.port)
        yield rcv


def broker_and_trigger(mesh: KnativeMesh, ns: str, *, trigger: str = "orders",
                       filter_attributes: dict[str, str] | None = None,
                       delivery: dict[str, Any] | None = None) -> None:
    """Broker ``default`` + a Trigger to Service ``subscriber``, both waited Ready."""
    mesh.create_broker(ns)
    mesh.create_trigger(ns, trigger, "default", subscriber_ref=service_ref("subscriber"),
                        filter_attributes=filter_attributes
                        if filter_attributes is not None else {"type": ORDER_CREATED},
                        delivery=delivery)
    mesh.wait_ready("Broker", ns, "default", READY_TIMEOUT)
    mesh.wait_ready("Trigger", ns, trigger, READY_TIMEOUT)
    # Trigger Ready comes before the filter's informer has its final state: an event sent at
    # once was answered 404 by the filter. Settled = the dispatcher acknowledged too.
    mesh.wait_settled(ns, READY_TIMEOUT)


def filter_hops(mesh: KnativeMesh, ns: str, trigger: str, since: int) -> list[Any]:
    """Requests the proxy completed to the broker filter for ``trigger`` since log index."""
    assert mesh.proxy is not None
    prefix = f"http://broker-filter.{SYSTEM_NAMESPACE}.svc.cluster.local/triggers/{ns}/{trigger}/"
    return [f for f in mesh.proxy.forwarded(since) if f.url.startswith(prefix)]


def observed(obj: dict[str, Any]) -> bool:
    """The controller has seen the object's current generation."""
    return bool((obj.get("status") or {}).get("observedGeneration")
                == obj["metadata"]["generation"])


# -- healthy ------------------------------------------------------------------------------


def test_broker_trigger_deliver_matching_events_only(
        knative_mesh: KnativeMesh, knative_namespace: str, subscriber: Receiver) -> None:
    mesh, ns = knative_mesh, knative_namespace
    broker_and_trigger(mesh, ns)
    broker = mesh.get("Broker", ns, "default")
    assert broker["status"]["address"]["url"] == (
        f"http://broker-ingress.{SYSTEM_NAMESPACE}.svc.cluster.local/{ns}/default")
    assert mesh.proxy is not None
    mark = len(mesh.proxy.log)

    other_id, resp = mesh.send_event(mesh.ingress_url(ns, "default"), "order.cancelled")
    assert resp.status_code == 202, resp.text
    order_id, resp = mesh.send_event(mesh.ingress_url(ns, "default"), ORDER_CREATED)
    assert resp.status_code == 202, resp.text

    got = subscriber.wait_event(order_id, DELIVERY_TIMEOUT)
    assert got.ce_type == ORDER_CREATED
    assert got.headers["host"] == f"subscriber.{ns}.svc.cluster.local"
    # The filter answers the dispatcher only after it has delivered (or dropped) an event: once
    # it answered both, a delivery of the non-matching one would already be recorded.
    subscriber.wait_for(
        lambda _: len([h for h in filter_hops(mesh, ns, "orders", mark) if h.status < 300]) >= 2,
        DELIVERY_TIMEOUT, "two answers from the broker filter")
    assert subscriber.with_id(other_id) == [], "the filter let a non-matching type through"


def test_channel_subscription_deliver(
        knative_mesh: KnativeMesh, knative_namespace: str, subscriber: Receiver) -> None:
    mesh, ns = knative_mesh, knative_namespace
    mesh.create_channel(ns, "orders")
    mesh.create_subscription(ns, "to-subscriber", "orders",
                             subscriber_ref=service_ref("subscriber"))
    channel = mesh.wait_ready("Channel", ns, "orders", READY_TIMEOUT)
    mesh.wait_ready("InMemoryChannel", ns, "orders", READY_TIMEOUT)
    mesh.wait_ready("Subscription", ns, "to-subscriber", READY_TIMEOUT)
    # Subscription Ready comes before the dispatcher has the subscriber: an event sent then is
    # accepted (202) and fanned out to nobody. Settled = the dispatcher acknowledged it.
    mesh.wait_settled(ns, READY_TIMEOUT)
    assert channel["status"]["address"]["url"] == (
        f"http://orders-kn-channel.{ns}.svc.cluster.local")

    ce_id, resp = mesh.send_event(mesh.channel_url(ns, "orders"), ORDER_CREATED)
    assert resp.status_code == 202, resp.text
    assert subscriber.wait_event(ce_id, DELIVERY_TIMEOUT).ce_type == ORDER_CREATED

    # The same channel by its cluster URL, routed by Host as the Knative processes send it.
    ce_id, resp = mesh.send_event(channel["status"]["address"]["url"], ORDER_CREATED,
                                  proxy=mesh.proxy_url)
    assert resp.status_code == 202, resp.text
    subscriber.wait_event(ce_id, DELIVERY_TIMEOUT)


def test_channel_to_broker_chain_delivers(
        knative_mesh: KnativeMesh, knative_namespace: str, subscriber: Receiver) -> None:
    """Kyma's shape: application Channel → Subscription → broker ingress → Trigger."""
    mesh, ns = knative_mesh, knative_namespace
    broker_and_trigger(mesh, ns)
    mesh.create_channel(ns, "app")
    mesh.create_subscription(ns, "app-to-broker", "app", subscriber_ref={
        "apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": "default"})
    mesh.wait_ready("Subscription", ns, "app-to-broker", READY_TIMEOUT)
    mesh.wait_settled(ns, READY_TIMEOUT)  # the dispatcher has the subscriber (see above)
    ce_id, resp = mesh.send_event(mesh.channel_url(ns, "app"), ORDER_CREATED)
    assert resp.status_code == 202, resp.text
    got = subscriber.wait_event(ce_id, DELIVERY_TIMEOUT)
    assert got.headers["host"] == f"subscriber.{ns}.svc.cluster.local"


# -- faults -------------------------------------------------------------------------------


def test_dispatcher_killed_ingress_answers_500_while_everything_stays_ready(
        knative_mesh: KnativeMesh, knative_namespace: str, subscriber: Receiver) -> None:
    """The field failure "control plane green, data plane broken", for real."""
    mesh, ns = knative_mesh, knative_namespace
    broker_and_trigger(mesh, ns)
    mesh.create_channel(ns, "app")
    mesh.create_subscription(ns, "app-sub", "app", subscriber_ref=service_ref("subscriber"))
    mesh.wait_settled(ns, READY_TIMEOUT)

    mesh.stop_dispatcher()
    _, resp = mesh.send_event(mesh.ingress_url(ns, "default"), ORDER_CREATED)
    assert resp.status_code == 500, (resp.status_code, resp.text)

    # Nothing tells the control plane: no reconciler looks at the dispatcher process, and its
    # Deployment status and Endpoints are as they were (as in the seconds before kubelet and
    # the endpoints controller notice). Everything is (still, or again after a transient
    # Unknown of the Subscription seen once in a few runs) Ready and acknowledged.
    mesh.wait_settled(ns, READY_TIMEOUT)
    for kind, name in [("Broker", "default"), ("Trigger", "orders"), ("Channel", "app"),
                       ("Subscription", "app-sub"), ("InMemoryChannel", "app"),
                       ("InMemoryChannel", "default-kne-trigger")]:
        obj = mesh.get(kind, ns, name)
        assert is_ready(obj), describe(obj)
    _, resp = mesh.send_event(mesh.ingress_url(ns, "default"), ORDER_CREATED)
    assert resp.status_code == 500, (resp.status_code, resp.text)

    # But any change to a Subscription needs the dispatcher to acknowledge its new generation
    # in the IMC's status.subscribers: with none running, the Trigger turns not Ready.
    mesh.patch_spec("Trigger", ns, "orders", {"delivery": {"retry": 1}})
    # Seen: False (NotSubscribed), Unknown (SubscriptionNotConfigured) or Unknown
    # (SubscriptionNotMarkedReadyByChannel), depending on which reconcile wrote last.
    trigger = mesh.wait_until("Trigger", ns, "orders", lambda o: observed(o) and not is_ready(o),
                              READY_TIMEOUT, "Trigger not Ready")
    assert conditions(trigger)["SubscriptionReady"][0] != "True", describe(trigger)
    assert is_ready(mesh.get("Broker", ns, "default"))


def test_dispatcher_restarted_delivers_again(
        knative_mesh: KnativeMesh, knative_namespace: str, subscriber: Receiver) -> None:
    mesh, ns = knative_mesh, knative_namespace
    broker_and_trigger(mesh, ns)
    mesh.stop_dispatcher()
    mesh.start_dispatcher()
    # The new dispatcher must sync its informers before it routes; the ingress answers 500
    # (trigger channel unknown to it) until then. Wait on the first accepted event.
    ce_id = ""

    def accepted(_: object) -> bool:
        nonlocal ce_id
        ce_id, resp = mesh.send_event(mesh.ingress_url(ns, "default"), ORDER_CREATED)
        return resp.status_code == 202

    subscriber.wait_for(accepted, READY_TIMEOUT, "event accepted by the restarted dispatcher")
    subscriber.wait_event(ce_id, DELIVERY_TIMEOUT)


def test_dispatcher_endpoints_emptied_fail_channels_but_not_broker(
        knative_mesh: KnativeMesh, knative_namespace: str, subscriber: Receiver) -> None:
    mesh, ns = knative_mesh, knative_namespace
    broker_and_trigger(mesh, ns)
    mesh.create_channel(ns, "app")
    mesh.wait_ready("Channel", ns, "app", READY_TIMEOUT)

    mesh.set_endpoints("imc-dispatcher", False)
    for imc in ("app", "default-kne-trigger"):
        obj = mesh.wait_condition("InMemoryChannel", ns, imc, "Ready", "False",
                                  "DispatcherEndpointsNotReady", READY_TIMEOUT)
        assert conditions(obj)["EndpointsReady"][0] == "False", describe(obj)
    obj = mesh.wait_condition("Channel", ns, "app", "Ready", "False", timeout=READY_TIMEOUT)
    assert conditions(obj)["BackingChannelReady"][0] == "False", describe(obj)
    # The MT Broker's TriggerChannelReady only checks that its channel has an address.
    mesh.patch_spec("Broker", ns, "default", {"delivery": {"retry": 1}})
    broker = mesh.wait_until("Broker", ns, "default", observed, READY_TIMEOUT, "observed")
    assert is_ready(broker), describe(broker)
    trigger = mesh.get("Trigger", ns, "orders")
    assert is_ready(trigger), describe(trigger)


def test_broker_filter_endpoints_deleted_fail_the_broker(
        knative_mesh: KnativeMesh, knative_namespace: str, subscriber: Receiver) -> None:
    mesh, ns = knative_mesh, knative_namespace
    broker_and_trigger(mesh, ns)
    mesh.delete_endpoints("broker-filter")
    broker = mesh.wait_condition("Broker", ns, "default", "FilterReady", "False", "ServiceFailure",
                                 READY_TIMEOUT)
    assert conditions(broker)["Ready"][0] == "False", describe(broker)
    assert 'endpoints "broker-filter" not found' in str(broker["status"]["conditions"])


def test_subscriber_503_is_retried_then_dead_lettered(
        knative_mesh: KnativeMesh, knative_namespace: str, subscriber: Receiver) -> None:
    mesh, ns = knative_mesh, knative_namespace
    subscriber.status = 503
    with Receiver("dead-letters") as dls:
        mesh.expose(ns, "dls", dls.port)
        broker_and_trigger(mesh, ns, delivery={
            "retry": 2, "backoffPolicy": "linear", "backoffDelay": "PT0.1S",
            "deadLetterSink": {"ref": service_ref("dls")}})
        ce_id, resp = mesh.send_event(mesh.ingress_url(ns, "default"), ORDER_CREATED)
        assert resp.status_code == 202, resp.text
        dead = dls.wait_event(ce_id, DELIVERY_TIMEOUT)
    assert dead.headers["ce-knativeerrorcode"] == "503"
    assert dead.headers["ce-knativeerrordest"] == f"http://subscriber.{ns}.svc.cluster.local"
    assert len(subscriber.with_id(ce_id)) == 3  # the first attempt + retry: 2
    assert is_ready(mesh.get("Trigger", ns, "orders"))


def test_subscriber_service_deleted_sender_gets_500_trigger_stays_ready(
        knative_mesh: KnativeMesh, knative_namespace: str, subscriber: Receiver) -> None:
    mesh, ns = knative_mesh, knative_namespace
    broker_and_trigger(mesh, ns)
    assert mesh.proxy is not None
    mark = len(mesh.proxy.log)
    mesh.unexpose(ns, "subscriber")
    # Delivery is synchronous hop by hop (ingress → dispatcher → filter → subscriber) and no
    # retry is configured: the sender gets the failure, as 500.
    _, resp = mesh.send_event(mesh.ingress_url(ns, "default"), ORDER_CREATED)
    assert resp.status_code == 500, (resp.status_code, resp.text)
    # The filter tried the subscriber's cluster name and got nowhere (proxy: no such Service).
    url = f"http://subscriber.{ns}.svc.cluster.local/"
    subscriber.wait_for(lambda _: any(f.url == url and f.status == 502
                                      for f in mesh.proxy.forwarded(mark)),  # type: ignore[union-attr]
                        DELIVERY_TIMEOUT, "a failed attempt at the deleted subscriber")
    assert subscriber.requests == []
    trigger = mesh.get("Trigger", ns, "orders")
    assert is_ready(trigger), describe(trigger)  # nothing re-resolves the subscriber


def test_subscriber_down_sender_gets_500_trigger_stays_ready(
        knative_mesh: KnativeMesh, knative_namespace: str, subscriber: Receiver) -> None:
    mesh, ns = knative_mesh, knative_namespace
    broker_and_trigger(mesh, ns)
    assert mesh.proxy is not None
    mark = len(mesh.proxy.log)
    subscriber.stop()
    _, resp = mesh.send_event(mesh.ingress_url(ns, "default"), ORDER_CREATED)
    assert resp.status_code == 500, (resp.status_code, resp.text)  # synchronous, no retry
    url = f"http://subscriber.{ns}.svc.cluster.local/"
    subscriber.wait_for(lambda _: any(f.url == url and f.status == 502
                                      for f in mesh.proxy.forwarded(mark)),  # type: ignore[union-attr]
                        DELIVERY_TIMEOUT, "a refused attempt at the stopped subscriber")
    trigger = mesh.get("Trigger", ns, "orders")
    assert is_ready(trigger), describe(trigger)


def test_broker_deleted_fails_its_trigger_and_ingress_answers_404(
        knative_mesh: KnativeMesh, knative_namespace: str, subscriber: Receiver) -> None:
    mesh, ns = knative_mesh, knative_namespace
    broker_and_trigger(mesh, ns)
    mesh.delete("Broker", ns, "default")
    trigger = mesh.wait_condition("Trigger", ns, "orders", "BrokerReady", "False",
                                  timeout=READY_TIMEOUT)
    assert conditions(trigger)["Ready"][0] == "False", describe(trigger)
    _, resp = mesh.send_event(mesh.ingress_url(ns, "default"), ORDER_CREATED)
    assert resp.status_code == 404, (resp.status_code, resp.text)


def test_trigger_filter_matching_nothing_is_ready_and_delivers_nothing(
        knative_mesh: KnativeMesh, knative_namespace: str, subscriber: Receiver) -> None:
    mesh, ns = knative_mesh, knative_namespace
    broker_and_trigger(mesh, ns, filter_attributes={"type": "no.such.type"})
    assert mesh.proxy is not None
    mark = len(mesh.proxy.log)
    _, resp = mesh.send_event(mesh.ingress_url(ns, "default"), ORDER_CREATED)
    assert resp.status_code == 202, resp.text
    subscriber.wait_for(lambda _: bool(filter_hops(mesh, ns, "orders", mark)),
                        DELIVERY_TIMEOUT, "the broker filter's answer")
    assert subscriber.requests == []
