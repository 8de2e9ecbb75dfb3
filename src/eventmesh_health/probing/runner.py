"""Probing as part of `serve`: who is probed, the sending loop, and the merged report.

`ProbeRunner` owns the probing pieces of one replica (tracker, receiver, keys, sender,
Trigger management) and is driven by the orchestrator (`serve.service.Service`):

- `targets(report, index)`: the (application, namespace) pairs to probe: namespace state
  >= 3 (Events enabled) and the namespace's Broker `default` Ready;
- `run(inputs, on_update)`: on the leader, every `interval` (with jitter): reload the
  keys (at most every `key_reload`), make the heartbeat Triggers match the pairs (listing
  them when the pairs changed, after a failure, and every 10th round; writes only on
  change), forget figures of pairs no longer probed, send one round per application.
  Every `evaluate_every` it calls `on_update()` so that verdicts that change with time
  alone (silence) reach the report;
- `merge(report, index)`: the report with the data-plane verdicts merged in: each probed
  pair's findings are added to its namespace's findings, and the namespace's, the
  application's and the mesh's health become the worst of control and data plane. A pair
  whose control-plane chain is not Healthy is not judged: a `DataPlaneNotProbed`
  (Unknown) finding caused by the namespace's control-plane root cause is added, and the
  health stays the control plane's. Only the leader (which sends) judges: the tracker
  must see every delivery of the runs it records.

Limitations: the heartbeat Triggers deliver to the checker's Service, so with several
replicas the Service must select the leader only (or run one replica); Triggers are not
deleted when probing is switched off (delete them by their label).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from eventmesh_health.model import Finding, Health, MeshReport, NamespaceReport, ObjectRef
from eventmesh_health.probing.health import DataPlaneVerdict, HopObjects, ProbeThresholds, evaluate
from eventmesh_health.probing.heartbeat import DEFAULT_TYPE, new_run_id
from eventmesh_health.probing.receiver import Receiver
from eventmesh_health.probing.sender import (
    DEFAULT_BROKER_URL_TEMPLATE,
    DEFAULT_EVENT_SERVICE_URL_TEMPLATE,
    DEFAULT_RECEIVER_URL_TEMPLATE,
    KeySource,
    SendConfig,
    Sender,
    jittered,
)
from eventmesh_health.probing.signing import Keyring, Verifier
from eventmesh_health.probing.tracker import ProbeMetrics, Tracker
from eventmesh_health.probing.triggers import TriggerConfig, TriggerManager
from eventmesh_health.topology.kyma1 import BROKER, CHANNEL, INTEGRATION_NS, SUBSCRIPTION

__all__ = ["ProbeRunner", "ProbeSettings", "Target", "merge_verdicts"]

log = logging.getLogger("eventmesh_health.probing")


class _Index(Protocol):
    """What the runner reads of the analysis index (`analysis.index.Index`)."""

    def get(self, key: str, namespace: str | None, name: str) -> Any: ...

    def of_kind(self, key: str) -> Iterable[Any]: ...


@dataclass(frozen=True)
class ProbeSettings:
    """Probing configuration (the `--probe-*` and `--*-url-template` flags of `serve`)."""

    interval: timedelta = timedelta(seconds=30)
    jitter: float = 0.1
    receiver_url_template: str = DEFAULT_RECEIVER_URL_TEMPLATE
    # None: the receiver template with /heartbeat/ replaced by /deadletter/. Only used
    # where the Trigger API version has spec.delivery (not v1alpha1 of Knative v0.12).
    dead_letter_url_template: str | None = None
    event_service_url_template: str = DEFAULT_EVENT_SERVICE_URL_TEMPLATE
    adapter_url_template: str | None = None
    channel_url_template: str | None = None
    broker_url_template: str = DEFAULT_BROKER_URL_TEMPLATE
    secret_namespace: str = "kyma-system"
    secret_name: str = "eventmesh-health-heartbeat-keys"
    key_reload: timedelta = timedelta(minutes=1)
    heartbeat_type: str = DEFAULT_TYPE
    window: timedelta | None = None  # default: max(5 min, 10 intervals)
    grace: timedelta | None = None  # default: min(30 s, 3/4 interval)
    evaluate_every: timedelta | None = None  # default: interval / 4
    timeout: float = 5.0
    thresholds: ProbeThresholds | None = None  # default: ProbeThresholds(interval=interval)

    def tracker_window(self) -> timedelta:
        return self.window or max(timedelta(minutes=5), self.interval * 10)

    def tracker_grace(self) -> timedelta:
        return self.grace or min(timedelta(seconds=30), self.interval * 0.75)

    def limits(self) -> ProbeThresholds:
        return self.thresholds or ProbeThresholds(interval=self.interval)

    def dead_letter_template(self) -> str | None:
        if self.dead_letter_url_template is not None:
            return self.dead_letter_url_template
        if "/heartbeat/" in self.receiver_url_template:
            return self.receiver_url_template.replace("/heartbeat/", "/deadletter/", 1)
        return None


@dataclass(frozen=True, slots=True)
class Target:
    """One application to probe: its namespaces and its Channel's address if known."""

    application: str
    namespaces: tuple[str, ...]
    channel_url: str | None = None


