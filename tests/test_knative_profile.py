"""The knative-v1 profile on objects shaped as Knative v1.21's controllers write them.

Shapes and reasons: docs/reference/knative-v1-shapes.md (knative/eventing@v0.48.0, cited per
kind there). The same judgements on the real controllers' objects: tests/test_knative_real.py.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from eventmesh_health.analysis import analyse
from eventmesh_health.analysis.incremental import IncrementalAnalysis
from eventmesh_health.model import FlowReport, Health, MeshReport
from eventmesh_health.snapshot import Snapshot
from eventmesh_health.topology.knative1 import PROFILE

NOW = datetime(2026, 1, 28, 12, 0, tzinfo=UTC)
T0 = "2026-01-28T11:00:00Z"
NS = "demo"
SYSTEM = "knative-eventing"

# Healthy True conditions as v1.21 writes them, harmless reasons included (§1.12).
OIDC_OFF = {"type": "OIDCIdentityCreated", "status": "True",
            "reason": "authentication-oidc feature disabled"}
NO_DLS = {"type": "DeadLetterSinkResolved", "status": "True",
          "reason": "DeadLetterSinkNotConfigured", "message": "No dead letter sink is configured."}


def ready(*extra: dict[str, Any]) -> dict[str, Any]:
    conditions = [{"type": "Ready", "status": "True", "lastTransitionTime": T0}, *extra]
    return {"observedGeneration": 1, "conditions": conditions}


def obj(api_version: str, kind: str, name: str, namespace: str | None = NS,
        **rest: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "uid": f"uid-{kind}-{name}", "generation": 1,
                            "creationTimestamp": T0}
    if namespace is not None:
        meta["namespace"] = namespace
    meta.update(rest.pop("metadata", {}))
    return {"apiVersion": api_version, "kind": kind, "metadata": meta, **rest}


def owner(o: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": o["apiVersion"], "kind": o["kind"], "name": o["metadata"]["name"],
            "uid": o["metadata"]["uid"], "controller": True}


def deployment(name: str, available: bool = True) -> dict[str, Any]:
    status = {"observedGeneration": 1, "replicas": 1, "readyReplicas": int(available),
              "availableReplicas": int(available), "updatedReplicas": 1,
              "conditions": [{"type": "Available", "status": str(available),
                              "reason": "MinimumReplicasAvailable" if available
                              else "MinimumReplicasUnavailable"}]}
    return obj("apps/v1", "Deployment", name, SYSTEM, spec={"replicas": 1}, status=status)


def service(name: str, namespace: str, with_endpoints: bool = True) -> list[dict[str, Any]]:
    # 192.0.2.10: TEST-NET-1, a placeholder nothing ever dials.
    subsets = [{"addresses": [{"ip": "192.0.2.10"}], "ports": [{"port": 8080}]}]
    return [obj("v1", "Service", name, namespace, spec={"ports": [{"port": 80}]}),
            obj("v1", "Endpoints", name, namespace, subsets=subsets if with_endpoints else [])]


def system() -> list[dict[str, Any]]:
    """knative/eventing@v0.48.0 config/: the Deployments and the Services in front of them."""
    objects = [deployment(n) for n in (
        "eventing-controller", "eventing-webhook", "imc-controller", "imc-dispatcher",
        "mt-broker-controller", "mt-broker-ingress", "mt-broker-filter")]
    for name in ("eventing-webhook", "imc-dispatcher", "broker-ingress", "broker-filter"):
        objects += service(name, SYSTEM)
    return objects


def broker_flow(broker: str = "default", trigger: str = "order-created",
                subscriber: str = "order-processor") -> list[dict[str, Any]]:
    """A channel-based Broker, its trigger channel and one Trigger with its Subscription,
    as mt-broker-controller and imc-controller write them (§1.1, 1.2, 1.4)."""
    b = obj("eventing.knative.dev/v1", "Broker", broker,
            metadata={"annotations": {"eventing.knative.dev/broker.class":
                                      "MTChannelBasedBroker"}},
            status=ready(*({"type": t, "status": "True"} for t in (
                "Addressable", "EventPoliciesReady", "FilterReady", "IngressReady",
                "TriggerChannelReady")), {**NO_DLS, "severity": "Info"}))
    imc = obj("messaging.knative.dev/v1", "InMemoryChannel", f"{broker}-kne-trigger",
              metadata={"ownerReferences": [owner(b)]},
              # DispatcherReady is outside the v1.21 IMC living set: written with severity Info
              status=ready(NO_DLS, {"type": "DispatcherReady", "status": "False",
                                    "severity": "Info", "reason": "DispatcherDeploymentFalse"}))
    t = obj("eventing.knative.dev/v1", "Trigger", trigger,
            metadata={"labels": {"eventing.knative.dev/broker": broker}},
            spec={"broker": broker, "filter": {"attributes": {"type": "order.created"}},
                  "subscriber": {"ref": {"apiVersion": "v1", "kind": "Service",
                                         "name": subscriber, "namespace": NS}}},
            status=ready(NO_DLS, OIDC_OFF))
    sub = obj("messaging.knative.dev/v1", "Subscription", f"{broker}-{trigger}-x",
              metadata={"ownerReferences": [owner(t)]},
              spec={"channel": {"apiVersion": "messaging.knative.dev/v1",
                                "kind": "InMemoryChannel", "name": f"{broker}-kne-trigger"}},
              status=ready(OIDC_OFF))
    return [b, imc, t, sub, *service(subscriber, NS)]


# As `check` reads a cluster: every kind listed, so a missing object is NotFound.
COLLECTED = frozenset(k.key for k in PROFILE.kinds)


def check(objects: list[dict[str, Any]]) -> MeshReport:
    return analyse(Snapshot(objects=objects, taken_at=NOW, collected=COLLECTED), PROFILE)


def flow(report: MeshReport, kind: str, name: str) -> FlowReport:
    return next(f for f in report.flows if (f.kind, f.name) == (kind, name))


def roots(f: FlowReport) -> list[tuple[str, str | None, str]]:
    return [(x.object.kind, x.object.name, x.reason) for x in f.findings if x.root_cause]


def without(objects: list[dict[str, Any]], kind: str, name: str) -> list[dict[str, Any]]:
    return [o for o in objects if (o["kind"], o["metadata"]["name"]) != (kind, name)]


# --- healthy ---------------------------------------------------------------------------------


def test_a_healthy_broker_flow_with_harmless_reasons_is_healthy() -> None:
    report = check([*system(), *broker_flow()])
    assert report.health is Health.HEALTHY, report.model_dump_json(indent=1)
    assert [(f.flow, f.kind, f.namespace, f.name) for f in report.flows] == [
        ("broker", "Broker", NS, "default")]
    assert report.applications == [] and report.flows[0].findings == []


def test_a_channel_flow_and_a_source_flow() -> None:
    channel = obj("messaging.knative.dev/v1", "Channel", "orders",
                  spec={"channelTemplate": {"apiVersion": "messaging.knative.dev/v1",
                                            "kind": "InMemoryChannel"}},
                  status={**ready(NO_DLS), "channel": {
                      "apiVersion": "messaging.knative.dev/v1", "kind": "InMemoryChannel",
                      "name": "orders"}})
    imc = obj("messaging.knative.dev/v1", "InMemoryChannel", "orders",
              metadata={"ownerReferences": [owner(channel)]}, status=ready(NO_DLS))
    sub = obj("messaging.knative.dev/v1", "Subscription", "orders-to-broker",
              spec={"channel": {"apiVersion": "messaging.knative.dev/v1", "kind": "Channel",
                                "name": "orders"},
                    "subscriber": {"ref": {"apiVersion": "eventing.knative.dev/v1",
                                           "kind": "Broker", "name": "default"}}},
              status=ready(OIDC_OFF))
    ping = obj("sources.knative.dev/v1", "PingSource", "tick",
               spec={"schedule": "* * * * *", "sink": {"ref": {
                   "apiVersion": "messaging.knative.dev/v1", "kind": "Channel",
                   "name": "orders"}}}, status=ready(OIDC_OFF))
    objects = [*system(), deployment("pingsource-mt-adapter"), *broker_flow(), channel, imc,
               sub, ping]
    report = check(objects)
    assert report.health is Health.HEALTHY, report.model_dump_json(indent=1)
    assert [(f.flow, f.name) for f in report.flows] == [
        ("broker", "default"), ("channel", "orders"), ("source", "tick")]
    # The source's sink is judged in its flow: a Channel that is not Ready is the cause.
    broken = copy.deepcopy(objects)
    broken[broken.index(channel)]["status"] = {
        "observedGeneration": 1, "conditions": [
            {"type": "Ready", "status": "False", "reason": "BackingChannelFailed",
             "message": "channel is not ready"},
            {"type": "BackingChannelReady", "status": "False",
             "reason": "BackingChannelFailed", "message": "channel is not ready"}]}
    report = check(broken)
    assert roots(flow(report, "PingSource", "tick")) == [
        ("Channel", "orders", "BackingChannelFailed")]


# --- the faults of the issue, as the controllers report them ------------------------------------


def test_a_trigger_whose_broker_is_gone_names_the_broker() -> None:
    # BrokerDoesNotExist when the Broker went after the Trigger was reconciled (§1.2).
    objects = without([*system(), *broker_flow()], "Broker", "default")
    trigger = next(o for o in objects if o["kind"] == "Trigger")
    trigger["status"]["conditions"] = [
        {"type": "Ready", "status": "False", "reason": "BrokerDoesNotExist",
         "message": 'Broker "default" does not exist'},
        {"type": "BrokerReady", "status": "False", "reason": "BrokerDoesNotExist",
         "message": 'Broker "default" does not exist'}]
    report = check(objects)
    gone = flow(report, "Broker", "default")
    assert gone.health is Health.UNHEALTHY
    assert roots(gone) == [("Broker", "default", "NotFound")]
    symptom = next(x for x in gone.findings if x.object.kind == "Trigger")
    assert symptom.reason == "BrokerDoesNotExist" and symptom.caused_by is not None
    assert symptom.caused_by.kind == "Broker"


def test_a_trigger_made_before_its_broker_has_no_status_and_names_the_broker() -> None:
    objects = without([*system(), *broker_flow()], "Broker", "default")
    next(o for o in objects if o["kind"] == "Trigger").pop("status")
    assert roots(flow(check(objects), "Broker", "default")) == [("Broker", "default",
                                                                 "NotFound")]


def test_a_dead_dispatcher_is_the_one_root_cause_while_channels_stay_ready() -> None:
    objects = [o for o in system() if o["metadata"]["name"] != "imc-dispatcher"
               or o["kind"] != "Deployment"]
    objects += [deployment("imc-dispatcher", available=False), *broker_flow()]
    report = check(objects)
    f = flow(report, "Broker", "default")
    assert f.health is Health.UNHEALTHY
    assert roots(f) == [("Deployment", "imc-dispatcher", "DeploymentUnavailable")]
    assert not any(x.object.kind in ("InMemoryChannel", "Subscription", "Trigger")
                   for x in f.findings)


def test_dispatcher_endpoints_emptied_makes_the_channels_symptoms_of_the_dispatcher() -> None:
    objects = [o for o in system() if o["metadata"]["name"] != "imc-dispatcher"]
    objects += [deployment("imc-dispatcher"), *service("imc-dispatcher", SYSTEM, False)]
    flow_objects = broker_flow()
    imc = next(o for o in flow_objects if o["kind"] == "InMemoryChannel")
    imc["status"]["conditions"] = [
        {"type": "Ready", "status": "False", "reason": "DispatcherEndpointsNotReady",
         "message": 'There are no endpoints ready for Dispatcher "imc-dispatcher"'},
        {"type": "EndpointsReady", "status": "False", "reason": "DispatcherEndpointsNotReady",
         "message": 'There are no endpoints ready for Dispatcher "imc-dispatcher"'}]
    f = flow(check([*objects, *flow_objects]), "Broker", "default")
    assert roots(f) == [("Service", "imc-dispatcher", "NoReadyEndpoints")]
    channel = next(x for x in f.findings if x.object.kind == "InMemoryChannel")
    assert not channel.root_cause and channel.caused_by is not None
    assert channel.caused_by.name == "imc-dispatcher"


def test_a_deleted_subscriber_is_the_root_cause_even_while_the_trigger_is_ready() -> None:
    objects = without([*system(), *broker_flow()], "Service", "order-processor")
    f = flow(check(objects), "Broker", "default")
    assert roots(f) == [("Service", "order-processor", "NotFound")]
    # The Trigger's own SubscriberResolved failure (v1.21 re-resolves it) is its symptom.
    trigger = next(o for o in objects if o["kind"] == "Trigger")
    trigger["status"]["conditions"] = [
        {"type": "Ready", "status": "False", "reason": "Unable to get the Subscriber's URI",
         "message": 'failed to get object demo/order-processor: services "order-processor" '
                    "not found"}]
    f = flow(check(objects), "Broker", "default")
    assert roots(f) == [("Service", "order-processor", "NotFound")]


def test_a_subscriber_with_no_endpoint_is_the_root_cause() -> None:
    objects = [*system(), *without(broker_flow(), "Endpoints", "order-processor"),
               service("order-processor", NS, with_endpoints=False)[1]]
    assert roots(flow(check(objects), "Broker", "default")) == [
        ("Service", "order-processor", "NoReadyEndpoints")]


def test_broker_classes_other_than_channel_based() -> None:
    kafka = obj("eventing.knative.dev/v1", "Broker", "k",
                metadata={"annotations": {"eventing.knative.dev/broker.class": "Kafka"}},
                status=ready(*({"type": t, "status": "True"} for t in (
                    "Addressable", "DataPlaneAvailable", "ConfigMapUpdated", "ConfigParsed",
                    "ProbeSucceeded", "EventPoliciesReady")),
                    {"type": "TopicReady", "status": "True",
                     "reason": "Topic knative-broker-demo-k created"}))
    odd = obj("eventing.knative.dev/v1", "Broker", "r",
              metadata={"annotations": {"eventing.knative.dev/broker.class": "RabbitMQBroker"}},
              status=ready())
    report = check([*system(), kafka, odd])
    # A Kafka Broker has no trigger channel to miss.
    assert flow(report, "Broker", "k").health is Health.HEALTHY
    unknown = flow(report, "Broker", "r")
    assert unknown.health is Health.UNKNOWN
    assert roots(unknown) == [("Broker", "r", "ClassNotJudged")]
    assert "RabbitMQBroker" in unknown.findings[0].message


def test_a_trigger_filtering_on_a_type_nothing_sends_receives_nothing() -> None:
    # EventTypes as the broker ingress auto-creates them (pkg/eventtype/eventtypes.go), a
    # PingSource with the ceAttributes eventing-controller writes.
    def event_type(name: str, type_: str) -> dict[str, Any]:
        return obj("eventing.knative.dev/v1beta3", "EventType", name, spec={
            "reference": {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker",
                          "name": "default", "namespace": NS},
            "attributes": [{"name": "type", "value": type_, "required": True},
                           {"name": "source", "value": "/shop", "required": True}]},
            status=ready())
    ping = obj("sources.knative.dev/v1", "PingSource", "tick", spec={
        "schedule": "* * * * *", "sink": {"ref": {"apiVersion": "eventing.knative.dev/v1",
                                                  "kind": "Broker", "name": "default"}}},
        status={**ready(OIDC_OFF), "ceAttributes": [
            {"type": "dev.knative.sources.ping", "source": "/apis/v1/namespaces/demo/"
                                                           "pingsources/tick"}]})
    base = [*system(), deployment("pingsource-mt-adapter"), *broker_flow()]
    # Nothing known to reach the Broker: no judgement (an application may post anything).
    assert check(base).health is Health.HEALTHY
    shipped = event_type("et-shipped", "order.shipped")
    report = check([*base, shipped, ping])
    f = flow(report, "Broker", "default")
    assert roots(f) == [("Trigger", "order-created", "FilterMatchesNoKnownType")]
    assert f.health is Health.DEGRADED
    message = f.findings[0].message
    assert "'order.created'" in message and "dev.knative.sources.ping, order.shipped" in message
    # Once the type is known to be sent, the Trigger is fine again.
    assert check([*base, shipped, event_type("et-created", "order.created")]).health is (
        Health.HEALTHY)
    # An EventType of another Broker says nothing about this one.
    other = event_type("et-other", "order.shipped")
    other["spec"]["reference"]["name"] = "other"
    assert check([*base, other]).health is Health.HEALTHY


# --- serve's incremental analysis agrees with check --------------------------------------------


def _steps() -> Iterator[tuple[str, list[dict[str, Any]], list[dict[str, Any]]]]:
    base = [*system(), *broker_flow()]
    broker = next(o for o in base if o["kind"] == "Broker")
    subscriber = next(o for o in base if o["kind"] == "Service" and o["metadata"]["namespace"]
                      == NS)
    yield "subscriber deleted", [], [subscriber]
    yield "subscriber back", [subscriber], []
    yield "broker deleted", [], [broker]
    yield "broker back", [broker], []
    second = broker_flow("other", "t2", "s2")
    yield "a second flow", second, []
    yield "dispatcher down", [deployment("imc-dispatcher", available=False)], []


def test_incremental_analysis_matches_a_full_analysis_at_every_step() -> None:
    objects = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o
               for o in [*system(), *broker_flow()]}
    incremental = IncrementalAnalysis(
        Snapshot(objects=list(objects.values()), taken_at=NOW, collected=COLLECTED), PROFILE)
    for step, upserts, deletions in _steps():
        for o in deletions:
            objects.pop((o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]))
        for o in upserts:
            objects[(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"])] = o
        incremental.apply(upserts, deletions, NOW)
        full = check(list(objects.values()))
        got = incremental.report()
        assert got.flows == full.flows, step
        assert got.health == full.health, step


@pytest.mark.parametrize("damage", ["spec", "broker", "ref"])
def test_malformed_references_are_unknown_never_healthy(damage: str) -> None:
    objects = [*system(), *broker_flow()]
    trigger = next(o for o in objects if o["kind"] == "Trigger")
    if damage == "spec":
        trigger["spec"] = "not a map"
    elif damage == "broker":
        trigger["spec"]["broker"] = {"name": "default"}
    else:
        trigger["spec"]["subscriber"]["ref"] = ["not", "a", "map"]
    report = check(objects)
    assert report.health is not Health.HEALTHY, damage


def test_a_dump_keeps_the_broker_class_and_no_other_annotation() -> None:
    from eventmesh_health.sources.slim import slim
    from eventmesh_health.topology.knative1 import BROKER

    broker = obj("eventing.knative.dev/v1", "Broker", "default", metadata={"annotations": {
        "eventing.knative.dev/broker.class": "Kafka",
        "kubectl.kubernetes.io/last-applied-configuration": '{"secret": "s3cr3t"}'}})
    kept = slim(broker, BROKER.fields, BROKER.annotations)
    assert kept["metadata"]["annotations"] == {"eventing.knative.dev/broker.class": "Kafka"}
