"""Record examples/knative-v1/*: dumps of the REAL Knative Eventing v1.21, healthy and broken.

    .venv/bin/python hack/knative/record_examples.py [OUT_DIR]   (default: examples/knative-v1)

Starts the real mesh of tests/knative (knative.dev/eventing v0.48.0: reconcilers, IMC
dispatcher, broker ingress and filter on an envtest kube-apiserver + etcd), sets up one
scenario at a time in namespace `shop`, lets the real controllers write their statuses,
and writes `eventmesh-health dump` of the cluster. Every file gets `# source:` lines: what
wrote the objects (the real controllers; the test-written Deployment status and Endpoints
that stand in for kubelet and kube-controller-manager) and this script. Needs ports 8080 and
8443 free (the upstream dispatcher's) and the binaries of `make knative`.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from lightkube.resources.core_v1 import Endpoints, Namespace  # noqa: E402
from tests.knative.mesh import KnativeMesh, _from_dict  # noqa: E402
from tests.knative.receiver import Receiver  # noqa: E402

NS = "shop"
TIMEOUT = 30.0
SOURCE = (
    "# source: recorded by hack/knative/record_examples.py from the real knative.dev/eventing "
    "v0.48.0 (Knative v1.21) controllers, IMC dispatcher, broker ingress and filter\n"
    "# source: test-written (no kubelet/kube-controller-manager): system Deployment status, "
    "Endpoints, and the fields the eventing webhook defaults (tests/knative/mesh.py)\n"
)
SERVICE = {"apiVersion": "v1", "kind": "Service"}


def healthy(mesh: KnativeMesh, receiver: Receiver) -> None:
    """A Broker with two Triggers to a Service, a Channel whose Subscription feeds the
    Broker: everything Ready and acknowledged by the dispatcher."""
    mesh.expose(NS, "order-processor", receiver.port)
    mesh.create_broker(NS)
    mesh.create_trigger(NS, "order-created", "default",
                        subscriber_ref={**SERVICE, "name": "order-processor"},
                        filter_attributes={"type": "order.created"})
    mesh.create_trigger(NS, "order-shipped", "default",
                        subscriber_ref={**SERVICE, "name": "order-processor"},
                        filter_attributes={"type": "order.shipped"})
    mesh.create_channel(NS, "orders")
    mesh.create_subscription(NS, "orders-to-broker", "orders", subscriber_ref={
        "apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": "default"})
    for kind, name in (("Trigger", "order-created"), ("Trigger", "order-shipped"),
                       ("Subscription", "orders-to-broker")):
        mesh.wait_ready(kind, NS, name, TIMEOUT)
    mesh.wait_settled(NS, TIMEOUT)


def dispatcher_down(mesh: KnativeMesh, receiver: Receiver) -> None:
    """The IMC dispatcher's pods are gone: Deployment unavailable, Endpoints empty."""
    healthy(mesh, receiver)
    mesh.stop_dispatcher()
    mesh.set_deployment_available("imc-dispatcher", False)
    mesh.set_endpoints("imc-dispatcher", False)
    mesh.wait_condition("InMemoryChannel", NS, "default-kne-trigger", "Ready", "False",
                        "DispatcherEndpointsNotReady", TIMEOUT)
    mesh.wait_condition("Channel", NS, "orders", "Ready", "False", None, TIMEOUT)


def broker_deleted(mesh: KnativeMesh, receiver: Receiver) -> None:
    """The Broker was deleted; its Triggers stay, BrokerDoesNotExist."""
    healthy(mesh, receiver)
    mesh.delete("Broker", NS, "default")
    for trigger in ("order-created", "order-shipped"):
        mesh.wait_condition("Trigger", NS, trigger, "BrokerReady", "False",
                            "BrokerDoesNotExist", TIMEOUT)


def subscriber_gone(mesh: KnativeMesh, receiver: Receiver) -> None:
    """The subscriber's pods are gone (no ready endpoint); the Triggers stay Ready."""
    healthy(mesh, receiver)
    mesh.client.patch(Endpoints, "order-processor", {"subsets": []}, namespace=NS)


SCENARIOS: dict[str, Callable[[KnativeMesh, Receiver], None]] = {
    "healthy": healthy,
    "dispatcher-down": dispatcher_down,
    "broker-deleted": broker_deleted,
    "subscriber-gone": subscriber_gone,
}


def record(mesh: KnativeMesh, name: str, out: Path) -> None:
    mesh.client.create(_from_dict(Namespace, {"metadata": {"name": NS}}))
    with Receiver("order-processor") as receiver:
        SCENARIOS[name](mesh, receiver)
        with tempfile.TemporaryDirectory() as tmp:
            dump = Path(tmp) / "dump"
            subprocess.run([sys.executable, "-m", "eventmesh_health", "dump", "-o", str(dump),
                            "--kubeconfig", str(mesh.kubeconfig_path),
                            "--profile", "knative-v1"], check=True)
            target = out / name
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            for file in sorted(dump.iterdir()):
                text = file.read_text()
                if file.name != "snapshot.yaml" and "items: []" in text:
                    continue  # kinds without objects: SnapshotInfo.collected still names them
                (target / file.name).write_text(SOURCE + text)


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else ROOT / "examples" / "knative-v1"
    for name in SCENARIOS:
        with KnativeMesh() as mesh:  # a fresh cluster per scenario: no leftovers in dumps
            record(mesh, name, out)
        print(f"recorded {out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
