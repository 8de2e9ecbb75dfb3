"""Authenticity of heartbeats: HMAC-SHA256 signatures, rotatable keys, freshness, replays.

**What is signed.** `signing_input(hb)` is a versioned, length-prefixed list of the
heartbeat's `id`, `source` (the application name: Kyma's HTTP adapter overwrites `source`
with it, so that is what arrives and what the sender signs), `type`, `time` (the instant,
as `heartbeat.canonical_time` writes it), hop, sequence, run and target namespace (empty
unless a broker probe). Without hop, sequence and run in it a forger could turn one
genuine heartbeat into many (new sequence numbers, other hops); without the namespace,
a broker probe captured in one namespace could be posted to another's receiver path.
The signature travels as `emhsig: <key id>:<base64url MAC, no padding>`.

**Keys.** A `Keyring` has one current key, which signs, and any number of further keys
that are still accepted for verification. `keyring_from_secret_data` reads it from a
Kubernetes Secret's `data` map: every entry is a key (entry name = key id, value = the
base64 of at least 32 random bytes), except `current`, which holds (base64 of) the id of
the signing key; without `current` the greatest key id signs (so date-stamped ids such
as `2020-06-15` rotate by adding a newer one). Rotation without downtime:

1. add the new key to the Secret (every replica accepts it once it has reloaded);
2. point `current` at it (replicas sign with it; the others still accept the old one);
3. remove the old key after the max age (nothing signed with it is still fresh).

Key material is never logged, printed or put into an exception: `Key` and `Keyring` show
their ids only.

**Verification** (`Verifier.verify`) rejects, with a `HeartbeatError` whose reason is the
metric label: `Unsigned`, `UnknownKey`, `BadSignature` (compared in constant time with
`hmac.compare_digest`), `Stale` (its time is older than `max_age`), `FromFuture` (later
than now + `max_skew`). The signature is checked before the time, so a forged heartbeat
is always `BadSignature`, whatever its time.

**Replays.** `ReplayCache` remembers (key, expiry) pairs in insertion order, bounded in
size, for `max_age + max_skew` (after which the time check rejects a replay anyway). The
receiver asks it only after a heartbeat verified, so a forger cannot poison it with the
ids of heartbeats still to come. What a repeated id means is the receiver's business (see
`receiver.py`: Knative's data-plane contract makes every repeat a duplicate delivery).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from eventmesh_health.probing.heartbeat import (
    Heartbeat,
    HeartbeatError,
    RejectReason,
    canonical_time,
)

__all__ = [
    "CURRENT_ENTRY",
    "MIN_KEY_BYTES",
    "Freshness",
    "Key",
    "Keyring",
    "ReplayCache",
    "Verifier",
    "keyring_from_secret_data",
    "signing_input",
]

MIN_KEY_BYTES = 32
CURRENT_ENTRY = "current"
_DOMAIN = b"eventmesh-health heartbeat v1\n"
_KEY_ID = re.compile(r"[-._a-zA-Z0-9]{1,253}")  # a Secret data key
_MAC_B64_LEN = 43  # 32 bytes, base64url without padding


@dataclass(frozen=True, slots=True)
class Key:
    """One HMAC key. Its `repr` shows the id only."""

    id: str
    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not _KEY_ID.fullmatch(self.id) or self.id == CURRENT_ENTRY:
            raise ValueError(f"invalid key id {self.id!r} (a Secret data key, not 'current')")
        if len(self.secret) < MIN_KEY_BYTES:
            raise ValueError(
                f"key {self.id!r} is {len(self.secret)} bytes; at least {MIN_KEY_BYTES} needed"
            )


class Keyring:
    """The current signing key and every key still accepted for verification."""

    def __init__(self, current: Key, accepted: Iterable[Key] = ()) -> None:
        self.current = current
        keys = {current.id: current}
        for key in accepted:
            if key.id in keys and keys[key.id].secret != key.secret:
                raise ValueError(f"two different keys with id {key.id!r}")
            keys[key.id] = key
        self._keys = keys

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(sorted(self._keys))

    def key(self, key_id: str) -> Key | None:
        return self._keys.get(key_id)

    def __repr__(self) -> str:
        return f"Keyring(current={self.current.id!r}, accepted={list(self.key_ids)!r})"

    def sign(self, hb: Heartbeat) -> Heartbeat:
        """`hb` with the signature of the current key."""
        return replace(hb, signature=f"{self.current.id}:{_mac(self.current, hb)}")


def keyring_from_secret_data(
    data: Mapping[str, str], *, current_entry: str = CURRENT_ENTRY
) -> Keyring:
    """The keyring in a Kubernetes Secret's `data` (base64 values; see the module docstring).

    Raises ValueError naming the offending entry, never a value.
    """
    keys: dict[str, Key] = {}
    current_id: str | None = None
    for name, encoded in data.items():
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise ValueError(f"Secret entry {name!r} is not base64") from None
        if name == current_entry:
            try:
                current_id = raw.decode("ascii").strip()
            except UnicodeDecodeError:
                raise ValueError(f"Secret entry {name!r} is not a key id") from None
            continue
        keys[name] = Key(name, raw)
    if not keys:
        raise ValueError("the Secret holds no heartbeat key")
    if current_id is None:
        current_id = max(keys)
    if current_id not in keys:
        # Never echo it: a key pasted into `current` by mistake would end up in the log.
        raise ValueError(f"{current_entry!r} does not name a key id of the Secret (its "
                         "value is not shown: it may be a key)")
    return Keyring(keys[current_id], keys.values())


def signing_input(hb: Heartbeat) -> bytes:
    """The bytes the MAC is computed over (length-prefixed, so no field can bleed into
    the next)."""
    parts = [
        hb.id, hb.application, hb.type, canonical_time(hb.time), hb.hop.value,
        str(hb.sequence), hb.run, hb.namespace or "",
    ]
    out = bytearray(_DOMAIN)
    for part in parts:
        encoded = part.encode("utf-8", "surrogatepass")
        out += b"%d:" % len(encoded)
        out += encoded
        out += b"\n"
    return bytes(out)


def _mac(key: Key, hb: Heartbeat) -> str:
    digest = hmac.new(key.secret, signing_input(hb), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass(frozen=True, slots=True)
class Freshness:
    """How old (`max_age`) or how far ahead (`max_skew`) a heartbeat's time may be.

    `max_age` bounds how late a heartbeat may arrive and still count (5 minutes covers a
    few Knative retries with backoff; later ones are lost), and how long the replay cache
    must remember an id. `max_skew` allows for the clocks of sender and receiver (different
    replicas) to differ.
    """

    max_age: timedelta = timedelta(minutes=5)
    max_skew: timedelta = timedelta(seconds=30)


class Verifier:
    """Checks a heartbeat's signature and time against a keyring that may be swapped."""

    def __init__(
        self, keyring: Keyring | Callable[[], Keyring], freshness: Freshness | None = None
    ) -> None:
        self._keyring = keyring
        self.freshness = freshness or Freshness()

    @property
    def keyring(self) -> Keyring:
        keyring = self._keyring
        return keyring if isinstance(keyring, Keyring) else keyring()

    def set_keyring(self, keyring: Keyring) -> None:
        """Use `keyring` from now on (e.g. after the Secret changed)."""
        self._keyring = keyring

    def check_signature(self, hb: Heartbeat) -> None:
        """Raises `HeartbeatError` unless `hb` is signed by an accepted key."""
        if not hb.signature:
            raise HeartbeatError(RejectReason.UNSIGNED, "the heartbeat is not signed")
        key_id, sep, mac = hb.signature.rpartition(":")
        if not sep or not key_id or len(mac) != _MAC_B64_LEN:
            raise HeartbeatError(RejectReason.BAD_SIGNATURE,
                                 "the signature is not <key id>:<MAC>")
        key = self.keyring.key(key_id)
        if key is None:
            shown = key_id if _KEY_ID.fullmatch(key_id) else "(invalid)"
            raise HeartbeatError(RejectReason.UNKNOWN_KEY,
                                 f"signed with key {shown!r}, which is not accepted")
        if not hmac.compare_digest(_mac(key, hb).encode("ascii"), mac.encode("ascii", "replace")):
            raise HeartbeatError(RejectReason.BAD_SIGNATURE,
                                 "the signature does not match (forged or altered)")

    def check_time(self, hb: Heartbeat, now: datetime) -> None:
        age = now - hb.time
        if age > self.freshness.max_age:
            raise HeartbeatError(
                RejectReason.STALE,
                f"sent {age.total_seconds():.1f}s ago; at most "
                f"{self.freshness.max_age.total_seconds():g}s accepted",
            )
        if -age > self.freshness.max_skew:
            raise HeartbeatError(
                RejectReason.FROM_FUTURE,
                f"its time is {(-age).total_seconds():.1f}s ahead of this receiver's clock",
            )

    def verify(self, hb: Heartbeat, now: datetime) -> None:
        """Signature, then time; raises `HeartbeatError`."""
        self.check_signature(hb)
        self.check_time(hb, now)


class ReplayCache:
    """Keys seen within `ttl`, at most `max_entries` of them (the oldest go first).

    Entries expire in insertion order, which is time order as long as the clock does not
    go back; when it does, an entry lives a little longer, never shorter.
    """

    def __init__(self, ttl: timedelta, max_entries: int = 200_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be positive")
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, datetime] = OrderedDict()
        self.evicted = 0  # dropped for room before they expired

    def __len__(self) -> int:
        return len(self._entries)

    def seen(self, key: Hashable, now: datetime) -> bool:
        """Whether `key` was added within the ttl; adds it if not."""
        return self.first_seen(key, now) is not None

    def first_seen(self, key: Hashable, now: datetime) -> datetime | None:
        """When `key` was added, if within the ttl; else adds it and returns None."""
        entries = self._entries
        while entries:
            oldest, oldest_expiry = next(iter(entries.items()))
            if oldest_expiry > now:
                break
            del entries[oldest]
        previous = entries.get(key)
        if previous is not None and previous > now:
            return previous - self.ttl
        entries[key] = now + self.ttl
        entries.move_to_end(key)
        while len(entries) > self.max_entries:
            entries.popitem(last=False)
            self.evicted += 1
        return None
