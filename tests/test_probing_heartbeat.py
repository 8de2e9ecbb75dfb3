"""Reading CloudEvents over HTTP and heartbeats out of them: what is accepted, what is
rejected and why; hypothesis: no input raises anything but `HeartbeatError`."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventmesh_health.probing.heartbeat import (
    HeartbeatError,
    Hop,
    RejectReason,
    SequenceCounter,
    canonical_time,
    heartbeat_from_event,
    new_heartbeat,
    new_run_id,
    parse_http,
    parse_time,
    to_binary,
    to_structured,
)
from eventmesh_health.probing.signing import Key, Keyring

T0 = datetime(2020, 6, 15, 10, 0, tzinfo=UTC)
RING = Keyring(Key("k1", b"k" * 32))
HB = RING.sign(new_heartbeat("commerce-mock", Hop.INGRESS, 3, run="checker-0-abc", at=T0))
BINARY_HEADERS, BINARY_BODY = to_binary(HB)
_, STRUCTURED_BODY = to_structured(HB)
STRUCTURED = json.loads(STRUCTURED_BODY)


def reject_reason(headers: dict[str, str], body: bytes) -> RejectReason | None:
    try:
        heartbeat_from_event(parse_http(headers.items(), body))
    except HeartbeatError as exc:
        return exc.reason
    return None


def structured(**change: object) -> bytes:
    event = {k: v for k, v in STRUCTURED.items() if k not in change}
    event.update({k: v for k, v in change.items() if v is not None})
    return json.dumps(event).encode()


CE_JSON = {"content-type": "application/cloudevents+json"}


@pytest.mark.parametrize(("headers", "body", "expected"), [
    ({}, b"", RejectReason.MALFORMED),
    ({"content-type": "application/json"}, STRUCTURED_BODY, RejectReason.MALFORMED),
    ({"content-type": "text/plain"}, STRUCTURED_BODY, RejectReason.MALFORMED),
    ({"content-type": "application/cloudevents-batch+json"}, b"[]",
     RejectReason.UNSUPPORTED_MEDIA_TYPE),
    ({"content-type": "application/cloudevents+xml"}, b"<e/>",
     RejectReason.UNSUPPORTED_MEDIA_TYPE),
    (CE_JSON, b"{", RejectReason.MALFORMED),
    (CE_JSON, b"\xff\xfe", RejectReason.MALFORMED),
    (CE_JSON, b"[1]", RejectReason.MALFORMED),
    (CE_JSON, structured(specversion="0.3"), RejectReason.MALFORMED),
    (CE_JSON, structured(specversion=["1.0"]), RejectReason.MALFORMED),
    (CE_JSON, structured(id=""), RejectReason.MALFORMED),
    (CE_JSON, structured(source={"a": 1}), RejectReason.MALFORMED),
    (CE_JSON, structured(data=None, data_base64="!!"), RejectReason.MALFORMED),
    (CE_JSON, structured(time="yesterday"), RejectReason.MALFORMED),
    (CE_JSON, structured(time="2020-13-01T00:00:00Z"), RejectReason.MALFORMED),
    (CE_JSON, structured(**{"Bad-Name": "x"}), RejectReason.MALFORMED),
    (CE_JSON, structured(type="com.example.other"), RejectReason.NOT_A_HEARTBEAT),
    (CE_JSON, structured(eventtypeversion="v2"), RejectReason.NOT_A_HEARTBEAT),
    (CE_JSON, structured(emhseq="0"), RejectReason.NOT_A_HEARTBEAT),
    (CE_JSON, structured(emhseq="99999999999999999999"), RejectReason.NOT_A_HEARTBEAT),
    (CE_JSON, structured(emhhop="elsewhere"), RejectReason.NOT_A_HEARTBEAT),
    (CE_JSON, structured(emhhop="broker"), RejectReason.NOT_A_HEARTBEAT),  # no emhns
    (CE_JSON, structured(emhns="prod"), RejectReason.NOT_A_HEARTBEAT),  # emhns on ingress
    (CE_JSON, structured(emhrun="-bad run-"), RejectReason.NOT_A_HEARTBEAT),
    (CE_JSON, structured(emhsig=""), RejectReason.UNSIGNED),
    ({**BINARY_HEADERS, "ce-specversion": "0.3"}, BINARY_BODY, RejectReason.MALFORMED),
    ({k: v for k, v in BINARY_HEADERS.items() if k != "ce-source"}, BINARY_BODY,
     RejectReason.MALFORMED),
    ({k: v for k, v in BINARY_HEADERS.items() if k != "ce-time"}, BINARY_BODY,
     RejectReason.NOT_A_HEARTBEAT),
    ({k: v for k, v in BINARY_HEADERS.items() if k != "ce-emhsig"}, BINARY_BODY,
     RejectReason.UNSIGNED),
    ({**BINARY_HEADERS, "ce-emhseq": "%ff"}, BINARY_BODY, RejectReason.MALFORMED),
])
def test_rejections(headers, body, expected):
    assert reject_reason(headers, body) is expected


def test_repeated_ce_header_is_malformed():
    headers = [*BINARY_HEADERS.items(), ("Ce-Id", "again")]
    with pytest.raises(HeartbeatError) as info:
        parse_http(headers, BINARY_BODY)
    assert info.value.reason is RejectReason.MALFORMED


def test_as_knative_and_the_sdk_send_them():
    """Go's SDK capitalises header names and drops trailing zeros of the time; structured
    mode may carry integer extensions and a charset; data may come as data_base64."""
    headers = {("Ce-" + k[3:].capitalize() if k.startswith("ce-") else k): v
               for k, v in BINARY_HEADERS.items()}
    headers["Ce-Time"] = "2020-06-15T10:00:00Z"
    headers["Ce-Traceparent"] = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert heartbeat_from_event(parse_http(headers.items(), BINARY_BODY)) == HB
    event = {**STRUCTURED, "emhseq": 3, "time": "2020-06-15T12:00:00.000+02:00"}
    event.pop("data")
    event["data_base64"] = "eyJ4IjogMX0="  # {"x": 1}
    parsed = parse_http({"content-type": "application/cloudevents+json; charset=utf-8"}.items(),
                        json.dumps(event).encode())
    assert parsed.data == {"x": 1}
    assert heartbeat_from_event(parsed) == HB


def test_fields_from_data_only_when_no_extension_is_there():
    attrs = {k: v for k, v in BINARY_HEADERS.items() if not k.startswith("ce-emh")}
    assert heartbeat_from_event(parse_http(attrs.items(), BINARY_BODY)) == HB
    data = json.loads(BINARY_BODY)
    data["emhseq"] = 3  # an integer in data is fine
    assert heartbeat_from_event(parse_http(attrs.items(), json.dumps(data).encode())) == HB
    assert reject_reason(attrs, b"not json") is RejectReason.NOT_A_HEARTBEAT


@pytest.mark.parametrize(("text", "expected"), [
    ("2020-06-15T10:00:00Z", T0),
    ("2020-06-15t10:00:00z", T0),
    ("2020-06-15T12:30:00+02:30", T0),
    ("2020-06-15T09:00:00.5-01:00", T0 + timedelta(milliseconds=500)),
    ("2020-06-15T10:00:00.123456789Z", T0 + timedelta(microseconds=123456)),
    ("2020-06-15T10:00:60Z", T0 + timedelta(seconds=59)),
])
def test_parse_time(text, expected):
    assert parse_time(text) == expected


@pytest.mark.parametrize("text", [
    "", "2020-06-15", "2020-06-15T10:00:00", "2020-06-15 10:00:00Z", "2020-02-30T00:00:00Z",
    "2020-06-15T10:00:00+24:00", "0000-01-01T00:00:00+01:00", "2020-06-15T10:00:00.Z",
])
def test_parse_time_rejects(text):
    with pytest.raises(ValueError):
        parse_time(text)


def test_canonical_time_is_stable():
    at = datetime(2020, 6, 15, 12, 0, 0, 120000, tzinfo=timezone(timedelta(hours=2)))
    assert canonical_time(at) == "2020-06-15T10:00:00.120000Z"
    assert parse_time(canonical_time(at)) == at


def test_builders_and_helpers():
    with pytest.raises(ValueError):
        new_heartbeat("a", Hop.BROKER, 1, run="r", at=T0)  # a broker probe names its namespace
    with pytest.raises(ValueError):
        new_heartbeat("a", Hop.INGRESS, 0, run="r", at=T0)
    with pytest.raises(ValueError):
        new_heartbeat("a", Hop.INGRESS, 1, run="r", at=T0.replace(tzinfo=None))
    assert new_run_id("checker-7f9c").startswith("checker-7f9c-")
    assert new_run_id("../weird name").startswith("weird-name-")
    counter = SequenceCounter()
    assert [counter.next("a", Hop.INGRESS) for _ in range(3)] == [1, 2, 3]
    assert counter.next("a", Hop.BROKER, "prod") == 1
    assert counter.next("a", Hop.BROKER, "stage") == 1
    assert counter.next("a", Hop.CHANNEL) == 1


HEADER_NAMES = st.sampled_from([
    "ce-specversion", "ce-id", "ce-source", "ce-type", "ce-time", "ce-eventtypeversion",
    "ce-emhrun", "ce-emhseq", "ce-emhhop", "ce-emhns", "ce-emhsig", "content-type",
    "Ce-Id", "ce-", "ce-Bad_Name", "x-other",
])
HEADER_VALUES = st.one_of(
    st.sampled_from(["1.0", "0.3", "", "v1", "ingress", "broker", "1", "0", "%", "%zz",
                     "application/json", "application/cloudevents+json",
                     "application/cloudevents-batch+json", "2020-06-15T10:00:00Z",
                     "eventmesh-health.heartbeat", "k1:" + "A" * 43]),
    st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=40),
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=3),
    max_leaves=10,
)
BODIES = st.one_of(
    st.binary(max_size=200),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(
        st.sampled_from(["specversion", "id", "source", "type", "time", "data", "data_base64",
                         "eventtypeversion", "emhrun", "emhseq", "emhhop", "emhns", "emhsig",
                         "datacontenttype", "BAD"]),
        JSON_VALUES, max_size=12,
    ).map(lambda d: {**STRUCTURED, **d}).map(lambda d: json.dumps(d).encode()),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(headers=st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=14), body=BODIES)
def test_any_input_is_a_heartbeat_or_a_heartbeat_error(headers, body):
    try:
        event = parse_http(headers, body)
        hb = heartbeat_from_event(event)
    except HeartbeatError as exc:
        assert isinstance(exc.reason, RejectReason)
        assert exc.detail
        return
    assert hb.sequence >= 1 and hb.signature
