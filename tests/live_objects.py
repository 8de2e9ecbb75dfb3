"""Recreate an example dump (`examples/<scenario>`) in a real API server, as its controllers
would have written it, and run the real CLI against it.

`apply_example` creates the example's objects: Namespaces first, then owners before the
objects they own (every `ownerReferences[].uid` rewritten to the owner's new uid), with the
server-set metadata dropped (uid, resourceVersion, creationTimestamp, generation,
managedFields, deletionTimestamp). `status` is written through the `/status` subresource
wherever the resource has one (Deployments, Pods, ... and the CRDs that declare it), as
controllers do. Every timestamp in `status` is shifted so that the example's `takenAt` is
"now": "Ready Unknown for 20 s" stays 20 s.

Two things the API server sets itself are reproduced by acting as the controllers did:

- `metadata.generation` ahead of `status.observedGeneration`: the spec is changed after the
  create until the generation is the example's, then the status (with the example's
  observedGeneration) is written;
- `metadata.deletionTimestamp`: the object is created with its finalizers, then DELETEd; the
  server sets deletionTimestamp (to now, not to the example's time: run `check` with
  `--stuck-deletion-after 0s` for such a scenario, see `Applied.check_args`) and bumps the
  generation, as it did in the real cluster.

Admission webhook configurations are created last and deleted first: the API server would
call the (absent) webhooks on every later write otherwise.

`clear_cluster` deletes every object of the kinds the profile reads (and of the other kinds the
examples hold) except Namespaces and the API server's own `default/kubernetes` Service, so
scenarios do not see each other's (or other tests') objects. Namespaces are never deleted
(without a controller manager they never finish terminating): they are created or updated.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import yaml

from eventmesh_health.snapshot import SNAPSHOT_INFO_API_VERSION, SNAPSHOT_INFO_KIND
from eventmesh_health.sources.files import read_dump, snapshot_of
from eventmesh_health.topology.kyma1 import PROFILE as KYMA_1
from tests.envtest.controlplane import ControlPlane
from tests.envtest.fixtures import load_test_crds

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
WEBHOOK_KINDS = {"ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"}
# Kinds of the examples that the analysis does not read, created for fidelity (and cleared).
EXTRA_KINDS = (("v1", "ConfigMap"), ("apps/v1", "ReplicaSet"), ("v1", "ServiceAccount"))
# Objects the API server keeps for itself.
PROTECTED = {("Service", "default", "kubernetes"), ("Endpoints", "default", "kubernetes"),
             ("EndpointSlice", "default", "kubernetes")}
SERVER_SET = ("uid", "resourceVersion", "creationTimestamp", "generation", "managedFields",
              "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink")
OBSERVED_FIELDS = ("observedGeneration", "reconciledGeneration")
_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")
MARK = "eventmesh-health.test/example"  # annotation on every object created here
BUMP = "eventmeshHealthTestGeneration"  # a spec field (custom resources)
BUMP_ANNOTATION = "eventmesh-health.test/generation"  # a pod template annotation (built-ins)
TIMEOUT = 30.0
WORKERS = 8
CRD_GROUPS = frozenset(crd["spec"]["group"] for crd in load_test_crds())


def cli_command() -> list[str]:
    """The installed `eventmesh-health` script next to this Python, else `python -m`."""
    script = Path(sys.executable).with_name("eventmesh-health")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "eventmesh_health"]


def run_cli(*args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    return subprocess.run(
        [*cli_command(), *map(str, args)], capture_output=True, text=True, timeout=timeout,
        check=False, env=env,
    )


def report_json(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode in (0, 1), (
        f"exit {result.returncode}\nstdout: {result.stdout[-2000:]}\nstderr: {result.stderr}"
    )
    data: dict[str, Any] = json.loads(result.stdout)
    return data


RootCause = tuple[str, str | None, str | None, str]


def findings(report: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from report["system"]["findings"]
    for app in report["applications"]:
        yield from app["findings"]
        for ns in app["namespaces"]:
            yield from ns["findings"]


def root_causes(report: dict[str, Any]) -> set[RootCause]:
    """(kind, namespace, name, reason) of every root-cause finding."""
    return {
        (f["object"]["kind"], f["object"]["namespace"], f["object"]["name"], f["reason"])
        for f in findings(report) if f["rootCause"]
    }


# --- the example ----------------------------------------------------------------------------


@dataclass
class Example:
    name: str
    path: Path
    objects: list[dict[str, Any]]
    taken_at: datetime


def scenarios() -> list[str]:
    """The Kyma 1.x examples (knative-v1/ holds recordings of the real Knative v1.21)."""
    return sorted(p.name for p in EXAMPLES.iterdir() if p.is_dir() and p.name != "knative-v1")


def load_example(name: str) -> Example:
    path = EXAMPLES / name
    # Whole objects, not the lean reading `check` does: they go to an API server, which wants
    # every field it validates (a Deployment's selector and containers).
    snapshot = snapshot_of(read_dump(path, lean=False), KYMA_1, now=datetime.now(UTC))
    assert not snapshot.problems, f"{name}: unusable input {snapshot.problems}"
    objects = [copy.deepcopy(o) for o in snapshot.objects if isinstance(o, dict)]
    return Example(name, path, objects, snapshot.taken_at)


def write_objects(objects: Iterable[dict[str, Any]], taken_at: datetime, folder: Path) -> Path:
    """A dump of `objects` (for the snapshot side of a comparison), with the example's time."""
    folder.mkdir(parents=True, exist_ok=True)
    info = {"apiVersion": SNAPSHOT_INFO_API_VERSION, "kind": SNAPSHOT_INFO_KIND,
            "metadata": {"name": "snapshot"},
            "takenAt": taken_at.isoformat().replace("+00:00", "Z")}
    (folder / "snapshot.yaml").write_text(yaml.safe_dump(info))
    (folder / "objects.yaml").write_text(
        yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": list(objects)})
    )
    return folder


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def describe(obj: dict[str, Any]) -> str:
    meta = _meta(obj)
    where = f"{meta.get('namespace')}/" if meta.get("namespace") else ""
    return f"{obj.get('kind')} {where}{meta.get('name') or '<no name>'}"


