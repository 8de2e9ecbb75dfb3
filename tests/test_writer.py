"""HealthWriter against a real API server: EventMeshHealth objects, Application annotations,
Events, writes only on change (counted from the API server's audit log), leadership, RBAC."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from lightkube import ApiError, AsyncClient, Client
from lightkube.generic_resource import create_global_resource
from lightkube.models.authorization_v1 import ResourceAttributes, SelfSubjectAccessReviewSpec
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition
from lightkube.resources.authorization_v1 import SelfSubjectAccessReview
from lightkube.resources.rbac_authorization_v1 import ClusterRole, ClusterRoleBinding

from eventmesh_health.model import (
    ApplicationReport,
    Finding,
    Health,
    MeshReport,
    NamespaceReport,
    ObjectRef,
    Severity,
    SourceInfo,
    SystemReport,
    severity_for,
)
from eventmesh_health.serve.history import History
from eventmesh_health.serve.leader import DEFAULT_LEASE_NAME, LeaderElector
from eventmesh_health.serve.ratelimit import TokenBucket
from eventmesh_health.serve.writer import (
    ALL_HEALTHY,
    EVENT_KIND,
    GROUP,
    HEALTH_ANNOTATION,
    HEALTH_KIND,
    REASON_ANNOTATION,
    REPORTING_CONTROLLER,
    TRANSITION_ANNOTATION,
    HealthWriter,
    application_annotations,
    health_status,
    root_causes,
)
from eventmesh_health.sources.cluster import Connection, load_config, resource_class
from eventmesh_health.topology import Kind
from eventmesh_health.topology.kyma1 import PROFILE
from eventmesh_health.topology.registry import PROFILES
from tests.envtest.controlplane import ControlPlane
from tests.envtest.fixtures import install_crds

REPO = Path(__file__).resolve().parents[1]
CRD_PATH = REPO / "deploy" / "crds" / "eventmeshhealths.eventmesh-health.kyma-project.io.yaml"
SERVE_ROLES = REPO / "deploy" / "rbac" / "clusterrole-serve.yaml"
SERVE_BINDINGS = REPO / "deploy" / "rbac" / "clusterrolebinding-serve.yaml"
APP_RES = create_global_resource(
    "applicationconnector.kyma-project.io", "v1alpha1", "Application", "applications"
)
HEALTH_RES = resource_class(HEALTH_KIND)
EVENT_RES = resource_class(EVENT_KIND)
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
TIMEOUT = 10.0
T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)

envtest = pytest.mark.envtest


# --- reports ----------------------------------------------------------------------------------


def ref(kind: str, namespace: str | None, name: str | None,
        api_version: str = "messaging.knative.dev/v1alpha1") -> ObjectRef:
    return ObjectRef(api_version=api_version, kind=kind, namespace=namespace, name=name)


def finding(obj: ObjectRef, reason: str, health: Health = Health.UNHEALTHY, *,
            message: str = "", caused_by: ObjectRef | None = None) -> Finding:
    return Finding(
        severity=severity_for(health), health=health, object=obj, reason=reason,
        message=message or f"{reason} happened", root_cause=caused_by is None,
        caused_by=caused_by,
    )


KAFKA = ref("KafkaChannel", "kyma-integration", "APP",
            "knativekafka.kyma-project.io/v1alpha1")
CONTROLLER = ref("Deployment", "knative-eventing", "eventing-controller", "apps/v1")


def broken_app(name: str, *, reason: str = "TopicFailed", message: str = "",
               state: int = 4) -> ApplicationReport:
    """Unhealthy: a KafkaChannel root cause in the app's chain, a symptom in a namespace,
    a namespace root cause of its own, and a symptom of a system component."""
    kafka = ref(KAFKA.kind, KAFKA.namespace, name, KAFKA.api_version)
    channel = ref("Channel", "kyma-integration", name)
    sub = ref("Subscription", "prod", None)
    broker = ref("Broker", "stage", "default", "eventing.knative.dev/v1alpha1")
    trigger = ref("Trigger", "stage", "t1", "eventing.knative.dev/v1alpha1")
    return ApplicationReport(
        name=name, health=Health.UNHEALTHY, state=state,
        findings=[
            finding(kafka, reason, message=message or "TopicReady is False: quota 5m ago"),
            finding(channel, "EmptyHostname", caused_by=kafka),
        ],
        namespaces=[
            NamespaceReport(name="prod", health=Health.UNHEALTHY, state=state,
                            findings=[finding(sub, "NotFound", caused_by=kafka)]),
            NamespaceReport(name="stage", health=Health.UNHEALTHY, state=state,
                            findings=[finding(broker, "NotReady", Health.DEGRADED),
                                      finding(trigger, "NotSubscribed", caused_by=CONTROLLER)]),
        ],
    )


def healthy_app(name: str, state: int = 4) -> ApplicationReport:
    return ApplicationReport(
        name=name, health=Health.HEALTHY, state=state,
        namespaces=[NamespaceReport(name="prod", health=Health.HEALTHY, state=state)],
    )


def mesh(*apps: ApplicationReport, taken_at: datetime = T0) -> MeshReport:
    system = [finding(CONTROLLER, "CrashLoopBackOff", message="restarted 5 times")]
    worst = Health.worst([a.health for a in apps], Health.UNHEALTHY)
    return MeshReport(
        healthy=False, health=worst,
        system=SystemReport(health=Health.UNHEALTHY, findings=system),
        applications=list(apps),
        source=SourceInfo(taken_at=taken_at.isoformat().replace("+00:00", "Z"), objects=42),
    )


# --- pure functions ---------------------------------------------------------------------------


def test_root_causes_own_chain_then_namespaces_then_system() -> None:
    report = mesh(broken_app("app"))
    causes = root_causes(report.applications[0], report)
    assert [(f.object.kind, f.reason) for f in causes] == [
        ("KafkaChannel", "TopicFailed"), ("Broker", "NotReady"),
        ("Deployment", "CrashLoopBackOff"),
    ]


def test_annotations_name_first_root_cause_or_all_healthy() -> None:
    report = mesh(broken_app("a"), healthy_app("b"))
    a, b = report.applications
    assert application_annotations(a, report, T0) == {
        HEALTH_ANNOTATION: "Unhealthy", REASON_ANNOTATION: "TopicFailed",
        TRANSITION_ANNOTATION: "2024-05-01T12:00:00Z",
    }
    assert application_annotations(b, report, T0)[REASON_ANNOTATION] == ALL_HEALTHY


def test_events_namespace_must_accept_events_about_cluster_scoped_objects() -> None:
    with pytest.raises(ValueError, match="default or kube-system"):
        HealthWriter(None, is_leader=lambda: True, events_namespace="kyma-system")  # type: ignore[arg-type]


def test_crd_manifest_names_and_printer_columns() -> None:
    crd = yaml.safe_load(CRD_PATH.read_text())
    spec = crd["spec"]
    assert crd["metadata"]["name"] == "eventmeshhealths.eventmesh-health.kyma-project.io"
    assert (spec["group"], spec["scope"]) == ("eventmesh-health.kyma-project.io", "Cluster")
    assert spec["names"]["kind"] == "EventMeshHealth"
    assert spec["names"]["plural"] == "eventmeshhealths"
    assert spec["names"]["shortNames"] == ["emh"]
    (version,) = spec["versions"]
    assert version["name"] == "v1alpha1" and version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Application"] == ".spec.application"
    assert columns["Health"] == ".status.health"
    assert columns["State"] == ".status.state"
    assert columns["Root Cause"] == ".status.rootCause"
    assert columns["Age"] == ".metadata.creationTimestamp"


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture
def health_crd(kube_client: Client) -> None:
    """The EventMeshHealth CRD from deploy/crds, installed once per control plane."""
    crd = yaml.safe_load(CRD_PATH.read_text())
    try:
        kube_client.get(CustomResourceDefinition, crd["metadata"]["name"])
    except ApiError as err:
        if err.status.code != 404:
            raise
        install_crds(kube_client, [crd])
    # Established is not yet servable: right after, requests may get 429 "storage is
    # (re)initializing". Wait until the resource can be listed.
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            list(kube_client.list(HEALTH_RES))
            return
        except ApiError as err:
            assert err.status.code == 429 and time.monotonic() < deadline, err
            time.sleep(0.1)


@pytest.fixture
def user_name() -> str:
    return f"eventmesh-health-serve-{uuid.uuid4().hex[:8]}"


def async_client_for(control_plane: ControlPlane, user: str,
                     groups: list[str] | None = None) -> AsyncClient:
    path = control_plane.make_user_kubeconfig(user, groups)
    return AsyncClient(load_config(Connection(kubeconfig=path)), trust_env=False)


@pytest.fixture
async def writer_client(
    control_plane: ControlPlane, health_crd: None, user_name: str
) -> AsyncIterator[AsyncClient]:
    """A client for a user of its own (admin rights), so the audit log tells its requests."""
    client = async_client_for(control_plane, user_name, ["system:masters"])
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
def apps(kube_client: Client, namespace: str) -> Iterator[Callable[..., dict[str, Any]]]:
    """Create Applications (cluster-scoped: named after the test's namespace)."""
    created: list[str] = []

    def make(suffix: str, *, annotations: dict[str, str] | None = None,
             labels: dict[str, str] | None = None,
             status: dict[str, Any] | None = None) -> dict[str, Any]:
        name = f"{namespace}-{suffix}"[:63]
        body = APP_RES.from_dict({
            "apiVersion": "applicationconnector.kyma-project.io/v1alpha1",
            "kind": "Application",
            "metadata": {"name": name, "annotations": annotations or {},
                         "labels": labels or {}},
            "spec": {"description": suffix, "services": []},
            "status": status or {"installationStatus": {"status": "DEPLOYED"}},
        })
        kube_client.create(body)
        created.append(name)
        return get_app(kube_client, name)

    yield make
    for name in created:
        with contextlib.suppress(ApiError):
            kube_client.delete(APP_RES, name)
        with contextlib.suppress(ApiError):
            kube_client.delete(HEALTH_RES, name)


def get_app(client: Client, name: str) -> dict[str, Any]:
    return dict(client.get(APP_RES, name))


def view(client: Client, *names: str) -> dict[str, dict[str, Any]]:
    """The Applications as an informer would hold them now."""
    return {name: get_app(client, name) for name in names}


# --- audit log --------------------------------------------------------------------------------


def audit_writes(control_plane: ControlPlane, user: str) -> list[dict[str, Any]]:
    return [
        e for e in control_plane.audit_events()
        if e.get("stage") == "ResponseComplete"
        and (e.get("user") or {}).get("username") == user  # type: ignore[union-attr]
        and e.get("verb") in WRITE_VERBS
    ]


def audited(event: dict[str, Any]) -> tuple[str, str]:
    obj = event.get("objectRef") or {}
    resource = obj.get("resource", "")
    if obj.get("subresource"):
        resource += "/" + obj["subresource"]
    return resource, str(event["verb"])


async def settled_audit(control_plane: ControlPlane, client: AsyncClient,
                        user: str) -> list[dict[str, Any]]:
    """The user's audited writes once the audit log has caught up: a marker request (a GET
    of a name that does not exist) is sent last, and waited for."""
    marker = f"audit-marker-{uuid.uuid4().hex[:10]}"
    with contextlib.suppress(ApiError):
        await client.get(HEALTH_RES, marker)
    deadline = time.monotonic() + TIMEOUT
    while not any(marker in str(e.get("requestURI", "")) for e in control_plane.audit_events()
                  if e.get("stage") == "ResponseComplete"):
        assert time.monotonic() < deadline, "audit log did not record the marker request"
        await asyncio.sleep(0.05)
    return audit_writes(control_plane, user)


def counts(events: list[dict[str, Any]]) -> dict[tuple[str, str], int]:
    result: dict[tuple[str, str], int] = {}
    for event in events:
        key = audited(event)
        result[key] = result.get(key, 0) + 1
    return result


# --- health objects ---------------------------------------------------------------------------


def without_nulls(value: Any) -> Any:
    """Kubernetes objects leave null fields out (and a merge patch drops them in arrays)."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def expected_status(report: MeshReport, name: str, transition: datetime) -> dict[str, Any]:
    """The status, built from the JSON contract (`to_json_dict`), not from the writer."""
    contract: dict[str, Any] = without_nulls(report.to_json_dict())
    app = next(a for a in contract["applications"] if a["name"] == name)
    everything = [*contract["system"]["findings"]]
    for other in contract["applications"]:
        everything += other["findings"]
        for ns in other["namespaces"]:
            everything += ns["findings"]
    own = app["findings"] + [f for ns in app["namespaces"] for f in ns["findings"]]
    roots = [f for f in own if f["rootCause"]]
    for symptom in own:
        cause = symptom.get("causedBy")
        if cause and all(r["object"] != cause for r in roots):
            roots += [f for f in everything if f["rootCause"] and f["object"] == cause][:1]
    first = roots[0] if roots else None
    where = ""
    if first:
        obj = first["object"]
        where = f"{obj['kind']} {obj['namespace'] + '/' if 'namespace' in obj else ''}{obj['name']}"
    more = len(roots) - 1 if roots else 0
    return {
        "health": app["health"],
        "state": app["state"],
        "rootCause": f"{where}: {first['reason']}" if first else "",
        "rootCauses": roots,
        "symptoms": sum(1 for f in own if not f["rootCause"]),
        "namespaces": [
            {"name": ns["name"], "health": ns["health"], "state": ns["state"],
             "rootCauses": [f for f in ns["findings"] if f["rootCause"]],
             "symptoms": sum(1 for f in ns["findings"] if not f["rootCause"])}
            for ns in app["namespaces"]
        ],
        "lastTransitionTime": transition.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "observedAt": contract["source"]["takenAt"],
        "observedGeneration": 1,
        "conditions": expected_conditions(app, first, where, more, transition),
    }


def expected_conditions(app: dict[str, Any], first: dict[str, Any] | None, where: str,
                        more: int, transition: datetime) -> list[dict[str, Any]]:
    """Ready (True only when Healthy), then Stalled or Reconciling while true (kstatus)."""
    message = f"Application {app['name']} is {app['health']}"
    if first:
        message += f"; root cause: {where}: {first['reason']}"
        if first.get("message"):
            message += f" — {first['message']}"
        if more:
            message += f" (and {more} more)"
    reason = first["reason"] if first else (
        "AllHealthy" if app["health"] == "Healthy" else app["health"])
    common = {"reason": reason, "message": message, "observedGeneration": 1,
              "lastTransitionTime": transition.strftime("%Y-%m-%dT%H:%M:%SZ")}
    ready = {"type": "Ready", "status": "True" if app["health"] == "Healthy" else "False",
             **common}
    other = {"Unhealthy": "Stalled", "Degraded": "Stalled",
             "Progressing": "Reconciling", "Unknown": "Reconciling"}.get(app["health"])
    return [ready] + ([{"type": other, "status": "True", **common}] if other else [])


@envtest
async def test_health_objects_have_owner_spec_and_the_reports_status(
    kube_client: Client, writer_client: AsyncClient, apps: Callable[..., dict[str, Any]],
) -> None:
    a, b = apps("broken"), apps("fine")
    name_a, name_b = a["metadata"]["name"], b["metadata"]["name"]
    report = mesh(broken_app(name_a), healthy_app(name_b))
    transitions = {name_a: T0 - timedelta(minutes=3), name_b: T0 - timedelta(hours=2)}
    writer = HealthWriter(writer_client, is_leader=lambda: True, events_namespace="default")

    await writer.publish(report, {name_a: a, name_b: b}, transitions)

    assert writer.write_errors == {}
    for app, name in ((a, name_a), (b, name_b)):
        obj = dict(kube_client.get(HEALTH_RES, name))
        assert obj["spec"] == {"application": name}
        assert obj["metadata"]["ownerReferences"] == [{
            "apiVersion": "applicationconnector.kyma-project.io/v1alpha1",
            "kind": "Application", "name": name, "uid": app["metadata"]["uid"],
            "controller": False, "blockOwnerDeletion": False,
        }]
        assert obj["status"] == expected_status(report, name, transitions[name])
    broken = dict(kube_client.get(HEALTH_RES, name_a))["status"]
    assert broken["rootCause"] == f"KafkaChannel kyma-integration/{name_a}: TopicFailed"
    assert broken["symptoms"] == 3
    assert [f["object"]["kind"] for f in broken["rootCauses"]] == [
        "KafkaChannel", "Broker", "Deployment"]


@envtest
async def test_every_write_waits_for_a_token_of_the_rate_limit(
    control_plane: ControlPlane, writer_client: AsyncClient, user_name: str,
    apps: Callable[..., dict[str, Any]],
) -> None:
    """The first sync's writes (create, status, annotations per Application) go at
    `--kube-api-burst`, then one per 1/`--kube-api-qps` seconds: with a fake clock, each
    write beyond the burst waits exactly one interval, and the audit log holds exactly as
    many writes as tokens were taken."""
    now = [0.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    limiter = TokenBucket(4.0, 2, clock=lambda: now[0], sleep=sleep)
    made = [apps(f"limited-{i}") for i in range(3)]
    names = [a["metadata"]["name"] for a in made]
    writer = HealthWriter(writer_client, is_leader=lambda: True, limiter=limiter)

    await writer.publish(mesh(*(healthy_app(n) for n in names)),
                         dict(zip(names, made, strict=True)), {n: T0 for n in names})

    assert writer.write_errors == {}
    writes = sum(writer.write_counts.values())
    assert writes >= 3 * len(names)  # create + status + annotations each
    assert slept == [pytest.approx(0.25)] * (writes - 2)
    assert len(await settled_audit(control_plane, writer_client, user_name)) == writes


@envtest
async def test_printer_columns_as_kubectl_get_shows_them(
    control_plane: ControlPlane, writer_client: AsyncClient,
    apps: Callable[..., dict[str, Any]],
) -> None:
    a = apps("columns")
    name = a["metadata"]["name"]
    writer = HealthWriter(writer_client, is_leader=lambda: True)
    await writer.publish(mesh(broken_app(name, state=3)), {name: a}, {name: T0})

    accept = "application/json;as=Table;v=v1;g=meta.k8s.io"
    with control_plane.http_client() as http:
        answer = http.get(
            f"/apis/eventmesh-health.kyma-project.io/v1alpha1/eventmeshhealths/{name}",
            headers={"Accept": accept},
        )
    answer.raise_for_status()
    table = answer.json()
    columns = [c["name"] for c in table["columnDefinitions"] if c["priority"] == 0]
    assert columns == ["Name", "Application", "Health", "State", "Root Cause", "Age"]
    cells = dict(zip([c["name"] for c in table["columnDefinitions"]],
                     table["rows"][0]["cells"], strict=True))
    assert cells["Application"] == name
    assert cells["Health"] == "Unhealthy"
    assert cells["State"] == 3
    assert cells["Root Cause"] == f"KafkaChannel kyma-integration/{name}: TopicFailed"
    assert "Since" in cells  # priority 1: shown by `kubectl get -o wide`


# --- annotations ------------------------------------------------------------------------------


@envtest
async def test_annotations_leave_other_annotations_labels_and_status_alone(
    kube_client: Client, writer_client: AsyncClient, apps: Callable[..., dict[str, Any]],
) -> None:
    operator_status = {"installationStatus": {"status": "DEPLOYED", "description": "ok"}}
    a = apps("annotated", annotations={"example.com/owner": "team-a",
                                       "kubectl.kubernetes.io/last-applied-configuration": "{}"},
             labels={"team": "a"}, status=operator_status)
    name = a["metadata"]["name"]
    writer = HealthWriter(writer_client, is_leader=lambda: True)

    await writer.publish(mesh(broken_app(name)), {name: a}, {name: T0})

    after = get_app(kube_client, name)
    assert after["metadata"]["annotations"] == {
        "example.com/owner": "team-a",
        "kubectl.kubernetes.io/last-applied-configuration": "{}",
        HEALTH_ANNOTATION: "Unhealthy",
        REASON_ANNOTATION: "TopicFailed",
        TRANSITION_ANNOTATION: "2024-05-01T12:00:00Z",
    }
    assert after["metadata"]["labels"] == {"team": "a"}
    assert after["status"] == operator_status
    assert after["spec"] == a["spec"]

    # application-operator rewrites its status and someone adds an annotation; then the
    # health changes: our keys change, theirs stay.
    operator_status = {"installationStatus": {"status": "FAILED", "description": "helm"}}
    kube_client.patch(APP_RES, name, {"status": operator_status,
                                      "metadata": {"annotations": {"other/key": "v"}}},
                      patch_type=_merge())
    await writer.publish(mesh(healthy_app(name)), view(kube_client, name),
                         {name: T0 + timedelta(minutes=1)})
    after = get_app(kube_client, name)
    assert after["status"] == operator_status
    assert after["metadata"]["labels"] == {"team": "a"}
    assert after["metadata"]["annotations"] == {
        "example.com/owner": "team-a",
        "kubectl.kubernetes.io/last-applied-configuration": "{}",
        "other/key": "v",
        HEALTH_ANNOTATION: "Healthy",
        REASON_ANNOTATION: ALL_HEALTHY,
        TRANSITION_ANNOTATION: "2024-05-01T12:01:00Z",
    }


def _merge() -> Any:
    from lightkube.types import PatchType

    return PatchType.MERGE


# --- writes only on change --------------------------------------------------------------------


@envtest
async def test_same_report_twice_makes_no_write_request(
    control_plane: ControlPlane, kube_client: Client, writer_client: AsyncClient,
    user_name: str, apps: Callable[..., dict[str, Any]],
) -> None:
    a, b = apps("steady-a"), apps("steady-b")
    names = [a["metadata"]["name"], b["metadata"]["name"]]
    stale = {n: o for n, o in zip(names, (a, b), strict=True)}
    transitions = {n: T0 for n in names}
    writer = HealthWriter(writer_client, is_leader=lambda: True)

    await writer.publish(mesh(broken_app(names[0]), healthy_app(names[1])), stale, transitions)
    first = await settled_audit(control_plane, writer_client, user_name)
    expected = {
        ("eventmeshhealths", "create"): 2, ("eventmeshhealths/status", "patch"): 2,
        ("applications", "patch"): 2, ("events", "create"): 1,  # healthy at first sight: none
    }
    assert counts(first) == expected
    assert writer.write_counts == expected

    # The same report again (a later analysis: observedAt moves, durations in messages move),
    # with the informer's view lagging (still the objects before our writes), then caught up.
    later = T0 + timedelta(minutes=7)
    again = mesh(broken_app(names[0], message="TopicReady is False: quota 12m ago"),
                 healthy_app(names[1]), taken_at=later)
    await writer.publish(again, stale, transitions)
    await writer.publish(again, view(kube_client, *names), transitions)
    await writer.publish(again, view(kube_client, *names), transitions)

    assert await settled_audit(control_plane, writer_client, user_name) == first
    assert writer.write_counts == expected


@envtest
async def test_an_annotation_changed_by_someone_else_is_written_again(
    kube_client: Client, writer_client: AsyncClient, apps: Callable[..., dict[str, Any]],
) -> None:
    a = apps("repair")
    name = a["metadata"]["name"]
    writer = HealthWriter(writer_client, is_leader=lambda: True)
    report = mesh(broken_app(name))
    await writer.publish(report, {name: a}, {name: T0})
    kube_client.patch(APP_RES, name, {"metadata": {"annotations": {HEALTH_ANNOTATION: None}}},
                      patch_type=_merge())

    await writer.publish(report, view(kube_client, name), {name: T0})

    assert get_app(kube_client, name)["metadata"]["annotations"][HEALTH_ANNOTATION] == "Unhealthy"
    assert writer.write_counts[("applications", "patch")] == 2


@envtest
async def test_a_failed_write_is_tried_again_though_nothing_changed(
    control_plane: ControlPlane, kube_client: Client, health_crd: None, user_name: str,
    apps: Callable[..., dict[str, Any]],
) -> None:
    """A round that could not write an application's part is not remembered as done: the
    next round with the very same report and objects writes it."""
    a = apps("retried")
    name = a["metadata"]["name"]
    suffix = uuid.uuid4().hex[:6]
    may_write = [  # everything the writer does but patching Applications
        {"apiGroups": [GROUP], "resources": ["eventmeshhealths", "eventmeshhealths/status"],
         "verbs": ["get", "list", "create", "patch", "delete"]},
        {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
    ]
    granted = _grant(kube_client, f"writer-{suffix}", user_name, may_write)
    client = async_client_for(control_plane, user_name)
    try:
        writer = HealthWriter(client, is_leader=lambda: True)
        report, objects = mesh(healthy_app(name)), {name: a}
        await writer.publish(report, objects, {name: T0})
        assert writer.write_errors == {("applications", "patch"): 1}
        assert kube_client.get(HEALTH_RES, name).status["health"] == "Healthy"
        annotations = get_app(kube_client, name)["metadata"].get("annotations") or {}
        assert HEALTH_ANNOTATION not in annotations

        granted += _grant(kube_client, f"annotate-{suffix}", user_name, [
            {"apiGroups": ["applicationconnector.kyma-project.io"],
             "resources": ["applications"], "verbs": ["patch"]}])
        await _until_allowed(client, name)
        await writer.publish(report, objects, {name: T0})

        assert get_app(kube_client, name)["metadata"]["annotations"][HEALTH_ANNOTATION] \
            == "Healthy"
        written = writer.write_counts
        await writer.publish(report, objects, {name: T0})  # done now: nothing more
        assert writer.write_counts == written
    finally:
        await client.close()
        for kind, obj_name in granted:
            with contextlib.suppress(ApiError):
                kube_client.delete(kind, obj_name)


def _grant(client: Client, name: str, user: str,
           rules: list[dict[str, Any]]) -> list[tuple[Any, str]]:
    """A ClusterRole with `rules` bound to `user`; what to delete afterwards."""
    client.create(ClusterRole.from_dict({
        "metadata": {"name": name}, "rules": rules}))
    client.create(ClusterRoleBinding.from_dict({
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": name},
        "subjects": [{"kind": "User", "name": user,
                      "apiGroup": "rbac.authorization.k8s.io"}]}))
    return [(ClusterRoleBinding, name), (ClusterRole, name)]


async def _until_allowed(client: AsyncClient, name: str) -> None:
    """Until the authorizer's cache has the new binding (it watches RBAC objects)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        review = await client.create(SelfSubjectAccessReview(spec=SelfSubjectAccessReviewSpec(
            resourceAttributes=ResourceAttributes(
                verb="patch", resource="applications", name=name,
                group="applicationconnector.kyma-project.io"))))
        if review.status and review.status.allowed:
            return
        assert time.monotonic() < deadline, "the new ClusterRoleBinding never took effect"
        await asyncio.sleep(0.05)


