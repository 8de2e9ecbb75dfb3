"""The known profiles, by name, and `auto`: which ones a cluster or a dump runs.

A new profile is a module beside `kyma1.py` and one entry in `PROFILES`. Detection looks
for each profile's `markers` among the kinds present (kind keys like
`Application.applicationconnector.kyma-project.io`, or resources like
`applications.applicationconnector.kyma-project.io`; a `versioned` marker only at its own
version: `brokers.eventing.knative.dev/v1`). Every profile with a marker present is
chosen; several are `combine`d into one profile, so one report covers them all (Kyma 1.x
Applications beside Knative v1 flows). None present is an error naming what was looked for.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import Any

from eventmesh_health.topology import Component, DataPlane, Kind, Profile, knative1, kyma1

__all__ = ["AUTO", "CHOICES", "DEFAULT", "PROFILES", "ProfileError", "combine", "detect", "lookup",
           "marker_kinds"]

AUTO = "auto"

PROFILES: Mapping[str, Profile] = MappingProxyType({
    kyma1.PROFILE.name: kyma1.PROFILE,
    knative1.PROFILE.name: knative1.PROFILE,
})
# Joins the names of combined profiles (`kyma-1+knative-v1`); `lookup` accepts such a name.
SEPARATOR = "+"
# What `--profile` accepts: auto, each profile, and each pair of them combined.
CHOICES: tuple[str, ...] = (
    AUTO, *PROFILES,
    *(SEPARATOR.join((a, b)) for i, a in enumerate(PROFILES) for b in list(PROFILES)[i + 1:]),
)

# What the library's functions use when no profile is passed (`--profile` defaults to auto).
DEFAULT: Profile = kyma1.PROFILE


class ProfileError(Exception):
    """An unknown profile name, or no (or no single) profile detected."""


def lookup(name: str) -> Profile:
    """The profile called `name` (not `auto`); `a+b` is the combination of a and b."""
    try:
        parts = [PROFILES[part] for part in name.split(SEPARATOR)]
    except KeyError:
        known = ", ".join([AUTO, *PROFILES])
        raise ProfileError(f"unknown profile {name[:60]!r} (known: {known})") from None
    return parts[0] if len(parts) == 1 else combine(parts)


def combine(profiles: Iterable[Profile]) -> Profile:
    """One profile judging what each of `profiles` judges: their applications, flows and
    system components in one report. Where two read the same kind (Knative's Broker), the
    version a marker pinned wins (`Kind.versioned`): that is the version the cluster serves."""
    chosen = list(profiles)
    if len(chosen) == 1:
        return chosen[0]
    kinds: dict[str, Kind] = {}
    for profile in chosen:
        for kind in profile.kinds:
            if kind.key not in kinds or (kind.versioned and not kinds[kind.key].versioned):
                kinds[kind.key] = kind
    ids = [link.id for profile in chosen for link in profile.all_links]
    clashes = sorted({i for i in ids if ids.count(i) > 1})
    if clashes:
        raise ProfileError(f"profiles {', '.join(p.name for p in chosen)} cannot be combined: "
                           f"both define links {', '.join(clashes)}")
    components: dict[tuple[str, str], Component] = {}
    for profile in chosen:
        for component in profile.components:
            components.setdefault((component.namespace, component.deployment), component)

    def union(items: Iterable[Any]) -> tuple[Any, ...]:
        return tuple(dict.fromkeys(items))

    return Profile(
        name=SEPARATOR.join(p.name for p in chosen),
        application=next((p.application for p in chosen if p.application is not None), None),
        kinds=tuple(kinds.values()),
        links=tuple(link for p in chosen for link in p.links),
        components=tuple(components.values()),
        namespace_sources=tuple(s for p in chosen for s in p.namespace_sources),
        system_namespaces=union(ns for p in chosen for ns in p.system_namespaces),
        events_entry_type=chosen[0].events_entry_type,
        webhook_kinds=union(k for p in chosen for k in p.webhook_kinds),
        optional_kinds=union(k for p in chosen for k in p.optional_kinds),
        data_plane=_combine_planes([p.data_plane for p in chosen if p.data_plane is not None]),
        markers=union(k for p in chosen for k in p.markers),
        description="; ".join(p.description for p in chosen),
        flows=tuple(f for p in chosen for f in p.flows),
    )


def _combine_planes(planes: list[DataPlane]) -> DataPlane | None:
    """The hops of the first plane with any (a mesh of Applications), and every plane's
    probed flows."""
    if len(planes) <= 1:
        return planes[0] if planes else None
    first = next((p for p in planes if p.hops), planes[0])
    return replace(first, flows=tuple(f for p in planes for f in p.flows))


def _present(marker: Kind, seen: set[str]) -> bool:
    if marker.versioned:
        return marker.versioned_key in seen or marker.versioned_resource in seen
    return marker.key in seen or marker.resource in seen


def marker_kinds(profiles: Iterable[Profile] | None = None) -> list[tuple[Profile, str]]:
    """(profile, marker resource) for every marker of every profile."""
    chosen = PROFILES.values() if profiles is None else profiles
    return [(p, kind.resource) for p in chosen for kind in p.markers]


def detect(present: Iterable[str], where: str,
           profiles: Iterable[Profile] | None = None) -> Profile:
    """The profiles whose marker kinds are present (kind keys or resources in `present`,
    with `/version` for versioned markers), combined; `where` says what was looked at
    ("the dump", "the cluster's served resources")."""
    seen = set(present)
    candidates = list(PROFILES.values() if profiles is None else profiles)
    found = [p for p in candidates if any(_present(k, seen) for k in p.markers)]
    if not found:
        looked = "; ".join(
            f"{p.name}: {', '.join(_shown(k) for k in p.markers)}" for p in candidates)
        raise ProfileError(
            f"no known profile detected in {where}: none of the kinds that identify a profile "
            f"is present ({looked}); choose one with --profile ({', '.join(PROFILES)})")
    return combine(found)


def _shown(marker: Kind) -> str:
    return marker.versioned_resource if marker.versioned else marker.resource
