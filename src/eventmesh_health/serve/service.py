"""`serve`: one asyncio event loop that ties the pieces together.

    watches (informer) --changes--> incremental analysis --report--> HealthState
                                                                   |-> REST API, /metrics
                                                                   '-> health objects,
                                                                       annotations, Events
                                                                       (leader only)

The analysis is the same pure one `check` runs; only the applications a change can
touch are re-evaluated. When the watches have been disconnected for longer than
`outage_after`, every health becomes Unknown with the reason, never a stale Healthy;
once they are back the cache re-syncs and the true health returns by itself.

With `--probe` the leader also probes the data plane (`probing.runner`); without it, the
leader deletes heartbeat Triggers left from an earlier run
(`probing.triggers.LeftoverTriggers`, on the Triggers of the watch cache, looked at
whenever a Trigger changes or leadership does).
"""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import lightkube

from eventmesh_health import reasons
from eventmesh_health.analysis import Thresholds
from eventmesh_health.analysis.incremental import IncrementalAnalysis
from eventmesh_health.model import (
    ApplicationReport,
    Finding,
    FlowReport,
    Health,
    MeshReport,
    NamespaceReport,
    ObjectRef,
    Severity,
    SystemReport,
)
from eventmesh_health.probing.runner import ProbeRunner, ProbeSettings
from eventmesh_health.probing.triggers import LeftoverTriggers
from eventmesh_health.serve.api import create_app, embedded_server
from eventmesh_health.serve.history import flow_key
from eventmesh_health.serve.informer import Change, ClusterCache
from eventmesh_health.serve.leader import LeaderElector
from eventmesh_health.serve.metrics import Metrics
from eventmesh_health.serve.notify import Notifier, NotifySettings, opted_out
from eventmesh_health.serve.ratelimit import DEFAULT_BURST, DEFAULT_QPS, TokenBucket
from eventmesh_health.serve.state import HealthState
from eventmesh_health.serve.views import (
    LazyRootCauseIndex,
    app_root_cause,
    application_tree,
    flow_root_cause,
    flow_tree,
)
from eventmesh_health.serve.writer import (
    APPLICATION_RESOURCE,
    EVENT_RESOURCE,
    HEALTH_RESOURCE,
    HEALTH_STATUS_RESOURCE,
    HealthWriter,
)
from eventmesh_health.topology import Kind, Profile
from eventmesh_health.topology.registry import DEFAULT, PROFILES

log = logging.getLogger("eventmesh_health.serve")


def _any_application() -> Kind:
    """The application kind of a profile that has one (what HealthWriter is built for)."""
    return next(p.application for p in PROFILES.values() if p.application is not None)


def host_port(host: str, port: int) -> str:
    """`host:port`, with an IPv6 address in brackets."""
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]:{port}"
    except ValueError:
        pass
    return f"{host}:{port}"


def default_advertise_address(host: str, port: int, pod_ip: str | None = None) -> str:
    """This replica's address for the heartbeat Triggers (`{replica}`): `$POD_IP:<port>`
    in a Pod (the downward API's status.podIP), else the listen address."""
    return host_port(pod_ip.strip() if pod_ip and pod_ip.strip() else host, port)


def unspecified(address: str) -> bool:
    """Whether `address` (host:port) is a wildcard such as 0.0.0.0, which nobody can reach."""
    host = address.rsplit(":", 1)[0].strip("[]") if ":" in address else address
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


@dataclass(frozen=True)
class Settings:
    """Everything `serve` can be told, in one place (flags and environment: see the CLI)."""

    host: str = "0.0.0.0"  # in a Pod, the API and /metrics must be reachable from outside
    port: int = 8080
    # The heartbeat receiver's own port (None: on `port`, beside the API). Its own port lets
    # a NetworkPolicy admit the mesh there and only the scrapers on the API's.
    receiver_port: int | None = None
    leader_election: bool = True
    lease_namespace: str = "kyma-system"
    lease_name: str = "eventmesh-health-serve"
    identity: str = field(default_factory=socket.gethostname)
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0
    events_namespace: str = "default"  # Events about cluster-scoped objects must be here
    write: bool = True
    outage_after: timedelta = timedelta(seconds=30)
    tick: timedelta = timedelta(seconds=15)
    thresholds: Thresholds = field(default_factory=Thresholds)
    log_level: str = "info"
    # Heartbeat probing of the data plane (`--probe`); None: off.
    probe: ProbeSettings | None = None
    # What is watched and how it is judged (`--profile`; `auto` is resolved before).
    profile: Profile = DEFAULT
    # Transition notifications (`--notify-url`, `--notify-secret`); None: off.
    notify: NotifySettings | None = None
    # The writer's client-side rate limit (`--kube-api-qps`, `--kube-api-burst`).
    kube_api_qps: float = DEFAULT_QPS
    kube_api_burst: int = DEFAULT_BURST


