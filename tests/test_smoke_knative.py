"""`eventmesh-health smoke` on the REAL Knative Eventing v1.21 of tests/knative: the CLI in a
subprocess (as a user or the CronJob runs it), its receiver on loopback (the Knative processes
reach 127.0.0.1 directly: it is in their NO_PROXY), its events into the loopback ports of the
real broker ingress and IMC dispatcher (`--hop-url`, as a CLI outside the cluster needs).

Faults are process-level (the upstream dispatcher or broker filter stopped) or a subscriber
that is gone (the Trigger's subscriber at a cluster name with no Service, while the dead
letters come straight to the receiver): every condition stays Ready, only the event can tell.
Every test asserts that nothing labelled `eventmesh-health.kyma-project.io/smoke` is left.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from eventmesh_health.smoke.objects import EXPIRES_ANNOTATION, SMOKE_LABEL
from tests.chart import apply_all, ensure_namespace, render, sa_identity
from tests.envtest.controlplane import free_port
from tests.knative.garbage import GarbageCollector
from tests.knative.mesh import DISPATCHER_HTTP_PORT, KnativeMesh, resource
from tests.live_objects import ApiServer

pytestmark = pytest.mark.knative

READY_TIMEOUT = 30.0
RUN_TIMEOUT = 90.0  # the subprocess as a whole, on a busy machine
POLL = 0.1


def hop_urls(mesh: KnativeMesh) -> list[str]:
    return ["--hop-url", f"broker={mesh.ingress_url('{namespace}', '{name}')}",
            "--hop-url", f"trigger-channel=http://127.0.0.1:{DISPATCHER_HTTP_PORT}/"
                         "{namespace}/{name}-kne-trigger",
            "--hop-url", f"channel=http://127.0.0.1:{DISPATCHER_HTTP_PORT}/{{namespace}}/{{name}}"]


def smoke_command(mesh: KnativeMesh, ns: str, target: str, *extra: str,
                  timeout: str = "20s", kubeconfig: Path | None = None) -> list[str]:
    return [sys.executable, "-m", "eventmesh_health", "smoke", target, "-n", ns,
            "--kubeconfig", str(kubeconfig or mesh.kubeconfig_path), "--profile", "knative-v1",
            "--timeout", timeout, "-o", "json", *hop_urls(mesh), *extra]


def run_smoke(mesh: KnativeMesh, ns: str, target: str, *extra: str, timeout: str = "20s",
              kubeconfig: Path | None = None) -> tuple[int, dict[str, Any], str]:
    proc = subprocess.run(smoke_command(mesh, ns, target, *extra, timeout=timeout,
                                        kubeconfig=kubeconfig),
                          capture_output=True, text=True, timeout=RUN_TIMEOUT, env=_env())
    assert proc.stdout, f"no report (exit {proc.returncode}); stderr:\n{proc.stderr}"
    return proc.returncode, json.loads(proc.stdout), proc.stderr


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def labelled(mesh: KnativeMesh) -> list[str]:
    """Every smoke-labelled Trigger and Subscription, in every namespace, not yet gone."""
    out = []
    for kind in ("Trigger", "Subscription"):
        for obj in mesh.client.list(resource(kind), namespace="*",
                                    labels={SMOKE_LABEL: None}):
            meta = obj.metadata
            assert meta is not None
            out.append(f"{kind} {meta.namespace}/{meta.name}")
    return out


def assert_nothing_left(mesh: KnativeMesh, timeout: float = READY_TIMEOUT) -> None:
    """Deleted objects may wait for a finalizer (a Subscription reconciler's): wait for it."""
    deadline = time.monotonic() + timeout
    while (left := labelled(mesh)) and time.monotonic() < deadline:
        time.sleep(POLL)
    assert left == [], f"smoke objects left behind: {left}"


def explain(report: dict[str, Any], stderr: str) -> str:
    """The whole report, not pytest's truncated repr of it: which step failed, and why."""
    return f"{json.dumps(report, indent=1)}\nstderr:\n{stderr}"


def steps(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["step"]: s for s in report["steps"]}


def ready_broker(mesh: KnativeMesh, ns: str) -> str:
    mesh.create_broker(ns)
    mesh.wait_ready("Broker", ns, "default", READY_TIMEOUT)
    mesh.wait_settled(ns, READY_TIMEOUT)
    return ns


@pytest.fixture
def broker(knative_mesh: KnativeMesh, knative_namespace: str) -> Iterator[str]:
    """A Ready Broker, with the garbage collector's stand-in: a deleted Trigger's Subscription
    goes, as in a cluster."""
    with GarbageCollector(knative_mesh, knative_namespace):
        yield ready_broker(knative_mesh, knative_namespace)
        assert_nothing_left(knative_mesh)


def test_healthy_broker_flow_passes_and_cleans_up(knative_mesh: KnativeMesh,
                                                   broker: str) -> None:
    code, report, stderr = run_smoke(knative_mesh, broker, "broker/default")
    assert code == 0, explain(report, stderr)
    assert report["passed"] and report["outcome"] == "passed"
    by = steps(report)
    assert by["created"]["ok"] and by["ready"]["ok"] and by["entry"]["ok"]
    assert "HTTP 202" in by["entry"]["detail"]
    assert by["received"]["ok"] and report["latencySeconds"] is not None
    assert by["cleanup"]["ok"], by["cleanup"]
    assert len(report["traceId"]) == 32
    # The real ingress, dispatcher and filter carry the W3C trace context to the subscriber.
    assert report["traceParentReceived"] is True
    assert report["leftBehind"] == []
    assert_nothing_left(knative_mesh)


def test_broker_filter_stopped_fails_at_the_filter(knative_mesh: KnativeMesh,
                                                   broker: str) -> None:
    """The dispatcher cannot reach the filter. Seen both ways on this mesh: it dead-letters
    the event (the Trigger's delivery is its Subscription's) without error extensions, and
    the ingress answers 202; or it answers 500, and so does the trigger channel when the
    second event goes straight into it. Either way the hop named is the filter."""
    knative_mesh.stop_component("filter")
    code, report, stderr = run_smoke(knative_mesh, broker, "broker/default")
    assert code == 1, (report, stderr)
    assert report["outcome"] == "failed"
    by = steps(report)
    assert by["ready"]["ok"], by  # the control plane does not notice
    if by["entry"]["ok"]:
        assert "dead-lettered" in by["received"]["detail"]
    else:
        assert "HTTP 500" in by["entry"]["detail"]
        assert "HTTP 500" in by["localise trigger-channel"]["detail"]
    assert report["failedAt"].startswith(f"the broker filter of Broker {broker}/default")
    assert by["cleanup"]["ok"]
    assert_nothing_left(knative_mesh)


def test_text_report_of_a_broken_mesh(knative_mesh: KnativeMesh, broker: str) -> None:
    """The report as a person reads it (README "Smoke test" shows one of these runs)."""
    knative_mesh.stop_component("filter")
    command = smoke_command(knative_mesh, broker, "broker/default")
    command[command.index("-o") + 1] = "text"
    proc = subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT,
                          env=_env())
    print(proc.stdout)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"Smoke test of Broker {broker}/default (knative-v1), run ")
    assert any(line.startswith("  ✓ ready ") for line in lines)
    assert any(line.startswith("  ✓ cleanup ") for line in lines)
    assert lines[-1].startswith(f"Result: ✗ FAILED: the event did not pass the broker filter "
                                f"of Broker {broker}/default (trigger channel → broker "
                                "filter → Trigger)")
    assert_nothing_left(knative_mesh)


