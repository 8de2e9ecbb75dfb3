"""`eventmesh-health smoke APP` on the Kyma 1.x path: the envtest API server with the healthy
example mesh (`examples/healthy-mesh`), the emulated data plane (`tests/emulator`: the
event-service, HTTP adapter and Kafka channel of Kyma 1.x have no runnable upstream here) in a
process of its own, routing by the live Triggers, and the CLI in a subprocess.

No Knative controller runs: `play_knative` sets the smoke Trigger Ready, as the eventing
controller would, once the emulated data plane routes to it (Ready after the data plane has
it, as on the real mesh). The event enters where an application's events do: the legacy
event-service `POST /<app>/v1/events`. Every test asserts that nothing labelled is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from lightkube import AsyncClient, KubeConfig
from lightkube.generic_resource import create_namespaced_resource
from lightkube.types import PatchType

from eventmesh_health.smoke.objects import SMOKE_LABEL
from tests.emulator.process import EmulatorProcess
from tests.envtest.controlplane import ControlPlane
from tests.live_objects import ApiServer, clear_cluster
from tests.test_probe_e2e import apply_probe_mesh

pytestmark = pytest.mark.envtest

APP, NS = "commerce-mock", "stage"
Trigger = create_namespaced_resource("eventing.knative.dev", "v1alpha1", "Trigger", "triggers")
RUN_TIMEOUT = 90.0


@pytest.fixture(scope="module")
def mesh(control_plane: ControlPlane) -> Iterator[ControlPlane]:
    if not control_plane.apiserver_running:
        control_plane.start_apiserver()
    api = ApiServer(control_plane)
    try:
        apply_probe_mesh(api, os.urandom(32))
        yield control_plane
    finally:
        clear_cluster(api)
        api.close()


async def play_knative(client: AsyncClient, control: str) -> None:
    """Set smoke Triggers Ready once the emulator routes to them."""
    async with httpx.AsyncClient(base_url=control, trust_env=False, timeout=5) as http:
        while True:
            try:
                routes = (await http.get("/_routes")).json()["brokers"]
                routed = {(key.split("/")[0], t["trigger"]) for key, ts in routes.items()
                          for t in ts}
                async for trigger in client.list(Trigger, namespace="*",
                                                 labels={SMOKE_LABEL: None}):
                    raw = trigger.to_dict()
                    meta = raw["metadata"]
                    if ((meta["namespace"], meta["name"]) not in routed
                            or (raw.get("status") or {}).get("conditions")):
                        continue
                    await client.patch(Trigger.Status, meta["name"], {"status": {
                        "observedGeneration": meta.get("generation", 1),
                        "subscriberURI": raw["spec"]["subscriber"]["uri"],
                        "conditions": [{"type": t, "status": "True",
                                        "lastTransitionTime": "2020-06-03T14:22:52Z"}
                                       for t in ("BrokerReady", "DependencyReady", "Ready",
                                                 "Subscribed", "SubscriberResolved")]}},
                        namespace=meta["namespace"], patch_type=PatchType.MERGE)
            except Exception as exc:  # the next pass tries again
                print("knative stand-in:", repr(exc))
            await asyncio.sleep(0.1)


class Kyma:
    def __init__(self, plane: ControlPlane, emu: EmulatorProcess, client: AsyncClient) -> None:
        self.plane, self.emu, self.client = plane, emu, client

    async def smoke(self, *extra: str, timeout: str = "15s") -> tuple[int, dict[str, Any], str]:
        t = self.emu.url_templates()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "eventmesh_health", "smoke", APP, "-n", NS,
            "--kubeconfig", str(self.plane.kubeconfig_path), "--profile", "kyma-1",
            "--timeout", timeout, "-o", "json",
            "--hop-url", f"ingress={t['event_service']}", "--hop-url", f"channel={t['channel']}",
            "--hop-url", f"broker={t['broker_ingress']}", *extra,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={k: v for k, v in os.environ.items() if "proxy" not in k.lower()})
        out, err = await asyncio.wait_for(proc.communicate(), RUN_TIMEOUT)
        assert out, f"no report (exit {proc.returncode}): {err.decode()}"
        assert proc.returncode is not None
        return proc.returncode, json.loads(out), err.decode()

    async def labelled(self) -> list[str]:
        return [f"{t.metadata.namespace}/{t.metadata.name}"
                async for t in self.client.list(Trigger, namespace="*",
                                                 labels={SMOKE_LABEL: None})]


@pytest.fixture
async def kyma(mesh: ControlPlane) -> AsyncIterator[Kyma]:
    client = AsyncClient(KubeConfig.from_file(mesh.kubeconfig_path), trust_env=False)
    emu = EmulatorProcess(mesh.kubeconfig_path, retries=0, retry_backoff=0.02)
    await emu.start()
    stand_in = asyncio.create_task(play_knative(client, emu.urls["hops"]["control"]))
    try:
        yield Kyma(mesh, emu, client)
        assert await Kyma(mesh, emu, client).labelled() == []
    finally:
        stand_in.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stand_in
        await emu.stop()
        await client.close()


def steps(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["step"]: s for s in report["steps"]}


async def test_application_smoke_passes_through_the_event_service(kyma: Kyma) -> None:
    code, report, err = await kyma.smoke()
    assert code == 0, (report, err)
    assert report["target"] == f"Application {APP} (namespace {NS})"
    by = steps(report)
    assert by["created"]["detail"].startswith(f"Trigger {NS}/eventmesh-health-smoke-")
    assert "event-service" in by["entry"]["detail"] and "HTTP 200" in by["entry"]["detail"]
    assert by["received"]["ok"] and by["cleanup"]["ok"]
    assert await kyma.labelled() == []


async def test_channel_to_broker_broken_is_localised(kyma: Kyma) -> None:
    """The brokersub- Subscription (application Channel → the namespace's Broker) drops
    the event: the event-service and the Channel accept it, nothing arrives; injected into
    the broker ingress it does, so the break is between Channel and Broker."""
    fault = await kyma.emu.inject("channel", "drop", app=APP, namespace=NS)
    try:
        code, report, err = await kyma.smoke(timeout="4s")
    finally:
        await kyma.emu.remove_fault(fault)
    assert code == 1, (report, err)
    by = steps(report)
    assert by["entry"]["ok"] and by["received"]["ok"] is False
    assert by["localise channel received"]["ok"] is False
    assert by["localise broker received"]["ok"] is True
    assert report["failedAt"] == ("the path application Channel → Broker (the brokersub- "
                                  "Subscription)")
    assert by["cleanup"]["ok"]
    assert await kyma.labelled() == []


async def test_event_service_down_is_named(kyma: Kyma) -> None:
    fault = await kyma.emu.inject("event-service", "stop")
    try:
        code, report, err = await kyma.smoke()
    finally:
        await kyma.emu.remove_fault(fault)
    assert code == 1, (report, err)
    assert report["failedAt"] == "the application's event-service: no answer"
    assert await kyma.labelled() == []
