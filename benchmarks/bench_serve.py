"""Benchmark `eventmesh-health serve` on a real API server with a synthetic mesh (issue 4).

    .venv/bin/python benchmarks/bench_serve.py --apps 1000 [--apps 10000] [--changes 100]

For each size: a fresh control plane (kube-apiserver + etcd, `tests/envtest`) with the test
CRDs and the EventMeshHealth CRD; the synthetic healthy mesh of N applications x 1 namespace
(`synthetic.application(i, 1)` plus `synthetic.system()`, i.e. `synthetic.mesh(N, 1)`, with
the fields the API server requires and the synthetic dumps leave out filled in) created through
a few concurrent connections: namespaces first, owners before what they own (ownerReferences
rewritten to the server's uids), status written through `/status` where the resource has one.
Then `python -m eventmesh_health serve` runs against it, as user `bench-serve`, once per mode:

- `no-write` (`--no-write`): the watch + analysis + REST path alone;
- `write` (the default of serve): the first sync writes one EventMeshHealth (create + status)
  and one annotation patch per Application; the time until all are written is measured, and
  the quiet window then shows whether the steady state makes zero writes.

Measured per run: initial sync (process start -> `/readyz` 200 and `/api/v1/health` 200),
detection latency of `--changes` status flips (a random application's Trigger Ready False,
then True again, through `/status`; each from the moment the API server's 200 for the write
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
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import yaml
from lightkube import Client, KubeConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.envtest
sys.path.insert(0, str(Path(__file__).resolve().parent))  # synthetic

from tests.envtest.controlplane import ControlPlane, _die_with_parent, free_port
from tests.envtest.fixtures import install_crds, load_test_crds

import synthetic
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


@dataclass(frozen=True)
class Resource:
    plural: str
    namespaced: bool
    has_status: bool
    base: str

    def url(self, namespace: str | None = None, name: str | None = None,
            sub: str | None = None) -> str:
        parts = [self.base]
        if self.namespaced and namespace:
            parts += ["namespaces", namespace]
        parts.append(self.plural)
        if name:
            parts.append(name)
        if sub:
            parts.append(sub)
        return "/".join(parts)


def discover(http: httpx.Client) -> dict[tuple[str, str], Resource]:
    found: dict[tuple[str, str], Resource] = {}
    versions = ["v1"] + [v["groupVersion"] for g in http.get("/apis").json()["groups"]
                         for v in g["versions"]]
    for gv in versions:
        base = "/api/v1" if gv == "v1" else f"/apis/{gv}"
        listing = http.get(base).json()["resources"]
        names = {r["name"] for r in listing}
        for r in listing:
            if "/" not in r["name"]:
                found[(gv, r["kind"])] = Resource(r["name"], r["namespaced"],
                                                  f"{r['name']}/status" in names, base)
    return found


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


def install_all_crds(cp: ControlPlane) -> None:
    crds = [*load_test_crds(), yaml.safe_load(HEALTH_CRD.read_text())]
    with Client(KubeConfig.from_file(cp.kubeconfig_path), trust_env=False) as client:
        install_crds(client, crds, timeout=60)


# --- loading the mesh -----------------------------------------------------------------------


def _containers(name: str) -> list[dict[str, Any]]:
    return [{"name": name, "image": f"bench.local/{name}:1"}]


def loadable(obj: dict[str, Any]) -> dict[str, Any]:
    """The synthetic object as a controller would create it: server-set metadata dropped,
    and what the API server requires but the analysis never reads filled in (Pod containers,
    a Deployment's pod template, a Service's ports, an Application service's display names,
    a webhook's side effects)."""
    body = json.loads(json.dumps(obj))
    meta = body["metadata"]
    for key in SERVER_SET:
        meta.pop(key, None)
    kind, spec = body.get("kind"), body.get("spec")
    if kind == "Pod" and body["apiVersion"] == "v1":
        body["spec"] = {"containers": _containers("main")}
        for status in body.get("status", {}).get("containerStatuses", []):
            status.setdefault("image", f"bench.local/{status['name']}:1")
            status.setdefault("imageID", "")
    elif kind == "Deployment" and isinstance(spec, dict):
        labels = spec["selector"]["matchLabels"]
        spec["template"] = {"metadata": {"labels": dict(labels)},
                            "spec": {"containers": _containers("main")}}
    elif kind == "Application":
        for service in spec.get("services", []):
            service.setdefault("displayName", service["name"])
            service.setdefault("providerDisplayName", "bench")
            service.setdefault("description", service["name"])
    elif kind == "Service" and body["apiVersion"] == "v1":
        body.setdefault("spec", {})["ports"] = [{"port": 443, "targetPort": 8443}]
    elif kind == "ValidatingWebhookConfiguration":
        for hook in body.get("webhooks", []):
            # No rules: it intercepts nothing (no webhook runs here), but is still judged.
            hook.setdefault("sideEffects", "None")
            hook.setdefault("admissionReviewVersions", ["v1"])
    return body


@dataclass
class LoadStats:
    objects: int = 0
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, objects: int, requests: int) -> None:
        with self.lock:
            self.objects += objects
            self.requests += requests


