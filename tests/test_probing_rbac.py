"""The extra RBAC of `serve --probe`: bound, and naming what the probing code uses."""

from __future__ import annotations

from pathlib import Path

import yaml

from eventmesh_health.cli import serve

DEPLOY = Path(__file__).parent.parent / "deploy" / "rbac"


def test_every_probe_role_is_bound_to_the_serve_service_account() -> None:
    roles = list(yaml.safe_load_all((DEPLOY / "clusterrole-serve-probe.yaml").read_text()))
    bindings = list(yaml.safe_load_all(
        (DEPLOY / "clusterrolebinding-serve-probe.yaml").read_text()))
    assert {(r["kind"], r["metadata"]["name"]) for r in roles} == {
        (b["roleRef"]["kind"], b["roleRef"]["name"]) for b in bindings}
    for binding in bindings:
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "eventmesh-health", "namespace": "kyma-system"}]


def test_the_key_secret_is_the_one_serve_reads_by_default_and_only_it() -> None:
    roles = {r["metadata"]["name"]: r for r in yaml.safe_load_all(
        (DEPLOY / "clusterrole-serve-probe.yaml").read_text())}
    (rule,) = roles["eventmesh-health-serve-probe-keys"]["rules"]
    default = next(p.default for p in serve.params if p.name == "probe_secret")
    namespace, name = str(default).split("/")
    assert roles["eventmesh-health-serve-probe-keys"]["metadata"]["namespace"] == namespace
    assert rule == {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [name],
                    "verbs": ["get"]}
    triggers, subscriptions = roles["eventmesh-health-serve-probe"]["rules"]
    assert triggers["resources"] == ["triggers"]
    assert set(triggers["verbs"]) == {"list", "watch", "create", "patch", "delete"}
    # knative-v1: the heartbeat Subscriptions of Channel flows
    assert (subscriptions["apiGroups"], subscriptions["resources"]) == (
        ["messaging.knative.dev"], ["subscriptions"])
    assert set(subscriptions["verbs"]) == {"list", "watch", "create", "patch", "delete"}
