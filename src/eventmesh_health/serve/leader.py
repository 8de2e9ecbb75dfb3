"""Leader election on a `coordination.k8s.io/v1` Lease, as client-go's `leaderelection` does it.

Several `serve` replicas may run; only the leader writes (`serve/writer.py` asks `is_leader`
right before every write). The Lease (in the checker's own namespace) records the leader:

- **Acquire** when nobody holds the Lease (`holderIdentity` empty, or no Lease yet: it is
  created) or the holder's lease has expired: the record has not changed for
  `leaseDurationSeconds` *as observed by this replica's own monotonic clock* (never by
  comparing the holder's `renewTime` with our wall clock: clocks of different nodes differ).
  Acquiring writes holderIdentity, acquireTime, renewTime, leaseDurationSeconds and
  `leaseTransitions` + 1.
- **Renew** every `retry_period`: renewTime is updated (the leader writes its own last-known
  version directly; only a conflict makes it re-read the Lease).
- **Optimistic concurrency**: every update carries the resourceVersion it was based on; a 409
  Conflict means another replica wrote first, and this attempt has lost.
- **Step down in time**: a leader whose last successful renewal was sent `renew_deadline` ago
  is no leader any more, at once: `is_leader` is computed from the monotonic clock on every
  call, so it turns `False` exactly at the deadline even if the renewing coroutine is stuck in
  a request (or the event loop was busy). Because `renew_deadline < lease_duration`, and the
  others start counting a renewal's lease only when they *see* it (after it was sent), the old
  leader has stopped considering itself leader `lease_duration - renew_deadline` before anyone
  else may take over: it never writes as a non-leader.
- **Release** on a clean shutdown (the `run()` task is cancelled): `is_leader` turns `False`
  first, then the Lease is written with holderIdentity, acquireTime and renewTime cleared and
  `leaseDurationSeconds: 1`, so a successor takes over at its next try, within
  `retry_period`, instead of waiting for the lease to expire.

Takeover after a leader dies (stops renewing without releasing) happens within
`lease_duration` plus at most one `retry_period` after its last renewal: the others see a
renewal only when they next read the Lease (up to `retry_period` later), and a candidate
that has seen the lease schedules its next try for the moment it expires.

Unlike client-go's `Run`, which returns when leadership is lost, `run()` keeps competing
until it is cancelled: a replica that lost the lease becomes a candidate again.
`on_started_leading` / `on_stopped_leading` are called on each change (plain callables, run
in the event loop; they must not block).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import httpx2
from lightkube import ApiError, AsyncClient

from eventmesh_health.sources.cluster import resource_class
from eventmesh_health.topology import Kind

__all__ = ["DEFAULT_LEASE_NAME", "LEASE_KIND", "LeaderElector"]

log = logging.getLogger(__name__)

LEASE_KIND = Kind("coordination.k8s.io/v1", "Lease", "leases")
DEFAULT_LEASE_NAME = "eventmesh-health-serve"
_RELEASED_DURATION = 1  # seconds, as client-go writes on release


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _micro_time(moment: datetime) -> str:
    """metav1.MicroTime, as the Lease's acquireTime and renewTime are."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """Competes for the Lease `namespace/name` as `identity` (unique per replica, e.g. the
    Pod name); `run()` until cancelled, read `is_leader`."""

    def __init__(
        self,
        client: AsyncClient,
        namespace: str,
        name: str,
        identity: str,
        *,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        on_started_leading: Callable[[], None] | None = None,
        on_stopped_leading: Callable[[], None] | None = None,
        release_on_cancel: bool = True,
        now: Callable[[], datetime] = _utcnow,
    ) -> None:
        if not identity:
            raise ValueError("leader election: identity must not be empty")
        if not 0 < retry_period < renew_deadline < lease_duration:
            raise ValueError(
                "leader election: need 0 < retry_period < renew_deadline < lease_duration "
                f"(got {retry_period}, {renew_deadline}, {lease_duration})"
            )
        self._client = client
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self._lease_seconds = math.ceil(lease_duration)
        self._on_started = on_started_leading
        self._on_stopped = on_stopped_leading
        self._release_on_cancel = release_on_cancel
        self._now = now
        self._res = resource_class(LEASE_KIND)

        self._leading = False
        self._renewed_at = -math.inf  # monotonic: when the last successful write was sent
        self._lease: dict[str, Any] | None = None  # the Lease as our last write left it
        self._observed_version: str | None = None
        self._observed_at = -math.inf  # monotonic: when the observed record last changed
        self._observed_duration = float(self._lease_seconds)
        self._holder: str | None = None

    # -- state ---------------------------------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        """True only while leading and the last renewal is younger than `renew_deadline`."""
        return self._leading and time.monotonic() - self._renewed_at < self.renew_deadline

    @property
    def holder(self) -> str | None:
        """The holder identity last seen on the Lease (None: free or not read yet)."""
        return self._holder

    # -- the loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Acquire, lead while renewing, step down when renewals fail; again, until
        cancelled. On cancellation the Lease is released if held (`release_on_cancel`)."""
        try:
            while True:
                await self._acquire()
                self._start_leading()
                await self._keep_renewing()
                self._stop_leading("could not renew the lease within the renew deadline")
        except asyncio.CancelledError:
            held = self._leading
            self._stop_leading("shutting down")
            if held and self._release_on_cancel:
                await self._release()
            raise

    async def _acquire(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self.renew_deadline):
                    acquired = await self._attempt()
            except TimeoutError:
                log.warning("leader election: lease %s/%s: no answer within %ss",
                            self.namespace, self.name, self.renew_deadline)
                acquired = False
            if acquired:
                return
            await asyncio.sleep(self._next_try())

    def _next_try(self) -> float:
        """Seconds until the next try: `retry_period`, or less when the lease we saw
        expires sooner (so a dead leader is replaced as soon as its lease runs out)."""
        expires_in = self._observed_at + self._observed_duration - time.monotonic()
        if 0 < expires_in < self.retry_period:
            return expires_in + 0.005
        return self.retry_period

    async def _keep_renewing(self) -> None:
        """Returns when leadership is lost."""
        while True:
            await asyncio.sleep(self.retry_period)
            while True:
                remaining = self._renewed_at + self.renew_deadline - time.monotonic()
                if remaining <= 0:
                    return
                try:
                    async with asyncio.timeout(remaining):
                        renewed = await self._attempt()
                except TimeoutError:
                    return
                if renewed:
                    break
                if self._holder not in (None, self.identity):
                    return  # someone else holds it: no point waiting for the deadline
                remaining = self._renewed_at + self.renew_deadline - time.monotonic()
                await asyncio.sleep(max(0.0, min(self.retry_period, remaining)))

    def _start_leading(self) -> None:
        self._leading = True
        log.info("leader election: %s is now the leader (lease %s/%s)",
                 self.identity, self.namespace, self.name)
        self._call(self._on_started)

    def _stop_leading(self, why: str) -> None:
        if not self._leading:
            return
        self._leading = False
        log.warning("leader election: %s stopped leading: %s", self.identity, why)
        self._call(self._on_stopped)

    @staticmethod
    def _call(callback: Callable[[], None] | None) -> None:
        if callback is None:
            return
        try:
            callback()
        except Exception:
            log.exception("leader election: callback failed")

    # -- one try -------------------------------------------------------------------------------

    async def _attempt(self) -> bool:
        try:
            return await self._try_acquire_or_renew()
        except (ApiError, httpx2.HTTPError) as err:
            log.warning("leader election: lease %s/%s: %s", self.namespace, self.name,
                        _describe(err))
            return False

    async def _try_acquire_or_renew(self) -> bool:
        sent = time.monotonic()
        now = _micro_time(self._now())
        if self._leading and self._lease is not None:
            # Fast path: we hold it and know its last version; a conflict makes us re-read.
            body = _with_spec(self._lease, {
                **(self._lease.get("spec") or {}),
                "holderIdentity": self.identity,
                "leaseDurationSeconds": self._lease_seconds,
                "renewTime": now,
            })
            try:
                updated = await self._client.replace(self._res(body))
            except ApiError as err:
                if _code(err) != 409:
                    raise
            else:
                self._accept(updated, sent)
                return True
        try:
            current = _as_dict(await self._client.get(self._res, self.name,
                                                      namespace=self.namespace))
        except ApiError as err:
            if _code(err) != 404:
                raise
            return await self._create(now, sent)
        self._observe(current)
        spec: Mapping[str, Any] = current.get("spec") or {}
        holder = str(spec.get("holderIdentity") or "")
        if holder and holder != self.identity and self._observed_valid():
            return False
        transitions = int(spec.get("leaseTransitions") or 0)
        ours = holder == self.identity
        body = _with_spec(current, {
            **spec,
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self._lease_seconds,
            "acquireTime": spec.get("acquireTime") if ours and spec.get("acquireTime") else now,
            "renewTime": now,
            "leaseTransitions": transitions if ours else transitions + 1,
        })
        try:
            updated = await self._client.replace(self._res(body))
        except ApiError as err:
            if _code(err) == 409:
                return False  # someone else wrote first
            raise
        self._accept(updated, sent)
        return True

    async def _create(self, now: str, sent: float) -> bool:
        body = {
            "apiVersion": LEASE_KIND.api_version,
            "kind": LEASE_KIND.kind,
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": self._lease_seconds,
                "acquireTime": now,
                "renewTime": now,
                "leaseTransitions": 0,
            },
        }
        try:
            created = await self._client.create(self._res(body))
        except ApiError as err:
            if _code(err) == 409:
                return False  # another replica created it first
            raise
        self._accept(created, sent)
        return True

    def _accept(self, lease: Any, sent: float) -> None:
        """Our write succeeded: it was sent at `sent` (monotonic)."""
        self._lease = _as_dict(lease)
        self._observe(self._lease)
        self._renewed_at = sent

    def _observe(self, lease: Mapping[str, Any]) -> None:
        metadata = lease.get("metadata") or {}
        version = str(metadata.get("resourceVersion") or "")
        spec = lease.get("spec") or {}
        self._holder = str(spec.get("holderIdentity") or "") or None
        if version != self._observed_version:
            self._observed_version = version
            self._observed_at = time.monotonic()
            self._observed_duration = float(spec.get("leaseDurationSeconds")
                                            or self._lease_seconds)

    def _observed_valid(self) -> bool:
        return time.monotonic() < self._observed_at + self._observed_duration

    async def _release(self) -> None:
        """Give the Lease up so that a successor need not wait for it to expire."""
        if self._lease is None:
            return
        spec = {
            k: v for k, v in (self._lease.get("spec") or {}).items()
            if k not in ("holderIdentity", "acquireTime", "renewTime")
        }
        spec["leaseDurationSeconds"] = _RELEASED_DURATION
        try:
            async with asyncio.timeout(self.renew_deadline):
                released = await self._client.replace(self._res(_with_spec(self._lease, spec)))
        except (ApiError, httpx2.HTTPError, TimeoutError) as err:
            why = _describe(err) if isinstance(err, httpx2.HTTPError) else "timed out"
            log.warning("leader election: releasing lease %s/%s failed: %s",
                        self.namespace, self.name, why)
            return
        self._lease = None
        self._observe(_as_dict(released))
        log.info("leader election: %s released lease %s/%s",
                 self.identity, self.namespace, self.name)


def _with_spec(lease: Mapping[str, Any], spec: Mapping[str, Any]) -> dict[str, Any]:
    """The Lease to PUT: its metadata (with the resourceVersion it is based on, without
    managedFields) and the new spec."""
    metadata = {k: v for k, v in (lease.get("metadata") or {}).items() if k != "managedFields"}
    return {
        "apiVersion": LEASE_KIND.api_version,
        "kind": LEASE_KIND.kind,
        "metadata": metadata,
        "spec": {k: v for k, v in spec.items() if v is not None},
    }


def _as_dict(obj: Any) -> dict[str, Any]:
    if isinstance(obj, dict):
        return dict(obj)
    result: dict[str, Any] = obj.to_dict()
    return result


def _code(err: ApiError) -> int:
    return int(err.status.code or err.response.status_code)


def _describe(err: httpx2.HTTPError) -> str:
    if isinstance(err, ApiError):
        return f"HTTP {_code(err)}: {err.status.message or err.status.reason}"
    return " ".join(str(err).split()) or type(err).__name__
