"""The watch-based cache of `serve` (eventmesh_health.serve.informer).

Most tests run against the real kube-apiserver + etcd of tests/envtest. The 410 / watch
ERROR path is tested with a fake transport (see there why).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx2
import pytest
from lightkube import AsyncClient, Client, KubeConfig
from lightkube.config.models import User
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition
from lightkube.types import PatchType

from eventmesh_health.serve.informer import Backoff, Change, ClusterCache
from eventmesh_health.topology import Kind
from eventmesh_health.topology.kyma1 import BROKER, PROFILE, TRIGGER
from tests.envtest.controlplane import ControlPlane
from tests.envtest.fixtures import install_crds

Trigger = create_namespaced_resource("eventing.knative.dev", "v1alpha1", "Trigger", "triggers")
Broker = create_namespaced_resource("eventing.knative.dev", "v1alpha1", "Broker", "brokers")
NAMESPACE_KIND = next(k for k in PROFILE.kinds if k.key == "Namespace")
LATENCY = 1.0  # seconds: a change must arrive within this after the write returned


# --- helpers -----------------------------------------------------------------------------


class Recorder:
    """An `on_changes` callback that keeps every batch and lets a test wait for a change."""

    def __init__(self) -> None:
        self.batches: list[list[Change]] = []
        self._arrived = asyncio.Event()

    async def __call__(self, batch: list[Change]) -> None:
        self.batches.append(batch)
        self._arrived.set()

    @property
    def changes(self) -> list[Change]:
        return [c for batch in self.batches for c in batch]

    async def wait_for(self, what: str, match: Callable[[Change], bool], timeout: float) -> Change:
        deadline = time.monotonic() + timeout
        while True:
            for change in self.changes:
                if match(change):
                    return change
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                seen = [(c.kind, c.type, _name(c.obj)) for c in self.changes[-10:]]
                raise AssertionError(f"no change {what} within {timeout} s; last seen: {seen}")
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)


async def wait_until(what: str, condition: Callable[[], bool], timeout: float) -> float:
    """Polls `condition` every 10 ms; returns the seconds it took, fails after `timeout`."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


@contextlib.asynccontextmanager
async def running(cache: ClusterCache) -> AsyncIterator[ClusterCache]:
    task = asyncio.create_task(cache.run())
    try:
        yield cache
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert task.cancelled(), "run() ended by itself"


@contextlib.asynccontextmanager
async def synced_until_deleted(server: FakeServer, recorder: Recorder, name: str,
                               **options: Any) -> AsyncIterator[ClusterCache]:
    """A cache of Namespaces on `server`, running, synced, and past the DELETED change of
    `name`; then the server's watches hang (so the cache stays as it is) and it stops."""
    client = server.client()
    cache = ClusterCache(client, [NAMESPACE_KIND], on_changes=recorder, **options)
    try:
        async with running(cache):
            assert await cache.wait_synced(2.0)
            await recorder.wait_for(f"DELETED {name}", lambda c: c.type == "DELETED"
                                    and _name(c.obj) == name, 5.0)
            yield cache
            server.hang.set()
    finally:
        await client.close()


def _name(obj: dict[str, Any]) -> str:
    return str(obj.get("metadata", {}).get("name"))


def _names(cache: ClusterCache, kind: Kind, namespace: str) -> set[str]:
    return {
        o["metadata"]["name"] for o in cache.objects()
        if o["kind"] == kind.kind and o["apiVersion"] == kind.api_version
        and o["metadata"].get("namespace") == namespace
    }


def is_change(kind: Kind, type_: str, name: str, namespace: str) -> Callable[[Change], bool]:
    def match(change: Change) -> bool:
        metadata = change.obj.get("metadata", {})
        return (change.kind == kind.key and change.type == type_
                and metadata.get("name") == name and metadata.get("namespace") == namespace)

    return match


def trigger(name: str, namespace: str, source: str = "commerce") -> Any:
    return Trigger.from_dict({
        "apiVersion": "eventing.knative.dev/v1alpha1",
        "kind": "Trigger",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "broker": "default",
            "filter": {"attributes": {"type": "order.created", "source": source}},
            "subscriber": {"uri": "http://fn.ns.svc.cluster.local"},
        },
    })


