"""The Helm chart driven as a user drives it: the real `helm` (`tests.tools`, built by
hack/tools/build.sh) renders it, and its objects are applied server-side to a test API
server. Shared by the chart's own tests and the smoke tests that run as its accounts."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.live_objects import ApiServer
from tests.tools import tool

CHART = Path(__file__).resolve().parents[1] / "deploy" / "helm" / "eventmesh-health"
NAMESPACE, RELEASE = "kyma-system", "eventmesh-health"


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    home = Path(os.environ.get("TMPDIR", "/tmp")) / "eventmesh-health-helm-home"
    env = {**os.environ, "HELM_CONFIG_HOME": str(home / "config"),
           "HELM_CACHE_HOME": str(home / "cache"), "HELM_DATA_HOME": str(home / "data")}
    ran = subprocess.run([str(tool("helm")), *args], capture_output=True, text=True,
                         env=env, check=False)
    if check:
        assert ran.returncode == 0, f"helm {' '.join(args)}:\n{ran.stdout}\n{ran.stderr}"
    return ran


def sets(values: tuple[str, ...]) -> list[str]:
    return [arg for value in values for arg in ("--set", value)]


def render(*values: str, release: str = RELEASE, namespace: str = NAMESPACE
           ) -> list[dict[str, Any]]:
    out = helm("template", release, str(CHART), "--namespace", namespace, *sets(values)).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def key(doc: dict[str, Any]) -> tuple[str, str, str]:
    return (doc["kind"], doc["metadata"].get("namespace", ""), doc["metadata"]["name"])


def ensure_namespace(api: ApiServer, name: str) -> None:
    answer = api.request("POST", "/api/v1/namespaces", {
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    assert answer.status_code in (201, 409), answer.text


def server_side_apply(api: ApiServer, doc: dict[str, Any]) -> httpx.Response:
    url = api.resource(doc["apiVersion"], doc["kind"]).url(doc["metadata"].get("namespace"))
    deadline = time.monotonic() + 30
    while True:
        answer = api.http.patch(
            f"{url}/{doc['metadata']['name']}",
            params={"fieldManager": "helm", "force": "true", "fieldValidation": "Strict"},
            content=json.dumps(doc), headers={"Content-Type": "application/apply-patch+yaml"})
        if answer.status_code != 429 or time.monotonic() > deadline:
            return answer
        time.sleep(0.2)


def apply_all(api: ApiServer, docs: list[dict[str, Any]]) -> None:
    """CRDs first (and served), then the rest; every object must be accepted."""
    crds = [d for d in docs if d["kind"] == "CustomResourceDefinition"]
    for doc in crds:
        answer = server_side_apply(api, doc)
        assert answer.status_code in (200, 201), f"{key(doc)}: {answer.text}"
    if crds:
        api._resources = None  # rediscover
        wait_for(lambda: all(api.request("GET", f"/apis/{d['spec']['group']}/"
                                         f"{d['spec']['versions'][0]['name']}/"
                                         f"{d['spec']['names']['plural']}").status_code == 200
                             for d in crds), "the chart's CRDs are served")
    for doc in docs:
        if doc["kind"] == "CustomResourceDefinition":
            continue
        answer = server_side_apply(api, doc)
        assert answer.status_code in (200, 201), f"{key(doc)}: {answer.text}"


def wait_for(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except (httpx.HTTPError, KeyError, ValueError):
            result = None
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f}s: {what}"
        time.sleep(0.1)


def sa_identity(namespace: str, name: str) -> tuple[str, list[str]]:
    return (f"system:serviceaccount:{namespace}:{name}",
            ["system:serviceaccounts", f"system:serviceaccounts:{namespace}"])