def _now() -> datetime:
    return datetime.now(UTC)


class Service:
    def __init__(
        self, client: lightkube.AsyncClient, settings: Settings,
        now: Callable[[], datetime] = _now,
    ) -> None:
        self.settings = settings
        self.client = client
        self.now = now
        profile = settings.profile
        # The heartbeat objects' kinds (Triggers; Subscriptions on Channels of flows): a
        # profile that cannot be probed has none to clean up.
        self._heartbeat_kinds = (profile.data_plane.subscriber_kinds
                                 if profile.data_plane else ())
        self._heartbeat_keys = frozenset(k.key for k in self._heartbeat_kinds)
        self.state = HealthState(leader_election_running=not settings.leader_election)
        self.state.explain = self._explain
        self.state.explain_flow = self._explain_flow
        self.metrics = Metrics(
            kinds=[k.key for k in profile.kinds],
            writes=[(HEALTH_RESOURCE, "create"), (HEALTH_RESOURCE, "patch"),
                    (HEALTH_RESOURCE, "delete"), (HEALTH_STATUS_RESOURCE, "patch"),
                    (APPLICATION_RESOURCE, "patch"), (EVENT_RESOURCE, "create"),
                    (EVENT_RESOURCE, "patch")],
        )
        # The first analysis is built from the whole cache (`snapshot()`): no Change per object.
        self.cache = ClusterCache(client, profile.kinds, on_changes=self._on_changes,
                                  initial_changes=False)
        self.analysis: IncrementalAnalysis | None = None
        self.elector: LeaderElector | None = None
        if settings.leader_election:
            self.elector = LeaderElector(
                client, settings.lease_namespace, settings.lease_name, settings.identity,
                lease_duration=settings.lease_duration, renew_deadline=settings.renew_deadline,
                retry_period=settings.retry_period,
                on_started_leading=self._leadership_changed,
                on_stopped_leading=self._leadership_changed,
            )
        self.writer = HealthWriter(
            client, is_leader=self.is_leader, events_namespace=settings.events_namespace,
            reporting_instance=settings.identity,
            # Flows have no health object of their own yet: a flows-only profile writes
            # the mesh-wide parts alone (no application is ever in its report).
            application=profile.application or _any_application(),
            history=self.state.history, on_history=self._seed_history,
            limiter=TokenBucket(settings.kube_api_qps, settings.kube_api_burst),
        )
        self.prober: ProbeRunner | None = None
        self.leftovers: LeftoverTriggers | None = None
        if settings.probe is not None:
            if profile.data_plane is None:
                raise ValueError(f"profile {profile.name} has no data plane to probe")
            probe = settings.probe
            if probe.advertise_address is None:
                probe = replace(probe, advertise_address=host_port(
                    settings.host, settings.receiver_port or settings.port))
            self.prober = ProbeRunner(client, probe, settings.identity, self.is_leader,
                                      profile=profile)
            self.metrics.add_collector(self.prober.metrics)
        else:
            self.leftovers = LeftoverTriggers(client, kinds=self._heartbeat_kinds)
        self._look_for_leftovers = True  # heartbeat Triggers changed, or leadership did
        self.notifier: Notifier | None = None
        if settings.notify is not None:
            self.notifier = Notifier(
                settings.notify,
                self._read_notify_secret if settings.notify.secret is not None else None)
            self.metrics.add_collector(self.notifier.metrics)
        receiver = [self.prober.receiver.router] if self.prober is not None else []
        apart = settings.receiver_port not in (None, settings.port)
        self.app = create_app(self.state, self.metrics, routers=[] if apart else receiver)
        # the receiver alone, with the probes, on its own port
        self.receiver_app = create_app(self.state, self.metrics, receiver, api=False) \
            if apart and receiver else None
        self._changed = asyncio.Event()
        self._writes_seen: dict[tuple[str, str], int] = {}
        self._stats_seen: dict[str, tuple[int, int]] = {}
        # The last report's applications and flows, by history key (`_record_changes`).
        self._last_apps: dict[str, ApplicationReport] = {}
        self._last_flows: dict[str, FlowReport] = {}
        self.analysis_seconds: list[float] = []

    # --- leadership ---------------------------------------------------------------------------

    def is_leader(self) -> bool:
        if self.elector is None:
            return True
        return self.elector.is_leader

    def _leadership_changed(self) -> None:
        leading = self.is_leader()
        if self.prober is not None and leading != self.state.is_leader:
            self.prober.leadership_changed(leading)
        self._look_for_leftovers = True
        self.state.is_leader = leading
        self.metrics.set_leader(self.state.is_leader)
        self._changed.set()  # a new leader publishes at once

    # --- running ------------------------------------------------------------------------------

    async def run(self) -> None:
        """Until cancelled: watches, analysis, API server, leader election, publishing."""
        server = embedded_server(self.app, host=self.settings.host, port=self.settings.port,
                                 log_level=self.settings.log_level)
        servers = [server]
        if self.receiver_app is not None:
            assert self.settings.receiver_port is not None
            servers.append(embedded_server(self.receiver_app, host=self.settings.host,
                                           port=self.settings.receiver_port,
                                           log_level=self.settings.log_level))
        tasks = [
            asyncio.create_task(self.cache.run(), name="watches"),
            *(asyncio.create_task(s.serve(), name=f"http-{n}") for n, s in enumerate(servers)),
            asyncio.create_task(self._publisher(), name="publisher"),
            asyncio.create_task(self._clock(), name="clock"),
        ]
        if self.prober is not None:
            tasks.append(asyncio.create_task(self._probe(), name="probing"))
        if self.notifier is not None:
            tasks.append(asyncio.create_task(self.notifier.run(), name="notify"))
        if self.elector is not None:
            tasks.append(asyncio.create_task(self._elect(), name="leader-election"))
        else:
            self._leadership_changed()
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # a task that ended on its own is a bug: surface it
        finally:
            for each in servers:
                each.should_exit = True
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            gc.unfreeze()  # an embedding process (the tests) collects what serve kept

    async def _elect(self) -> None:
        assert self.elector is not None
        self.state.leader_election_running = True
        try:
            await self.elector.run()
        finally:
            self.state.leader_election_running = False

    async def _probe(self) -> None:
        assert self.prober is not None
        try:
            await self.prober.run(self._probe_update)
        finally:
            await self.prober.close()

    def _probe_update(self) -> None:
        """Data-plane verdicts change with time alone: publish them."""
        if self.analysis is not None:
            self._record(None, self.now())

    async def _on_changes(self, changes: list[Change]) -> None:
        now = self.now()
        started = time.perf_counter()
        if self.analysis is None:
            self.analysis = IncrementalAnalysis(self.cache.snapshot(now), self.settings.profile,
                                                self.settings.thresholds)
            self.state.caches_synced = True
            # The cache and the first analysis stay as long as serve: a full pass of the
            # cyclic GC over them took seconds of a stopped event loop at 550,000 objects
            # (detection p99 3.6 s), so they are taken out of its reach. What of them goes
            # later is freed by reference counting: cached objects hold no cycles, and the
            # analysis unlinks the nodes of what it forgets.
            gc.freeze()
        else:
            collected, unavailable = self.cache.coverage()
            latest: dict[tuple[str, Any, Any], Change] = {}
            for change in changes:
                if change.kind in self._heartbeat_keys:
                    self._look_for_leftovers = True
                meta = change.obj.get("metadata") or {}
                latest[(change.kind, meta.get("namespace"), meta.get("name"))] = change
            self.analysis.apply(
                [c.obj for c in latest.values() if c.type != "DELETED"],
                [c.obj for c in latest.values() if c.type == "DELETED"],
                now, collected, unavailable,
            )
        self._record(started, now)

    async def _clock(self) -> None:
        """What changes with time alone: ages (stuck, progress deadlines) and outages."""
        interval = min(self.settings.tick.total_seconds(),
                       self.settings.outage_after.total_seconds() / 3)
        while True:
            await asyncio.sleep(interval)
            now = self.now()
            if self.analysis is None and self.cache.synced:  # synced with nothing to deliver
                await self._on_changes([])
            elif self.analysis is not None and self._outage(now) is None:
                started = time.perf_counter()
                self.analysis.tick(now)
                self._record(started, now)
            elif self.analysis is not None:
                self._record(None, now)

    def _outage(self, now: datetime) -> str | None:
        since = self.cache.disconnected_since
        if since is None or now - since < self.settings.outage_after:
            return None
        detail = f": {self.cache.last_error}" if self.cache.last_error else ""
        return (f"the API server has not been reachable since {since.isoformat()} "
                f"({int((now - since).total_seconds())}s){detail}")

    def _record(self, started: float | None, now: datetime) -> None:
        assert self.analysis is not None
        if started is not None:
            seconds = time.perf_counter() - started
            self.metrics.observe_analysis(seconds)
            self.analysis_seconds.append(seconds)
        outage = self._outage(now)
        report = self.analysis.report()
        self.state.degraded_reason = outage
        if self.prober is not None:
            index = self.analysis.builder.index
            self.prober.update(report, index)
            if outage is None:
                report = self.prober.merge(report, index)
        if outage is not None:
            report = outage_report(report, outage)
        self._record_history(self._record_changes(report, now), report, now, outage)
        self.state.report = report
        self.metrics.update_report(report, self.state.transitions)
        self._cache_metrics()
        self._notify(report, outage, now)
        self._changed.set()

    def _notify(self, report: MeshReport, outage: str | None, now: datetime) -> None:
        """The leader tells the notification targets of transitions; never during an
        outage (every health is Unknown then: what changed meanwhile is told after it)."""
        if self.notifier is None:
            return
        if not self.is_leader():
            self.notifier.forget()
        elif outage is None:
            self.notifier.observe(report, now, self._notify_opted_out)

    def _notify_opted_out(self, key: tuple[str, ...]) -> bool:
        """Whether the Application or the flow's root object says notify: "false"."""
        assert self.analysis is not None
        index = self.analysis.builder.index
        profile = self.settings.profile
        if key[0] == "application":
            if profile.application is None:
                return False
            return opted_out(index.get(profile.application.key, None, key[1]))
        _, _, namespace, kind, name = key
        return any(opted_out(index.get(k.key, namespace, name))
                   for k in profile.kinds if k.kind == kind)

    async def _read_notify_secret(self) -> dict[str, str]:
        from lightkube.resources.core_v1 import Secret

        assert self.settings.notify is not None and self.settings.notify.secret is not None
        namespace, name = self.settings.notify.secret
        secret = await self.client.get(Secret, name, namespace=namespace)
        return dict(secret.data or {})

    def _record_changes(self, report: MeshReport, now: datetime
                        ) -> list[tuple[str, ApplicationReport | FlowReport]]:
        """The applications and flows whose report object is not the last report's (the
        analysis makes a new one only for what it judged again), by history key; a new
        health of an application is its transition. What went away is forgotten."""
        state = self.state
        changed: list[tuple[str, ApplicationReport | FlowReport]] = []
        apps = self._last_apps
        for app in report.applications:
            before = apps.get(app.name)
            if before is app:
                continue
            apps[app.name] = app
            changed.append((app.name, app))
            if before is None or before.health is not app.health:
                state.transitions[app.name] = now
                if before is not None:
                    state.previous[app.name] = before.health
        if len(apps) != len(report.applications):
            names = {a.name for a in report.applications}
            for gone in [name for name in apps if name not in names]:
                del apps[gone]
                state.transitions.pop(gone, None)
                state.previous.pop(gone, None)
        flows = self._last_flows
        for flow in report.flows:
            key = flow_key(flow.namespace, flow.kind, flow.name)
            if flows.get(key) is not flow:
                flows[key] = flow
                changed.append((key, flow))
        if len(flows) != len(report.flows):
            keys = {flow_key(f.namespace, f.kind, f.name) for f in report.flows}
            for gone in [key for key in flows if key not in keys]:
                del flows[gone]
        return changed

    def _record_history(self, changed: list[tuple[str, ApplicationReport | FlowReport]],
                        report: MeshReport, now: datetime, outage: str | None) -> None:
        """A transition for each application and flow whose health or first root cause
        changed (first seen counts); those gone are forgotten."""
        history = self.state.history
        roots = LazyRootCauseIndex(report)
        outage_cause = f"APIServer: {reasons.CLUSTER_UNREACHABLE}" if outage else None
        for key, part in changed:
            cause = outage_cause or (app_root_cause(part, roots)
                                     if isinstance(part, ApplicationReport)
                                     else flow_root_cause(part, roots))
            latest = history.latest(key)
            if latest is None or latest.health is not part.health or latest.root_cause != cause:
                history.record(key, now, part.health, latest.health if latest else None, cause)
        # Keys of neither (e.g. seeded from the health object of a deleted application).
        if len(history) != len(self._last_apps) + len(self._last_flows):
            for gone in [k for k in history.keys()  # noqa: SIM118
                         if k not in self._last_apps and k not in self._last_flows]:
                history.forget(gone)

    def _seed_history(self, name: str, persisted: list[dict[str, Any]]) -> None:
        """Transitions an earlier leader persisted in the EventMeshHealth object."""
        older = self.state.history.seed(name, persisted)
        if older is not None and name in self.state.transitions:
            self.state.transitions[name] = older.at

    def _explain(self, app: ApplicationReport) -> dict[str, Any] | None:
        unit = self.analysis.units.get(app.name) if self.analysis is not None else None
        return application_tree(unit, app, self.state.degraded_reason)

    def _explain_flow(self, flow: FlowReport) -> dict[str, Any] | None:
        unit = (self.analysis.flows.get((flow.kind, flow.namespace, flow.name))
                if self.analysis is not None else None)
        return flow_tree(unit, flow, self.state.degraded_reason)

    def _cache_metrics(self) -> None:
        assert self.analysis is not None
        index = self.analysis.builder.index
        unavailable = self.analysis.builder.snapshot.unavailable
        self.metrics.set_cache(
            self.cache.synced,
            {k.key: index.count_of(k.key) for k in self.settings.profile.kinds},
            {k.key: k.key not in unavailable for k in self.settings.profile.kinds},
        )
        for kind, stats in self.cache.stats.items():
            restarts, relists = self._stats_seen.get(kind, (0, 0))
            for _ in range(stats.watch_restarts - restarts):
                self.metrics.inc_watch_restart(kind)
            for _ in range(stats.relists - relists):
                self.metrics.inc_relist(kind)
            self._stats_seen[kind] = (stats.watch_restarts, stats.relists)

    async def _publisher(self) -> None:
        """Writes (leader only), after each change; never during an outage."""
        while True:
            await self._changed.wait()
            self._changed.clear()
            report = self.state.report
            if (report is None or not self.is_leader()
                    or self.state.degraded_reason is not None or self.analysis is None):
                continue
            if self.leftovers is not None and self._look_for_leftovers:
                await self._remove_leftovers()
            if not self.settings.write:
                continue
            application = self.settings.profile.application
            applications = {
                str(obj["metadata"]["name"]): obj
                for obj in (self.analysis.builder.index.of_kind(application.key)
                            if application is not None else ())
            }
            await self.writer.publish(report, applications, self.state.transitions)
            for (resource, verb), count in self.writer.write_counts.items():
                for _ in range(count - self._writes_seen.get((resource, verb), 0)):
                    self.metrics.inc_write(resource, verb)
                self._writes_seen[(resource, verb)] = count

    async def _remove_leftovers(self) -> None:
        """Probing is off: heartbeat Triggers in the watch cache are left from an earlier
        run; the leader deletes them, unless this serve only observes."""
        assert self.leftovers is not None and self.analysis is not None
        self._look_for_leftovers = False
        hold = None
        if not self.settings.write:
            hold = "serve runs with --no-write, so it deletes nothing"
        elif self.elector is None:
            hold = ("serve runs without leader election, so it may not be the deployment "
                    "that made them, and deletes none")
        index = self.analysis.builder.index
        triggers = [obj for key in self._heartbeat_keys for obj in index.of_kind(key)]
        if not await self.leftovers.remove(triggers, hold=hold):
            self._look_for_leftovers = True  # try again after the next change


def outage_report(report: MeshReport, reason: str) -> MeshReport:
    """What can be said while the cluster cannot be read: nothing is known to be healthy."""
    finding = Finding.model_construct(
        severity=Severity.ERROR, health=Health.UNKNOWN,
        object=ObjectRef(api_version="v1", kind="APIServer", namespace=None, name=None),
        reason=reasons.CLUSTER_UNREACHABLE, message=reason, root_cause=True, caused_by=None,
    )
    applications = [
        ApplicationReport.model_construct(
            name=app.name, health=Health.UNKNOWN, state=app.state, findings=[],
            namespaces=[
                NamespaceReport.model_construct(
                    name=ns.name, health=Health.UNKNOWN, state=ns.state, findings=[])
                for ns in app.namespaces
            ],
        )
        for app in report.applications
    ]
    return MeshReport.model_construct(
        healthy=False, health=Health.UNKNOWN,
        system=SystemReport.model_construct(health=Health.UNKNOWN, findings=[finding]),
        applications=applications, source=report.source,
    )