@pytest.fixture
async def aclient(control_plane: ControlPlane) -> AsyncIterator[AsyncClient]:
    """An async lightkube client for the admin (the client `serve` would use)."""
    if not control_plane.apiserver_running:
        control_plane.start_apiserver()
    client = AsyncClient(KubeConfig.from_file(control_plane.kubeconfig_path), trust_env=False)
    try:
        yield client
    finally:
        await client.close()


# --- against the real API server ----------------------------------------------------------


@pytest.mark.envtest
async def test_sync_then_changes_arrive_within_a_second(
    aclient: AsyncClient, namespace: str
) -> None:
    await aclient.create(trigger("before", namespace))
    await aclient.create(Broker.from_dict({"metadata": {"name": "default", "namespace": namespace},
                                           "spec": {}}))
    recorder = Recorder()
    cache = ClusterCache(aclient, PROFILE.kinds, on_changes=recorder)
    async with running(cache):
        assert await cache.wait_synced(10.0)
        assert cache.synced
        snapshot = cache.snapshot(datetime(2024, 1, 1, tzinfo=UTC))
        assert snapshot.collected == {k.key for k in PROFILE.kinds}
        assert snapshot.unavailable == {}
        assert snapshot.taken_at == datetime(2024, 1, 1, tzinfo=UTC)
        assert _names(cache, TRIGGER, namespace) == {"before"}
        assert _names(cache, BROKER, namespace) == {"default"}
        # Objects are like a dump's: apiVersion and kind set (a built-in kind's list items
        # lack them), no managedFields.
        for obj in cache.objects():
            assert obj["apiVersion"] and obj["kind"]
            assert "managedFields" not in obj["metadata"]
        ns = next(o for o in cache.objects()
                  if o["kind"] == "Namespace" and o["metadata"]["name"] == namespace)
        assert ns["apiVersion"] == "v1"
        # The initial lists arrive as one batch of ADDED, after the sync.
        await recorder.wait_for("ADDED before", is_change(TRIGGER, "ADDED", "before", namespace),
                                LATENCY)
        assert all(c.type == "ADDED" for c in recorder.batches[0])
        assert len(recorder.batches[0]) == len(cache.objects())
        # A watch opened right after its CRD was established may get 429 "storage is
        # (re)initializing" once; it is retried at once, and nothing is failing after that.
        await wait_until("no kind failing", lambda: cache.disconnected_since is None, 5)

        written = time.monotonic()
        await aclient.create(trigger("after", namespace))
        added = await recorder.wait_for(
            "ADDED after", is_change(TRIGGER, "ADDED", "after", namespace), LATENCY)
        added_in = time.monotonic() - written
        assert added.obj["apiVersion"] == TRIGGER.api_version
        assert added.obj["kind"] == "Trigger"
        assert "managedFields" not in added.obj["metadata"]

        written = time.monotonic()
        await aclient.patch(Trigger, "after", {"metadata": {"labels": {"edited": "yes"}}},
                            namespace=namespace, patch_type=PatchType.MERGE)
        modified = await recorder.wait_for(
            "MODIFIED after", is_change(TRIGGER, "MODIFIED", "after", namespace), LATENCY)
        modified_in = time.monotonic() - written
        assert modified.obj["metadata"]["labels"] == {"edited": "yes"}

        written = time.monotonic()
        await aclient.delete(Trigger, "after", namespace=namespace)
        deleted = await recorder.wait_for(
            "DELETED after", is_change(TRIGGER, "DELETED", "after", namespace), LATENCY)
        deleted_in = time.monotonic() - written
        assert deleted.obj["metadata"]["labels"] == {"edited": "yes"}
        assert _names(cache, TRIGGER, namespace) == {"before"}

        assert max(added_in, modified_in, deleted_in) < LATENCY
        stats = cache.stats[TRIGGER.key]
        assert stats.lists == 1 and stats.relists == 0
        assert stats.events >= 3
        # nothing went wrong but, at most, the API server's own transient 429 above
        assert cache.last_error is None or "storage is (re)initializing" in cache.last_error
        assert cache.disconnected_since is None


