"""The emulated event mesh (issue 5): each data-plane hop of a Kyma 1.x / Knative v0.12 mesh
served over HTTP on loopback, routing real CloudEvents by the Subscriptions and Triggers of a
real API server, with faults injectable per hop at run time. Test tooling, not product code:
see `tests/emulator/README.md`.
"""

from .ce import CloudEvent, from_http, new_event, to_binary, to_structured
from .faults import HOPS, Counters, Ctx, Fault
from .mesh import CONTROL, PORT_ORDER, Emulator, SubscriberDelivery, legacy_to_cloudevent
from .receiver import Arrival, Receiver
from .routing import Delivery, KubeWatcher, Routes, matches, subscriber_uri
from .threaded import ThreadedEmulator

__all__ = [
    "CONTROL",
    "HOPS",
    "PORT_ORDER",
    "Arrival",
    "CloudEvent",
    "Counters",
    "Ctx",
    "Delivery",
    "Emulator",
    "Fault",
    "KubeWatcher",
    "Receiver",
    "Routes",
    "SubscriberDelivery",
    "ThreadedEmulator",
    "from_http",
    "legacy_to_cloudevent",
    "matches",
    "new_event",
    "subscriber_uri",
    "to_binary",
    "to_structured",
]
