"""Heartbeat probing beyond one replica, on the envtest API server with the emulated mesh
(`tests/emulator`), as in `tests/test_probe_e2e.py` (its mesh fixture, application and key):

- two replicas with leader election: only the leader sends and judges, the heartbeat
  Triggers deliver to the leader (`{replica}` in the receiver URL template), and after the
  leader stops the other patches them to itself and judges the data plane Healthy;
- probing switched off: a non-probing leader deletes leftover heartbeat Triggers, or, when
  the API server forbids it, logs one warning naming the kubectl command and keeps serving;
- the per-application opt-out annotation removes an application's pairs from probing;
- key rotation while probing: nothing rejected, no finding, new key id on the wire.

Intervals are 1 s and leases 2 s; every wait is on a condition with a timeout.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from lightkube import AsyncClient, KubeConfig
from lightkube.types import PatchType

from eventmesh_health.cli import main
from eventmesh_health.model import MeshReport
from eventmesh_health.probing import Hop, ProbeThresholds, heartbeat_from_event, parse_http
from eventmesh_health.probing.runner import PROBE_ANNOTATION, ProbeSettings, data_plane_findings
from eventmesh_health.probing.triggers import (
    DELETE_COMMAND,
    HEARTBEAT_LABEL,
    TriggerConfig,
    TriggerManager,
    desired_trigger,
    trigger_name,
)
from eventmesh_health.serve.service import (
    Service,
    Settings,
    default_advertise_address,
    host_port,
    unspecified,
)
from eventmesh_health.topology.kyma1 import TRIGGER
from tests import test_probe_e2e as e2e
from tests import test_writer
from tests.emulator import Emulator
from tests.emulator import to_binary as emulator_binary
from tests.envtest.controlplane import ControlPlane, free_port
from tests.live_objects import ApiServer
from tests.test_probe_e2e import APP, KEY, SECRET, Trigger, wait_until
from tests.test_probing_triggers import FakeClient

envtest = pytest.mark.envtest

# The healthy example mesh and the key Secret (`k1`), once for this module.
mesh = e2e.mesh
# The EventMeshHealth CRD (a writing serve needs it).
health_crd = test_writer.health_crd

# Scaled down from the defaults (30 s interval, 5 min window) as in the e2e test.
INTERVAL = 1.0
WINDOW = 10.0
GRACE = 1.0
NAMESPACES = ("stage", "prod")
TEMPLATE = "http://{replica}/heartbeat/{namespace}/{application}"
LEASE = {"lease_duration": 2.0, "renew_deadline": 1.5, "retry_period": 0.25}
APPLICATIONS = "/apis/applicationconnector.kyma-project.io/v1alpha1/applications"
SECRET_URL = f"/api/v1/namespaces/kyma-system/secrets/{SECRET}"
HEALTHS = "/apis/eventmesh-health.kyma-project.io/v1alpha1/eventmeshhealths"
SIGNATURE_REASONS = ("Unsigned", "UnknownKey", "BadSignature")
# The latency objective's field: `latency_p99`, called `latency_slo` in the reworked
# health judgement (whichever this tree has).
LATENCY_OBJECTIVE = next(f.name for f in dataclasses.fields(ProbeThresholds)
                         if f.name in ("latency_slo", "latency_p99"))


# --- without a cluster ----------------------------------------------------------------------


def test_replica_placeholder_in_the_subscriber_uri() -> None:
    config = TriggerConfig(TEMPLATE, TEMPLATE.replace("/heartbeat/", "/deadletter/"),
                           api_version="eventing.knative.dev/v1", replica="10.1.2.3:8080")
    spec = desired_trigger(config, "a", "stage")["spec"]
    assert spec["subscriber"] == {"uri": "http://10.1.2.3:8080/heartbeat/stage/a"}
    assert spec["delivery"] == {"deadLetterSink": {
        "uri": "http://10.1.2.3:8080/deadletter/stage/a"}}
    with pytest.raises(ValueError, match="replica"):
        TriggerConfig(TEMPLATE)  # {replica} without an address
    TriggerConfig("http://svc/heartbeat/{namespace}/{application}")  # no address needed


async def test_a_new_leader_patches_the_same_triggers_to_itself() -> None:
    client = FakeClient([])
    first = TriggerManager(client, TriggerConfig(TEMPLATE, replica="10.0.0.1:8080"))
    assert await first.reconcile([("a", "stage"), ("a", "prod")])
    second = TriggerManager(client, TriggerConfig(TEMPLATE, replica="10.0.0.2:8080"))
    client.calls.clear()
    assert await second.reconcile([("a", "stage"), ("a", "prod")])
    assert sorted(client.calls) == [("patch", "prod", trigger_name("a")),
                                    ("patch", "stage", trigger_name("a"))]
    assert second.tokens == first.tokens  # the same tokens: only the address changes
    assert {t["spec"]["subscriber"]["uri"] for t in client.triggers.values()} == {
        f"http://10.0.0.2:8080/heartbeat/{ns}/a?pair={first.tokens[(ns, 'a')]}"
        for ns in ("stage", "prod")}


def test_advertise_address_defaults() -> None:
    assert default_advertise_address("0.0.0.0", 8080, "10.1.2.3") == "10.1.2.3:8080"
    assert default_advertise_address("0.0.0.0", 8080, "fd00::7") == "[fd00::7]:8080"
    assert default_advertise_address("127.0.0.1", 9000, None) == "127.0.0.1:9000"
    assert default_advertise_address("127.0.0.1", 9000, " ") == "127.0.0.1:9000"
    assert host_port("::1", 80) == "[::1]:80" and host_port("svc.ns", 80) == "svc.ns:80"
    assert unspecified("0.0.0.0:8080") and unspecified("[::]:8080")
    assert not unspecified("10.1.2.3:8080") and not unspecified("pod.ns.svc:8080")


@pytest.mark.parametrize(("args", "env", "message"), [
    (["--receiver-url-template", TEMPLATE], {}, "nobody can reach"),
    (["--receiver-url-template", TEMPLATE, "--host", "::"], {}, "nobody can reach"),
    (["--receiver-url-template", "http://{replica}/heartbeat/{ns}/{application}",
      "--advertise-address", "10.0.0.1:8080"], {}, "KeyError"),
])
def test_serve_refuses_a_replica_template_nobody_can_reach(
    args: list[str], env: dict[str, str], message: str,
) -> None:
    result = CliRunner().invoke(main, ["serve", "--probe", *args],
                                env={"POD_IP": "", **env})
    assert result.exit_code == 2, result.output
    assert message in result.output


# --- on the API server: helpers ---------------------------------------------------------------


async def eventually(what: str, check: Callable[[], Awaitable[Any]], timeout: float) -> Any:
    """`wait_until` for an async check."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def admin(control_plane: ControlPlane) -> AsyncClient:
    return AsyncClient(KubeConfig.from_file(control_plane.kubeconfig_path), trust_env=False)