# --- the API server -------------------------------------------------------------------------


@dataclass(frozen=True)
class Resource:
    api_version: str
    kind: str
    plural: str
    namespaced: bool
    has_status: bool

    def url(self, namespace: str | None = None, name: str | None = None,
            sub: str | None = None) -> str:
        base = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        parts = [base]
        if self.namespaced and namespace:
            parts.append(f"namespaces/{namespace}")
        parts.append(self.plural)
        if name:
            parts.append(name)
        if sub:
            parts.append(sub)
        return "/".join(parts)


class ApiServer:
    """Raw REST calls as the admin (what a controller would send)."""

    def __init__(self, control_plane: ControlPlane) -> None:
        self.http = control_plane.http_client(timeout=TIMEOUT)
        self._resources: dict[tuple[str, str], Resource] | None = None

    def close(self) -> None:
        self.http.close()

    def resources(self) -> dict[tuple[str, str], Resource]:
        if self._resources is None:
            found: dict[tuple[str, str], Resource] = {}
            versions = ["v1"] + [
                v["groupVersion"] for g in self._get("/apis")["groups"] for v in g["versions"]
            ]
            for gv in versions:
                base = "/api/v1" if gv == "v1" else f"/apis/{gv}"
                listing = self._get(base)["resources"]
                names = {r["name"] for r in listing}
                for r in listing:
                    if "/" in r["name"]:
                        continue
                    found[(gv, r["kind"])] = Resource(
                        gv, r["kind"], r["name"], r["namespaced"], f"{r['name']}/status" in names
                    )
            self._resources = found
        return self._resources

    def resource(self, api_version: str, kind: str) -> Resource:
        try:
            return self.resources()[(api_version, kind)]
        except KeyError:
            raise AssertionError(f"the API server does not serve {kind} {api_version}") from None

    def _get(self, url: str) -> dict[str, Any]:
        answer = self.request("GET", url)
        answer.raise_for_status()
        data: dict[str, Any] = answer.json()
        return data

    def request(self, method: str, url: str, body: Any = None, *, patch: bool = False,
                params: dict[str, str] | None = None) -> httpx.Response:
        """One request; a 429 ("storage is (re)initializing" right after a CRD is established)
        is retried after its Retry-After, as client-go does."""
        headers = {"Content-Type": "application/merge-patch+json"} if patch else None
        content = json.dumps(body) if body is not None else None
        deadline = time.monotonic() + TIMEOUT
        while True:
            answer = self.http.request(method, url, content=content, headers=headers,
                                       params=params)
            if answer.status_code != 429 or time.monotonic() > deadline:
                return answer
            time.sleep(min(float(answer.headers.get("Retry-After") or 1), 5.0))

    def list(self, res: Resource) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self._get(res.url())["items"]
        return items


