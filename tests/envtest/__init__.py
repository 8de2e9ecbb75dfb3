"""A real kube-apiserver + etcd for tests (a Python take on controller-runtime's envtest).

See :mod:`tests.envtest.controlplane` (``ControlPlane``) and :mod:`tests.envtest.fixtures`
(pytest fixtures ``control_plane``, ``kube_client``, ``namespace``).
"""

from .controlplane import ControlPlane, find_binaries, iter_audit_events

__all__ = ["ControlPlane", "find_binaries", "iter_audit_events"]