async def heartbeat_triggers(client: AsyncClient) -> dict[tuple[str, str], dict[str, Any]]:
    """The labelled heartbeat Triggers, by (namespace, name)."""
    return {(t.metadata.namespace, t.metadata.name): t.to_dict()
            async for t in client.list(Trigger, namespace="*",
                                       labels={HEARTBEAT_LABEL: "true"})}


async def delete_heartbeat_triggers(client: AsyncClient) -> None:
    with contextlib.suppress(Exception):
        for namespace, name in await heartbeat_triggers(client):
            await client.delete(Trigger, name, namespace=namespace)


async def play_knative(client: AsyncClient, extra: set[tuple[str, str]]) -> None:
    """The eventing controller's part for the heartbeat Triggers (and `extra` ones): Ready,
    with the observed generation and the subscriber URI of the current spec, so a patched
    Trigger is Ready again once "reconciled" (a Knative controller does the same)."""
    while True:
        try:
            async for trigger in client.list(Trigger, namespace="*"):
                raw = trigger.to_dict()
                meta = raw["metadata"]
                ours = (meta.get("labels") or {}).get(HEARTBEAT_LABEL) == "true"
                if not ours and (meta["namespace"], meta["name"]) not in extra:
                    continue
                status = raw.get("status") or {}
                uri = raw["spec"]["subscriber"]["uri"]
                if (status.get("observedGeneration") == meta.get("generation")
                        and status.get("subscriberURI") == uri
                        and any(c.get("type") == "Ready" and c.get("status") == "True"
                                for c in status.get("conditions") or [])):
                    continue
                await client.patch(Trigger.Status, meta["name"], {"status": {
                    "observedGeneration": meta.get("generation", 1),
                    "subscriberURI": uri,
                    "conditions": [
                        {"type": t, "status": "True",
                         "lastTransitionTime": "2020-06-03T14:22:52Z"}
                        for t in ("BrokerReady", "DependencyReady", "Ready", "Subscribed",
                                  "SubscriberResolved")]}},
                    namespace=meta["namespace"], patch_type=PatchType.MERGE)
        except Exception as exc:  # the next pass tries again
            print("knative stand-in:", repr(exc))
        await asyncio.sleep(0.1)


