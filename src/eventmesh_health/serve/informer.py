"""The watch-based cache of `serve`: every kind of the profile, kept current from the API server.

For each kind, cluster-wide: a paginated LIST (`limit`/`continue`), then a WATCH from the
list's resourceVersion with `allowWatchBookmarks=true`. When the stream ends (its server-side
`timeoutSeconds`, a dropped connection, an API server restart) the watch is resumed from the
last resourceVersion seen, events and bookmarks alike. A `410 Gone` (as an HTTP answer or as
a watch ERROR event) or any other watch ERROR event makes it LIST again, and the differences
against the cache are delivered as changes (added, modified, deleted), so nothing is missed
across a disconnect. Failures are retried with exponential backoff and full jitter (0.2 s
doubling up to `backoff_max`), reset once a watch works again; `run()` never raises for them.

Kinds whose CRD is not installed (404 on LIST) are recorded as unavailable, with the message
`check` gives (`sources.cluster.not_served_message`), and retried every `unavailable_retry`
seconds. The CustomResourceDefinitions themselves are listed and watched too (not delivered,
not in `objects()`): a CRD installed after start wakes its kind up at once, and a CRD
removed sends its kind back to unavailable, its objects dropped (delivered as DELETED).

Why raw GETs on lightkube's HTTP session, not `lightkube.AsyncClient.watch()` (lightkube 1.0):
- `watch()` cannot send `allowWatchBookmarks`, so a quiet kind's resourceVersion never
  advances and every API server restart would cost a full re-list;
- on `410 Gone` it silently re-watches without a resourceVersion: the server then replays the
  existing objects as ADDED, but objects deleted in the gap never produce a DELETED and would
  stay in a cache forever. An informer has to LIST again and diff instead;
- a watch ERROR event raises out of its iterator, losing the resourceVersion reached;
- every item goes through a model and back (`to_dict()`), twice the work of `json.loads`.
So LIST and WATCH are plain GETs through the `httpx2.AsyncClient` the lightkube client built
from the kubeconfig (`client._client._client`, as `sources.cluster` does for discovery): same
server, TLS, credentials (client certificates, tokens, exec plugins, token file rotation),
proxy and transport as every other call of the client, and no second configuration path. The
attribute is private, so the constructor checks its type and fails loudly if lightkube moves it.

What an answer means (per kind; `disconnected_since` is the oldest failing one):
- 404, or 503 from an aggregated API, for a kind never listed or whose CRD is gone:
  unavailable (it counts as synced). For a kind listed before whose CRD still serves it (the
  API server is starting up and has not installed its handler yet): a failure, retried.
- 403 on LIST: unavailable, with the RBAC message (so the sync completes); on WATCH: the kind
  is listed every `unavailable_retry` seconds instead. Neither counts as disconnected.
- Anything else (unreachable, timeouts, 401, 5xx, 429 after its Retry-After, garbage):
  failing since the first such answer, retried with backoff; objects are kept meanwhile.

Objects are plain dicts exactly like a dump's (`apiVersion` and `kind` set, no
`metadata.managedFields`), keyed by (kind key, namespace, name). Changes are held until every
kind has been listed once (or found unavailable), then delivered as one batch of ADDED; after
that, changes arriving within `coalesce` seconds of each other make one `on_changes` call.
With `initial_changes=False` the objects of the first lists make no `Change` at all (the first
batch holds only what changed since): for a consumer that reads `snapshot()` on its first
batch, a `Change` per object of a big cluster held until then is memory for nothing.
An empty batch means no object changed but the sync completed or a kind's availability did
(see `snapshot().unavailable`). Everything runs in one asyncio event loop: `objects()` and
`snapshot()` are consistent.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import httpx2
import lightkube

from eventmesh_health.analysis.namemap import NameMap
from eventmesh_health.serve.compact import Compactor
from eventmesh_health.snapshot import Snapshot
from eventmesh_health.sources.cluster import (
    _BUILT_IN_GROUPS,
    _USER,
    RBAC_HINT,
    _describe,
    _NotServed,
    _plain,
    _retry_after,
    _status_error,
    _transport_reason,
    not_served_message,
)
from eventmesh_health.sources.slim import slim
from eventmesh_health.topology import Kind
from eventmesh_health.topology.core import CRD

log = logging.getLogger("eventmesh_health.informer")

ChangeType = Literal["ADDED", "MODIFIED", "DELETED"]

CHUNK_SIZE = 500
BACKOFF_INITIAL = 0.2  # seconds; doubles per failure up to backoff_max
COALESCE = 0.01  # seconds: changes this close together are one on_changes call
UNAVAILABLE_RETRY = 60.0  # seconds between LISTs of a kind the server does not serve
WATCH_SECONDS = (300, 600)  # server-side timeoutSeconds, random in this range (as client-go)
READ_MARGIN = 30.0  # the client gives up on a silent watch this long after timeoutSeconds
STABLE_WATCH = 5.0  # a watch that ran this long counts as a success (resets the backoff)
MAX_RETRY_AFTER = 30.0
SERVE_RBAC_HINT = "see deploy/rbac/clusterrole-serve.yaml for the ClusterRole serve needs"

_ObjKey = tuple[str, str]  # (namespace or "", name) within one kind


@dataclass(frozen=True, slots=True)  # (one per object of the first sync: no __dict__ each)
class Change:
    """One object added, modified or deleted."""

    kind: str  # Kind.key, e.g. "Trigger.eventing.knative.dev"
    type: ChangeType
    obj: dict[str, Any]  # the new object (the last known one for DELETED)


@dataclass
class KindStats:
    """Counters of one kind's list/watch loop (for metrics and tests)."""

    lists: int = 0  # successful LISTs (all pages)
    relists: int = 0  # ... of which after the first (410, watch ERROR, CRD change, recovery)
    watch_restarts: int = 0  # watches resumed (answered 200) from a remembered resourceVersion
    events: int = 0  # ADDED / MODIFIED / DELETED events received
    bookmarks: int = 0  # BOOKMARK events received


