"""The Helm chart `deploy/helm/eventmesh-health` with the real `helm` (built by
hack/tools/build.sh; a test fails, never skips, when it cannot be had): `helm lint --strict`;
`helm template` with the default values and with every switch flipped, each output applied
server-side to a real kube-apiserver; `deploy/*.yaml` agree with what the chart renders;
`serve` runs as the chart's ServiceAccount with the chart's RBAC alone; and every RBAC rule of
the chart is needed: without it a named capability of serve is refused (403).
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from eventmesh_health.topology import rbac
from tests.chart import (
    CHART,
    NAMESPACE,
    RELEASE,
    apply_all,
    ensure_namespace,
    helm,
    key,
    render,
    sa_identity,
    sets,
    wait_for,
)
from tests.envtest.controlplane import ControlPlane, free_port
from tests.envtest.fixtures import (
    control_plane_with_test_crds,
)
from tests.live_objects import ApiServer, apply_example
from tests.tools import tool

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
SA_USER = f"system:serviceaccount:{NAMESPACE}:{RELEASE}"
SA_GROUPS = ["system:serviceaccounts", f"system:serviceaccounts:{NAMESPACE}"]
# Labels Helm's conventions add; deploy/*.yaml carry only app.kubernetes.io/name.
HELM_LABELS = {"app.kubernetes.io/instance", "app.kubernetes.io/version",
               "app.kubernetes.io/managed-by", "helm.sh/chart"}

# Every switch of values.yaml, and the value that flips it.
SWITCHES = {
    "serviceAccount.create": "false",
    "crd.install": "false",
    "crd.keep": "false",
    "rbac.serve.enabled": "false",
    "rbac.probe.enabled": "true",
    "rbac.reader.enabled": "true",
    "probe.enabled": "true",
    "probe.keys.create": "false",
    "leaderElection.enabled": "false",
    "write": "false",
    "admissionPolicy.enabled": "false",
    "networkPolicy.enabled": "false",
    "serviceMonitor.enabled": "true",
    "prometheusRule.enabled": "true",
    "dashboard.enabled": "true",
    "notify.secretName": "eventmesh-health-notify",
    "smoke.enabled": "true",
    "tracing.url": "http://tracing-jaeger-query.kyma-system:16686",
}
# A smoke target, so that its CronJob and NetworkPolicy are rendered too.
SMOKE_TARGET = ("smoke.enabled=true", "smoke.targets[0].name=shop-broker",
                "smoke.targets[0].target=broker/default", "smoke.targets[0].namespace=shop")
# What deploy/*.yaml hold: the chart with every RBAC part, probing's RBAC but no key Secret.
DEPLOY_VALUES = ("rbac.reader.enabled=true", "rbac.probe.enabled=true",
                 "probe.keys.create=false")


# --- helm ---------------------------------------------------------------------------------


# --- without an API server ----------------------------------------------------------------


def test_helm_lint_strict_with_defaults_and_every_switch_flipped() -> None:
    helm("lint", "--strict", str(CHART))
    flipped = tuple(f"{name}={value}" for name, value in SWITCHES.items())
    helm("lint", "--strict", str(CHART), *sets(flipped))
    helm("lint", "--strict", str(CHART), *sets(flipped + SMOKE_TARGET))


def _env_of(doc: dict[str, Any]) -> dict[str, str]:
    spec = doc["spec"]["jobTemplate"]["spec"] if doc["kind"] == "CronJob" else doc["spec"]
    containers = spec["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", "") for e in containers[0].get("env", [])}


def test_tracing_url_reaches_serve_with_probing_and_the_smoke_jobs() -> None:
    url = "http://tracing-jaeger-query.kyma-system:16686"
    docs = render("probe.enabled=true", f"tracing.url={url}", "tracing.backend=zipkin",
                  *SMOKE_TARGET)
    jobs = [_env_of(d) for d in docs if d["kind"] in ("Deployment", "CronJob")]
    assert len(jobs) == 2
    for env in jobs:
        assert env["EVENTMESH_HEALTH_TRACE_URL"] == url
        assert env["EVENTMESH_HEALTH_TRACE_BACKEND"] == "zipkin"
    # serve looks traces up only for failed heartbeats: without probing it is not told
    (deploy,) = [d for d in render(f"tracing.url={url}") if d["kind"] == "Deployment"]
    assert "EVENTMESH_HEALTH_TRACE_URL" not in _env_of(deploy)
    # a plain value: credentials in it are refused by the schema
    ran = helm("template", RELEASE, str(CHART),
               *sets(("tracing.url=http://user:secret@jaeger:16686",)), check=False)
    assert ran.returncode != 0 and "tracing" in ran.stderr, ran.stderr


def test_the_chart_rule_files_are_the_generated_ones() -> None:
    for name, text in rbac.chart_rules().items():
        assert (REPO / rbac.CHART_RBAC / name).read_text(encoding="utf-8") == text, (
            f"{rbac.CHART_RBAC / name} is stale: python -m eventmesh_health.topology.rbac")


def _leaves(value: Any, path: str = "") -> Iterator[str]:
    if isinstance(value, dict) and value and not path.endswith(
            ("annotations", "labels", "Labels", "Annotations", "nodeSelector", "resources",
             "affinity", "SecurityContext", "securityContext", "podSecurityContext")):
        for k, v in value.items():
            yield from _leaves(v, f"{path}.{k}" if path else k)
    else:
        yield path


def test_values_schema_describes_every_value_and_refuses_unknown_ones() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for path in _leaves(values):
        node = schema
        for part in path.split("."):
            assert node.get("type") == "object", path
            assert part in node["properties"], f"{path}: not in values.schema.json"
            node = node["properties"][part]
        assert node.get("description"), f"{path}: no description in values.schema.json"
    refused = helm("template", RELEASE, str(CHART), "--set", "probe.enabeld=true", check=False)
    assert refused.returncode != 0 and "enabeld" in refused.stderr
    refused = helm("template", RELEASE, str(CHART), "--set", "profile=kyma-2", check=False)
    assert refused.returncode != 0 and "profile" in refused.stderr


def _normalized(value: Any) -> Any:
    """Helm's own labels and the CRD's keep annotation left out."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k in HELM_LABELS or k == "helm.sh/resource-policy":
                continue
            v = _normalized(v)
            if k == "annotations" and v == {}:
                continue
            out[k] = v
        return out
    if isinstance(value, list):
        return [_normalized(v) for v in value]
    return value


