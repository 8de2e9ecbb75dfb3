"""A snapshot: the raw objects the analysis reads, wherever they came from.

Dumps on disk and live clusters both produce one; the analysis never knows which.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

# The project's own marker object in a dump: when it was taken and which kinds it covers.
SNAPSHOT_INFO_API_VERSION = "eventmesh-health.kyma-project.io/v1alpha1"
SNAPSHOT_INFO_KIND = "SnapshotInfo"


@dataclass(frozen=True, slots=True)
class InputProblem:
    """Something in the input that could not be used as an object (it is reported, not lost)."""

    where: str
    message: str


@dataclass(frozen=True)
class Snapshot:
    objects: Sequence[dict[str, Any]]
    taken_at: datetime
    # Kind keys ("Deployment.apps") that were read completely. None: infer from what is there,
    # i.e. a kind with no object at all counts as not collected.
    collected: frozenset[str] | None = None
    # Kind keys that could not be read, with the reason (e.g. the CRD is not installed).
    unavailable: Mapping[str, str] = field(default_factory=dict)
    # Kinds outside the profile that were dropped while loading, with their counts.
    skipped: Mapping[str, int] = field(default_factory=dict)
    problems: Sequence[InputProblem] = ()
