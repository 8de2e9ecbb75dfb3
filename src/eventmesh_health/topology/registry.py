"""The known profiles, by name, and `auto`: which one a cluster or a dump runs.

A new profile (e.g. `knative-v1`) is a module beside `kyma1.py` and one entry in
`PROFILES`. Detection looks for each profile's `markers` among the kinds present (kind
keys like `Application.applicationconnector.kyma-project.io`, or resources like
`applications.applicationconnector.kyma-project.io`): the profile with the most markers
present wins; none present, or a tie, is an error naming what was looked for.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

from eventmesh_health.topology import Profile, kyma1

__all__ = ["AUTO", "DEFAULT", "PROFILES", "ProfileError", "detect", "lookup", "marker_kinds"]

AUTO = "auto"

PROFILES: Mapping[str, Profile] = MappingProxyType({
    kyma1.PROFILE.name: kyma1.PROFILE,
})

# What the library's functions use when no profile is passed (`--profile` defaults to auto).
DEFAULT: Profile = kyma1.PROFILE


class ProfileError(Exception):
    """An unknown profile name, or no (or no single) profile detected."""


def lookup(name: str) -> Profile:
    """The profile called `name` (not `auto`)."""
    try:
        return PROFILES[name]
    except KeyError:
        known = ", ".join([AUTO, *PROFILES])
        raise ProfileError(f"unknown profile {name[:60]!r} (known: {known})") from None


def marker_kinds(profiles: Iterable[Profile] | None = None) -> list[tuple[Profile, str]]:
    """(profile, marker resource) for every marker of every profile."""
    chosen = PROFILES.values() if profiles is None else profiles
    return [(p, kind.resource) for p in chosen for kind in p.markers]


def detect(present: Iterable[str], where: str,
           profiles: Iterable[Profile] | None = None) -> Profile:
    """The profile whose marker kinds are present (kind keys or resources in `present`);
    `where` says what was looked at ("the dump", "the cluster's served resources")."""
    seen = set(present)
    candidates = list(PROFILES.values() if profiles is None else profiles)
    scores = [(sum(1 for k in p.markers if k.key in seen or k.resource in seen), p)
              for p in candidates]
    best = max((score for score, _ in scores), default=0)
    if best == 0:
        looked = "; ".join(
            f"{p.name}: {', '.join(k.resource for k in p.markers)}" for p in candidates)
        raise ProfileError(
            f"no known profile detected in {where}: none of the kinds that identify a profile "
            f"is present ({looked}); choose one with --profile ({', '.join(PROFILES)})")
    winners = [p for score, p in scores if score == best]
    if len(winners) > 1:
        names = ", ".join(p.name for p in winners)
        raise ProfileError(f"{where} matches several profiles equally ({names}): choose one "
                           "with --profile")
    return winners[0]
