"""`eventmesh-health smoke`: the run's life around `run.Smoke` — the receiver, the signals,
the target, the exit code — and the report as text or JSON.

Signals: SIGINT and SIGTERM cancel the run (once), whose `finally` deletes what it created;
a signal during that cleanup is only told to wait; exit 130 / 143 as a shell reports them.
SIGKILL cannot be caught: the next run removes the object once its expiry has passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import signal
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TextIO

from lightkube import ApiError

from eventmesh_health.probing.signing import Verifier
from eventmesh_health.smoke.objects import SMOKE_EVENT_TYPE, new_run_id
from eventmesh_health.smoke.plan import (
    Plan,
    PlanError,
    application_plan,
    flow_plan,
    flow_probe_of,
)
from eventmesh_health.smoke.receiver import SmokeReceiver
from eventmesh_health.smoke.run import Outcome, Smoke, SmokeResult, new_traceparent
from eventmesh_health.smoke.trace import look_up
from eventmesh_health.sources.tracing import TraceBackend
from eventmesh_health.topology import Kind, Profile

__all__ = ["EXIT_SIGNAL", "SmokeSettings", "execute", "print_text"]

EXIT_PASSED, EXIT_FAILED, EXIT_INPUT, EXIT_CLUSTER = 0, 1, 2, 3
EXIT_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}


@dataclass(frozen=True, slots=True)
class SmokeSettings:
    target: str
    namespace: str
    timeout: float
    listen_host: str = "127.0.0.1"
    listen_port: int = 0
    receiver_url: str | None = None  # base URL the mesh reaches the receiver at
    dead_letter_url: str | None = None
    hop_urls: tuple[tuple[str, str], ...] = ()
    trace_backend: TraceBackend | None = None  # --trace-url: the event's trace is looked up
    trace_wait: float = 10.0  # for its spans to reach the backend


class SmokeInputError(Exception):
    """Bad target or settings: exit 2."""


def receiver_base(settings: SmokeSettings, port: int) -> str:
    """Where the mesh sends the event back: --receiver-url, else this Pod's address
    ($POD_IP, in the cluster), else the listening address itself (a mesh on this machine)."""
    if settings.receiver_url:
        return settings.receiver_url.rstrip("/")
    host = os.environ.get("POD_IP") or settings.listen_host
    with contextlib.suppress(ValueError):
        ip = ipaddress.ip_address(host)
        if ip.is_unspecified:
            raise SmokeInputError(f"the receiver listens on {host}, which no mesh can post to: "
                                  "give --receiver-url (or set $POD_IP)")
        if ip.version == 6:
            host = f"[{host}]"
    return f"http://{host}:{port}"


def _resource(kind: Kind) -> Any:
    from lightkube.generic_resource import create_namespaced_resource

    return create_namespaced_resource(kind.group, kind.version, kind.kind, kind.plural)


async def _get(client: Any, kind: Kind, namespace: str, name: str) -> dict[str, Any] | None:
    from lightkube.generic_resource import create_global_resource

    res = (_resource(kind) if kind.namespaced else
           create_global_resource(kind.group, kind.version, kind.kind, kind.plural))
    try:
        obj = await (client.get(res, name, namespace=namespace) if kind.namespaced
                     else client.get(res, name))
    except ApiError as exc:
        if exc.status.code == 404:
            return None
        raise
    return dict(obj.to_dict() if hasattr(obj, "to_dict") else obj)


async def make_plan(client: Any, profile: Profile, settings: SmokeSettings,
                    receiver: str, dead_letter: str) -> Plan:
    hop_urls = dict(settings.hop_urls)
    flow = flow_probe_of(profile, settings.target)
    if flow is None and profile.application is None and profile.data_plane is not None:
        # a bare NAME in a mesh of flows: a Broker of that name, else a Channel
        for probe in profile.data_plane.flows:
            for kind in probe.roots:
                if await _get(client, kind, settings.namespace, settings.target) is not None:
                    flow = (probe, kind, settings.target)
                    break
            if flow is not None:
                break
        if flow is None:
            raise SmokeInputError(f"no Broker or Channel {settings.target!r} in namespace "
                                  f"{settings.namespace}")
    if flow is not None:
        probe, kind, name = flow
        obj = await _get(client, kind, settings.namespace, name)
        if obj is None:
            raise SmokeInputError(f"{kind.kind} {settings.namespace}/{name} does not exist")
        return flow_plan(probe, kind, settings.namespace, name, obj, receiver, dead_letter,
                         hop_urls)
    assert profile.application is not None
    app = await _get(client, profile.application, "", settings.target)
    if app is None:
        raise SmokeInputError(f"no {profile.application.kind} {settings.target!r} (for a "
                              "flow, name it KIND/NAME, e.g. broker/default)")
    objects: dict[tuple[str, str, str], dict[str, Any] | None] = {}
    assert profile.data_plane is not None
    for hop in profile.data_plane.hops:
        ns, name = hop.entry.place(settings.target, settings.namespace)
        objects[(hop.entry.kind.key, ns, name)] = await _get(client, hop.entry.kind, ns, name)

    def get(kind: Kind, ns: str, name: str) -> Mapping[str, Any] | None:
        return objects.get((kind.key, ns, name))

    try:
        return application_plan(profile, settings.target, settings.namespace, get, receiver,
                                dead_letter, hop_urls)
    except PlanError as err:
        raise SmokeInputError(str(err)) from None


async def execute(client: Any, profile: Profile, settings: SmokeSettings,
                  on_signal: Callable[[str], None] | None = None) -> tuple[SmokeResult, int]:
    """The whole run; (result, exit code). Raises `SmokeInputError`, and cluster errors
    from before anything was created."""
    run = new_run_id()
    traceparent, trace_id = new_traceparent()
    keyring = Smoke.new_keyring()
    receiver = SmokeReceiver(run, SMOKE_EVENT_TYPE, Verifier(keyring),
                             host=settings.listen_host, port=settings.listen_port)
    result = SmokeResult(settings.target, profile.name, run, trace_id)
    kinds = tuple(profile.data_plane.subscriber_kinds) if profile.data_plane else ()
    smoke = Smoke(client, profile, kinds, settings.timeout, receiver, keyring, result)
    task = asyncio.current_task()
    assert task is not None
    caught: list[signal.Signals] = []

    cleaning: list[bool] = []

    def handle(sig: signal.Signals) -> None:
        if caught or cleaning:
            if on_signal:
                on_signal(f"{sig.name}: cleaning up, wait a few seconds")
            caught[:] = caught or [sig]
            return
        caught.append(sig)
        if on_signal:
            on_signal(f"{sig.name}: stopping, removing what this run created")
        task.cancel()

    loop = asyncio.get_running_loop()
    for sig in EXIT_SIGNAL:
        loop.add_signal_handler(sig, handle, sig)
    try:
        port = await receiver.start()
        base = receiver_base(settings, port)
        dead = (settings.dead_letter_url.rstrip("/") if settings.dead_letter_url else base)
        plan = await make_plan(client, profile, settings, base + receiver.path + "/event",
                               dead + receiver.path + "/deadletter")
        result.target = plan.what
        await smoke.sweep()
        await smoke.run(plan, traceparent)
    except asyncio.CancelledError:
        if not caught:
            raise
        result.outcome = Outcome.INTERRUPTED
        result.failed_at = f"interrupted by {caught[0].name}"
    finally:
        cleaning.append(True)  # from here on a signal no longer cancels: it would leak
        await smoke.cleanup()
        await receiver.stop()
        for sig in EXIT_SIGNAL:
            loop.remove_signal_handler(sig)
    if caught:
        return result, EXIT_SIGNAL[caught[0]]
    if settings.trace_backend is not None and result.event_id:
        result.trace = await asyncio.to_thread(look_up, settings.trace_backend,
                                               result.trace_id, settings.trace_wait)
    return result, EXIT_PASSED if result.outcome == Outcome.PASSED else EXIT_FAILED


_MARK = {True: "✓", False: "✗", None: "·"}


def print_text(result: SmokeResult, out: TextIO = sys.stdout) -> None:
    verdict = {Outcome.PASSED: "PASSED", Outcome.FAILED: "FAILED", Outcome.TIMEOUT: "TIMED OUT",
               Outcome.INTERRUPTED: "INTERRUPTED"}[result.outcome]
    print(f"Smoke test of {result.target} ({result.profile}), run {result.run}", file=out)
    print(f"  event {result.event_id or '(not sent)'}, trace {result.trace_id}", file=out)
    for step in result.steps:
        took = f"  [{step.seconds:.2f}s]" if step.seconds is not None else ""
        print(f"  {_MARK[step.ok]} {step.name:<25} {step.detail}{took}", file=out)
    if result.outcome == Outcome.PASSED:
        trace = {True: "traceparent arrived with it", False: "traceparent not propagated",
                 None: ""}[result.trace_propagated]
        print(f"Result: ✓ {verdict}: delivered in {result.latency or 0:.3f}s"
              + (f" ({trace})" if trace else ""), file=out)
    elif result.outcome == Outcome.INTERRUPTED:
        print(f"Result: ✗ {verdict} ({result.failed_at}); what it created is removed", file=out)
    else:
        print(f"Result: ✗ {verdict}: the event did not pass {result.failed_at}", file=out)
    if result.trace is not None:
        print(f"  {result.trace.line()}", file=out)
    if result.left_behind:
        print(f"Left behind (removed by the next run): {', '.join(result.left_behind)}",
              file=out)
