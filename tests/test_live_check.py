"""`check` on a live cluster (a real kube-apiserver + etcd) gives what `check --snapshot` gives
on the same objects; a cluster that cannot be read is an error, never a healthy report.

Every example in `examples/` is recreated in the API server (see `tests/live_objects.py`) and
checked through the real CLI in a subprocess.
"""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from lightkube import Client, KubeConfig

from eventmesh_health import cli
from eventmesh_health.sources import cluster
from eventmesh_health.topology.kyma1 import PROFILE as KYMA_1
from tests.envtest.controlplane import ControlPlane, free_port
from tests.envtest.fixtures import install_crds, load_test_crds
from tests.live_objects import (
    ApiServer,
    Applied,
    apply_example,
    clear_cluster,
    cli_command,
    describe,
    findings,
    report_json,
    root_causes,
    run_cli,
    scenarios,
    write_objects,
)

# What the API server refuses of `malformed-objects` (so these cannot exist in a real cluster,
# and the live test covers only the rest): a Pod without a name (from generateName the server
# would make a differently named object), a Trigger whose spec.filter is a string (the CRD
# schema wants an object), and a Deployment with status.availableReplicas "two" (not an int;
# the object itself is fine, so it is created and deleted again when its status is refused).
# The Channel whose status.conditions is a map is accepted (its CRD keeps unknown status) and
# is checked live like everything else.
REJECTED = {
    "malformed-objects": {
        "Pod stage/<no name>", "Trigger stage/legacy-catch-all",
        "Deployment default/reporting-dashboard",
    },
}


@pytest.fixture(scope="module")
def api(control_plane: ControlPlane) -> Iterator[ApiServer]:
    """Raw admin access to the session's API server; the examples' objects are removed at the
    end (their failurePolicy-Fail webhook configurations would block other tests' writes)."""
    if not control_plane.apiserver_running:
        control_plane.start_apiserver()
    server = ApiServer(control_plane)
    try:
        yield server
    finally:
        if not control_plane.apiserver_running:
            control_plane.start_apiserver()
        clear_cluster(server)
        server.close()


def verdicts(report: dict[str, Any]) -> set[tuple[Any, ...]]:
    """Everything a report decides, without messages (they hold durations) or the source."""
    out: set[tuple[Any, ...]] = {
        ("mesh", report["health"], report["healthy"], report["system"]["health"])
    }
    for app in report["applications"]:
        out.add(("application", app["name"], app["health"], app["state"]))
        for ns in app["namespaces"]:
            out.add(("namespace", app["name"], ns["name"], ns["health"], ns["state"]))
    for f in findings(report):
        obj = f["object"]
        out.add(("finding", obj["kind"], obj["namespace"], obj["name"], f["reason"],
                 f["health"], f["rootCause"], json.dumps(f["causedBy"], sort_keys=True)))
    return out