def probe_settings(emu: Emulator, **overrides: Any) -> ProbeSettings:
    """As the e2e test's (1 s interval, 10 s window), with `{replica}` in the template and
    the address left to serve (its host:port)."""
    templates = emu.url_templates()
    options: dict[str, Any] = {
        "interval": timedelta(seconds=INTERVAL), "jitter": 0.05,
        "receiver_url_template": TEMPLATE,
        "event_service_url_template": templates["event_service"],
        "channel_url_template": templates["channel"],
        "broker_url_template": templates["broker_ingress"],
        "secret_namespace": "kyma-system", "secret_name": SECRET,
        "window": timedelta(seconds=WINDOW), "grace": timedelta(seconds=GRACE),
        "thresholds": ProbeThresholds(interval=timedelta(seconds=INTERVAL),
                                      max_loss_ratio=0.15, min_samples=5),
        "evaluate_every": timedelta(seconds=0.25), "timeout": 3.0,
    }
    options.update(overrides)
    return ProbeSettings(**options)


@dataclass
class Replica:
    """One in-process `serve` on its own port."""

    name: str
    port: int
    service: Service
    task: asyncio.Task[None] = field(init=False)

    def __post_init__(self) -> None:
        self.task = asyncio.create_task(self.service.run(), name=f"serve {self.name}")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def leading(self) -> bool:
        return not self.task.done() and self.service.is_leader()

    @property
    def report(self) -> MeshReport | None:
        return self.service.state.report

    @property
    def prober(self) -> Any:
        assert self.service.prober is not None
        return self.service.prober

    def findings(self, namespace: str, app: str = APP) -> list[tuple[str, str | None]]:
        """(reason, message) of the data-plane findings of (app, namespace) in its report."""
        report = self.report
        if report is None:
            return []
        return [(f.reason, f.message) for a, ns, f in data_plane_findings(report)
                if a == app and ns == namespace]

    def health(self, namespace: str, app: str = APP) -> str | None:
        report = self.report
        found = next((a for a in (report.applications if report else []) if a.name == app),
                     None)
        return next((n.health.value for n in (found.namespaces if found else [])
                     if n.name == namespace), None)

    def verdicts(self) -> dict[tuple[str, str], str]:
        """The data-plane verdicts this replica would merge now: pair -> health."""
        analysis = self.service.analysis
        if analysis is None:
            return {}
        verdicts = self.prober.verdicts(analysis.report(), analysis.builder.index)
        return {pair: v.health.value for pair, v in verdicts.items()}

    def received(self, namespace: str, app: str = APP) -> int:
        """The fewest heartbeats received on any hop of (app, namespace)."""
        return min(self.prober.tracker.stats(app, namespace, hop).received for hop in Hop)

    def judged_healthy(self, namespaces: Iterable[str] = NAMESPACES) -> bool:
        """Healthy through this replica's own data-plane verdicts, on heartbeats it got."""
        verdicts = self.verdicts()
        return all(verdicts.get((APP, ns)) == "Healthy" and self.health(ns) == "Healthy"
                   and not self.findings(ns) and self.received(ns) >= 2
                   for ns in namespaces)

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.service.client.close()


def start_replica(control_plane: ControlPlane, name: str, **settings: Any) -> Replica:
    port = free_port()
    options: dict[str, Any] = {
        "host": "127.0.0.1", "port": port, "identity": name, "write": False,
        "log_level": "warning", "tick": timedelta(seconds=1), "leader_election": False,
    }
    options.update(settings)
    return Replica(name, port, Service(admin(control_plane), Settings(**options)))


@contextlib.asynccontextmanager
async def emulated(control_plane: ControlPlane, extra: set[tuple[str, str]] | None = None,
                   ) -> AsyncIterator[tuple[Emulator, AsyncClient]]:
    """The emulated mesh and the Knative stand-in; heartbeat Triggers deleted after."""
    client = admin(control_plane)
    emu = Emulator(control_plane.kubeconfig_path, retries=0, retry_backoff=0.02)
    await emu.start()
    knative = asyncio.create_task(play_knative(client, extra if extra is not None else set()))
    try:
        yield emu, client
    finally:
        knative.cancel()
        await asyncio.gather(knative, return_exceptions=True)
        await emu.stop()
        await delete_heartbeat_triggers(client)
        await client.close()


