"""The catalogue of reasons: every finding reason this tool makes up itself.

A finding's `reason` is the controller's own reason where there is one (`TopicFailed`,
`RevisionMissing`, `CrashLoopBackOff`, ... passed through as the controller wrote it) and
otherwise one of these. The rules, the probing and `serve` use these constants, never a
string literal (tests/test_reasons.py checks the source), and the README's list is this
catalogue: `python -m eventmesh_health.reasons` prints it, and the test compares.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

__all__ = ["CATALOGUE", "DATA_PLANE", "markdown"]

_CATALOGUE: dict[str, str] = {}


def _reason(name: str, meaning: str) -> str:
    _CATALOGUE[name] = meaning
    return name


# --- objects and their status (analysis.rules, analysis.graph) --------------------------------
READY = _reason("Ready", "healthy: nothing to report (the reason of a healthy verdict)")
NOT_FOUND = _reason("NotFound", "an expected object does not exist")
NOT_YET_CREATED = _reason(
    "NotYetCreated", "an expected object does not exist yet while something upstream is still "
    "being set up (Progressing)")
NOT_COLLECTED = _reason(
    "NotCollected", "the snapshot holds no object of the kind, so whether one exists is unknown")
KIND_NOT_AVAILABLE = _reason(
    "KindNotAvailable", "the kind could not be read: its CRD is not installed, serves another "
    "version, or its aggregated API is down")
MALFORMED_OBJECT = _reason(
    "MalformedObject", "an object has fields of the wrong type, or two conditions of one type")
MALFORMED_CANDIDATE = _reason(
    "MalformedCandidate", "not found, but a malformed object of the kind where it should be may "
    "be it")
UNUSABLE_INPUT = _reason("UnusableInput", "part of a dump is not an object (e.g. a bare string)")
STUCK_IN_DELETION = _reason(
    "StuckInDeletion", "deleted, but finalizers have held it longer than --stuck-deletion-after")
TERMINATING = _reason("Terminating", "being deleted, finalizers still running")
NOT_YET_RECONCILED = _reason(
    "NotYetReconciled", "young, and its controller has not written a status yet (Progressing)")
NO_STATUS = _reason(
    "NoStatus", "older than --progress-deadline and its controller has never written a status")
GENERATION_NOT_OBSERVED = _reason(
    "GenerationNotObserved", "its controller has not yet observed the newest generation")
READY_CONDITION_MISSING = _reason("ReadyConditionMissing", "conditions, but no Ready condition")
INSTALLATION_SKIPPED = _reason(
    "InstallationSkipped", "the Application skips installation by design (healthy)")
INSTALLATION_PENDING = _reason(
    "InstallationPending", "the Application's Helm release is being installed or upgraded")
INSTALLATION_FAILED = _reason("InstallationFailed", "the Application's Helm release failed")
NOT_DEPLOYED = _reason(
    "NotDeployed", "the Application's Helm release is in a state other than deployed")
UPDATE_IN_PROGRESS = _reason(
    "UpdateInProgress", "a ServiceInstance's newest generation is not reconciled yet")
PROVISIONING = _reason("Provisioning", "a ServiceInstance is being provisioned")
PROVISION_FAILED = _reason(
    "ProvisionFailed", "a ServiceInstance's Failed condition gives no reason of its own")
NOT_PROVISIONED = _reason("NotProvisioned", "a ServiceInstance is not Provisioned")
POD_FAILED = _reason("PodFailed", "a Pod of the workload is in phase Failed")
SCALED_TO_ZERO = _reason("ScaledToZero", "a workload has spec.replicas 0")
ROLLOUT_IN_PROGRESS = _reason(
    "RolloutInProgress", "a young Deployment has no available replica yet, still progressing")
DEPLOYMENT_UNAVAILABLE = _reason("DeploymentUnavailable", "a Deployment has no available replica")
PROGRESS_DEADLINE_EXCEEDED = _reason(
    "ProgressDeadlineExceeded", "the Deployment controller's own reason, repeated: a rollout "
    "did not progress in time")
REPLICAS_UNAVAILABLE = _reason(
    "ReplicasUnavailable", "a workload has fewer ready replicas than it wants")
NO_READY_ENDPOINTS = _reason(
    "NoReadyEndpoints", "a webhook's Service has no ready address in its Endpoints or "
    "EndpointSlices")
WEBHOOK_UNAVAILABLE = _reason(
    "WebhookUnavailable", "an admission webhook calls a Service that cannot answer")
INJECTION_LABEL_MISSING = _reason(
    "InjectionLabelMissing", "the namespace lacks the label that makes Knative create its Broker")
FILTER_MATCHES_NO_KNOWN_TYPE = _reason(
    "FilterMatchesNoKnownType", "a Ready Trigger filters on an event type that none of the "
    "types known to reach its Broker (EventTypes, sources) is: it receives nothing")
CLASS_NOT_JUDGED = _reason(
    "ClassNotJudged", "an object of a class the profile cannot judge (a Broker of an unknown "
    "class): Ready, but what serves it is unknown")

# --- the data plane (probing.health) -----------------------------------------------------------
NO_HEARTBEAT = _reason("NoHeartbeat", "heartbeats injected at a hop stopped arriving")
HEARTBEATS_LOST = _reason(
    "HeartbeatsLost", "isolated heartbeat losses above the allowed ratio of the window")
HEARTBEAT_LATENCY_HIGH = _reason(
    "HeartbeatLatencyHigh", "the newest heartbeats of a hop were all slower than the SLO")
HEARTBEAT_DUPLICATES = _reason(
    "HeartbeatDuplicates", "the newest heartbeats of a hop were all delivered more than once")
HEARTBEAT_INJECTION_FAILED = _reason(
    "HeartbeatInjectionFailed", "probes injected at a hop fail while the path works: the "
    "checker's way in (its URL) does not")
HEARTBEAT_PENDING = _reason("HeartbeatPending", "probing started, no heartbeat has arrived yet")
DATA_PLANE_NOT_PROBED = _reason(
    "DataPlaneNotProbed", "heartbeats are not judged (the control plane is not healthy)")

# --- serve --------------------------------------------------------------------------------------
CLUSTER_UNREACHABLE = _reason(
    "ClusterUnreachable", "serve's watches have been disconnected longer than --outage-after")

CATALOGUE: Mapping[str, str] = MappingProxyType(_CATALOGUE)

# The reasons of data-plane findings.
DATA_PLANE = frozenset({NO_HEARTBEAT, HEARTBEATS_LOST, HEARTBEAT_LATENCY_HIGH,
                        HEARTBEAT_DUPLICATES, HEARTBEAT_INJECTION_FAILED, HEARTBEAT_PENDING,
                        DATA_PLANE_NOT_PROBED})


def markdown() -> str:
    """The README's list: one table row per reason, in catalogue order."""
    rows = ["| reason | meaning |", "|---|---|"]
    rows += [f"| `{name}` | {meaning} |" for name, meaning in CATALOGUE.items()]
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