def check_live(control_plane: ControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("check", "-o", "json", "--kubeconfig", control_plane.kubeconfig_path, *args)


def expected_source(applied: Applied, tmp_path: Path) -> Path:
    """The example itself, or (when the API server refused some of it) a dump of the rest."""
    if not applied.rejected:
        return applied.example.path
    refused = {id(obj) for obj, _ in applied.rejected}
    kept = [o for o in applied.example.objects if id(o) not in refused]
    return write_objects(kept, applied.example.taken_at, tmp_path / "creatable")


@pytest.mark.envtest
@pytest.mark.parametrize("scenario", scenarios())
def test_live_check_matches_the_example(
    scenario: str, api: ApiServer, control_plane: ControlPlane, tmp_path: Path
) -> None:
    applied = apply_example(api, scenario)
    rejected = {describe(obj) for obj, _ in applied.rejected}
    assert rejected == REJECTED.get(scenario, set()), applied.rejected

    # `check_args`: `--stuck-deletion-after 0s` where objects were deleted (the server stamps
    # deletionTimestamp at our DELETE, the example hours ago), on both sides.
    live = check_live(control_plane, *applied.check_args)
    source = expected_source(applied, tmp_path)
    from_dump = run_cli("check", "-o", "json", "--snapshot", source, *applied.check_args)
    live_report, dump_report = report_json(live), report_json(from_dump)

    assert root_causes(live_report) == root_causes(dump_report)
    assert verdicts(live_report) == verdicts(dump_report)
    assert live.returncode == from_dump.returncode
    if scenario == "healthy-mesh":
        assert live.returncode == 0 and live_report["healthy"] is True
    if applied.rejected:
        # What the whole example reports beyond the creatable part is about refused objects.
        full = report_json(run_cli("check", "-o", "json", "--snapshot", applied.example.path))
        extra = root_causes(full) - root_causes(dump_report)
        assert extra, "the refused objects were reported in the example"
        refused = {(k, ns, name) for obj in (o for o, _ in applied.rejected)
                   for k, ns, name in [(obj["kind"], obj["metadata"].get("namespace"),
                                        obj["metadata"].get("name"))]}
        assert {(k, ns, name) for k, ns, name, _ in extra} <= refused


@pytest.mark.envtest
def test_every_kind_is_listed_page_by_page(
    api: ApiServer, control_plane: ControlPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With pages of 7 objects (in-process, the clock stopped) the report is the same as with
    pages of 500, and the audit log shows the `limit`/`continue` requests."""
    apply_example(api, "healthy-mesh")
    now = datetime.now(UTC)
    monkeypatch.setattr(cluster, "_utcnow", lambda: now)
    args = ["check", "-o", "json", "--kubeconfig", str(control_plane.kubeconfig_path)]
    whole = CliRunner().invoke(cli.main, args, env={"KUBECONFIG": None})
    before = len(control_plane.audit_events())
    monkeypatch.setattr(cluster, "CHUNK_SIZE", 7)
    paged = CliRunner().invoke(cli.main, args, env={"KUBECONFIG": None})
    assert whole.exit_code == paged.exit_code == 0, paged.output
    assert json.loads(whole.stdout) == json.loads(paged.stdout)
    assert len(api.list(api.resource("v1", "Pod"))) > 7

    def pod_lists() -> list[str]:
        return [str(e["requestURI"]) for e in control_plane.audit_events()[before:]
                if e.get("verb") == "list"
                and str(e.get("requestURI", "")).startswith("/api/v1/pods?")]

    deadline = time.monotonic() + 10  # audit events are written just after the response
    while not any("continue=" in uri for uri in pod_lists()):
        assert time.monotonic() < deadline, pod_lists()
        time.sleep(0.05)
    assert all("limit=7" in uri for uri in pod_lists())


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.mark.envtest
def test_apiserver_down_is_exit_3_never_a_report(
    control_plane: ControlPlane, api: ApiServer, tmp_path: Path
) -> None:
    apply_example(api, "healthy-mesh")
    assert check_live(control_plane).returncode == 0
    control_plane.stop_apiserver()
    try:
        result = check_live(control_plane)
        dumped = run_cli("dump", "-o", tmp_path / "dump", "--kubeconfig",
                         control_plane.kubeconfig_path)
    finally:
        control_plane.start_apiserver()
    assert result.returncode == 3
    assert result.stdout == ""  # no report at all, let alone a healthy one
    error = _one_line_error(result)
    assert "cannot read the cluster" in error and control_plane.url in error
    assert dumped.returncode == 3 and not (tmp_path / "dump").exists()
    assert check_live(control_plane).returncode == 0  # back, for the tests after this one


def _kubeconfig(path: Path, server: str) -> Path:
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": server,
                                               "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": "not-a-real-token"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
    }
    path.write_text(yaml.safe_dump(config))
    return path


def test_closed_port_is_exit_3_fast(tmp_path: Path) -> None:
    kubeconfig = _kubeconfig(tmp_path / "config", f"https://127.0.0.1:{free_port()}")
    started = time.monotonic()
    result = run_cli("check", "--kubeconfig", kubeconfig)
    elapsed = time.monotonic() - started
    assert result.returncode == 3 and result.stdout == ""
    assert "connection refused" in _one_line_error(result)
    assert elapsed < 8, f"took {elapsed:.1f}s"


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts TCP connections and then never says a word."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(sock.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(sock.getsockname()[1])
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in accepted:
            conn.close()
        sock.close()


def test_server_that_does_not_answer_times_out_with_exit_3(
    tmp_path: Path, silent_server: int
) -> None:
    kubeconfig = _kubeconfig(tmp_path / "config", f"https://127.0.0.1:{silent_server}")
    started = time.monotonic()
    result = run_cli("check", "--kubeconfig", kubeconfig, "--request-timeout", "1s")
    elapsed = time.monotonic() - started
    assert result.returncode == 3 and result.stdout == ""
    assert "did not answer within the request timeout" in _one_line_error(result)
    assert elapsed < 8, f"took {elapsed:.1f}s"


def test_bad_kubeconfig_or_context_is_exit_2(tmp_path: Path) -> None:
    missing = run_cli("check", "--kubeconfig", tmp_path / "nope")
    assert missing.returncode == 2 and "no such file" in _one_line_error(missing)
    kubeconfig = _kubeconfig(tmp_path / "config", "https://127.0.0.1:1")
    context = run_cli("check", "--kubeconfig", kubeconfig, "--context", "other")
    assert context.returncode == 2
    assert "context 'other' not found (contexts: c)" in _one_line_error(context)
    (tmp_path / "garbage").write_text("clusters: [oops\n")
    garbage = run_cli("check", "--kubeconfig", tmp_path / "garbage")
    assert garbage.returncode == 2 and "invalid YAML" in _one_line_error(garbage)
    both = run_cli("check", "--snapshot", tmp_path, "--kubeconfig", kubeconfig)
    assert both.returncode == 2 and "--snapshot reads a dump" in _one_line_error(both)
    timeout = run_cli("check", "--kubeconfig", kubeconfig, "--request-timeout", "soon")
    assert timeout.returncode == 2 and "not a timeout" in timeout.stderr


@pytest.mark.envtest
def test_kubeconfig_list_in_env_is_merged_like_kubectl(
    control_plane: ControlPlane, api: ApiServer, tmp_path: Path
) -> None:
    """KUBECONFIG=a:b: contexts of both files; relative certificate paths are relative to the
    file naming them; current-context comes from the first file that sets one."""
    apply_example(api, "healthy-mesh")
    admin = yaml.safe_load(control_plane.kubeconfig_path.read_text())
    certs = tmp_path / "b"
    certs.mkdir()
    ca_data = admin["clusters"][0]["cluster"]["certificate-authority-data"]
    (certs / "ca.crt").write_bytes(base64.b64decode(ca_data))
    cert, key = control_plane.admin_cert_paths
    (certs / "admin.crt").write_bytes(cert.read_bytes())
    (certs / "admin.key").write_bytes(key.read_bytes())
    second = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "envtest", "cluster": {"server": control_plane.url,
                                                     "certificate-authority": "ca.crt"}}],
        "users": [{"name": "admin", "user": {"client-certificate": "admin.crt",
                                             "client-key": "admin.key"}}],
        "contexts": [{"name": "envtest", "context": {"cluster": "envtest", "user": "admin"}}],
    }
    (certs / "config").write_text(yaml.safe_dump(second))
    first = _kubeconfig(tmp_path / "first", "https://127.0.0.1:1")
    first_doc = yaml.safe_load(first.read_text())
    first_doc["current-context"] = "envtest"  # names a context only the second file has
    first.write_text(yaml.safe_dump(first_doc))
    env_value = f"{first}:{tmp_path / 'missing'}:{certs / 'config'}"
    result = subprocess.run(
        [*cli_command(), "check", "-o", "json"],
        capture_output=True, text=True, timeout=120, check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "KUBECONFIG": env_value},
    )
    assert result.returncode == 0, result.stderr
    assert report_json(result)["healthy"] is True


@pytest.fixture
def bare_control_plane() -> Iterator[ControlPlane]:
    """A control plane of its own, without any CRD: no Knative, no Kyma."""
    cp = ControlPlane()
    try:
        cp.start()
        yield cp
    finally:
        cp.stop()


@pytest.mark.envtest
def test_cluster_without_the_crds_reports_them_and_is_not_healthy(
    bare_control_plane: ControlPlane, tmp_path: Path
) -> None:
    # Nothing tells which mesh this is: `--profile auto` (the default) says so, exit 2.
    auto = check_live(bare_control_plane)
    assert auto.returncode == 2, auto.stderr
    assert "no known profile detected" in auto.stderr
    assert "applications.applicationconnector.kyma-project.io" in auto.stderr
    assert "--profile" in auto.stderr and "Traceback" not in auto.stderr

    result = check_live(bare_control_plane, "--profile", "kyma-1")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    report = report_json(result)
    assert report["healthy"] is False
    builtin = {"", "apps", "discovery.k8s.io", "admissionregistration.k8s.io"}
    optional = {k.key for k in KYMA_1.optional_kinds}
    missing = {k.resource for k in KYMA_1.kinds if k.group not in builtin}
    reported = {f["object"]["name"]: f for f in findings(report)
                if f["reason"] == "KindNotAvailable" and f["rootCause"]}
    assert set(reported) == {k.resource for k in KYMA_1.kinds
                             if k.resource in missing and k.key not in optional}
    trigger = reported["triggers.eventing.knative.dev"]
    assert trigger["object"]["kind"] == "CustomResourceDefinition"
    assert trigger["message"] == ("CustomResourceDefinition triggers.eventing.knative.dev is "
                                  "not installed (Knative Eventing CRDs missing?)")

    # The dump says which kinds could not be read, and why; the check of it is the same.
    dump = tmp_path / "dump"
    assert run_cli("dump", "-o", dump, "--kubeconfig", bare_control_plane.kubeconfig_path,
                   "--profile", "kyma-1").returncode == 0
    info = yaml.safe_load((dump / "snapshot.yaml").read_text())
    assert set(info["unavailable"]) == missing
    assert set(info["collected"]) == {k.resource for k in KYMA_1.kinds} - missing
    assert info["profile"] == "kyma-1"
    again = report_json(run_cli("check", "-o", "json", "--snapshot", dump))  # auto: its info
    live = report_json(check_live(bare_control_plane, "--profile", "kyma-1"))
    for r in (again, live):
        r["source"].pop("takenAt")
    assert again == live

    # A CRD that is installed but serves another version is told apart from a missing one.
    crds = {c["metadata"]["name"]: c for c in load_test_crds()}
    trigger_crd = crds["triggers.eventing.knative.dev"]
    for version in trigger_crd["spec"]["versions"]:
        version["name"] = "v1beta1"
    with Client(KubeConfig.from_file(bare_control_plane.kubeconfig_path),
                trust_env=False) as client:
        install_crds(client, [trigger_crd])
    message = next(f["message"] for f in findings(report_json(
        check_live(bare_control_plane, "--profile", "kyma-1")))
                   if f["object"]["name"] == "triggers.eventing.knative.dev")
    assert message == ("triggers.eventing.knative.dev is installed but does not serve v1alpha1 "
                       "(it serves v1beta1); this profile reads eventing.knative.dev/v1alpha1")