def subscriber_uris(triggers: dict[tuple[str, str], dict[str, Any]]) -> dict[tuple[str, str],
                                                                              str]:
    return {key: t["spec"]["subscriber"]["uri"] for key, t in triggers.items()}


# --- several replicas -------------------------------------------------------------------------


@envtest
async def test_only_the_leader_probes_and_a_new_leader_takes_the_triggers_over(
    mesh: ControlPlane,
) -> None:
    lease = f"probe-replicas-{uuid.uuid4().hex[:6]}"
    async with emulated(mesh) as (emu, client):
        replicas = [start_replica(mesh, name, leader_election=True,
                                  lease_namespace="kyma-system", lease_name=lease,
                                  probe=probe_settings(emu), **LEASE)
                    for name in ("replica-a", "replica-b")]
        # Sampled all along: a replica that is not leading reports no data-plane finding
        # and judges nothing.
        violations: list[str] = []

        async def watch_followers() -> None:
            while True:
                for r in replicas:
                    if r.task.done() or r.leading or r.report is None:
                        continue
                    found = [f for ns in NAMESPACES for f in r.findings(ns)]
                    if found or r.verdicts():
                        violations.append(f"{r.name}: {found} {r.verdicts()}")
                await asyncio.sleep(0.05)

        sampler = asyncio.create_task(watch_followers())
        try:
            leader = await wait_until("one leader", lambda: (
                [r for r in replicas if r.leading] or [None])[0], 20)
            follower = next(r for r in replicas if r is not leader)
            try:
                await wait_until("stage and prod Healthy through the leader",
                                 leader.judged_healthy, 60)
            except AssertionError as err:
                raise AssertionError(f"{err}: {[leader.findings(ns) for ns in NAMESPACES]}"
                                     ) from None
            name = trigger_name(APP)
            before = await heartbeat_triggers(client)
            ours = {k: v for k, v in subscriber_uris(before).items() if k[1] == name}
            tokens = leader.prober.triggers.tokens
            assert ours == {(ns, name): f"http://{leader.address}/heartbeat/{ns}/{APP}"
                            f"?pair={tokens[(ns, APP)]}" for ns in NAMESPACES}
            assert all(uri.startswith(f"http://{leader.address}/")
                       for uri in subscriber_uris(before).values())
            # The follower sent nothing, received nothing, judges nothing.
            assert not follower.leading
            assert follower.prober.sender.sent == {}
            assert all(follower.prober.tracker.stats(APP, ns, hop).received == 0
                       for ns in NAMESPACES for hop in Hop)
            assert follower.verdicts() == {} and follower.health("stage") == "Healthy"
            assert follower.report is not None and data_plane_findings(follower.report) == []

            # The leader stops (cancelled: it releases the Lease).
            stopped = time.monotonic()
            await leader.stop()
            await wait_until("the other replica leading", lambda: follower.leading, 10)
            leading_after = time.monotonic() - stopped

            async def pointed_at_follower() -> bool:
                uris = subscriber_uris(await heartbeat_triggers(client))
                return set(uris) == set(before) and all(
                    uri.startswith(f"http://{follower.address}/") for uri in uris.values())

            await eventually("the heartbeat Triggers patched to the new leader",
                             pointed_at_follower, 15)
            patched_after = time.monotonic() - stopped
            seen: list[list[tuple[str, str | None]]] = []
            first_healthy: list[float] = []

            def healthy() -> bool:
                now = [f for ns in NAMESPACES for f in follower.findings(ns)]
                if now and now not in seen:
                    seen.append(now)
                verdicts = follower.verdicts()
                if not first_healthy and all(verdicts.get((APP, ns)) == "Healthy"
                                             for ns in NAMESPACES):
                    first_healthy.append(time.monotonic() - stopped)
                return follower.judged_healthy()

            try:
                await wait_until("stage and prod Healthy through the new leader", healthy, 30)
            except AssertionError as err:
                raise AssertionError(f"{err}: findings on the way: {seen}") from None
            healthy_after = time.monotonic() - stopped
            after = await heartbeat_triggers(client)
            # The same Triggers, patched (same uid), none added.
            assert {k: t["metadata"]["uid"] for k, t in after.items()} == {
                k: t["metadata"]["uid"] for k, t in before.items()}
            assert violations == []
            print(f"takeover: leading after {leading_after:.2f}s, Triggers patched after "
                  f"{patched_after:.2f}s, first Healthy verdicts of the new leader after "
                  f"{first_healthy[0]:.2f}s, Healthy on 2 heartbeats per hop after "
                  f"{healthy_after:.2f}s; findings on the way: {[f[0] for f in seen]}")
        finally:
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)
            for r in replicas:
                await r.stop()