@envtest
async def test_a_new_transition_is_written_to_the_history_though_the_report_is_the_same(
    kube_client: Client, writer_client: AsyncClient, apps: Callable[..., dict[str, Any]],
) -> None:
    a = apps("history")
    name = a["metadata"]["name"]
    history = History()
    history.record(name, T0, Health.HEALTHY, None, "")
    writer = HealthWriter(writer_client, is_leader=lambda: True, history=history)
    report, objects = mesh(healthy_app(name)), {name: a}
    await writer.publish(report, objects, {name: T0})
    assert len(kube_client.get(HEALTH_RES, name).status["history"]) == 1

    # e.g. a root cause that changed and changed back between two rounds
    history.record(name, T0 + timedelta(minutes=1), Health.HEALTHY, Health.HEALTHY, "")
    await writer.publish(report, objects, {name: T0})

    persisted = kube_client.get(HEALTH_RES, name).status["history"]
    assert [entry["time"] for entry in persisted] == ["2024-05-01T12:00:00Z",
                                                    "2024-05-01T12:01:00Z"]


@envtest
async def test_objects_of_deleted_applications_are_deleted(
    kube_client: Client, writer_client: AsyncClient, apps: Callable[..., dict[str, Any]],
) -> None:
    a, b = apps("stays"), apps("goes")
    name_a, name_b = a["metadata"]["name"], b["metadata"]["name"]
    writer = HealthWriter(writer_client, is_leader=lambda: True)
    await writer.publish(mesh(healthy_app(name_a), healthy_app(name_b)),
                         {name_a: a, name_b: b}, {})
    kube_client.delete(APP_RES, name_b)  # no garbage collector runs here

    await writer.publish(mesh(healthy_app(name_a)), view(kube_client, name_a), {})

    with pytest.raises(ApiError) as gone:
        kube_client.get(HEALTH_RES, name_b)
    assert gone.value.status.code == 404
    assert kube_client.get(HEALTH_RES, name_a)
    assert writer.write_counts[("eventmeshhealths", "delete")] == 1


