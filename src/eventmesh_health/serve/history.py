"""The transitions of each application and flow: when its health or root cause changed.

`serve` records one `Transition` whenever an application's or a flow's health, or its first
root cause, differs from the previous report's (first seen counts, with `previous` None).
They are kept in memory for a bounded window (at most `PER_KEY` per application or flow,
none older than `WINDOW`) and served by the REST API (`.../history`) and the web page. The
leader also persists the last `PERSISTED` of an application's transitions in its
EventMeshHealth object's `status.history`; a replica that becomes leader reads them back
(`seed`) when it lists those objects, so the history survives a change of leader.

Keys: an application by its name, a flow as `namespace/Kind/name` (an application's name
has no `/`, so the two never collide).
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from eventmesh_health.model import Health

__all__ = ["PERSISTED", "PER_KEY", "WINDOW", "History", "Transition", "flow_key"]

PER_KEY = 50  # transitions kept in memory per application or flow
WINDOW = timedelta(days=7)  # none older than this
PERSISTED = 10  # written into the EventMeshHealth object's status.history


def flow_key(namespace: str, kind: str, name: str) -> str:
    return f"{namespace}/{kind}/{name}"


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Transition:
    at: datetime
    health: Health
    previous: Health | None  # None: first seen (by this replica)
    root_cause: str  # "Kind namespace/name: Reason" of the first root cause, or ""

    def to_json(self) -> dict[str, Any]:
        return {
            "time": _rfc3339(self.at),
            "health": self.health.value,
            "previous": self.previous.value if self.previous is not None else None,
            "rootCause": self.root_cause,
        }

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> Transition | None:
        """One persisted transition, or None when it cannot be read (someone else's edit)."""
        try:
            at = datetime.fromisoformat(str(data["time"]).replace("Z", "+00:00"))
            if at.tzinfo is None:
                at = at.replace(tzinfo=UTC)
            previous = data.get("previous")
            return Transition(at, Health(data["health"]),
                              Health(previous) if previous else None,
                              str(data.get("rootCause") or "")[:500])
        except (KeyError, ValueError, TypeError):
            return None


class History:
    def __init__(self, per_key: int = PER_KEY, window: timedelta = WINDOW) -> None:
        self.per_key = per_key
        self.window = window
        self._by_key: dict[str, deque[Transition]] = {}
        # Per key, a number that changes whenever its transitions do (never repeats): how
        # the writer sees that `persisted(key)` may differ without building it.
        self._revisions: dict[str, int] = {}
        self._counter = itertools.count(1)

    def record(self, key: str, at: datetime, health: Health, previous: Health | None,
               root_cause: str) -> None:
        entries = self._by_key.get(key)
        if entries is None:
            entries = self._by_key[key] = deque(maxlen=self.per_key)
        entries.append(Transition(at, health, previous, root_cause))
        self._trim(entries, at)
        self._revisions[key] = next(self._counter)

    def _trim(self, entries: deque[Transition], now: datetime) -> None:
        while len(entries) > 1 and now - entries[0].at > self.window:
            entries.popleft()

    def of(self, key: str) -> list[Transition]:
        """Oldest first."""
        return list(self._by_key.get(key, ()))

    def latest(self, key: str) -> Transition | None:
        entries = self._by_key.get(key)
        return entries[-1] if entries else None

    def persisted(self, key: str) -> list[dict[str, Any]]:
        """The last `PERSISTED` transitions as status.history has them (oldest first)."""
        entries = self._by_key.get(key, ())
        return [t.to_json() for t in list(entries)[-PERSISTED:]]

    def revision(self, key: str) -> int:
        """Changes whenever the transitions of `key` do (0: none recorded)."""
        return self._revisions.get(key, 0)

    def keys(self) -> Iterable[str]:
        return self._by_key.keys()

    def __len__(self) -> int:
        return len(self._by_key)

    def forget(self, key: str) -> None:
        self._by_key.pop(key, None)
        self._revisions.pop(key, None)

    def seed(self, key: str, persisted: Iterable[Mapping[str, Any]]) -> Transition | None:
        """Merge transitions persisted by an earlier leader into ours. Our own "first seen"
        entry that only repeats the persisted latest health is dropped (it is this replica's
        start, not a change). Returns the transition the current health dates from, when it
        is older than what we had (the caller's lastTransitionTime), else None."""
        old = [t for t in (Transition.from_json(d) for d in persisted if isinstance(d, Mapping))
               if t is not None]
        if not old:
            return None
        ours = self.of(key)
        before = ours[-1].at if ours else None
        merged = sorted({(t.at, t.health, t.previous, t.root_cause): t
                         for t in [*old, *ours]}.values(), key=lambda t: t.at)
        kept: list[Transition] = []
        for entry in merged:
            if kept and entry.previous is None and entry.health is kept[-1].health \
                    and entry.root_cause == kept[-1].root_cause:
                continue  # a replica's first sight of an unchanged health
            kept.append(entry)
        entries: deque[Transition] = deque(kept, maxlen=self.per_key)
        self._by_key[key] = entries
        self._trim(entries, entries[-1].at)
        self._revisions[key] = next(self._counter)
        latest = entries[-1]
        return latest if before is not None and latest.at < before else None