class Loader:
    def __init__(self, cp: ControlPlane, workers: int) -> None:
        self.http = cp.http_client(timeout=60.0)
        self.workers = workers
        self.resources = discover(self.http)
        self.stats = LoadStats()
        self.stopping = threading.Event()

    def close(self) -> None:
        self.http.close()

    def create_all(self, objects: list[dict[str, Any]]) -> None:
        """Namespaces first, then owners before what they own, sequentially."""
        uids: dict[str, str] = {}
        pending = sorted(objects, key=lambda o: o["kind"] != "Namespace")
        requests = 0
        while pending:
            later = []
            for obj in pending:
                owners = [r["uid"] for r in obj["metadata"].get("ownerReferences", [])]
                if any(u not in uids and any(o["metadata"]["uid"] == u for o in pending)
                       for u in owners):
                    later.append(obj)
                    continue
                uids[obj["metadata"]["uid"]] = self.create(obj, uids)
                requests += 1 + bool(self._status_separately(obj))
            if len(later) == len(pending):
                raise RuntimeError(f"ownerReferences in a cycle: {later[:3]}")
            pending = later
        self.stats.add(len(objects), requests)

    def _status_separately(self, obj: dict[str, Any]) -> bool:
        res = self.resources[(obj["apiVersion"], obj["kind"])]
        return res.has_status and bool(obj.get("status"))

    def create(self, obj: dict[str, Any], uids: dict[str, str]) -> str:
        if self.stopping.is_set():
            raise RuntimeError("stopped")
        res = self.resources[(obj["apiVersion"], obj["kind"])]
        body = loadable(obj)
        for ref in body["metadata"].get("ownerReferences", []):
            ref["uid"] = uids.get(ref["uid"], ref["uid"])
        status = body.pop("status", None) if res.has_status else None
        namespace, name = body["metadata"].get("namespace"), body["metadata"]["name"]
        answer = request(self.http, "POST", res.url(namespace), body)
        if answer.status_code == 409:
            # A fresh cluster: it exists because a create that failed in transit went through.
            answer = request(self.http, "GET", res.url(namespace, name))
        created = checked(answer, f"creating {obj['kind']} {namespace}/{name}").json()
        if status:
            checked(request(self.http, "PATCH", res.url(namespace, name, "status"),
                            {"status": status}, patch=True),
                    f"writing the status of {obj['kind']} {namespace}/{name}")
        return str(created["metadata"]["uid"])

    def load(self, apps: int) -> tuple[float, int, int]:
        """The whole mesh; returns (seconds, objects, requests)."""
        started = time.monotonic()
        system = synthetic.system()
        webhooks = [o for o in system if o["kind"].endswith("WebhookConfiguration")]
        namespaces = [{"apiVersion": "v1", "kind": "Namespace",
                       "metadata": {"name": n, "uid": f"bench-ns-{n}"}}
                      for n in SYSTEM_NAMESPACES]
        self.create_all(namespaces + [o for o in system if o not in webhooks])
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="load")
        futures: list[Future[None]] = []
        progress = threading.Thread(target=self._progress, args=(started, apps), daemon=True)
        progress.start()
        try:
            futures = [pool.submit(lambda i=i: self.create_all(synthetic.application(i, 1)))
                       for i in range(apps)]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            for future in done:
                future.result()
        finally:
            self.stopping.set()  # also ends the progress thread
            pool.shutdown(wait=True, cancel_futures=True)
        self.stopping.clear()
        self.create_all(webhooks)  # last: the API server would call them on later writes
        return time.monotonic() - started, self.stats.objects, self.stats.requests

    def _progress(self, started: float, apps: int) -> None:
        while not self.stopping.wait(15.0):
            elapsed = time.monotonic() - started
            log(f"  loaded {self.stats.objects:,} objects ({self.stats.requests:,} requests) "
                f"in {elapsed:.0f}s: {self.stats.objects / elapsed:,.0f} objects/s, "
                f"{self.stats.requests / elapsed:,.0f} requests/s; "
                f"load average {os.getloadavg()[0]:.1f}")


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
                 profile: Path | None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = folder / f"serve-{'write' if write else 'no-write'}.log"
        self.profile = profile
        python = [sys.executable]
        if profile is not None:
            python += ["-m", "cProfile", "-o", str(profile)]
        command = [*python, "-m", "eventmesh_health", "serve", "--kubeconfig", str(kubeconfig),
                   "--host", "127.0.0.1", "--port", str(self.port), "--no-leader-election",
                   "--write" if write else "--no-write"]
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


