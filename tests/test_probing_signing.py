"""Heartbeat signatures: round trips through every wire format, key rotation, keys from a
Secret, and each kind of rejection; the replay cache."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from eventmesh_health.probing.heartbeat import (
    Heartbeat,
    HeartbeatError,
    Hop,
    RejectReason,
    heartbeat_from_event,
    new_heartbeat,
    parse_http,
    to_binary,
    to_legacy,
    to_structured,
)
from eventmesh_health.probing.signing import (
    Freshness,
    Key,
    Keyring,
    ReplayCache,
    Verifier,
    keyring_from_secret_data,
    signing_input,
)

T0 = datetime(2020, 6, 15, 10, 0, tzinfo=UTC)
OLD = Key("2020-05-01", b"o" * 32)
NEW = Key("2020-06-01", b"n" * 32)


def heartbeat(hop: Hop = Hop.INGRESS, seq: int = 1, namespace: str | None = None) -> Heartbeat:
    return new_heartbeat("commerce-mock", hop, seq, run="checker-0-abc", at=T0,
                         namespace=namespace)


def reason(verifier: Verifier, hb: Heartbeat, now: datetime = T0) -> RejectReason | None:
    try:
        verifier.verify(hb, now)
    except HeartbeatError as exc:
        return exc.reason
    return None


@pytest.mark.parametrize("encode", [to_binary, to_structured])
@pytest.mark.parametrize("hop", list(Hop))
def test_round_trip_cloudevents(encode, hop):
    ring = Keyring(NEW)
    hb = ring.sign(heartbeat(hop, 7, "prod" if hop is Hop.BROKER else None))
    headers, body = encode(hb)
    back = heartbeat_from_event(parse_http(headers.items(), body))
    assert back == hb
    assert reason(Verifier(ring), back) is None


def test_round_trip_legacy_event_service():
    """The legacy body has no extensions: the event-service makes event-id, -time, -type
    the CloudEvent's id, time, type, the adapter sets source; emh* ride in data."""
    ring = Keyring(NEW)
    hb = ring.sign(heartbeat())
    _, body = to_legacy(hb)
    legacy = json.loads(body)
    assert legacy["event-type-version"] == "v1"
    headers = {  # what the HTTP adapter delivers, the time re-rendered by a Go hop
        "ce-specversion": "1.0", "ce-id": legacy["event-id"], "ce-source": "commerce-mock",
        "ce-type": legacy["event-type"], "ce-eventtypeversion": legacy["event-type-version"],
        "ce-time": "2020-06-15T10:00:00Z", "content-type": "application/json",
    }
    back = heartbeat_from_event(parse_http(headers.items(), json.dumps(legacy["data"]).encode()))
    assert back == hb
    assert reason(Verifier(ring), back) is None


def test_key_rotation_old_key_still_verifies_new_key_signs():
    before = Keyring(OLD)
    during = Keyring(NEW, [OLD])  # step 2: new key current, old still accepted
    after = Keyring(NEW)  # step 3: old key removed
    old_signed = before.sign(heartbeat())
    new_signed = during.sign(heartbeat())
    assert new_signed.signature is not None and new_signed.signature.startswith(NEW.id + ":")
    assert reason(Verifier(during), old_signed) is None
    assert reason(Verifier(during), new_signed) is None
    assert reason(Verifier(after), old_signed) is RejectReason.UNKNOWN_KEY
    # step 1: a replica that only added the new key still signs with the old one
    assert reason(Verifier(Keyring(OLD, [NEW])), new_signed) is None


def test_keyring_can_be_swapped_and_read_through_a_callable():
    verifier = Verifier(Keyring(OLD))
    hb = Keyring(NEW).sign(heartbeat())
    assert reason(verifier, hb) is RejectReason.UNKNOWN_KEY
    verifier.set_keyring(Keyring(NEW))
    assert reason(verifier, hb) is None
    assert reason(Verifier(lambda: Keyring(NEW)), hb) is None


def test_keyring_from_secret_data():
    b64 = lambda raw: base64.b64encode(raw).decode()  # noqa: E731
    ring = keyring_from_secret_data({OLD.id: b64(OLD.secret), NEW.id: b64(NEW.secret)})
    assert ring.current.id == NEW.id  # the greatest id signs without `current`
    assert ring.key_ids == (OLD.id, NEW.id)
    pinned = keyring_from_secret_data({
        OLD.id: b64(OLD.secret), NEW.id: b64(NEW.secret), "current": b64(OLD.id.encode())})
    assert pinned.current.id == OLD.id
    assert pinned.key(NEW.id) == NEW


