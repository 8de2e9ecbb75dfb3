"""`dump` writes exactly what `check` reads, in the format `--snapshot` reads, and
`check --snapshot <dump>` gives the report `check` gives on the cluster."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from eventmesh_health import cli
from eventmesh_health.snapshot import Snapshot
from eventmesh_health.sources import cluster
from eventmesh_health.sources.dump import dump_documents, write_dump
from eventmesh_health.sources.files import SnapshotError, load_snapshot
from eventmesh_health.topology.kyma1 import PROFILE as KYMA_1
from tests.envtest.controlplane import ControlPlane
from tests.live_objects import ApiServer, apply_example, clear_cluster, report_json, run_cli

TAKEN_AT = datetime(2020, 6, 15, 10, 0, tzinfo=UTC)
EXPECTED_FILES = {f"{kind.resource}.yaml" for kind in KYMA_1.kinds} | {"snapshot.yaml"}


@pytest.fixture(scope="module")
def api(control_plane: ControlPlane) -> Iterator[ApiServer]:
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


def invoke(*args: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(cli.main, [str(a) for a in args], catch_exceptions=False,
                                env={"KUBECONFIG": None})
    return result.exit_code, result.stdout


@pytest.mark.envtest
def test_dump_then_check_snapshot_is_the_live_report_exactly(
    api: ApiServer, control_plane: ControlPlane, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In one process with the clock stopped, so that even `source.takenAt` and the durations
    in messages are equal: the only difference between the two runs is where objects come
    from. The scenario has deleted objects, lagging generations and webhook configurations."""
    applied = apply_example(api, "subscription-stuck-in-deletion")
    now = datetime.now(UTC)
    monkeypatch.setattr(cluster, "_utcnow", lambda: now)
    kubeconfig = control_plane.kubeconfig_path
    args = ["-o", "json", *applied.check_args]

    live_code, live = invoke("check", "--kubeconfig", kubeconfig, *args)
    dump_code, _ = invoke("dump", "-o", tmp_path / "dump", "--kubeconfig", kubeconfig)
    assert dump_code == 0
    dump_code, from_dump = invoke("check", "--snapshot", tmp_path / "dump", *args)
    assert live_code == dump_code == 1
    assert json.loads(live) == json.loads(from_dump)
    assert json.loads(live)["source"]["takenAt"] == now.isoformat().replace("+00:00", "Z")

    explain_args = ["explain", "commerce-mock", *args]
    live_explain = invoke(*explain_args, "--kubeconfig", kubeconfig)
    dump_explain = invoke(*explain_args, "--snapshot", tmp_path / "dump")
    assert live_explain == dump_explain


@pytest.mark.envtest
def test_dump_then_check_snapshot_through_the_cli(
    api: ApiServer, control_plane: ControlPlane, tmp_path: Path
) -> None:
    """The real CLI, three processes: the same JSON apart from `source.takenAt` (each run
    reads its own clock; no message of this scenario depends on it)."""
    apply_example(api, "kafka-quota-reached")
    kubeconfig = control_plane.kubeconfig_path
    dumped = run_cli("dump", "-o", tmp_path / "dump", "--kubeconfig", kubeconfig)
    assert dumped.returncode == 0, dumped.stderr
    assert dumped.stdout == ""
    assert dumped.stderr.startswith("wrote ")
    live = report_json(run_cli("check", "-o", "json", "--kubeconfig", kubeconfig))
    from_dump = report_json(run_cli("check", "-o", "json", "--snapshot", tmp_path / "dump"))
    assert live["healthy"] is False
    for report in (live, from_dump):
        report["source"].pop("takenAt")
    assert live == from_dump


def _items(path: Path) -> list[dict[str, Any]]:
    document = yaml.safe_load(path.read_text())
    assert document["apiVersion"] == "v1" and document["kind"] == "List"
    assert document["metadata"] == {"resourceVersion": ""}
    items: list[dict[str, Any]] = document["items"]
    return items


