"""Time to report a data-plane fault, and to clear it, as a multiple of the probe interval.

    .venv/bin/python benchmarks/bench_detection.py [--interval 6] [--trials 14]
                                                   [--kinds drop delay duplicate error stop]
                                                   [--mesh both|emulated|knative]
                                                   [--knative-trials 6]

What runs: `serve --probe` in this process against a real kube-apiserver + etcd (the
envtest binaries of `make envtest`) holding the bundled healthy example mesh, and the
emulated data plane (`tests/emulator`) in a process of its own, routing by the live
Triggers and Subscriptions - the set-up of `tests/test_probe_e2e.py`. Per fault kind and
trial: wait a random fraction of an interval (so faults fall anywhere between probing
rounds, not just after one), inject the fault at a hop (cycling through every hop a
heartbeat crosses: event-service, adapter, the Channel -> Broker edge, broker-ingress,
trigger-channel, broker-filter), measure until the report names exactly the expected
root cause for every affected pair, remove it, measure until every pair is Healthy.

With `--mesh knative` (or `both`, the default: the emulated table first, then this one), the
same on the REAL Knative Eventing v1 of `tests/knative` (`make knative`): profile knative-v1,
one Broker flow and one Channel flow, and per trial one process stopped at a random phase
while every condition stays Ready (`dispatcher`: the IMC dispatcher, both flows;
`filter`, `ingress`: the broker filter / ingress, the Broker flow), until the report names
the Broker (and the Channel) with NoHeartbeat, then restarted, until both flows are Healthy.

Prints, per kind, p50 / p90 / max of both times in intervals, the number of trials, and
any wrong root cause seen on the way. The load average is printed too: the times include
the emulated mesh's own delivery time on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.*

from lightkube import AsyncClient, Client, KubeConfig
from tests.emulator.process import EmulatorProcess
from tests.envtest.controlplane import ControlPlane, free_port
from tests.envtest.fixtures import install_crds, load_test_crds
from tests.live_objects import ApiServer
from tests.test_probe_e2e import (
    BROKERSUB,
    FAULTS,
    PAIRS,
    PHASES,
    SECRET,
    _play_knative,
    apply_probe_mesh,
)

from eventmesh_health.probing import Hop, ProbeThresholds
from eventmesh_health.probing.runner import ProbeSettings, data_plane_findings
from eventmesh_health.serve.service import Service, Settings

SLO = 1.0  # seconds: above the emulated mesh's own latency on a loaded 2-core machine
POLL = 0.02

# every (emulator hop, scope, blamed segment) of the end-to-end test, one at a time
TARGETS = [target for phase in PHASES for target in phase]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def prepare(cp: ControlPlane) -> None:
    """CRDs, the healthy example without its webhook configurations, the key Secret."""
    with Client(KubeConfig.from_file(cp.kubeconfig_path), trust_env=False) as client:
        install_crds(client, load_test_crds())
    api = ApiServer(cp)
    try:
        apply_probe_mesh(api, os.urandom(32))
    finally:
        api.close()


def causes(service: Service) -> dict[tuple[str, str], frozenset[tuple[str, str, str | None]]]:
    report = service.state.report
    out: dict[tuple[str, str], set[tuple[str, str, str | None]]] = {pair: set() for pair in PAIRS}
    if report is None:
        return {pair: frozenset() for pair in PAIRS}
    for app, ns, finding in data_plane_findings(report):
        if (app, ns) in out and finding.root_cause:
            out[(app, ns)].add((finding.reason, finding.object.kind, finding.object.name))
    return {pair: frozenset(found) for pair, found in out.items()}


def healthy(service: Service) -> bool:
    report = service.state.report
    if report is None:
        return False
    found = causes(service)
    for app in report.applications:
        for ns in app.namespaces:
            if (app.name, ns.name) in found and (
                    ns.health.value != "Healthy" or found[(app.name, ns.name)]):
                return False
    return True


def expected_causes(kind: str, hop_name: str, scope: dict[str, str], hop: Hop,
                    ) -> dict[tuple[str, str], frozenset[tuple[str, str, str | None]]]:
    reason = FAULTS[kind][1]
    out = {}
    for app, ns in PAIRS:
        if app == scope["app"] and scope.get("namespace", ns) == ns:
            kind_name = {Hop.INGRESS: ("HTTPSource", app),
                         Hop.CHANNEL: ("Subscription", BROKERSUB[(app, ns)]),
                         Hop.BROKER: ("Broker", "default")}[hop]
            out[(app, ns)] = frozenset({(reason, *kind_name)})
    return out


async def wait(what: str, check: object, timeout: float) -> float:
    started = time.monotonic()
    while not check():  # type: ignore[operator]
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{what}: not within {timeout:.0f}s")
        await asyncio.sleep(POLL)
    return time.monotonic() - started


async def trial(service: Service, emu: EmulatorProcess, kind: str, target: tuple[
        str, dict[str, str], Hop], interval: float) -> tuple[float, float, list[str]]:
    hop_name, scope, hop = target
    expected = expected_causes(kind, hop_name, scope, hop)
    wrong: set[str] = set()

    def look() -> dict[tuple[str, str], frozenset[tuple[str, str, str | None]]]:
        now = causes(service)
        for pair, found in now.items():
            if found and found != expected.get(pair):
                wrong.add(f"{pair}: {sorted(found)}")
        return now

    await asyncio.sleep(random.uniform(0, interval))
    fault = await emu.inject(hop_name, kind, **scope, **FAULTS[kind][0])
    detected = await wait("reported", lambda: all(
        look()[pair] == want for pair, want in expected.items()), 6 * interval)
    await emu.remove_fault(fault)
    cleared = await wait("cleared", lambda: look() is not None and healthy(service),
                         6 * interval)
    return detected / interval, cleared / interval, sorted(wrong)


def quantiles(values: list[float]) -> str:
    ordered = sorted(values)

    def rank(q: float) -> float:
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

    return f"{rank(0.5):.2f} / {rank(0.9):.2f} / {ordered[-1]:.2f}"


async def run(cp: ControlPlane, args: argparse.Namespace) -> None:
    emu = EmulatorProcess(cp.kubeconfig_path, retries=0, retry_backoff=0.02)
    await emu.start()
    templates = emu.url_templates()
    port = free_port()
    interval = timedelta(seconds=args.interval)
    settings = Settings(
        host="127.0.0.1", port=port, leader_election=False, write=False,
        identity="bench-detection", log_level="warning", tick=timedelta(seconds=1),
        probe=ProbeSettings(
            interval=interval, jitter=0.1,
            receiver_url_template=f"http://127.0.0.1:{port}/heartbeat/{{namespace}}/"
                                  "{application}",
            event_service_url_template=templates["event_service"],
            channel_url_template=templates["channel"],
            broker_url_template=templates["broker_ingress"],
            secret_namespace="kyma-system", secret_name=SECRET,
            thresholds=ProbeThresholds(interval=interval, latency_slo=timedelta(seconds=SLO)),
            timeout=3.0))
    log(f"interval {args.interval:g}s, grace {settings.probe.tracker_grace().total_seconds():g}s"
        f", latency SLO {SLO:g}s")
    client = AsyncClient(KubeConfig.from_file(cp.kubeconfig_path), trust_env=False)
    service = Service(AsyncClient(KubeConfig.from_file(cp.kubeconfig_path), trust_env=False),
                      settings)
    tasks = [asyncio.create_task(service.run()), asyncio.create_task(_play_knative(client))]
    rows = []
    try:
        await wait("every pair Healthy", lambda: healthy(service) and service.prober is not None
                   and all(service.prober.tracker.stats(a, n, Hop.BROKER).received >= 2
                           for a, n in PAIRS), 120)
        await asyncio.sleep(args.interval)  # start-up is slow: let the first samples pass
        await wait("every pair Healthy after start-up", lambda: healthy(service), 120)
        for kind in args.kinds:
            found, cleared, wrong = [], [], []
            for i in range(args.trials):
                target = TARGETS[i % len(TARGETS)]
                d, c, w = await trial(service, emu, kind, target, args.interval)
                found.append(d)
                cleared.append(c)
                wrong += w
                log(f"{kind} at {target[0]} {target[1]}: reported after {d:.2f}, cleared "
                    f"after {c:.2f} intervals" + (f"; wrong on the way: {w[:2]}" if w else ""))
            rows.append((kind, len(found), quantiles(found), quantiles(cleared), len(wrong)))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await service.client.close()
        await client.close()
        await emu.stop()
    print_table(f"emulated Kyma 1.x data plane (tests/emulator), interval {args.interval:g}s, "
                f"grace {settings.probe.tracker_grace().total_seconds():g}s", rows)


# --- the real Knative mesh ---------------------------------------------------------------

KNATIVE_FAULTS = {  # fault -> the flows it silences
    "dispatcher": (("broker", "Broker"), ("channel", "Channel")),
    "filter": (("broker", "Broker"),),
    "ingress": (("broker", "Broker"),),
}


def print_table(title: str, rows: list[tuple[str, int, str, str, int]]) -> None:
    load = os.getloadavg()
    print(f"\n{title}; times in intervals (p50 / p90 / max); load average "
          f"{load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    header = ("fault", "trials", "reported after", "cleared after", "wrong root causes seen")
    table = [header, *[(k, str(n), f, c, str(w)) for k, n, f, c, w in rows]]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for r in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(r, widths, strict=True)))


async def run_knative(mesh: object, args: argparse.Namespace) -> None:
    from tests.knative.mesh import KnativeMesh
    from tests.test_knative_probe import (
        BROKER,
        CHANNEL,
        ensure_key_secret,
        make_flows,
        probe_settings,
        remove_heartbeat_objects,
    )

    from eventmesh_health.probing.flows import flow_key
    from eventmesh_health.probing.runner import flow_findings
    from eventmesh_health.topology.registry import lookup

    assert isinstance(mesh, KnativeMesh)
    ns = mesh.new_namespace("bench-detection")
    ensure_key_secret(mesh)
    make_flows(mesh, ns)
    port = free_port()
    base = probe_settings(mesh, port, interval=args.interval, grace=args.interval)
    # the default grace (from the interval and the latency objective), as on a cluster
    settings = Settings(
        host="127.0.0.1", port=port, leader_election=False, write=False,
        identity="bench-detection-knative", log_level="warning", tick=timedelta(seconds=1),
        profile=lookup("knative-v1"),
        probe=ProbeSettings(
            interval=base.interval, jitter=0.1, receiver_url_template=base.receiver_url_template,
            flow_url_templates=base.flow_url_templates, secret_namespace=base.secret_namespace,
            secret_name=base.secret_name,
            thresholds=ProbeThresholds(interval=base.interval,
                                       latency_slo=timedelta(seconds=SLO)),
            timeout=3.0))
    assert settings.probe is not None
    grace = settings.probe.tracker_grace().total_seconds()
    log(f"knative: interval {args.interval:g}s, grace {grace:g}s, latency SLO {SLO:g}s")
    service = Service(AsyncClient(KubeConfig.from_file(mesh.kubeconfig_path), trust_env=False),
                      settings)
    flows = (("broker", BROKER), ("channel", CHANNEL))

    def found() -> dict[tuple[str, str], frozenset[tuple[str, str, str | None]]]:
        out: dict[tuple[str, str], set[tuple[str, str, str | None]]] = {f: set() for f in flows}
        report = service.state.report
        if report is not None:
            for flow, namespace, name, f in flow_findings(report):
                if namespace == ns and (flow, name) in out and f.root_cause:
                    out[(flow, name)].add((f.reason, f.object.kind, f.object.name))
        return {k: frozenset(v) for k, v in out.items()}

    def all_healthy() -> bool:
        report = service.state.report
        if report is None:
            return False
        mine = [f for f in report.flows if f.namespace == ns and (f.flow, f.name) in flows]
        return len(mine) == 2 and all(f.health.value == "Healthy" for f in mine) and not any(
            found().values())

    task = asyncio.create_task(service.run())
    rows = []
    try:
        await wait("both flows Healthy", lambda: all_healthy() and service.prober is not None
                   and all(service.prober.tracker.stats(flow_key(f, ns, n), ns, hop).received
                           >= 2 for (f, n), hop in zip(flows, (Hop.BROKER, Hop.CHANNEL),
                                                       strict=True)), 60)
        await asyncio.sleep(args.interval)
        await wait("both flows Healthy after start-up", all_healthy, 60)
        for fault, silenced in KNATIVE_FAULTS.items():
            names = dict(flows)
            want = {(flow, names[flow]): frozenset({("NoHeartbeat", kind, names[flow])})
                    for flow, kind in silenced}
            detected_all, cleared_all, wrong = [], [], 0
            for _ in range(args.knative_trials):
                bad: set[str] = set()

                def look(bad: set[str] = bad,
                         want: dict[tuple[str, str], frozenset[Any]] = want) -> bool:
                    now = found()
                    for key, causes_now in now.items():
                        if causes_now and causes_now != want.get(key):
                            bad.add(f"{key}: {sorted(causes_now)}")
                    return all(now[k] == v for k, v in want.items())

                await asyncio.sleep(random.uniform(0, args.interval))
                if fault == "dispatcher":
                    mesh.stop_dispatcher()
                else:
                    mesh.stop_component(fault)
                try:
                    detected = await wait("reported", look, 6 * args.interval)
                finally:
                    if fault == "dispatcher":
                        mesh.start_dispatcher()
                    else:
                        mesh.start_component(fault)
                cleared = await wait("cleared", lambda: look() is not None and all_healthy(),
                                     6 * args.interval)
                detected_all.append(detected / args.interval)
                cleared_all.append(cleared / args.interval)
                wrong += len(bad)
                log(f"knative {fault} stopped: reported after {detected_all[-1]:.2f}, "
                    f"cleared after {cleared_all[-1]:.2f} intervals"
                    + (f"; wrong on the way: {sorted(bad)[:2]}" if bad else ""))
            rows.append((fault, len(detected_all), quantiles(detected_all),
                         quantiles(cleared_all), wrong))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await service.client.close()
        await remove_heartbeat_objects(mesh, ns)
    print_table(f"REAL Knative Eventing v1.21 (tests/knative), interval {args.interval:g}s, "
                f"grace {grace:g}s", rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interval", type=float, default=6.0, help="probe interval, seconds")
    parser.add_argument("--trials", type=int, default=len(TARGETS),
                        help=f"per fault kind (default {len(TARGETS)}: every hop once)")
    parser.add_argument("--kinds", nargs="+", choices=list(FAULTS), default=list(FAULTS))
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--mesh", choices=["both", "emulated", "knative"], default="both",
                        help="the emulated Kyma 1.x data plane, the real Knative v1, or both")
    parser.add_argument("--knative-trials", type=int, default=6,
                        help="per fault kind on the real Knative mesh")
    args = parser.parse_args()
    random.seed(args.seed)
    if args.mesh in ("both", "emulated"):
        run_emulated(args)
    if args.mesh in ("both", "knative"):
        from tests.knative.mesh import running_mesh

        log("starting the real Knative mesh (tests/knative)")
        try:
            with running_mesh() as mesh:
                asyncio.run(run_knative(mesh, args))
        except TimeoutError as err:
            sys.exit(f"bench_detection: {err}")


def run_emulated(args: argparse.Namespace) -> None:
    cp = ControlPlane()
    try:
        log("starting kube-apiserver + etcd")
        cp.start()
        prepare(cp)
        asyncio.run(run(cp, args))
    except TimeoutError as err:
        sys.exit(f"bench_detection: {err}")
    finally:
        cp.stop()


if __name__ == "__main__":
    main()
