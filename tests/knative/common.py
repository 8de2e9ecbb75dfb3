"""What the two real meshes (`mesh.KnativeMesh`, v1.21; `v012.KnativeV012Mesh`, v0.12) share:
reading an object's conditions, their config files, log tails, and waiting on an object's state.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from lightkube import ApiError

POLL = 0.05
LOG_TAIL_LINES = 30

Obj = dict[str, Any]


def conditions(obj: Obj) -> dict[str, tuple[str, str]]:
    """``{type: (status, reason)}`` of an object's ``status.conditions``."""
    return {c["type"]: (c.get("status", ""), c.get("reason", ""))
            for c in (obj.get("status") or {}).get("conditions") or []}


def describe(obj: Obj) -> str:
    """One line: generation/observedGeneration and every condition, for failure messages."""
    meta, status = obj.get("metadata") or {}, obj.get("status") or {}
    conds = ", ".join(f"{t}={s}" + (f"({r})" if r else "")
                      for t, (s, r) in sorted(conditions(obj).items()))
    return (f"{obj.get('kind')} {meta.get('namespace')}/{meta.get('name')} "
            f"gen={meta.get('generation')} observed={status.get('observedGeneration')}: {conds}")


def config_docs(config_dir: Path, patterns: list[str], kind: str, label: str,
                hint: str) -> list[Obj]:
    """Every document of ``kind`` in the release's config files matching ``patterns``;
    RuntimeError naming the pattern (and ``hint``) when one matches no file."""
    docs = []
    for pattern in patterns:
        paths = sorted(config_dir.glob(pattern))
        if not paths:
            raise RuntimeError(f"{label}: no {config_dir}/{pattern} ({hint})")
        for path in paths:
            docs += [d for d in yaml.safe_load_all(path.read_text())
                     if isinstance(d, dict) and d.get("kind") == kind]
    return docs


def tail(path: Path | None, lines: int = LOG_TAIL_LINES) -> str:
    if path is None:
        return ""
    try:
        with path.open("r", errors="replace") as f:
            return "".join(deque(f, maxlen=lines))
    except OSError as exc:
        return f"(cannot read {path}: {exc})"


def from_dict(res: Any, doc: Obj) -> Any:
    """``res.from_dict(doc)``, typed Any (lightkube's from_dict is typed as its mixin)."""
    return res.from_dict(doc)


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class StatusWaiter:
    """Waiting on an object's state, for a mesh class that has ``get`` and ``log_tail``.
    ``LABEL`` starts every failure message; ``CONTROLLER_LOG`` is the log tailed in it."""

    LABEL = "knative"
    CONTROLLER_LOG = "controllers"

    def get(self, kind: str, ns: str, name: str) -> Obj:
        raise NotImplementedError

    def log_tail(self, name: str, lines: int = LOG_TAIL_LINES) -> str:
        raise NotImplementedError

    def is_ready(self, obj: Obj) -> bool:
        raise NotImplementedError

    def wait_until(self, kind: str, ns: str, name: str, predicate: Callable[[Obj], bool],
                   timeout: float = 30.0, what: str = "the expected state") -> Obj:
        """Poll the object until ``predicate(obj)``; AssertionError with its conditions and the
        controllers' log tail after ``timeout``."""
        deadline = time.monotonic() + timeout
        last = "never read"
        while True:
            try:
                obj = self.get(kind, ns, name)
                if predicate(obj):
                    return obj
                last = describe(obj)
            except ApiError as exc:
                last = f"{kind} {ns}/{name}: {exc.status.code} {exc.status.message}"
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.LABEL}: {what} not reached in {timeout:.0f}s; last: {last}\n"
                    f"{self.CONTROLLER_LOG} log tail:\n"
                    f"{self.log_tail(self.CONTROLLER_LOG, 15)}")
            time.sleep(POLL)

    def wait_ready(self, kind: str, ns: str, name: str, timeout: float = 30.0) -> Obj:
        """Wait until Ready=True for the generation the controller last saw."""
        return self.wait_until(kind, ns, name, self.is_ready, timeout,
                               f"{kind} {ns}/{name} Ready")

    def wait_condition(self, kind: str, ns: str, name: str, type_: str, status: str,
                       reason: str | None = None, timeout: float = 30.0) -> Obj:
        """Wait until condition ``type_`` has ``status`` (and ``reason``, if given)."""
        def ok(obj: Obj) -> bool:
            s, r = conditions(obj).get(type_, ("", ""))
            return s == status and (reason is None or r == reason)

        return self.wait_until(kind, ns, name, ok, timeout,
                               f"{kind} {ns}/{name} {type_}={status}"
                               + (f" ({reason})" if reason else ""))
