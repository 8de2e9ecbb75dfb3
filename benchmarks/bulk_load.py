"""Load the synthetic mesh into a test API server fast: concurrent creates, status in the same
pass (issue 14).

    .venv/bin/python benchmarks/bulk_load.py --apps 1000 --namespaces 3 --concurrency 8 16 32 64

Standalone it starts a fresh control plane (`tests/envtest`) per concurrency, loads the mesh
and prints objects/s and requests/s for each, so that the best concurrency for this machine
can be chosen; `bench_serve` imports `BulkLoader` and `loadable` from here.

How: `concurrency` workers (asyncio tasks) share one `aiohttp` pool of as many HTTP/1.1
connections; each takes the next application and creates its objects in order (Namespaces
first, owners before what they own, `ownerReferences` rewritten to the server's uids), each
create followed at once by its `/status` merge patch where the resource has that subresource
(the API server drops `status` on create). aiohttp (already a dependency of serve) rather
than httpx: httpx's `httpcore` re-attempts a failed `import sniffio` on every request, a
fifth of the loader's CPU, and the loader shares two cores with the API server it feeds.
The API server's CPU is about 2 ms per request here (a third of it merge-patching status, a
sixth garbage collection, a tenth managedFields), but at 8 connections it was not saturated:
on 100 apps x 3 namespaces (5,518 objects, 10,030 requests; load average 4-5) 2, 4, 8, 16
and 32 connections loaded 182, 213, 212, 218 and 341 objects/s in one run of this script,
32, 64 and 128 loaded 241, 299 and 309 in the next (the machine is shared: that noisy). 64
is the default: past it the API server's CPU is the limit, and HTTP/2 streams would not add
to that.

The loader is a user of its own (`bench-loader`, in `system:masters`): Priority and Fairness
exempts that group, so `--max-requests-inflight` does not apply, and `LOADER_AUDIT_POLICY`
keeps its million requests out of the audit log (the benchmark reads that only for serve's
user).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import ssl
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.envtest
sys.path.insert(0, str(Path(__file__).resolve().parent))  # synthetic

from tests.envtest.controlplane import AUDIT_POLICY, ControlPlane
from tests.envtest.fixtures import install_crds, load_test_crds

import synthetic

REPO = Path(__file__).resolve().parents[1]
HEALTH_CRD = REPO / "deploy" / "crds" / "eventmeshhealths.eventmesh-health.kyma-project.io.yaml"
LOADER = "bench-loader"
T = TypeVar("T")
SYSTEM_NAMESPACES = ("kyma-integration", "kyma-system", "knative-eventing")
SERVER_SET = ("uid", "resourceVersion", "creationTimestamp", "generation", "managedFields",
              "deletionTimestamp", "selfLink")
RETRY_SECONDS = 60.0

# The loader's requests are not audited; everyone else's are, as in `AUDIT_POLICY`.
LOADER_AUDIT_POLICY = AUDIT_POLICY.replace(
    "rules:\n", f"rules:\n- level: None\n  users: [{LOADER}]\n")

# Flags of the benchmark's control plane, for 550k objects and more:
# - etcd's default 2 GiB quota: 550k objects written twice (create, then status) with their
#   managedFields are ~2.5 GiB of revisions before the API server's 5-minute compaction frees
#   them, and etcd refuses every write past the quota (`mvcc: database space exceeded`).
ETCD_FLAGS = ["--quota-backend-bytes=8589934592"]
APISERVER_FLAGS: list[str] = []


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def bench_control_plane() -> ControlPlane:
    return ControlPlane(extra_apiserver_flags=APISERVER_FLAGS, extra_etcd_flags=ETCD_FLAGS,
                        audit_policy=LOADER_AUDIT_POLICY)


def install_all_crds(cp: ControlPlane) -> None:
    from lightkube import Client, KubeConfig

    crds = [*load_test_crds(), yaml.safe_load(HEALTH_CRD.read_text())]
    with Client(KubeConfig.from_file(cp.kubeconfig_path), trust_env=False) as client:
        install_crds(client, crds, timeout=60)


# --- resources ------------------------------------------------------------------------------


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


# --- objects --------------------------------------------------------------------------------


def _containers(name: str) -> list[dict[str, Any]]:
    return [{"name": name, "image": f"bench.local/{name}:1"}]


def loadable(obj: dict[str, Any]) -> dict[str, Any]:
    """The synthetic object as a controller would create it: server-set metadata dropped,
    and what the API server requires but the analysis never reads filled in (Pod containers,
    a workload's pod template, a Service's ports, an Application service's display names,
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
    elif kind in ("Deployment", "StatefulSet") and isinstance(spec, dict):
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


def in_order(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Namespaces first, then every owner before what it owns (within `objects`)."""
    uids = {o["metadata"]["uid"] for o in objects}
    placed: set[str] = set()
    ordered: list[dict[str, Any]] = []
    pending = sorted(objects, key=lambda o: o["kind"] != "Namespace")
    while pending:
        later = []
        for obj in pending:
            owners = [r["uid"] for r in obj["metadata"].get("ownerReferences", [])]
            if any(u in uids and u not in placed for u in owners):
                later.append(obj)
                continue
            ordered.append(obj)
            placed.add(obj["metadata"]["uid"])
        if len(later) == len(pending):
            raise RuntimeError(f"ownerReferences in a cycle: {later[:3]}")
        pending = later
    return ordered


# --- loading --------------------------------------------------------------------------------


def _loader_ssl(cp: ControlPlane, directory: Path) -> ssl.SSLContext:
    """TLS as the loader's own user (its client certificate from its kubeconfig)."""
    config = yaml.safe_load(cp.make_user_kubeconfig(LOADER, ["system:masters"]).read_text())
    user = config["users"][0]["user"]
    cert, key = directory / "loader.crt", directory / "loader.key"
    cert.write_bytes(base64.b64decode(user["client-certificate-data"]))
    key.write_bytes(base64.b64decode(user["client-key-data"]))
    key.chmod(0o600)
    context = ssl.create_default_context(cafile=str(cp.ca_path))
    context.load_cert_chain(str(cert), str(key))
    return context


@dataclass
class Progress:
    objects: int = 0
    requests: int = 0
    retries: int = 0


class BulkLoader:
    """Creates objects through `concurrency` connections; `load_mesh` is the whole mesh."""

    def __init__(self, cp: ControlPlane, concurrency: int) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.cp = cp
        self.concurrency = concurrency
        with cp.http_client(timeout=60.0) as http:
            self.resources = discover(http)
        self.progress = Progress()
        self.uids: dict[str, str] = {}

    async def _request(self, http: aiohttp.ClientSession, method: str, url: str,
                       body: Any = None, patch: bool = False) -> Answer:
        """429 (storage initialising right after a CRD) and transport errors are retried for
        a while, as a controller would."""
        headers = {"Content-Type": "application/merge-patch+json" if patch
                   else "application/json"}
        data = json.dumps(body, separators=(",", ":")) if body is not None else None
        deadline = time.monotonic() + RETRY_SECONDS
        while True:
            try:
                async with http.request(method, self.cp.url + url, data=data,
                                        headers=headers) as response:
                    answer = Answer(response.status, await response.text(),
                                    response.headers.get("Retry-After"))
            except (aiohttp.ClientError, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                self.progress.retries += 1
                await asyncio.sleep(0.5)
                continue
            self.progress.requests += 1
            if answer.status != 429 or time.monotonic() > deadline:
                return answer
            self.progress.retries += 1
            await asyncio.sleep(min(float(answer.retry_after or 1), 5.0))

    async def _create(self, http: aiohttp.ClientSession, obj: dict[str, Any]) -> None:
        res = self.resources[(obj["apiVersion"], obj["kind"])]
        body = loadable(obj)
        for ref in body["metadata"].get("ownerReferences", []):
            ref["uid"] = self.uids.get(ref["uid"], ref["uid"])
        status = body.pop("status", None) if res.has_status else None
        namespace, name = body["metadata"].get("namespace"), body["metadata"]["name"]
        what = f"{obj['kind']} {namespace}/{name}"
        answer = await self._request(http, "POST", res.url(namespace), body)
        if answer.status == 409:
            # A fresh cluster: it exists because a create that failed in transit went through.
            answer = await self._request(http, "GET", res.url(namespace, name))
        _checked(answer, f"creating {what}")
        self.uids[obj["metadata"]["uid"]] = str(json.loads(answer.text)["metadata"]["uid"])
        if status:
            _checked(await self._request(http, "PATCH", res.url(namespace, name, "status"),
                                         {"status": status}, patch=True),
                     f"writing the status of {what}")
        self.progress.objects += 1

    async def _each(self, items: Iterator[T],
                    handle: Callable[[aiohttp.ClientSession, T], Awaitable[None]]) -> None:
        """`handle` every item, `concurrency` at a time, over as many connections."""
        with tempfile.TemporaryDirectory(prefix="bulk-load-") as tmp:
            context = _loader_ssl(self.cp, Path(tmp))
            connector = aiohttp.TCPConnector(limit=self.concurrency, ssl=context)
            timeout = aiohttp.ClientTimeout(total=60.0)
            async with aiohttp.ClientSession(connector=connector, timeout=timeout,
                                             trust_env=False) as http:
                async def worker() -> None:
                    for item in items:  # shared: each worker takes the next item
                        await handle(http, item)

                workers = [asyncio.create_task(worker()) for _ in range(self.concurrency)]
                try:
                    await asyncio.gather(*workers)
                finally:
                    for task in workers:
                        task.cancel()

    def _run(self, work: Awaitable[None],
             report: Callable[[Progress, float], None] | None, every: float = 15.0) -> float:
        started = time.monotonic()

        async def run() -> None:
            task = asyncio.ensure_future(work)
            while not task.done():
                await asyncio.wait([task], timeout=every)
                if report is not None and not task.done():
                    report(self.progress, time.monotonic() - started)
            task.result()

        asyncio.run(run())
        return time.monotonic() - started

    def load(self, groups: Iterator[list[dict[str, Any]]],
             report: Callable[[Progress, float], None] | None = None) -> tuple[float, Progress]:
        """Every group (created in order within itself, groups concurrently); returns
        (seconds, progress so far)."""
        async def create_group(http: aiohttp.ClientSession, group: list[dict[str, Any]]) -> None:
            for obj in in_order(group):
                await self._create(http, obj)

        return self._run(self._each(groups, create_group), report), self.progress

    def patch_all(self, patches: list[tuple[str, dict[str, Any]]]) -> tuple[float, Progress]:
        """Merge-patch each (URL, body), concurrently."""
        async def patch(http: aiohttp.ClientSession, item: tuple[str, dict[str, Any]]) -> None:
            url, body = item
            _checked(await self._request(http, "PATCH", url, body, patch=True),
                     f"patching {url}")

        return self._run(self._each(iter(patches), patch), None), self.progress

    def load_mesh(self, first: int, apps: int, namespaces: int,
                  report: Callable[[Progress, float], None] | None = None,
                  ) -> tuple[float, Progress]:
        """Applications first..apps-1 (x `namespaces`); with first == 0 also the system
        namespaces and objects before them, and the webhook configurations after them (the
        API server would call those on later writes)."""
        system = synthetic.system() if first == 0 else []
        webhooks = [o for o in system if o["kind"].endswith("WebhookConfiguration")]
        namespaces_ = [{"apiVersion": "v1", "kind": "Namespace",
                        "metadata": {"name": n, "uid": f"bench-ns-{n}"}}
                       for n in SYSTEM_NAMESPACES] if first == 0 else []

        def groups() -> Iterator[list[dict[str, Any]]]:
            for i in range(first, apps):
                yield synthetic.application(i, namespaces)

        started = time.monotonic()
        if system:
            self.load(iter([namespaces_ + [o for o in system if o not in webhooks]]))
        before = Progress(self.progress.objects, self.progress.requests)

        def step(progress: Progress, elapsed: float) -> None:
            """Progress reports count this step's objects only."""
            if report is not None:
                report(Progress(progress.objects - before.objects,
                                progress.requests - before.requests, progress.retries),
                       elapsed)

        self.load(groups(), step)
        if webhooks:
            self.load(iter([webhooks]))
        return time.monotonic() - started, self.progress


@dataclass(frozen=True)
class Answer:
    status: int
    text: str
    retry_after: str | None


def _checked(answer: Answer, what: str) -> Answer:
    if answer.status >= 400:
        raise RuntimeError(f"{what}: HTTP {answer.status}: {answer.text[:500]}")
    return answer


def report_progress(progress: Progress, elapsed: float) -> None:
    log(f"  loaded {progress.objects:,} objects ({progress.requests:,} requests) in "
        f"{elapsed:.0f}s: {progress.objects / elapsed:,.0f} objects/s, "
        f"{progress.requests / elapsed:,.0f} requests/s; "
        f"load average {os.getloadavg()[0]:.1f}")


def cpu_seconds(cp: ControlPlane) -> dict[str, float]:
    """CPU seconds used so far by this process, the API server and etcd."""
    used = {"loader": time.process_time()}
    for name, pid in cp.pids().items():
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        used[name] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return used


def cpu_used(before: dict[str, float], after: dict[str, float]) -> str:
    return ", ".join(f"{k} {after[k] - before[k]:.0f}" for k in after)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", type=int, default=1000)
    parser.add_argument("--namespaces", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[64],
                        help="connections; several: one fresh control plane each")
    args = parser.parse_args()
    log(f"load average at the start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
        f"({os.cpu_count()} CPUs)")
    results = []
    for concurrency in args.concurrency:
        with bench_control_plane() as cp:
            install_all_crds(cp)
            loader = BulkLoader(cp, concurrency)
            load_before = os.getloadavg()[0]
            cpu_before = cpu_seconds(cp)
            seconds, progress = loader.load_mesh(0, args.apps, args.namespaces,
                                                 report_progress)
            line = (f"concurrency {concurrency:3d}: {progress.objects:,} objects, "
                    f"{progress.requests:,} requests in {seconds:.1f}s: "
                    f"{progress.objects / seconds:,.0f} objects/s, "
                    f"{progress.requests / seconds:,.0f} requests/s, retries "
                    f"{progress.retries}; CPU s {cpu_used(cpu_before, cpu_seconds(cp))}; "
                    f"load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}")
            log(line)
            results.append(line)
    print("\n".join(results))


if __name__ == "__main__":
    main()
