"""Table tests for every judgement rule (kstatus style): object in, (health, reason) out."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from eventmesh_health.analysis.rules import (
    APPLICATION_RULES,
    DEPLOYMENT_RULES,
    KNATIVE_RULES,
    NAMESPACE_LABEL_RULES,
    SERVICE_INSTANCE_RULES,
    SERVICE_RULES,
    STATEFULSET_RULES,
    Context,
    Rule,
    Thresholds,
    decide,
    judge,
)
from eventmesh_health.model import Health
from eventmesh_health.topology import Judge
from eventmesh_health.topology.kyma1 import (
    CHANNEL,
    HTTP_SOURCE,
    KAFKA_CHANNEL,
    KNATIVE_SERVICE,
    NATSS_CHANNEL,
)
from eventmesh_health.topology.kyma1 import PROFILE as KYMA_1

NOW = datetime.fromisoformat("2020-06-15T10:00:00+00:00")
OLD = "2020-06-01T08:00:00Z"


def obj(generation: int = 1, created: str = OLD, **fields: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "x", "namespace": "ns", "generation": generation,
                            "creationTimestamp": created}
    meta.update(fields.pop("meta", {}))
    return {"apiVersion": "v1", "kind": "Thing", "metadata": meta, **fields}


def conds(*items: tuple[str, str] | tuple[str, str, str], observed: int = 1,
          at: str = "2020-06-15T09:59:00Z") -> dict[str, Any]:
    return {
        "observedGeneration": observed,
        "conditions": [
            {"type": t[0], "status": t[1], "lastTransitionTime": at,
             **({"reason": t[2], "message": f"{t[2]} happened"} if len(t) > 2 else {})}
            for t in items
        ],
    }


def run(rules: tuple[Rule, ...], o: dict[str, Any], **ctx: Any) -> tuple[Health, str]:
    verdict = decide(rules, o, Context(now=NOW, **ctx))
    return verdict.health, verdict.reason


KNATIVE = [
    ("ready", obj(status=conds(("Ready", "True"))), Health.HEALTHY, "Ready"),
    ("ready-false-names-subcondition",
     obj(status=conds(("TopicReady", "False", "TopicFailed"), ("Ready", "False", "NotReady"))),
     Health.UNHEALTHY, "TopicFailed"),
    ("ready-false-without-subcondition", obj(status=conds(("Ready", "False", "Boom"))),
     Health.UNHEALTHY, "Boom"),
    ("ready-false-no-reason", obj(status=conds(("Ready", "False"))), Health.UNHEALTHY,
     "ReadyFalse"),
    ("informational-false-subcondition-ignored",
     obj(status={"observedGeneration": 1, "conditions": [
         {"type": "Addressable", "status": "False", "severity": "Info", "reason": "X"},
         {"type": "Ready", "status": "False", "reason": "Real"}]}),
     Health.UNHEALTHY, "Real"),
    ("ready-unknown-recent", obj(status=conds(("Ready", "Unknown", "Working"))),
     Health.PROGRESSING, "Working"),
    ("ready-unknown-stale",
     obj(status=conds(("Ready", "Unknown", "Working"), at="2020-06-15T08:00:00Z")),
     Health.DEGRADED, "Working"),
    ("generation-not-observed", obj(generation=2, status=conds(("Ready", "True"))),
     Health.PROGRESSING, "GenerationNotObserved"),
    ("observed-generation-unset", obj(generation=2, status={"conditions": [
        {"type": "Ready", "status": "True"}]}), Health.PROGRESSING, "GenerationNotObserved"),
    ("no-status-old", obj(), Health.UNKNOWN, "NoStatus"),
    ("no-status-young", obj(created="2020-06-15T09:59:00Z"), Health.PROGRESSING,
     "NotYetReconciled"),
    ("no-ready-condition", obj(status=conds(("Addressable", "True"))), Health.UNKNOWN,
     "ReadyConditionMissing"),
    ("stuck-in-deletion", obj(meta={"deletionTimestamp": "2020-06-15T09:00:00Z",
                                    "finalizers": ["f"]}, status=conds(("Ready", "True"))),
     Health.UNHEALTHY, "StuckInDeletion"),
    ("terminating", obj(meta={"deletionTimestamp": "2020-06-15T09:59:00Z",
                              "finalizers": ["f"]}), Health.PROGRESSING, "Terminating"),
    ("deleting-without-finalizers-is-never-stuck",
     obj(meta={"deletionTimestamp": "2020-06-14T09:00:00Z"}), Health.PROGRESSING, "Terminating"),
    ("conditions-not-a-list", obj(status={"observedGeneration": 1, "conditions": {"a": 1}}),
     Health.UNKNOWN, "MalformedObject"),
    ("condition-not-a-map", obj(status={"observedGeneration": 1, "conditions": ["Ready"]}),
     Health.UNKNOWN, "MalformedObject"),
    ("generation-not-an-int", obj(generation="one", status=conds(("Ready", "True"))),  # type: ignore[arg-type]
     Health.UNKNOWN, "MalformedObject"),
    ("bad-timestamp", obj(meta={"deletionTimestamp": "yesterday"}), Health.UNKNOWN,
     "MalformedObject"),
]


@pytest.mark.parametrize(("case", "o", "health", "reason"), KNATIVE, ids=[c[0] for c in KNATIVE])
def test_knative_readiness(case: str, o: dict[str, Any], health: Health, reason: str) -> None:
    assert run(KNATIVE_RULES, o) == (health, reason)


def unobserved(generation: int, *items: tuple[str, str] | tuple[str, str, str]) -> dict[str, Any]:
    """An object whose controller never writes observedGeneration (Channel, KafkaChannel,
    NatssChannel, HTTPSource): a generation above 1 and conditions without the field."""
    status = conds(*items)
    del status["observedGeneration"]
    return obj(generation=generation, status=status)


# (case, object, does its kind's controller write observedGeneration, health, reason)
GENERATIONS = [
    ("written-and-behind", obj(generation=2, status=conds(("Ready", "True"))), True,
     Health.PROGRESSING, "GenerationNotObserved"),
    ("written-and-current", obj(generation=2, status=conds(("Ready", "True"), observed=2)), True,
     Health.HEALTHY, "Ready"),
    ("never-written-ready", unobserved(3, ("Ready", "True")), False, Health.HEALTHY, "Ready"),
    ("never-written-ready-false", unobserved(3, ("TopicReady", "False", "TopicFailed"),
                                             ("Ready", "False", "TopicFailed")),
     False, Health.UNHEALTHY, "TopicFailed"),
    ("never-written-ready-unknown", unobserved(2, ("Ready", "Unknown", "Working")), False,
     Health.PROGRESSING, "Working"),
    ("never-written-no-status-old", obj(), False, Health.UNKNOWN, "NoStatus"),
    # A False the controller reported outranks "not yet observed", on either kind of kind.
    ("written-behind-but-ready-false",
     obj(generation=3, status=conds(("Subscribed", "False", "NotSubscribed"),
                                    ("Ready", "False", "NotSubscribed"), observed=2)),
     True, Health.UNHEALTHY, "NotSubscribed"),
    ("written-behind-ready-false-no-subcondition",
     obj(generation=2, status=conds(("Ready", "False", "Boom"))), True,
     Health.UNHEALTHY, "Boom"),
    ("written-behind-ready-unknown", obj(generation=2, status=conds(("Ready", "Unknown", "W"))),
     True, Health.PROGRESSING, "GenerationNotObserved"),
]


@pytest.mark.parametrize(("case", "o", "observes", "health", "reason"), GENERATIONS,
                         ids=[c[0] for c in GENERATIONS])
def test_generation_only_where_the_controller_writes_it(
    case: str, o: dict[str, Any], observes: bool, health: Health, reason: str
) -> None:
    assert run(KNATIVE_RULES, o, observes_generation=observes) == (health, reason)
    # The fast path of `judge` agrees with the rules.
    verdict = judge(Judge.KNATIVE, o, Context(now=NOW, observes_generation=observes))
    assert (verdict.health, verdict.reason) == (health, reason)


def test_the_profile_says_which_kinds_write_observed_generation() -> None:
    writes = {k.kind for k in KYMA_1.kinds if k.observed_generation}
    # docs/reference/kyma1-knative-shapes.md, "Who writes status.observedGeneration".
    assert writes == {"Broker", "Trigger", "Subscription", "Service", "InMemoryChannel"}
    assert KNATIVE_SERVICE.observed_generation
    for kind in (CHANNEL, KAFKA_CHANNEL, NATSS_CHANNEL, HTTP_SOURCE):
        assert not kind.observed_generation, kind.kind


def test_stuck_threshold_is_configurable() -> None:
    o = obj(meta={"deletionTimestamp": "2020-06-15T09:59:00Z", "finalizers": ["f"]})
    assert run(KNATIVE_RULES, o, thresholds=Thresholds(stuck_deletion=timedelta(0)))[1] == (
        "StuckInDeletion"
    )


def app(status: str | None, description: str = "") -> dict[str, Any]:
    return obj(status={"installationStatus": {"status": status, "description": description}}
               if status else None)


APPLICATION = [
    # Helm 2 (Kyma 1.11-1.13) upper case, Helm 3 (1.14-1.20) lower case.
    ("deployed", app("DEPLOYED"), Health.HEALTHY, "Ready"),
    ("deployed-helm3", app("deployed", "Install complete"), Health.HEALTHY, "Ready"),
    ("failed", app("FAILED", "helm error"), Health.UNHEALTHY, "InstallationFailed"),
    ("failed-helm3", app("failed", 'Release "x" failed: boom'), Health.UNHEALTHY,
     "InstallationFailed"),
    ("failed-without-description", app("failed"), Health.UNHEALTHY, "InstallationFailed"),
    ("skipped-is-no-fault", app("INSTALLATION_SKIPPED", "Installation will not be performed"),
     Health.HEALTHY, "InstallationSkipped"),
    ("pending", app("PENDING_INSTALL"), Health.PROGRESSING, "InstallationPending"),
    ("pending-install-helm3", app("pending-install"), Health.PROGRESSING, "InstallationPending"),
    ("pending-upgrade-helm3", app("pending-upgrade"), Health.PROGRESSING, "InstallationPending"),
    ("uninstalling-helm3", app("uninstalling"), Health.PROGRESSING, "InstallationPending"),
    ("superseded", app("superseded"), Health.UNHEALTHY, "NotDeployed"),
    ("unknown-helm2", app("UNKNOWN"), Health.UNHEALTHY, "NotDeployed"),
    ("no-status", app(None), Health.UNKNOWN, "NoStatus"),
    ("status-not-a-string", obj(status={"installationStatus": {"status": 3}}), Health.UNKNOWN,
     "MalformedObject"),
]


@pytest.mark.parametrize(("case", "o", "health", "reason"), APPLICATION,
                         ids=[c[0] for c in APPLICATION])
def test_application(case: str, o: dict[str, Any], health: Health, reason: str) -> None:
    assert run(APPLICATION_RULES, o) == (health, reason)


def test_failed_application_message_names_status_and_description() -> None:
    verdict = decide(APPLICATION_RULES, app("FAILED", "timed out"), Context(now=NOW))
    assert verdict.message == "installationStatus.status is FAILED: timed out"


def si(**status: Any) -> dict[str, Any]:
    return obj(status=status)


SERVICE_INSTANCE = [
    ("provisioned", si(provisionStatus="Provisioned", reconciledGeneration=1), Health.HEALTHY,
     "Ready"),
    ("provisioned-update-pending", obj(generation=2, status={
        "provisionStatus": "Provisioned", "reconciledGeneration": 1}), Health.PROGRESSING,
     "UpdateInProgress"),
    ("failed-condition", si(provisionStatus="NotProvisioned", conditions=[
        {"type": "Ready", "status": "False", "reason": "ProvisionCallFailed"},
        {"type": "Failed", "status": "True", "reason": "ProvisionCallFailed"}]),
     Health.UNHEALTHY, "ProvisionCallFailed"),
    ("async-in-progress", si(asyncOpInProgress=True, conditions=[
        {"type": "Ready", "status": "False", "reason": "Provisioning"}]), Health.PROGRESSING,
     "Provisioning"),
    ("ready-false", si(provisionStatus="NotProvisioned", conditions=[
        {"type": "Ready", "status": "False", "reason": "ErrorNonexistentServiceClass"}]),
     Health.UNHEALTHY, "ErrorNonexistentServiceClass"),
    ("not-provisioned", si(provisionStatus="NotProvisioned"), Health.UNHEALTHY,
     "NotProvisioned"),
    ("no-status", obj(), Health.UNKNOWN, "NoStatus"),
    # service-catalog v0.3 initialises the status before it processes the instance.
    ("initialised-young", obj(created="2020-06-15T09:59:30Z", status={
        "provisionStatus": "", "conditions": [], "deprovisionStatus": "NotRequired",
        "asyncOpInProgress": False}), Health.PROGRESSING, "NotYetReconciled"),
    ("initialised-old", obj(status={
        "provisionStatus": "", "conditions": [], "deprovisionStatus": "NotRequired",
        "asyncOpInProgress": False}), Health.UNKNOWN, "NoStatus"),
    ("in-flight", si(provisionStatus="", currentOperation="Provision", conditions=[
        {"type": "Ready", "status": "False", "reason": "ProvisionRequestInFlight"}]),
     Health.PROGRESSING, "Provisioning"),
]


@pytest.mark.parametrize(("case", "o", "health", "reason"), SERVICE_INSTANCE,
                         ids=[c[0] for c in SERVICE_INSTANCE])
def test_service_instance(case: str, o: dict[str, Any], health: Health, reason: str) -> None:
    assert run(SERVICE_INSTANCE_RULES, o) == (health, reason)


def dep(replicas: int = 1, available: Any = 1, **status: Any) -> dict[str, Any]:
    return obj(spec={"replicas": replicas},
               status={"observedGeneration": 1, "availableReplicas": available, **status})


def pod(reason: str | None = None, phase: str = "Running") -> dict[str, Any]:
    state = {"waiting": {"reason": reason}} if reason else {"running": {}}
    return obj(status={"phase": phase, "containerStatuses": [
        {"name": "c", "restartCount": 3, "state": state,
         "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}}]})


DEPLOYMENTS = [
    ("available", dep(), [pod()], Health.HEALTHY, "Ready"),
    ("scaled-to-zero", dep(replicas=0, available=0), [], Health.UNHEALTHY, "ScaledToZero"),
    ("unavailable", dep(available=0), [], Health.UNHEALTHY, "DeploymentUnavailable"),
    ("crashloop", dep(available=0), [pod("CrashLoopBackOff")], Health.UNHEALTHY,
     "CrashLoopBackOff"),
    ("image-pull", dep(available=0), [pod("ImagePullBackOff")], Health.UNHEALTHY,
     "ImagePullBackOff"),
    ("pod-failed", dep(available=0), [pod(phase="Failed")], Health.UNHEALTHY, "PodFailed"),
    ("partially-available", dep(replicas=3, available=2), [pod()], Health.DEGRADED,
     "ReplicasUnavailable"),
    ("available-but-one-pod-crashing", dep(replicas=2, available=2),
     [pod(), pod("CrashLoopBackOff")], Health.DEGRADED, "CrashLoopBackOff"),
    ("progress-deadline-exceeded", dep(conditions=[
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]), [],
     Health.DEGRADED, "ProgressDeadlineExceeded"),
    ("rollout-not-observed", obj(generation=2, spec={"replicas": 1}, status={
        "observedGeneration": 1, "availableReplicas": 0}), [], Health.PROGRESSING,
     "GenerationNotObserved"),
    ("young-rollout", obj(created="2020-06-15T09:59:00Z", spec={"replicas": 1}, status={
        "observedGeneration": 1, "availableReplicas": 0, "conditions": [
            {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}]}), [],
     Health.PROGRESSING, "RolloutInProgress"),
    # A young Deployment whose rollout completed and that lost its replicas since: not
    # starting up (the real Knative mesh's dispatcher, test-written like this).
    ("young-rollout-complete-then-lost", obj(created="2020-06-15T09:59:00Z",
                                             spec={"replicas": 1}, status={
        "observedGeneration": 1, "availableReplicas": 0, "conditions": [
            {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable"}]}), [],
     Health.UNHEALTHY, "DeploymentUnavailable"),
    ("no-status", obj(spec={"replicas": 1}), [], Health.UNKNOWN, "NoStatus"),
    ("replicas-not-an-int", dep(available="two"), [], Health.UNKNOWN, "MalformedObject"),
]


@pytest.mark.parametrize(("case", "o", "pods", "health", "reason"), DEPLOYMENTS,
                         ids=[c[0] for c in DEPLOYMENTS])
def test_deployment(case: str, o: dict[str, Any], pods: list[dict[str, Any]], health: Health,
                    reason: str) -> None:
    assert run(DEPLOYMENT_RULES, o, pods=pods) == (health, reason)


def sts(replicas: int = 1, ready: Any = 1, **status: Any) -> dict[str, Any]:
    return obj(spec={"replicas": replicas},
               status={"observedGeneration": 1, "replicas": replicas, "readyReplicas": ready,
                       "currentReplicas": replicas, **status})


# application-operator is a StatefulSet in every Kyma 1.x (no availableReplicas before K8s 1.22).
STATEFULSETS = [
    ("ready", sts(), [pod()], Health.HEALTHY, "Ready"),
    ("scaled-to-zero", sts(replicas=0, ready=0), [], Health.UNHEALTHY, "ScaledToZero"),
    ("none-ready", sts(ready=0), [], Health.UNHEALTHY, "ReplicasUnavailable"),
    ("crashloop", sts(ready=0), [pod("CrashLoopBackOff")], Health.UNHEALTHY,
     "CrashLoopBackOff"),
    ("partly-ready", sts(replicas=2, ready=1), [pod()], Health.DEGRADED, "ReplicasUnavailable"),
    ("ready-but-pod-crashing", sts(), [pod("CrashLoopBackOff")], Health.DEGRADED,
     "CrashLoopBackOff"),
    ("rollout-not-observed", obj(generation=2, spec={"replicas": 1}, status={
        "observedGeneration": 1, "readyReplicas": 0}), [], Health.PROGRESSING,
     "GenerationNotObserved"),
    ("young-starting", obj(created="2020-06-15T09:59:00Z", spec={"replicas": 1}, status={
        "observedGeneration": 1, "readyReplicas": 0}), [], Health.PROGRESSING,
     "RolloutInProgress"),
    ("no-status", obj(spec={"replicas": 1}), [], Health.UNKNOWN, "NoStatus"),
    ("ready-not-an-int", sts(ready="one"), [], Health.UNKNOWN, "MalformedObject"),
]


@pytest.mark.parametrize(("case", "o", "pods", "health", "reason"), STATEFULSETS,
                         ids=[c[0] for c in STATEFULSETS])
def test_statefulset(case: str, o: dict[str, Any], pods: list[dict[str, Any]], health: Health,
                     reason: str) -> None:
    assert run(STATEFULSET_RULES, o, pods=pods) == (health, reason)


def test_crashloop_message_names_pod_container_restarts_and_exit() -> None:
    verdict = decide(DEPLOYMENT_RULES, dep(available=0),
                     Context(now=NOW, pods=[pod("CrashLoopBackOff")]))
    assert "pod x container c: CrashLoopBackOff, 3 restarts, last exit code 1 (Error)" in (
        verdict.message
    )


ENDPOINTS = [
    ("ready-address", [{"kind": "Endpoints", "subsets": [{"addresses": [{"ip": "1.2.3.4"}]}]}],
     Health.HEALTHY, "Ready"),
    ("only-not-ready", [{"kind": "Endpoints",
                         "subsets": [{"notReadyAddresses": [{"ip": "1.2.3.4"}]}]}],
     Health.UNHEALTHY, "NoReadyEndpoints"),
    ("slice-ready", [{"kind": "EndpointSlice", "endpoints": [{"conditions": {"ready": True}}]}],
     Health.HEALTHY, "Ready"),
    ("slice-not-ready", [{"kind": "EndpointSlice",
                          "endpoints": [{"conditions": {"ready": False}}]}],
     Health.UNHEALTHY, "NoReadyEndpoints"),
    ("none", [], Health.UNHEALTHY, "NoReadyEndpoints"),
]


@pytest.mark.parametrize(("case", "endpoints", "health", "reason"), ENDPOINTS,
                         ids=[c[0] for c in ENDPOINTS])
def test_service_endpoints(case: str, endpoints: list[dict[str, Any]], health: Health,
                           reason: str) -> None:
    assert run(SERVICE_RULES, obj(), endpoints=endpoints) == (health, reason)


LABEL = ("knative-eventing-injection", "enabled")


@pytest.mark.parametrize(
    ("labels", "health", "reason"),
    [
        ({"knative-eventing-injection": "enabled"}, Health.HEALTHY, "Ready"),
        ({"knative-eventing-injection": "disabled"}, Health.UNHEALTHY, "InjectionLabelMissing"),
        ({}, Health.UNHEALTHY, "InjectionLabelMissing"),
        ("not-a-map", Health.UNKNOWN, "MalformedObject"),
    ],
)
def test_namespace_label(labels: Any, health: Health, reason: str) -> None:
    assert run(NAMESPACE_LABEL_RULES, obj(meta={"labels": labels}), label=LABEL) == (
        health, reason
    )
