"""`deploy/admission/validatingadmissionpolicy.yaml` on the real kube-apiserver: the checker's
ServiceAccount (a real token of it, with serve's and the probe's RBAC bound) may change its
three annotations of an Application and write Triggers labelled as heartbeat Triggers —
nothing else, though RBAC alone would let it; an administrator is not affected."""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.envtest.controlplane import ControlPlane
from tests.envtest.fixtures import (
    control_plane_with_test_crds,
)
from tests.live_objects import ApiServer

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
POLICY_FILE = DEPLOY / "admission" / "validatingadmissionpolicy.yaml"
RBAC_FILES = ["clusterrole-serve.yaml", "clusterrolebinding-serve.yaml",
              "clusterrole-serve-probe.yaml", "clusterrolebinding-serve-probe.yaml"]
SA_NAMESPACE, SA_NAME = "kyma-system", "eventmesh-health"
APPS = "/apis/applicationconnector.kyma-project.io/v1alpha1/applications"
TRIGGERS = "/apis/eventing.knative.dev/v1alpha1/namespaces/stage/triggers"
HEARTBEAT = {"eventmesh-health.kyma-project.io/heartbeat": "true"}
OURS = "eventmesh-health.kyma-project.io/health"
POLICIES = "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies"

pytestmark = pytest.mark.envtest


def _collection(api: ApiServer, doc: dict[str, Any]) -> str:
    res = api.resource(doc["apiVersion"], doc["kind"])
    return res.url(doc["metadata"].get("namespace"))


@pytest.fixture(scope="module")
def own_control_plane() -> Iterator[ControlPlane]:
    """An API server of this module's own: one that had a CRD deleted and installed again
    (tests/test_serve.py does) was seen never to load a new policy (status {}, nothing
    enforced; kube-apiserver v1.34.4), so these tests do not depend on what ran before."""
    with control_plane_with_test_crds() as cp:
        yield cp


@pytest.fixture(scope="module")
def setup(own_control_plane: ControlPlane) -> Iterator[tuple[ApiServer, httpx.Client]]:
    """The policy, serve's RBAC, the ServiceAccount and a client with its token."""
    control_plane = own_control_plane
    api = ApiServer(control_plane)
    made: list[str] = []

    def create(doc: dict[str, Any]) -> None:
        url = _collection(api, doc)
        answer = api.request("POST", url, doc)
        assert answer.status_code in (201, 409), answer.text
        made.append(f"{url}/{doc['metadata']['name']}")

    for ns in ("kyma-system", "stage"):
        create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    for name in RBAC_FILES:
        for doc in yaml.safe_load_all((DEPLOY / "rbac" / name).read_text()):
            if doc:
                create(doc)
    for doc in yaml.safe_load_all(POLICY_FILE.read_text()):
        create(doc)
    answer = api.request(
        "POST", f"/api/v1/namespaces/{SA_NAMESPACE}/serviceaccounts/{SA_NAME}/token",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
         "spec": {"expirationSeconds": 3600}})
    assert answer.status_code == 201, answer.text
    token = answer.json()["status"]["token"]
    checker = httpx.Client(base_url=control_plane.url,
                           verify=ssl.create_default_context(cafile=str(control_plane.ca_path)),
                           headers={"Authorization": f"Bearer {token}"}, timeout=10)
    try:
        yield api, checker
    finally:
        checker.close()
        for url in reversed(made):
            if not url.startswith("/api/v1/namespaces/") or url.count("/") > 4:
                api.request("DELETE", url)  # namespaces stay (no controller would finish it)
        api.close()


def _as_checker(checker: httpx.Client, method: str, url: str,
                body: dict[str, Any] | None = None) -> httpx.Response:
    headers = {"Content-Type": "application/merge-patch+json"} if method == "PATCH" else {}
    return checker.request(method, url, content=json.dumps(body) if body is not None else None,
                           headers=headers)


def _denied_by_policy(answer: httpx.Response) -> bool:
    return answer.status_code in (403, 422) and "eventmesh-health-writes" in answer.text