@pytest.mark.envtest
def test_dump_holds_exactly_the_profile_kinds_and_no_secret(
    api: ApiServer, control_plane: ControlPlane, tmp_path: Path
) -> None:
    apply_example(api, "healthy-mesh")
    secret = {"apiVersion": "v1", "kind": "Secret",
              "metadata": {"name": "kafka-credentials", "namespace": "knative-eventing"},
              "stringData": {"password": "s3cr3t-do-not-dump"}}
    url = api.resource("v1", "Secret").url("knative-eventing")
    answer = api.request("POST", url, secret)
    assert answer.status_code in (201, 409), answer.text
    try:
        dumped = run_cli("dump", "-o", tmp_path / "dump", "--kubeconfig",
                         control_plane.kubeconfig_path)
    finally:
        api.request("DELETE", f"{url}/kafka-credentials")
    assert dumped.returncode == 0, dumped.stderr
    dump = tmp_path / "dump"
    assert {p.name for p in dump.iterdir()} == EXPECTED_FILES

    for kind in KYMA_1.kinds:
        path = dump / f"{kind.resource}.yaml"
        text = path.read_text()
        assert text.startswith("apiVersion: v1\nitems:")  # kubectl's (sorted) layout
        items = _items(path)
        assert {(o["apiVersion"], o["kind"]) for o in items} <= {(kind.api_version, kind.kind)}
        # Everything the API server has of the kind, no more, no less.
        served = api.list(api.resource(kind.api_version, kind.kind))
        assert sorted((o["metadata"].get("namespace") or "", o["metadata"]["name"])
                      for o in items) == sorted(
            (o["metadata"].get("namespace") or "", o["metadata"]["name"]) for o in served)
        assert all("managedFields" not in o["metadata"] for o in items)
    every = "".join(p.read_text() for p in dump.iterdir())
    assert "kind: Secret" not in every and "s3cr3t" not in every
    assert "managedFields" not in every
    assert "kind: ConfigMap" not in every  # the example's other kinds are in the cluster too

    info = yaml.safe_load((dump / "snapshot.yaml").read_text())
    assert info["apiVersion"] == "eventmesh-health.kyma-project.io/v1alpha1"
    assert info["kind"] == "SnapshotInfo"
    assert info["collected"] == [kind.resource for kind in KYMA_1.kinds]
    assert info["unavailable"] == {}
    assert datetime.fromisoformat(info["takenAt"]).tzinfo is not None
    assert control_plane.url in info["source"]


PLANTED = "planted-credential-"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def _env(tag: str) -> list[dict[str, str]]:
    return [{"name": "PASSWORD", "value": PLANTED + tag}]


def _planted_objects() -> list[dict[str, Any]]:
    """One object per place a credential hides in what the profile reads: container env of
    Pods, Deployments and Knative Services, the last-applied annotation, ServiceInstance
    parameters, a label-free annotation of our own prefix's neighbour."""
    meta = {"namespace": "stage",
            "annotations": {LAST_APPLIED: json.dumps({"password": PLANTED + "last-applied"}),
                            "other.example.com/token": PLANTED + "annotation"}}
    container = {"name": "c", "image": "example.invalid/c:1"}
    return [
        {"apiVersion": "v1", "kind": "Pod",
         "metadata": {**meta, "name": "planted-pod"},
         "spec": {"containers": [{**container, "env": _env("pod"),
                                  "args": [f"--password={PLANTED}args"]}]}},
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {**meta, "name": "planted-deployment"},
         "spec": {"selector": {"matchLabels": {"app": "planted"}},
                  "template": {"metadata": {"labels": {"app": "planted"}},
                               "spec": {"containers": [{**container,
                                                        "env": _env("deployment")}]}}}},
        {"apiVersion": "serving.knative.dev/v1", "kind": "Service",
         "metadata": {**meta, "name": "planted-ksvc"},
         "spec": {"template": {"spec": {"containers": [{**container, "env": _env("ksvc")}]}}}},
        {"apiVersion": "servicecatalog.k8s.io/v1beta1", "kind": "ServiceInstance",
         "metadata": {**meta, "name": "planted-instance"},
         "spec": {"clusterServiceClassExternalName": "x", "clusterServicePlanExternalName": "y",
                  "parameters": {"password": PLANTED + "parameters"},
                  "parametersFrom": [{"secretKeyRef": {"name": PLANTED + "secret-name",
                                                       "key": "k"}}]}},
    ]