@envtest
async def test_a_leader_probes_at_once_not_an_interval_later(mesh: ControlPlane) -> None:
    """With a 10-minute interval, the first leader sends as soon as its first analysis
    names what to probe (its first round ran before that, with nothing to probe), and the
    replica that takes over sends as soon as it leads: neither waits for the next
    interval."""
    lease = f"probe-wake-{uuid.uuid4().hex[:6]}"
    long = timedelta(minutes=10)
    async with emulated(mesh) as (emu, _):
        settings = probe_settings(emu, interval=long, thresholds=ProbeThresholds(
            interval=long, max_loss_ratio=0.15, min_samples=5))
        started = time.monotonic()
        replicas = [start_replica(mesh, name, leader_election=True,
                                  lease_namespace="kyma-system", lease_name=lease,
                                  probe=settings, **LEASE)
                    for name in ("replica-a", "replica-b")]
        try:
            leader = await wait_until("one leader", lambda: (
                [r for r in replicas if r.leading] or [None])[0], 20)
            follower = next(r for r in replicas if r is not leader)
            await wait_until("the leader's first heartbeats",
                             lambda: leader.prober.sender.sent, 30)
            first_after = time.monotonic() - started
            assert follower.prober.sender.sent == {}
            stopped = time.monotonic()
            await leader.stop()
            await wait_until("the other replica leading", lambda: follower.leading, 10)
            await wait_until("the new leader's first heartbeats",
                             lambda: follower.prober.sender.sent, 10)
            takeover_after = time.monotonic() - stopped
            print(f"10-minute interval: first heartbeats {first_after:.2f}s after the start, "
                  f"the new leader's {takeover_after:.2f}s after the leader stopped")
        finally:
            for r in replicas:
                await r.stop()


# --- key rotation -------------------------------------------------------------------------------


def put_keys(api: ApiServer, data: dict[str, bytes]) -> None:
    body = {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": SECRET, "namespace": "kyma-system"},
            "data": {k: base64.b64encode(v).decode() for k, v in data.items()}}
    answer = api.request("PUT", SECRET_URL, body)
    assert answer.status_code == 200, answer.text


def key_ids(emu: Emulator, host: str, start: int = 0) -> list[tuple[str, str]]:
    """(hop, key id) of each heartbeat the tap Trigger delivered, from delivery `start`."""
    return [(hop, key) for hop, key, _ in signed(emu, host, start)]


def signed(emu: Emulator, host: str, start: int = 0) -> list[tuple[str, str, float]]:
    """(hop, key id, monotonic arrival) of the tap's heartbeats from delivery `start`."""
    out = []
    for delivery in emu.delivered[start:]:
        if delivery.host != host:
            continue
        headers, body = emulator_binary(delivery.event)
        hb = heartbeat_from_event(parse_http(list(headers.items()), body))
        assert hb.signature is not None
        out.append((hb.hop.value, hb.signature.rpartition(":")[0], delivery.at))
    return out