@envtest
async def test_a_new_writer_reads_what_exists_instead_of_writing_it_again(
    control_plane: ControlPlane, kube_client: Client, writer_client: AsyncClient,
    user_name: str, apps: Callable[..., dict[str, Any]],
) -> None:
    """A successor (new leader, restarted pod) LISTs the health objects and reads the
    annotations from the informer's view: the same report causes no writes and no Event."""
    a = apps("successor")
    name = a["metadata"]["name"]
    report = mesh(broken_app(name))
    first = HealthWriter(writer_client, is_leader=lambda: True)
    await first.publish(report, {name: a}, {name: T0})
    before = await settled_audit(control_plane, writer_client, user_name)

    successor = HealthWriter(writer_client, is_leader=lambda: True)
    await successor.publish(report, view(kube_client, name), {name: T0})

    assert await settled_audit(control_plane, writer_client, user_name) == before
    assert successor.write_counts == {}


# --- Events -----------------------------------------------------------------------------------


def events_about(client: Client, name: str) -> list[dict[str, Any]]:
    return sorted(
        (dict(e) for e in client.list(EVENT_RES, namespace="default")
         if (e.get("regarding") or {}).get("name") == name),
        key=lambda e: e["eventTime"],
    )


@envtest
async def test_transitions_create_events_and_a_repeat_updates_the_series(
    kube_client: Client, writer_client: AsyncClient, apps: Callable[..., dict[str, Any]],
) -> None:
    a = apps("events")
    name, uid = a["metadata"]["name"], a["metadata"]["uid"]
    writer = HealthWriter(writer_client, is_leader=lambda: True, reporting_instance="pod-1")
    t0, t1, t2, t3 = (T0 + timedelta(minutes=m) for m in (0, 1, 3, 5))

    await writer.publish(mesh(healthy_app(name)), view(kube_client, name), {name: t0})
    assert events_about(kube_client, name) == []  # healthy at first sight is no news

    await writer.publish(mesh(broken_app(name)), view(kube_client, name), {name: t1})
    (unhealthy,) = events_about(kube_client, name)
    assert unhealthy["regarding"] == {
        "apiVersion": "applicationconnector.kyma-project.io/v1alpha1",
        "kind": "Application", "name": name, "uid": uid,
    }
    assert unhealthy["related"] == {
        "apiVersion": "knativekafka.kyma-project.io/v1alpha1", "kind": "KafkaChannel",
        "namespace": "kyma-integration", "name": name,
    }
    assert unhealthy["reportingController"] == REPORTING_CONTROLLER
    assert unhealthy["reportingInstance"] == "pod-1"
    assert (unhealthy["action"], unhealthy["reason"], unhealthy["type"]) == (
        "HealthChanged", "BecameUnhealthy", "Warning")
    assert unhealthy["note"].startswith(
        f"Application {name} is Unhealthy (was Healthy); root cause: "
        f"KafkaChannel kyma-integration/{name}: TopicFailed")
    assert unhealthy["eventTime"] == "2024-05-01T12:01:00.000000Z"
    assert not unhealthy.get("series")

    await writer.publish(mesh(healthy_app(name)), view(kube_client, name), {name: t2})
    await writer.publish(mesh(broken_app(name)), view(kube_client, name), {name: t3})

    first, healthy = events_about(kube_client, name)
    assert first["metadata"]["name"] == unhealthy["metadata"]["name"]
    assert first["series"] == {"count": 2, "lastObservedTime": "2024-05-01T12:05:00.000000Z"}
    assert (healthy["reason"], healthy["type"]) == ("BecameHealthy", "Normal")
    assert healthy["note"] == f"Application {name} is Healthy (was Unhealthy)"
    assert writer.write_counts[("events", "create")] == 2
    assert writer.write_counts[("events", "patch")] == 1