@pytest.mark.envtest
def test_dump_leaks_no_credential_planted_anywhere_it_could_hide(
    api: ApiServer, control_plane: ControlPlane, tmp_path: Path
) -> None:
    """Values planted in every such place on the live API server: none is in the dump, while
    the objects themselves are (so the test would see them if their fields were kept)."""
    apply_example(api, "healthy-mesh")
    created = []
    try:
        for obj in _planted_objects():
            url = api.resource(obj["apiVersion"], obj["kind"]).url("stage")
            answer = api.request("POST", url, obj)
            assert answer.status_code == 201, answer.text
            created.append(f"{url}/{obj['metadata']['name']}")
        served = api._get(created[0])
        assert served["spec"]["containers"][0]["env"][0]["value"] == PLANTED + "pod"
        dumped = run_cli("dump", "-o", tmp_path / "dump", "--kubeconfig",
                         control_plane.kubeconfig_path)
    finally:
        for url in created:
            api.request("DELETE", url)
    assert dumped.returncode == 0, dumped.stderr
    every = "".join(p.read_text() for p in (tmp_path / "dump").iterdir())
    for obj in _planted_objects():
        assert obj["metadata"]["name"] in every  # the object is there, its secrets are not
    assert PLANTED not in every, [line for line in every.splitlines() if PLANTED in line]
    assert LAST_APPLIED not in every


def test_dump_refuses_a_folder_that_is_not_empty(tmp_path: Path) -> None:
    (tmp_path / "old.yaml").write_text("{}\n")
    result = run_cli("dump", "-o", tmp_path, "--kubeconfig", tmp_path / "no-such-kubeconfig")
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {tmp_path}: folder is not empty (give a new or " \
        "empty folder)"


def _snapshot(objects: list[dict[str, Any]]) -> Snapshot:
    return Snapshot(
        objects=objects, taken_at=TAKEN_AT,
        collected=frozenset(k.key for k in KYMA_1.kinds if k.kind != "Trigger"),
        unavailable={"Trigger.eventing.knative.dev": "CustomResourceDefinition "
                     "triggers.eventing.knative.dev is not installed (Knative Eventing CRDs "
                     "missing?)"},
    )


def test_dump_round_trips_unavailable_kinds_and_drops_what_is_not_read(tmp_path: Path) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "p", "namespace": "stage",
                        "managedFields": [{"manager": "kubelet"}]},
           "status": {"phase": "Running", "startTime": "2020-06-15T09:00:00Z"}}
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "x"},
              "data": {"k": "czNjcjN0"}}
    snapshot = _snapshot([pod, secret])
    documents = dump_documents(snapshot, KYMA_1, "test")
    assert "triggers.eventing.knative.dev.yaml" not in documents
    assert documents["pods.yaml"]["items"] == [  # startTime is not read: not dumped
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "stage"},
         "status": {"phase": "Running"}}]
    assert "Secret" not in json.dumps(documents)
    assert pod["metadata"]["managedFields"]  # the snapshot itself is left alone

    write_dump(snapshot, KYMA_1, tmp_path / "dump", "test")
    loaded = load_snapshot(tmp_path / "dump", KYMA_1, now=datetime.now(UTC))
    assert loaded.taken_at == TAKEN_AT
    assert loaded.collected == snapshot.collected
    assert loaded.unavailable == snapshot.unavailable
    assert loaded.objects == [documents["pods.yaml"]["items"][0]]
    report = report_json(run_cli("check", "-o", "json", "--snapshot", tmp_path / "dump"))
    assert any(f["reason"] == "KindNotAvailable"
               and f["object"]["name"] == "triggers.eventing.knative.dev"
               and "is not installed" in f["message"] for f in report["system"]["findings"])
    assert report["healthy"] is False


@pytest.mark.parametrize(("unavailable", "error"), [
    (["triggers.eventing.knative.dev"], "must map resource names to messages"),
    ({"triggers.eventing.knative.dev": 3}, "must map resource names to messages"),
    ({"gadgets.example.com": "gone"}, "names unknown resources: gadgets.example.com"),
    ({"pods": "gone"}, "lists pods as both collected and unavailable"),
])
def test_snapshot_info_unavailable_is_validated(
    tmp_path: Path, unavailable: object, error: str
) -> None:
    info = {"apiVersion": "eventmesh-health.kyma-project.io/v1alpha1", "kind": "SnapshotInfo",
            "takenAt": "2020-06-15T10:00:00Z", "collected": ["pods"],
            "unavailable": unavailable}
    (tmp_path / "snapshot.yaml").write_text(yaml.safe_dump(info))
    with pytest.raises(SnapshotError, match=error):
        load_snapshot(tmp_path, KYMA_1, now=datetime.now(UTC))
