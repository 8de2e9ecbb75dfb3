"""pytest plugin: a real kube-apiserver + etcd with the test CRDs installed.

Register it with ``pytest_plugins = ["tests.envtest.fixtures"]`` (done in ``tests/conftest.py``)
and mark tests that use it with ``@pytest.mark.envtest``.

Fixtures:

- ``control_plane`` (session): a started :class:`ControlPlane` with every ``tests/crds/*.yaml``
  installed and ``Established``. Starting fails loudly (never skips) if the binaries cannot be had.
- ``kube_client`` (function): a ``lightkube.Client`` for the admin (``system:masters``) kubeconfig.
- ``namespace`` (function): the name of a fresh namespace, deleted best-effort afterwards (it stays
  ``Terminating``: no controller manager runs).
"""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from lightkube import Client, KubeConfig
from lightkube.generic_resource import create_global_resource, create_namespaced_resource
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition
from lightkube.resources.core_v1 import Namespace

from .controlplane import ControlPlane

CRD_DIR = Path(__file__).resolve().parents[1] / "crds"
CRD_ESTABLISH_TIMEOUT = 30.0


def load_test_crds(crd_dir: Path = CRD_DIR) -> list[dict[str, Any]]:
    """The CRD manifests in ``tests/crds`` (one per ``*.yaml`` file), sorted by file name."""
    crds = []
    for path in sorted(crd_dir.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        if not (isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition"):
            raise ValueError(f"{path} is not a single CustomResourceDefinition")
        crds.append(doc)
    return crds


def crd_resource(crd: dict[str, Any], version: str | None = None) -> Any:
    """The lightkube generic resource class for a CRD manifest (storage version by default)."""
    spec = crd["spec"]
    if version is None:
        version = next(v["name"] for v in spec["versions"] if v.get("storage"))
    create = create_namespaced_resource if spec["scope"] == "Namespaced" else create_global_resource
    return create(spec["group"], version, spec["names"]["kind"], spec["names"]["plural"])


def all_crd_resources() -> dict[str, Any]:
    """``{"<plural>.<group>": lightkube resource class}`` for every test CRD."""
    return {crd["metadata"]["name"]: crd_resource(crd) for crd in load_test_crds()}


def install_crds(client: Client, crds: list[dict[str, Any]], timeout: float = 30.0) -> None:
    """Create the CRDs and wait until each is ``Established`` (raises TimeoutError)."""
    for crd in crds:
        client.create(CustomResourceDefinition.from_dict(crd))
    deadline = time.monotonic() + timeout
    pending = [crd["metadata"]["name"] for crd in crds]
    while pending:
        still = []
        for name in pending:
            obj = client.get(CustomResourceDefinition, name)
            conditions = (obj.status.conditions if obj.status else None) or []
            if not any(c.type == "Established" and c.status == "True" for c in conditions):
                still.append(name)
        pending = still
        if pending and time.monotonic() > deadline:
            raise TimeoutError(f"envtest: CRDs not Established after {timeout:.0f}s: {pending}")
        if pending:
            time.sleep(0.1)


def wait_served(cp: ControlPlane, crds: list[dict[str, Any]], timeout: float = 30.0) -> None:
    """Wait until the API server's watch cache serves every CRD's resource: `Established`
    comes first, and a watch opened before its storage is ready is answered 429 "storage is
    (re)initializing" (a LIST with resourceVersion=0 is served from that cache too)."""
    deadline = time.monotonic() + timeout
    with cp.http_client(timeout=5) as http:
        for crd in crds:
            group, plural = crd["spec"]["group"], crd["spec"]["names"]["plural"]
            version = next(v["name"] for v in crd["spec"]["versions"] if v.get("storage"))
            url = f"/apis/{group}/{version}/{plural}?resourceVersion=0&limit=1"
            while (answer := http.get(url)).status_code != 200:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"envtest: {plural}.{group} not served after "
                                       f"{timeout:.0f}s: {answer.status_code} {answer.text}")
                time.sleep(0.05)


@contextlib.contextmanager
def control_plane_with_test_crds(timeout: float = 30.0) -> Iterator[ControlPlane]:
    """A kube-apiserver + etcd of its own with the test CRDs installed and served; stopped on
    exit. Modules that install cluster-wide objects (policies, the chart) use one of their own."""
    cp = ControlPlane()
    try:
        cp.start()
        with Client(KubeConfig.from_file(cp.kubeconfig_path), trust_env=False) as client:
            install_crds(client, load_test_crds(), timeout)
        wait_served(cp, load_test_crds(), timeout)
        yield cp
    finally:
        cp.stop()


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    """A running kube-apiserver + etcd for the whole session, with the test CRDs installed."""
    with control_plane_with_test_crds(CRD_ESTABLISH_TIMEOUT) as cp:
        yield cp


@pytest.fixture
def kube_client(control_plane: ControlPlane) -> Iterator[Client]:
    """A lightkube client authenticated as the admin (group ``system:masters``).

    Restarts kube-apiserver first if an earlier (outage) test left it stopped.
    """
    if not control_plane.apiserver_running:
        control_plane.start_apiserver()
    client = Client(KubeConfig.from_file(control_plane.kubeconfig_path), trust_env=False)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def namespace(request: pytest.FixtureRequest, kube_client: Client) -> Iterator[str]:
    """A fresh, uniquely named namespace for one test; deleted best-effort afterwards."""
    stem = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{stem or 'test'}-{uuid.uuid4().hex[:8]}"
    kube_client.create(Namespace.from_dict({"metadata": {"name": name}}))
    try:
        yield name
    finally:
        # Best effort: the test may have stopped the API server.
        with contextlib.suppress(Exception):
            kube_client.delete(Namespace, name)
