"""Notifications of health transitions: `serve --notify-url URL` / `--notify-secret NS/NAME`.

The leader posts every health transition of an Application or a flow as JSON to each target
(a webhook URL), with a Slack-compatible `text` field, so a Slack or Mattermost incoming
webhook, a Teams workflow or any JSON receiver takes it as it is:

    {"text": "eventmesh-health: Application commerce-mock is Unhealthy (was Healthy); root
              cause: KafkaChannel kyma-integration/commerce-mock: TopicFailed — ... <link>",
     "subject": {"kind": "Application", "application": "commerce-mock"},
     "health": "Unhealthy", "previous": "Healthy",
     "rootCause": {...the finding...}, "rootCauses": 1,
     "link": "<--notify-link-base>/api/v1/applications/commerce-mock",
     "time": "2026-01-01T10:00:00Z", "changes": 1}

- **Which transitions**: a subject's first health after this replica became leader is the
  baseline, not a transition (a restart or a leader change does not re-announce the whole
  mesh: the alerts carry what is broken *now*); nothing is observed while the cluster is
  unreachable (every health is Unknown then), so an outage is not announced as a storm of
  transitions and back.
- **Rate limit per subject**: at most one notification per `min_interval` (1 min) per
  Application or flow. Transitions within it are coalesced: when it is over, the newest
  health is sent if it differs from the last one sent, with `changes` counting the
  transitions it stands for; the others are counted (`eventmesh_notifications_coalesced_total`).
- **Delivery**: per target, in order, by a worker of its own (a slow target delays no other).
  A connection error, a timeout, 408, 429 or 5xx is retried with exponential backoff and full
  jitter (1 s doubling, at most 30 s, `max_attempts` 5 in all); another 4xx is final. A
  notification given up on is counted (`eventmesh_notifications_total{outcome="failed"}`)
  and logged as a warning naming the target and the subject, so nothing is lost silently;
  a full queue (1000 per target) drops the newest, counted and logged likewise.
- **Secrecy**: the URLs may hold tokens (a Slack webhook is one). They are never printed or
  logged: a target is named by its position (`url-1`) or by its key in the Secret
  (`secret:<key>`), and errors are logged by type and status, never by message (an HTTP
  library's message may quote the URL). `--notify-secret NS/NAME` reads one URL per data key,
  re-read every minute (a rotated URL takes effect without a restart).
- **Opt-out**: an Application, or a flow's root object (Broker, Channel, source), annotated
  `eventmesh-health.kyma-project.io/notify: "false"` is never notified about.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from eventmesh_health.model import ApplicationReport, Finding, FlowReport, Health, MeshReport
from eventmesh_health.serve.metrics import flow_root_causes
from eventmesh_health.serve.writer import GROUP, root_cause_summary, root_causes

__all__ = [
    "NOTIFY_ANNOTATION",
    "Notification",
    "Notifier",
    "NotifyMetrics",
    "NotifySettings",
    "Target",
    "opted_out",
]

log = logging.getLogger("eventmesh_health.notify")

NOTIFY_ANNOTATION = f"{GROUP}/notify"
DEFAULT_LINK_BASE = "http://eventmesh-health.kyma-system.svc:8080"
QUEUE_LIMIT = 1000
TEXT_LIMIT = 3000  # characters; Slack shows up to 40 000, a message this long is unread
_RETRIED = frozenset({408, 429})


@dataclass(frozen=True)
class NotifySettings:
    """What `--notify-*` says. `urls` never appear in a repr (they may hold tokens)."""

    urls: tuple[str, ...] = field(default=(), repr=False)
    # (namespace, name) of a Secret whose every data value is one URL
    secret: tuple[str, str] | None = None
    link_base: str = DEFAULT_LINK_BASE
    min_interval: timedelta = timedelta(minutes=1)
    max_attempts: int = 5
    backoff_initial: float = 1.0
    backoff_max: float = 30.0
    timeout: float = 10.0
    secret_reload: timedelta = timedelta(minutes=1)

    def __post_init__(self) -> None:
        if not self.urls and self.secret is None:
            raise ValueError("notifications need --notify-url or --notify-secret")
        for url in self.urls:
            check_url(url, "a --notify-url")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")


def check_url(url: str, what: str) -> None:
    """An http(s) URL with a host, or ValueError (which never quotes the URL)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ValueError(f"{what} is not a URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{what} must be an http or https URL with a host")


@dataclass(frozen=True)
class Target:
    label: str  # what logs and metrics call it: url-1, secret:<key>
    url: str = field(repr=False)