@envtest
async def test_key_rotation_while_probing(mesh: ControlPlane) -> None:
    api = ApiServer(mesh)
    new_key = os.urandom(32)
    tap, host = "heartbeat-tap", "tap.stage.svc.cluster.local"
    await asyncio.to_thread(put_keys, api, {"k1": KEY})
    try:
        async with emulated(mesh, extra={("stage", tap)}) as (emu, client):
            # A Trigger of our own with the heartbeat filter: the subscriber stand-in
            # records what the mesh delivers, signatures included.
            await client.create(Trigger.from_dict({
                "apiVersion": "eventing.knative.dev/v1alpha1", "kind": "Trigger",
                "metadata": {"name": tap, "namespace": "stage"},
                "spec": {"broker": "default",
                         "filter": {"attributes": {"source": APP,
                                                   "type": "eventmesh-health.heartbeat"}},
                         "subscriber": {"uri": f"http://{host}/"}}}))
            # A rotation can lose a heartbeat only by the receiver rejecting it, which is
            # counted exactly (asserted below); a lost round also shows as NoHeartbeat.
            # Latency and stray loss are not the point, so the thresholds tolerate a test
            # machine busy with other work (a slow delivery, one timed-out send in ten).
            r = start_replica(mesh, "rotation", probe=probe_settings(
                emu, key_reload=timedelta(seconds=0.2), grace=timedelta(seconds=2),
                window=timedelta(seconds=30),
                thresholds=ProbeThresholds(interval=timedelta(seconds=INTERVAL),
                                           max_loss_ratio=0.25, min_samples=8,
                                           **{LATENCY_OBJECTIVE: timedelta(seconds=5)})))
            try:
                await wait_until("Healthy on 10 heartbeats per hop", lambda: r.judged_healthy()
                                 and all(r.received(ns) >= 10 for ns in NAMESPACES), 60)
                await emu.wait_until("heartbeats of every hop at the tap", lambda: {
                    hop for hop, _ in key_ids(emu, host)} == {h.value for h in Hop}, 10)
                assert {k for _, k in key_ids(emu, host)} == {"k1"}
                problems: list[str] = []

                async def watch() -> None:
                    while True:
                        for ns in NAMESPACES:
                            if r.findings(ns) or r.health(ns) != "Healthy":
                                problems.append(f"{ns}: {r.health(ns)} {r.findings(ns)}")
                        await asyncio.sleep(0.05)

                sampler = asyncio.create_task(watch())
                keys = r.prober.keys
                try:
                    # 1. The new key, accepted; k1 still signs.
                    await asyncio.to_thread(put_keys, api, {
                        "k1": KEY, "k2": new_key, "current": b"k1"})
                    await wait_until("k2 accepted", lambda: keys.keyring.key("k2"), 10)
                    assert keys.keyring.current.id == "k1"
                    # 2. k2 signs.
                    switched = time.monotonic()
                    mark = len(emu.delivered)
                    await asyncio.to_thread(put_keys, api, {
                        "k1": KEY, "k2": new_key, "current": b"k2"})
                    await wait_until("k2 current", lambda: keys.keyring.current.id == "k2", 10)
                    current_after = time.monotonic() - switched
                    await emu.wait_until("k2 heartbeats of every hop at the tap", lambda: {
                        hop for hop, k in key_ids(emu, host, mark) if k == "k2"} == {
                        h.value for h in Hop}, 10)
                    signing_after = min(at for _, k, at in signed(emu, host, mark)
                                        if k == "k2") - switched
                    assert keys.keyring.current.id == "k2"
                    await emu.idle()  # every heartbeat signed with k1 has arrived by now
                    # 3. k1 removed.
                    mark = len(emu.delivered)
                    counts = {ns: r.received(ns) for ns in NAMESPACES}
                    removed = time.monotonic()
                    await asyncio.to_thread(put_keys, api, {"k2": new_key})
                    await wait_until("k1 gone", lambda: keys.keyring.key("k1") is None, 10)
                    k1_gone = time.monotonic() - removed
                    await wait_until("3 more heartbeats on every hop", lambda: all(
                        r.received(ns) >= counts[ns] + 3 for ns in NAMESPACES), 10)
                    await emu.idle()
                    after = key_ids(emu, host, mark)
                    assert after and {k for _, k in after} == {"k2"}, after
                    assert {hop for hop, _ in after} == {h.value for h in Hop}
                    rejected = r.prober.receiver.rejected_counts()
                    assert sum(rejected.values()) == 0, rejected
                    assert all(rejected[reason] == 0 for reason in SIGNATURE_REASONS)
                    assert problems == [], (problems, r.prober.sender.failures)
                    assert r.judged_healthy()
                    print(f"rotation: k2 signing {current_after:.2f}s and the first k2 "
                          f"heartbeat at the tap {signing_after:.2f}s after the Secret named "
                          f"k2 current; k1 out of the keyring {k1_gone:.2f}s after its "
                          f"removal; {len(after)} heartbeats at the tap after that, all k2; "
                          "nothing rejected")
                finally:
                    sampler.cancel()
                    await asyncio.gather(sampler, return_exceptions=True)
            finally:
                await r.stop()
                with contextlib.suppress(Exception):
                    await client.delete(Trigger, tap, namespace="stage")
    finally:
        put_keys(api, {"k1": KEY})
        api.close()


# --- the per-application opt-out ------------------------------------------------------------