def test_dispatcher_stopped_fails_at_the_trigger_channel(knative_mesh: KnativeMesh,
                                                         broker: str) -> None:
    """A new subscription must be acknowledged by the channel's dispatcher before Knative
    calls the Trigger Ready: with none running, the run stops there, naming the channel."""
    knative_mesh.stop_dispatcher()
    code, report, stderr = run_smoke(knative_mesh, broker, "broker/default", timeout="6s")
    assert code == 1, (report, stderr)
    assert report["outcome"] == "timeout"
    by = steps(report)
    assert by["ready"]["ok"] is False
    assert "never became Ready" in report["failedAt"]
    assert '"default-kne-trigger"' in report["failedAt"], report["failedAt"]
    assert "entry" not in by  # nothing sent into a mesh that cannot route it
    assert by["cleanup"]["ok"]
    assert_nothing_left(knative_mesh)


def test_subscriber_gone_is_dead_lettered_and_named(knative_mesh: KnativeMesh,
                                                    broker: str) -> None:
    """The Trigger's subscriber is a cluster name without a Service (as after the receiver's
    Service was deleted); the dead letters come to the receiver directly."""
    port = free_port()
    gone = f"http://smoke-receiver.{broker}.svc.cluster.local"
    code, report, stderr = run_smoke(
        knative_mesh, broker, "broker/default", "--listen", f"127.0.0.1:{port}",
        "--receiver-url", gone, "--dead-letter-url", f"http://127.0.0.1:{port}")
    assert code == 1, (report, stderr)
    by = steps(report)
    assert by["entry"]["ok"], by  # the filter dead-lettered it: the ingress answers 202
    assert "dead-lettered" in by["received"]["detail"]
    assert report["failedAt"].startswith(f"the subscriber: delivery to {gone}")
    assert "HTTP 502" in report["failedAt"]  # the mesh's proxy: no such Service
    assert "/smoke/" not in json.dumps(report), "the receiver's token path was printed"
    assert_nothing_left(knative_mesh)