@envtest
async def test_flapping_application_is_rate_limited_and_nothing_is_lost(
    kube_client: Client, writer_client: AsyncClient, apps: Callable[..., dict[str, Any]],
) -> None:
    a = apps("flapping")
    name = a["metadata"]["name"]
    clock = [T0]
    writer = HealthWriter(writer_client, is_leader=lambda: True, now=lambda: clock[0],
                          max_events_per_minute=2)
    # Healthy at first sight (no Event), then 10 transitions within 50 seconds.
    for flap in range(11):
        clock[0] = T0 + timedelta(seconds=5 * flap)
        app = healthy_app(name) if flap % 2 == 0 else broken_app(name)
        await writer.publish(mesh(app), view(kube_client, name), {name: clock[0]})

    event_writes = (writer.write_counts.get(("events", "create"), 0)
                    + writer.write_counts.get(("events", "patch"), 0))
    assert event_writes == 2  # the first BecameUnhealthy and the first BecameHealthy
    assert writer.rate_limited_events == 8
    assert len(events_about(kube_client, name)) == 2

    # A minute later, in a steady state: the held-back occurrences go into the series.
    clock[0] = T0 + timedelta(seconds=50 + 61)
    await writer.publish(mesh(healthy_app(name)), view(kube_client, name),
                         {name: T0 + timedelta(seconds=50)})
    series = {e["reason"]: e.get("series") for e in events_about(kube_client, name)}
    assert series == {
        "BecameUnhealthy": {"count": 5, "lastObservedTime": "2024-05-01T12:00:45.000000Z"},
        "BecameHealthy": {"count": 5, "lastObservedTime": "2024-05-01T12:00:50.000000Z"},
    }
    assert writer.write_counts[("events", "create")] == 2
    assert writer.write_counts[("events", "patch")] == 2


