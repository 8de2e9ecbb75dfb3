"""Benchmark `eventmesh-health serve` on a real API server with a synthetic mesh (issues 4, 14).

    .venv/bin/python benchmarks/bench_serve.py --apps 1000 10000 --namespaces 3 \
        --growth 18 182 1818 4545 10000

One control plane (kube-apiserver + etcd, `tests/envtest`, with the benchmark's flags of
`bulk_load.bench_control_plane`) with the test CRDs and the EventMeshHealth CRD, loaded in
steps with the synthetic healthy mesh of N applications x `--namespaces` namespaces
(`synthetic.mesh(N, M)`) by the bulk loader (`bulk_load.py`: concurrent creates, status in
the same pass). At each size of `--growth`, serve runs once, `--no-write`, to the end of its
initial sync only (the cost-growth table: sync time and RSS against objects). At each size
of `--apps`, `python -m eventmesh_health serve` runs as user `bench-serve` once per mode:

- `no-write` (`--no-write`): the watch + analysis + REST path alone;
- `write` (the default of serve): the first sync writes one EventMeshHealth (create + status)
  and one annotation patch per Application, at serve's client-side rate limit
  (`--kube-api-qps`, default serve's own); the time until all are written is measured, and
  the quiet window then shows whether the steady state makes zero writes. Afterwards its
  objects and annotations are removed again, so that the next size's write run starts
  from nothing written too.

Measured per run: initial sync (process start -> `/readyz` 200 and `/api/v1/health` 200),
detection latency of `--changes` status flips (a random application's Trigger Ready False,
then True again, through `/status`, one after the other, while a stream of `--stream` other
flips per second runs on other Triggers; each from the moment the API server's 200 for the write
arrived to the moment `GET /api/v1/applications/<app>` shows the new health, polled every
10 ms), the serve process' CPU time and peak RSS (`VmHWM`), and its API requests per minute
over a quiet window (audit events of user `bench-serve` received in the window: reads, watches
(long-lived, so a quiet minute normally starts none) and writes). The load average of the
machine is sampled throughout. Everything is stopped on exit, Ctrl-C and errors.

`--profile DIR` adds, after the measured runs, one more run per mode with serve under cProfile
(stopped with SIGINT, so that the profile gets written: DIR/serve-<apps>-<mode>.prof). Its
row is marked `+prof`: its latencies include the profiler's overhead.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.envtest
sys.path.insert(0, str(Path(__file__).resolve().parent))  # synthetic

from tests.envtest.controlplane import ControlPlane, _die_with_parent, free_port

import synthetic
from bulk_load import (
    BulkLoader,
    Progress,
    Resource,
    bench_control_plane,
    install_all_crds,
    report_progress,
)
from machine import LoadSampler

REPO = Path(__file__).resolve().parents[1]
HEALTH_CRD = REPO / "deploy" / "crds" / "eventmeshhealths.eventmesh-health.kyma-project.io.yaml"
USER = "bench-serve"
SYSTEM_NAMESPACES = ("kyma-integration", "kyma-system", "knative-eventing")
SERVER_SET = ("uid", "resourceVersion", "creationTimestamp", "generation", "managedFields",
              "deletionTimestamp", "selfLink")
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}
READ_VERBS = {"get", "list"}
POLL = 0.01  # seconds between two GETs of the REST API while waiting for a change
CHANGE_TIMEOUT = 30.0  # a change not visible after this long counts as a timeout
SETTLE = 5.0  # seconds without a write that end the first sync's write burst
LOAD_RETRY_SECONDS = 60.0
MODES = ("no-write", "write")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- the machine ----------------------------------------------------------------------------


# --- the API server -------------------------------------------------------------------------


def request(http: httpx.Client, method: str, url: str, body: Any = None,
            patch: bool = False) -> httpx.Response:
    """One request; 429 (storage initialising right after a CRD) and transport errors are
    retried for a while, as a controller would."""
    headers = {"Content-Type": "application/merge-patch+json"} if patch else None
    content = json.dumps(body, separators=(",", ":")) if body is not None else None
    deadline = time.monotonic() + LOAD_RETRY_SECONDS
    while True:
        try:
            answer = http.request(method, url, content=content, headers=headers)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
            continue
        if answer.status_code != 429 or time.monotonic() > deadline:
            return answer
        time.sleep(min(float(answer.headers.get("Retry-After") or 1), 5.0))


def checked(answer: httpx.Response, what: str) -> httpx.Response:
    if answer.is_error:
        raise RuntimeError(f"{what}: HTTP {answer.status_code}: {answer.text[:500]}")
    return answer


# --- the audit log --------------------------------------------------------------------------


@dataclass(frozen=True)
class Audited:
    audit_id: str
    stage: str
    verb: str
    resource: str
    subresource: str
    name: str
    received: datetime


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class AuditTail:
    """The audit events of one user, read incrementally from where the last read stopped.

    kube-apiserver rotates its audit log at `--audit-log-maxsize` (100 MB by default): the file
    is renamed to `audit-<time>.log` and a new `audit.log` begun. A rotation is noticed by the
    inode changing; the rest of the old file and any file rotated since are read first."""

    def __init__(self, path: Path, user: str) -> None:
        self.path = path
        self.needle = f'"username":"{user}"'.encode()
        stat = path.stat()
        self.inode, self.offset = stat.st_ino, stat.st_size
        self.events: list[Audited] = []
        self._partial = b""

    def _rotated_since(self) -> bytes:
        rotated = sorted(self.path.parent.glob(f"{self.path.stem}-*{self.path.suffix}"))
        inodes = [p.stat().st_ino for p in rotated]
        if self.inode not in inodes:
            log(f"  audit log rotated and {self.inode} not found: events may be missing")
            return b""
        data = b""
        first = inodes.index(self.inode)
        for i, path in enumerate(rotated[first:]):
            with path.open("rb") as f:
                f.seek(self.offset if i == 0 else 0)
                data += f.read()
        return data

    def read(self) -> list[Audited]:
        with self.path.open("rb") as f:
            inode = os.fstat(f.fileno()).st_ino
            data = b""
            if inode != self.inode:
                data = self._rotated_since()
                self.inode, self.offset = inode, 0
            f.seek(self.offset)
            new = f.read()
        self.offset += len(new)
        lines = (self._partial + data + new).split(b"\n")
        self._partial = lines.pop()
        found: list[Audited] = []
        for line in lines:
            if self.needle not in line:
                continue
            e = json.loads(line)
            ref = e.get("objectRef") or {}
            found.append(Audited(e["auditID"], e["stage"], e["verb"], ref.get("resource", ""),
                                 ref.get("subresource", ""), ref.get("name", ""),
                                 _time(e["requestReceivedTimestamp"])))
        self.events.extend(found)
        return found

    def writes(self) -> list[Audited]:
        self.read()
        return [e for e in self.events if e.verb in WRITE_VERBS and e.stage == "ResponseComplete"]

    def requests_between(self, start: datetime, end: datetime) -> Counter[str]:
        """Requests received in [start, end), by class (each counted once)."""
        self.read()
        seen: dict[str, str] = {}
        for e in self.events:
            if start <= e.received < end and e.audit_id not in seen:
                seen[e.audit_id] = ("watch" if e.verb == "watch" else
                                    "write" if e.verb in WRITE_VERBS else
                                    "read" if e.verb in READ_VERBS else e.verb)
        return Counter(seen.values())


# --- serve ----------------------------------------------------------------------------------


def _proc_status(pid: int, key: str) -> int:
    """A `kB` field of /proc/<pid>/status, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Serve:
    def __init__(self, cp: ControlPlane, kubeconfig: Path, write: bool, folder: Path,
                 profile: Path | None, extra: list[str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = folder / f"serve-{'write' if write else 'no-write'}.log"
        self.profile = profile
        python = [sys.executable]
        if profile is not None:
            python += ["-m", "cProfile", "-o", str(profile)]
        command = [*python, "-m", "eventmesh_health", "serve", "--kubeconfig", str(kubeconfig),
                   "--host", "127.0.0.1", "--port", str(self.port), "--no-leader-election",
                   "--write" if write else "--no-write", *(extra or [])]
        self.started = time.monotonic()
        with self.log_path.open("wb") as out:
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"}, preexec_fn=_die_with_parent,
            )
        self.http = httpx.Client(base_url=self.url, timeout=30.0, trust_env=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"serve exited with {self.process.returncode}; last lines of "
                               f"{self.log_path}:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def get(self, path: str) -> httpx.Response:
        return self.http.get(path)

    def wait_until(self, what: str, check: Callable[[], bool], timeout: float,
                   every: float = 0.05) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.alive()
            with contextlib.suppress(httpx.TransportError):
                if check():
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"serve: {what} not reached after {timeout:.0f}s; last "
                                   f"lines of {self.log_path}:\n{self.tail()}")
            time.sleep(every)

    def metric(self, name: str) -> float:
        text = self.get("/metrics").text
        match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
        return float(match.group(1)) if match else float("nan")

    def cpu(self) -> float:
        return _cpu_seconds(self.pid)

    def stop(self) -> None:
        self.http.close()
        if self.process.poll() is None:
            # SIGINT is a clean stop of serve (and lets cProfile write its file).
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# --- changes --------------------------------------------------------------------------------


TRIGGER_CONDITIONS = ("BrokerReady", "Subscribed", "DependencyReady", "SubscriberResolved",
                      "Ready")


def trigger_status(ready: bool) -> dict[str, Any]:
    conditions = []
    for kind in TRIGGER_CONDITIONS:
        condition: dict[str, Any] = {"type": kind, "status": "True",
                                     "lastTransitionTime": synthetic.READY}
        if not ready and kind in ("SubscriberResolved", "Ready"):
            condition.update(status="False", reason="SubscriberResolveFailed",
                             message='services "lambda" not found')
        conditions.append(condition)
    return {"status": {"observedGeneration": 1, "conditions": conditions}}


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, int(-(-p * len(ordered) // 100)) - 1))]


@dataclass
class Latencies:
    seconds: list[float] = field(default_factory=list)
    timeouts: int = 0
    write_seconds: list[float] = field(default_factory=list)  # round trip of the /status write

    def figures(self) -> dict[str, float]:
        if not self.seconds:
            return {k: float("nan") for k in ("p50", "p90", "p99", "max", "mean")}
        values = self.seconds + [float("inf")] * self.timeouts
        return {"p50": percentile(values, 50), "p90": percentile(values, 90),
                "p99": percentile(values, 99), "max": max(values),
                "mean": statistics.fmean(self.seconds)}


def measure_changes(serve: Serve, http: httpx.Client, trigger: Resource, apps: int,
                    changes: int, rng: random.Random) -> Latencies:
    result = Latencies()
    flips = changes + changes % 2  # every break is mended
    for i in range(flips // 2):
        app = f"app-{rng.randrange(apps):05d}"
        namespace, name = f"{app}-ns0", f"{app}-order-created"
        for ready, expected in ((False, "Unhealthy"), (True, "Healthy")):
            sent = time.monotonic()
            checked(request(http, "PATCH", trigger.url(namespace, name, "status"),
                            trigger_status(ready), patch=True), f"flipping Trigger {name}")
            accepted = time.monotonic()
            result.write_seconds.append(accepted - sent)
            deadline = accepted + CHANGE_TIMEOUT
            while True:
                answer = serve.get(f"/api/v1/applications/{app}")
                seen = time.monotonic()
                if answer.status_code == 200 and answer.json()["health"] == expected:
                    result.seconds.append(seen - accepted)
                    break
                if seen > deadline:
                    serve.alive()
                    result.timeouts += 1
                    log(f"  {app} not {expected} after {CHANGE_TIMEOUT:.0f}s "
                        f"(HTTP {answer.status_code}: {answer.text[:200]})")
                    break
                time.sleep(POLL)
        if (i + 1) % 10 == 0:
            log(f"  {2 * (i + 1)} changes, last {result.seconds[-1] * 1000:.0f} ms")
    return result


class ChangeStream:
    """A steady stream of other changes while the measured ones run: `rate` per second, each
    a random application's second Trigger (in its last namespace) flipped through `/status`,
    so that serve's analysis and writer are busy as in a live cluster."""

    def __init__(self, cp: ControlPlane, trigger: Resource, apps: int, namespaces: int,
                 rate: float, seed: int) -> None:
        self.cp, self.trigger, self.apps, self.namespaces = cp, trigger, apps, namespaces
        self.rate, self.rng = rate, random.Random(seed)
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="changes")
        self._broken: set[str] = set()

    def _run(self) -> None:
        with self.cp.http_client(timeout=60.0) as http:
            next_at = time.monotonic()
            while not self._stop.is_set():
                app = f"app-{self.rng.randrange(self.apps):05d}"
                ready = app in self._broken
                self._broken.symmetric_difference_update({app})
                namespace = f"{app}-ns{self.namespaces - 1}"
                checked(request(http, "PATCH", self.trigger.url(
                    namespace, f"{app}-customer-created", "status"), trigger_status(ready),
                    patch=True), f"streaming a change of {app}")
                self.sent += 1
                next_at += 1 / self.rate
                self._stop.wait(max(0.0, next_at - time.monotonic()))  # the pace, not a wait
            for app in sorted(self._broken):  # mend what is still broken
                checked(request(http, "PATCH", self.trigger.url(
                    f"{app}-ns{self.namespaces - 1}", f"{app}-customer-created", "status"),
                    trigger_status(True), patch=True), f"mending {app}")
                self.sent += 1

    def __enter__(self) -> ChangeStream:
        if self.rate > 0:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


# --- one run --------------------------------------------------------------------------------


@dataclass
class Run:
    apps: int
    namespaces: int
    objects: int
    load_seconds: float
    load_requests: int
    mode: str  # no-write, write, or sync (the growth table: sync and RSS only)
    profiled: bool = False
    qps: str = "-"  # --kube-api-qps/--kube-api-burst of a write run
    streamed: int = 0  # changes of the background stream during the measured ones
    apiserver_rss: int = 0
    etcd_rss: int = 0
    commit: str = ""  # of the serve code that ran (`git describe --dirty` when it started)
    sync_seconds: float = float("nan")
    written_seconds: float = float("nan")  # process start -> every EventMeshHealth written
    settled_seconds: float = float("nan")  # process start -> last write of the first burst
    first_writes: Counter[str] = field(default_factory=Counter)
    latencies: Latencies = field(default_factory=Latencies)
    analysis_mean: float = float("nan")  # serve's own analysis time per run, during changes
    rss_peak: int = 0
    rss_end: int = 0
    rss_sync: int = 0  # peak RSS at the end of the initial sync
    cpu_sync: float = float("nan")
    cpu_written: float = float("nan")  # at the end of the first sync's write burst
    cpu_quiet: float = float("nan")
    cpu_total: float = float("nan")
    quiet_seconds: float = 0.0
    quiet: Counter[str] = field(default_factory=Counter)
    health: str = ""
    load_average: str = ""


def run_serve(cp: ControlPlane, kubeconfig: Path, run: Run, args: argparse.Namespace,
              http: httpx.Client, trigger: Resource, folder: Path) -> None:
    write = run.mode == "write"
    audit = AuditTail(cp.audit_log_path, USER)
    profile = args.profile / f"serve-{run.apps}-{run.mode}.prof" if run.profiled else None
    extra = []
    qps = args.qps_for.get(run.apps)
    if write and qps is not None:
        extra = ["--kube-api-qps", str(qps), "--kube-api-burst", str(args.kube_api_burst)]
        run.qps = f"{qps:g}/{args.kube_api_burst}"
    elif write:
        run.qps = "20/30"  # serve's defaults
    log(f"serve ({run.mode}) on {run.apps:,} applications x {run.namespaces} namespaces "
        f"({run.objects:,} objects)")
    run.commit = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"],
                                capture_output=True, text=True).stdout.strip()
    serve = Serve(cp, kubeconfig, write, folder, profile, extra)
    sampler = LoadSampler()
    try:
        with sampler:
            timeout = 300 + run.objects / 100
            serve.wait_until("/readyz 200", lambda: serve.get("/readyz").status_code == 200,
                             timeout)
            serve.wait_until("a first report",
                             lambda: serve.get("/api/v1/health").status_code == 200, 60)
            run.sync_seconds = time.monotonic() - serve.started
            run.cpu_sync = serve.cpu()
            run.rss_sync = _proc_status(serve.pid, "VmHWM")
            _control_plane_rss(cp, run)
            report = serve.get("/api/v1/health").json()
            run.health = report["health"]
            unhealthy = [a["name"] for a in report["applications"] if a["health"] != "Healthy"]
            log(f"  synced in {run.sync_seconds:.1f}s, mesh {run.health} "
                f"({len(report['applications']):,} applications), serve's peak RSS "
                f"{run.rss_sync / 2**20:,.0f} MiB")
            if run.health != "Healthy" or len(report["applications"]) != run.apps:
                raise RuntimeError(f"the loaded mesh is not healthy or incomplete: system "
                                   f"{report['system']}, first unhealthy {unhealthy[:5]}")
            if run.mode == "sync":
                run.rss_peak = _proc_status(serve.pid, "VmHWM")
                run.rss_end = _proc_status(serve.pid, "VmRSS")
                run.cpu_total = serve.cpu()
                return
            if write:
                measure_first_writes(serve, audit, run)
            base_sum = serve.metric("eventmesh_analysis_duration_seconds_sum")
            base_count = serve.metric("eventmesh_analysis_duration_seconds_count")
            with ChangeStream(cp, trigger, run.apps, run.namespaces, args.stream,
                              args.seed + 1) as stream:
                run.latencies = measure_changes(serve, http, trigger, run.apps, args.changes,
                                                random.Random(args.seed))
            run.streamed = stream.sent
            runs = serve.metric("eventmesh_analysis_duration_seconds_count") - base_count
            if runs > 0:
                run.analysis_mean = (serve.metric("eventmesh_analysis_duration_seconds_sum")
                                     - base_sum) / runs
            time.sleep(SETTLE)  # the last change's writes, and their audit events
            if write:
                # The changes' writes queue behind the rate limit (3 per transition at 20/s
                # by default): the quiet window starts once they have drained.
                settle_writes(serve, audit, 300.0)
            log(f"  quiet window of {args.quiet:.0f}s")
            cpu_before, start = serve.cpu(), datetime.now(UTC)
            time.sleep(args.quiet)
            end = datetime.now(UTC)
            run.cpu_quiet = serve.cpu() - cpu_before
            time.sleep(1.0)  # audit events are written after the response
            run.quiet_seconds = (end - start).total_seconds()
            run.quiet = audit.requests_between(start, end)
            serve.alive()
            run.rss_peak = _proc_status(serve.pid, "VmHWM")
            run.rss_end = _proc_status(serve.pid, "VmRSS")
            run.cpu_total = serve.cpu()
    finally:
        serve.stop()
        run.load_average = sampler.summary()
    if profile is not None:
        log(f"  profile: {profile}")


def settle_writes(serve: Serve, audit: AuditTail, timeout: float) -> None:
    """Until SETTLE seconds pass without a write of serve's."""
    deadline = time.monotonic() + timeout
    last, count = time.monotonic(), len(audit.writes())
    while time.monotonic() - last < SETTLE:
        serve.alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"serve still writing after {timeout:.0f}s")
        time.sleep(0.5)
        now = len(audit.writes())
        if now != count:
            last, count = time.monotonic(), now


def _control_plane_rss(cp: ControlPlane, run: Run) -> None:
    pids = cp.pids()
    run.apiserver_rss = _proc_status(pids["kube-apiserver"], "VmRSS")
    run.etcd_rss = _proc_status(pids["etcd"], "VmRSS")


def forget_writes(loader: BulkLoader, http: httpx.Client, apps: int) -> None:
    """Undo a write run's first sync (its EventMeshHealth objects and annotations), so that
    the next write run, on more applications, starts from nothing written as well."""
    health = loader.resources[("eventmesh-health.kyma-project.io/v1alpha1", "EventMeshHealth")]
    checked(request(http, "DELETE", health.url()), "deleting every EventMeshHealth")
    application = loader.resources[("applicationconnector.kyma-project.io/v1alpha1",
                                    "Application")]
    keys = {f"eventmesh-health.kyma-project.io/{k}": None
            for k in ("health", "reason", "last-transition-time")}
    seconds, _ = loader.patch_all(
        [(application.url(None, f"app-{i:05d}"), {"metadata": {"annotations": keys}})
         for i in range(apps)])
    log(f"  removed the write run's EventMeshHealth objects and annotations ({seconds:.0f}s)")


def measure_first_writes(serve: Serve, audit: AuditTail, run: Run) -> None:
    """Until every Application has its EventMeshHealth with a status, then until the writes
    stop (SETTLE seconds without one)."""
    deadline = time.monotonic() + 1800 + run.apps * 0.5
    report = time.monotonic() + 60
    while True:
        serve.alive()
        written = {e.name for e in audit.writes()
                   if e.resource == "eventmeshhealths" and e.subresource == "status"}
        if len(written) >= run.apps:
            run.written_seconds = time.monotonic() - serve.started
            break
        if time.monotonic() > report:
            log(f"  {len(written):,} EventMeshHealth statuses written so far")
            report += 60
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(written)} of {run.apps} EventMeshHealth statuses "
                               f"written; last lines of serve's log:\n{serve.tail()}")
        time.sleep(0.5)
    log(f"  every EventMeshHealth written {run.written_seconds:.1f}s after the start")
    settle_writes(serve, audit, 600.0)
    writes = audit.writes()
    last_write = max(e.received for e in writes)
    started = datetime.now(UTC).timestamp() - (time.monotonic() - serve.started)
    run.settled_seconds = last_write.timestamp() - started
    run.cpu_written = serve.cpu()
    run.first_writes = Counter(
        f"{e.resource}{'/' + e.subresource if e.subresource else ''} {e.verb}" for e in writes)
    log(f"  first writes: {dict(run.first_writes)}")