def _check(answer: httpx.Response, what: str) -> dict[str, Any]:
    if answer.is_error:
        raise AssertionError(f"{what}: HTTP {answer.status_code}: {answer.text[:500]}")
    data: dict[str, Any] = answer.json()
    return data


class Rejected(Exception):
    """The API server refused the object (as it would have refused it in a real cluster)."""


# --- clearing -------------------------------------------------------------------------------


def cleared_resources(api: ApiServer) -> list[Resource]:
    kinds = [(k.api_version, k.kind) for k in KYMA_1.kinds if k.kind != "Namespace"]
    kinds += list(EXTRA_KINDS)
    served = [api.resources()[k] for k in kinds if k in api.resources()]
    # Webhook configurations first: they intercept every later write.
    return sorted(served, key=lambda r: r.kind not in WEBHOOK_KINDS)


def _cleared(res: Resource, obj: dict[str, Any]) -> bool:
    """Every object of a kind the profile reads (whoever made it), except the API server's
    own; of the other kinds only what we created (the API server keeps ConfigMaps too)."""
    meta = obj["metadata"]
    if (res.kind, meta.get("namespace"), meta["name"]) in PROTECTED:
        return False
    return (res.api_version, res.kind) not in EXTRA_KINDS or MARK in (
        meta.get("annotations") or {}
    )


def clear_cluster(api: ApiServer) -> None:
    """Delete every cleared object (finalizers removed first), then wait until all are gone."""
    resources = cleared_resources(api)

    def delete(item: tuple[Resource, dict[str, Any]]) -> None:
        res, obj = item
        meta = obj["metadata"]
        url = res.url(meta.get("namespace"), meta["name"])
        if meta.get("finalizers"):
            answer = api.request("PATCH", url, {"metadata": {"finalizers": None}}, patch=True)
            if answer.status_code != 404:
                _check(answer, f"removing finalizers of {describe(obj)}")
        answer = api.request("DELETE", url, params={"gracePeriodSeconds": "0"})
        if answer.status_code != 404:
            _check(answer, f"deleting {describe(obj)}")

    webhooks = [r for r in resources if r.kind in WEBHOOK_KINDS]
    for group in (webhooks, [r for r in resources if r.kind not in WEBHOOK_KINDS]):
        _parallel(delete, [(r, o) for r in group for o in api.list(r) if _cleared(r, o)])
    deadline = time.monotonic() + TIMEOUT
    while True:
        left = [describe(o) for res in resources for o in api.list(res) if _cleared(res, o)]
        if not left:
            return
        assert time.monotonic() < deadline, f"objects not gone after {TIMEOUT:.0f}s: {left[:10]}"
        time.sleep(0.1)


# --- applying -------------------------------------------------------------------------------


@dataclass
class Applied:
    example: Example
    created: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[tuple[dict[str, Any], str]] = field(default_factory=list)
    deleted: list[dict[str, Any]] = field(default_factory=list)

    @property
    def check_args(self) -> list[str]:
        """Thresholds for `check` on the live cluster (and the example, for comparison).

        The server sets deletionTimestamp to the time of our DELETE, not to the example's: an
        object the example shows as stuck (deleted long ago, finalizers still there) is only
        seconds into its deletion here, so any deletion counts as stuck."""
        return ["--stuck-deletion-after", "0s"] if self.deleted else []


def _shift_times(value: Any, delta: timedelta) -> Any:
    if isinstance(value, dict):
        return {k: _shift_times(v, delta) for k, v in value.items()}
    if isinstance(value, list):
        return [_shift_times(v, delta) for v in value]
    if isinstance(value, str) and _TIME.match(value):
        moment = datetime.fromisoformat(value) + delta
        text = moment.astimezone(UTC).isoformat(timespec="microseconds" if "." in value
                                                else "seconds")
        return text.replace("+00:00", "Z")
    return value


