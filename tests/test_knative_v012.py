"""`check --profile kyma-1` on the REAL Knative Eventing v0.12 (what Kyma 1.x ran).

The statuses of the Knative kinds of a Kyma 1.x application chain are written by the upstream
v0.12 reconcilers (tests/knative/v012.py runs them, one network namespace per process):

- namespace ``prod`` labelled ``knative-eventing-injection=enabled`` → the v0.12 namespace
  reconciler creates Broker ``default``; the Broker reconciler deploys ``default-broker-ingress``
  and ``-filter``, which the mini-kubelet runs as processes;
- the application Channel ``kyma-integration/commerce-mock`` (channelTemplate InMemoryChannel),
  the ``brokersub-`` Subscription from it to ``http://default-broker.prod`` with Kyma's labels,
  and a v1alpha1 Trigger filtering on ``source: commerce-mock``.

The Kyma-specific objects (Application, ApplicationMapping, ServiceInstance, EventActivation,
HTTPSource, the adapter's Knative Service, the event-service, application-operator,
application-broker, event-sources-controller and the eventing-webhook workloads) cannot be
had: they are written by the test, from ``examples/healthy-mesh`` (tests/live_objects.py
recreates them with their statuses, timestamps shifted to now).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from lightkube.resources.core_v1 import Endpoints
from lightkube.types import PatchType

from tests.envtest.fixtures import install_crds, load_test_crds, wait_served
from tests.knative.common import conditions, describe
from tests.knative.receiver import Receiver
from tests.knative.v012 import IMC_TEMPLATE, PLACEHOLDER_IP, KnativeV012Mesh
from tests.live_objects import (
    ApiServer,
    Applier,
    Example,
    load_example,
    report_json,
    run_cli,
)
from tests.live_objects import findings as live_findings

pytestmark = pytest.mark.knative

TIMEOUT = 40.0
APP = "commerce-mock"
NS = "prod"
INTEGRATION = "kyma-integration"
TRIGGER = "commerce-mock-order-created"
BROKERSUB = "brokersub-gp4fq"

# Kyma's own kinds (and Knative Serving's Service, the HTTP adapter up to Kyma 1.14), from
# tests/crds: their controllers are not Knative Eventing and do not run here.
KYMA_CRDS = {
    "applications.applicationconnector.kyma-project.io",
    "applicationmappings.applicationconnector.kyma-project.io",
    "eventactivations.applicationconnector.kyma-project.io",
    "httpsources.sources.kyma-project.io",
    "serviceinstances.servicecatalog.k8s.io",
    "services.serving.knative.dev",
}
# What the example holds that is test-written here: Kyma's objects of the commerce-mock
# application bound to `prod`, and the workloads the kyma-1 profile checks that are not
# Knative Eventing v0.12 processes (eventing-controller's Deployment comes from v0.12's own
# config/500-controller.yaml, with the mesh).
KEEP = {
    ("Application", None, APP),
    ("ApplicationMapping", NS, APP),
    ("ServiceInstance", NS, "sap-commerce-cloud-events-etlt3"),
    ("EventActivation", NS, "9c8e3b7a-4d1f-4c2e-8a6b-1f0d2e3c4b5a"),
    ("HTTPSource", INTEGRATION, APP),
    ("Service", INTEGRATION, APP),  # serving.knative.dev: the HTTP adapter
    ("Deployment", INTEGRATION, f"{APP}-event-service"),
    ("Service", INTEGRATION, f"{APP}-event-service"),
    ("Endpoints", INTEGRATION, f"{APP}-event-service"),
    ("Deployment", "knative-eventing", "eventing-webhook"),
    ("Service", "knative-eventing", "eventing-webhook"),
    ("Endpoints", "knative-eventing", "eventing-webhook"),
    ("Deployment", INTEGRATION, "application-broker"),
    ("Service", INTEGRATION, "application-broker"),
    ("Endpoints", INTEGRATION, "application-broker"),
    ("StatefulSet", INTEGRATION, "application-operator"),
    ("Deployment", "kyma-system", "event-sources-controller-manager"),
    ("Deployment", NS, "order-processor"),  # the Trigger's subscriber
    ("Service", NS, "order-processor"),
    ("Endpoints", NS, "order-processor"),
}


def _key(obj: dict[str, Any]) -> tuple[str, str | None, str]:
    meta = obj.get("metadata") or {}
    return str(obj.get("kind")), meta.get("namespace"), str(meta.get("name"))


@dataclass
class Chain:
    mesh: KnativeV012Mesh
    ready_seconds: float  # from the namespace label to every Knative object Ready


def knative_objects(mesh: KnativeV012Mesh) -> list[tuple[str, str, str]]:
    return [("Broker", NS, "default"), ("Trigger", NS, TRIGGER),
            ("Channel", INTEGRATION, APP), ("Subscription", INTEGRATION, BROKERSUB)]


def wait_chain_ready(mesh: KnativeV012Mesh, timeout: float = TIMEOUT) -> None:
    mesh.wait_pods_available(NS, timeout)
    for kind, ns, name in knative_objects(mesh):
        mesh.wait_ready(kind, ns, name, timeout)
    trigger = mesh.get("Trigger", NS, TRIGGER)
    owned = [s for s in mesh.list("Subscription", NS)
             if any(r.get("uid") == trigger["metadata"]["uid"]
                    for r in s["metadata"].get("ownerReferences") or [])]
    assert owned, "the Trigger's Subscription on the trigger channel"
    for sub in owned:
        mesh.wait_ready("Subscription", NS, sub["metadata"]["name"], timeout)


@pytest.fixture(scope="module")
def chain(knative_v012: KnativeV012Mesh) -> Iterator[Chain]:
    """The commerce-mock application chain into `prod`, Knative parts real (module doc)."""
    mesh = knative_v012
    crds = [c for c in load_test_crds() if c["metadata"]["name"] in KYMA_CRDS]
    install_crds(mesh.client, crds, TIMEOUT)
    wait_served(mesh.control_plane, crds, TIMEOUT)

    example = load_example("healthy-mesh")
    kept = [o for o in example.objects if _key(o) in KEEP]
    namespaces = [o for o in example.objects if o.get("kind") == "Namespace"
                  and o["metadata"]["name"] in (NS, INTEGRATION, "kyma-system")]
    assert {_key(o) for o in kept} == KEEP, sorted(KEEP - {_key(o) for o in kept})
    began = time.monotonic()
    api = ApiServer(mesh.control_plane)
    try:
        applied = Applier(api, Example("healthy-mesh-v012", example.path, namespaces + kept,
                                       example.taken_at)).run()
    finally:
        api.close()
    assert not applied.rejected, applied.rejected

    # The Knative objects: the Broker comes from the namespace label (the example's `prod`
    # has it); the rest as HTTPSource's controller, application-broker and the user create
    # them, with what the v0.12 webhook would have defaulted.
    mesh.default_broker(NS, TIMEOUT)
    mesh.create("Channel", INTEGRATION, APP, {"channelTemplate": dict(IMC_TEMPLATE)},
                labels={"application-name": APP})
    mesh.create("Subscription", INTEGRATION, BROKERSUB, {
        "channel": {"apiVersion": "messaging.knative.dev/v1alpha1", "kind": "Channel",
                    "name": APP},
        "subscriber": {"uri": f"http://default-broker.{NS}"},
    }, labels={"application-name": APP, "broker-namespace": NS,
               "application-service-id": "9c8e3b7a-4d1f-4c2e-8a6b-1f0d2e3c4b5a"})
    mesh.create("Trigger", NS, TRIGGER, {
        "broker": "default",
        "filter": {"attributes": {"eventtypeversion": "v1", "source": APP,
                                  "type": "order.created"}},
        "subscriber": {"ref": {"apiVersion": "v1", "kind": "Service", "name": "order-processor",
                               "namespace": NS}},
    }, labels={"eventing.knative.dev/broker": "default"})
    wait_chain_ready(mesh)
    yield Chain(mesh, time.monotonic() - began)


def check(mesh: KnativeV012Mesh) -> dict[str, Any]:
    report = report_json(run_cli("check", "-o", "json", "--profile", "kyma-1",
                                 "--kubeconfig", mesh.kubeconfig_path))
    return report


def findings(report: dict[str, Any]) -> list[dict[str, Any]]:
    return list(live_findings(report))


def test_a_healthy_real_v012_chain_is_healthy(chain: Chain) -> None:
    mesh = chain.mesh
    # The real v0.12 Channel is Ready without ever writing status.observedGeneration (the
    # product finding of REAL-KNATIVE.md); the kyma-1 profile must not call it Progressing.
    channel = mesh.get("Channel", INTEGRATION, APP)
    assert conditions(channel)["Ready"][0] == "True", describe(channel)
    assert "observedGeneration" not in (channel.get("status") or {}), describe(channel)
    report = check(mesh)
    errors = [f for f in findings(report) if f["health"] != "Healthy"]
    assert report["health"] == "Healthy" and report["healthy"] is True, (
        report["health"], errors, report["system"])
    assert not errors, errors
    apps = {a["name"]: a for a in report["applications"]}
    assert apps[APP]["health"] == "Healthy", apps[APP]
    assert [n["name"] for n in apps[APP]["namespaces"]] == [NS]


def test_an_application_event_reaches_the_subscriber_for_real(chain: Chain) -> None:
    """Through the real v0.12 data plane: the application Channel's address → IMC dispatcher →
    brokersub Subscription → the namespace's broker ingress → trigger channel → broker filter
    (the Trigger's attribute filter) → the subscriber, every hop through the loopback proxy and
    the pods' Unix sockets."""
    mesh = chain.mesh
    assert mesh.proxy is not None
    with Receiver("order-processor") as rcv:
        # The example's Endpoints name a pod IP; the subscriber is the receiver on loopback.
        mesh.client.patch(Endpoints, "order-processor", {"subsets": [{
            "addresses": [{"ip": PLACEHOLDER_IP}],
            "ports": [{"name": "http", "port": rcv.port, "protocol": "TCP"}]}]},
            namespace=NS, patch_type=PatchType.MERGE)
        url = f"http://{APP}-kn-channel.{INTEGRATION}.svc.cluster.local/"
        headers = {"ce-eventtypeversion": "v1"}
        other = mesh.send_event(url, "order.deleted", source=APP, proxy=mesh.proxy.url,
                                extra_headers=headers)
        sent = mesh.send_event(url, "order.created", source=APP, proxy=mesh.proxy.url,
                               extra_headers=headers)
        assert (other.status_code, sent.status_code) == (202, 202), (other.text, sent.text)
        got = rcv.wait_event(sent.request.headers["ce-id"], TIMEOUT)
        assert got.ce_type == "order.created"
        time.sleep(0.5)  # the filtered-out event had as long to arrive
        assert rcv.with_id(other.request.headers["ce-id"]) == []


def test_killed_broker_ingress_is_the_root_cause(chain: Chain) -> None:
    mesh = chain.mesh
    wait_chain_ready(mesh)
    mesh.kill_pod(NS, "default-broker-ingress", hold=True)
    try:
        broker = mesh.wait_condition("Broker", NS, "default", "IngressReady", "False",
                                     "DeploymentUnavailable", TIMEOUT)
        assert conditions(broker)["Ready"] == ("False", "DeploymentUnavailable"), describe(broker)
        mesh.wait_condition("Trigger", NS, TRIGGER, "Ready", "False", timeout=TIMEOUT)
        report = check(mesh)
        assert report["healthy"] is False
        found = findings(report)
        roots = {(f["object"]["kind"], f["object"]["namespace"], f["object"]["name"],
                  f["reason"]) for f in found if f["rootCause"]}
        assert roots == {("Deployment", NS, "default-broker-ingress", "DeploymentUnavailable")}, \
            found
        symptoms = {(f["object"]["kind"], f["object"]["name"]) for f in found
                    if not f["rootCause"]}
        assert ("Trigger", TRIGGER) in symptoms, found
        # The brokersub Subscription stays Ready: v0.12 checks only that its subscriber URI
        # resolves, not that the Broker behind it answers.
        sub = mesh.get("Subscription", INTEGRATION, BROKERSUB)
        assert conditions(sub)["Ready"][0] == "True", describe(sub)
    finally:
        mesh.hold_pod(NS, "default-broker-ingress", False)
    wait_chain_ready(mesh)  # the chain is back for whatever runs next
