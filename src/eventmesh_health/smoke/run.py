"""One smoke run against a live cluster: sweep, create, wait, send, receive, clean up.

`Smoke.run()` never leaves what it created behind when it returns or is cancelled
(SIGINT/SIGTERM cancel it: the CLI's handlers): the delete of the run's object is in a
`finally`, by its deterministic name (a create cancelled in flight may have succeeded),
with a time budget of its own; signals during the cleanup do not interrupt it. Only SIGKILL (or a
lost API server) can leave it; then its expiry annotation lets the next run remove it.

Steps, each reported with its outcome and duration:

1. `leftovers`: labelled objects of earlier runs, of every kind a smoke run creates, in
   every namespace; the expired ones are deleted (and named), younger ones left to the run
   that owns them. A removal waits until the object and what it controls are gone (see
   `Smoke._remove`).
2. `created`: the Trigger/Subscription, from `plan.Plan`.
3. `ready`: it is Ready for its generation and, when it subscribes through a channel (a
   Trigger's own Subscription, or itself), that channel's dispatcher has acknowledged the
   subscription (`status.subscribers`): Ready alone comes before the data plane routes to
   it (tests/knative saw an event sent at once lost).
4. `entry`: one signed CloudEvent (id, `traceparent`) posted to the real entry point; its
   HTTP answer.
5. `received`: the event at the receiver (latency since the send), or as a dead letter
   (the subscriber hop failed: code and destination), or nothing by the deadline.
6. On a failure, `localise`: one more event (new id) into each further injection point
   (the trigger channel; a Kyma application's Channel and broker ingress), each waited for
   in the time left; the failing hop is the segment between the last injection point that
   failed and the first that passed (probing's hop localisation, for one run).
7. `cleanup`: the object deleted, and gone with what it controls, so that the next run
   starts clean.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from lightkube import ApiError, operators
from lightkube.generic_resource import create_namespaced_resource

from eventmesh_health.probing.heartbeat import new_heartbeat, to_binary, to_legacy
from eventmesh_health.probing.signing import Key, Keyring
from eventmesh_health.smoke.objects import (
    SMOKE_EVENT_TYPE,
    SMOKE_LABEL,
    Leftover,
    expired,
    expires_at,
    leftover,
    object_name,
    relabel,
)
from eventmesh_health.smoke.plan import Injection, Plan
from eventmesh_health.smoke.receiver import Arrival, SmokeReceiver
from eventmesh_health.smoke.trace import SmokeTrace
from eventmesh_health.topology import Kind, Profile

__all__ = ["Outcome", "Smoke", "SmokeResult", "Step", "new_traceparent"]

POLL = 0.2
PASSED, REFUSED, REJECTED, LOST, DEAD = "passed", "refused", "rejected", "lost", "dead"
LOCALISE_BUDGET = 10.0  # seconds, at least, for the further injections after a failure
CLEANUP_BUDGET = 15.0  # seconds the cleanup may take after the deadline or a signal
REMOVAL_WAIT = 10.0  # seconds a removal waits for the object and its dependents to be gone


class Outcome:
    PASSED = "passed"
    FAILED = "failed"
    TIMEOUT = "timeout"
    INTERRUPTED = "interrupted"


@dataclass
class Step:
    name: str
    ok: bool | None  # None: not reached / not applicable
    detail: str
    seconds: float | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"step": self.name, "ok": self.ok, "detail": self.detail}
        if self.seconds is not None:
            out["seconds"] = round(self.seconds, 3)
        return out


@dataclass
class SmokeResult:
    target: str
    profile: str
    run: str
    trace_id: str
    event_id: str = ""
    outcome: str = Outcome.FAILED
    failed_at: str | None = None  # the hop/segment the event did not pass
    latency: float | None = None  # seconds, send → received
    steps: list[Step] = field(default_factory=list)
    leftovers_removed: list[str] = field(default_factory=list)
    leftovers_kept: list[str] = field(default_factory=list)
    left_behind: list[str] = field(default_factory=list)  # could not be deleted (!)
    trace_propagated: bool | None = None  # the traceparent arrived with the event
    trace: SmokeTrace | None = None  # with --trace-url: where the backend's trace stops

    def step(self, name: str, ok: bool | None, detail: str,
             seconds: float | None = None) -> Step:
        s = Step(name, ok, detail, seconds)
        self.steps.append(s)
        return s

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target, "profile": self.profile, "run": self.run,
            "outcome": self.outcome, "passed": self.outcome == Outcome.PASSED,
            "failedAt": self.failed_at, "eventId": self.event_id,
            "traceId": self.trace_id, "traceParentReceived": self.trace_propagated,
            "latencySeconds": None if self.latency is None else round(self.latency, 3),
            "steps": [s.to_json() for s in self.steps],
            "leftovers": {"removed": self.leftovers_removed, "kept": self.leftovers_kept},
            "leftBehind": self.left_behind,
            "trace": None if self.trace is None else self.trace.to_json(),
        }


def new_traceparent() -> tuple[str, str]:
    """(W3C `traceparent` header value, its trace id): version 00, sampled."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id