def _owner_levels(objects: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Objects grouped so that every owner (by uid, within the example) comes in an earlier
    group than what it owns (the owner's new uid is needed to rewrite the reference)."""
    by_uid = {_meta(o).get("uid"): o for o in objects if _meta(o).get("uid")}
    depth: dict[int, int] = {}

    def level(obj: dict[str, Any], seen: frozenset[int] = frozenset()) -> int:
        key = id(obj)
        if key not in depth:
            owners = [by_uid.get(r.get("uid")) for r in _meta(obj).get("ownerReferences") or []
                      if isinstance(r, dict)]
            found = [o for o in owners if o is not None and id(o) not in seen]
            depth[key] = 1 + max((level(o, seen | {key}) for o in found), default=-1)
        return depth[key]

    levels: dict[int, list[dict[str, Any]]] = {}
    for obj in objects:
        levels.setdefault(level(obj), []).append(obj)
    return [levels[n] for n in sorted(levels)]


def _parallel(work: Callable[[Any], None], items: list[Any]) -> None:
    """Run `work` on every item with a few threads (the API server handles many requests at
    once); the first exception is raised."""
    if not items:
        return
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        for future in [pool.submit(work, item) for item in items]:
            future.result()


def _target_generation(obj: dict[str, Any]) -> int:
    """The generation the object must have before its status is written: the example's, less
    the bump the DELETE will add for an object shown being deleted."""
    generation = _meta(obj).get("generation")
    if not isinstance(generation, int) or generation < 1:
        return 1
    if _meta(obj).get("deletionTimestamp"):
        generation -= 1
    status = obj.get("status") if isinstance(obj.get("status"), dict) else {}
    lagging = any(isinstance(status.get(f), int) and status[f] < generation
                  for f in OBSERVED_FIELDS)
    return max(generation, 1) if lagging else 1


def _status_for(obj: dict[str, Any], live_generation: int, delta: timedelta) -> Any:
    """The example's status, timestamps shifted, observed generations kept in step."""
    status = _shift_times(copy.deepcopy(obj.get("status")), delta)
    generation = _meta(obj).get("generation")
    if isinstance(status, dict) and isinstance(generation, int):
        if _meta(obj).get("deletionTimestamp"):
            generation -= 1
        for name in OBSERVED_FIELDS:
            if isinstance(status.get(name), int):
                status[name] = live_generation - (generation - status[name])
    return status


def _is_base64(value: Any) -> bool:
    try:
        base64.b64decode(str(value), validate=True)
    except ValueError:
        return False
    return True


def _body(
    obj: dict[str, Any], uids: dict[str, str], with_status: bool, example: str
) -> dict[str, Any]:
    body = copy.deepcopy(obj)
    meta = body.setdefault("metadata", {})
    for key in SERVER_SET:
        meta.pop(key, None)
    for ref in meta.get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("uid") in uids:
            ref["uid"] = uids[ref["uid"]]
    meta.setdefault("annotations", {})[MARK] = example
    if not with_status:
        body.pop("status", None)
    if body.get("kind") in WEBHOOK_KINDS:
        for hook in body.get("webhooks") or []:
            config = hook.get("clientConfig") or {}
            if "caBundle" in config and not _is_base64(config["caBundle"]):
                # The examples shorten the CA bundle to a placeholder that is not base64,
                # which the API server rejects; its content matters to nobody here.
                config["caBundle"] = base64.b64encode(b"example CA bundle").decode()
    if body.get("kind") == "Service" and body.get("apiVersion") == "v1":
        spec = body.get("spec") or {}
        if spec.get("clusterIP") not in (None, "None"):  # the server allocates from its range
            spec.pop("clusterIP", None)
            spec.pop("clusterIPs", None)
    return body


def _marker(res: Resource, value: str | None) -> dict[str, Any]:
    """A spec change that bumps the generation: a field of a custom resource's spec (kept by
    the test CRDs, which never prune), a pod template annotation for built-in workloads."""
    if res.api_version.partition("/")[0] in CRD_GROUPS:
        return {"spec": {BUMP: value}}
    return {"spec": {"template": {"metadata": {"annotations": {BUMP_ANNOTATION: value}}}}}


def _merge(into: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)


class Applier:
    def __init__(self, api: ApiServer, example: Example) -> None:
        self.api = api
        self.example = example
        self.delta = datetime.now(UTC).replace(microsecond=0) - example.taken_at
        self.uids: dict[str, str] = {}
        self.applied = Applied(example)

    def run(self) -> Applied:
        objects = self.example.objects
        namespaces = [o for o in objects if o.get("kind") == "Namespace"]
        webhooks = [o for o in objects if o.get("kind") in WEBHOOK_KINDS]
        special = {id(o) for o in [*namespaces, *webhooks]}
        rest = [o for o in objects if id(o) not in special]
        for ns in namespaces:
            self._namespace(ns)
        needed = {_meta(o).get("namespace") for o in rest} - {None}
        for name in sorted(needed - {_meta(n).get("name") for n in namespaces}):
            self._namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        rest = [o for o in rest if (o.get("kind"), _meta(o).get("namespace"),
                                    _meta(o).get("name")) not in PROTECTED]
        for level in _owner_levels(rest):  # owners first; one level at a time, in parallel
            _parallel(self._create, level)
        _parallel(self._delete, [o for o in self.applied.created
                                 if _meta(o).get("deletionTimestamp")])
        _parallel(self._create, webhooks)
        return self.applied

    def _namespace(self, obj: dict[str, Any]) -> None:
        res = self.api.resource("v1", "Namespace")
        name = _meta(obj)["name"]
        body = _body(obj, self.uids, False, self.example.name)
        answer = self.api.request("POST", res.url(), body)
        if answer.status_code == 409:  # exists (default, kube-system or an earlier scenario)
            current = _check(self.api.request("GET", res.url(name=name)), f"namespace {name}")
            current["metadata"]["labels"] = body["metadata"].get("labels") or {}
            current["metadata"]["annotations"] = body["metadata"]["annotations"]
            answer = self.api.request("PUT", res.url(name=name), current)
        created = _check(answer, f"creating {describe(obj)}")
        if "uid" in _meta(obj):
            self.uids[_meta(obj)["uid"]] = created["metadata"]["uid"]
        self.applied.created.append(obj)

    def _create(self, obj: dict[str, Any]) -> None:
        try:
            self._create_or_reject(obj)
        except Rejected as err:
            self.applied.rejected.append((obj, str(err)))
        else:
            self.applied.created.append(obj)

    def _create_or_reject(self, obj: dict[str, Any]) -> None:
        res = self.api.resource(str(obj.get("apiVersion")), str(obj.get("kind")))
        meta = _meta(obj)
        if not meta.get("name"):
            # A stored object always has a name: from generateName the server would make a
            # new one, which is not the object the example shows.
            raise Rejected("metadata.name is required")
        namespace, name = meta.get("namespace"), meta["name"]
        target = _target_generation(obj)
        has_status = isinstance(obj.get("status"), dict) and bool(obj["status"])
        # Without a status subresource the status is part of the object (and of its create).
        inline = not res.has_status
        body = _body(obj, self.uids, inline, self.example.name)
        if inline and has_status:
            body["status"] = _status_for(obj, target, self.delta)
        if target > 1:
            _merge(body, _marker(res, "0"))
        answer = self.api.request("POST", res.url(namespace), body)
        if answer.status_code in (400, 422):
            raise Rejected(f"HTTP {answer.status_code}: {answer.json().get('message')}")
        created = _check(answer, f"creating {describe(obj)}")
        url = res.url(namespace, name)
        try:
            created = self._bump(url, created, target)
            if has_status and res.has_status:
                created["status"] = _status_for(obj, created["metadata"].get("generation", 1),
                                                self.delta)
                answer = self.api.request("PUT", res.url(namespace, name, "status"), created)
                if answer.status_code in (400, 422):
                    raise Rejected(f"status: HTTP {answer.status_code}: "
                                   f"{answer.json().get('message')}")
                _check(answer, f"writing the status of {describe(obj)}")
        except Rejected:
            self.api.request("DELETE", url, params={"gracePeriodSeconds": "0"})
            raise
        if meta.get("uid"):
            self.uids[meta["uid"]] = created["metadata"]["uid"]

    def _bump(self, url: str, created: dict[str, Any], target: int) -> dict[str, Any]:
        """Change the spec until the generation is `target` (the marker is gone at the end)."""
        step = 1
        while (generation := created["metadata"].get("generation", 1)) < target:
            value = None if generation == target - 1 else str(step)
            created = _check(self.api.request("PATCH", url, _marker(self._res(created), value),
                                              patch=True), f"changing the spec of {url}")
            assert created["metadata"].get("generation", 1) == generation + 1, url
            step += 1
        assert created["metadata"].get("generation", 1) == target, created["metadata"]
        return created

    def _res(self, obj: dict[str, Any]) -> Resource:
        return self.api.resource(str(obj["apiVersion"]), str(obj["kind"]))

    def _delete(self, obj: dict[str, Any]) -> None:
        res = self.api.resource(str(obj["apiVersion"]), str(obj["kind"]))
        meta = _meta(obj)
        assert meta.get("finalizers"), f"{describe(obj)}: deleted without finalizers is gone"
        url = res.url(meta.get("namespace"), meta["name"])
        _check(self.api.request("DELETE", url), f"deleting {describe(obj)}")
        live = _check(self.api.request("GET", url), f"reading {describe(obj)}")
        assert live["metadata"].get("deletionTimestamp"), live["metadata"]
        self.applied.deleted.append(obj)


def apply_example(api: ApiServer, name: str) -> Applied:
    """Clear the cluster, then create the example's objects (see the module docstring)."""
    clear_cluster(api)
    return Applier(api, load_example(name)).run()