@dataclass(frozen=True)
class Notification:
    key: tuple[str, ...]  # the subject: ("application", name) or ("flow", flow, ns, kind, name)
    payload: dict[str, Any]

    @property
    def subject(self) -> str:
        return "/".join(self.key[1:])


def opted_out(obj: Mapping[str, Any] | None) -> bool:
    """Whether an object says `eventmesh-health.kyma-project.io/notify: "false"`."""
    if obj is None:
        return False
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    return str(annotations.get(NOTIFY_ANNOTATION, "")).strip().lower() == "false"


# --- what is posted (pure) ---------------------------------------------------------------


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _finding(finding: Finding | None) -> dict[str, Any] | None:
    if finding is None:
        return None
    return finding.model_dump(mode="json", by_alias=True, exclude_none=True)


def payload(*, subject: dict[str, str], title: str, health: Health, previous: Health | None,
            causes: list[Finding], link: str, now: datetime, changes: int) -> dict[str, Any]:
    text = f"eventmesh-health: {title} is {health.value}"
    if previous is not None:
        text += f" (was {previous.value})"
    if causes:
        text += f"; root cause: {root_cause_summary(causes[0])}"
        if causes[0].message:
            text += f" — {causes[0].message}"
        if len(causes) > 1:
            text += f" (and {len(causes) - 1} more)"
    if changes > 1:
        text += f" [{changes} changes since the last notification]"
    if len(text) > TEXT_LIMIT:
        text = text[: TEXT_LIMIT - 3] + "..."
    text += f" <{link}>"
    return {
        "text": text, "subject": subject, "health": health.value,
        "previous": previous.value if previous is not None else None,
        "rootCause": _finding(causes[0] if causes else None), "rootCauses": len(causes),
        "link": link, "time": _rfc3339(now), "changes": changes,
    }


def _subjects(report: MeshReport) -> Iterator[
        tuple[tuple[str, ...], ApplicationReport | FlowReport]]:
    for app in report.applications:
        yield ("application", app.name), app
    for flow in report.flows:
        yield ("flow", flow.flow, flow.namespace, flow.kind, flow.name), flow


# --- metrics ------------------------------------------------------------------------------


class NotifyMetrics(Collector):
    """| metric | type | labels |
    |---|---|---|
    | `eventmesh_notifications_total` | counter | target, outcome (delivered, failed, dropped) |
    | `eventmesh_notification_retries_total` | counter | target |
    | `eventmesh_notifications_coalesced_total` | counter | |
    | `eventmesh_notification_targets` | gauge | |

    `target` is `url-<n>` or `secret:<key>`: never the URL."""

    OUTCOMES = ("delivered", "failed", "dropped")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.outcomes: dict[tuple[str, str], int] = {}
        self.retries: dict[str, int] = {}
        self.coalesced = 0
        self.targets: list[str] = []

    def add(self, target: str, outcome: str) -> None:
        with self._lock:
            self.outcomes[(target, outcome)] = self.outcomes.get((target, outcome), 0) + 1

    def retry(self, target: str) -> None:
        with self._lock:
            self.retries[target] = self.retries.get(target, 0) + 1

    def set_targets(self, labels: Iterable[str]) -> None:
        with self._lock:
            self.targets = list(labels)
            for label in self.targets:  # every outcome from 0
                for outcome in self.OUTCOMES:
                    self.outcomes.setdefault((label, outcome), 0)
                self.retries.setdefault(label, 0)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            outcomes = sorted(self.outcomes.items())
            retries = sorted(self.retries.items())
            coalesced, targets = self.coalesced, len(self.targets)
        family = CounterMetricFamily(
            "eventmesh_notifications", "Transition notifications per target, by outcome "
            "(delivered; failed: given up after the retries; dropped: the queue was full).",
            labels=["target", "outcome"])
        for (target, outcome), n in outcomes:
            family.add_metric([target, outcome], float(n))
        yield family
        family = CounterMetricFamily(
            "eventmesh_notification_retries", "Notification posts retried, per target.",
            labels=["target"])
        for target, n in retries:
            family.add_metric([target], float(n))
        yield family
        yield CounterMetricFamily(
            "eventmesh_notifications_coalesced",
            "Transitions not notified on their own because of the per-subject rate limit "
            "(merged into a later notification, or undone before it was due).",
            value=float(coalesced))
        yield GaugeMetricFamily(
            "eventmesh_notification_targets", "Notification targets configured now.",
            value=float(targets))


# --- the notifier -------------------------------------------------------------------------


@dataclass
class _Subject:
    sent: Health  # the health last notified (or the baseline)
    sent_at: float | None = None  # monotonic time of the last notification
    current: Health | None = None  # newest health, while a notification is held back
    changes: int = 0  # transitions since the last notification
    pending: dict[str, Any] | None = None  # what to send when the interval is over


