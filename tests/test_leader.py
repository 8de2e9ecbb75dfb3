"""LeaderElector against a real API server: one leader of two, takeover after a leader dies,
hand-over on release, stepping down before the renew deadline, conflicts."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from lightkube import AsyncClient, Client

from eventmesh_health.serve.leader import DEFAULT_LEASE_NAME, LEASE_KIND, LeaderElector
from eventmesh_health.sources.cluster import Connection, load_config, resource_class
from tests.envtest.controlplane import ControlPlane

LEASE_RES = resource_class(LEASE_KIND)
# Short timings, in the proportions of client-go's defaults (15 s / 10 s / 2 s).
LEASE_DURATION = 2.0
RENEW_DEADLINE = 1.5
RETRY_PERIOD = 0.25
SLACK = 0.3  # scheduling and request latency on a busy test machine
TIMEOUT = 10.0
SAMPLE_EVERY = 0.005


def test_timings_are_checked() -> None:
    for lease, renew, retry in ((15, 15, 2), (15, 10, 10), (15, 10, 0), (10, 15, 2)):
        with pytest.raises(ValueError, match="retry_period < renew_deadline < lease_duration"):
            LeaderElector(None, "ns", "lease", "me", lease_duration=lease,  # type: ignore[arg-type]
                          renew_deadline=renew, retry_period=retry)
    with pytest.raises(ValueError, match="identity"):
        LeaderElector(None, "ns", "lease", "")  # type: ignore[arg-type]


# --- helpers ----------------------------------------------------------------------------------


@pytest.fixture
async def clients(control_plane: ControlPlane) -> AsyncIterator[Callable[[], AsyncClient]]:
    """Async clients, each for a user of its own (admin rights)."""
    made: list[AsyncClient] = []

    def make() -> AsyncClient:
        path = control_plane.make_user_kubeconfig(f"elector-{uuid.uuid4().hex[:6]}",
                                                  ["system:masters"])
        client = AsyncClient(load_config(Connection(kubeconfig=path)), trust_env=False)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


@dataclass
class Candidate:
    elector: LeaderElector
    task: asyncio.Task[None]
    started: int = 0
    stopped: int = 0


@pytest.fixture
async def candidates(
    clients: Callable[[], AsyncClient], namespace: str,
) -> AsyncIterator[Callable[..., Candidate]]:
    """Start electors for the Lease `eventmesh-health-serve` in the test's namespace."""
    running: list[Candidate] = []

    def start(identity: str, client: Any = None, **options: Any) -> Candidate:
        box: dict[str, Candidate] = {}

        def started() -> None:
            box["c"].started += 1

        def stopped() -> None:
            box["c"].stopped += 1

        elector = LeaderElector(
            client or clients(), namespace, DEFAULT_LEASE_NAME, identity,
            lease_duration=LEASE_DURATION, renew_deadline=RENEW_DEADLINE,
            retry_period=RETRY_PERIOD, on_started_leading=started, on_stopped_leading=stopped,
            **options,
        )
        candidate = Candidate(elector, asyncio.create_task(elector.run()))
        box["c"] = candidate
        running.append(candidate)
        return candidate

    yield start
    for candidate in running:
        candidate.task.cancel()
    for candidate in running:
        with contextlib.suppress(asyncio.CancelledError):
            await candidate.task


async def wait_until(predicate: Callable[[], bool], timeout: float = TIMEOUT,
                     what: str = "condition") -> float:
    """Poll every 5 ms; returns the monotonic time the predicate first held."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(SAMPLE_EVERY)
    return time.monotonic()


@dataclass
class Sampler:
    """Records every elector's `is_leader` every 5 ms (wall time, values)."""

    electors: list[LeaderElector]
    samples: list[tuple[datetime, tuple[bool, ...]]] = field(default_factory=list)

    async def run(self) -> None:
        while True:
            self.samples.append((datetime.now(UTC),
                                 tuple(e.is_leader for e in self.electors)))
            await asyncio.sleep(SAMPLE_EVERY)

    def never_two_leaders(self) -> None:
        both = [when for when, values in self.samples if sum(values) > 1]
        assert both == [], f"two leaders at {both[:3]}"


@contextlib.asynccontextmanager
async def sampling(*electors: LeaderElector) -> AsyncIterator[Sampler]:
    sampler = Sampler(list(electors))
    task = asyncio.create_task(sampler.run())
    try:
        yield sampler
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    sampler.never_two_leaders()


def lease(kube_client: Client, namespace: str) -> dict[str, Any]:
    return dict(kube_client.get(LEASE_RES, DEFAULT_LEASE_NAME, namespace=namespace))