def wait_for_file(path: Path) -> None:
    """Until `path` exists: the loading (half an hour at 10,000 applications) can start
    before the code whose serve is measured is ready (its commit is in each row)."""
    log(f"loaded: serve runs once {path} exists")
    while not path.exists():
        time.sleep(2)
    log(f"{path} exists: serve runs, load average {os.getloadavg()[0]:.2f}")


# --- all sizes on one control plane ----------------------------------------------------------


def bench_all(args: argparse.Namespace) -> tuple[list[Run], list[Run]]:
    """One control plane, loaded in steps up to the largest size: at each size of `--apps`
    the measured runs, at each of `--growth` a sync-only run. Returns (measured, growth)."""
    sizes = sorted(set(args.apps) | set(args.growth))
    log(f"=== sizes {sizes} applications x {args.namespaces} namespaces: starting a "
        "control plane")
    cp = bench_control_plane()
    measured: list[Run] = []
    growth: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        try:
            cp.start()
            install_all_crds(cp)
            loader = BulkLoader(cp, args.concurrency)
            kubeconfig = cp.make_user_kubeconfig(USER, ["system:masters"])
            trigger = loader.resources[("eventing.knative.dev/v1alpha1", "Trigger")]
            loaded, load_seconds = 0, 0.0
            with cp.http_client(timeout=120.0) as http:
                for apps in sizes:
                    log(f"loading applications {loaded:,}..{apps - 1:,} with "
                        f"{args.concurrency} connections")
                    with LoadSampler() as load_sampler:
                        before = Progress(loader.progress.objects, loader.progress.requests)
                        seconds, progress = loader.load_mesh(loaded, apps, args.namespaces,
                                                             report_progress)
                    load_seconds += seconds
                    step = progress.objects - before.objects
                    log(f"loaded {step:,} objects ({progress.requests - before.requests:,} "
                        f"requests) in {seconds:.1f}s: {step / seconds:,.0f} objects/s, "
                        f"load average {load_sampler.summary()}; "
                        f"{progress.objects:,} objects in all")
                    loaded = apps
                    if args.wait_before_serve is not None:
                        wait_for_file(args.wait_before_serve)
                    plans: list[tuple[str, bool]] = []
                    if apps in args.growth:
                        plans.append(("sync", False))
                    if apps in args.apps:
                        modes = [m for m in args.modes
                                 if m != "write" or args.write_max is None
                                 or apps <= args.write_max]
                        plans += [(mode, False) for mode in modes]
                        if args.profile:
                            plans += [(mode, True) for mode in modes]
                    for mode, profiled in plans:
                        run = Run(apps, args.namespaces, progress.objects, load_seconds,
                                  progress.requests, mode, profiled)
                        run_serve(cp, kubeconfig, run, args, http, trigger, Path(tmp))
                        (growth if mode == "sync" else measured).append(run)
                        print_table([run], file=sys.stderr)
                        if mode == "write" and apps != sizes[-1]:
                            forget_writes(loader, http, apps)
        except BaseException:
            for path in Path(tmp).glob("serve-*.log"):
                log(f"last lines of {path.name}:\n" + "\n".join(
                    path.read_text(errors="replace").splitlines()[-20:]))
            raise
        finally:
            cp.stop()
    return measured, growth


