"""`eventmesh-health serve` end to end, on the real API server, through the real CLI.

The healthy example mesh is recreated in the API server; `serve` runs as a subprocess with
a kubeconfig of its own user (so its requests can be told apart in the audit log).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.envtest.controlplane import ControlPlane, free_port
from tests.live_objects import ApiServer, apply_example, clear_cluster

pytestmark = pytest.mark.envtest

REPO = Path(__file__).parent.parent
HEALTH_CRD = REPO / "deploy" / "crds" / "eventmeshhealths.eventmesh-health.kyma-project.io.yaml"
TRIGGERS = "/apis/eventing.knative.dev/v1alpha1/namespaces/stage/triggers"
WRITES = {"create", "update", "patch", "delete", "deletecollection"}


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (httpx.HTTPError, KeyError, ValueError) as err:
            last = err
        else:
            if last:
                return last
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


@dataclass
class Serve:
    process: subprocess.Popen[bytes]
    port: int
    user: str
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=5)

    def app(self, name: str) -> dict[str, Any]:
        answer = self.get(f"/api/v1/applications/{name}")
        answer.raise_for_status()
        data: dict[str, Any] = answer.json()
        return data

    def metric(self, name: str, **labels: str) -> float | None:
        text = self.get("/metrics").text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v
                                               for k, v in labels.items()):
                    return float(sample.value)
        return None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_serve(control_plane: ControlPlane, tmp_path: Path, user: str, *args: str) -> Serve:
    kubeconfig = control_plane.make_user_kubeconfig(user, ["system:masters"])
    port = free_port()
    log = tmp_path / f"serve-{user}.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "eventmesh_health", "serve", "--kubeconfig", str(kubeconfig),
         "--host", "127.0.0.1", "--port", str(port), "--identity", user,
         "--lease-namespace", "kyma-system", "--events-namespace", "default", *args],
        stdout=log.open("wb"), stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    serve = Serve(process, port, user, log)

    def ready() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"serve exited with {process.returncode}")
        return serve.get("/readyz").status_code == 200

    try:
        wait_for("serve to be ready", ready, 90)
        wait_for("a first report", lambda: serve.get("/api/v1/health").status_code == 200, 30)
    except AssertionError as err:
        serve.stop()
        raise AssertionError(f"serve did not start ({err}): {log.read_text()[-3000:]}") from None
    return serve


@pytest.fixture(scope="module")
def api(control_plane: ControlPlane) -> Iterator[ApiServer]:
    if not control_plane.apiserver_running:
        control_plane.start_apiserver()
    server = ApiServer(control_plane)
    crd = yaml.safe_load(HEALTH_CRD.read_text())
    answer = server.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                            crd)
    assert answer.status_code in (201, 409), answer.text
    wait_for("the EventMeshHealth CRD", lambda: server.request(
        "GET", "/apis/eventmesh-health.kyma-project.io/v1alpha1/eventmeshhealths"
    ).status_code == 200)
    apply_example(server, "healthy-mesh")
    # The example's admission webhook configurations point at a webhook that does not run
    # here: the API server would reject every later write to Knative objects. A mesh
    # without them is still healthy (they are judged when present).
    for kind in ("validatingwebhookconfigurations", "mutatingwebhookconfigurations"):
        url = f"/apis/admissionregistration.k8s.io/v1/{kind}"
        for item in server.request("GET", url).json()["items"]:
            server.request("DELETE", f"{url}/{item['metadata']['name']}")
    try:
        yield server
    finally:
        if not control_plane.apiserver_running:
            control_plane.start_apiserver()
        clear_cluster(server)
        server.close()


def set_trigger_ready(api: ApiServer, name: str, ready: bool) -> None:
    trigger = api.request("GET", f"{TRIGGERS}/{name}").json()
    for condition in trigger["status"]["conditions"]:
        if condition["type"] in ("Ready", "SubscriberResolved"):
            condition["status"] = "True" if ready else "False"
            condition["reason"] = None if ready else "SubscriberResolveFailed"
            condition["message"] = None if ready else 'services "lambda" not found'
    answer = api.request("PUT", f"{TRIGGERS}/{name}/status", trigger)
    assert answer.status_code == 200, answer.text


def writes_by(control_plane: ControlPlane, user: str, since: str) -> list[dict[str, Any]]:
    return [
        e for e in control_plane.audit_events()
        if e.get("user", {}).get("username") == user  # type: ignore[union-attr]
        and e.get("verb") in WRITES
        and str(e.get("requestReceivedTimestamp", "")) >= since
    ]


def audit_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())


def test_break_and_mend_reach_every_output(
    control_plane: ControlPlane, api: ApiServer, tmp_path: Path
) -> None:
    serve = start_serve(control_plane, tmp_path, "serve-e2e", "--no-leader-election")
    try:
        assert serve.app("commerce-mock")["health"] == "Healthy"
        wait_for("the health object", lambda: api.request(
            "GET", "/apis/eventmesh-health.kyma-project.io/v1alpha1/eventmeshhealths/"
            "commerce-mock").json()["status"]["health"] == "Healthy")

        started = time.monotonic()
        set_trigger_ready(api, "commerce-mock-order-created", ready=False)
        broken = wait_for("the REST API to show the broken Trigger",
                          lambda: (a := serve.app("commerce-mock"))["health"] == "Unhealthy"
                          and a, 10)
        latency = time.monotonic() - started
        stage = next(ns for ns in broken["namespaces"] if ns["name"] == "stage")
        (root,) = [f for f in stage["findings"] if f["rootCause"]]
        assert root["object"]["name"] == "commerce-mock-order-created"
        assert root["reason"] == "SubscriberResolveFailed"
        print(f"change visible in the REST API after {latency:.2f}s")

        assert wait_for("the metric", lambda: serve.metric(
            "eventmesh_application_health", application="commerce-mock", health="Unhealthy"
        ) == 1.0)
        health = wait_for("the health object", lambda: (o := api.request(
            "GET", "/apis/eventmesh-health.kyma-project.io/v1alpha1/eventmeshhealths/"
            "commerce-mock").json())["status"]["health"] == "Unhealthy" and o)
        assert health["metadata"]["ownerReferences"][0]["name"] == "commerce-mock"
        app = api.request("GET", "/apis/applicationconnector.kyma-project.io/v1alpha1/"
                          "applications/commerce-mock").json()
        assert app["metadata"]["annotations"]["eventmesh-health.kyma-project.io/health"] == (
            "Unhealthy")
        assert app["status"]["installationStatus"]["status"] == "deployed"  # untouched
        events = wait_for("an Event", lambda: [
            e for e in api.request("GET", "/apis/events.k8s.io/v1/namespaces/default/events"
                                   ).json()["items"]
            if e["regarding"]["name"] == "commerce-mock" and e["type"] == "Warning"])
        assert "commerce-mock-order-created" in events[0]["note"]

        set_trigger_ready(api, "commerce-mock-order-created", ready=True)
        wait_for("recovery in the REST API",
                 lambda: serve.app("commerce-mock")["health"] == "Healthy", 10)
        wait_for("recovery of the metric", lambda: serve.metric(
            "eventmesh_application_health", application="commerce-mock", health="Healthy"
        ) == 1.0)
        wait_for("recovery of the health object", lambda: api.request(
            "GET", "/apis/eventmesh-health.kyma-project.io/v1alpha1/eventmeshhealths/"
            "commerce-mock").json()["status"]["health"] == "Healthy")

        # Steady state: nothing changes, so nothing is written.
        time.sleep(1.0)  # let the audit log catch up with the last write (written after it)
        quiet_from = audit_now()
        time.sleep(6.0)  # the quiet period being measured, not a wait for a condition
        assert writes_by(control_plane, "serve-e2e", quiet_from) == []
    finally:
        serve.stop()


def test_apiserver_restart_unknown_then_recovers(
    control_plane: ControlPlane, api: ApiServer, tmp_path: Path
) -> None:
    serve = start_serve(control_plane, tmp_path, "serve-outage", "--no-leader-election",
                        "--no-write", "--outage-after", "3s")
    try:
        assert serve.app("commerce-mock")["health"] == "Healthy"
        control_plane.stop_apiserver()
        try:
            down = wait_for("Unknown during the outage",
                            lambda: (r := serve.get("/api/v1/health").json())["health"]
                            == "Unknown" and r, 30)
            assert down["system"]["findings"][0]["reason"] == "ClusterUnreachable"
            assert all(a["health"] == "Unknown" for a in down["applications"])
        finally:
            control_plane.start_apiserver()
        wait_for("recovery after the restart",
                 lambda: serve.get("/api/v1/health").json()["health"] == "Healthy", 60)
        assert serve.process.poll() is None  # recovered without a restart
    finally:
        serve.stop()


def test_crd_installed_after_start_is_picked_up(
    control_plane: ControlPlane, api: ApiServer, tmp_path: Path
) -> None:
    crd_url = ("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
               "natsschannels.messaging.knative.dev")
    crd = api.request("GET", crd_url).json()
    assert api.request("DELETE", crd_url).status_code == 200
    wait_for("the CRD to go", lambda: api.request("GET", crd_url).status_code == 404)
    serve = start_serve(control_plane, tmp_path, "serve-crd", "--no-leader-election",
                        "--no-write")
    try:
        kind = "NatssChannel.messaging.knative.dev"
        assert serve.metric("eventmesh_kind_available", kind=kind) == 0.0
        for key in ("resourceVersion", "uid", "creationTimestamp", "managedFields"):
            crd["metadata"].pop(key, None)
        crd.pop("status", None)
        answer = api.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                             crd)
        assert answer.status_code == 201, answer.text
        wait_for("the new kind to be watched",
                 lambda: serve.metric("eventmesh_kind_available", kind=kind) == 1.0, 30)
    finally:
        serve.stop()


def test_two_replicas_only_the_leader_writes_and_the_other_takes_over(
    control_plane: ControlPlane, api: ApiServer, tmp_path: Path
) -> None:
    lease = "/apis/coordination.k8s.io/v1/namespaces/kyma-system/leases/eventmesh-health-serve"
    since = audit_now()
    first = start_serve(control_plane, tmp_path, "replica-a", "--lease-duration", "6s")
    second = start_serve(control_plane, tmp_path, "replica-b", "--lease-duration", "6s")
    try:
        holder = wait_for("a leader", lambda: api.request("GET", lease).json()["spec"].get(
            "holderIdentity"))
        leader, follower = (first, second) if holder == "replica-a" else (second, first)
        set_trigger_ready(api, "commerce-mock-customer-created", ready=False)
        for replica in (leader, follower):  # every replica serves reads
            wait_for(f"{replica.user} to see it",
                     lambda r=replica: r.app("commerce-mock")["health"] == "Unhealthy", 10)
        wait_for("the leader to write", lambda: [
            e for e in writes_by(control_plane, leader.user, since)
            if e["objectRef"]["resource"] == "eventmeshhealths"])  # type: ignore[index]
        follower_writes = [e for e in writes_by(control_plane, follower.user, since)
                           if e["objectRef"]["resource"] != "leases"]  # type: ignore[index]
        assert follower_writes == []

        leader.stop(signal.SIGKILL)  # dies without releasing the Lease
        killed = time.monotonic()
        wait_for("the other replica to take over", lambda: api.request(
            "GET", lease).json()["spec"].get("holderIdentity") == follower.user, 20)
        takeover = time.monotonic() - killed
        assert takeover < 6.0 + 2.0, f"takeover took {takeover:.1f}s (lease 6s)"
        set_trigger_ready(api, "commerce-mock-customer-created", ready=True)
        wait_for("the new leader to write", lambda: api.request(
            "GET", "/apis/eventmesh-health.kyma-project.io/v1alpha1/eventmeshhealths/"
            "commerce-mock").json()["status"]["health"] == "Healthy", 20)
    finally:
        first.stop()
        second.stop()