def test_channel_flow_passes(knative_mesh: KnativeMesh, knative_namespace: str) -> None:
    mesh, ns = knative_mesh, knative_namespace
    mesh.create_channel(ns, "orders")
    mesh.wait_ready("Channel", ns, "orders", READY_TIMEOUT)
    code, report, stderr = run_smoke(mesh, ns, "channel/orders")
    assert code == 0, explain(report, stderr)
    assert report["target"] == f"Channel {ns}/orders"
    assert steps(report)["created"]["detail"].startswith("Subscription ")
    assert_nothing_left(mesh)


def test_timeout_cleans_up(knative_mesh: KnativeMesh, broker: str) -> None:
    """No reconciler: the Trigger never becomes Ready."""
    knative_mesh.stop_component("controllers")
    began = time.monotonic()
    code, report, stderr = run_smoke(knative_mesh, broker, "broker/default", timeout="3s")
    assert code == 1, (report, stderr)
    assert report["outcome"] == "timeout"
    assert "never became Ready" in report["failedAt"]
    assert steps(report)["cleanup"]["ok"]
    assert time.monotonic() - began < 30
    assert_nothing_left(knative_mesh)


def start_smoke(mesh: KnativeMesh, ns: str, timeout: str) -> subprocess.Popen[str]:
    return subprocess.Popen(smoke_command(mesh, ns, "broker/default", timeout=timeout),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env())


def wait_created(mesh: KnativeMesh, proc: subprocess.Popen[str]) -> list[str]:
    deadline = time.monotonic() + READY_TIMEOUT
    while not (found := labelled(mesh)):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run created nothing"
        time.sleep(POLL)
    return found


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_mid_run_cleans_up(knative_mesh: KnativeMesh, broker: str,
                                  sig: signal.Signals, code: int) -> None:
    knative_mesh.stop_component("controllers")  # it waits for Ready: mid-run
    proc = start_smoke(knative_mesh, broker, "60s")
    try:
        wait_created(knative_mesh, proc)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=RUN_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, (out, err)
    report = json.loads(out)
    assert report["outcome"] == "interrupted"
    assert steps(report)["cleanup"]["ok"]
    assert "Traceback" not in err
    assert_nothing_left(knative_mesh)