# --- output ---------------------------------------------------------------------------------


COLUMNS = (
    "apps", "ns", "objects", "load s", "obj/s", "mode", "qps/burst", "sync s", "written s",
    "stream", "p50 ms", "p90 ms",
    "p99 ms", "max ms", "n", "analysis ms", "RSS MiB", "CPU s", "sync CPU s", "quiet CPU %",
    "reads/min", "watches/min", "writes/min", "commit", "load avg",
)


def row(r: Run) -> list[str]:
    """The figures of one run, in the order of COLUMNS."""
    lat = r.latencies.figures()
    per_minute = 60 / r.quiet_seconds if r.quiet_seconds else float("nan")
    quiet_cpu = 100 * r.cpu_quiet / r.quiet_seconds if r.quiet_seconds else float("nan")
    return [
        f"{r.apps:,}", f"{r.namespaces}", f"{r.objects:,}", f"{r.load_seconds:.0f}",
        f"{r.objects / r.load_seconds:,.0f}", r.mode + ("+prof" if r.profiled else ""), r.qps,
        f"{r.sync_seconds:.1f}", f"{r.written_seconds:.1f}" if r.mode == "write" else "-",
        f"{r.streamed}",
        *(f"{lat[k] * 1000:.0f}" for k in ("p50", "p90", "p99", "max")),
        f"{len(r.latencies.seconds)}"
        + (f"+{r.latencies.timeouts} timed out" if r.latencies.timeouts else ""),
        f"{r.analysis_mean * 1000:.0f}", f"{r.rss_peak / 2**20:.0f}", f"{r.cpu_total:.1f}",
        f"{r.cpu_sync:.1f}", f"{quiet_cpu:.1f}",
        *(f"{r.quiet[k] * per_minute:.0f}" for k in ("read", "watch", "write")),
        r.commit, r.load_average,
    ]


