"""pytest plugin: real Knative Eventing v1 on its own kube-apiserver + etcd.

Registered in ``tests/conftest.py``; mark tests that use it with ``@pytest.mark.knative``.

Fixtures:

- ``knative_mesh`` (session): a started :class:`~tests.knative.mesh.KnativeMesh`. It has its own
  control plane, not the shared ``control_plane`` (Knative v1's CRDs have the names of the
  v1alpha1 test CRDs). Starting fails loudly (never skips) if the binaries cannot be had
  (``make knative`` builds them; ``KNATIVE_ASSETS`` points at a prebuilt folder).
- ``knative_v012`` (session): a started :class:`~tests.knative.v012.KnativeV012Mesh`, the real
  Knative Eventing v0.12 (Kyma 1.x) on a control plane of its own (one netns per process:
  needs root). Fails loudly, never skips, if it cannot start (``make knative-v012``).
- ``knative_namespace`` (function): a fresh namespace on that mesh. Before and after the test it
  restores the system state (every process running, system Deployments Available, system
  Endpoints ready), so a fault one test induced never leaks into the next.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .mesh import KnativeMesh
from .v012 import KnativeV012Mesh


@pytest.fixture(scope="session")
def knative_mesh() -> Iterator[KnativeMesh]:
    """Knative Eventing v1 for the whole session (one per machine: the dispatcher owns :8080)."""
    mesh = KnativeMesh()
    try:
        mesh.start()
        yield mesh
    finally:
        mesh.stop()


@pytest.fixture
def knative_namespace(request: pytest.FixtureRequest, knative_mesh: KnativeMesh) -> Iterator[str]:
    """A fresh namespace on the Knative mesh, with the system state restored around the test."""
    knative_mesh.restore()
    ns = knative_mesh.new_namespace(request.node.name)
    try:
        yield ns
    finally:
        knative_mesh.restore()
        knative_mesh.delete_namespace(ns)


@pytest.fixture(scope="session")
def knative_v012() -> Iterator[KnativeV012Mesh]:
    """Knative Eventing v0.12 for the whole session (started from the main thread)."""
    mesh = KnativeV012Mesh()
    try:
        mesh.start()
        yield mesh
    finally:
        mesh.stop()