def test_sigkill_leftovers_removed_by_the_next_run(knative_mesh: KnativeMesh,
                                                   broker: str) -> None:
    mesh = knative_mesh
    mesh.stop_component("controllers")
    proc = start_smoke(mesh, broker, "4s")
    try:
        killed = wait_created(mesh, proc)
        proc.kill()  # SIGKILL: no cleanup
        proc.wait(timeout=RUN_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert labelled(mesh) == killed
    mesh.restore()
    name = killed[0].rsplit("/", 1)[1]
    trigger = mesh.client.get(resource("Trigger"), name, namespace=broker)
    assert trigger.metadata is not None and trigger.metadata.annotations is not None
    expires = datetime.fromisoformat(
        trigger.metadata.annotations[EXPIRES_ANNOTATION].replace("Z", "+00:00"))
    # A younger object may still be in use by its run: the next run removes it once expired.
    while datetime.now(UTC) <= expires:
        time.sleep(POLL)

    code, report, stderr = run_smoke(mesh, broker, "broker/default")
    assert code == 0, explain(report, stderr)
    assert len(report["leftovers"]["removed"]) == 1
    assert report["leftovers"]["removed"][0].startswith(f"Trigger {broker}/{name} (run ")
    # The restored controllers gave the leftover a Subscription; the run waited for it to go.
    assert "still there" not in steps(report)["leftovers"]["detail"]
    assert_nothing_left(mesh)


def test_back_to_back_runs_both_pass(knative_mesh: KnativeMesh, broker: str) -> None:
    """The cleanup waits for the Trigger's Subscription to go (the garbage collector deletes
    it), so a run started at once finds no stale subscriber in the trigger channel's fan-out
    (one there answers the next run's event with HTTP 500 at the broker ingress)."""
    for _ in range(2):
        code, report, stderr = run_smoke(knative_mesh, broker, "broker/default")
        assert code == 0, explain(report, stderr)
        cleanup = steps(report)["cleanup"]
        assert cleanup["ok"] and "still there" not in cleanup["detail"], cleanup


def test_without_a_garbage_collector_the_cleanup_names_what_stays(
        knative_mesh: KnativeMesh, knative_namespace: str) -> None:
    """No collector (as on the test mesh without its stand-in): the Trigger goes, its
    Subscription stays, and the cleanup says so after its wait instead of claiming clean."""
    ns = ready_broker(knative_mesh, knative_namespace)
    code, report, stderr = run_smoke(knative_mesh, ns, "broker/default")
    assert code == 0, explain(report, stderr)
    cleanup = steps(report)["cleanup"]
    assert cleanup["ok"], cleanup
    assert "still there after" in cleanup["detail"], cleanup
    assert f"Subscription {ns}/default-eventmesh-health-smoke-" in cleanup["detail"]
    assert f"(of Trigger eventmesh-health-smoke-{report['run']})" in cleanup["detail"]
    assert cleanup["seconds"] >= 9.5, cleanup


def test_the_charts_smoke_role_is_enough(knative_mesh: KnativeMesh, broker: str) -> None:
    """As the smoke CronJob's ServiceAccount with the chart's smoke ClusterRole alone (helm
    template, applied to the mesh's API server): the run passes, nothing refused."""
    tag = uuid.uuid4().hex[:6]
    # objects named <release>-<role>; a user name (certificate CN) of at most 64 characters
    release, namespace = f"eventmesh-health-{tag}", f"emh-{tag}"
    docs = [d for d in render("smoke.enabled=true", "rbac.serve.enabled=false",
                              release=release, namespace=namespace)
            if d["apiVersion"].startswith("rbac.") or d["kind"] == "ServiceAccount"]
    api = ApiServer(knative_mesh.control_plane)
    try:
        ensure_namespace(api, namespace)
        apply_all(api, docs)
    finally:
        api.close()
    kubeconfig = knative_mesh.control_plane.make_user_kubeconfig(
        *sa_identity(namespace, f"{release}-smoke"))
    # The authorizer learns of the new binding through its informers: wait for it.
    deadline = time.monotonic() + READY_TIMEOUT
    command = smoke_command(knative_mesh, broker, "broker/default", kubeconfig=kubeconfig)
    while True:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=RUN_TIMEOUT,
                              env=_env())
        if proc.returncode != 2 or "403" not in proc.stderr or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert json.loads(proc.stdout)["passed"]
    assert_nothing_left(knative_mesh)
