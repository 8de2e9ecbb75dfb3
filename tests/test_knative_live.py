"""`check` on the REAL Knative Eventing v1.21: each fault induced in the real components, and
the root cause the checker names for it.

The statuses are written by the upstream reconcilers (tests/knative runs them); the system
Deployments' status and the Endpoints are test-written (no kubelet), as tests/knative/mesh.py
says. `check` runs as a user would run it: the CLI, against the mesh's API server, with the
profile detected (the mesh serves the v1 Knative kinds only).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from lightkube.resources.core_v1 import ConfigMap, Endpoints

from tests.envtest.controlplane import free_port
from tests.knative.mesh import SYSTEM_NAMESPACE, KnativeMesh
from tests.knative.receiver import Receiver
from tests.live_objects import cli_command, report_json, run_cli

pytestmark = pytest.mark.knative

TIMEOUT = 30.0


@pytest.fixture
def subscriber(knative_mesh: KnativeMesh, knative_namespace: str) -> Iterator[Receiver]:
    with Receiver("subscriber") as rcv:
        knative_mesh.expose(knative_namespace, "subscriber", rcv.port)
        yield rcv


def check(mesh: KnativeMesh) -> dict[str, Any]:
    report = report_json(run_cli("check", "-o", "json", "--kubeconfig", mesh.kubeconfig_path))
    assert report["source"]["profile"] == "knative-v1"
    return report


def flow(report: dict[str, Any], ns: str, kind: str = "Broker",
         name: str = "default") -> dict[str, Any]:
    found = [f for f in report["flows"]
             if (f["kind"], f["namespace"], f["name"]) == (kind, ns, name)]
    assert len(found) == 1, [(f["kind"], f["namespace"], f["name"]) for f in report["flows"]]
    return found[0]


def roots(entry: dict[str, Any]) -> list[tuple[str, str | None, str]]:
    return [(f["object"]["kind"], f["object"]["name"], f["reason"])
            for f in entry["findings"] if f["rootCause"]]


def broker_flow(mesh: KnativeMesh, ns: str) -> None:
    mesh.create_broker(ns)
    mesh.create_trigger(ns, "orders", "default",
                        subscriber_ref={"apiVersion": "v1", "kind": "Service",
                                        "name": "subscriber"},
                        filter_attributes={"type": "order.created"})
    mesh.wait_ready("Trigger", ns, "orders", TIMEOUT)
    mesh.wait_settled(ns, TIMEOUT)


def wait_for(what: str, check: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except httpx.HTTPError as err:
            last = err
        else:
            if last:
                return last
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


# --- healthy ---------------------------------------------------------------------------------


def test_a_healthy_real_mesh_is_healthy_with_no_error(
        knative_mesh: KnativeMesh, knative_namespace: str, subscriber: Receiver) -> None:
    ns = knative_namespace
    broker_flow(knative_mesh, ns)
    knative_mesh.create_channel(ns, "orders")
    knative_mesh.create_subscription(ns, "orders-to-broker", "orders", subscriber_ref={
        "apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": "default"})
    knative_mesh.wait_ready("Subscription", ns, "orders-to-broker", TIMEOUT)
    knative_mesh.wait_settled(ns, TIMEOUT)
    report = check(knative_mesh)
    assert report["system"]["health"] == "Healthy", report["system"]
    mine = [f for f in report["flows"] if f["namespace"] == ns]
    assert [(f["flow"], f["kind"], f["name"]) for f in mine] == [
        ("broker", "Broker", "default"), ("channel", "Channel", "orders")]
    for entry in mine:
        assert entry["health"] == "Healthy" and entry["findings"] == [], entry
    # The trigger channel the Broker made is part of the Broker's flow, not one of its own.
    assert not any(f["name"].endswith("-kne-trigger") for f in report["flows"])


# --- faults the control plane shows --------------------------------------------------------------


def test_dispatcher_down_is_the_one_root_cause(
        knative_mesh: KnativeMesh, knative_namespace: str, subscriber: Receiver) -> None:
    ns = knative_namespace
    broker_flow(knative_mesh, ns)
    knative_mesh.stop_dispatcher()
    knative_mesh.set_deployment_available("imc-dispatcher", False)
    report = check(knative_mesh)
    entry = flow(report, ns)
    assert entry["health"] == "Unhealthy"
    assert roots(entry) == [("Deployment", "imc-dispatcher", "DeploymentUnavailable")]
    # The IMCs stay Ready (DispatcherReady does not gate them in v1.21): no finding on them,
    # and none on the Trigger, its Subscription or the Broker.
    assert {f["object"]["kind"] for f in entry["findings"]} <= {"Deployment", "Service"}
    system = roots(report["system"])
    assert ("Deployment", "imc-dispatcher", "DeploymentUnavailable") in system


def test_dispatcher_endpoints_emptied_names_the_dispatcher_service(
        knative_mesh: KnativeMesh, knative_namespace: str, subscriber: Receiver) -> None:
    ns = knative_namespace
    broker_flow(knative_mesh, ns)
    knative_mesh.set_endpoints("imc-dispatcher", False)
    knative_mesh.wait_condition("InMemoryChannel", ns, "default-kne-trigger", "Ready",
                                "False", "DispatcherEndpointsNotReady", TIMEOUT)
    entry = flow(check(knative_mesh), ns)
    assert roots(entry) == [("Service", "imc-dispatcher", "NoReadyEndpoints")]
    imc = next(f for f in entry["findings"] if f["object"]["kind"] == "InMemoryChannel")
    assert imc["reason"] == "DispatcherEndpointsNotReady" and not imc["rootCause"]
    assert imc["causedBy"]["name"] == "imc-dispatcher"


def test_broker_filter_gone_names_the_filter_service(
        knative_mesh: KnativeMesh, knative_namespace: str, subscriber: Receiver) -> None:
    ns = knative_namespace
    broker_flow(knative_mesh, ns)
    knative_mesh.delete_endpoints("broker-filter")
    knative_mesh.wait_condition("Broker", ns, "default", "FilterReady", "False", None, TIMEOUT)
    entry = flow(check(knative_mesh), ns)
    assert roots(entry) == [("Service", "broker-filter", "NoReadyEndpoints")]
    broker = next(f for f in entry["findings"] if f["object"]["kind"] == "Broker")
    assert not broker["rootCause"] and broker["causedBy"]["name"] == "broker-filter"


def test_a_subscriber_whose_service_was_deleted_is_the_root_cause(
        knative_mesh: KnativeMesh, knative_namespace: str, subscriber: Receiver) -> None:
    ns = knative_namespace
    broker_flow(knative_mesh, ns)
    knative_mesh.unexpose(ns, "subscriber")
    entry = flow(check(knative_mesh), ns)
    assert roots(entry) == [("Service", "subscriber", "NotFound")]
    # The real v1.21 Trigger stays Ready (tests/test_knative_real.py): no finding on it.
    assert knative_mesh.get("Trigger", ns, "orders")["status"]["conditions"]
    assert not any(f["object"]["kind"] == "Trigger" for f in entry["findings"])


def test_a_subscriber_with_no_ready_pod_is_the_root_cause(
        knative_mesh: KnativeMesh, knative_namespace: str, subscriber: Receiver) -> None:
    ns = knative_namespace
    broker_flow(knative_mesh, ns)
    # What the endpoints controller writes when the subscriber's pods are gone.
    knative_mesh.client.patch(Endpoints, "subscriber", {"subsets": []}, namespace=ns)
    entry = flow(check(knative_mesh), ns)
    assert roots(entry) == [("Service", "subscriber", "NoReadyEndpoints")]


def test_a_deleted_broker_is_the_root_cause_of_its_triggers(
        knative_mesh: KnativeMesh, knative_namespace: str, subscriber: Receiver) -> None:
    ns = knative_namespace
    broker_flow(knative_mesh, ns)
    knative_mesh.delete("Broker", ns, "default")
    knative_mesh.wait_condition("Trigger", ns, "orders", "BrokerReady", "False",
                                "BrokerDoesNotExist", TIMEOUT)
    entry = flow(check(knative_mesh), ns)
    assert entry["health"] == "Unhealthy"
    assert roots(entry) == [("Broker", "default", "NotFound")]
    trigger = next(f for f in entry["findings"] if f["object"]["kind"] == "Trigger")
    assert trigger["reason"] == "BrokerDoesNotExist"
    assert trigger["causedBy"] == {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker",
                                   "namespace": ns, "name": "default"}


def test_a_trigger_made_before_its_broker_names_the_broker(
        knative_mesh: KnativeMesh, knative_namespace: str, subscriber: Receiver) -> None:
    ns = knative_namespace
    knative_mesh.create_trigger(ns, "early", "later",
                                subscriber_ref={"apiVersion": "v1", "kind": "Service",
                                                "name": "subscriber"})
    entry = flow(check(knative_mesh), ns, name="later")
    assert roots(entry) == [("Broker", "later", "NotFound")]
    trigger = next(f for f in entry["findings"] if f["object"]["kind"] == "Trigger")
    assert not trigger["rootCause"]
    # No status at all: the real trigger reconciler never picked it up.
    assert "status" not in knative_mesh.get("Trigger", ns, "early") or not (
        knative_mesh.get("Trigger", ns, "early")["status"].get("conditions"))



# --- serve on the real mesh ------------------------------------------------------------------


def test_serve_names_the_root_cause_then_the_mend_and_writes_nothing_when_quiet(
        knative_mesh: KnativeMesh, knative_namespace: str, subscriber: Receiver,
        tmp_path: Path) -> None:
    ns = knative_namespace
    broker_flow(knative_mesh, ns)
    user = f"serve-kn-{ns[-6:]}"
    kubeconfig = knative_mesh.control_plane.make_user_kubeconfig(user, ["system:masters"])
    port = free_port()
    log = tmp_path / "serve.log"
    process = subprocess.Popen(
        [*cli_command(), "serve", "--kubeconfig", str(kubeconfig), "--host", "127.0.0.1",
         "--port", str(port), "--identity", user, "--no-leader-election",
         "--events-namespace", "default"],
        stdout=log.open("wb"), stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    base = f"http://127.0.0.1:{port}"
    flow_url = f"{base}/api/v1/flows/{ns}/Broker/default"

    def flow_now() -> dict[str, Any] | None:
        if process.poll() is not None:
            raise AssertionError(f"serve exited: {log.read_text()[-3000:]}")
        answer = httpx.get(flow_url, timeout=5)
        return answer.json() if answer.status_code == 200 else None

    try:
        healthy = wait_for("the flow Healthy in the REST API",
                           lambda: (f := flow_now()) and f["health"] == "Healthy" and f, 60)
        assert healthy["findings"] == []
        metrics = httpx.get(f"{base}/metrics", timeout=5).text
        assert (f'eventmesh_flow_health{{flow="broker",health="Healthy",kind="Broker",'
                f'name="default",namespace="{ns}"}} 1.0') in metrics

        mesh = knative_mesh
        # Each real fault, its root cause in serve's REST API, then the mend.
        faults: list[tuple[str, Callable[[], None], tuple[str, str, str], Callable[[], None]]] = [
            ("dispatcher Endpoints emptied", lambda: mesh.set_endpoints("imc-dispatcher", False),
             ("Service", "imc-dispatcher", "NoReadyEndpoints"),
             lambda: mesh.set_endpoints("imc-dispatcher", True)),
            ("dispatcher Deployment unavailable",
             lambda: mesh.set_deployment_available("imc-dispatcher", False),
             ("Deployment", "imc-dispatcher", "DeploymentUnavailable"),
             lambda: mesh.set_deployment_available("imc-dispatcher", True)),
            ("broker-filter Endpoints deleted", lambda: mesh.delete_endpoints("broker-filter"),
             ("Service", "broker-filter", "NoReadyEndpoints"),
             lambda: mesh.set_endpoints("broker-filter", True)),
            ("subscriber Service deleted", lambda: mesh.unexpose(ns, "subscriber"),
             ("Service", "subscriber", "NotFound"),
             lambda: mesh.expose(ns, "subscriber", subscriber.port) and None),
        ]
        for what, breaks, root, mends in faults:
            started = time.monotonic()
            breaks()
            broken = wait_for(f"{what}: {root} named", lambda r=root: (  # type: ignore[misc]
                (f := flow_now()) and roots(f) == [r] and f), TIMEOUT)
            print(f"{what}: visible in serve's REST API after "
                  f"{time.monotonic() - started:.2f}s")
            assert broken["health"] == "Unhealthy"
            mends()
            wait_for(f"{what}: the mend", lambda: (f := flow_now()) and f["health"] == "Healthy",
                     TIMEOUT)
        # The Broker deleted: the flow of the missing Broker, its Triggers as symptoms.
        mesh.delete("Broker", ns, "default")
        wait_for("the missing Broker named", lambda: (
            (f := flow_now()) and roots(f) == [("Broker", "default", "NotFound")]), TIMEOUT)
        mesh.create_broker(ns)
        wait_for("the Broker back", lambda: (f := flow_now()) and f["health"] == "Healthy",
                 TIMEOUT)

        # Steady state: nothing changes, so nothing is written (a flows-only report has no
        # health object or Event to write).
        quiet_from = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        time.sleep(5.0)  # the quiet period being measured, not a wait for a condition
        writes = [e for e in knative_mesh.control_plane.audit_events()
                  if (e.get("user") or {}).get("username") == user  # type: ignore[union-attr]
                  and e.get("verb") in ("create", "update", "patch", "delete",
                                        "deletecollection")
                  and str(e.get("requestReceivedTimestamp", "")) >= quiet_from]
        assert writes == []
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- Ready, but receives nothing -----------------------------------------------------------------


def test_a_trigger_filtering_on_a_type_the_broker_never_saw_is_found(
        knative_mesh: KnativeMesh, knative_namespace: str, subscriber: Receiver) -> None:
    """The real ingress registers every type it receives as an EventType when the
    `eventtype-auto-create` feature is on (pkg/eventtype/eventtypes.go); a Trigger whose
    filter is none of them is Ready and receives nothing."""
    mesh, ns = knative_mesh, knative_namespace
    features = mesh.client.get(ConfigMap, "config-features", namespace=SYSTEM_NAMESPACE)
    before = (features.data or {}).get("eventtype-auto-create")
    mesh.client.patch(ConfigMap, "config-features", {"data": {"eventtype-auto-create":
                                                              "enabled"}},
                      namespace=SYSTEM_NAMESPACE)
    try:
        broker_flow(mesh, ns)  # filters on order.created
        registered: list[dict[str, Any]] = []

        def shipped_is_registered() -> bool:
            # The feature store picks the change up from its ConfigMap watch: send until the
            # ingress registers what it received.
            mesh.send_event(mesh.ingress_url(ns, "default"), "order.shipped", source="/shop")
            registered[:] = mesh.list("EventType", ns)
            return bool(registered)

        deadline = time.monotonic() + TIMEOUT
        while not shipped_is_registered():
            assert time.monotonic() < deadline, "the ingress registered no EventType"
            time.sleep(0.5)
        assert registered[0]["spec"]["reference"]["name"] == "default"
        report = check(mesh)
        entry = flow(report, ns)
        assert roots(entry) == [("Trigger", "orders", "FilterMatchesNoKnownType")], (
            registered, report["source"])
        assert entry["health"] == "Degraded"
        # Its own conditions say nothing is wrong.
        assert mesh.get("Trigger", ns, "orders")["status"]["conditions"]

        mesh.send_event(mesh.ingress_url(ns, "default"), "order.created", source="/shop")
        wait_for("order.created registered", lambda: len(mesh.list("EventType", ns)) == 2,
                 TIMEOUT)
        assert flow(check(mesh), ns)["health"] == "Healthy"
    finally:
        mesh.client.patch(ConfigMap, "config-features",
                          {"data": {"eventtype-auto-create": before or "disabled"}},
                          namespace=SYSTEM_NAMESPACE)