# --- one run --------------------------------------------------------------------------------


@dataclass
class Run:
    apps: int
    objects: int
    load_seconds: float
    load_requests: int
    mode: str
    profiled: bool = False
    sync_seconds: float = float("nan")
    written_seconds: float = float("nan")  # process start -> every EventMeshHealth written
    settled_seconds: float = float("nan")  # process start -> last write of the first burst
    first_writes: Counter[str] = field(default_factory=Counter)
    latencies: Latencies = field(default_factory=Latencies)
    analysis_mean: float = float("nan")  # serve's own analysis time per run, during changes
    rss_peak: int = 0
    rss_end: int = 0
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
    log(f"serve ({run.mode}) on {run.apps:,} applications")
    serve = Serve(cp, kubeconfig, write, folder, profile)
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
            report = serve.get("/api/v1/health").json()
            run.health = report["health"]
            unhealthy = [a["name"] for a in report["applications"] if a["health"] != "Healthy"]
            log(f"  synced in {run.sync_seconds:.1f}s, mesh {run.health} "
                f"({len(report['applications']):,} applications)")
            if run.health != "Healthy" or len(report["applications"]) != run.apps:
                raise RuntimeError(f"the loaded mesh is not healthy or incomplete: system "
                                   f"{report['system']}, first unhealthy {unhealthy[:5]}")
            if write:
                measure_first_writes(serve, audit, run)
            base_sum = serve.metric("eventmesh_analysis_duration_seconds_sum")
            base_count = serve.metric("eventmesh_analysis_duration_seconds_count")
            run.latencies = measure_changes(serve, http, trigger, run.apps, args.changes,
                                            random.Random(args.seed))
            runs = serve.metric("eventmesh_analysis_duration_seconds_count") - base_count
            if runs > 0:
                run.analysis_mean = (serve.metric("eventmesh_analysis_duration_seconds_sum")
                                     - base_sum) / runs
            time.sleep(SETTLE)  # the last change's writes, and their audit events
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
    last, count = time.monotonic(), len(audit.writes())
    while time.monotonic() - last < SETTLE:
        time.sleep(0.5)
        now = len(audit.writes())
        if now != count:
            last, count = time.monotonic(), now
    writes = audit.writes()
    last_write = max(e.received for e in writes)
    started = datetime.now(UTC).timestamp() - (time.monotonic() - serve.started)
    run.settled_seconds = last_write.timestamp() - started
    run.cpu_written = serve.cpu()
    run.first_writes = Counter(
        f"{e.resource}{'/' + e.subresource if e.subresource else ''} {e.verb}" for e in writes)
    log(f"  first writes: {dict(run.first_writes)}")


# --- one size -------------------------------------------------------------------------------


