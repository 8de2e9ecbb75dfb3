"""pytest plugin: real Knative Eventing v1 on its own kube-apiserver + etcd.

Registered in ``tests/conftest.py``; mark tests that use it with ``@pytest.mark.knative``.

Fixtures:

- ``knative_mesh`` (session): a started :class:`~tests.knative.mesh.KnativeMesh`. It has its own
  control plane, not the shared ``control_plane`` (Knative v1's CRDs have the names of the
  v1alpha1 test CRDs). Starting fails loudly (never skips) if the binaries cannot be had
  (``make knative`` builds them; ``KNATIVE_ASSETS`` points at a prebuilt folder).
- ``knative_namespace`` (function): a fresh namespace on that mesh. Before and after the test it
  restores the system state (every process running, system Deployments Available, system
  Endpoints ready), so a fault one test induced never leaks into the next.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .mesh import KnativeMesh


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