class Backoff:
    """Exponential backoff with full jitter: uniform(0, min(maximum, initial * 2**failures))."""

    def __init__(
        self,
        initial: float = BACKOFF_INITIAL,
        maximum: float = 30.0,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.initial = initial
        self.maximum = maximum
        self._failures = 0
        self._rng = rng

    def next(self) -> float:
        ceiling = min(self.maximum, self.initial * 2.0 ** min(self._failures, 64))
        self._failures += 1
        return ceiling * self._rng()

    def reset(self) -> None:
        self._failures = 0


# --- outcomes of one request ---------------------------------------------------------------


class _Failed(Exception):
    """Unreachable, timed out, 5xx, 401, 429, not a Kubernetes answer: back off and retry."""

    def __init__(self, message: str, retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class _Gone(Exception):
    """410: the resourceVersion (or a continue token) is too old: LIST again."""


class _WatchError(Exception):
    """A watch ERROR event other than 410: LIST again after a backoff."""


class _Forbidden(Exception):
    """403: RBAC does not allow the verb on the resource."""

    def __init__(self, message: str, verb: str) -> None:
        super().__init__(message)
        self.verb = verb


@dataclass(eq=False)
class _KindState:
    kind: Kind
    public: bool  # one of the kinds asked for (the CRD watch may be ours alone)
    stats: KindStats
    objects: NameMap = field(default_factory=lambda: NameMap(_namespace))
    resource_version: str | None = None  # None: LIST next
    listed: bool = False  # `objects` is a complete list, kept current since
    ever_listed: bool = False
    fresh_list: bool = False  # the next watch starts from a LIST's resourceVersion
    unavailable: str | None = None
    failing_since: datetime | None = None
    error: str | None = None  # the current failure's message (logged once)
    progress: bool = False  # a watch worked since the last failure: reset the backoff
    kick: asyncio.Event = field(default_factory=asyncio.Event)  # retry now (CRD changed)
    attempted: asyncio.Event = field(default_factory=asyncio.Event)  # a LIST was tried
    cycle: asyncio.Task[float] | None = None


class ClusterCache:
    """LIST + WATCH of every kind given, kept as plain dicts; see the module docstring.

    A ClusterCache belongs to the event loop `run()` runs in.
    """

    def __init__(
        self,
        client: lightkube.AsyncClient,
        kinds: Sequence[Kind],
        *,
        on_changes: Callable[[list[Change]], Awaitable[None]] | None = None,
        backoff_max: float = 30.0,
        chunk_size: int = CHUNK_SIZE,
        unavailable_retry: float = UNAVAILABLE_RETRY,
        coalesce: float = COALESCE,
        initial_changes: bool = True,
    ) -> None:
        http = client._client._client  # lightkube's httpx2 session: see the module docstring
        if not isinstance(http, httpx2.AsyncClient):  # pragma: no cover - lightkube changed
            raise TypeError(f"lightkube.AsyncClient without an httpx2 session: {type(http)}")
        self._http: httpx2.AsyncClient = http
        self._server = str(client.config.cluster.server)
        self._on_changes = on_changes
        self._backoff_max = backoff_max
        self._chunk_size = chunk_size
        self._unavailable_retry = unavailable_retry
        self._coalesce = coalesce
        self._initial_changes = initial_changes
        self._states: dict[str, _KindState] = {}
        self._compactor = Compactor()  # what the cached objects share
        for kind in kinds:
            if kind.key not in self._states:
                self._states[kind.key] = _KindState(kind, True, KindStats())
        # Kinds served by a CRD, by the CRD's name (`plural.group`).
        self._by_crd: dict[str, list[_KindState]] = {}
        for state in self._states.values():
            if _is_custom(state.kind):
                self._by_crd.setdefault(state.kind.resource, []).append(state)
        self._crd: _KindState | None = self._states.get(CRD.key)
        if self._crd is None and self._by_crd:
            self._crd = _KindState(CRD, False, KindStats())
        self.stats: dict[str, KindStats] = {key: s.stats for key, s in self._all_states()}
        # The most recent error message (kept after recovery, for diagnostics).
        self.last_error: str | None = None
        self._synced = False
        self._synced_event = asyncio.Event()
        self._pending: list[Change] = []
        self._deliver_now = asyncio.Event()
        self._was_disconnected = False
        self._running = False

    # --- public surface ----------------------------------------------------------------------

    @property
    def synced(self) -> bool:
        """Every kind has completed its first LIST (or is known to be unavailable)."""
        return self._synced

    async def wait_synced(self, timeout: float) -> bool:
        """True once synced; False if that did not happen within `timeout` seconds."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._synced_event.wait(), timeout)
        return self._synced

    @property
    def disconnected_since(self) -> datetime | None:
        """When the oldest currently failing LIST/WATCH started failing; None when all work.
        A kind the server does not serve (404) or may not be read (403) is not failing."""
        failing = [s.failing_since for _, s in self._all_states() if s.failing_since]
        return min(failing) if failing else None

    def objects(self) -> list[dict[str, Any]]:
        """All current objects (shared, not copied: do not modify them)."""
        return [obj for s in self._states.values() if s.public for obj in s.objects.values()]

    def snapshot(self, now: datetime) -> Snapshot:
        """The current objects; `collected`: kinds listed and watched; `unavailable`: why not."""
        collected, unavailable = self.coverage()
        return Snapshot(objects=self.objects(), taken_at=now, collected=collected,
                        unavailable=unavailable)

    def coverage(self) -> tuple[frozenset[str], dict[str, str]]:
        """`snapshot()`'s `collected` and `unavailable` alone (without a list of every object,
        which a consumer applying changes does not need)."""
        public = [s for s in self._states.values() if s.public]
        return (frozenset(s.kind.key for s in public if s.listed),
                {s.kind.key: s.unavailable for s in public if s.unavailable is not None})

    async def run(self) -> None:
        """List and watch until cancelled. API errors are logged and retried, never raised."""
        if self._running:
            raise RuntimeError("ClusterCache.run() is already running")
        self._running = True
        try:
            async with asyncio.TaskGroup() as tasks:
                if self._on_changes is not None:
                    tasks.create_task(self._deliver(self._on_changes), name="informer-deliver")
                if self._crd is not None:
                    # CRDs first: the messages for missing kinds name what the CRD list says.
                    tasks.create_task(self._run_kind(self._crd), name=f"informer-{CRD.key}")
                    await self._crd.attempted.wait()
                for key, state in self._states.items():
                    if state is not self._crd:
                        tasks.create_task(self._run_kind(state), name=f"informer-{key}")
        finally:
            self._running = False

    # --- the loop of one kind ---------------------------------------------------------------

    def _all_states(self) -> list[tuple[str, _KindState]]:
        states = list(self._states.items())
        if self._crd is not None and not self._crd.public:
            states.append((CRD.key, self._crd))
        return states

    async def _run_kind(self, state: _KindState) -> None:
        backoff = Backoff(maximum=self._backoff_max)
        while True:
            state.kick.clear()
            cycle = state.cycle = asyncio.create_task(self._cycle(state, backoff))
            try:
                delay = await cycle
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise
                # Interrupted because the kind's CRD went away: list again (and find out).
                state.resource_version = None
                delay = 0.0
            finally:
                state.cycle = None
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(state.kick.wait(), delay)

    async def _cycle(self, state: _KindState, backoff: Backoff) -> float:
        """A LIST when needed, then one WATCH; returns how long to wait before the next."""
        kind = state.kind
        try:
            if state.resource_version is None:
                try:
                    await self._list(state)
                finally:
                    state.attempted.set()
            await self._watch(state)
            return self._delay(state, backoff, immediate=True)  # ended normally: resume
        except _Gone as err:
            log.info("%s: resourceVersion %s expired (%s), listing again",
                     kind.key, state.resource_version, _one_line(str(err)) or "410 Gone")
            state.resource_version = None
            return self._delay(state, backoff, immediate=True)
        except _NotServed as err:
            if state.listed and (err.code == 503 or self._crd_serves(kind)):
                # Served a moment ago, and its CRD (if any) says it still is: the API server
                # is (re)starting. Keep the objects and retry; do not report the kind gone.
                self._failed(state, f"the API server at {self._server} answered {err.code} "
                                    f"for {kind.resource}, which it served before")
                return self._delay(state, backoff)
            self._set_unavailable(state, self._not_served(kind, err.code))
            if self._crd_serves(kind):
                return backoff.next()  # the CRD is there: not yet served, a moment only
            return self._unavailable_retry
        except _Forbidden as err:
            self._note_error(str(err))
            if err.verb == "watch":  # listing works: poll by listing now and then
                if state.error != str(err):
                    log.warning("%s: %s; listing every %g s instead",
                                kind.key, err, self._unavailable_retry)
                state.error = str(err)
                state.resource_version = None
                self._answered(state)
            else:
                self._set_unavailable(state, str(err), warn=True)
            return self._unavailable_retry
        except _WatchError as err:
            state.resource_version = None
            self._failed(state, str(err))
            return self._delay(state, backoff)
        except _Failed as err:
            self._failed(state, str(err))
            return self._delay(state, backoff, at_least=err.retry_after)
        except Exception as err:  # a bug or an answer nobody expected: log, back off, go on
            log.warning("%s: unexpected error", kind.key, exc_info=True)
            self._failed(state, f"unexpected error while reading {kind.resource}: {err!r}")
            return self._delay(state, backoff)

    def _delay(
        self, state: _KindState, backoff: Backoff, *, immediate: bool = False,
        at_least: float = 0.0,
    ) -> float:
        if state.progress:  # the last watch worked: this is a fresh start
            state.progress = False
            backoff.reset()
            if immediate:
                return 0.0
        return max(backoff.next(), at_least)

    # --- LIST -------------------------------------------------------------------------------

    async def _list(self, state: _KindState) -> None:
        kind = state.kind
        params = {"limit": str(self._chunk_size)}
        # Slimmed page by page: the whole list of a big kind as the API server sends it
        # (managedFields, Pod specs) would be most of serve's peak memory.
        objects = NameMap(_namespace)
        while True:
            body = await self._get_list_page(kind, params)
            page = body.get("items")
            if isinstance(page, list):
                for item in page:
                    if isinstance(item, dict):
                        obj = self._kept(state, item)
                        objects.put(*_key(obj), obj)
            metadata = body.get("metadata")
            if not isinstance(metadata, dict):
                metadata = {}
            token = metadata.get("continue")
            if not token:
                break
            params["continue"] = str(token)
        version = metadata.get("resourceVersion")
        if not version:
            raise _Failed(f"the list of {kind.resource} from {self._server} has no "
                          "resourceVersion")
        if _is_custom(kind) and self._crd_known_absent(kind):
            raise _NotServed(404)  # a CRD being removed can still answer for a moment
        self._replace(state, objects)
        state.resource_version = str(version)
        state.fresh_list = True
        state.stats.lists += 1
        if state.ever_listed:
            state.stats.relists += 1
        else:
            log.debug("%s: listed %d objects", kind.key, len(objects))
        state.listed = state.ever_listed = True
        if state.unavailable is not None:
            log.info("%s: served again (%d objects)", kind.key, len(objects))
            state.unavailable = None
            self._notify()
        self._answered(state)
        self._check_synced()

    async def _get_list_page(self, kind: Kind, params: dict[str, str]) -> dict[str, Any]:
        try:
            response = await self._http.get(_path(kind), params=params)
        except httpx2.TimeoutException:
            raise _Failed(f"the API server at {self._server} did not answer within the request "
                          f"timeout while listing {kind.resource}") from None
        except httpx2.TransportError as err:
            raise _Failed(f"cannot reach the API server at {self._server}: "
                          f"{_transport_reason(err)}") from None
        except (lightkube.ConfigError, OSError) as err:  # e.g. an exec credential plugin failed
            raise _Failed(f"credentials for {self._server}: {_describe(err)}") from None
        if response.status_code != 200:
            raise self._http_error(kind, "list", response)
        try:
            body = response.json()
        except ValueError as err:
            raise _Failed(f"unexpected answer from {self._server} while listing "
                          f"{kind.resource}: {_describe(err)}") from None
        if not isinstance(body, dict):
            raise _Failed(f"unexpected answer from {self._server} while listing "
                          f"{kind.resource}: not a list")
        return body

    # --- WATCH ------------------------------------------------------------------------------

    async def _watch(self, state: _KindState) -> None:
        kind = state.kind
        seconds = random.randint(*WATCH_SECONDS)
        params = {
            "watch": "true",
            "allowWatchBookmarks": "true",
            "resourceVersion": state.resource_version or "",
            "timeoutSeconds": str(seconds),
        }
        default = self._http.timeout
        timeout = httpx2.Timeout(
            connect=default.connect, read=seconds + READ_MARGIN, write=default.write,
            pool=default.pool,
        )
        request = self._http.build_request("GET", _path(kind), params=params, timeout=timeout)
        started = time.monotonic()
        try:
            response = await self._http.send(request, stream=True)
        except httpx2.TimeoutException:
            raise _Failed(f"the API server at {self._server} did not answer within the request "
                          f"timeout while watching {kind.resource}") from None
        except httpx2.TransportError as err:
            raise _Failed(f"cannot reach the API server at {self._server}: "
                          f"{_transport_reason(err)}") from None
        except (lightkube.ConfigError, OSError) as err:
            raise _Failed(f"credentials for {self._server}: {_describe(err)}") from None
        try:
            if response.status_code != 200:
                await response.aread()
                raise self._http_error(kind, "watch", response)
            if not state.fresh_list:
                state.stats.watch_restarts += 1
            state.fresh_list = False
            self._answered(state)
            async for line in response.aiter_lines():
                if line.strip():
                    self._on_event(state, line)
        except httpx2.TimeoutException:
            raise _Failed(f"the watch of {kind.resource} at {self._server} went silent for "
                          f"{seconds + READ_MARGIN:.0f} s") from None
        except httpx2.TransportError as err:
            raise _Failed(f"the watch of {kind.resource} at {self._server} broke off: "
                          f"{_transport_reason(err)}") from None
        finally:
            await response.aclose()
            if time.monotonic() - started >= STABLE_WATCH:
                state.progress = True

    def _on_event(self, state: _KindState, line: str) -> None:
        kind = state.kind
        try:
            event = json.loads(line)
        except ValueError as err:
            raise _Failed(f"unexpected answer from {self._server} while watching "
                          f"{kind.resource}: {_describe(err)}") from None
        obj = event.get("object") if isinstance(event, dict) else None
        if not isinstance(obj, dict):
            raise _Failed(f"unexpected answer from {self._server} while watching "
                          f"{kind.resource}: an event without an object")
        event_type = event.get("type")
        if event_type == "ERROR":  # the object is a Status
            code, message = obj.get("code"), _one_line(str(obj.get("message") or ""))
            if code == 410:
                raise _Gone(message)
            raise _WatchError(f"the watch of {kind.resource} at {self._server} answered an "
                              f"error (HTTP {code}): {message}")
        metadata = obj.get("metadata")
        version = metadata.get("resourceVersion") if isinstance(metadata, dict) else None
        if event_type == "BOOKMARK":
            state.stats.bookmarks += 1
        elif event_type in ("ADDED", "MODIFIED", "DELETED"):
            state.stats.events += 1
            self._apply(state, event_type, self._kept(state, obj))
        else:
            log.debug("%s: ignoring a watch event of type %r", kind.key, event_type)
        if version:
            state.resource_version = str(version)
        state.progress = True

    # --- the cache --------------------------------------------------------------------------

    def _kept(self, state: _KindState, item: dict[str, Any]) -> dict[str, Any]:
        """What the cache keeps of an object: the fields the analysis reads (`Kind.fields`,
        as a dump keeps them), not a Pod's spec or a Deployment's template — most of the
        bytes of a big cluster — with its short strings, and the nested maps and lists many
        objects hold alike, kept once (`serve/compact.py`). The CRDs the cache watches for
        itself are kept whole."""
        if state is self._crd:
            return _plain(item, state.kind)
        return cached_form(item, state.kind, self._compactor)

    def _apply(self, state: _KindState, event_type: str, obj: dict[str, Any]) -> None:
        namespace, name = _key(obj)
        old = state.objects.get(namespace, name)
        if event_type == "DELETED":
            if old is None:
                return
            state.objects.pop(namespace, name)
            self._changed(state, [Change(state.kind.key, "DELETED", obj)])
            return
        if old is not None and _version(old) == _version(obj):
            return  # seen already (a resumed watch may repeat the last event)
        state.objects.put(namespace, name, obj)
        change_type: ChangeType = "ADDED" if old is None else "MODIFIED"
        self._changed(state, [Change(state.kind.key, change_type, obj)])

    def _replace(self, state: _KindState, objects: NameMap) -> None:
        """A new complete list: deliver what differs from the cache."""
        old_objects = state.objects
        state.objects = objects
        if not (state is self._crd or self._queues(state)):
            return  # (the first lists, for a consumer that reads `snapshot()`: no Changes)
        changes: list[Change] = []
        for namespace, name, obj in objects.items():
            old = old_objects.get(namespace, name)
            if old is None:
                changes.append(Change(state.kind.key, "ADDED", obj))
            elif _version(old) != _version(obj):
                changes.append(Change(state.kind.key, "MODIFIED", obj))
        for namespace, name, old in old_objects.items():
            if objects.get(namespace, name) is None:
                changes.append(Change(state.kind.key, "DELETED", old))
        if changes:
            self._changed(state, changes)

    def _changed(self, state: _KindState, changes: list[Change]) -> None:
        if state is self._crd:
            for change in changes:
                self._on_crd_change(change)
        if self._queues(state):
            self._pending.extend(changes)
            self._notify()

    def _queues(self, state: _KindState) -> bool:
        """Whether this kind's changes are queued for `on_changes` now."""
        return (state.public and self._on_changes is not None
                and (self._synced or self._initial_changes))

    def _set_unavailable(self, state: _KindState, message: str, *, warn: bool = False) -> None:
        if state is self._crd and not state.public:
            # unknown now, not deleted: the kinds keep what they have
            state.objects = NameMap(_namespace)
        elif state.objects:
            self._replace(state, NameMap(_namespace))
        state.resource_version = None
        state.listed = False
        if state.unavailable != message:
            (log.warning if warn else log.info)("%s: unavailable: %s", state.kind.key, message)
            state.unavailable = message
            self._notify()
        self._answered(state)
        self._check_synced()

    # --- CRDs -------------------------------------------------------------------------------

    def _on_crd_change(self, change: Change) -> None:
        metadata = change.obj.get("metadata")
        name = metadata.get("name") if isinstance(metadata, dict) else None
        for state in self._by_crd.get(str(name), ()):
            serves = change.type != "DELETED" and state.kind.version in _crd_versions(change.obj)
            if state.unavailable is not None:
                # Installed (or changed: the message may say more now): list again.
                log.debug("%s: CustomResourceDefinition %s %s, listing", state.kind.key, name,
                          change.type.lower())
                state.kick.set()
            elif not serves and state.ever_listed:
                log.info("%s: CustomResourceDefinition %s %s", state.kind.key, name,
                         "deleted" if change.type == "DELETED"
                         else f"no longer serves {state.kind.version}")
                state.kick.set()
                if state.cycle is not None and not state.cycle.done():
                    state.cycle.cancel()

    def _crd_object(self, kind: Kind) -> dict[str, Any] | None:
        """The kind's CRD; LookupError when the CRDs could not be listed."""
        if self._crd is None or not self._crd.listed:
            raise LookupError("CustomResourceDefinitions not listed")
        return self._crd.objects.get("", kind.resource)

    def _crd_known_absent(self, kind: Kind) -> bool:
        try:
            crd = self._crd_object(kind)
        except LookupError:
            return False
        return crd is None or kind.version not in _crd_versions(crd)

    def _crd_serves(self, kind: Kind) -> bool:
        if not _is_custom(kind):
            return False
        try:
            crd = self._crd_object(kind)
        except LookupError:
            return False
        return crd is not None and kind.version in _crd_versions(crd)

    def _not_served(self, kind: Kind, code: int) -> str:
        def served() -> list[str] | None:
            crd = self._crd_object(kind)
            return (_crd_versions(crd) or None) if crd is not None else None

        return not_served_message(kind, code, served)

    # --- errors and connection state ---------------------------------------------------------

    def _http_error(self, kind: Kind, verb: str, response: httpx2.Response) -> Exception:
        code, message = response.status_code, ""
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and body.get("kind") == "Status":
            code = int(body.get("code") or code)
            message = _one_line(str(body.get("message") or ""))
        else:
            message = _one_line(response.text[:300])
        if code == 410:
            return _Gone(message)
        if code == 429:
            return _Failed(f"the API server at {self._server} answered 429 Too Many Requests "
                           f"while {verb}ing {kind.resource}: {message}",
                           retry_after=_retry_after(response, MAX_RETRY_AFTER))
        if code == 403 and verb == "watch":
            user = _USER.search(message)
            who = f"user {user.group(1)!r}" if user else "the current user"
            return _Forbidden(
                f"forbidden: {who} may not watch {kind.resource} at the cluster scope "
                f"(RBAC: verb 'watch' on resource {kind.resource!r} is missing; "
                f"{SERVE_RBAC_HINT})",
                "watch")
        error = _status_error(code, message, kind, self._server)
        if isinstance(error, _NotServed):
            return error
        if code == 403:
            return _Forbidden(str(error).replace(RBAC_HINT, SERVE_RBAC_HINT), "list")
        if verb == "watch" and code != 401:
            detail = f": {message}" if message else ""
            return _Failed(f"the API server at {self._server} failed while watching "
                           f"{kind.resource} (HTTP {code}){detail}")
        return _Failed(str(error))

    def _note_error(self, message: str) -> None:
        self.last_error = message

    def _failed(self, state: _KindState, message: str) -> None:
        self._note_error(message)
        if state.failing_since is None:
            state.failing_since = _utcnow()
            log.warning("%s: %s (retrying)", state.kind.key, message)
        elif message != state.error:
            log.warning("%s: %s (retrying)", state.kind.key, message)
        else:
            log.debug("%s: %s (retrying)", state.kind.key, message)
        state.error = message
        self._update_connection()

    def _answered(self, state: _KindState) -> None:
        """The API server answered this kind's request as it should (or with 403/404)."""
        if state.failing_since is not None:
            log.info("%s: reading again after %.1f s", state.kind.key,
                     (_utcnow() - state.failing_since).total_seconds())
            state.failing_since = None
            state.error = None
            self._update_connection()

    def _update_connection(self) -> None:
        since = self.disconnected_since
        if since is not None and not self._was_disconnected:
            log.info("lost the API server at %s: reads failing since %s", self._server,
                     since.isoformat())
        elif since is None and self._was_disconnected:
            log.info("all reads from the API server at %s work again", self._server)
        self._was_disconnected = since is not None

    # --- delivery ---------------------------------------------------------------------------

    def _check_synced(self) -> None:
        if self._synced:
            return
        public = [s for s in self._states.values() if s.public]
        if all(s.ever_listed or s.unavailable is not None for s in public):
            self._synced = True
            self._synced_event.set()
            unavailable = sum(s.unavailable is not None for s in public)
            log.info("synced: %d objects of %d kinds (%d unavailable)",
                     sum(len(s.objects) for s in public), len(public), unavailable)
            self._notify()

    def _notify(self) -> None:
        """Something changed; after the sync, wake the delivery."""
        if self._synced and self._on_changes is not None:
            self._deliver_now.set()

    async def _deliver(self, on_changes: Callable[[list[Change]], Awaitable[None]]) -> None:
        """One call per burst: waits `coalesce` after the first change for the rest. An empty
        batch means only the availability of a kind changed (see `snapshot().unavailable`)."""
        while True:
            await self._deliver_now.wait()
            await asyncio.sleep(self._coalesce)
            self._deliver_now.clear()
            batch, self._pending = self._pending, []
            try:
                await on_changes(batch)
            except Exception:
                log.warning("on_changes failed for a batch of %d changes", len(batch),
                            exc_info=True)


# --- helpers --------------------------------------------------------------------------------


def cached_form(item: dict[str, Any], kind: Kind, compactor: Compactor) -> dict[str, Any]:
    """An object as the cache keeps it (one place, so that bench_serve_memory.py measures
    what `serve` keeps)."""
    return compactor.compact(slim(_plain(item, kind), kind.fields, kind.annotations))


def _is_custom(kind: Kind) -> bool:
    """Served by a CRD (as far as the profile goes: not a group of the built-in kinds)."""
    return kind.group not in _BUILT_IN_GROUPS and kind.key != CRD.key


def _path(kind: Kind) -> str:
    """The cluster-wide collection URL, relative to the server (which may have a path)."""
    base = f"apis/{kind.group}/{kind.version}" if kind.group else f"api/{kind.version}"
    return f"{base}/{kind.plural}"


def _key(obj: dict[str, Any]) -> _ObjKey:
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        return ("", "")
    return (str(metadata.get("namespace") or ""), str(metadata.get("name") or ""))


def _namespace(obj: dict[str, Any]) -> str:
    return _key(obj)[0]


def _version(obj: dict[str, Any]) -> object:
    metadata = obj.get("metadata")
    return metadata.get("resourceVersion") if isinstance(metadata, dict) else None


def _crd_versions(crd: dict[str, Any]) -> list[str]:
    spec = crd.get("spec")
    versions = spec.get("versions") if isinstance(spec, dict) else None
    if not isinstance(versions, list):
        return []
    return [str(v.get("name")) for v in versions if isinstance(v, dict) and v.get("served")]


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _utcnow() -> datetime:
    return datetime.now(UTC)
