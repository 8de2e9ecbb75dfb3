"""The bundled examples: each broken one yields exactly the root causes its README names."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parent.parent / "examples"

# (health, {(kind, namespace, name, reason)} of the root causes), as examples/README.md says.
EXPECTED: dict[str, tuple[str, set[tuple[str, str | None, str | None, str]]]] = {
    "healthy-mesh": ("Healthy", set()),
    "healthy-mesh-kyma-1.13": ("Healthy", set()),
    "healthy-mesh-kyma-1.15": ("Healthy", set()),
    "healthy-mesh-kyma-1.18": ("Healthy", set()),
    "healthy-mesh-natss": ("Healthy", set()),
    "natss-dispatcher-down": ("Unhealthy", {
        ("Deployment", "knative-eventing", "natss-ch-dispatcher", "CrashLoopBackOff")}),
    "kafka-quota-reached": ("Unhealthy", {
        ("KafkaChannel", "kyma-integration", "commerce-mock", "TopicFailed")}),
    "adapter-revision-missing": ("Unhealthy", {
        ("Service", "kyma-integration", "commerce-mock", "RevisionMissing")}),
    "subscription-stuck-in-deletion": ("Unhealthy", {
        ("Subscription", "stage",
         "default-commerce-mock-orde-6f50e11a-dc04-5737-a664-83d0d20ae43a", "StuckInDeletion"),
        ("Subscription", "stage",
         "default-commerce-mock-cust-f2fa7825-e467-52a4-b421-9478c7e93a02", "StuckInDeletion")}),
    "application-install-failed": ("Unhealthy", {
        ("Application", None, "marketing", "InstallationFailed")}),
    "service-instance-failed": ("Unhealthy", {
        ("ServiceInstance", "stage", "sap-marketing-cloud-events-olgt2", "ProvisionCallFailed")}),
    "missing-brokersub": ("Unhealthy", {("Subscription", "kyma-integration", None, "NotFound")}),
    "missing-injection-label": ("Unhealthy", {
        ("Namespace", None, "prod", "InjectionLabelMissing")}),
    "webhook-down": ("Unhealthy", {
        ("Deployment", "knative-eventing", "eventing-webhook", "CrashLoopBackOff")}),
    "controller-crashloop": ("Unhealthy", {
        ("Deployment", "knative-eventing", "eventing-controller", "CrashLoopBackOff")}),
    "broker-filter-unavailable": ("Unhealthy", {
        ("Deployment", "stage", "default-broker-filter", "ImagePullBackOff")}),
    "malformed-objects": ("Unknown", {
        ("Trigger", "stage", "legacy-catch-all", "MalformedObject"),
        ("Pod", "stage", None, "MalformedObject")}),
    "progressing": ("Progressing", {
        ("Trigger", "stage", "commerce-mock-customer-created", "GenerationNotObserved")}),
}


def check(example: str) -> tuple[int, dict[str, object]]:
    result = subprocess.run(
        [sys.executable, "-m", "eventmesh_health", "check", "-o", "json",
         "--snapshot", str(EXAMPLES / example)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.stderr == ""
    return result.returncode, json.loads(result.stdout)


def findings(report: dict[str, object]) -> list[dict[str, object]]:
    found = list(report["system"]["findings"])  # type: ignore[index]
    for app in report["applications"]:  # type: ignore[attr-defined]
        found.extend(app["findings"])
        for ns in app["namespaces"]:
            found.extend(ns["findings"])
    return found


def test_every_example_is_covered() -> None:
    # knative-v1/ holds the Knative v1 recordings (tests/test_knative_examples.py).
    folders = {p.name for p in EXAMPLES.iterdir() if p.is_dir()} - {"knative-v1"}
    assert folders == set(EXPECTED)
    readme = (EXAMPLES / "README.md").read_text()
    for name in folders:
        assert f"`{name}`" in readme


@pytest.mark.parametrize("example", sorted(EXPECTED))
def test_example_root_causes(example: str) -> None:
    health, roots = EXPECTED[example]
    code, report = check(example)
    assert report["health"] == health
    assert code == (0 if health == "Healthy" else 1)
    found = {
        (f["object"]["kind"], f["object"]["namespace"], f["object"]["name"], f["reason"])
        for f in findings(report) if f["rootCause"]
    }
    assert found == roots
    # Every symptom points at one of those root causes.
    for finding in findings(report):
        if not finding["rootCause"]:
            cause = finding["causedBy"]
            assert (cause["kind"], cause["namespace"], cause["name"]) in {r[:3] for r in roots}


@pytest.mark.parametrize("example", ["healthy-mesh", "healthy-mesh-kyma-1.13",
                                     "healthy-mesh-kyma-1.15", "healthy-mesh-kyma-1.18",
                                     "healthy-mesh-natss"])
def test_healthy_mesh_states_and_skipped_kinds(example: str) -> None:
    _, report = check(example)
    states = {a["name"]: a["state"] for a in report["applications"]}  # type: ignore[attr-defined]
    assert states == {"commerce-mock": 4, "marketing": 4, "crm-legacy": 1}
    skipped = report["source"]["skippedKinds"]  # type: ignore[index]
    assert {"ConfigMap", "ServiceAccount"} <= set(skipped)


def test_symptoms_of_the_quota_example() -> None:
    _, report = check("kafka-quota-reached")
    symptoms = {(f["object"]["kind"], f["object"]["name"]) for f in findings(report)
                if not f["rootCause"]}
    assert ("Channel", "commerce-mock") in symptoms
    assert ("HTTPSource", "commerce-mock") in symptoms
    assert sum(1 for kind, _ in symptoms if kind == "Subscription") == 2  # brokersubs


def test_each_version_variant_has_its_shape() -> None:
    """Kyma 1.13: Helm 2's DEPLOYED and a Knative Service adapter; 1.14: Helm 3's deployed;
    1.15: the adapter a Deployment (no Knative Service) - and each is Healthy."""
    import yaml

    def items(example: str, name: str) -> list[dict[str, object]]:
        data = yaml.safe_load((EXAMPLES / example / name).read_text())
        return list(data["items"])

    def statuses(example: str) -> set[object]:
        return {a["status"]["installationStatus"]["status"]  # type: ignore[index]
                for a in items(example, "applications.yaml")}

    assert statuses("healthy-mesh-kyma-1.13") == {"DEPLOYED"}
    assert statuses("healthy-mesh") == {"deployed"}
    assert statuses("healthy-mesh-kyma-1.15") == {"deployed"}
    assert items("healthy-mesh-kyma-1.15", "services.serving.knative.dev.yaml") == []
    adapters = {d["metadata"]["name"] for d in items("healthy-mesh-kyma-1.15", "deployments.yaml")  # type: ignore[index]
                if d["metadata"].get("namespace") == "kyma-integration"}  # type: ignore[union-attr]
    assert {"commerce-mock", "marketing", "crm-legacy"} <= adapters


def test_natss_variants_have_their_shape() -> None:
    """NATSS (the Kyma default without the Event Hubs overrides): NatssChannels only, written as
    eventing-contrib v0.12.0 writes them; 1.18: 1.16+ HTTPSource conditions and no Serving."""
    import yaml

    def items(example: str, name: str) -> list[dict]:  # type: ignore[type-arg]
        return list(yaml.safe_load((EXAMPLES / example / name).read_text())["items"])

    for example in ("healthy-mesh-natss", "natss-dispatcher-down", "healthy-mesh-kyma-1.18"):
        assert items(example, "kafkachannels.knativekafka.kyma-project.io.yaml") == []
        channels = items(example, "natsschannels.messaging.knative.dev.yaml")
        assert len(channels) == 5
        for nc in channels:
            meta, status = nc["metadata"], nc["status"]
            assert meta["finalizers"] == ["natss-ch-dispatcher"]
            assert "observedGeneration" not in status
            assert status["address"]["hostname"] == (
                f"{meta['name']}-kn-channel.{meta['namespace']}.svc.cluster.local")
            assert [c["type"] for c in status["conditions"]] == [
                "Addressable", "ChannelServiceReady", "DispatcherReady", "EndpointsReady",
                "Ready", "ServiceReady"]
        deployments = {d["metadata"]["name"] for d in items(example, "deployments.yaml")}
        assert {"natss-ch-controller", "natss-ch-dispatcher"} <= deployments
        assert "knative-eventing-kafka-channel-controller" not in deployments
    down = {(c["type"], c["status"], c.get("reason"))
            for nc in items("natss-dispatcher-down", "natsschannels.messaging.knative.dev.yaml")
            for c in nc["status"]["conditions"] if c["status"] != "True"}
    assert down == {("DispatcherReady", "False", "DispatcherNotReady"),
                    ("Ready", "False", "DispatcherNotReady")}
    assert not (EXAMPLES / "healthy-mesh-kyma-1.18" / "services.serving.knative.dev.yaml").exists()
    info = yaml.safe_load((EXAMPLES / "healthy-mesh-kyma-1.18" / "snapshot.yaml").read_text())
    assert "services.serving.knative.dev" not in info["collected"]
    assert "not installed" in info["unavailable"]["services.serving.knative.dev"]
    for source in items("healthy-mesh-kyma-1.18", "httpsources.yaml"):
        assert [c["type"] for c in source["status"]["conditions"]] == [
            "Deployed", "PeerAuthenticationCreated", "Ready", "ServiceCreated", "SinkProvided"]