def print_table(runs: list[Run], file: Any = sys.stdout) -> None:
    rows = [list(COLUMNS), *(row(r) for r in runs)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    for r in rows:
        print("  ".join(c.rjust(w) if i != len(r) - 1 else c
                        for i, (c, w) in enumerate(zip(r, widths, strict=True))),
              file=file, flush=True)


GROWTH_COLUMNS = ("apps", "objects", "sync s", "sync CPU s", "RSS MiB", "KiB/object",
                  "apiserver RSS MiB", "etcd RSS MiB", "commit", "load avg")


def print_growth(runs: list[Run], file: Any = sys.stdout) -> None:
    """serve's cost against the objects it watches: its initial sync (time, CPU, peak RSS
    at its end) in the sync-only and the no-write runs."""
    rows = [list(GROWTH_COLUMNS)] + [[
        f"{r.apps:,}", f"{r.objects:,}", f"{r.sync_seconds:.1f}", f"{r.cpu_sync:.1f}",
        f"{r.rss_sync / 2**20:.0f}", f"{r.rss_sync / 1024 / r.objects:.2f}",
        f"{r.apiserver_rss / 2**20:.0f}", f"{r.etcd_rss / 2**20:.0f}", r.commit,
        r.load_average,
    ] for r in runs]
    widths = [max(len(r[i]) for r in rows) for i in range(len(GROWTH_COLUMNS))]
    for r in rows:
        print("  ".join(c.rjust(w) if i != len(r) - 1 else c
                        for i, (c, w) in enumerate(zip(r, widths, strict=True))),
              file=file, flush=True)


def print_details(runs: list[Run]) -> None:
    for r in runs:
        lat = r.latencies
        extra = ""
        if lat.write_seconds:
            extra = (f", /status write round trip median "
                     f"{statistics.median(lat.write_seconds) * 1000:.0f} ms")
        print(f"{r.apps:,} apps, {r.mode}: mean latency {lat.figures()['mean'] * 1000:.0f} ms"
              f"{extra}; RSS at the end {r.rss_end / 2**20:.0f} MiB; quiet window "
              f"{r.quiet_seconds:.0f}s: {dict(r.quiet) or 'no requests'}; at the sync "
              f"kube-apiserver {r.apiserver_rss / 2**20:,.0f} MiB, etcd "
              f"{r.etcd_rss / 2**20:,.0f} MiB")
        if r.mode == "write":
            print(f"  first sync wrote until {r.settled_seconds:.1f}s after the start, CPU "
                  f"{r.cpu_written:.1f}s by then: {dict(r.first_writes)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", type=int, nargs="+", action="extend",
                        help="applications of the measured runs; repeatable (default: 1000)")
    parser.add_argument("--namespaces", type=int, default=3,
                        help="namespaces per application (default: 3)")
    parser.add_argument("--growth", type=int, nargs="+", action="extend", default=[],
                        help="applications at which serve's sync time and RSS alone are "
                             "measured (the cost-growth table), e.g. 18 182 1818 4545 10000")
    parser.add_argument("--changes", type=int, default=100,
                        help="status changes timed per run (default: 100)")
    parser.add_argument("--stream", type=float, default=5.0,
                        help="other changes per second meanwhile (default: 5)")
    parser.add_argument("--quiet", type=float, default=60.0,
                        help="seconds of the steady-state window (default: 60)")
    parser.add_argument("--concurrency", type=int, default=64,
                        help="connections of the bulk loader (default: 64, the fastest here)")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES),
                        help="serve runs per size (default: no-write write)")
    parser.add_argument("--write-max", type=int, default=None, metavar="APPS",
                        help="write runs only at sizes up to this (their first sync takes "
                             "3 x APPS / --kube-api-qps seconds)")
    parser.add_argument("--kube-api-qps", type=float, nargs="+", default=[],
                        help="serve's --kube-api-qps in the write runs, one per size of "
                             "--apps in ascending order (default: serve's own, 20)")
    parser.add_argument("--kube-api-burst", type=int, default=30,
                        help="serve's --kube-api-burst with --kube-api-qps (default: 30)")
    parser.add_argument("--wait-before-serve", type=Path, default=None, metavar="FILE",
                        help="after each loading step, wait until FILE exists before serve "
                             "runs (load first, then measure a later commit's serve)")
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="one more run per mode under cProfile, into "
                             "DIR/serve-<apps>-<mode>.prof")
    args = parser.parse_args()
    args.apps = args.apps or [1000]
    if len(args.kube_api_qps) > len(args.apps):
        parser.error("--kube-api-qps: at most one per size of --apps")
    args.qps_for = dict(zip(sorted(args.apps), args.kube_api_qps, strict=False))
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
        args.profile = args.profile.resolve()

    log(f"load average at the start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
        f"({os.cpu_count()} CPUs)")
    try:
        measured, growth = bench_all(args)
    except KeyboardInterrupt:
        log("interrupted: everything stopped")
        sys.exit(130)
    print_table(measured)
    print()
    print_details(measured)
    growth += [r for r in measured if r.mode == "no-write" and not r.profiled]
    if growth:
        print()
        print_growth(sorted(growth, key=lambda r: r.objects))
    print(f"\nload average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
