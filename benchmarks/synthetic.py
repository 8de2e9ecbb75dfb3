"""A synthetic, healthy Kyma 1.x mesh of N applications x M namespaces, every kind present.

Each application gets its own M namespaces (so the object count grows with N x M):
per application about 9 objects in kyma-integration, and per (application, namespace)
about 16 (mapping, ServiceInstance, EventActivation, brokersub, Broker with its two
Deployments, two Pods and trigger channels, two Triggers with their Subscriptions, Namespace).
Roughly 25 objects per application for M=1, 57 for M=3.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

T0 = "2020-06-01T08:00:00Z"
READY = "2020-06-01T08:01:00Z"
TAKEN_AT = "2020-06-15T10:00:00Z"

Obj = dict[str, Any]


def _meta(name: str, namespace: str | None, uid: str, **extra: Any) -> Obj:
    meta: Obj = {"name": name, "uid": uid, "resourceVersion": "1", "generation": 1,
                 "creationTimestamp": T0}
    if namespace is not None:
        meta["namespace"] = namespace
    meta.update(extra)
    return meta


def _owner(api_version: str, kind: str, name: str, uid: str) -> list[Obj]:
    return [{"apiVersion": api_version, "kind": kind, "name": name, "uid": uid,
             "controller": True, "blockOwnerDeletion": True}]


def _ready(*types: str) -> Obj:
    return {
        "observedGeneration": 1,
        "conditions": [
            {"type": t, "status": "True", "lastTransitionTime": READY} for t in (*types, "Ready")
        ],
    }


def _deployment(name: str, namespace: str, uid: str, app_label: str) -> list[Obj]:
    return [
        {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": _meta(name, namespace, uid, labels={"app": app_label}),
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": app_label}}},
            "status": {
                "observedGeneration": 1, "replicas": 1, "readyReplicas": 1,
                "availableReplicas": 1, "updatedReplicas": 1,
                "conditions": [
                    {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
                    {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"},
                ],
            },
        },
        {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": _meta(f"{name}-5d8c7-x2x4q", namespace, f"{uid}-pod",
                              labels={"app": app_label}),
            "status": {"phase": "Running", "containerStatuses": [
                {"name": "main", "ready": True, "restartCount": 0,
                 "state": {"running": {"startedAt": READY}}}]},
        },
    ]


def _statefulset(name: str, namespace: str, uid: str, app_label: str) -> list[Obj]:
    """A StatefulSet with its one Pod (application-operator runs as one in every Kyma 1.x)."""
    workload, pod = _deployment(name, namespace, uid, app_label)
    workload = {**workload, "kind": "StatefulSet", "status": {
        "observedGeneration": 1, "replicas": 1, "readyReplicas": 1, "currentReplicas": 1,
        "updatedReplicas": 1}}
    pod["metadata"]["name"] = f"{name}-0"
    return [workload, pod]


def _kafka_channel_pair(name: str, namespace: str, uid: str, labels: Obj) -> list[Obj]:
    channel: Obj = {
        "apiVersion": "messaging.knative.dev/v1alpha1", "kind": "Channel",
        "metadata": _meta(name, namespace, uid, labels=labels),
        "spec": {"channelTemplate": {"apiVersion": "knativekafka.kyma-project.io/v1alpha1",
                                     "kind": "KafkaChannel"}},
        "status": {**_ready("BackingChannelReady", "Addressable"),
                   "address": {"url": f"http://{name}-kn-channel.{namespace}.svc.cluster.local"},
                   "channel": {"apiVersion": "knativekafka.kyma-project.io/v1alpha1",
                               "kind": "KafkaChannel", "name": name}},
    }
    kafka: Obj = {
        "apiVersion": "knativekafka.kyma-project.io/v1alpha1", "kind": "KafkaChannel",
        "metadata": _meta(name, namespace, f"{uid}-kc",
                          ownerReferences=_owner("messaging.knative.dev/v1alpha1", "Channel",
                                                 name, uid)),
        "status": _ready("TopicReady", "Addressable"),
    }
    return [channel, kafka]


def system() -> list[Obj]:
    objects: list[Obj] = _statefulset("application-operator", "kyma-integration",
                                      "sys-application-operator", "application-operator")
    for namespace, name in (
        ("kyma-integration", "application-broker"),
        ("kyma-system", "event-sources-controller-manager"),
        ("knative-eventing", "eventing-controller"),
        ("knative-eventing", "eventing-webhook"),
        ("knative-eventing", "knative-eventing-kafka-channel-controller"),
    ):
        objects.extend(_deployment(name, namespace, f"sys-{name}", name))
    objects.append({"apiVersion": "v1", "kind": "Service",
                    "metadata": _meta("eventing-webhook", "knative-eventing", "svc-webhook"),
                    "spec": {"selector": {"app": "eventing-webhook"}}})
    objects.append({"apiVersion": "v1", "kind": "Endpoints",
                    "metadata": _meta("eventing-webhook", "knative-eventing", "ep-webhook"),
                    "subsets": [{"addresses": [{"ip": "10.0.0.7"}],
                                 "ports": [{"port": 8443}]}]})
    objects.append({"apiVersion": "admissionregistration.k8s.io/v1",
                    "kind": "ValidatingWebhookConfiguration",
                    "metadata": _meta("validation.webhook.eventing.knative.dev", None, "vwc"),
                    "webhooks": [{"name": "validation.webhook.eventing.knative.dev",
                                  "failurePolicy": "Fail",
                                  "clientConfig": {"service": {"namespace": "knative-eventing",
                                                               "name": "eventing-webhook"}}}]})
    return objects


def application(index: int, namespaces: int) -> list[Obj]:
    app = f"app-{index:05d}"
    service_id = f"0000{index:05d}-aaaa-bbbb-cccc-{index:012d}"
    integ = "kyma-integration"
    objects: list[Obj] = [
        {
            "apiVersion": "applicationconnector.kyma-project.io/v1alpha1", "kind": "Application",
            "metadata": _meta(app, None, f"{app}-uid"),
            "spec": {"services": [{"id": service_id, "name": f"{app}-events",
                                   "entries": [{"type": "Events"}]}]},
            "status": {"installationStatus": {"status": "DEPLOYED"}},
        },
        {
            "apiVersion": "sources.kyma-project.io/v1alpha1", "kind": "HTTPSource",
            "metadata": _meta(app, integ, f"{app}-hs"),
            "spec": {"source": app},
            "status": _ready("SinkProvided", "Deployed", "PolicyCreated"),
        },
        {
            "apiVersion": "serving.knative.dev/v1", "kind": "Service",
            "metadata": _meta(app, integ, f"{app}-ksvc", ownerReferences=_owner(
                "sources.kyma-project.io/v1alpha1", "HTTPSource", app, f"{app}-hs")),
            "status": _ready("ConfigurationsReady", "RoutesReady"),
        },
        *_kafka_channel_pair(app, integ, f"{app}-ch", {"application-name": app}),
        *_deployment(f"{app}-event-service", integ, f"{app}-es", f"{app}-event-service"),
    ]
    for n in range(namespaces):
        ns = f"{app}-ns{n}"
        objects.extend(_namespace(app, ns, service_id))
    return objects


def _namespace(app: str, ns: str, service_id: str) -> list[Obj]:
    objects: list[Obj] = [
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": _meta(ns, None, f"{ns}-uid",
                           labels={"knative-eventing-injection": "enabled"})},
        {"apiVersion": "applicationconnector.kyma-project.io/v1alpha1",
         "kind": "ApplicationMapping", "metadata": _meta(app, ns, f"{ns}-am")},
        {"apiVersion": "servicecatalog.k8s.io/v1beta1", "kind": "ServiceInstance",
         "metadata": _meta(f"{app}-events", ns, f"{ns}-si"),
         "spec": {"serviceClassRef": {"name": service_id}},
         "status": {"provisionStatus": "Provisioned", "reconciledGeneration": 1,
                    "conditions": [{"type": "Ready", "status": "True",
                                    "reason": "ProvisionedSuccessfully"}]}},
        {"apiVersion": "applicationconnector.kyma-project.io/v1alpha1",
         "kind": "EventActivation", "metadata": _meta(service_id, ns, f"{ns}-ea"),
         "spec": {"sourceId": app, "displayName": app}},
        {"apiVersion": "messaging.knative.dev/v1alpha1", "kind": "Subscription",
         "metadata": _meta(f"brokersub-{ns}", "kyma-integration", f"{ns}-bs", labels={
             "broker-namespace": ns, "application-name": app,
             "application-service-id": service_id}),
         "spec": {"channel": {"apiVersion": "messaging.knative.dev/v1alpha1", "kind": "Channel",
                              "name": app},
                  "subscriber": {"uri": f"http://default-broker.{ns}"}},
         "status": _ready("AddedToChannel", "ChannelReady", "Resolved")},
        {"apiVersion": "eventing.knative.dev/v1alpha1", "kind": "Broker",
         "metadata": _meta("default", ns, f"{ns}-broker"),
         "status": _ready("IngressReady", "TriggerChannelReady", "FilterReady", "Addressable")},
        *_deployment("default-broker-ingress", ns, f"{ns}-bi", "broker-ingress"),
        *_deployment("default-broker-filter", ns, f"{ns}-bf", "broker-filter"),
        *_kafka_channel_pair("default-kne-trigger", ns, f"{ns}-tc",
                             {"eventing.knative.dev/broker": "default"}),
    ]
    for t, event_type in enumerate(("order.created", "customer.created")):
        trigger = f"{app}-{event_type.replace('.', '-')}"
        objects.append({
            "apiVersion": "eventing.knative.dev/v1alpha1", "kind": "Trigger",
            "metadata": _meta(trigger, ns, f"{ns}-tr{t}"),
            "spec": {"broker": "default", "filter": {"attributes": {
                "source": app, "type": event_type, "eventtypeversion": "v1"}},
                "subscriber": {"uri": f"http://lambda.{ns}.svc.cluster.local"}},
            "status": _ready("BrokerReady", "Subscribed", "DependencyReady",
                             "SubscriberResolved"),
        })
        objects.append({
            "apiVersion": "messaging.knative.dev/v1alpha1", "kind": "Subscription",
            "metadata": _meta(f"default-{trigger}-x1", ns, f"{ns}-trs{t}",
                              ownerReferences=_owner("eventing.knative.dev/v1alpha1", "Trigger",
                                                     trigger, f"{ns}-tr{t}")),
            "spec": {"channel": {"apiVersion": "messaging.knative.dev/v1alpha1",
                                 "kind": "Channel", "name": "default-kne-trigger"}},
            "status": _ready("AddedToChannel", "ChannelReady", "Resolved"),
        })
    return objects


def mesh(applications: int, namespaces: int) -> list[Obj]:
    objects = system()
    for index in range(applications):
        objects.extend(application(index, namespaces))
    return objects


def distinct_times(obj: Obj, i: int) -> None:
    """`obj`'s conditions set at a second of its own (the `i`-th after READY): nothing under
    its `status` is then like another object's, as on a cluster whose objects were not all
    made in the same second (labels, selectors and references still repeat)."""
    when = (datetime.fromisoformat(READY) + timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%SZ")
    status = obj.get("status")
    for condition in (status.get("conditions") or []) if isinstance(status, dict) else []:
        condition["lastTransitionTime"] = when