def _wait_for_policy(api: ApiServer, checker: httpx.Client, url: str) -> None:
    """The API server learns of a new policy through an informer: wait for a denial."""
    deadline = time.monotonic() + 20
    while True:
        answer = _as_checker(checker, "PATCH", url, {"metadata": {"labels": {"x": "probe"}}})
        if _denied_by_policy(answer):
            return
        if time.monotonic() > deadline:
            policy = api.request("GET", f"{POLICIES}/eventmesh-health-writes").json()
            who = checker.post("/apis/authentication.k8s.io/v1/selfsubjectreviews", json={
                "apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
            raise AssertionError(f"the policy never denied: {answer.status_code} "
                                 f"{answer.headers.get('warning')}; policy status "
                                 f"{policy.get('status')}; as {who.text[:300]}")
        time.sleep(0.2)


def _application(api: ApiServer, name: str) -> str:
    app = {"apiVersion": "applicationconnector.kyma-project.io/v1alpha1", "kind": "Application",
           "metadata": {"name": name, "labels": {"team": "a"},
                        "annotations": {"note": "mine",
                                        "eventmesh-health.kyma-project.io/probe": "false"}},
           "spec": {"description": "x", "services": []}}
    answer = api.request("POST", APPS, app)
    assert answer.status_code == 201, answer.text
    return f"{APPS}/{name}"


def _trigger(api: ApiServer, name: str, labels: dict[str, str]) -> str:
    trigger = {"apiVersion": "eventing.knative.dev/v1alpha1", "kind": "Trigger",
               "metadata": {"name": name, "namespace": "stage", "labels": labels},
               "spec": {"broker": "default",
                        "subscriber": {"uri": "http://127.0.0.1:9/x"}}}
    answer = api.request("POST", TRIGGERS, trigger)
    assert answer.status_code == 201, answer.text
    return f"{TRIGGERS}/{name}"


def test_applications_only_our_three_annotations(
        setup: tuple[ApiServer, httpx.Client]) -> None:
    api, checker = setup
    url = _application(api, "policy-app")
    try:
        _wait_for_policy(api, checker, url)
        allowed = _as_checker(checker, "PATCH", url, {"metadata": {"annotations": {
            OURS: "Unhealthy", "eventmesh-health.kyma-project.io/reason": "TopicFailed",
            "eventmesh-health.kyma-project.io/last-transition-time": "2020-06-15T10:00:00Z"}}})
        assert allowed.status_code == 200, allowed.text
        for patch in (
            {"metadata": {"labels": {"team": "b"}}},
            {"metadata": {"annotations": {"note": "changed"}}},
            {"metadata": {"annotations": {"note": None}}},
            {"metadata": {"annotations": {"eventmesh-health.kyma-project.io/probe": "true"}}},
            {"metadata": {"annotations": {"sneaky": "new"}}},
            {"metadata": {"finalizers": ["example.com/hold"]}},
            {"spec": {"description": "changed"}},
            {"status": {"installationStatus": {"status": "DEPLOYED"}}},
            {"metadata": {"annotations": {OURS: "Healthy", "note": "changed"}}},
        ):
            answer = _as_checker(checker, "PATCH", url, patch)
            assert _denied_by_policy(answer), (patch, answer.status_code, answer.text)
        # not an admission matter for anyone else
        assert api.request("PATCH", url, {"metadata": {"labels": {"team": "b"}}},
                           patch=True).status_code == 200
        assert api.request("GET", url).json()["metadata"]["annotations"][OURS] == "Unhealthy"
    finally:
        api.request("DELETE", url)


def test_triggers_only_heartbeat_ones(setup: tuple[ApiServer, httpx.Client]) -> None:
    api, checker = setup
    user = _trigger(api, "users-trigger", {"team": "a"})
    ours = _trigger(api, "eventmesh-health-app", dict(HEARTBEAT))
    try:
        _wait_for_policy(api, checker, user)
        # its own: create, patch, delete
        created = _as_checker(checker, "POST", TRIGGERS, {
            "apiVersion": "eventing.knative.dev/v1alpha1", "kind": "Trigger",
            "metadata": {"name": "eventmesh-health-new", "namespace": "stage",
                         "labels": dict(HEARTBEAT)},
            "spec": {"broker": "default", "subscriber": {"uri": "http://127.0.0.1:9/y"}}})
        assert created.status_code == 201, created.text
        patched = _as_checker(checker, "PATCH", ours,
                              {"spec": {"subscriber": {"uri": "http://127.0.0.1:9/z"}}})
        assert patched.status_code == 200, patched.text
        assert _as_checker(checker, "DELETE", f"{TRIGGERS}/eventmesh-health-new"
                           ).status_code == 200
        # a user's: not created, patched, adopted, deleted; ours not un-labelled
        denied = [
            _as_checker(checker, "POST", TRIGGERS, {
                "apiVersion": "eventing.knative.dev/v1alpha1", "kind": "Trigger",
                "metadata": {"name": "unlabelled", "namespace": "stage"},
                "spec": {"broker": "default", "subscriber": {"uri": "http://127.0.0.1:9/"}}}),
            _as_checker(checker, "PATCH", user,
                        {"spec": {"subscriber": {"uri": "http://127.0.0.1:9/stolen"}}}),
            _as_checker(checker, "PATCH", user, {"metadata": {"labels": HEARTBEAT}}),
            _as_checker(checker, "DELETE", user),
            _as_checker(checker, "PATCH", ours, {"metadata": {"labels": {
                "eventmesh-health.kyma-project.io/heartbeat": None}}}),
        ]
        for answer in denied:
            assert _denied_by_policy(answer), (answer.status_code, answer.text)
        assert api.request("GET", user).json()["spec"]["subscriber"]["uri"] == \
            "http://127.0.0.1:9/x"
    finally:
        for url in (user, ours, f"{TRIGGERS}/eventmesh-health-new", f"{TRIGGERS}/unlabelled"):
            api.request("DELETE", url)
