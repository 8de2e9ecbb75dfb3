"""Every manifest under deploy/ is accepted by the real kube-apiserver (a server-side dry run:
schema, defaults and validation, nothing stored), and the NetworkPolicy opens exactly the
ports deploy/serve.yaml serves: the API's to the scrapers, the receiver's to the mesh."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.envtest.controlplane import ControlPlane
from tests.live_objects import ApiServer

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"


def manifests() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(DEPLOY.rglob("*.yaml")):
        if DEPLOY / "helm" in path.parents:
            continue  # the chart's templates (tests/test_helm_chart.py renders them)
        if DEPLOY / "prometheus" in path.parents:
            continue  # Prometheus rule files, not objects (tests/test_alerts.py)
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((f"{path.relative_to(DEPLOY)}:{doc['kind']}/"
                             f"{doc['metadata']['name']}", doc))
    return docs


@pytest.fixture(scope="module")
def api(control_plane: ControlPlane) -> Iterator[ApiServer]:
    server = ApiServer(control_plane)
    for ns in ("kyma-system",):
        answer = server.request("POST", "/api/v1/namespaces",
                                {"apiVersion": "v1", "kind": "Namespace",
                                 "metadata": {"name": ns}})
        assert answer.status_code in (201, 409), answer.text
    try:
        yield server
    finally:
        server.close()


@pytest.mark.envtest
@pytest.mark.parametrize(("name", "doc"), manifests(), ids=[n for n, _ in manifests()])
def test_the_api_server_accepts_every_manifest(api: ApiServer, name: str,
                                               doc: dict[str, Any]) -> None:
    url = api.resource(doc["apiVersion"], doc["kind"]).url(doc["metadata"].get("namespace"))
    answer = api.request("POST", f"{url}?dryRun=All&fieldValidation=Strict", doc)
    assert answer.status_code in (200, 201, 409), f"{name}: {answer.text}"


def _serve_ports() -> dict[str, int]:
    (deployment,) = [d for _, d in manifests() if d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert env["EVENTMESH_HEALTH_RECEIVER_PORT"] == str(ports["receiver"])
    return ports


def test_the_network_policy_opens_the_api_to_scrapers_and_the_receiver_to_the_mesh() -> None:
    ports = _serve_ports()
    (policy,) = [d for _, d in manifests() if d["kind"] == "NetworkPolicy"]
    rules = {rule["ports"][0]["port"]: rule["from"] for rule in policy["spec"]["ingress"]}
    assert set(rules) == {ports["http"], ports["receiver"]}
    assert all(len(rule["ports"]) == 1 for rule in policy["spec"]["ingress"])
    api_peers = rules[ports["http"]]
    assert all("podSelector" not in peer and peer["namespaceSelector"]["matchLabels"]
               for peer in api_peers), "the API is open only to named namespaces"
    mesh_peers = rules[ports["receiver"]]
    assert {"eventing.knative.dev/brokerRole": "filter"} in [
        peer.get("podSelector", {}).get("matchLabels") for peer in mesh_peers]