@envtest
async def test_an_application_opts_out_of_probing(mesh: ControlPlane) -> None:
    api = ApiServer(mesh)
    name = trigger_name(APP)
    url = f"{APPLICATIONS}/{APP}"
    try:
        async with emulated(mesh) as (emu, client):
            r = start_replica(mesh, "opt-out", probe=probe_settings(emu))
            try:
                await wait_until("Healthy", r.judged_healthy, 60)
                before = await heartbeat_triggers(client)
                assert {(ns, name) for ns in NAMESPACES} <= set(before)
                others = {k: t["metadata"]["resourceVersion"] for k, t in before.items()
                          if k[1] != name}
                answer = await asyncio.to_thread(api.request, "PATCH", url, {"metadata": {
                    "annotations": {PROBE_ANNOTATION: "false"}}}, patch=True)
                assert answer.status_code == 200, answer.text
                await wait_until("the pairs out of probing", lambda: not any(
                    app == APP for app, _ in r.prober.pairs()), 10)

                async def gone() -> bool:
                    return not any(k[1] == name for k in await heartbeat_triggers(client))

                await eventually("its heartbeat Triggers deleted", gone, 15)
                await wait_until("its data-plane verdicts gone", lambda: not any(
                    app == APP for app, _ in r.verdicts()) and not any(
                    r.findings(ns) for ns in NAMESPACES), 5)
                assert not any(app == APP for app, _ in r.prober.tracker.pairs())
                # Other applications' Triggers untouched.
                after = await heartbeat_triggers(client)
                assert {k: t["metadata"]["resourceVersion"] for k, t in after.items()} == others
                assert all(r.health(ns) == "Healthy" for ns in NAMESPACES)

                # Opted in again: probed again.
                answer = await asyncio.to_thread(api.request, "PATCH", url, {"metadata": {
                    "annotations": {PROBE_ANNOTATION: None}}}, patch=True)
                assert answer.status_code == 200, answer.text
                await wait_until("Healthy again, probed", r.judged_healthy, 30)
            finally:
                await r.stop()
    finally:
        api.request("PATCH", url, {"metadata": {"annotations": {PROBE_ANNOTATION: None}}},
                    patch=True)
        api.close()


# --- probing switched off -------------------------------------------------------------------


async def create_leftover(client: AsyncClient, application: str, namespace: str) -> str:
    """A heartbeat Trigger as an earlier probing run left it; returns its uid."""
    body = desired_trigger(TriggerConfig(TEMPLATE, replica="10.9.9.9:8080"), application,
                           namespace)
    created = await client.create(Trigger.from_dict(body))
    return str(created.metadata.uid)


def delete_healths(api: ApiServer) -> None:
    """The EventMeshHealth objects a writing serve made for the example's Applications."""
    for item in api.request("GET", HEALTHS).json().get("items", []):
        api.request("DELETE", f"{HEALTHS}/{item['metadata']['name']}")


@envtest
async def test_a_leader_without_probing_deletes_leftover_heartbeat_triggers(
    mesh: ControlPlane, health_crd: None,
) -> None:
    client = admin(mesh)
    api = ApiServer(mesh)
    users = {(t.metadata.namespace, t.metadata.name): t.metadata.resourceVersion
             async for t in client.list(Trigger, namespace="*")}
    assert users, "the example has user Triggers"
    await create_leftover(client, APP, "stage")
    await create_leftover(client, "gone-app", "prod")
    r = start_replica(mesh, "no-probe", leader_election=True, lease_namespace="kyma-system",
                      lease_name=f"no-probe-{uuid.uuid4().hex[:6]}", write=True, **LEASE)
    try:
        started = time.monotonic()
        await eventually("the leftovers deleted", lambda: _none_left(client), 30)
        print(f"leftover heartbeat Triggers deleted {time.monotonic() - started:.2f}s after "
              "start")
        leftovers = r.service.leftovers
        assert r.leading and leftovers is not None
        # (the API server may show them gone before serve's delete calls have returned)
        await wait_until("both deletes counted", lambda: leftovers.deleted == 2, 5)
        # User Triggers untouched.
        assert {(t.metadata.namespace, t.metadata.name): t.metadata.resourceVersion
                async for t in client.list(Trigger, namespace="*")} == users
        # One left later (another replica's old run ending, say): deleted too.
        await create_leftover(client, APP, "prod")
        await eventually("the later leftover deleted", lambda: _none_left(client), 15)
        await wait_until("the third delete counted", lambda: leftovers.deleted == 3, 5)
        assert leftovers.errors == 0 and not leftovers.warned and not r.task.done()
    finally:
        await r.stop()
        await delete_heartbeat_triggers(client)
        await client.close()
        delete_healths(api)
        api.close()


