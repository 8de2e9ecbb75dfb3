"""The chart's smoke admission policy (`admissionPolicy.enabled` and `smoke.enabled`) on the
real kube-apiserver, with a real token of the smoke ServiceAccount and the chart's smoke RBAC:
it may create and delete Triggers labelled `eventmesh-health.kyma-project.io/smoke`, and no
other, though RBAC alone would let it."""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from eventmesh_health.smoke.objects import SMOKE_LABEL
from tests.chart import apply_all, ensure_namespace, render
from tests.envtest.fixtures import (
    control_plane_with_test_crds,
)
from tests.live_objects import ApiServer

pytestmark = pytest.mark.envtest

NAMESPACE, RELEASE = "kyma-system", "eventmesh-health"
TRIGGERS = "/apis/eventing.knative.dev/v1alpha1/namespaces/stage/triggers"
POLICY = f"{RELEASE}-smoke-writes"


@pytest.fixture(scope="module")
def smoke_account() -> Iterator[tuple[ApiServer, httpx.Client]]:
    """A control plane of its own (a fresh one loads new policies reliably: see
    tests/test_admission_policy.py), the chart's smoke objects, a client with the smoke
    ServiceAccount's token."""
    with control_plane_with_test_crds() as cp:
        api = ApiServer(cp)
        for ns in (NAMESPACE, "stage"):
            ensure_namespace(api, ns)
        docs = [d for d in render("smoke.enabled=true", "rbac.serve.enabled=false")
                if d["apiVersion"].startswith(("rbac.", "admissionregistration."))
                or d["kind"] == "ServiceAccount"]
        assert POLICY in {d["metadata"]["name"] for d in docs}
        apply_all(api, docs)
        answer = api.request(
            "POST", f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/{RELEASE}-smoke/token",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
             "spec": {"expirationSeconds": 3600}})
        assert answer.status_code == 201, answer.text
        token = answer.json()["status"]["token"]
        with httpx.Client(base_url=cp.url,
                          verify=ssl.create_default_context(cafile=str(cp.ca_path)),
                          headers={"Authorization": f"Bearer {token}"}, timeout=10) as smoke:
            yield api, smoke
        api.close()


def trigger(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "eventing.knative.dev/v1alpha1", "kind": "Trigger",
            "metadata": {"name": name, "namespace": "stage", "labels": labels},
            "spec": {"broker": "default", "subscriber": {"uri": "http://127.0.0.1:9/x"}}}


def denied(answer: httpx.Response) -> bool:
    return answer.status_code in (403, 422) and POLICY in answer.text


def test_the_smoke_account_writes_only_smoke_objects(
        smoke_account: tuple[ApiServer, httpx.Client]) -> None:
    api, smoke = smoke_account
    assert api.request("POST", TRIGGERS, trigger("users-trigger", {"team": "a"})
                       ).status_code == 201
    # The API server learns of a new policy through an informer: wait for a denial of an
    # unlabelled create (one that got through before is removed again by the admin).
    deadline = time.monotonic() + 30
    while not denied(answer := smoke.post(TRIGGERS, content=json.dumps(trigger("probe", {})))):
        if answer.status_code == 201:
            api.request("DELETE", f"{TRIGGERS}/probe")
        assert time.monotonic() < deadline, f"the policy never denied: {answer.text}"
        time.sleep(0.2)
    assert denied(smoke.delete(f"{TRIGGERS}/users-trigger"))
    ours = trigger("eventmesh-health-smoke-0123456789", {SMOKE_LABEL: "0123456789"})
    created = smoke.post(TRIGGERS, content=json.dumps(ours))
    assert created.status_code == 201, created.text
    assert smoke.delete(f"{TRIGGERS}/eventmesh-health-smoke-0123456789").status_code == 200
    assert denied(smoke.post(TRIGGERS, content=json.dumps(trigger("unlabelled", {}))))
    assert api.request("GET", f"{TRIGGERS}/users-trigger").status_code == 200
    # an administrator is not affected
    assert api.request("DELETE", f"{TRIGGERS}/users-trigger").status_code == 200
