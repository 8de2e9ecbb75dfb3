"""The envtest control plane works: real kube-apiserver + etcd, test CRDs, RBAC, outages."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from lightkube import ApiError, Client, KubeConfig
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.models.rbac_v1 import PolicyRule, RoleRef, Subject
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition
from lightkube.resources.authentication_v1 import SelfSubjectReview
from lightkube.resources.core_v1 import ConfigMap, Namespace, Pod
from lightkube.resources.rbac_authorization_v1 import Role, RoleBinding
from lightkube.types import PatchType

from tests.envtest.controlplane import ControlPlane
from tests.envtest.fixtures import crd_resource, load_test_crds

pytestmark = pytest.mark.envtest

GO_MOD = Path(__file__).resolve().parents[1] / "hack" / "envtest" / "kube-apiserver" / "go.mod"
CRDS = {crd["metadata"]["name"]: crd for crd in load_test_crds()}

# A realistic spec per CRD (valid against its schema), plus an extra field the schema does not
# declare (`x-extra`), which must be kept: v1beta1 CRDs never pruned.
SPECS: dict[str, dict[str, Any]] = {
    "applications.applicationconnector.kyma-project.io": {
        "description": "commerce mock",
        "accessLabel": "commerce",
        "services": [
            {
                "id": "0e2b5a3d-1c3b-4a0e-9d4b-1a2b3c4d5e6f",
                "name": "orders",
                "displayName": "Orders",
                "providerDisplayName": "SAP",
                "description": "order events",
                "entries": [{"type": "Events"}],
            }
        ],
    },
    "applicationmappings.applicationconnector.kyma-project.io": {"services": []},
    "eventactivations.applicationconnector.kyma-project.io": {
        "displayName": "commerce",
        "sourceId": "commerce",
    },
    "httpsources.sources.kyma-project.io": {"source": "commerce"},
    "channels.messaging.knative.dev": {
        "channelTemplate": {
            "apiVersion": "knativekafka.kyma-project.io/v1alpha1",
            "kind": "KafkaChannel",
        },
        "subscribable": {
            "subscribers": [
                {"uid": "u-1", "subscriberURI": "http://fn.ns.svc.cluster.local", "generation": 1}
            ]
        },
    },
    "subscriptions.messaging.knative.dev": {
        "channel": {"apiVersion": "messaging.knative.dev/v1alpha1", "kind": "Channel", "name": "c"},
        "subscriber": {"uri": "http://fn.ns.svc.cluster.local"},
    },
    "natsschannels.messaging.knative.dev": {},
    "inmemorychannels.messaging.knative.dev": {
        "subscribable": {
            "subscribers": [
                {"uid": "u-1", "subscriberURI": "http://fn.ns.svc.cluster.local", "generation": 1}
            ]
        },
    },
    "kafkachannels.knativekafka.kyma-project.io": {"numPartitions": 1, "replicationFactor": 1},
    "brokers.eventing.knative.dev": {},
    "triggers.eventing.knative.dev": {
        "broker": "default",
        "filter": {"attributes": {"type": "order.created", "source": "commerce"}},
        "subscriber": {"uri": "http://fn.ns.svc.cluster.local"},
    },
    "eventtypes.eventing.knative.dev": {
        "type": "order.created",
        "source": "commerce",
        "broker": "default",
    },
    "serviceinstances.servicecatalog.k8s.io": {
        "clusterServiceClassExternalName": "commerce",
        "clusterServicePlanExternalName": "default",
    },
    "services.serving.knative.dev": {
        "template": {"spec": {"containers": [{"image": "example.com/fn:1"}]}},
    },
}

STATUS = {
    "conditions": [{"type": "Ready", "status": "True", "reason": "TestReady"}],
    "address": {"url": "http://x.ns.svc.cluster.local"},
}


def pinned_k8s_version() -> str:
    match = re.search(r"^\s*(?:require\s+)?k8s\.io/kubernetes\s+(v\S+)", GO_MOD.read_text(), re.M)
    assert match, f"no k8s.io/kubernetes requirement in {GO_MOD}"
    return match.group(1)


def has_status_subresource(crd: dict[str, Any]) -> bool:
    return "status" in (crd["spec"]["versions"][0].get("subresources") or {})


def wait_for(predicate: Any, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.1)


def test_server_reports_pinned_version(control_plane: ControlPlane) -> None:
    with control_plane.http_client() as http:
        info = http.get("/version").json()
    version = pinned_k8s_version()
    assert info["gitVersion"] == version
    assert (info["major"], info["minor"]) == tuple(version.lstrip("v").split(".")[:2])


def test_every_test_crd_is_established(kube_client: Client) -> None:
    assert set(SPECS) == set(CRDS), "add a sample spec for each CRD in tests/crds"
    for name in CRDS:
        crd = kube_client.get(CustomResourceDefinition, name)
        conditions = {c.type: c.status for c in crd.status.conditions}
        assert conditions.get("Established") == "True", name
        assert conditions.get("NamesAccepted") == "True", name


@pytest.mark.parametrize("crd_name", sorted(CRDS))
def test_sample_object_and_status(kube_client: Client, namespace: str, crd_name: str) -> None:
    crd = CRDS[crd_name]
    res = crd_resource(crd)
    namespaced = crd["spec"]["scope"] == "Namespaced"
    obj_name = "sample" if namespaced else f"sample-{namespace}"
    ns = namespace if namespaced else None
    spec = {**SPECS[crd_name], "x-extra": {"kept": True}}
    body = res(
        metadata=ObjectMeta(name=obj_name, namespace=ns),
        spec=spec,
        status={"conditions": [{"type": "Ready", "status": "Unknown"}]},
    )
    created = kube_client.create(body)
    assert created["spec"]["x-extra"] == {"kept": True}  # v1beta1 semantics: nothing pruned

    if has_status_subresource(crd):
        # Status is ignored on create and written only through /status, as controllers do.
        assert not (created.get("status") or {}).get("conditions")
        kube_client.patch(
            res.Status, obj_name, {"status": STATUS}, namespace=ns, patch_type=PatchType.MERGE
        )
        # ... and a status change through the main resource is dropped.
        kube_client.patch(
            res,
            obj_name,
            {"status": {"conditions": []}, "metadata": {"labels": {"touched": "yes"}}},
            namespace=ns,
            patch_type=PatchType.MERGE,
        )
        got = kube_client.get(res, obj_name, namespace=ns)
        assert got.metadata.labels == {"touched": "yes"}
        assert got["status"]["conditions"][0]["reason"] == "TestReady"
    else:
        # No status subresource (as in Kyma 1.14): status is part of the main resource.
        assert created["status"]["conditions"][0]["status"] == "Unknown"
        got = kube_client.get(res, obj_name, namespace=ns)
        assert got["status"]["conditions"][0]["status"] == "Unknown"
    if not namespaced:
        kube_client.delete(res, obj_name)


def test_crd_schemas_still_validate(kube_client: Client, namespace: str) -> None:
    res = crd_resource(CRDS["eventtypes.eventing.knative.dev"])
    bad = res(metadata=ObjectMeta(name="bad", namespace=namespace), spec={"type": "t"})
    with pytest.raises(ApiError) as err:
        kube_client.create(bad)
    assert err.value.status.code == 422
    assert "spec.broker" in err.value.status.message


def _allowed(call: Any) -> bool:
    try:
        call()
    except ApiError as exc:
        if exc.status.code == 403:
            return False
        raise
    return True


def test_rbac_admin_and_user(control_plane: ControlPlane, kube_client: Client, namespace: str):
    user_cfg = control_plane.make_user_kubeconfig("jane", ["devs", "eventing-viewers"])
    channels = crd_resource(CRDS["channels.messaging.knative.dev"])
    with Client(KubeConfig.from_file(user_cfg), trust_env=False) as user:
        review = user.create(SelfSubjectReview())
        assert review.status.userInfo.username == "jane"
        assert {"devs", "eventing-viewers", "system:authenticated"} <= set(
            review.status.userInfo.groups
        )

        assert _allowed(lambda: list(kube_client.list(Namespace)))
        assert not _allowed(lambda: list(user.list(Namespace)))
        assert not _allowed(lambda: list(user.list(channels, namespace=namespace)))

        kube_client.create(
            Role(
                metadata=ObjectMeta(name="channel-reader", namespace=namespace),
                rules=[
                    PolicyRule(
                        apiGroups=["messaging.knative.dev"],
                        resources=["channels"],
                        verbs=["get", "list", "watch"],
                    )
                ],
            )
        )
        kube_client.create(
            RoleBinding(
                metadata=ObjectMeta(name="devs-read-channels", namespace=namespace),
                roleRef=RoleRef(
                    apiGroup="rbac.authorization.k8s.io", kind="Role", name="channel-reader"
                ),
                subjects=[Subject(kind="Group", name="devs", apiGroup="rbac.authorization.k8s.io")],
            )
        )
        assert wait_for(lambda: _allowed(lambda: list(user.list(channels, namespace=namespace))))
        assert not _allowed(lambda: list(user.list(Pod, namespace=namespace)))
        assert not _allowed(lambda: list(user.list(channels, namespace="default")))


def test_audit_log_records_writes(control_plane: ControlPlane, kube_client: Client, namespace: str):
    kube_client.create(ConfigMap(metadata=ObjectMeta(name="audited", namespace=namespace)))

    def create_events() -> list[dict[str, Any]]:
        return [
            e
            for e in control_plane.audit_events()
            if e.get("verb") == "create"
            and e.get("objectRef", {}).get("resource") == "configmaps"
            and e.get("objectRef", {}).get("namespace") == namespace
        ]

    events = wait_for(create_events)
    assert len(events) == 1
    assert events[0]["level"] == "Metadata"
    assert events[0]["user"]["username"] == "admin"
    assert events[0]["responseStatus"]["code"] == 201


def test_stop_and_start_apiserver(control_plane: ControlPlane, kube_client: Client, namespace: str):
    kube_client.create(ConfigMap(metadata=ObjectMeta(name="survivor", namespace=namespace)))
    url = control_plane.url
    control_plane.stop_apiserver()
    try:
        assert not control_plane.apiserver_running
        with control_plane.http_client(timeout=2.0) as http, pytest.raises(httpx.ConnectError):
            http.get("/readyz")
    finally:
        control_plane.start_apiserver()
    assert control_plane.url == url
    # Data lives in etcd, which kept running.
    with Client(KubeConfig.from_file(control_plane.kubeconfig_path), trust_env=False) as client:
        assert client.get(ConfigMap, "survivor", namespace=namespace).metadata.name == "survivor"


def test_own_audit_policy_and_etcd_flags_and_pids() -> None:
    """What the benchmarks' control plane uses: an audit policy of its own (here: one user's
    requests not audited), extra etcd flags, and the process ids."""
    policy = ("apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages:\n- RequestReceived\n"
              "rules:\n- level: None\n  users: [quiet-user]\n- level: Metadata\n")
    with ControlPlane(extra_etcd_flags=["--quota-backend-bytes=4294967296"],
                      audit_policy=policy) as cp:
        pids = cp.pids()
        assert set(pids) == {"etcd", "kube-apiserver"}
        for name, pid in pids.items():
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            assert Path(cmdline[0].decode()).name == name
            if name == "etcd":
                assert b"--quota-backend-bytes=4294967296" in cmdline
        for user in ("quiet-user", "loud-user"):
            config = KubeConfig.from_file(cp.make_user_kubeconfig(user, ["system:masters"]))
            with Client(config, trust_env=False) as client:
                client.create(ConfigMap(metadata=ObjectMeta(name=user, namespace="default")))

        def loud_create() -> list[dict[str, Any]]:
            return [e for e in cp.audit_events()
                    if e.get("verb") == "create" and e["user"]["username"] == "loud-user"]

        assert wait_for(loud_create)  # logged after quiet-user's would have been
        assert not [e for e in cp.audit_events() if e["user"]["username"] == "quiet-user"]
    assert cp.pids() == {}
