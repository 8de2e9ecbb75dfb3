"""Faults that can be injected into the hops at run time, and the counters the hops keep.

A fault acts on one hop, optionally scoped (app, namespace, trigger, host: every field that is
set must equal the request's). What each hop knows of a request:

| hop | app | namespace | trigger | host |
|---|---|---|---|---|
| event-service, adapter | from the path | - | - | - |
| channel | from the path | the Subscription's broker namespace (see below) | - | - |
| broker-ingress, trigger-channel | the event's `source` | from the path | - | - |
| broker-filter | the event's `source` | from the path | from the path | - |
| subscriber | the event's `source` | of the subscriber's host | - | subscriber host |

A fault at the channel *with* a namespace acts on the channel's delivery to that namespace's
Subscription (the Channel -> Broker edge: the other namespaces still get the event); every
other fault acts on the request entering the hop.

Kinds (at most one effect per fault; several faults combine):

- `drop` (`ratio`, 0..1, default 1): the hop answers 202 and forwards nothing. Deterministic:
  with ratio r, an accumulator drops exactly one request whenever it reaches 1 (0.25 = every
  4th, starting with the 4th; 1 = every one).
- `delay` (`delay_ms`): the hop holds the request that long before handling it.
- `duplicate` (`copies`, default 1): the hop forwards `1 + copies` times.
- `error` (`status`, default 503): the hop answers that status and forwards nothing.
- `stop`: without scope, the hop's port is closed (connection refused) and its open
  connections are cut; with a scope, requests in scope get their connection closed without an
  answer (the listener serves everyone else). On the channel edge: the delivery fails as if
  the broker ingress refused the connection.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

HOPS = ("event-service", "adapter", "channel", "broker-ingress", "trigger-channel",
        "broker-filter", "subscriber")
KINDS = ("drop", "delay", "duplicate", "error", "stop")
SCOPES: dict[str, tuple[str, ...]] = {
    "event-service": ("app",),
    "adapter": ("app",),
    "channel": ("app", "namespace"),
    "broker-ingress": ("app", "namespace"),
    "trigger-channel": ("app", "namespace"),
    "broker-filter": ("app", "namespace", "trigger"),
    "subscriber": ("app", "namespace", "host"),
}
_ids = itertools.count(1)


@dataclass(frozen=True)
class Ctx:
    """What a hop knows about a request (the scope faults and counters are keyed by)."""

    app: str | None = None
    namespace: str | None = None
    trigger: str | None = None
    host: str | None = None


@dataclass
class Fault:
    hop: str
    kind: str
    app: str | None = None
    namespace: str | None = None
    trigger: str | None = None
    host: str | None = None
    ratio: float = 1.0
    delay_ms: float = 0.0
    copies: int = 1
    status: int = 503
    id: str = ""
    hits: int = 0  # requests in its scope since it was added
    _acc: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        if self.hop not in HOPS:
            raise ValueError(f"unknown hop {self.hop!r} (one of {', '.join(HOPS)})")
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r} (one of {', '.join(KINDS)})")
        for name in ("app", "namespace", "trigger", "host"):
            if getattr(self, name) is not None and name not in SCOPES[self.hop]:
                raise ValueError(f"a {self.hop} fault cannot be scoped by {name} "
                                 f"(possible: {', '.join(SCOPES[self.hop])})")
        if not 0.0 <= self.ratio <= 1.0:
            raise ValueError("ratio must be within 0..1")
        if self.delay_ms < 0 or self.copies < 1:
            raise ValueError("delay_ms must be >= 0 and copies >= 1")
        if not 500 <= self.status <= 599 and not 400 <= self.status <= 499:
            raise ValueError("status must be a 4xx or 5xx code")
        if not self.id:
            self.id = f"f{next(_ids)}"

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Fault:
        known = {f.name for f in fields(cls) if not f.name.startswith("_")} - {"id", "hits"}
        unknown = set(doc) - known
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        if "hop" not in doc or "kind" not in doc:
            raise ValueError("a fault needs 'hop' and 'kind'")
        try:
            return cls(**doc)
        except TypeError as err:
            raise ValueError(str(err)) from None

    def to_json(self) -> dict[str, Any]:
        doc = {k: v for k, v in asdict(self).items() if not k.startswith("_")}
        params = {"drop": ("ratio",), "delay": ("delay_ms",), "duplicate": ("copies",),
                  "error": ("status",), "stop": ()}[self.kind]
        for name in ("ratio", "delay_ms", "copies", "status"):
            if name not in params:
                del doc[name]
        return {k: v for k, v in doc.items() if v is not None}

    @property
    def scoped(self) -> bool:
        return any(getattr(self, n) is not None for n in ("app", "namespace", "trigger", "host"))

    @property
    def on_edge(self) -> bool:
        """A channel fault on the delivery to one namespace's Subscription."""
        return self.hop == "channel" and self.namespace is not None

    def applies(self, ctx: Ctx) -> bool:
        return all(getattr(self, n) is None or getattr(self, n) == getattr(ctx, n)
                   for n in ("app", "namespace", "trigger", "host"))

    def drops_next(self) -> bool:
        self._acc += self.ratio
        if self._acc >= 1.0 - 1e-9:
            self._acc -= 1.0
            return True
        return False


@dataclass
class Effect:
    """What the faults in force do to one request."""

    stop: bool = False
    status: int | None = None
    drop: bool = False
    delay: float = 0.0  # seconds
    copies: int = 1

    @classmethod
    def of(cls, faults: Iterable[Fault]) -> Effect:
        effect = cls()
        for fault in faults:
            fault.hits += 1
            if fault.kind == "stop":
                effect.stop = True
            elif fault.kind == "error":
                effect.status = effect.status or fault.status
            elif fault.kind == "drop":
                effect.drop = fault.drops_next() or effect.drop
            elif fault.kind == "delay":
                effect.delay += fault.delay_ms / 1000
            elif fault.kind == "duplicate":
                effect.copies += fault.copies
        return effect


COUNTERS = ("received", "forwarded", "dropped", "failed", "rejected", "filtered",
            "dead_lettered")


@dataclass
class Counters:
    """Per hop (and scope):
    - received: requests the hop accepted for handling (not those a `stop` refused);
    - forwarded: successful deliveries downstream (each copy, each destination);
    - dropped: requests dropped by a `drop` fault;
    - failed: deliveries that failed (after the retries, whether dead-lettered or not), and
      synchronous forwards that failed;
    - rejected: requests answered with an error (an `error` fault, a bad request, an unknown
      Trigger);
    - filtered: events the broker filter did not pass to a Trigger's subscriber;
    - dead_lettered: failed deliveries sent to the dead-letter sink.
    """

    received: int = 0
    forwarded: int = 0
    dropped: int = 0
    failed: int = 0
    rejected: int = 0
    filtered: int = 0
    dead_lettered: int = 0

    def __iadd__(self, other: Counters) -> Counters:
        for name in COUNTERS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self

    def to_json(self) -> dict[str, int]:
        return asdict(self)