@pytest.mark.parametrize(("data", "message"), [
    ({}, "no heartbeat key"),
    ({"k1": "not base64!"}, "'k1' is not base64"),
    ({"k1": base64.b64encode(b"short").decode()}, "at least 32"),
    ({"k1": base64.b64encode(b"s" * 32).decode(),
      "current": base64.b64encode(b"k2").decode()}, "'current' does not name a key id"),
    # a key pasted into `current` instead of its id: the key itself must never show
    ({"k1": base64.b64encode(b"s" * 32).decode(),
      "current": base64.b64encode(b"pasted-key-material-0123456789abcdef").decode()},
     "'current' does not name a key id"),
])
def test_keyring_from_bad_secret_data_names_the_entry_never_the_value(data, message):
    with pytest.raises(ValueError, match=message) as info:
        keyring_from_secret_data(data)
    for value in data.values():
        assert value not in str(info.value)
        decoded = base64.b64decode(value, validate=False) if value != "not base64!" else b""
        assert not decoded or decoded.decode("latin-1") not in str(info.value)


def test_keys_never_show_their_secret():
    secret = b"super-secret-key-material-123456"
    key = Key("k1", secret)
    ring = Keyring(key)
    for text in (repr(key), str(key), repr(ring), str(ring)):
        assert "super-secret" not in text
        assert "k1" in text


def test_unsigned_forged_unknown_key_stale_future():
    ring = Keyring(NEW)
    verifier = Verifier(ring, Freshness(max_age=timedelta(minutes=5),
                                        max_skew=timedelta(seconds=30)))
    hb = ring.sign(heartbeat())
    assert reason(verifier, hb.unsigned()) is RejectReason.UNSIGNED
    forged = Keyring(Key(NEW.id, b"f" * 32)).sign(heartbeat())  # right id, wrong key
    assert reason(verifier, forged) is RejectReason.BAD_SIGNATURE
    assert reason(verifier, replace(hb, signature="nocolon")) is RejectReason.BAD_SIGNATURE
    assert reason(verifier, replace(hb, signature=f"{NEW.id}:x")) is RejectReason.BAD_SIGNATURE
    assert reason(verifier, Keyring(Key("other", b"n" * 32)).sign(heartbeat())) is (
        RejectReason.UNKNOWN_KEY)
    assert reason(verifier, hb, T0 + timedelta(minutes=5)) is None
    assert reason(verifier, hb, T0 + timedelta(minutes=5, seconds=1)) is RejectReason.STALE
    assert reason(verifier, hb, T0 - timedelta(seconds=30)) is None
    assert reason(verifier, hb, T0 - timedelta(seconds=31)) is RejectReason.FROM_FUTURE
    # a forged heartbeat is BadSignature whatever its time
    assert reason(verifier, forged, T0 + timedelta(days=1)) is RejectReason.BAD_SIGNATURE


@pytest.mark.parametrize("change", [
    {"id": "another-id"},
    {"application": "other-app"},
    {"type": "other.type"},
    {"time": T0 + timedelta(microseconds=1)},
    {"hop": Hop.CHANNEL},
    {"sequence": 2},
    {"run": "checker-1-abc"},
])
def test_every_signed_field_is_covered(change):
    ring = Keyring(NEW)
    hb = ring.sign(heartbeat())
    assert reason(Verifier(ring), replace(hb, **change)) is RejectReason.BAD_SIGNATURE


def test_broker_probe_is_bound_to_its_namespace():
    ring = Keyring(NEW)
    hb = ring.sign(heartbeat(Hop.BROKER, 1, "prod"))
    assert reason(Verifier(ring), replace(hb, namespace="stage")) is RejectReason.BAD_SIGNATURE


def test_signing_input_is_unambiguous():
    a = replace(heartbeat(), id="a\n1:b", application="c")
    b = replace(heartbeat(), id="a", application="b\n1:c")
    assert signing_input(a) != signing_input(b)


def test_replay_cache_expires_and_is_bounded():
    cache = ReplayCache(timedelta(seconds=10), max_entries=3)
    assert not cache.seen("a", T0)
    assert cache.seen("a", T0 + timedelta(seconds=9))
    assert not cache.seen("a", T0 + timedelta(seconds=10))  # expired: new again
    for key in "bcd":
        assert not cache.seen(key, T0 + timedelta(seconds=11))
    assert len(cache) == 3 and cache.evicted == 1  # "a" made room
    assert not cache.seen("a", T0 + timedelta(seconds=12))
    assert len(cache) == 3
