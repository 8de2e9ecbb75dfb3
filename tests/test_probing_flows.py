"""Probing Knative v1 flows, without a cluster: which flows qualify, their heartbeat objects
(from the profile's DataPlane), their reconciliation, and how verdicts land in `flows[]`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from eventmesh_health.model import (
    Finding,
    FlowReport,
    Health,
    MeshReport,
    ObjectRef,
    Severity,
    SystemReport,
)
from eventmesh_health.probing.flows import (
    FlowSubscribers,
    desired_subscriber,
    flow_key,
    flow_targets,
)
from eventmesh_health.probing.health import DataPlaneVerdict
from eventmesh_health.probing.runner import merge_verdicts
from eventmesh_health.probing.triggers import FLOW_LABEL, HEARTBEAT_LABEL, TriggerConfig
from eventmesh_health.topology.knative1 import BROKER_CLASS, DATA_PLANE

READY = {"conditions": [{"type": "Ready", "status": "True"}]}
NS = "shop"
CONFIG = TriggerConfig("http://r/heartbeat/{namespace}/{application}",
                       "http://r/deadletter/{namespace}/{application}")


def obj(kind: str, name: str, *, ready: bool = True, cls: str | None = "MTChannelBasedBroker",
        opt_out: bool = False, url: str | None = "http://addr") -> dict[str, Any]:
    annotations = {}
    if kind == "Broker" and cls:
        annotations[BROKER_CLASS] = cls
    if opt_out:
        annotations["eventmesh-health.kyma-project.io/probe"] = "false"
    status: dict[str, Any] = dict(READY) if ready else {}
    if url:
        status["address"] = {"url": url}
    return {"kind": kind, "metadata": {"name": name, "namespace": NS,
                                       "annotations": annotations}, "status": status}


class Index:
    def __init__(self, *objects: dict[str, Any]) -> None:
        self.objects = {(o["kind"], o["metadata"]["name"]): o for o in objects}

    def get(self, key: str, namespace: str | None, name: str) -> Any:
        return self.objects.get((key.partition(".")[0], name))

    def of_kind(self, key: str) -> list[Any]:
        return []


def report(*flows: tuple[str, str, str, Health]) -> MeshReport:
    return MeshReport(healthy=True, health=Health.HEALTHY,
                      system=SystemReport(health=Health.HEALTHY),
                      flows=[FlowReport(flow=f, kind=k, namespace=NS, name=n, health=h)
                             for f, k, n, h in flows])


def test_which_flows_are_probed() -> None:
    rep = report(("broker", "Broker", "default", Health.HEALTHY),
                 ("broker", "Broker", "kafka", Health.HEALTHY),
                 ("broker", "Broker", "other-class", Health.HEALTHY),
                 ("broker", "Broker", "not-ready", Health.PROGRESSING),
                 ("channel", "Channel", "orders", Health.HEALTHY),
                 ("channel", "Channel", "quiet", Health.HEALTHY),
                 ("channel", "InMemoryChannel", "imc", Health.HEALTHY),
                 ("source", "PingSource", "ping", Health.HEALTHY))
    index = Index(obj("Broker", "default"), obj("Broker", "kafka", cls="Kafka"),
                  obj("Broker", "other-class", cls="Something"),
                  obj("Broker", "not-ready", ready=False), obj("Channel", "orders"),
                  obj("Channel", "quiet", opt_out=True), obj("InMemoryChannel", "imc"),
                  obj("PingSource", "ping"))
    targets = flow_targets(rep, index, DATA_PLANE)
    assert sorted(targets) == sorted(flow_key(f, NS, n) for f, n in (
        ("broker", "default"), ("broker", "kafka"), ("channel", "orders"), ("channel", "imc")))
    assert targets[flow_key("broker", NS, "default")].url == "http://addr"
    templated = flow_targets(rep, index, DATA_PLANE, {"channel": "http://x/{namespace}/{name}"})
    assert templated[flow_key("channel", NS, "orders")].url == "http://x/shop/orders"
    assert templated[flow_key("broker", NS, "default")].url == "http://addr"


def test_heartbeat_objects_come_from_the_data_plane() -> None:
    rep = report(("broker", "Broker", "default", Health.HEALTHY),
                 ("channel", "Channel", "orders", Health.HEALTHY))
    targets = flow_targets(rep, Index(obj("Broker", "default"), obj("Channel", "orders")),
                           DATA_PLANE)
    trigger = desired_subscriber(CONFIG, targets[flow_key("broker", NS, "default")], "t" * 24)
    key = "broker.shop.default"
    assert trigger["apiVersion"] == "eventing.knative.dev/v1" and trigger["kind"] == "Trigger"
    assert trigger["metadata"]["labels"][HEARTBEAT_LABEL] == "true"
    assert trigger["metadata"]["labels"][FLOW_LABEL] == "broker"
    assert trigger["spec"] == {
        "broker": "default",
        "filter": {"attributes": {"source": key, "type": "eventmesh-health.heartbeat",
                                  "eventtypeversion": "v1"}},
        "subscriber": {"uri": f"http://r/heartbeat/shop/{key}?pair={'t' * 24}"},
        "delivery": {"deadLetterSink": {"uri": f"http://r/deadletter/shop/{key}?pair={'t' * 24}"}},
    }
    sub = desired_subscriber(CONFIG, targets[flow_key("channel", NS, "orders")])
    assert (sub["apiVersion"], sub["kind"]) == ("messaging.knative.dev/v1", "Subscription")
    assert sub["spec"]["channel"] == {"apiVersion": "messaging.knative.dev/v1",
                                      "kind": "Channel", "name": "orders"}
    assert "filter" not in sub["spec"]


class _Obj:
    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw

    def to_dict(self) -> dict[str, Any]:
        return self.raw


class FakeClient:
    def __init__(self, objects: list[dict[str, Any]]) -> None:
        self.objects = {(o["kind"], o["metadata"]["namespace"], o["metadata"]["name"]): o
                        for o in objects}
        self.calls: list[tuple[str, str, str]] = []

    async def list(self, res: Any, namespace: str, labels: dict[str, str]
                   ) -> AsyncIterator[_Obj]:
        for (kind, _, _), o in list(self.objects.items()):
            have = o["metadata"].get("labels") or {}
            if kind == res.__name__ and all(have.get(k) == v for k, v in labels.items()):
                yield _Obj(o)

    async def create(self, res: Any) -> None:
        raw = res.to_dict()
        self.objects[(raw["kind"], raw["metadata"]["namespace"], raw["metadata"]["name"])] = raw
        self.calls.append(("create", raw["kind"], raw["metadata"]["name"]))

    async def patch(self, res: Any, name: str, patch: dict[str, Any], namespace: str,
                    patch_type: Any) -> None:
        self.calls.append(("patch", res.__name__, name))

    async def delete(self, res: Any, name: str, namespace: str) -> None:
        self.objects.pop((res.__name__, namespace, name))
        self.calls.append(("delete", res.__name__, name))


async def test_reconcile_touches_only_flow_heartbeat_objects() -> None:
    rep = report(("broker", "Broker", "default", Health.HEALTHY))
    targets = flow_targets(rep, Index(obj("Broker", "default")), DATA_PLANE)
    labelled = {HEARTBEAT_LABEL: "true"}
    client = FakeClient([
        # an application's heartbeat Trigger (TriggerManager's), a user's, a stale flow one
        {"kind": "Trigger", "metadata": {"namespace": NS, "name": "eventmesh-health-app",
                                         "labels": labelled}, "spec": {}},
        {"kind": "Trigger", "metadata": {"namespace": NS, "name": "mine"}, "spec": {}},
        {"kind": "Subscription", "metadata": {"namespace": NS, "name": "gone", "labels": {
            **labelled, FLOW_LABEL: "channel"}}, "spec": {}},
    ])
    kinds = tuple(dict.fromkeys(f.subscriber.kind for f in DATA_PLANE.flows))
    manager = FlowSubscribers(client, CONFIG, kinds)
    assert await manager.reconcile(targets.values())
    name = desired_subscriber(CONFIG, next(iter(targets.values())))["metadata"]["name"]
    assert sorted(client.calls) == [("create", "Trigger", name),
                                    ("delete", "Subscription", "gone")]
    assert set(manager.tokens) == {(NS, flow_key("broker", NS, "default"))}
    client.calls.clear()
    assert await manager.reconcile(targets.values())  # nothing changed: no write
    assert client.calls == []


def test_verdicts_land_in_the_flow_and_the_mesh() -> None:
    rep = report(("broker", "Broker", "default", Health.HEALTHY),
                 ("channel", "Channel", "orders", Health.HEALTHY))
    key = flow_key("broker", NS, "default")
    finding = Finding(severity=Severity.ERROR, health=Health.UNHEALTHY,
                      object=ObjectRef(api_version="eventing.knative.dev/v1", kind="Broker",
                                       namespace=NS, name="default"),
                      reason="NoHeartbeat", message="no heartbeat", root_cause=True)
    merged = merge_verdicts(rep, {(key, NS): DataPlaneVerdict(key, NS, Health.UNHEALTHY,
                                                              (finding,))})
    broker = next(f for f in merged.flows if f.name == "default")
    assert broker.health is Health.UNHEALTHY and broker.findings == [finding]
    assert next(f for f in merged.flows if f.name == "orders").health is Health.HEALTHY
    assert merged.health is Health.UNHEALTHY and not merged.healthy
    # an Unknown verdict (control plane not Healthy) adds its finding, not its health
    unknown = finding.model_copy(update={"health": Health.UNKNOWN, "reason": "DataPlaneNotProbed"})
    merged = merge_verdicts(rep, {(key, NS): DataPlaneVerdict(key, NS, Health.UNKNOWN,
                                                              (unknown,))})
    assert merged.health is Health.HEALTHY
    assert next(f for f in merged.flows if f.name == "default").findings == [unknown]
