"""`smoke` without a cluster: its objects' labels and expiry (pure), where the receiver is
reached, and bad input as one line and exit 2 (the real entry point in a subprocess)."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from eventmesh_health.probing.flows import FlowTarget, desired_subscriber
from eventmesh_health.probing.triggers import HEARTBEAT_LABEL, TriggerConfig
from eventmesh_health.smoke.command import SmokeInputError, SmokeSettings, receiver_base
from eventmesh_health.smoke.objects import (
    EXPIRES_ANNOTATION,
    SMOKE_LABEL,
    expired,
    expires_at,
    leftover,
    new_run_id,
    relabel,
)
from eventmesh_health.topology.knative1 import DATA_PLANE


def heartbeat_trigger() -> dict[str, object]:
    probe = DATA_PLANE.flows[0]
    target = FlowTarget(probe, probe.roots[0], "shop", "default", "broker.shop.default", None)
    return desired_subscriber(TriggerConfig("http://r/x", "http://r/d"), target)


def test_relabelled_object_is_no_heartbeat_object_and_expires() -> None:
    run = new_run_id()
    started = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
    body = relabel(heartbeat_trigger(), run, expires_at(started, timedelta(seconds=30)))
    meta = body["metadata"]
    assert meta["name"] == f"eventmesh-health-smoke-{run}"
    assert meta["labels"][SMOKE_LABEL] == run
    assert HEARTBEAT_LABEL not in meta["labels"]  # serve's probing never touches it
    assert not any(k.startswith("eventmesh-health.kyma-project.io/") and k != SMOKE_LABEL
                   for k in meta["labels"])
    assert meta["annotations"] == {EXPIRES_ANNOTATION: "2026-01-01T10:00:35Z"}
    item = leftover({"apiVersion": "eventing.knative.dev/v1", "kind": "Trigger", **body})
    assert item is not None and item.run == run
    assert not expired(item, started + timedelta(seconds=34))
    assert expired(item, started + timedelta(seconds=35))


def test_an_object_without_a_readable_expiry_is_a_leftover_to_remove() -> None:
    obj = {"kind": "Trigger", "metadata": {"name": "x", "namespace": "n",
                                           "labels": {SMOKE_LABEL: "abc"},
                                           "annotations": {EXPIRES_ANNOTATION: "tomorrow"}}}
    item = leftover(obj)
    assert item is not None and item.expires is None and expired(item, datetime.now(UTC))
    assert leftover({"metadata": {"name": "y", "labels": {}}}) is None
    obj["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"  # type: ignore[index]
    assert leftover(obj) is None


def test_receiver_base(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POD_IP", raising=False)
    settings = SmokeSettings("broker/default", "shop", 30)
    assert receiver_base(settings, 4000) == "http://127.0.0.1:4000"
    assert receiver_base(SmokeSettings("a", "b", 1, receiver_url="http://x:1/"), 4000) == (
        "http://x:1")
    wildcard = SmokeSettings("a", "b", 1, listen_host="0.0.0.0")
    with pytest.raises(SmokeInputError, match="--receiver-url"):
        receiver_base(wildcard, 4000)
    monkeypatch.setenv("POD_IP", "10.1.2.3")  # in a Pod: its own address
    assert receiver_base(wildcard, 8090) == "http://10.1.2.3:8090"


def smoke(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "eventmesh_health", "smoke", *args],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("args", "message"), [
    (("--hop-url", "broker"), "--hop-url must be HOP=URL"),
    (("--hop-url", "broker=ftp://x"), "--hop-url must be HOP=URL"),
    (("--listen", "nowhere"), "--listen must be HOST:PORT"),
    (("--timeout", "soon"), "is not a duration"),
    (("--kubeconfig", "/nonexistent/kubeconfig"), "kubeconfig /nonexistent/kubeconfig"),
])
def test_bad_input_is_one_line_and_exit_2(args: tuple[str, ...], message: str,
                                          tmp_path: Path) -> None:
    ran = smoke("broker/default", "--profile", "knative-v1",
                *(("--kubeconfig", str(tmp_path / "none")) if "--kubeconfig" not in args
                  else ()), *args)
    assert ran.returncode == 2, ran
    assert message in ran.stderr and "Traceback" not in ran.stderr
    assert ran.stdout == ""


def test_unreachable_cluster_is_exit_3(tmp_path: Path) -> None:
    from tests.envtest.controlplane import free_port

    config = tmp_path / "kubeconfig"
    config.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "http://127.0.0.1:{free_port()}"}}}}]
users: [{{name: u, user: {{}}}}]
contexts: [{{name: x, context: {{cluster: c, user: u}}}}]
current-context: x
""")
    ran = smoke("broker/default", "--profile", "knative-v1", "--kubeconfig", str(config),
                "--request-timeout", "2s")
    assert ran.returncode == 3, ran
    assert ran.stderr.startswith("error: cannot read the cluster") and "Traceback" not in ran.stderr
