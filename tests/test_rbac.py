"""The shipped ClusterRoles are generated from the profiles (`topology.rbac`; the committed files
are what the generator writes), and the reader (`deploy/rbac/clusterrole-reader.yaml`) is
exactly what `check` and `dump` need: `list` on the resources of the profiles, no more
(compared with rules made from the profiles' kinds, and with what a reader actually does per the
audit log), no less (a user bound to it alone can run `check`; without `list` on triggers it is
a clear Forbidden, exit 2).
"""

from __future__ import annotations

import copy
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from eventmesh_health import cli
from eventmesh_health.sources import cluster
from eventmesh_health.topology import rbac
from eventmesh_health.topology.kyma1 import PROFILE as KYMA_1
from eventmesh_health.topology.registry import PROFILES
from tests.envtest.controlplane import ControlPlane
from tests.live_objects import (
    ApiServer,
    apply_example,
    clear_cluster,
    report_json,
    root_causes,
    run_cli,
)

RBAC = Path(__file__).resolve().parents[1] / "deploy" / "rbac"
ROLE_FILE = RBAC / "clusterrole-reader.yaml"
BINDING_FILE = RBAC / "clusterrolebinding-reader.yaml"
RBAC_API = "/apis/rbac.authorization.k8s.io/v1"
Rule = tuple[str, str, str]  # (API group, resource, verb)


def expected_rules() -> set[Rule]:
    """What the profiles read: `list`, cluster-wide, on each of their kinds."""
    return {(kind.group, kind.plural, "list") for p in PROFILES.values() for kind in p.kinds}


def granted(role: dict[str, Any]) -> set[Rule]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"] for resource in rule["resources"] for verb in rule["verbs"]
    }


def shipped_role() -> dict[str, Any]:
    role: dict[str, Any] = yaml.safe_load(ROLE_FILE.read_text())
    return role


def test_shipped_clusterrole_grants_exactly_list_on_the_profile_kinds() -> None:
    role = shipped_role()
    assert (role["apiVersion"], role["kind"]) == ("rbac.authorization.k8s.io/v1", "ClusterRole")
    assert granted(role) == expected_rules()
    for rule in role["rules"]:
        assert set(rule) == {"apiGroups", "resources", "verbs"}, rule  # no names, no URLs
        assert "*" not in rule["apiGroups"] + rule["resources"] + rule["verbs"]
    assert not any(resource.startswith("secrets") for _, resource, _ in granted(role))


@pytest.mark.parametrize("name", [rbac.READER_FILE, rbac.SERVE_FILE])
def test_committed_roles_are_the_generated_ones(name: str) -> None:
    assert (RBAC / name).read_text(encoding="utf-8") == rbac.generate()[name], (
        f"deploy/rbac/{name} is stale: python -m eventmesh_health.topology.rbac")


def test_serve_role_lists_and_watches_the_profile_kinds_and_patches_applications() -> None:
    role = next(yaml.safe_load_all((RBAC / rbac.SERVE_FILE).read_text()))
    rules = granted(role)
    for group, resource, _ in expected_rules():
        assert {(group, resource, "list"), (group, resource, "watch")} <= rules
    assert (KYMA_1.application.group, KYMA_1.application.plural, "patch") in rules
    assert ("", "secrets", "list") not in rules and ("", "secrets", "get") not in rules


def test_shipped_binding_binds_the_shipped_role() -> None:
    docs = list(yaml.safe_load_all(BINDING_FILE.read_text()))
    account = next(d for d in docs if d["kind"] == "ServiceAccount")
    binding = next(d for d in docs if d["kind"] == "ClusterRoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io",
                                  "kind": "ClusterRole", "name": shipped_role()["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount",
                                    "name": account["metadata"]["name"],
                                    "namespace": account["metadata"]["namespace"]}]