class Notifier:
    """Observes reports (`observe`), rate-limits per subject, delivers (`run`)."""

    def __init__(
        self, settings: NotifySettings,
        read_secret: Callable[[], Awaitable[Mapping[str, str]]] | None = None,
        *, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._read_secret = read_secret
        self._clock = clock
        self.metrics = NotifyMetrics()
        self._fixed = [Target(f"url-{i}", url) for i, url in enumerate(settings.urls, 1)]
        self._from_secret: list[Target] = []
        self._subjects: dict[tuple[str, ...], _Subject] = {}
        self._queues: dict[str, asyncio.Queue[Notification]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._urls: dict[str, str] = {}
        self._wake = asyncio.Event()
        self.metrics.set_targets(t.label for t in self._fixed)

    # --- observing (sync, from the event loop) -----------------------------------------

    def forget(self) -> None:
        """Not (or no longer) leading: the next report seen is a new baseline."""
        self._subjects.clear()

    def observe(self, report: MeshReport, now: datetime,
                skip: Callable[[tuple[str, ...]], bool] = lambda key: False) -> None:
        """Compare `report` with what was notified; queue or hold back transitions."""
        seen = set()
        mono = self._clock()
        for key, subject in _subjects(report):
            seen.add(key)
            known = self._subjects.get(key)
            if known is None:
                self._subjects[key] = _Subject(sent=subject.health)
                continue
            current = known.current if known.current is not None else known.sent
            if subject.health == current:
                continue
            if skip(key):
                known.sent, known.current, known.changes, known.pending = \
                    subject.health, None, 0, None
                continue
            known.changes += 1
            known.current = subject.health
            known.pending = self._payload(key, subject, report, known.sent, now)
            if known.sent_at is None or mono - known.sent_at >= self._interval:
                self._release(key, known, mono)
            else:
                self._wake.set()  # the scheduler sends it when the interval is over
        for gone in set(self._subjects) - seen:
            del self._subjects[gone]

    @property
    def _interval(self) -> float:
        return self.settings.min_interval.total_seconds()

    def _payload(self, key: tuple[str, ...], subject: ApplicationReport | FlowReport,
                 report: MeshReport, previous: Health, now: datetime) -> dict[str, Any]:
        """The arguments of `payload` but `changes` (known when it is sent)."""
        base = self.settings.link_base.rstrip("/")
        if isinstance(subject, ApplicationReport):
            return {
                "subject": {"kind": "Application", "application": subject.name},
                "title": f"Application {subject.name}", "health": subject.health,
                "previous": previous, "causes": root_causes(subject, report),
                "link": f"{base}/api/v1/applications/{quote(subject.name, safe='')}",
                "now": now}
        path = "/".join(quote(p, safe="") for p in (subject.namespace, subject.kind,
                                                    subject.name))
        return {
            "subject": {"kind": "Flow", "flow": subject.flow, "namespace": subject.namespace,
                        "rootKind": subject.kind, "name": subject.name},
            "title": f"{subject.kind} {subject.namespace}/{subject.name} ({subject.flow} flow)",
            "health": subject.health, "previous": previous,
            "causes": flow_root_causes(subject, report),
            "link": f"{base}/api/v1/flows/{path}", "now": now}

    def _release(self, key: tuple[str, ...], known: _Subject, mono: float) -> None:
        """Send what `known` holds (if its health still differs from the last sent)."""
        pending, changes = known.pending, known.changes
        known.pending, known.changes = None, 0
        if pending is None or known.current is None:
            return
        if known.current == known.sent:  # flapped back: nothing to tell
            with self.metrics._lock:
                self.metrics.coalesced += changes
            known.current = None
            return
        with self.metrics._lock:
            self.metrics.coalesced += changes - 1
        known.sent, known.current, known.sent_at = known.current, None, mono
        self._enqueue(Notification(key, payload(**pending, changes=changes)))

    def _due(self) -> float | None:
        """Release what is due; seconds until the next held notification is, or None."""
        mono = self._clock()
        wait: float | None = None
        for key, known in list(self._subjects.items()):
            if known.pending is None:
                continue
            left = (known.sent_at or 0.0) + self._interval - mono
            if left <= 0:
                self._release(key, known, mono)
            else:
                wait = left if wait is None else min(wait, left)
        return wait

    # --- delivering --------------------------------------------------------------------

    def targets(self) -> list[Target]:
        return [*self._fixed, *self._from_secret]

    def _queue(self, label: str) -> asyncio.Queue[Notification]:
        queue = self._queues.get(label)
        if queue is None:
            queue = self._queues[label] = asyncio.Queue(QUEUE_LIMIT)
        return queue

    def _enqueue(self, note: Notification) -> None:
        targets = self.targets()
        if not targets:
            self.metrics.add("none", "dropped")
            log.warning("notification dropped: no target yet (the notification Secret was "
                        "not read): %s is %s", note.subject, note.payload["health"])
        for target in targets:
            queue = self._queue(target.label)  # its worker may start later: it waits there
            if queue.full():
                self.metrics.add(target.label, "dropped")
                log.warning("notification to %s dropped: %d waiting (%s is %s)",
                            target.label, queue.qsize(), note.subject, note.payload["health"])
                continue
            queue.put_nowait(note)

    async def run(self) -> None:
        """Until cancelled: the rate-limit scheduler, the Secret re-reads, one worker per
        target."""
        self._sync_workers()
        tasks = [asyncio.create_task(self._schedule(), name="notify-schedule")]
        if self._read_secret is not None:
            tasks.append(asyncio.create_task(self._reload(), name="notify-secret"))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in [*tasks, *self._workers.values()]:
                task.cancel()
            await asyncio.gather(*tasks, *self._workers.values(), return_exceptions=True)
            self._workers.clear()

    def _sync_workers(self) -> None:
        labels = {t.label: t.url for t in self.targets()}
        for label in list(self._workers):
            if label not in labels:
                self._workers.pop(label).cancel()
                self._queues.pop(label, None)
        for label, url in labels.items():
            self._urls[label] = url
            if label not in self._workers:
                self._workers[label] = asyncio.create_task(
                    self._deliver(label, self._queue(label)), name=f"notify-{label}")
        self.metrics.set_targets(labels)

    async def _schedule(self) -> None:
        while True:
            wait = self._due()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait)

    async def _reload(self) -> None:
        assert self._read_secret is not None
        failing = False
        while True:
            try:
                data = await self._read_secret()
            except Exception as err:  # the API server's answer: keep the old targets
                if not failing:
                    log.warning("cannot read the notification Secret (%s); keeping %d "
                                "target(s) from it", type(err).__name__, len(self._from_secret))
                failing = True
            else:
                failing = False
                self._from_secret = _secret_targets(data)
                self._sync_workers()
            await asyncio.sleep(self.settings.secret_reload.total_seconds())

    async def _deliver(self, label: str, queue: asyncio.Queue[Notification]) -> None:
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout)
        async with aiohttp.ClientSession(timeout=timeout, trust_env=False) as session:
            while True:
                note = await queue.get()
                try:
                    await self._post(session, label, note)
                finally:
                    queue.task_done()

    async def _post(self, session: aiohttp.ClientSession, label: str,
                    note: Notification) -> None:
        s = self.settings
        problem = ""
        for attempt in range(1, s.max_attempts + 1):
            url = self._urls.get(label)
            if url is None:
                problem = "the target was removed"
                break
            try:
                async with session.post(url, json=note.payload) as answer:
                    await answer.read()
                    status = answer.status
            except (aiohttp.ClientError, TimeoutError, ValueError) as err:
                problem = type(err).__name__  # never str(err): it may quote the URL
            else:
                if 200 <= status < 300:
                    self.metrics.add(label, "delivered")
                    return
                problem = f"HTTP {status}"
                if 400 <= status < 500 and status not in _RETRIED:
                    break  # the receiver refuses it: trying again changes nothing
            if attempt < s.max_attempts:
                self.metrics.retry(label)
                ceiling = min(s.backoff_max, s.backoff_initial * 2 ** (attempt - 1))
                await asyncio.sleep(random.uniform(ceiling / 2, ceiling))
        self.metrics.add(label, "failed")
        log.warning("notification to %s failed after %d attempt(s) (%s): %s is %s (was %s)",
                    label, attempt, problem, note.subject, note.payload["health"],
                    note.payload["previous"])

    async def drain(self) -> None:
        """Wait until every queued notification was delivered or given up (tests)."""
        for queue in list(self._queues.values()):
            await queue.join()


def _secret_targets(data: Mapping[str, str]) -> list[Target]:
    targets = []
    for key in sorted(data):
        try:
            url = base64.b64decode(data[key], validate=True).decode().strip()
            check_url(url, f"the notification Secret's key {key}")
        except (binascii.Error, UnicodeDecodeError, ValueError) as err:
            reason = str(err) if isinstance(err, ValueError) and "Secret's key" in str(err) \
                else f"the notification Secret's key {key} is not base64 text"
            log.warning("%s; left out", reason)
            continue
        targets.append(Target(f"secret:{key}", url))
    return targets