def micro_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# --- tests ------------------------------------------------------------------------------------

envtest = pytest.mark.envtest


@envtest
async def test_acquires_a_free_lease_and_renews_it(
    kube_client: Client, namespace: str, candidates: Callable[..., Candidate],
) -> None:
    one = candidates("replica-1")
    await wait_until(lambda: one.elector.is_leader, what="leadership")
    first = lease(kube_client, namespace)["spec"]
    assert first["holderIdentity"] == "replica-1"
    assert first["leaseDurationSeconds"] == 2
    assert first["leaseTransitions"] == 0
    assert first["acquireTime"] == first["renewTime"]

    def renewed() -> bool:
        return bool(lease(kube_client, namespace)["spec"]["renewTime"] != first["renewTime"])

    await wait_until(renewed, timeout=RETRY_PERIOD + 2, what="a renewal")
    spec = lease(kube_client, namespace)["spec"]
    assert spec["acquireTime"] == first["acquireTime"]
    assert micro_time(spec["renewTime"]) > micro_time(first["renewTime"])
    assert (one.started, one.stopped) == (1, 0)
    assert one.elector.holder == "replica-1"


@envtest
async def test_of_two_electors_only_one_leads(
    kube_client: Client, namespace: str, candidates: Callable[..., Candidate],
) -> None:
    one, two = candidates("replica-1"), candidates("replica-2")
    async with sampling(one.elector, two.elector) as sampler:
        await wait_until(lambda: one.elector.is_leader or two.elector.is_leader,
                         what="a leader")
        leader, follower = (one, two) if one.elector.is_leader else (two, one)
        # Two lease durations: the follower would have taken over had the leader not renewed.
        start = time.monotonic()
        await wait_until(lambda: time.monotonic() - start > 2 * LEASE_DURATION,
                         timeout=3 * LEASE_DURATION, what="two lease durations")
        assert leader.elector.is_leader and not follower.elector.is_leader
    assert all(values == ((leader is one), (leader is two))
               for _, values in sampler.samples[-10:])
    assert lease(kube_client, namespace)["spec"]["holderIdentity"] == leader.elector.identity
    assert follower.elector.holder == leader.elector.identity
    assert (leader.started, leader.stopped, follower.started) == (1, 0, 0)


@envtest
async def test_takeover_within_the_lease_duration_when_the_leader_stops_renewing(
    kube_client: Client, namespace: str, candidates: Callable[..., Candidate],
) -> None:
    one = candidates("replica-1", release_on_cancel=False)
    await wait_until(lambda: one.elector.is_leader, what="leadership")
    two = candidates("replica-2")
    async with sampling(one.elector, two.elector):
        await wait_until(lambda: two.elector.holder == "replica-1", what="follower sees leader")
        one.task.cancel()  # dies without releasing: no more renewals
        with contextlib.suppress(asyncio.CancelledError):
            await one.task
        stopped = time.monotonic()
        last = lease(kube_client, namespace)["spec"]
        assert last["holderIdentity"] == "replica-1"  # not released
        took_over = await wait_until(lambda: two.elector.is_leader, what="takeover")
    took_over_after = took_over - stopped
    # The lease runs out LEASE_DURATION after the follower saw the last renewal, which it
    # sees at its next read: at most one retry period late.
    assert took_over_after <= LEASE_DURATION + RETRY_PERIOD + SLACK, took_over_after
    spec = lease(kube_client, namespace)["spec"]
    assert spec["holderIdentity"] == "replica-2"
    assert spec["leaseTransitions"] == 1
    # Never before the lease ran out.
    assert micro_time(spec["acquireTime"]) >= micro_time(last["renewTime"]) + timedelta(
        seconds=LEASE_DURATION)
    assert (one.started, one.stopped, two.started) == (1, 1, 1)


@envtest
async def test_a_released_lease_is_taken_over_within_the_retry_period(
    kube_client: Client, namespace: str, candidates: Callable[..., Candidate],
) -> None:
    one = candidates("replica-1")
    await wait_until(lambda: one.elector.is_leader, what="leadership")
    two = candidates("replica-2")
    async with sampling(one.elector, two.elector):
        await wait_until(lambda: two.elector.holder == "replica-1", what="follower sees leader")
        one.task.cancel()  # clean shutdown: releases the lease
        with contextlib.suppress(asyncio.CancelledError):
            await one.task
        released = time.monotonic()
        assert not one.elector.is_leader
        took_over = await wait_until(lambda: two.elector.is_leader, what="takeover")
    assert took_over - released <= RETRY_PERIOD + SLACK, took_over - released
    spec = lease(kube_client, namespace)["spec"]
    assert spec["holderIdentity"] == "replica-2"
    assert spec["leaseTransitions"] == 1