def deploy_documents() -> dict[tuple[str, str, str], dict[str, Any]]:
    docs: dict[tuple[str, str, str], dict[str, Any]] = {}
    for path in sorted(DEPLOY.rglob("*.yaml")):
        if CHART in path.parents or path.parent.name in ("prometheus", "grafana"):
            continue  # the chart's templates; Prometheus rule files and their unit tests
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                assert docs.setdefault(key(doc), doc) == doc, f"{path}: {key(doc)} differs"
    return docs


def test_deploy_manifests_are_what_the_chart_renders() -> None:
    """deploy/*.yaml are the chart rendered for release eventmesh-health in kyma-system (every
    RBAC part on, no key Secret): the same objects, field for field, Helm's labels aside."""
    chart = {key(doc): _normalized(doc) for doc in render(*DEPLOY_VALUES)}
    deploy = {k: _normalized(v) for k, v in deploy_documents().items()}
    assert sorted(chart) == sorted(deploy)
    for k in chart:
        assert chart[k] == deploy[k], f"{k}: deploy/ and the chart differ"


def test_security_defaults() -> None:
    (deployment,) = [d for d in render() if d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 2
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]}}
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert env["EVENTMESH_HEALTH_ADVERTISE_ADDRESS"]["value"] == "$(POD_IP):8081"
    assert env["EVENTMESH_HEALTH_LEADER_ELECTION"]["value"] == "true"


