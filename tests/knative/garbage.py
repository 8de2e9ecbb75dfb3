"""A stand-in for kube-controller-manager's garbage collector, which the test mesh does not run
(envtest is etcd + kube-apiserver only; building kube-controller-manager from k8s.io/kubernetes
would add minutes to a cold `make test` for this one controller).

What it does is the part of the real one the smoke tests depend on: an object whose controlling
owner (`ownerReferences[].controller: true`) no longer exists is deleted, with background
propagation, as kubernetes/pkg/controller/garbagecollector does for a Trigger's Subscription
(knative/eventing@v0.48.0 pkg/reconciler/broker/resources/subscription.go makes the Trigger its
controller, `kmeta.NewControllerRef`; the Trigger reconciler has no FinalizeKind: its deletion
is left to the collector). Only the given kinds, in one namespace:
the mesh is shared by the whole session and other tests rely on nothing being collected.
"""

from __future__ import annotations

import threading
from typing import Any

from lightkube import ApiError, Client, KubeConfig

from tests.knative.mesh import KnativeMesh, resource

INTERVAL = 0.1  # seconds between passes; the real collector reacts to watch events at once


class GarbageCollector:
    """`with GarbageCollector(mesh, ns, dependents=("Subscription",), owners=("Trigger",)):`"""

    def __init__(self, mesh: KnativeMesh, namespace: str, *,
                 dependents: tuple[str, ...] = ("Subscription",),
                 owners: tuple[str, ...] = ("Trigger",)) -> None:
        self.namespace = namespace
        self.dependents, self.owners = dependents, owners
        # Its own client: lightkube's sync Client is not shared across threads here.
        self._client = Client(KubeConfig.from_file(mesh.kubeconfig_path), trust_env=False)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="test-gc", daemon=True)
        self.collected: list[str] = []
        self.errors: list[str] = []

    def __enter__(self) -> GarbageCollector:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._client.close()
        assert not self._thread.is_alive(), "the garbage collector stand-in did not stop"
        assert not self.errors, f"the garbage collector stand-in failed: {self.errors}"

    def _loop(self) -> None:
        while not self._stop.wait(INTERVAL):
            try:
                self._pass()
            except Exception as exc:  # reported at __exit__, in the test that used it
                self.errors.append(f"{type(exc).__name__}: {exc}")
                return

    def _pass(self) -> None:
        for kind in self.dependents:
            for obj in self._client.list(resource(kind), namespace=self.namespace):
                meta = obj.metadata
                owner = next((r for r in meta.ownerReferences or []
                              if r.controller and r.kind in self.owners), None)
                if owner is None or meta.deletionTimestamp or self._exists(owner):
                    continue
                try:
                    self._client.delete(resource(kind), meta.name, namespace=self.namespace)
                    self.collected.append(f"{kind} {meta.name}")
                except ApiError as exc:
                    if exc.status.code != 404:
                        raise

    def _exists(self, ref: Any) -> bool:
        """As the real collector: the owner by name, and the same uid (a new object of the old
        name does not own the dependent)."""
        try:
            found = self._client.get(resource(ref.kind), ref.name, namespace=self.namespace)
        except ApiError as exc:
            if exc.status.code == 404:
                return False
            raise
        return bool(found.metadata and found.metadata.uid == ref.uid)