def _ready(obj: Mapping[str, Any] | None) -> bool:
    if obj is None:
        return False
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return bool(condition.get("status") == "True")
    return False


def targets(report: MeshReport, index: _Index) -> dict[str, Target]:
    """The applications to probe and their qualifying namespaces (state >= 3, Broker
    `default` Ready)."""
    out: dict[str, Target] = {}
    for app in report.applications:
        namespaces = tuple(sorted(
            ns.name for ns in app.namespaces
            if ns.state >= 3 and _ready(index.get(BROKER.key, ns.name, "default"))))
        if not namespaces:
            continue
        channel = index.get(CHANNEL.key, INTEGRATION_NS, app.name)
        address = ((channel or {}).get("status") or {}).get("address") or {}
        url = address.get("url") or (f"http://{address['hostname']}"
                                     if address.get("hostname") else None)
        out[app.name] = Target(app.name, namespaces, url)
    return out


def _brokersubs(index: _Index) -> dict[tuple[str, str], str]:
    out: dict[tuple[str, str], str] = {}
    for sub in index.of_kind(SUBSCRIPTION.key):
        meta = sub.get("metadata") or {}
        labels = meta.get("labels") or {}
        if meta.get("namespace") != INTEGRATION_NS:
            continue
        app, ns = labels.get("application-name"), labels.get("broker-namespace")
        if app and ns and str(meta.get("name", "")).startswith("brokersub-"):
            out[(str(app), str(ns))] = str(meta["name"])
    return out


def merge_verdicts(
    report: MeshReport, verdicts: Mapping[tuple[str, str], DataPlaneVerdict],
) -> MeshReport:
    """`report` with each verdict's findings in its namespace and healths made the worst
    of control and data plane (Unknown verdicts add their finding, not their health)."""
    if not verdicts:
        return report
    applications = []
    for app in report.applications:
        namespaces: list[NamespaceReport] = []
        changed = False
        for ns in app.namespaces:
            verdict = verdicts.get((app.name, ns.name))
            if verdict is None or (not verdict.findings and verdict.health is Health.HEALTHY):
                namespaces.append(ns)
                continue
            health = ns.health if verdict.health is Health.UNKNOWN else Health.worst(
                (ns.health, verdict.health))
            namespaces.append(ns.model_copy(update={
                "health": health, "findings": [*ns.findings, *verdict.findings]}))
            changed = True
        if changed:
            health = Health.worst((ns.health for ns in namespaces), default=app.health)
            applications.append(app.model_copy(update={"health": health,
                                                       "namespaces": namespaces}))
        else:
            applications.append(app)
    health = Health.worst((a.health for a in applications), default=report.health)
    return report.model_copy(update={"applications": applications, "health": health,
                                     "healthy": health is Health.HEALTHY})


def _root_cause(ns: NamespaceReport) -> ObjectRef | None:
    for finding in ns.findings:
        if finding.root_cause and finding.health is not Health.HEALTHY:
            return finding.object
    return None