async def _none_left(client: AsyncClient) -> bool:
    return not await heartbeat_triggers(client)


@envtest
async def test_without_probe_rbac_one_warning_names_the_command_and_serving_goes_on(
    mesh: ControlPlane, health_crd: None, caplog: pytest.LogCaptureFixture,
) -> None:
    """serve bound to the shipped serve roles only (no probe role): the delete is
    forbidden; one warning with the kubectl command; not retried; still serving."""
    user = f"eventmesh-health-serve-{uuid.uuid4().hex[:8]}"
    documents = test_writer.load_documents(test_writer.SERVE_ROLES)
    created = test_writer._bind(documents, f"-{uuid.uuid4().hex[:6]}", user, "kyma-system")
    client = admin(mesh)
    api = ApiServer(mesh)
    with mesh.http_client() as http:
        for path, body in created:
            http.post(path, json=body).raise_for_status()
    caplog.set_level(logging.WARNING, logger="eventmesh_health")
    first = await create_leftover(client, APP, "stage")
    port = free_port()
    service = Service(test_writer.async_client_for(mesh, user), Settings(
        host="127.0.0.1", port=port, identity="no-probe-rbac", write=True,
        log_level="warning", tick=timedelta(seconds=1), leader_election=True,
        lease_namespace="kyma-system", lease_name="eventmesh-health-serve", **LEASE))
    r = Replica("no-probe-rbac", port, service)
    leftovers = service.leftovers
    assert leftovers is not None

    def warnings() -> list[str]:
        return [rec.getMessage() for rec in caplog.records
                if rec.levelno == logging.WARNING and "heartbeat Trigger" in rec.getMessage()]

    def deletes() -> list[dict[str, Any]]:
        return [e for e in mesh.audit_events()
                if (e.get("user") or {}).get("username") == user and e.get("verb") == "delete"
                and (e.get("objectRef") or {}).get("resource") == "triggers"]

    try:
        await wait_until("the warning", warnings, 30)
        assert r.leading
        (message,) = warnings()
        assert DELETE_COMMAND in message and f"stage/{trigger_name(APP)}" in message
        assert "403" in message
        # Still serving: the API answers and the Trigger is still there.
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", trust_env=False,
                                     timeout=10) as http:
            assert (await http.get("/healthz")).status_code == 200
            assert (await http.get("/api/v1/health")).status_code == 200
        assert ("stage", trigger_name(APP)) in await heartbeat_triggers(client)
        # A second leftover: tried once (refused), no second warning.
        await create_leftover(client, "other-app", "prod")
        await wait_until("the second refusal", lambda: leftovers.errors >= 2, 15)
        # The first one changes: seen again, not tried again.
        await client.patch(Trigger, trigger_name(APP), {"metadata": {"labels": {
            "touched": "yes"}}}, namespace="stage", patch_type=PatchType.MERGE)
        await wait_until("the change seen and looked at", lambda: service.analysis is not None
                         and any((t["metadata"].get("labels") or {}).get("touched") == "yes"
                                 for t in service.analysis.builder.index.of_kind(TRIGGER.key))
                         and not service._look_for_leftovers, 15)
        await wait_until("the audit log has both deletes", lambda: len(deletes()) >= 2, 10)
        assert [(e["objectRef"]["name"], e["responseStatus"]["code"]) for e in deletes()] == [
            (trigger_name(APP), 403), (trigger_name("other-app"), 403)]
        assert len(warnings()) == 1 and leftovers.errors == 2 and leftovers.deleted == 0
        assert not r.task.done()
        assert first == (await heartbeat_triggers(client))[
            ("stage", trigger_name(APP))]["metadata"]["uid"]
    finally:
        await r.stop()
        await delete_heartbeat_triggers(client)
        await client.close()
        with mesh.http_client() as http:
            for path, body in reversed(created):
                http.delete(f"{path}/{body['metadata']['name']}")
        delete_healths(api)
        # the shipped serve role may only use this Lease name, which test_serve's replicas
        # use too: do not leave it held by an identity that is gone
        api.request("DELETE",
                    "/apis/coordination.k8s.io/v1/namespaces/kyma-system/leases/"
                    "eventmesh-health-serve")
        api.close()