# --- leadership -------------------------------------------------------------------------------


@envtest
async def test_a_non_leader_never_writes(
    control_plane: ControlPlane, kube_client: Client, writer_client: AsyncClient,
    user_name: str, apps: Callable[..., dict[str, Any]],
) -> None:
    a = apps("follower")
    name = a["metadata"]["name"]
    writer = HealthWriter(writer_client, is_leader=lambda: False)

    await writer.publish(mesh(broken_app(name)), {name: a}, {name: T0})

    assert await settled_audit(control_plane, writer_client, user_name) == []
    assert writer.write_counts == {}
    assert HEALTH_ANNOTATION not in (get_app(kube_client, name)["metadata"].get("annotations")
                                     or {})


@envtest
async def test_leadership_lost_mid_round_stops_writing_at_once(
    control_plane: ControlPlane, writer_client: AsyncClient, user_name: str,
    apps: Callable[..., dict[str, Any]],
) -> None:
    objs = [apps(f"mid-{i}") for i in range(3)]
    names = [o["metadata"]["name"] for o in objs]
    answers = iter([True] * 4)  # publish asks once, then before each write: 3 writes allowed

    writer = HealthWriter(writer_client, is_leader=lambda: next(answers, False))
    await writer.publish(mesh(*(broken_app(n) for n in names)),
                         dict(zip(names, objs, strict=True)), {n: T0 for n in names})

    writes = await settled_audit(control_plane, writer_client, user_name)
    assert len(writes) == 3
    assert sum(writer.write_counts.values()) == 3