def bench_size(apps: int, args: argparse.Namespace) -> list[Run]:
    log(f"=== {apps:,} applications x 1 namespace: starting a control plane")
    cp = ControlPlane()
    runs: list[Run] = []
    loader: Loader | None = None
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        try:
            cp.start()
            install_all_crds(cp)
            loader = Loader(cp, args.workers)
            log(f"loading the mesh with {args.workers} connections")
            with LoadSampler() as load_sampler:
                seconds, objects, requests = loader.load(apps)
            log(f"loaded {objects:,} objects ({requests:,} requests) in {seconds:.1f}s: "
                f"{objects / seconds:,.0f} objects/s, load average {load_sampler.summary()}")
            kubeconfig = cp.make_user_kubeconfig(USER, ["system:masters"])
            trigger = loader.resources[("eventing.knative.dev/v1alpha1", "Trigger")]
            plans = [(mode, False) for mode in args.modes]
            if args.profile:
                plans += [(mode, True) for mode in args.modes]
            for mode, profiled in plans:
                run = Run(apps, objects, seconds, requests, mode, profiled)
                run_serve(cp, kubeconfig, run, args, loader.http, trigger, Path(tmp))
                runs.append(run)
                print_table([run], file=sys.stderr)
        except BaseException:
            for path in Path(tmp).glob("serve-*.log"):
                log(f"last lines of {path.name}:\n" + "\n".join(
                    path.read_text(errors="replace").splitlines()[-20:]))
            raise
        finally:
            if loader is not None:
                loader.stopping.set()
                loader.close()
            cp.stop()
    return runs


# --- output ---------------------------------------------------------------------------------


COLUMNS = (
    "apps", "objects", "load s", "obj/s", "mode", "sync s", "written s", "p50 ms", "p90 ms",
    "p99 ms", "max ms", "n", "analysis ms", "RSS MiB", "CPU s", "sync CPU s", "quiet CPU %",
    "reads/min", "watches/min", "writes/min", "load avg",
)


def row(r: Run) -> list[str]:
    """The figures of one run, in the order of COLUMNS."""
    lat = r.latencies.figures()
    per_minute = 60 / r.quiet_seconds if r.quiet_seconds else float("nan")
    quiet_cpu = 100 * r.cpu_quiet / r.quiet_seconds if r.quiet_seconds else float("nan")
    return [
        f"{r.apps:,}", f"{r.objects:,}", f"{r.load_seconds:.0f}",
        f"{r.objects / r.load_seconds:,.0f}", r.mode + ("+prof" if r.profiled else ""),
        f"{r.sync_seconds:.1f}", f"{r.written_seconds:.1f}" if r.mode == "write" else "-",
        *(f"{lat[k] * 1000:.0f}" for k in ("p50", "p90", "p99", "max")),
        f"{len(r.latencies.seconds)}"
        + (f"+{r.latencies.timeouts} timed out" if r.latencies.timeouts else ""),
        f"{r.analysis_mean * 1000:.0f}", f"{r.rss_peak / 2**20:.0f}", f"{r.cpu_total:.1f}",
        f"{r.cpu_sync:.1f}", f"{quiet_cpu:.1f}",
        *(f"{r.quiet[k] * per_minute:.0f}" for k in ("read", "watch", "write")),
        r.load_average,
    ]


def print_table(runs: list[Run], file: Any = sys.stdout) -> None:
    rows = [list(COLUMNS), *(row(r) for r in runs)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
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
              f"{r.quiet_seconds:.0f}s: {dict(r.quiet) or 'no requests'}")
        if r.mode == "write":
            print(f"  first sync wrote until {r.settled_seconds:.1f}s after the start, CPU "
                  f"{r.cpu_written:.1f}s by then: {dict(r.first_writes)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", type=int, nargs="+", action="extend",
                        help="applications (x 1 namespace); repeatable (default: 1000)")
    parser.add_argument("--changes", type=int, default=100,
                        help="status changes timed per run (default: 100)")
    parser.add_argument("--quiet", type=float, default=60.0,
                        help="seconds of the steady-state window (default: 60)")
    parser.add_argument("--workers", type=int, default=8,
                        help="concurrent connections while loading (default: 8)")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES),
                        help="serve runs per size (default: no-write write)")
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--profile", type=Path, default=None, metavar="DIR",
                        help="one more run per mode under cProfile, into "
                             "DIR/serve-<apps>-<mode>.prof")
    args = parser.parse_args()
    args.apps = args.apps or [1000]
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
        args.profile = args.profile.resolve()

    log(f"load average at the start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
        f"({os.cpu_count()} CPUs)")
    runs: list[Run] = []
    try:
        for apps in args.apps:
            runs.extend(bench_size(apps, args))
    except KeyboardInterrupt:
        log("interrupted: everything stopped")
        if runs:
            print_table(runs)
        sys.exit(130)
    print_table(runs)
    print()
    print_details(runs)


if __name__ == "__main__":
    main()
