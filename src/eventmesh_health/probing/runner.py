"""Probing as part of `serve`: who is probed, the sending loop, and the merged report.

`ProbeRunner` owns the probing pieces of one replica (tracker, receiver, keys, sender,
Trigger management) and is driven by the orchestrator (`serve.service.Service`):

- `targets(report, index)`: the (application, namespace) pairs to probe: namespace state
  >= 3 (Events enabled) and the namespace's Broker `default` Ready;
- `run(on_update)`: on the leader, every `interval` (with jitter): reload the
  keys (at most every `key_reload`), make the heartbeat Triggers match the pairs (listing
  them when the pairs changed, after a failure, and every 10th round; writes only on
  change), forget figures of pairs no longer probed, send one round per application.
  Every `evaluate_every` it calls `on_update()` so that verdicts that change with time
  alone (silence) reach the report;
- confirmation rounds: when a regular probe of an application is *suspect* (not arrived
  in some namespace after the grace period, slower than the latency SLO, or duplicated),
  the application gets one more round at once (every hop, every namespace), and
  `on_update()` is called when that round is due. The health needs two bad samples in a
  row (`ProbeThresholds.silent_sends`, `confirm_samples`), so a fault is confirmed within
  about one interval plus twice the grace period instead of two intervals plus the grace
  period, while a single lost or slow heartbeat is not reported; and since every hop is
  probed again at the same moment, the hops that still work vouch with samples as new as
  the failing hop's (see `health`). At most one confirmation round per application and
  regular round. Arrivals of confirmations, and any arrival for a pair that is not
  Healthy, also call `on_update()` (coalesced), so verdicts appear and clear promptly;
- `merge(report, index)`: the report with the data-plane verdicts merged in: each probed
  pair's findings are added to its namespace's findings, and the namespace's, the
  application's and the mesh's health become the worst of control and data plane. A pair
  whose control-plane chain is not Healthy is not judged: a `DataPlaneNotProbed`
  (Unknown) finding caused by the namespace's control-plane root cause is added, and the
  health stays the control plane's. Only the leader (which sends) judges: the tracker
  must see every delivery of the runs it records.

Several replicas: the heartbeat Triggers must deliver to the leader, so the receiver URL
template may name this replica's own address, `{replica}` (`ProbeSettings.advertise_address`,
host:port; serve's `--advertise-address`, by default `$POD_IP:<port>`): the leader's
Trigger reconciliation writes its own address, and after a leader change the new leader
patches every heartbeat Trigger to itself. A replica forgets its heartbeat figures when
its leadership starts or ends (`leadership_changed`): figures of an earlier term would
read as silence. With probing off, serve deletes leftover heartbeat Triggers itself
(`triggers.LeftoverTriggers`).

Opting out: an Application annotated `eventmesh-health.kyma-project.io/probe: "false"`
(`PROBE_ANNOTATION`) is left out of `targets`, so its heartbeat Triggers are deleted and
its data-plane verdicts vanish.

Flows (a profile whose `DataPlane.flows` says which, Knative v1): each probed flow
(`flows.flow_targets`: root Ready, of a probed class, not opted out by the same annotation on
the root) is probed like an application with one namespace and one hop: its key
(`<flow>.<namespace>.<name>`) is the heartbeats' source and the tracker's application, its
heartbeat object (`flows.FlowSubscribers`) delivers to the receiver, one probe per round
goes to the root's address (or `ProbeSettings.flow_url_templates`), a suspect probe gets a
confirmation as an application's does, and `merge` puts its verdict into the flow's entry of
`flows[]` (findings naming the root), the flow's health the worst of both planes (or
`DataPlaneNotProbed` while its control plane is not Healthy).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from eventmesh_health import reasons
from eventmesh_health.model import (
    Finding,
    FlowReport,
    Health,
    MeshReport,
    NamespaceReport,
    ObjectRef,
)
from eventmesh_health.probing.flows import (
    PROBE_ANNOTATION,
    FlowSubscribers,
    FlowTarget,
    flow_key,
    flow_targets,
)
from eventmesh_health.probing.health import DataPlaneVerdict, HopObjects, ProbeThresholds, evaluate
from eventmesh_health.probing.heartbeat import DEFAULT_TYPE, Heartbeat, Hop, new_run_id
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
from eventmesh_health.probing.tracelookup import TraceLookups
from eventmesh_health.probing.tracker import Arrival, ProbeMetrics, Tracker
from eventmesh_health.probing.triggers import TriggerConfig, TriggerManager
from eventmesh_health.sources.tracing import TraceBackend
from eventmesh_health.topology import ByPairLabels, DataPlane, Profile
from eventmesh_health.topology.registry import DEFAULT

__all__ = ["PROBE_ANNOTATION", "ProbeRunner", "ProbeSettings", "Target", "flow_findings",
           "merge_verdicts"]

# On an Application (or a flow's root): "false" takes it out of probing.

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
    # Flows: (hop id, template with {namespace}, {name}, {kind}) used instead of the root's
    # status.address.url (a checker outside the cluster, tests on loopback).
    flow_url_templates: tuple[tuple[str, str], ...] = ()
    # This replica's host:port as the mesh reaches it: `{replica}` in the receiver (and
    # dead-letter) template. None: serve fills in its listen address.
    advertise_address: str | None = None
    secret_namespace: str = "kyma-system"
    secret_name: str = "eventmesh-health-heartbeat-keys"
    key_reload: timedelta = timedelta(minutes=1)
    heartbeat_type: str = DEFAULT_TYPE
    window: timedelta | None = None  # default: max(5 min, 10 intervals)
    # default: max(2 x the latency SLO, 1 s), at most 0.4 interval: a heartbeat not there
    # by then is overdue (its confirmation is sent); the detection time is about one
    # interval plus twice this
    grace: timedelta | None = None
    evaluate_every: timedelta | None = None  # default: interval / 4
    timeout: float = 5.0
    thresholds: ProbeThresholds | None = None  # default: ProbeThresholds(interval=interval)
    # A tracing backend (`--trace-url`, `--trace-backend`): where the trace of a failed
    # heartbeat stops is looked up there and attached to its finding.
    trace_url: str | None = None
    trace_backend: str = "jaeger"

    def tracker_window(self) -> timedelta:
        return self.window or max(timedelta(minutes=5), self.interval * 10)

    def tracker_grace(self) -> timedelta:
        if self.grace is not None:
            return self.grace
        return min(self.interval * 0.4,
                   max(self.limits().latency_slo * 2, timedelta(seconds=1)))

    def limits(self) -> ProbeThresholds:
        return self.thresholds or ProbeThresholds(interval=self.interval)

    def dead_letter_template(self) -> str | None:
        if self.dead_letter_url_template is not None:
            return self.dead_letter_url_template
        if "/heartbeat/" in self.receiver_url_template:
            return self.receiver_url_template.replace("/heartbeat/", "/deadletter/", 1)
        return None


_ProbeKey = tuple[str, Hop, str | None]
_SETTLE = 0.02  # seconds after a deadline before looking (timers are not exact)
_COALESCE = 0.02  # seconds: updates asked for within this are one


def _key(hb: Heartbeat) -> _ProbeKey:
    return (hb.application, hb.hop, hb.namespace)


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


def _opted_out(application: Mapping[str, Any] | None) -> bool:
    annotations = ((application or {}).get("metadata") or {}).get("annotations") or {}
    return str(annotations.get(PROBE_ANNOTATION, "")).strip().lower() == "false"


def _data_plane(profile: Profile) -> DataPlane:
    if profile.data_plane is None:
        raise ValueError(f"profile {profile.name} has no data plane to probe")
    return profile.data_plane


def targets(report: MeshReport, index: _Index, profile: Profile = DEFAULT) -> dict[str, Target]:
    """The applications to probe and their qualifying namespaces (state >= 3, the profile's
    Broker Ready), but none whose Application says `PROBE_ANNOTATION: "false"`."""
    plane = _data_plane(profile)
    out: dict[str, Target] = {}
    if profile.application is None or plane.broker is None or plane.channel is None:
        return out
    broker, channel_at = plane.broker, plane.channel
    for app in report.applications:
        if _opted_out(index.get(profile.application.key, None, app.name)):
            continue
        namespaces = tuple(sorted(
            ns.name for ns in app.namespaces
            if ns.state >= 3 and _ready(index.get(broker.kind.key,
                                                  *broker.place(app.name, ns.name)))))
        if not namespaces:
            continue
        channel = index.get(channel_at.kind.key, *channel_at.place(app.name, ""))
        address = ((channel or {}).get("status") or {}).get("address") or {}
        url = address.get("url") or (f"http://{address['hostname']}"
                                     if address.get("hostname") else None)
        out[app.name] = Target(app.name, namespaces, url)
    return out


def generated_names(index: _Index, data_plane: DataPlane) -> dict[tuple[str, str], str]:
    """(application, namespace) -> the name of its generated segment object (the
    `brokersub-` Subscription on Kyma 1.x), found by its labels."""
    out: dict[tuple[str, str], str] = {}
    for hop in data_plane.hops:
        if isinstance(hop.segment, ByPairLabels):
            out.update(_labelled(index, hop.segment))
    return out


def _labelled(index: _Index, where: ByPairLabels) -> dict[tuple[str, str], str]:
    out: dict[tuple[str, str], str] = {}
    for obj in index.of_kind(where.kind.key):
        meta = obj.get("metadata") or {}
        labels = meta.get("labels") or {}
        if meta.get("namespace") != where.namespace:
            continue
        app, ns = labels.get(where.application_label), labels.get(where.namespace_label)
        if app and ns and str(meta.get("name", "")).startswith(where.prefix):
            out[(str(app), str(ns))] = str(meta["name"])
    return out


def merge_verdicts(
    report: MeshReport, verdicts: Mapping[tuple[str, str], DataPlaneVerdict],
) -> MeshReport:
    """`report` with each verdict's findings in its namespace (a flow's: in its entry of
    `flows`, keyed by `flows.flow_key`) and healths made the worst of control and data
    plane (Unknown verdicts add their finding, not their health)."""
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
    flows: list[FlowReport] = []
    for flow in report.flows:
        verdict = verdicts.get((flow_key(flow.flow, flow.namespace, flow.name), flow.namespace))
        if verdict is None or (not verdict.findings and verdict.health is Health.HEALTHY):
            flows.append(flow)
            continue
        health = flow.health if verdict.health is Health.UNKNOWN else Health.worst(
            (flow.health, verdict.health))
        flows.append(flow.model_copy(update={"health": health,
                                             "findings": [*flow.findings, *verdict.findings]}))
    health = Health.worst([report.system.health, *(a.health for a in applications),
                           *(f.health for f in flows)], default=report.health)
    return report.model_copy(update={"applications": applications, "flows": flows,
                                     "health": health, "healthy": health is Health.HEALTHY})


def _root_cause(ns: NamespaceReport | FlowReport) -> ObjectRef | None:
    for finding in ns.findings:
        if finding.root_cause and finding.health is not Health.HEALTHY:
            return finding.object
    return None


@dataclass(frozen=True, slots=True)
class RoundRecord:
    """One sending round as it went: kept for the last few rounds so that silence on every
    hop at once can be told apart from a round that did not send (keys, Triggers, targets)
    or took longer than the interval."""

    started: datetime
    seconds: float
    targets: int  # applications and flows the round was for
    heartbeats: int  # heartbeats recorded as sent
    # "sent", "not leading", "no keys" or "failed: <error>", then what else it did
    # ("Triggers reconciled", "Triggers not reconciled", "keys not reloaded")
    outcome: str


@dataclass
class ProbeRunner:
    """The probing of one replica; see the module docstring."""

    client: Any  # lightkube.AsyncClient
    settings: ProbeSettings
    identity: str
    is_leader: Callable[[], bool]
    clock: Callable[[], datetime] | None = None
    # What is probed and which objects findings name (its `data_plane`).
    profile: Profile = DEFAULT
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
        self.traces: TraceLookups | None = None
        if s.trace_url is not None:
            # A trace not (wholly) there yet is asked about again next round.
            self.traces = TraceLookups(
                TraceBackend(s.trace_backend, s.trace_url, timeout=s.timeout),  # type: ignore[arg-type]
                retry_after=s.interval.total_seconds())
        kwargs: dict[str, Any] = {} if self.clock is None else {"clock": self.clock}
        self.tracker = Tracker(window=s.tracker_window(), grace=s.tracker_grace(),
                               outage_sends=s.limits().silent_sends, **kwargs)
        self.keys = KeySource(self._read_secret, reload=s.key_reload)
        self.receiver = Receiver(self.tracker, Verifier(self._keyring),
                                 on_arrival=self._on_arrival, pair_tokens=self._pair_token)
        self.metrics = ProbeMetrics(self.tracker, self.receiver.rejected_counts,
                                    latency_objective=s.limits().latency_slo.total_seconds())
        self.sender = Sender(
            self.tracker, lambda: self.keys.keyring, new_run_id(self.identity),
            config=SendConfig(
                event_service_url_template=s.event_service_url_template,
                adapter_url_template=s.adapter_url_template,
                channel_url_template=s.channel_url_template,
                broker_url_template=s.broker_url_template,
                heartbeat_type=s.heartbeat_type, timeout=s.timeout,
            ))
        trigger_config = TriggerConfig(
            receiver_url_template=s.receiver_url_template,
            dead_letter_url_template=s.dead_letter_template(),
            heartbeat_type=s.heartbeat_type, replica=s.advertise_address,
        )
        self.triggers = TriggerManager(self.client, trigger_config)
        plane = _data_plane(self.profile)
        self._applications = bool(plane.hops)  # whether applications are probed at all
        self.flows = FlowSubscribers(self.client, trigger_config,
                                     tuple(dict.fromkeys(f.subscriber.kind
                                                         for f in plane.flows)))
        self._targets: dict[str, Target] = {}
        self._flow_targets: dict[str, FlowTarget] = {}
        self._probed_pairs: frozenset[tuple[str, str]] = frozenset()  # (namespace, app)
        self._reconciled: frozenset[tuple[str, str]] | None = None
        # per (application, hop, namespace of a broker probe): the newest regular probe's
        # sequence, and the newest confirmation's; the applications whose newest regular
        # round was confirmed
        self._regular: dict[_ProbeKey, int] = {}
        self._confirmation: dict[_ProbeKey, int] = {}
        self._confirmed: set[str] = set()
        self._on_update: Callable[[], None] | None = None
        self._update_pending = False
        self._tasks: set[asyncio.Task[None]] = set()
        # the newest evaluation's verdicts, with the figures they were judged on (an
        # arrival for a pair judged neither Healthy nor Unknown re-evaluates soon)
        self.latest: dict[tuple[str, str], DataPlaneVerdict] = {}
        # set when this replica starts leading: its first round starts at once instead of
        # up to an interval later
        self._wake = asyncio.Event()
        self.confirmations = 0
        self.recent_rounds: deque[RoundRecord] = deque(maxlen=16)

    def _keyring(self) -> Keyring:
        return self.keys.get()  # LookupError before the first load: the receiver says 503

    def _pair_token(self, namespace: str, application: str) -> str | None:
        """The token the pair's heartbeat Trigger carries, if it is probed (else None)."""
        if (namespace, application) not in self._probed_pairs:
            return None
        return (self.triggers.tokens.get((namespace, application))
                or self.flows.tokens.get((namespace, application)))

    async def _read_secret(self) -> Mapping[str, str]:
        from lightkube.resources.core_v1 import Secret

        secret = await self.client.get(Secret, self.settings.secret_name,
                                       namespace=self.settings.secret_namespace)
        return dict(secret.data or {})

    async def close(self) -> None:
        await self.sender.close()
        if self.traces is not None:
            await self.traces.close()

    def leadership_changed(self, leading: bool) -> None:
        """A term starts or ends: forget the figures (an earlier term's last arrivals would
        read as silence) and the rounds, reconcile the Triggers at the next round (a new
        leader points them at itself), and a new leader starts that round at once."""
        self.since.clear()
        self._reconciled = None
        self.tracker.retain(())
        self._regular.clear()
        self._confirmation.clear()
        self._confirmed.clear()
        self.latest = {}
        if leading:
            self._wake.set()
        log.info("probing: %s", "leading: heartbeat Triggers will point here" if leading
                 else "not leading: not sending, not judging")

    # --- inputs ---------------------------------------------------------------------------

    def update(self, report: MeshReport | None, index: _Index | None) -> None:
        """The current control-plane view (called by the orchestrator after each analysis)."""
        if report is not None and index is not None:
            had_targets = bool(self._targets) or bool(self._flow_targets)
            self._targets = targets(report, index, self.profile)
            plane = _data_plane(self.profile)
            self._flow_targets = (flow_targets(report, index, plane,
                                               dict(self.settings.flow_url_templates))
                                  if plane.flows else {})
            self._probed_pairs = frozenset((ns, app) for app, ns in self.pairs())
            if (self._targets or self._flow_targets) and not had_targets:
                # the first round ran before the first analysis: probe now, not an
                # interval later
                self._wake.set()

    def pairs(self) -> frozenset[tuple[str, str]]:
        """(application or flow key, namespace) of everything probed."""
        return self.application_pairs() | frozenset(
            (t.key, t.namespace) for t in self._flow_targets.values())

    def application_pairs(self) -> frozenset[tuple[str, str]]:
        return frozenset((t.application, ns) for t in self._targets.values()
                         for ns in t.namespaces)

    def flow_targets(self) -> dict[str, FlowTarget]:
        """The probed flows, by key."""
        return dict(self._flow_targets)

    # --- the loop -------------------------------------------------------------------------

    async def run(self, on_update: Callable[[], None]) -> None:
        """Until cancelled: the sending rounds (leader only) and the evaluation ticks."""
        self._on_update = on_update
        ticker = asyncio.create_task(self._tick(on_update), name="probe-evaluation")
        try:
            loop = asyncio.get_running_loop()
            while True:
                # rounds start every interval, however long the sends of one take
                next_round = loop.time() + jittered(self.settings.interval.total_seconds(),
                                                    self.settings.jitter)
                self._wake.clear()
                await self._timed_round()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(),
                                           max(0.0, next_round - loop.time()))
        finally:
            self._on_update = None
            for task in (ticker, *self._tasks):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(ticker, *self._tasks, return_exceptions=True)

    async def _timed_round(self) -> None:
        started, clock = self.tracker.clock(), time.monotonic()
        sent_before = sum(self.sender.sent.values())
        targets = len(self._targets) + len(self._flow_targets)
        try:
            outcome = await self.round()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("probing round failed")
            outcome = f"failed: {type(exc).__name__}"
        seconds = time.monotonic() - clock
        record = RoundRecord(started, seconds, targets,
                             sum(self.sender.sent.values()) - sent_before, outcome)
        self.recent_rounds.append(record)
        interval = self.settings.interval.total_seconds()
        if seconds > interval:
            # its heartbeats went out late: silence judged meanwhile may be this replica's
            log.warning("probing round took %.1fs, longer than the interval (%.0fs): %s",
                        seconds, interval, record)
        else:
            log.debug("probing round: %s", record)

    async def _tick(self, on_update: Callable[[], None]) -> None:
        every = (self.settings.evaluate_every or self.settings.interval / 4).total_seconds()
        while True:
            await asyncio.sleep(every)
            try:
                on_update()
            except Exception:
                log.exception("probing evaluation failed")

    async def round(self) -> str:
        """One round: keys, Triggers, sends (leader only); what it did (`RoundRecord`)."""
        if not self.is_leader():
            self.since.clear()
            self._reconciled = None
            return "not leading"
        self.rounds += 1
        key_errors = self.keys.errors
        await self.keys.refresh()
        notes = ["keys not reloaded"] if self.keys.errors > key_errors else []
        pairs = self.pairs()
        if pairs != self._reconciled or self.rounds % 10 == 0:
            ok = True
            if self._applications:
                ok = await self.triggers.reconcile(sorted(self.application_pairs()))
            if self.flows.kinds:
                flows = sorted(self._flow_targets.values(), key=lambda t: t.key)
                ok = await self.flows.reconcile(flows) and ok
            self._reconciled = pairs if ok else None
            notes.append("Triggers reconciled" if ok else "Triggers not reconciled")
        now = self.tracker.clock()
        for pair in pairs:
            self.since.setdefault(pair, now)
        for pair in set(self.since) - pairs:
            del self.since[pair]
        self.tracker.retain(pairs)
        if self.keys.keyring is None:
            return "; ".join(["no keys", *notes])
        targets: list[Target | FlowTarget] = [*self._targets.values(),
                                              *self._flow_targets.values()]
        live = {_name(t) for t in targets}
        for key in [k for k in self._regular if k[0] not in live]:
            self._regular.pop(key, None)
            self._confirmation.pop(key, None)
        self._confirmed.clear()  # a new regular round: each application may be confirmed
        await asyncio.gather(*(self._send_regular(t) for t in targets))
        return "; ".join(["sent", *notes])

    async def _send_regular(self, target: Target | FlowTarget) -> None:
        sent = await self._send(target, self._regular_sent)
        if sent:
            self._spawn(self._follow_up(sent))

    async def _send(self, target: Target | FlowTarget,
                    on_send: Callable[[Heartbeat], None]) -> list[Heartbeat]:
        if isinstance(target, FlowTarget):
            return await self.sender.send_flow(target.key, target.hop, target.namespace,
                                               target.url, on_send=on_send)
        return await self.sender.send_application(
            target.application, list(target.namespaces), target.channel_url, on_send=on_send)

    def _target(self, name: str) -> Target | FlowTarget | None:
        return self._targets.get(name) or self._flow_targets.get(name)

    # --- confirmations --------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _regular_sent(self, hb: Heartbeat) -> None:
        self._regular[_key(hb)] = hb.sequence

    def _confirmation_sent(self, hb: Heartbeat) -> None:
        self._confirmation[_key(hb)] = hb.sequence

    def _namespaces(self, hb: Heartbeat) -> list[str]:
        """The namespaces `hb` should reach (and that are counted already)."""
        if hb.namespace is not None:
            names: tuple[str, ...] = (hb.namespace,)
        else:
            target = self._target(hb.application)
            names = (() if target is None else (target.namespace,)
                     if isinstance(target, FlowTarget) else target.namespaces)
        return [ns for ns in names if self.tracker.expecting(hb.application, ns)]

    async def _follow_up(self, sent: list[Heartbeat]) -> None:
        """When an application's regular probes are due: a confirmation round if one did
        not arrive everywhere."""
        await self._until_due(max(hb.time for hb in sent))
        for hb in sent:
            if any(not self.tracker.arrived(hb.application, ns, hb.hop, hb.run, hb.sequence)
                   for ns in self._namespaces(hb)):
                await self._confirm(hb)
                return

    async def _confirm(self, suspect: Heartbeat) -> None:
        """One more round for the application of `suspect` (a probe of its newest regular
        round, once per round), then an update when it is due."""
        app = suspect.application
        target = self._target(app)
        if (self._regular.get(_key(suspect)) != suspect.sequence or app in self._confirmed
                or target is None or not self.is_leader()):
            return
        self._confirmed.add(app)
        sent = await self._send(target, self._confirmation_sent)
        if not sent:
            return
        self.confirmations += 1
        await self._until_due(min(hb.time for hb in sent))
        self._update_soon()

    async def _until_due(self, sent_at: datetime) -> None:
        """Sleeps until a heartbeat sent at `sent_at` should have arrived (the sends of a
        round can take a while to be answered: the deadline counts from the send)."""
        due = sent_at + self.tracker.grace - self.tracker.clock()
        await asyncio.sleep(max(0.0, due.total_seconds()) + _SETTLE)

    def _on_arrival(self, hb: Heartbeat, namespace: str, arrival: Arrival,
                    at: datetime) -> None:
        """The receiver's hook: confirm a slow or duplicated regular probe; re-evaluate
        soon when a confirmation arrives or the pair is not Healthy."""
        if self._on_update is None or not self.is_leader():
            return
        key = _key(hb)
        slow = at - hb.time > self.settings.limits().latency_slo
        if ((arrival is Arrival.DUPLICATE or slow) and self._regular.get(key) == hb.sequence
                and hb.application not in self._confirmed):
            self._spawn(self._confirm(hb))
        verdict = self.latest.get((hb.application, namespace))
        if self._confirmation.get(key) == hb.sequence or (
                verdict is not None and verdict.health not in (Health.HEALTHY, Health.UNKNOWN)):
            self._update_soon()
            # and when it counts as not duplicated: a grace period after its arrival
            asyncio.get_running_loop().call_later(
                self.tracker.grace.total_seconds() + _SETTLE, self._update_soon)

    def _update_soon(self) -> None:
        """`on_update()` shortly, once for everything that asks within `_COALESCE`."""
        if self._update_pending or self._on_update is None:
            return
        self._update_pending = True

        def fire() -> None:
            self._update_pending = False
            if self._on_update is not None:
                try:
                    self._on_update()
                except Exception:
                    log.exception("probing evaluation failed")

        asyncio.get_running_loop().call_later(_COALESCE, fire)

    # --- verdicts -------------------------------------------------------------------------

    def verdicts(self, report: MeshReport, index: _Index) -> dict[tuple[str, str],
                                                                    DataPlaneVerdict]:
        if not self.is_leader() or not self.since:
            return {}
        plane = _data_plane(self.profile)
        subs = generated_names(index, plane) if plane.hops else {}
        limits = self.settings.limits()
        now = self.tracker.clock()
        out: dict[tuple[str, str], DataPlaneVerdict] = {}
        for app in report.applications:
            for ns in app.namespaces:
                since = self.since.get((app.name, ns.name))
                if since is None:
                    continue
                objects = HopObjects.of(plane, app.name, ns.name, subs.get((app.name, ns.name)))
                letter = self.receiver.latest_dead_letter(app.name, ns.name)
                not_meaningful = None
                if ns.health is not Health.HEALTHY:
                    not_meaningful = (f"the control-plane chain of namespace {ns.name} is "
                                      f"{ns.health.value}")
                out[(app.name, ns.name)] = evaluate(
                    self.tracker, app.name, ns.name, since=since, now=now, thresholds=limits,
                    objects=objects, not_meaningful=not_meaningful,
                    caused_by=_root_cause(ns) if not_meaningful else None,
                    dead_letter=letter.describe() if letter else None,
                    traces=self.traces.known if self.traces else None)
        for flow in report.flows:
            key = flow_key(flow.flow, flow.namespace, flow.name)
            target = self._flow_targets.get(key)
            since = self.since.get((key, flow.namespace))
            if target is None or since is None:
                continue
            out[(key, flow.namespace)] = self._flow_verdict(flow, target, since, now)
        self.latest = out
        if self.traces is not None:
            self._want_traces(out.values())
        return out

    def _want_traces(self, verdicts: Iterable[DataPlaneVerdict]) -> None:
        """Ask the tracing backend where the named traces stop; re-evaluate on each answer."""
        assert self.traces is not None
        wanted = [f.trace.trace_id for v in verdicts for f in v.findings
                  if f.trace is not None and f.trace.outcome != "stopped"]
        with contextlib.suppress(RuntimeError):  # no running loop: a synchronous caller
            self.traces.want(wanted, self._update_soon)

    def _flow_verdict(self, flow: FlowReport, target: FlowTarget, since: datetime,
                      now: datetime) -> DataPlaneVerdict:
        root = ObjectRef(api_version=target.root.api_version, kind=target.root.kind,
                         namespace=target.namespace, name=target.name)
        objects = HopObjects.single(target.hop, root, target.text(target.probe.segment_text),
                                    target.text(target.probe.entry_text))
        letter = self.receiver.latest_dead_letter(target.key, target.namespace)
        not_meaningful = None
        if flow.health is not Health.HEALTHY:
            not_meaningful = (f"the control plane of {target.root.kind} {target.namespace}/"
                              f"{target.name} is {flow.health.value}")
        return evaluate(
            self.tracker, target.key, target.namespace, since=since, now=now,
            thresholds=self.settings.limits(), hops=(target.hop,), objects=objects,
            not_meaningful=not_meaningful,
            caused_by=_root_cause(flow) if not_meaningful else None,
            dead_letter=letter.describe() if letter else None,
            traces=self.traces.known if self.traces else None)

    def merge(self, report: MeshReport, index: _Index | None) -> MeshReport:
        if index is None:
            return report
        return merge_verdicts(report, self.verdicts(report, index))


def data_plane_findings(report: MeshReport) -> list[tuple[str, str, Finding]]:
    """(application, namespace, finding) for every data-plane finding in `report`."""
    return [(app.name, ns.name, f) for app in report.applications for ns in app.namespaces
            for f in ns.findings if f.reason in reasons.DATA_PLANE]


def flow_findings(report: MeshReport) -> list[tuple[str, str, str, Finding]]:
    """(flow, namespace, name, finding) for every data-plane finding of a flow in `report`."""
    return [(flow.flow, flow.namespace, flow.name, f) for flow in report.flows
            for f in flow.findings if f.reason in reasons.DATA_PLANE]


def _name(target: Target | FlowTarget) -> str:
    return target.key if isinstance(target, FlowTarget) else target.application