# --- on the API server ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def api(control_plane: ControlPlane) -> Iterator[ApiServer]:
    """The healthy mesh, once for the module; removed (with our RBAC objects) at the end."""
    if not control_plane.apiserver_running:
        control_plane.start_apiserver()
    server = ApiServer(control_plane)
    try:
        apply_example(server, "healthy-mesh")
        yield server
    finally:
        if not control_plane.apiserver_running:
            control_plane.start_apiserver()
        clear_cluster(server)
        server.close()


@pytest.fixture
def created(api: ApiServer) -> Iterator[list[str]]:
    """URLs of the RBAC objects a test made, deleted after it."""
    urls: list[str] = []
    yield urls
    for url in reversed(urls):
        api.request("DELETE", url)


def put(api: ApiServer, created: list[str], url: str, obj: dict[str, Any]) -> None:
    """Create the object, or replace it if it exists; remembered for the cleanup."""
    name = obj["metadata"]["name"]
    answer = api.request("POST", url, obj)
    if answer.status_code == 409:
        current = api.request("GET", f"{url}/{name}").json()
        obj = {**obj, "metadata": {**obj["metadata"],
                                   "resourceVersion": current["metadata"]["resourceVersion"]}}
        answer = api.request("PUT", f"{url}/{name}", obj)
    assert answer.status_code in (200, 201), answer.text
    created.append(f"{url}/{name}")


def bind(api: ApiServer, created: list[str], role: dict[str, Any], user: str) -> None:
    put(api, created, f"{RBAC_API}/clusterroles", role)
    put(api, created, f"{RBAC_API}/clusterrolebindings", {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": f"{role['metadata']['name']}-{user}"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": role["metadata"]["name"]},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    })


def allowed(api: ApiServer, user: str, group: str, resource: str, verb: str = "list") -> bool:
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
              "spec": {"user": user, "groups": ["system:authenticated"],
                       "resourceAttributes": {"verb": verb, "group": group,
                                              "resource": resource}}}
    answer = api.request("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", review)
    assert answer.status_code == 201, answer.text
    return bool(answer.json()["status"].get("allowed"))