def test_the_key_secret_is_created_once_or_referenced() -> None:
    secrets = [d for d in render("probe.enabled=true") if d["kind"] == "Secret"]
    (secret,) = secrets
    assert secret["metadata"]["name"] == f"{RELEASE}-heartbeat-keys"
    assert len(base64.b64decode(secret["data"]["k1"])) >= 32
    assert secret["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    mine = render("probe.enabled=true", "probe.keys.create=false",
                  "probe.keys.secretName=my-keys", "rbac.probe.enabled=true")
    assert not [d for d in mine if d["kind"] == "Secret"]
    (role,) = [d for d in mine if d["metadata"]["name"] == f"{RELEASE}-serve-probe-keys"
               and d["kind"] == "Role"]
    assert role["rules"][0]["resourceNames"] == ["my-keys"]
    (deployment,) = [d for d in mine if d["kind"] == "Deployment"]
    env = {e["name"]: e.get("value") for e in
           deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["EVENTMESH_HEALTH_PROBE_SECRET"] == f"{NAMESPACE}/my-keys"


def test_monitoring_objects_include_the_rules_and_dashboards_files() -> None:
    docs = {d["kind"]: d for d in render("serviceMonitor.enabled=true",
                                         "prometheusRule.enabled=true", "dashboard.enabled=true")}
    assert docs["ServiceMonitor"]["spec"]["endpoints"][0]["path"] == "/metrics"
    rules_file = DEPLOY / "prometheus" / "rules.yaml"
    expected = yaml.safe_load(rules_file.read_text())["groups"] if rules_file.exists() else []
    assert docs["PrometheusRule"]["spec"]["groups"] == expected
    dashboards = {p.name: p.read_text() for p in sorted((DEPLOY / "grafana").glob("*.json"))}
    configmap = docs["ConfigMap"]
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert (configmap.get("data") or {}) == dashboards


def test_smoke_cronjob_runs_smoke_as_its_own_account_on_the_pod_address() -> None:
    docs = render(*SMOKE_TARGET, "smoke.schedule=*/5 * * * *")
    (cron,) = [d for d in docs if d["kind"] == "CronJob"]
    assert cron["metadata"]["name"] == f"{RELEASE}-smoke-shop-broker"
    assert cron["spec"]["schedule"] == "*/5 * * * *"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    job = cron["spec"]["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 0  # a failed run is a result, not retried
    pod = job["template"]["spec"]
    assert pod["serviceAccountName"] == f"{RELEASE}-smoke" and pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["args"] == ["smoke", "broker/default", "--namespace=shop", "--timeout=30s",
                                 "--profile=auto", "--listen=0.0.0.0:8090"]
    assert container["env"] == [{"name": "POD_IP",
                                 "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    # Not serve's Pods: neither its Service nor its NetworkPolicy select them.
    (service,) = [d for d in docs if d["kind"] == "Service"]
    labels = job["template"]["metadata"]["labels"]
    assert not set(service["spec"]["selector"].items()) <= set(labels.items())
    (policy,) = [d for d in docs if d["kind"] == "NetworkPolicy"
                 and d["metadata"]["name"] == f"{RELEASE}-smoke"]
    assert set(policy["spec"]["podSelector"]["matchLabels"].items()) <= set(labels.items())
    assert policy["spec"]["ingress"][0]["ports"] == [{"port": 8090, "protocol": "TCP"}]
    refused = helm("template", RELEASE, str(CHART), *sets(SMOKE_TARGET),
                   "--set", "smoke.targets[0].color=red", check=False)
    assert refused.returncode != 0 and "color" in refused.stderr


# --- on the API server --------------------------------------------------------------------


@pytest.fixture(scope="module")
def own_control_plane() -> Iterator[ControlPlane]:
    """An API server of this module's own (the chart installs cluster-wide objects: the CRD,
    admission policies) with the test CRDs and the healthy example mesh."""
    tool("helm")  # a missing helm fails here, before an API server is started
    with control_plane_with_test_crds() as cp:
        yield cp


@pytest.fixture(scope="module")
def api(own_control_plane: ControlPlane) -> Iterator[ApiServer]:
    server = ApiServer(own_control_plane)
    try:
        apply_example(server, "healthy-mesh")
        for kind in ("validatingwebhookconfigurations", "mutatingwebhookconfigurations"):
            url = f"/apis/admissionregistration.k8s.io/v1/{kind}"  # no webhook runs here
            for item in server.request("GET", url).json()["items"]:
                server.request("DELETE", f"{url}/{item['metadata']['name']}")
        yield server
    finally:
        server.close()


def _monitoring_crds() -> list[dict[str, Any]]:
    folder = REPO / "tests" / "crds" / "monitoring"
    return [yaml.safe_load(p.read_text()) for p in sorted(folder.glob("*.yaml"))]


CASES = {"defaults": (), **{f"{name}={value}": (f"{name}={value}",)
                            for name, value in SWITCHES.items()},
         "smoke-target": SMOKE_TARGET,
         "all-flipped": tuple(f"{n}={v}" for n, v in SWITCHES.items()) + SMOKE_TARGET}


@pytest.mark.envtest
@pytest.mark.parametrize("values", list(CASES.values()), ids=list(CASES))
def test_every_rendering_is_accepted_by_the_api_server(api: ApiServer,
                                                       values: tuple[str, ...]) -> None:
    """Each release in a namespace of its own (server-side apply, strict field validation)."""
    monitoring = _monitoring_crds()
    if monitoring:
        apply_all(api, monitoring)
    release = f"emh-{uuid.uuid4().hex[:6]}"
    ensure_namespace(api, release)
    docs = render(*values, release=release, namespace=release)
    assert docs
    apply_all(api, docs)


# --- serve as the chart's ServiceAccount -------------------------------------------------


def client_for(control_plane: ControlPlane, user: str, groups: list[str],
               tmp_path: Path) -> httpx.Client:
    """An httpx client with a client certificate for user (in groups)."""
    config = yaml.safe_load(control_plane.make_user_kubeconfig(user, groups).read_text())
    who = config["users"][0]["user"]
    stem = tmp_path / re.sub(r"[^A-Za-z0-9]+", "-", user)
    cert, key_file = stem.with_suffix(".crt"), stem.with_suffix(".key")
    cert.write_bytes(base64.b64decode(who["client-certificate-data"]))
    key_file.write_bytes(base64.b64decode(who["client-key-data"]))
    context = ssl.create_default_context(cafile=str(control_plane.ca_path))
    context.load_cert_chain(str(cert), str(key_file))
    return httpx.Client(base_url=control_plane.url, verify=context, timeout=10,
                        trust_env=False)


def chart_env(docs: list[dict[str, Any]], pod_ip: str) -> dict[str, str]:
    """The serve container's environment from the rendered Deployment, as the kubelet would
    give it ($(POD_IP) expanded)."""
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {}
    for item in container["env"]:
        if "value" in item:
            env[item["name"]] = item["value"].replace("$(POD_IP)", pod_ip)
    return env


@pytest.mark.envtest
def test_serve_runs_as_the_charts_service_account(
    own_control_plane: ControlPlane, api: ApiServer, tmp_path: Path
) -> None:
    """The chart (defaults) installed; serve started with the Deployment's environment and a
    client certificate of the ServiceAccount's identity: it leads, becomes ready, writes an
    EventMeshHealth object per Application, and the API server refused none of its
    requests."""
    docs = render()
    ensure_namespace(api, NAMESPACE)
    apply_all(api, docs)
    user, groups = sa_identity(NAMESPACE, RELEASE)
    kubeconfig = own_control_plane.make_user_kubeconfig(user, groups)
    port, receiver = free_port(), free_port()
    env = {**os.environ, **chart_env(docs, "127.0.0.1"), "POD_NAME": "serve-0",
           "POD_IP": "127.0.0.1", "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "serve.log"
    started = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    process = subprocess.Popen(
        [sys.executable, "-m", "eventmesh_health", "serve", "--kubeconfig", str(kubeconfig),
         "--host", "127.0.0.1", "--port", str(port), "--receiver-port", str(receiver),
         "--advertise-address", f"127.0.0.1:{receiver}"],
        stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: httpx.get(f"{base}/readyz", timeout=5).status_code == 200,
                 f"serve ready: {log}", 90)
        health = "/apis/eventmesh-health.kyma-project.io/v1alpha1/eventmeshhealths"
        apps = api.request(
            "GET", "/apis/applicationconnector.kyma-project.io/v1alpha1/applications"
        ).json()["items"]
        assert apps
        wait_for(lambda: {i["metadata"]["name"] for i in api.request("GET", health).json()[
            "items"] if i.get("status", {}).get("conditions")} >= {
            a["metadata"]["name"] for a in apps}, "a health object per Application")
        lease = api.request("GET", f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/"
                                   f"leases/{RELEASE}-serve").json()
        assert lease["spec"]["holderIdentity"] == "serve-0"
        refused = [e for e in own_control_plane.audit_events()
                   if (e.get("user") or {}).get("username") == user  # type: ignore[union-attr]
                   and str(e.get("requestReceivedTimestamp", "")) >= started
                   and (e.get("responseStatus") or {}).get("code") == 403]  # type: ignore[union-attr]
        assert refused == [], refused[:3]
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


# --- every RBAC rule is needed ------------------------------------------------------------

# The role sets an identity is bound to, and which of their roles' rules are tested in each:
# serve's own roles; probing's on top of them; the reader (check/dump) alone.
ROLE_SETS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "serve": ((), ("serve", "serve-leader-election", "serve-events")),
    "probe": (("rbac.probe.enabled=true", "probe.enabled=true"),
              ("serve-probe", "serve-probe-keys")),
    "reader": (("rbac.serve.enabled=false", "rbac.reader.enabled=true"), ("reader",)),
    "notify": (("notify.secretName=eventmesh-health-notify",), ("notify",)),
    # its own ServiceAccount: alone, so that every rule tested is one bound to that account
    "smoke": (("smoke.enabled=true", "rbac.serve.enabled=false"), ("smoke",)),
}
# What serve (or check) does with each rule: (role without the release prefix, a resource).
PURPOSE = {
    ("serve", "customresourcedefinitions"): "serve finds which CRDs of the profile exist",
    ("serve", "eventmeshhealths"): "serve writes the EventMeshHealth objects and their status",
    ("serve", "applications"): "serve writes its annotations on Applications",
    ("serve-leader-election", "leases"): "serve's leader election",
    ("serve-events", "events"): "serve records health transitions as Events",
    ("serve-probe", "triggers"): "probing creates, fixes and deletes heartbeat Triggers",
    ("serve-probe", "subscriptions"): "probing creates, fixes and deletes heartbeat "
                                      "Subscriptions",
    ("serve-probe-keys", "secrets"): "probing reads the heartbeat signing keys",
    ("notify", "secrets"): "notifications read the URLs to post to",
    ("smoke", "triggers"): "smoke creates its Trigger, waits for it, finds leftovers of killed "
                           "runs and deletes them",
    ("smoke", "subscriptions"): "smoke creates its Subscription (a Trigger's: reads it), finds "
                                "leftovers and deletes them",
}
Request = tuple[str, str, str, str, str]  # verb, group, resource, namespace, name


def requests_of(doc: dict[str, Any], rule: dict[str, Any]) -> set[Request]:
    namespace = doc["metadata"].get("namespace", "")
    return {(verb, group, resource, namespace, name)
            for group in rule["apiGroups"] for resource in rule["resources"]
            for verb in rule["verbs"] for name in rule.get("resourceNames") or [""]}


def capability(role: str, rule: dict[str, Any]) -> str:
    """The rule named by what it enables."""
    for resource in rule["resources"]:
        if (role, resource.split("/")[0]) in PURPOSE:
            return PURPOSE[(role, resource.split("/")[0])]
    groups = ", ".join(g or "core" for g in rule["apiGroups"])
    what = {"reader": "check/dump read",
            "smoke": "smoke reads by name"}.get(role, "serve's watch caches of")
    return f"{what} {', '.join(rule['resources'])} ({groups})"


# The rules each role has (generated roles: their rule files; the others: their templates),
# read without helm so that the cases are known when the tests are collected;
# test_the_rule_cases_are_every_rule_the_chart_renders checks them against `helm template`.
TEMPLATE_RULES = {"serve-leader-election": 2, "serve-events": 1, "serve-probe-keys": 1,
                  "notify": 1}
RULE_FILES = {"serve": "serve-rules.yaml", "serve-probe": "probe-rules.yaml",
              "reader": "reader-rules.yaml", "smoke": "smoke-rules.yaml"}


def rule_cases() -> dict[str, tuple[str, str, int]]:
    """{test id: (role set, role name without prefix, rule index)}."""
    cases = {}
    for set_name, (_, roles) in ROLE_SETS.items():
        for role in roles:
            if role in RULE_FILES:
                rules = yaml.safe_load((CHART / "files" / "rbac" / RULE_FILES[role]).read_text())
                names = ["+".join(r["resources"]).replace("/", "-") for r in rules]
            else:
                names = [str(i) for i in range(TEMPLATE_RULES[role])]
            for i, name in enumerate(names):
                cases[f"{set_name}/{role}:{i}:{name}"] = (set_name, role, i)
    return cases


def test_the_rule_cases_are_every_rule_the_chart_renders() -> None:
    expected = {(set_name, role, i) for set_name, role, i in rule_cases().values()}
    for set_name, (values, roles) in ROLE_SETS.items():
        rendered = {(set_name, d["metadata"]["name"].removeprefix(f"{RELEASE}-"), i)
                    for d in render(*values) if d["kind"] in ("Role", "ClusterRole")
                    for i in range(len(d["rules"]))}
        assert {c for c in rendered if c[1] in roles} == {c for c in expected
                                                          if c[0] == set_name}
    # every role of the chart is in a set
    every = render("rbac.probe.enabled=true", "rbac.reader.enabled=true", "probe.enabled=true",
                   "notify.secretName=eventmesh-health-notify", "smoke.enabled=true")
    assert {d["metadata"]["name"].removeprefix(f"{RELEASE}-") for d in every
            if d["kind"] in ("Role", "ClusterRole")} == {
        role for _, roles in ROLE_SETS.values() for role in roles}


def may(http: httpx.Client, request: Request) -> bool:
    """The API server's authorizer, asked as this identity (SelfSubjectAccessReview): the
    same decision a real request of that verb gets before it reaches the resource."""
    verb, group, resource, namespace, name = request
    plural, _, sub = resource.partition("/")
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
              "spec": {"resourceAttributes": {"verb": verb, "group": group, "resource": plural,
                                              "subresource": sub, "namespace": namespace,
                                              "name": name}}}
    answer = http.post("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", json=review)
    assert answer.status_code == 201, answer.text
    return bool(answer.json()["status"].get("allowed"))


@pytest.mark.envtest
@pytest.mark.parametrize("case", list(rule_cases()))
def test_without_any_one_rule_a_named_capability_is_refused(
    own_control_plane: ControlPlane, api: ApiServer, tmp_path: Path, case: str
) -> None:
    """The chart's roles of one set with one rule removed, bound to a ServiceAccount of its
    own: what only that rule allowed (its capability, named) is refused; what every other
    rule allows still is. No rule is superfluous: each allows something no other does."""
    set_name, role, index = rule_cases()[case]
    tag = uuid.uuid4().hex[:6]
    release, namespace = f"{RELEASE}-{tag}", f"emh-{tag}"  # names <release>-<role>, SA <release>
    ensure_namespace(api, namespace)
    docs = [d for d in render(*ROLE_SETS[set_name][0], release=release, namespace=namespace)
            if d["apiVersion"].startswith("rbac.") or d["kind"] == "ServiceAccount"]
    target = f"{release}-{role}"
    (doc,) = [d for d in docs if d["kind"] in ("Role", "ClusterRole")
              and d["metadata"]["name"] == target]
    rule = doc["rules"][index]
    named = capability(role, rule)
    others: set[Request] = set()
    for other in docs:
        if other["kind"] in ("Role", "ClusterRole"):
            for i, r in enumerate(other["rules"]):
                if not (other is doc and i == index):
                    others |= requests_of(other, r)
    only_this = requests_of(doc, rule) - others
    assert only_this, f"{case} ({named}) is superfluous: the other rules allow all it does"
    applied = copy.deepcopy(docs)
    for d in applied:
        if d["kind"] == doc["kind"] and d["metadata"]["name"] == target:
            del d["rules"][index]
    apply_all(api, applied)
    # The smoke CronJobs run as an account of their own.
    user, groups = sa_identity(namespace, f"{release}-smoke" if set_name == "smoke" else release)
    with client_for(own_control_plane, user, groups, tmp_path) as http:
        # The authorizer learns of new bindings through its informers: wait for them.
        wait_for(lambda: all(may(http, r) for r in sorted(others)[:1]) and all(
            may(http, r) for r in sorted(others)[-1:]), f"{user}'s roles in effect")
        still = sorted(r for r in only_this if may(http, r))
        assert still == [], f"without {case}, '{named}' still works: {still}"
        broken = sorted(r for r in others if not may(http, r))
        assert broken == [], f"removing {case} broke more than '{named}': {broken}"