@pytest.mark.envtest
async def test_paging_lists_every_object(
    control_plane: ControlPlane, aclient: AsyncClient, namespace: str
) -> None:
    limit = asyncio.Semaphore(16)

    async def create(i: int) -> None:
        async with limit:
            await aclient.create(trigger(f"t-{i:03d}", namespace))

    await asyncio.gather(*(create(i) for i in range(120)))
    cache = ClusterCache(aclient, [TRIGGER], chunk_size=50)
    async with running(cache):
        assert await cache.wait_synced(10.0)
        assert _names(cache, TRIGGER, namespace) == {f"t-{i:03d}" for i in range(120)}
        assert cache.stats[TRIGGER.key].lists == 1

    # The API server really was asked page by page (its audit log has every request).
    def pages() -> list[str]:
        return [
            str(e.get("requestURI")) for e in control_plane.audit_events()
            if str(e.get("requestURI", "")).startswith("/apis/eventing.knative.dev/v1alpha1/"
                                                       "triggers?limit=50")
        ]

    await wait_until("three pages of 50 in the audit log",
                     lambda: sum("continue=" in uri for uri in pages()) >= 2, 5.0)


@pytest.mark.envtest
async def test_apiserver_restart(
    control_plane: ControlPlane, aclient: AsyncClient, namespace: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The shared control plane is stopped and restarted here (as tests/test_envtest.py does);
    the `kube_client` fixture restarts it for later tests should this test fail midway."""
    await aclient.create(trigger("old", namespace))
    recorder = Recorder()
    cache = ClusterCache(aclient, [TRIGGER, NAMESPACE_KIND], on_changes=recorder,
                         backoff_max=0.5)
    async with running(cache):
        assert await cache.wait_synced(10.0)
        assert _names(cache, TRIGGER, namespace) == {"old"}
        assert cache.disconnected_since is None
        await recorder.wait_for("the initial ADDED old",
                                is_change(TRIGGER, "ADDED", "old", namespace), LATENCY)
        lists_before = cache.stats[TRIGGER.key].lists
        # kube-apiserver keeps open watches through a graceful shutdown until it is killed
        # (after stop_timeout): 1 s instead of 10 keeps this test short.
        monkeypatch.setattr(control_plane, "stop_timeout", 1.0)
        stopped_at = datetime.now(UTC)
        before_outage = len(recorder.changes)
        # In a thread: the informer keeps running while the API server shuts down.
        stopping = asyncio.create_task(asyncio.to_thread(control_plane.stop_apiserver))
        try:
            await wait_until("disconnected_since set while the API server is down",
                             lambda: cache.disconnected_since is not None, 10.0)
            since = cache.disconnected_since
            assert since is not None and since >= stopped_at
            assert cache.last_error is not None
            # What was known stays readable during the outage.
            assert _names(cache, TRIGGER, namespace) == {"old"}
            assert TRIGGER.key in cache.snapshot(datetime.now(UTC)).collected
        finally:
            await stopping
            # From the main thread (not to_thread): the child dies with the thread that forked
            # it. The informer waits meanwhile, as for a slow restart.
            control_plane.start_apiserver()
        # Right after the restart: one object created, one deleted (a fresh client: the old
        # one's pooled connections died with the server).
        writer = AsyncClient(KubeConfig.from_file(control_plane.kubeconfig_path),
                             trust_env=False)
        try:
            await writer.create(trigger("new", namespace))
            await writer.delete(Trigger, "old", namespace=namespace)
        finally:
            await writer.close()
        await recorder.wait_for("ADDED new", is_change(TRIGGER, "ADDED", "new", namespace), 10.0)
        await recorder.wait_for("DELETED old", is_change(TRIGGER, "DELETED", "old", namespace),
                                10.0)
        await wait_until("disconnected_since back to None",
                         lambda: cache.disconnected_since is None, 10.0)
        assert _names(cache, TRIGGER, namespace) == {"new"}
        # Exactly the two writes: nothing dropped and re-added around the outage.
        seen = [(c.type, _name(c.obj)) for c in recorder.changes[before_outage:]
                if c.kind == TRIGGER.key and c.obj["metadata"].get("namespace") == namespace]
        assert sorted(seen) == [("ADDED", "new"), ("DELETED", "old")]
        stats = cache.stats[TRIGGER.key]
        # Resumed from the last resourceVersion, or (410: the restarted server's watch cache
        # starts at its own list) listed again: either way one of the two happened.
        assert stats.watch_restarts + (stats.lists - lists_before) >= 1


CRD_GROUP = "informer-test.eventmesh-health.io"
# The cache keeps what the kind's `fields` name (and the common metadata), nothing else.
WIDGET = Kind(f"{CRD_GROUP}/v1", "Widget", "widgets", fields=("spec.size", "status"))
Widget = create_namespaced_resource(CRD_GROUP, "v1", "Widget", "widgets")
WIDGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"widgets.{CRD_GROUP}"},
    "spec": {
        "group": CRD_GROUP,
        "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
        "scope": "Namespaced",
        "versions": [{
            "name": "v1", "served": True, "storage": True,
            "schema": {"openAPIV3Schema": {"type": "object",
                                           "x-kubernetes-preserve-unknown-fields": True}},
        }],
    },
}


@pytest.fixture
def widget_crd_absent(kube_client: Client) -> Iterator[None]:
    """The Widget CRD is not installed before the test, and removed after it."""
    with contextlib.suppress(Exception):
        kube_client.delete(CustomResourceDefinition, WIDGET_CRD["metadata"]["name"])
    yield
    with contextlib.suppress(Exception):
        kube_client.delete(CustomResourceDefinition, WIDGET_CRD["metadata"]["name"])


@pytest.mark.envtest
@pytest.mark.usefixtures("widget_crd_absent")
async def test_crd_installed_after_start_then_removed(
    aclient: AsyncClient, kube_client: Client, namespace: str
) -> None:
    recorder = Recorder()
    # No periodic retry during the test: only the watch of the CRDs can bring the kind in.
    cache = ClusterCache(aclient, [WIDGET, NAMESPACE_KIND], on_changes=recorder,
                         unavailable_retry=3600.0)
    crd_name = WIDGET_CRD["metadata"]["name"]
    async with running(cache):
        assert await cache.wait_synced(10.0)
        snapshot = cache.snapshot(datetime.now(UTC))
        assert WIDGET.key not in snapshot.collected
        assert snapshot.unavailable == {
            WIDGET.key: f"CustomResourceDefinition {crd_name} is not installed (its CRD missing?)",
        }
        assert cache.disconnected_since is None

        await asyncio.to_thread(install_crds, kube_client, [WIDGET_CRD])
        took = await wait_until("Widget collected after its CRD was installed",
                                lambda: WIDGET.key in cache.snapshot(datetime.now(UTC)).collected,
                                10.0)
        assert took < 5.0
        await aclient.create(Widget.from_dict({"metadata": {"name": "w1", "namespace": namespace},
                                               "spec": {"size": 3, "password": "s3cr3t"}}))
        added = await recorder.wait_for("ADDED w1", is_change(WIDGET, "ADDED", "w1", namespace),
                                        LATENCY)
        assert added.obj["spec"] == {"size": 3}  # not a field the kind reads: not cached
        assert added.obj["apiVersion"] == WIDGET.api_version
        assert cache.snapshot(datetime.now(UTC)).unavailable == {}

        await aclient.delete(CustomResourceDefinition, crd_name)
        await recorder.wait_for("DELETED w1", is_change(WIDGET, "DELETED", "w1", namespace),
                                10.0)
        await wait_until(
            "Widget unavailable again after its CRD was deleted",
            lambda: WIDGET.key in cache.snapshot(datetime.now(UTC)).unavailable, 10.0)
        snapshot = cache.snapshot(datetime.now(UTC))
        assert WIDGET.key not in snapshot.collected
        assert snapshot.unavailable[WIDGET.key] == (
            f"CustomResourceDefinition {crd_name} is not installed (its CRD missing?)")
        assert _names(cache, WIDGET, namespace) == set()
        assert cache.disconnected_since is None


@pytest.mark.envtest
async def test_crd_serving_another_version_is_named(
    aclient: AsyncClient, kube_client: Client, namespace: str
) -> None:
    """The message says which versions the CRD does serve (as `check` does with discovery)."""
    group = f"v-{uuid.uuid4().hex[:6]}.{CRD_GROUP}"
    crd = json.loads(json.dumps(WIDGET_CRD).replace(CRD_GROUP, group))
    await asyncio.to_thread(install_crds, kube_client, [crd])
    try:
        v2 = Kind(f"{group}/v2", "Widget", "widgets")
        cache = ClusterCache(aclient, [v2], unavailable_retry=3600.0)
        async with running(cache):
            assert await cache.wait_synced(10.0)
            assert cache.snapshot(datetime.now(UTC)).unavailable == {
                v2.key: f"widgets.{group} is installed but does not serve v2 (it serves v1); "
                        f"this profile reads {group}/v2",
            }
    finally:
        with contextlib.suppress(Exception):
            kube_client.delete(CustomResourceDefinition, crd["metadata"]["name"])


@pytest.mark.envtest
async def test_forbidden_kinds_are_unavailable_and_sync_completes(
    control_plane: ControlPlane, kube_client: Client
) -> None:
    """A user without any RBAC: every kind is reported with the RBAC message, never hangs."""
    path = control_plane.make_user_kubeconfig(f"nobody-{uuid.uuid4().hex[:6]}")
    client = AsyncClient(KubeConfig.from_file(path), trust_env=False)
    try:
        cache = ClusterCache(client, [TRIGGER, NAMESPACE_KIND], unavailable_retry=3600.0)
        async with running(cache):
            assert await cache.wait_synced(10.0)
            unavailable = cache.snapshot(datetime.now(UTC)).unavailable
            assert set(unavailable) == {TRIGGER.key, NAMESPACE_KIND.key}
            assert unavailable[NAMESPACE_KIND.key].startswith("forbidden: user 'nobody-")
            assert ("verb 'list' on resource 'namespaces' is missing; see "
                    "deploy/rbac/clusterrole-serve.yaml") in unavailable[NAMESPACE_KIND.key]
            assert "triggers.eventing.knative.dev" in unavailable[TRIGGER.key]
            assert cache.objects() == []
            assert cache.disconnected_since is None  # refused is not disconnected
            assert cache.last_error is not None and "forbidden" in cache.last_error
    finally:
        await client.close()


# --- with a fake transport ---------------------------------------------------------------
#
# A real API server answers 410 Gone only to a resourceVersion older than its watch cache (or
# etcd's last compaction): the test control plane cannot be made to do that on demand and at
# a chosen moment. The fake transport below plays a scripted API server instead.


def _list_body(items: list[dict[str, Any]], version: str, cont: str | None = None) -> bytes:
    metadata: dict[str, Any] = {"resourceVersion": version}
    if cont:
        metadata["continue"] = cont
    return json.dumps({"kind": "NamespaceList", "apiVersion": "v1", "metadata": metadata,
                       "items": items}).encode()


def _ns(name: str, version: str) -> dict[str, Any]:
    # As in a real list of a built-in kind: no apiVersion/kind on items; managedFields present.
    return {"metadata": {"name": name, "resourceVersion": version,
                         "managedFields": [{"manager": "kubectl"}]}}


def _event(type_: str, obj: dict[str, Any]) -> bytes:
    return json.dumps({"type": type_, "object": obj}).encode() + b"\n"


class FakeServer:
    """Serves scripted answers in order: lists, and watches as streams of events."""

    def __init__(self) -> None:
        self.requests: list[dict[str, str]] = []
        self.lists: list[httpx2.Response] = []
        self.watches: list[list[bytes] | httpx2.Response] = []
        self.hang = asyncio.Event()  # set to end the last, endless watch

    async def handle(self, request: httpx2.Request) -> httpx2.Response:
        params = dict(request.url.params)
        self.requests.append({"path": request.url.path, **params})
        if params.get("watch") != "true":
            return self.lists.pop(0)
        script = self.watches.pop(0) if self.watches else []
        if isinstance(script, httpx2.Response):
            return script

        async def stream() -> AsyncIterator[bytes]:
            for chunk in script:
                yield chunk
            if not self.watches:  # the last watch: stays open until the test ends
                await self.hang.wait()

        return httpx2.Response(200, content=stream(),
                               headers={"Content-Type": "application/json"})

    def client(self) -> AsyncClient:
        return fake_client(self.handle)


def fake_client(
    handler: Callable[[httpx2.Request], Awaitable[httpx2.Response]],
) -> AsyncClient:
    """A lightkube client whose every request goes to `handler` (anonymous, no TLS)."""
    config = KubeConfig.from_server("http://fake.invalid").get()
    config = config._replace(user=User())
    return AsyncClient(config, transport=httpx2.MockTransport(handler), trust_env=False)


async def test_watch_error_410_lists_again_and_delivers_the_difference() -> None:
    server = FakeServer()
    server.lists = [
        httpx2.Response(200, content=_list_body([_ns("a", "5")], "8", cont="page2")),
        httpx2.Response(200, content=_list_body([_ns("b", "7")], "8")),
        # After the 410: b is gone, a changed, c and d arrived (c seen by the watch already).
        httpx2.Response(200, content=_list_body(
            [_ns("a", "12"), _ns("c", "9"), _ns("d", "13")], "14")),
    ]
    gone = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 410,
            "reason": "Expired", "message": "too old resource version: 9 (11)"}
    server.watches = [
        [_event("ADDED", _ns("c", "9")), _event("ERROR", gone)],
        # A bookmark, then the stream ends: resumed from the bookmark's resourceVersion.
        [_event("BOOKMARK", {"kind": "Namespace", "apiVersion": "v1",
                             "metadata": {"resourceVersion": "20"}})],
        [_event("DELETED", _ns("d", "21"))],
    ]
    recorder = Recorder()
    async with synced_until_deleted(server, recorder, "d", chunk_size=1) as cache:
        assert {_name(o) for o in cache.objects()} == {"a", "c"}

    watches = [r for r in server.requests if r.get("watch") == "true"]
    lists = [r for r in server.requests if r.get("watch") != "true"]
    assert [r["path"] for r in server.requests] == ["/api/v1/namespaces"] * len(server.requests)
    assert [(r.get("limit"), r.get("continue")) for r in lists] == [
        ("1", None), ("1", "page2"), ("1", None)]
    assert [r["resourceVersion"] for r in watches[:3]] == ["8", "14", "20"]
    assert all(r["allowWatchBookmarks"] == "true" and int(r["timeoutSeconds"]) >= 300
               for r in watches)
    changes = [(c.type, _name(c.obj), _version_of(c)) for c in recorder.changes]
    assert changes[:2] == [("ADDED", "a", "5"), ("ADDED", "b", "7")]  # the initial list
    assert ("ADDED", "c", "9") in changes
    # The re-list delivers only the difference: c is not delivered twice.
    assert sorted(changes[3:6]) == [("ADDED", "d", "13"), ("DELETED", "b", "7"),
                                    ("MODIFIED", "a", "12")]
    assert changes[6:] == [("DELETED", "d", "21")]
    for change in recorder.changes:
        assert change.obj["apiVersion"] == "v1" and change.obj["kind"] == "Namespace"
        assert "managedFields" not in change.obj["metadata"]
    stats = cache.stats[NAMESPACE_KIND.key]
    assert (stats.lists, stats.relists, stats.events, stats.bookmarks) == (2, 1, 2, 1)
    assert stats.watch_restarts >= 1  # the resume from the bookmark
    assert cache.disconnected_since is None


async def test_without_initial_changes_the_first_lists_make_none() -> None:
    """`initial_changes=False` (serve: its first analysis reads the whole cache): the objects
    of the first list are in `objects()` at the sync but make no Change; what changes after
    the sync does, re-lists included."""
    server = FakeServer()
    server.lists = [
        httpx2.Response(200, content=_list_body([_ns("a", "5"), _ns("b", "7")], "8")),
        httpx2.Response(200, content=_list_body([_ns("a", "12"), _ns("c", "9")], "14")),
    ]
    gone = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 410,
            "reason": "Expired", "message": "too old resource version: 9 (11)"}
    server.watches = [[_event("ADDED", _ns("c", "9")), _event("ERROR", gone)]]
    recorder = Recorder()
    async with synced_until_deleted(server, recorder, "b", initial_changes=False) as cache:
        assert {_name(o) for o in cache.objects()} == {"a", "c"}
    changes = [(c.type, _name(c.obj), _version_of(c)) for c in recorder.changes]
    assert changes[0] == ("ADDED", "c", "9")  # a and b, listed first, made none
    assert sorted(changes[1:]) == [("DELETED", "b", "7"), ("MODIFIED", "a", "12")]


async def test_http_410_on_resume_and_forbidden_watch() -> None:
    """A resumed watch answered 410 (an HTTP answer this time) lists again; a watch RBAC
    forbids falls back to listing every `unavailable_retry` seconds, keeping the objects."""
    server = FakeServer()
    server.lists = [
        httpx2.Response(200, content=_list_body([_ns("a", "5")], "5")),
        httpx2.Response(200, content=_list_body([_ns("a", "5"), _ns("b", "6"), _ns("c", "8")],
                                                "9")),
        httpx2.Response(200, content=_list_body([_ns("a", "5"), _ns("c", "8")], "12")),
    ]

    def status(code: int, reason: str, message: str) -> httpx2.Response:
        return httpx2.Response(code, json={"kind": "Status", "apiVersion": "v1", "code": code,
                                           "status": "Failure", "reason": reason,
                                           "message": message})

    server.watches = [
        [_event("ADDED", _ns("b", "6"))],  # then the stream ends: resume from 6
        status(410, "Expired", "too old resource version: 6 (7)"),
        status(403, "Forbidden", 'namespaces is forbidden: User "eve" cannot watch resource '
                                 '"namespaces" in API group "" at the cluster scope'),
    ]
    recorder = Recorder()
    async with synced_until_deleted(server, recorder, "b", unavailable_retry=0.05) as cache:
        assert {_name(o) for o in cache.objects()} == {"a", "c"}
        snapshot = cache.snapshot(datetime.now(UTC))
        assert snapshot.collected == {NAMESPACE_KIND.key} and snapshot.unavailable == {}
        assert cache.disconnected_since is None  # refused is not disconnected
        assert cache.last_error is not None
        assert "user 'eve' may not watch namespaces" in cache.last_error
    kinds = [("watch" if r.get("watch") else "list", r.get("resourceVersion"))
             for r in server.requests]
    assert kinds[:6] == [("list", None), ("watch", "5"), ("watch", "6"), ("list", None),
                         ("watch", "9"), ("list", None)]
    changes = [(c.type, _name(c.obj)) for c in recorder.changes]
    assert changes == [("ADDED", "a"), ("ADDED", "b"), ("ADDED", "c"), ("DELETED", "b")]
    stats = cache.stats[NAMESPACE_KIND.key]
    # The one resume (from 6) was answered 410: no watch was resumed.
    assert (stats.lists, stats.relists, stats.watch_restarts) == (3, 2, 0)


def _version_of(change: Change) -> str:
    return str(change.obj["metadata"]["resourceVersion"])


async def test_unreachable_then_back() -> None:
    """Refused connections: disconnected_since is set, retries back off, recovery clears it."""
    attempts: list[float] = []
    up = asyncio.Event()

    async def handle(request: httpx2.Request) -> httpx2.Response:
        attempts.append(time.monotonic())
        if not up.is_set():
            raise httpx2.ConnectError("[Errno 111] Connection refused", request=request)
        if request.url.params.get("watch") == "true":
            async def endless() -> AsyncIterator[bytes]:
                await asyncio.Event().wait()
                yield b""

            return httpx2.Response(200, content=endless())
        return httpx2.Response(200, content=_list_body([_ns("a", "1")], "1"))

    client = fake_client(handle)
    cache = ClusterCache(client, [NAMESPACE_KIND], backoff_max=0.2)
    try:
        async with running(cache):
            await wait_until("three failed attempts", lambda: len(attempts) >= 3, 5.0)
            assert not cache.synced
            assert cache.disconnected_since is not None
            assert cache.last_error is not None
            assert "connection refused" in cache.last_error
            assert "fake.invalid" in cache.last_error
            up.set()
            assert await cache.wait_synced(2.0)
            await wait_until("connected again", lambda: cache.disconnected_since is None, 2.0)
            assert {_name(o) for o in cache.objects()} == {"a"}
    finally:
        await client.close()


def test_backoff_full_jitter_doubles_to_the_maximum_and_resets() -> None:
    backoff = Backoff(initial=0.2, maximum=30.0, rng=lambda: 1.0)
    assert [round(backoff.next(), 3) for _ in range(10)] == [
        0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30.0, 30.0]
    backoff.reset()
    assert backoff.next() == pytest.approx(0.2)
    jittered = Backoff(initial=0.2, maximum=30.0, rng=lambda: 0.5)
    assert jittered.next() == pytest.approx(0.1)