def wait_until(predicate: Any, what: str, timeout: float = 10.0) -> None:
    """The RBAC authorizer learns of new bindings through its informers: wait for that."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"not true after {timeout:.0f}s: {what}"
        time.sleep(0.05)


def audit_of(control_plane: ControlPlane, user: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = control_plane.audit_events()
    return [e for e in events if (e.get("user") or {}).get("username") == user]


@pytest.mark.envtest
def test_a_user_bound_to_the_shipped_role_alone_can_check_and_dump(
    api: ApiServer, created: list[str], control_plane: ControlPlane, tmp_path: Path
) -> None:
    user = f"reader-{uuid.uuid4().hex[:8]}"
    bind(api, created, shipped_role(), user)
    wait_until(lambda: all(allowed(api, user, g, r) for g, r, _ in expected_rules()),
               f"{user} may list everything in {ROLE_FILE.name}")
    kubeconfig = control_plane.make_user_kubeconfig(user)

    result = run_cli("check", "-o", "json", "--kubeconfig", kubeconfig)
    assert result.returncode == 0, result.stderr
    report = report_json(result)
    admin = report_json(run_cli("check", "-o", "json", "--kubeconfig",
                                control_plane.kubeconfig_path))
    assert report["healthy"] is True
    assert root_causes(report) == root_causes(admin) == set()
    assert report["applications"] == admin["applications"]
    assert run_cli("dump", "-o", tmp_path / "dump", "--kubeconfig", kubeconfig).returncode == 0

    # What the reader did, per the API server's audit log: `list` on exactly the profile's
    # resources (every one of them, so every rule is used), nothing else on any resource.
    def requests() -> set[Rule]:
        return {(str(e["objectRef"].get("apiGroup") or ""), str(e["objectRef"]["resource"]),
                 str(e["verb"]))
                for e in audit_of(control_plane, user) if e.get("objectRef")}

    # This cluster runs Kyma 1.x: the reader lists exactly kyma-1's kinds, every one of them.
    # The role's other rules are knative-v1's own kinds (a cluster running Knative v1 uses
    # them: tests/test_knative_profile.py).
    kyma = {(kind.group, kind.plural, "list") for kind in PROFILES["kyma-1"].kinds}
    wait_until(lambda: requests() >= kyma, "the audit log has every list")
    assert requests() == kyma
    knative = {(kind.group, kind.plural, "list") for kind in PROFILES["knative-v1"].kinds}
    assert expected_rules() == kyma | knative


@pytest.mark.envtest
def test_without_list_on_triggers_it_is_a_clear_forbidden_with_exit_2(
    api: ApiServer, created: list[str], control_plane: ControlPlane, tmp_path: Path
) -> None:
    user = f"no-triggers-{uuid.uuid4().hex[:8]}"
    role = copy.deepcopy(shipped_role())
    role["metadata"]["name"] = f"eventmesh-health-reader-{user}"
    for rule in role["rules"]:
        if rule["apiGroups"] == ["eventing.knative.dev"]:
            rule["resources"].remove("triggers")
    assert granted(role) == expected_rules() - {("eventing.knative.dev", "triggers", "list")}
    bind(api, created, role, user)
    wait_until(lambda: allowed(api, user, "eventing.knative.dev", "brokers"),
               f"{user} may list brokers")
    assert not allowed(api, user, "eventing.knative.dev", "triggers")
    kubeconfig = control_plane.make_user_kubeconfig(user)

    result = run_cli("check", "--kubeconfig", kubeconfig)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0] == (
        f"error: forbidden: user '{user}' may not list triggers.eventing.knative.dev at the "
        "cluster scope (RBAC: verb 'list' on resource 'triggers.eventing.knative.dev' is "
        "missing; see deploy/rbac/clusterrole-reader.yaml for the ClusterRole eventmesh-health "
        "needs)"
    )
    dumped = run_cli("dump", "-o", tmp_path / "dump", "--kubeconfig", kubeconfig)
    assert dumped.returncode == 2 and "triggers.eventing.knative.dev" in dumped.stderr
    assert not (tmp_path / "dump").exists()


@pytest.mark.envtest
def test_in_cluster_with_the_shipped_service_account_and_binding(
    api: ApiServer, created: list[str], control_plane: ControlPlane, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No kubeconfig anywhere: the in-cluster service account files and environment, as a Pod
    of `clusterrolebinding-reader.yaml`'s ServiceAccount would have them."""
    put(api, created, f"{RBAC_API}/clusterroles", shipped_role())
    for doc in yaml.safe_load_all(BINDING_FILE.read_text()):
        if doc["kind"] == "ServiceAccount":
            account = doc
            url = f"/api/v1/namespaces/{doc['metadata']['namespace']}/serviceaccounts"
            put(api, created, url, doc)
        else:
            put(api, created, f"{RBAC_API}/clusterrolebindings", doc)
    namespace, name = account["metadata"]["namespace"], account["metadata"]["name"]
    wait_until(lambda: allowed(api, f"system:serviceaccount:{namespace}:{name}",
                               "eventing.knative.dev", "triggers"), "the binding works")
    answer = api.request(
        "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
         "spec": {"expirationSeconds": 3600}},
    )
    assert answer.status_code == 201, answer.text
    secrets = tmp_path / "serviceaccount"
    secrets.mkdir()
    (secrets / "token").write_text(answer.json()["status"]["token"])
    (secrets / "namespace").write_text(namespace)
    (secrets / "ca.crt").write_bytes(control_plane.ca_path.read_bytes())
    monkeypatch.setattr(cluster, "SERVICE_ACCOUNT_DIR", secrets)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(control_plane.port))
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.kube/config
    monkeypatch.delenv("KUBECONFIG", raising=False)

    result = CliRunner().invoke(cli.main, ["check", "-o", "json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert '"healthy": true' in result.stdout