@envtest
async def test_release_clears_the_holder_and_renew_time(
    kube_client: Client, namespace: str, candidates: Callable[..., Candidate],
) -> None:
    one = candidates("replica-1")
    await wait_until(lambda: one.elector.is_leader, what="leadership")
    one.task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await one.task
    spec = lease(kube_client, namespace)["spec"]
    assert spec == {"leaseDurationSeconds": 1, "leaseTransitions": 0}
    assert (one.started, one.stopped) == (1, 1)


class Partition:
    """Wraps an AsyncClient; after `cut()`, every request hangs (a network partition)."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        self.is_cut = False

    def cut(self) -> None:
        self.is_cut = True

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if name not in ("get", "create", "replace", "patch"):
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            if self.is_cut:
                await asyncio.Event().wait()  # never answers
            result: Awaitable[Any] = attr(*args, **kwargs)
            return await result

        return call


@envtest
async def test_a_leader_that_cannot_renew_steps_down_before_its_deadline(
    kube_client: Client, namespace: str, clients: Callable[[], AsyncClient],
    candidates: Callable[..., Candidate],
) -> None:
    partition = Partition(clients())
    one = candidates("replica-1", client=partition)
    await wait_until(lambda: one.elector.is_leader, what="leadership")
    two = candidates("replica-2")
    async with sampling(one.elector, two.elector) as sampler:
        await wait_until(lambda: two.elector.holder == "replica-1", what="follower sees leader")
        partition.cut()
        await wait_until(lambda: not one.elector.is_leader, timeout=RENEW_DEADLINE + 1,
                         what="stepping down")
        last = lease(kube_client, namespace)["spec"]  # its last successful renewal
        assert last["holderIdentity"] == "replica-1"
        await wait_until(lambda: two.elector.is_leader, what="takeover")
        await wait_until(lambda: sampler.samples[-1][1][1], what="the sampler to see it")
    deadline = micro_time(last["renewTime"]) + timedelta(seconds=RENEW_DEADLINE)
    leading = [when for when, (first, _) in sampler.samples if first]
    after_deadline = [first for when, (first, _) in sampler.samples if when >= deadline]
    # Leader while its last renewal was younger than the renew deadline, never after: every
    # look at `is_leader` from the deadline on says False (it is computed from the clock,
    # not left to the renewing coroutine, whose request is still hanging at that moment).
    assert leading[-1] < deadline, (leading[-1], deadline)
    assert after_deadline and not any(after_deadline)
    assert one.stopped == 1
    # The successor waited for the lease to run out: the two never overlapped.
    successor = [when for when, (_, second) in sampler.samples if second]
    assert successor[0] >= micro_time(last["renewTime"]) + timedelta(seconds=LEASE_DURATION)


@envtest
async def test_a_conflicting_write_means_someone_else_won(
    kube_client: Client, namespace: str, candidates: Callable[..., Candidate],
) -> None:
    one = candidates("replica-1")
    await wait_until(lambda: one.elector.is_leader, what="leadership")
    # Another replica (with a longer lease) writes the Lease between two renewals.
    current = lease(kube_client, namespace)
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    current["spec"].update(holderIdentity="intruder", renewTime=now, acquireTime=now,
                           leaseDurationSeconds=30,
                           leaseTransitions=current["spec"]["leaseTransitions"] + 1)
    current["metadata"].pop("managedFields", None)
    kube_client.replace(LEASE_RES(current))
    intruded = time.monotonic()
    # Its next renewal conflicts (409), it re-reads the Lease and steps down at once,
    # without waiting for its renew deadline.
    stepped_down = await wait_until(lambda: not one.elector.is_leader,
                                    timeout=RENEW_DEADLINE + 1, what="stepping down")
    assert stepped_down - intruded <= RETRY_PERIOD + SLACK
    assert one.elector.holder == "intruder"
    assert one.stopped == 1
    assert not one.task.done()  # a candidate again
    assert lease(kube_client, namespace)["spec"]["holderIdentity"] == "intruder"


def test_default_lease_name_is_the_one_the_rbac_role_allows() -> None:
    import yaml

    from tests.test_writer import SERVE_ROLES

    roles = [d for d in yaml.safe_load_all(SERVE_ROLES.read_text()) if d and d["kind"] == "Role"]
    names = [name for role in roles for rule in role["rules"]
             if "leases" in rule["resources"] for name in rule.get("resourceNames", [])]
    assert names == [DEFAULT_LEASE_NAME]