@dataclass
class ProbeRunner:
    """The probing of one replica; see the module docstring."""

    client: Any  # lightkube.AsyncClient
    settings: ProbeSettings
    identity: str
    is_leader: Callable[[], bool]
    clock: Callable[[], datetime] | None = None
    tracker: Tracker = field(init=False)
    keys: KeySource = field(init=False)
    receiver: Receiver = field(init=False)
    metrics: ProbeMetrics = field(init=False)
    sender: Sender = field(init=False)
    triggers: TriggerManager = field(init=False)
    since: dict[tuple[str, str], datetime] = field(init=False, default_factory=dict)
    rounds: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        s = self.settings
        kwargs: dict[str, Any] = {} if self.clock is None else {"clock": self.clock}
        self.tracker = Tracker(window=s.tracker_window(), grace=s.tracker_grace(), **kwargs)
        self.keys = KeySource(self._read_secret, reload=s.key_reload)
        self.receiver = Receiver(self.tracker, Verifier(self._keyring))
        self.metrics = ProbeMetrics(self.tracker, self.receiver.rejected_counts)
        self.sender = Sender(
            self.tracker, lambda: self.keys.keyring, new_run_id(self.identity),
            config=SendConfig(
                event_service_url_template=s.event_service_url_template,
                adapter_url_template=s.adapter_url_template,
                channel_url_template=s.channel_url_template,
                broker_url_template=s.broker_url_template,
                heartbeat_type=s.heartbeat_type, timeout=s.timeout,
            ))
        self.triggers = TriggerManager(self.client, TriggerConfig(
            receiver_url_template=s.receiver_url_template,
            dead_letter_url_template=s.dead_letter_template(),
            heartbeat_type=s.heartbeat_type,
        ))
        self._targets: dict[str, Target] = {}
        self._reconciled: frozenset[tuple[str, str]] | None = None

    def _keyring(self) -> Keyring:
        return self.keys.get()  # LookupError before the first load: the receiver says 400

    async def _read_secret(self) -> Mapping[str, str]:
        from lightkube.resources.core_v1 import Secret

        secret = await self.client.get(Secret, self.settings.secret_name,
                                       namespace=self.settings.secret_namespace)
        return dict(secret.data or {})

    async def close(self) -> None:
        await self.sender.close()

    # --- inputs ---------------------------------------------------------------------------

    def update(self, report: MeshReport | None, index: _Index | None) -> None:
        """The current control-plane view (called by the orchestrator after each analysis)."""
        if report is not None and index is not None:
            self._targets = targets(report, index)

    def pairs(self) -> frozenset[tuple[str, str]]:
        return frozenset((t.application, ns) for t in self._targets.values()
                         for ns in t.namespaces)

    # --- the loop -------------------------------------------------------------------------

    async def run(self, on_update: Callable[[], None]) -> None:
        """Until cancelled: the sending rounds (leader only) and the evaluation ticks."""
        ticker = asyncio.create_task(self._tick(on_update), name="probe-evaluation")
        try:
            while True:
                try:
                    await self.round()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("probing round failed")
                await asyncio.sleep(jittered(self.settings.interval.total_seconds(),
                                             self.settings.jitter))
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker

    async def _tick(self, on_update: Callable[[], None]) -> None:
        every = (self.settings.evaluate_every or self.settings.interval / 4).total_seconds()
        while True:
            await asyncio.sleep(every)
            try:
                on_update()
            except Exception:
                log.exception("probing evaluation failed")

    async def round(self) -> None:
        """One round: keys, Triggers, sends (leader only)."""
        if not self.is_leader():
            self.since.clear()
            self._reconciled = None
            return
        self.rounds += 1
        await self.keys.refresh()
        pairs = self.pairs()
        if pairs != self._reconciled or self.rounds % 10 == 0:
            ok = await self.triggers.reconcile(sorted(pairs))
            self._reconciled = pairs if ok else None
        now = self.tracker.clock()
        for pair in pairs:
            self.since.setdefault(pair, now)
        for pair in set(self.since) - pairs:
            del self.since[pair]
        self.tracker.retain(pairs)
        if self.keys.keyring is None:
            return
        sends: list[Awaitable[None]] = [
            self.sender.send_application(t.application, list(t.namespaces), t.channel_url)
            for t in self._targets.values()]
        await asyncio.gather(*sends)

    # --- verdicts -------------------------------------------------------------------------

    def verdicts(self, report: MeshReport, index: _Index) -> dict[tuple[str, str],
                                                                    DataPlaneVerdict]:
        if not self.is_leader() or not self.since:
            return {}
        subs = _brokersubs(index)
        limits = self.settings.limits()
        now = self.tracker.clock()
        out: dict[tuple[str, str], DataPlaneVerdict] = {}
        for app in report.applications:
            for ns in app.namespaces:
                since = self.since.get((app.name, ns.name))
                if since is None:
                    continue
                objects = HopObjects.kyma1(app.name, ns.name, subs.get((app.name, ns.name)))
                letter = self.receiver.latest_dead_letter(app.name, ns.name)
                not_meaningful = None
                if ns.health is not Health.HEALTHY:
                    not_meaningful = (f"the control-plane chain of namespace {ns.name} is "
                                      f"{ns.health.value}")
                out[(app.name, ns.name)] = evaluate(
                    self.tracker, app.name, ns.name, since=since, now=now, thresholds=limits,
                    objects=objects, not_meaningful=not_meaningful,
                    caused_by=_root_cause(ns) if not_meaningful else None,
                    dead_letter=letter.describe() if letter else None)
        return out

    def merge(self, report: MeshReport, index: _Index | None) -> MeshReport:
        if index is None:
            return report
        return merge_verdicts(report, self.verdicts(report, index))


def data_plane_findings(report: MeshReport) -> list[tuple[str, str, Finding]]:
    """(application, namespace, finding) for every data-plane finding in `report`."""
    reasons = {"NoHeartbeat", "HeartbeatsLost", "HeartbeatLatencyHigh",
               "HeartbeatDuplicates", "HeartbeatInjectionFailed", "HeartbeatPending",
               "DataPlaneNotProbed"}
    return [(app.name, ns.name, f) for app in report.applications for ns in app.namespaces
            for f in ns.findings if f.reason in reasons]