# --- RBAC -------------------------------------------------------------------------------------


def load_documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_serve_clusterrole_reads_exactly_the_profiles_kinds() -> None:
    (cluster_role,) = [d for d in load_documents(SERVE_ROLES) if d["kind"] == "ClusterRole"]
    read = {
        (group, resource)
        for rule in cluster_role["rules"] if set(rule["verbs"]) == {"list", "watch"}
        for group in rule["apiGroups"] for resource in rule["resources"]
    }
    assert read == {(kind.group, kind.plural) for profile in PROFILES.values()
                    for kind in profile.kinds}


def _bind(docs: list[dict[str, Any]], suffix: str, user: str, lease_namespace: str,
          ) -> list[tuple[str, dict[str, Any]]]:
    """The serve roles with unique names, the leader-election Role in `lease_namespace`, and a
    binding of each to `user`: (API path, body) to POST."""
    out: list[tuple[str, dict[str, Any]]] = []
    rbac = "/apis/rbac.authorization.k8s.io/v1"
    for doc in docs:
        doc = {**doc, "metadata": {**doc["metadata"], "name": doc["metadata"]["name"] + suffix}}
        name = doc["metadata"]["name"]
        subjects = [{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}]
        if doc["kind"] == "ClusterRole":
            out.append((f"{rbac}/clusterroles", doc))
            out.append((f"{rbac}/clusterrolebindings", {
                "metadata": {"name": name},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                            "name": name},
                "subjects": subjects,
            }))
            continue
        namespace = doc["metadata"]["namespace"]
        if namespace == "kyma-system":
            namespace = lease_namespace
        doc["metadata"]["namespace"] = namespace
        out.append((f"{rbac}/namespaces/{namespace}/roles", doc))
        out.append((f"{rbac}/namespaces/{namespace}/rolebindings", {
            "metadata": {"name": name, "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": subjects,
        }))
    return out


def may(client: Client, verb: str, resource: str, *, group: str = "",
        namespace: str | None = None, name: str | None = None,
        subresource: str | None = None) -> bool:
    review = client.create(SelfSubjectAccessReview(spec=SelfSubjectAccessReviewSpec(
        resourceAttributes=ResourceAttributes(
            verb=verb, resource=resource, group=group, namespace=namespace, name=name,
            subresource=subresource,
        ))))
    return bool(review.status and review.status.allowed)


@envtest
async def test_serve_rbac_allows_what_serve_needs_and_no_other_write(
    control_plane: ControlPlane, kube_client: Client, health_crd: None, namespace: str,
    user_name: str, apps: Callable[..., dict[str, Any]],
) -> None:
    docs = load_documents(SERVE_ROLES)
    bindings = load_documents(SERVE_BINDINGS)
    assert {d["metadata"]["name"] for d in docs} == {
        d["roleRef"]["name"] for d in bindings if d["kind"].endswith("Binding")}
    suffix = f"-{uuid.uuid4().hex[:6]}"
    created = _bind(docs, suffix, user_name, namespace)
    with control_plane.http_client() as http:
        for path, body in created:
            http.post(path, json=body).raise_for_status()
    try:
        await _serve_as(control_plane, kube_client, namespace, user_name, apps)
        _only_what_serve_needs(control_plane, namespace, user_name)
    finally:
        with control_plane.http_client() as http:
            for path, body in reversed(created):
                http.delete(f"{path}/{body['metadata']['name']}")


async def _serve_as(control_plane: ControlPlane, kube_client: Client, namespace: str,
                    user: str, apps: Callable[..., dict[str, Any]]) -> None:
    """Leader election, health objects, annotations, Events and deletions as the user."""
    a, b = apps("rbac-a"), apps("rbac-b")
    name_a, name_b = a["metadata"]["name"], b["metadata"]["name"]
    client = async_client_for(control_plane, user)
    elector = LeaderElector(client, namespace, DEFAULT_LEASE_NAME, "serve-0",
                            lease_duration=3, renew_deadline=2, retry_period=0.5)
    task = asyncio.create_task(elector.run())
    try:
        deadline = time.monotonic() + TIMEOUT
        while not elector.is_leader:
            assert time.monotonic() < deadline, "did not acquire the lease"
            await asyncio.sleep(0.02)
        writer = HealthWriter(client, is_leader=lambda: elector.is_leader)
        # Healthy (no Event), unhealthy (create), healthy (create), unhealthy (series patch).
        for app in (healthy_app, broken_app, healthy_app, broken_app):
            await writer.publish(mesh(app(name_a), healthy_app(name_b)),
                                 view(kube_client, name_a, name_b), {})
        kube_client.delete(APP_RES, name_b)
        await writer.publish(mesh(broken_app(name_a)), view(kube_client, name_a), {})
        assert writer.write_errors == {}
        assert set(writer.write_counts) == {
            ("eventmeshhealths", "create"), ("eventmeshhealths/status", "patch"),
            ("eventmeshhealths", "delete"), ("applications", "patch"),
            ("events", "create"), ("events", "patch"),
        }
        assert elector.is_leader
        refused = [e for e in control_plane.audit_events()
                   if (e.get("user") or {}).get("username") == user  # type: ignore[union-attr]
                   and (e.get("responseStatus") or {}).get("code") == 403]  # type: ignore[union-attr]
        assert refused == []
        # The informer's reads: list and watch every kind of the profile, and the CRDs.
        with Client(load_config(Connection(
                kubeconfig=control_plane.make_user_kubeconfig(user))), trust_env=False) as sync:
            for kind in PROFILE.kinds:
                list_all(sync, kind)
                assert may(sync, "watch", kind.plural, group=kind.group), kind
            list(sync.list(CustomResourceDefinition))
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await client.close()


def list_all(client: Client, kind: Kind) -> list[Any]:
    """List a kind cluster-wide; a 429 ("storage is (re)initializing") is retried."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            return list(client.list(resource_class(kind),
                                    **({"namespace": "*"} if kind.namespaced else {})))
        except ApiError as err:
            assert err.status.code == 429 and time.monotonic() < deadline, err
            time.sleep(0.1)


def _only_what_serve_needs(control_plane: ControlPlane, namespace: str, user: str) -> None:
    path = control_plane.make_user_kubeconfig(user)
    with Client(load_config(Connection(kubeconfig=path)), trust_env=False) as client:
        # ... and nothing else may be written.
        for kind in PROFILE.kinds:
            for verb in ("create", "update", "delete", "deletecollection", "patch"):
                if (kind.plural, verb) == ("applications", "patch"):
                    continue
                ns = "prod" if kind.namespaced else None
                assert not may(client, verb, kind.plural, group=kind.group, namespace=ns), (
                    verb, kind.resource)
            assert not may(client, "get", kind.plural, group=kind.group,
                           namespace="prod" if kind.namespaced else None), kind.resource
        app = "applicationconnector.kyma-project.io"
        assert may(client, "patch", "applications", group=app)
        assert not may(client, "patch", "applications", group=app, subresource="status")
        assert not may(client, "update", "applications", group=app, subresource="status")
        denied = [
            ("get", "secrets", "", "kyma-system"), ("list", "secrets", "", None),
            ("create", "configmaps", "", namespace), ("create", "pods", "", namespace),
            ("create", "serviceaccounts", "", namespace),
            ("create", "customresourcedefinitions", "apiextensions.k8s.io", None),
            ("update", "customresourcedefinitions", "apiextensions.k8s.io", None),
            ("delete", "customresourcedefinitions", "apiextensions.k8s.io", None),
            ("create", "events", "events.k8s.io", namespace),
            ("create", "events", "events.k8s.io", "kube-system"),
            ("create", "events", "", "default"),
            ("update", "events", "events.k8s.io", "default"),
            ("delete", "events", "events.k8s.io", "default"),
            ("create", "leases", "coordination.k8s.io", "default"),
            ("update", "leases", "coordination.k8s.io", "kube-system"),
            ("delete", "leases", "coordination.k8s.io", namespace),
            ("create", "clusterroles", "rbac.authorization.k8s.io", None),
            ("create", "rolebindings", "rbac.authorization.k8s.io", namespace),
            ("impersonate", "users", "", None),
        ]
        for verb, resource, group, ns in denied:
            assert not may(client, verb, resource, group=group, namespace=ns), (
                verb, resource, ns)
        coordination = "coordination.k8s.io"
        assert may(client, "create", "leases", group=coordination, namespace=namespace)
        assert may(client, "update", "leases", group=coordination, namespace=namespace,
                   name=DEFAULT_LEASE_NAME)
        assert not may(client, "update", "leases", group=coordination, namespace=namespace,
                       name="someone-elses")
        assert not may(client, "get", "leases", group=coordination, namespace=namespace,
                       name="someone-elses")
        for verb in ("get", "list", "watch", "create", "update", "patch", "delete"):
            assert may(client, verb, "eventmeshhealths", group=HEALTH_KIND.group)
        for verb in ("create", "patch"):
            assert may(client, verb, "events", group="events.k8s.io", namespace="default")


def test_health_status_is_json_serialisable_and_complete() -> None:
    report = mesh(broken_app("x"))
    status = health_status(report.applications[0], report, last_transition=T0, observed_at=T0)
    assert set(status) == {"health", "state", "rootCause", "rootCauses", "symptoms",
                           "namespaces", "lastTransitionTime", "observedAt", "conditions"}
    assert status["rootCauses"][0]["severity"] == Severity.ERROR.value


# --- kstatus: other tools read the verdict ------------------------------------------------


def kstatus_binary() -> Path:
    """benchmarks/kstatus (sigs.k8s.io/cli-utils' status.Compute), built once by
    hack/kstatus/build.sh; a missing Go toolchain fails the test, it is not skipped."""
    script = Path(__file__).resolve().parents[1] / "hack" / "kstatus" / "build.sh"
    built = subprocess.run(["bash", str(script)], capture_output=True, text=True, check=False)
    assert built.returncode == 0, f"hack/kstatus/build.sh failed: {built.stderr[-2000:]}"
    return Path(built.stdout.strip().splitlines()[-1])


def kstatus_of(binary: Path, obj: dict[str, Any], tmp_path: Path) -> str:
    """kstatus' own verdict (Current, InProgress, Failed, ...) on one object."""
    path = tmp_path / f"{obj['metadata']['name']}.json"
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": [obj]}))
    ran = subprocess.run([str(binary), str(path)], capture_output=True, text=True, check=True)
    statuses = [line.split("\t")[0] for line in ran.stdout.splitlines() if "\t" in line]
    assert len(statuses) == 1, ran.stdout
    return statuses[0]


KSTATUS_VERDICT = {
    Health.HEALTHY: "Current",
    Health.PROGRESSING: "InProgress",
    Health.UNKNOWN: "InProgress",
    Health.DEGRADED: "Failed",
    Health.UNHEALTHY: "Failed",
}


@envtest
async def test_kstatus_reads_the_health_as_its_own_verdict(
    kube_client: Client, writer_client: AsyncClient, apps: Callable[..., dict[str, Any]],
    tmp_path: Path,
) -> None:
    """kstatus (Helm 4's --wait, Flux, Argo CD's health of CRs) reads status.conditions and
    observedGeneration: only a Healthy object is Current; an Unhealthy one is not."""
    binary = kstatus_binary()
    writer = HealthWriter(writer_client, is_leader=lambda: True)
    made = {health: apps(f"kstatus-{health.value.lower()}") for health in Health}
    reports = [
        healthy_app(a["metadata"]["name"]) if health is Health.HEALTHY
        else broken_app(a["metadata"]["name"]).model_copy(update={"health": health})
        for health, a in made.items()
    ]
    await writer.publish(mesh(*reports), {a["metadata"]["name"]: a for a in made.values()},
                         {a["metadata"]["name"]: T0 for a in made.values()})
    assert writer.write_errors == {}
    for health, a in made.items():
        obj = dict(kube_client.get(HEALTH_RES, a["metadata"]["name"]))
        obj = yaml.safe_load(yaml.safe_dump(obj))  # plain dicts
        status = obj["status"]
        assert status["observedGeneration"] == obj["metadata"]["generation"]
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert ready["status"] == ("True" if health is Health.HEALTHY else "False")
        if health is not Health.HEALTHY:
            assert ready["reason"] == "TopicFailed"
            assert "KafkaChannel kyma-integration/" in ready["message"]
        assert kstatus_of(binary, obj, tmp_path) == KSTATUS_VERDICT[health], (health, status)