def _resource(kind: Kind) -> Any:
    return create_namespaced_resource(kind.group, kind.version, kind.kind, kind.plural)


def _plain(obj: Any) -> dict[str, Any]:
    return dict(obj.to_dict() if hasattr(obj, "to_dict") else obj)


def _status_code(exc: BaseException) -> int | None:
    if isinstance(exc, ApiError):
        return int(exc.status.code or 0)
    return None


def _conditions(obj: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    out = {}
    for c in (obj.get("status") or {}).get("conditions") or []:
        if isinstance(c, Mapping) and isinstance(c.get("type"), str):
            out[c["type"]] = c
    return out


def _ready(obj: Mapping[str, Any]) -> bool:
    ready = _conditions(obj).get("Ready") or {}
    if ready.get("status") != "True":
        return False
    observed = (obj.get("status") or {}).get("observedGeneration")
    return observed is None or observed == (obj.get("metadata") or {}).get("generation")


def _not_ready_text(obj: Mapping[str, Any] | None) -> str:
    if obj is None:
        return "never read"
    conds = _conditions(obj)
    if not conds:
        return "no status written by its controller"
    ready = conds.get("Ready") or {}
    why = ready.get("reason") or ""
    message = str(ready.get("message") or "")[:200]
    return (f"Ready={ready.get('status', 'missing')}"
            + (f" ({why})" if why else "") + (f": {message}" if message else ""))


@dataclass
class Smoke:
    """One run. `client`: a lightkube AsyncClient; `kinds`: what a run creates (to sweep)."""

    client: Any
    profile: Profile
    kinds: tuple[Kind, ...]
    timeout: float
    receiver: SmokeReceiver
    keyring: Keyring
    result: SmokeResult
    http_timeout: float = 10.0
    _deadline: float = 0.0
    _created: tuple[Kind, str, str] | None = None
    _created_uid: str = ""

    @staticmethod
    def new_keyring() -> Keyring:
        """An ephemeral key: the receiver takes only what this run signed."""
        return Keyring(Key("smoke", os.urandom(32)))

    def left(self) -> float:
        return max(0.0, self._deadline - time.monotonic())

    # -- the run ------------------------------------------------------------------------

    async def sweep(self) -> None:
        """Step 1. Expired labelled objects of earlier runs are deleted."""
        began = time.monotonic()
        now = datetime.now(UTC)
        found: list[tuple[Kind, Leftover]] = []
        for kind in self.kinds:
            try:
                async for obj in self.client.list(_resource(kind), namespace="*",
                                                  labels={SMOKE_LABEL: operators.exists()}):
                    item = leftover(_plain(obj))
                    if item is not None and item.run != self.result.run:
                        found.append((kind, item))
            except ApiError as exc:
                if _status_code(exc) != 404:  # a combined profile: a version not served
                    raise
        until = time.monotonic() + REMOVAL_WAIT
        lingering: list[str] = []
        for kind, item in found:
            if not expired(item, now):
                self.result.leftovers_kept.append(
                    f"{item.text()}, in use until {item.expires:%Y-%m-%dT%H:%M:%SZ}")
                continue
            lingering += await self._remove(kind, item.namespace, item.name, item.uid, until)
            self.result.leftovers_removed.append(item.text())
        removed = self.result.leftovers_removed
        detail = (f"removed {len(removed)} of a killed run: {', '.join(removed)}" if removed
                  else "none")
        if lingering:
            detail += (f"; still there after {REMOVAL_WAIT:g}s: {', '.join(lingering)} (a "
                       "Subscription still in its channel is still fanned out to: the "
                       "broker ingress may answer 500 until it is gone)")
        if self.result.leftovers_kept:
            detail += f"; {len(self.result.leftovers_kept)} of runs still going left alone"
        self.result.step("leftovers", True, detail, time.monotonic() - began)

    async def run(self, plan: Plan, traceparent: str) -> None:
        """Steps 2-6 (the caller runs `sweep` before and `cleanup` after, in `finally`)."""
        self._deadline = time.monotonic() + self.timeout
        res = self.result
        started = datetime.now(UTC)
        body = relabel(plan.body, res.run, expires_at(started, timedelta(seconds=self.timeout)))
        kind = plan.subscriber_kind
        name, namespace = object_name(res.run), plan.object_namespace
        began = time.monotonic()
        self._created = (kind, namespace, name)
        made = _plain(await self.client.create(_resource(kind).from_dict(body)))
        self._created_uid = str((made.get("metadata") or {}).get("uid") or "")
        subscriber = body["spec"].get("subscriber", {}).get("uri", "")
        res.step("created", True, f"{kind.kind} {namespace}/{name} → the receiver "
                 f"{_without_path(subscriber)}", time.monotonic() - began)

        began = time.monotonic()
        ok, text = await self._wait_ready(kind, namespace, name)
        res.step("ready", ok, text, time.monotonic() - began)
        if not ok:
            res.outcome = Outcome.TIMEOUT
            res.failed_at = f"{kind.kind} {namespace}/{name} never became Ready: {text}"
            return

        first, *rest = plan.injections
        verdict, arrival = await self._inject(first, plan, traceparent, primary=True)
        if verdict == PASSED:
            res.outcome = Outcome.PASSED
            return
        if verdict == DEAD and arrival is not None:
            res.failed_at = _dead_letter_text(arrival, rest)
            return
        if verdict == REFUSED:
            res.failed_at = f"{first.entry_text}: no answer"
            return
        # Which segment: an event injected further down that arrives vouches for everything
        # below its injection point, so the break is in the segment above it; one that
        # gets no answer names that injection point itself.
        failing = first
        for injection in rest:
            # A lost event used the whole deadline: each further one gets a budget too.
            self._deadline = max(self._deadline, time.monotonic() + min(self.timeout,
                                                                        LOCALISE_BUDGET))
            if injection.url is None:
                res.step(f"localise {injection.hop}", None, f"{injection.entry_text}: no "
                         f"address known (--hop-url {injection.hop}=URL)")
                break
            verdict, _ = await self._inject(injection, plan, None, primary=False)
            if verdict == PASSED:
                break
            if verdict == REFUSED:
                res.failed_at = f"{injection.entry_text}: no answer"
                return
            failing = injection
        res.failed_at = failing.segment_text

    async def _inject(self, injection: Injection, plan: Plan, traceparent: str | None, *,
                      primary: bool) -> tuple[str, Arrival | None]:
        """Post one event at `injection` and wait for it: (PASSED | REFUSED | REJECTED |
        LOST | DEAD, the arrival)."""
        res = self.result
        label = "entry" if primary else f"localise {injection.hop}"
        received = "received" if primary else f"{label} received"
        if injection.url is None:
            res.step(label, False, f"{injection.entry_text}: no address (the root has none "
                     f"in its status; give --hop-url {injection.hop}=URL)")
            return REJECTED, None
        hb = self.keyring.sign(new_heartbeat(
            plan.source, injection.heartbeat_hop, 1, run=res.run, at=datetime.now(UTC),
            type=SMOKE_EVENT_TYPE,
            namespace=plan.object_namespace if injection.heartbeat_hop.value == "broker"
            else None))
        headers, body = to_legacy(hb) if injection.legacy else to_binary(hb)
        if traceparent is not None:
            headers["traceparent"] = traceparent
        if primary:
            res.event_id = hb.id
        began = time.monotonic()
        status, error = await self._post(injection.url, headers, body)
        took = time.monotonic() - began
        answered = f"answered HTTP {status}" if status is not None else f"no answer: {error}"
        accepted = status is not None and 200 <= status < 300
        res.step(label, accepted, f"POST {injection.entry_text} ({injection.url}) {answered}",
                 took)
        if status is None:
            if self.left() <= 0 and primary:
                res.outcome = Outcome.TIMEOUT
            return REFUSED, None
        if not accepted:
            return REJECTED, None
        arrival = await self.receiver.wait(hb.id, self.left())
        if arrival is None:
            if self.left() <= 0:
                res.outcome = Outcome.TIMEOUT
            res.step(received, False, f"not received within the deadline ({self.timeout:g}s)")
            return LOST, None
        latency = arrival.at - began
        if arrival.dead_letter:
            why = (f"{_without_path(arrival.error_dest)} answered "
                   f"{arrival.error_code or 'nothing'}" if arrival.error_dest
                   else "no knativeerrordest: the hop that failed gave no answer")
            res.step(received, False, f"dead-lettered after {latency:.3f}s: {why}", latency)
            return DEAD, arrival
        if primary:
            res.latency = latency
            res.trace_propagated = arrival.traceparent is not None and (
                res.trace_id in arrival.traceparent)
        res.step(received, True, f"at the receiver after {latency:.3f}s", latency)
        return PASSED, arrival

    async def _post(self, url: str, headers: dict[str, str],
                    body: bytes) -> tuple[int | None, str | None]:
        timeout = aiohttp.ClientTimeout(total=max(0.5, min(self.http_timeout, self.left())))
        try:
            async with (aiohttp.ClientSession(timeout=timeout, trust_env=False) as http,
                        http.post(url, headers=headers, data=body) as answer):
                await answer.read()
                return answer.status, None
        except TimeoutError:
            return None, "timed out"
        except aiohttp.ClientError as exc:
            return None, (str(exc) or type(exc).__name__)[:200]

    async def _wait_ready(self, kind: Kind, namespace: str, name: str) -> tuple[bool, str]:
        began = time.monotonic()
        obj: dict[str, Any] | None = None
        while True:
            try:
                obj = _plain(await self.client.get(_resource(kind), name, namespace=namespace))
            except ApiError as exc:
                if _status_code(exc) != 404:
                    raise
            if obj is not None and _ready(obj):
                acked, why = await self._acknowledged(obj)
                if acked:
                    return True, f"Ready after {time.monotonic() - began:.2f}s"
            else:
                why = _not_ready_text(obj)
            if self.left() <= 0:
                return False, f"not Ready within the deadline ({self.timeout:g}s): {why}"
            await asyncio.sleep(min(POLL, self.left()))

    async def _acknowledged(self, obj: Mapping[str, Any]) -> tuple[bool, str]:
        """Its subscription (itself, or the Subscription it owns) is in its channel's
        `status.subscribers` as ready, at its generation (knative/eventing@v0.48.0
        pkg/channel/fanout: the dispatcher routes only to acknowledged subscribers)."""
        subscription = obj if obj.get("kind") == "Subscription" else None
        meta = obj.get("metadata") or {}
        if subscription is None:
            sub_kind = self._kind("Subscription", obj)
            if sub_kind is None:
                return True, ""
            async for item in self.client.list(_resource(sub_kind),
                                               namespace=meta.get("namespace")):
                raw = _plain(item)
                owners = (raw.get("metadata") or {}).get("ownerReferences") or []
                if any(o.get("uid") == meta.get("uid") for o in owners):
                    subscription = raw
                    break
            if subscription is None:
                return True, ""  # a Trigger without a Subscription of its own (Kafka)
        ref = (subscription.get("spec") or {}).get("channel") or {}
        channel_kind = self._kind(str(ref.get("kind")), ref)
        if channel_kind is None or not ref.get("name"):
            return True, ""
        sub_meta = subscription.get("metadata") or {}
        try:
            channel = _plain(await self.client.get(
                _resource(channel_kind), ref["name"],
                namespace=ref.get("namespace") or sub_meta.get("namespace")))
        except ApiError:
            return False, f"its channel {ref.get('kind')} {ref['name']} cannot be read"
        for entry in (channel.get("status") or {}).get("subscribers") or []:
            if (entry.get("uid") == sub_meta.get("uid")
                    and entry.get("observedGeneration") == sub_meta.get("generation")):
                if entry.get("ready") == "True":
                    return True, ""
                return False, (f"its channel {ref.get('kind')} {ref['name']} has not accepted "
                               f"the subscription: {str(entry.get('message') or '')[:200]}")
        return False, (f"Ready, but the dispatcher of {ref.get('kind')} {ref['name']} has not "
                       "acknowledged the subscription yet")

    def _kind(self, kind: str, obj: Mapping[str, Any]) -> Kind | None:
        """The profile's kind of this name: at `obj`'s apiVersion, else in its group, else
        at its version (a Trigger's Subscription: another group, the same generation of
        Knative), else any."""
        group, _, version = str(obj.get("apiVersion", "")).rpartition("/")
        same = [k for k in self.profile.kinds if k.kind == kind]
        for fits in (lambda k: k.group == group and k.version == version,
                     lambda k: k.group == group, lambda k: k.version == version,
                     lambda k: True):
            found = next((k for k in same if fits(k)), None)
            if found is not None:
                return found
        return None

    async def _remove(self, kind: Kind, namespace: str, name: str, uid: str,
                      until: float) -> list[str]:
        """Delete one object of ours, then wait (until `until`, monotonic) for it and for what
        it controls to be gone; what is still there, named. A Trigger's Subscription goes
        only after the Trigger (the garbage collector deletes it), and while it is in the
        channel the dispatcher still fans out to it: its subscriber gone, every event of the
        next run gets HTTP 500 at the broker ingress (tests/test_smoke_knative.py saw it)."""
        if not uid:  # a create cancelled in flight: its answer, and so its uid, never came
            try:
                found = _plain(await self.client.get(_resource(kind), name, namespace=namespace))
                uid = str((found.get("metadata") or {}).get("uid") or "")
            except ApiError as exc:
                if _status_code(exc) != 404:
                    raise
        try:
            await self.client.delete(_resource(kind), name, namespace=namespace)
        except ApiError as exc:
            if _status_code(exc) != 404:
                raise
        version = {"apiVersion": f"{kind.group}/{kind.version}"}
        sub_kind = (None if kind.kind == "Subscription" or not uid
                    else self._kind("Subscription", version))
        while True:
            left = []
            try:
                await self.client.get(_resource(kind), name, namespace=namespace)
                left.append(f"{kind.kind} {namespace}/{name} (a finalizer holds it)")
            except ApiError as exc:
                if _status_code(exc) != 404:
                    raise
            if sub_kind is not None:
                async for obj in self.client.list(_resource(sub_kind), namespace=namespace):
                    meta = _plain(obj).get("metadata") or {}
                    if any(o.get("uid") == uid for o in meta.get("ownerReferences") or []):
                        left.append(f"{sub_kind.kind} {namespace}/{meta.get('name')} (of "
                                    f"{kind.kind} {name})")
            if not left or time.monotonic() >= until:
                return left
            await asyncio.sleep(POLL)

    async def cleanup(self) -> None:
        """Step 7: delete what this run created (by name; 404 is fine) and wait for it and
        what it controls to be gone, within the cleanup's budget."""
        if self._created is None:
            return
        kind, namespace, name = self._created
        began = time.monotonic()
        until = began + min(REMOVAL_WAIT, CLEANUP_BUDGET)
        try:
            lingering = await asyncio.wait_for(
                self._remove(kind, namespace, name, self._created_uid, until), CLEANUP_BUDGET)
        except ApiError as exc:
            if _status_code(exc) != 404:
                self.result.left_behind.append(f"{kind.kind} {namespace}/{name}")
                self.result.step("cleanup", False, f"{kind.kind} {namespace}/{name} could not "
                                 f"be deleted: {exc.status.message}; the next run removes it",
                                 time.monotonic() - began)
                return
        except Exception as exc:
            self.result.left_behind.append(f"{kind.kind} {namespace}/{name}")
            self.result.step("cleanup", False, f"{kind.kind} {namespace}/{name} could not be "
                             f"deleted ({type(exc).__name__}); the next run removes it",
                             time.monotonic() - began)
            return
        self._created = None
        detail = f"{kind.kind} {namespace}/{name} deleted"
        if lingering:
            detail += (f"; still there after {time.monotonic() - began:.1f}s: "
                       f"{', '.join(lingering)}")
        self.result.step("cleanup", True, detail, time.monotonic() - began)


def _dead_letter_text(arrival: Arrival, further: list[Injection]) -> str:
    """Which hop a dead letter blames. With `knativeerrordest`: that destination (the
    subscriber, or whatever the dispatcher could not deliver to). Without: the Knative v1
    dispatcher drops the error extensions when the broker filter failed with no answer it
    can read (knative/eventing@v0.48.0 pkg/kncloudevents/event_dispatcher.go
    dispatchExecutionInfoTransformers), so the hop after the trigger channel."""
    if arrival.error_dest:
        return (f"the subscriber: delivery to {_without_path(arrival.error_dest)} failed "
                f"(HTTP {arrival.error_code or 'none'}), dead-lettered")
    if further:
        return (f"{further[-1].segment_text}: dead-lettered without an error destination "
                "(no answer from the broker filter)")
    return "a hop before the subscriber: dead-lettered without an error destination"


def _without_path(url: str) -> str:
    """A URL without its path: the receiver's path holds its token, never printed."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme}{sep}{rest.split('/', 1)[0]}" if sep else url[:100]
