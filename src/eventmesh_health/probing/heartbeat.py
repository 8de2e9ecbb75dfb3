"""Heartbeat events: what the checker sends through the mesh, and how they are read back.

A heartbeat is a CloudEvent 1.0:

- `id`: a fresh UUID per send (Kyma's legacy API only accepts UUIDs as `event-id`);
- `source`: the application name. Kyma's HTTP adapter overwrites `source` with `<app>`,
  so the checker's own identity travels in the run id instead;
- `type`: the heartbeat type, `eventmesh-health.heartbeat` unless configured;
- `time`: when it was sent (UTC, microseconds); end-to-end latency = receive time - `time`;
- `eventtypeversion`: `v1` (Kyma's extension; the heartbeat Trigger filters on it);
- `emhrun`: the probe run, i.e. which checker incarnation sent it (`<identity>-<random>`);
  sequences are per run;
- `emhseq`: the sequence number at this injection point in the run, from 1
  (`SequenceCounter`);
- `emhhop`: where it entered the mesh: `ingress` (event-service / HTTP adapter),
  `channel` (the application Channel), `broker` (a namespace's broker ingress);
- `emhns`: only on `broker` probes, the namespace whose broker it was posted to;
- `emhsig`: `<key id>:<base64url HMAC-SHA256>` (see `signing.py`).

The `emh*` values are strings on the wire (CloudEvents extension names are lower-case
alphanumerics, at most 20 characters). The same fields are also in `data` (a JSON
object, with `"checker": "eventmesh-health"`), which is what makes the legacy path work:

**The legacy Kyma event-service** (`POST /<app>/v1/events`) takes
`{"event-type", "event-type-version", "event-id", "event-time", "data"}` and has no
extensions. It turns `event-id` into the CloudEvent `id`, `event-time` into `time`,
`event-type` into `type`, `event-type-version` into the `eventtypeversion` extension, and
the adapter sets `source` to the application: every signed attribute survives, and the
`emh*` fields, signature included, ride in `data`. The receiver reads the `emh*` fields
from the extensions when there are any and from `data` otherwise; the signature makes
both equally trustworthy. The signature covers the *instant* of `time`, not its spelling
(a Go hop re-renders `...00.120000Z` as `...00.12Z`): see `canonical_time`.

Reading (`parse_http`) is a small strict implementation of the CloudEvents HTTP binding
1.0 (binary mode: `ce-*` headers, body = data; structured mode:
`application/cloudevents+json`), rather than the `cloudevents` SDK: the SDK (1.x) silently
fills in a missing `id` and `time` (with a fresh UUID and *now*: exactly the attributes
authenticity and freshness are judged on), raises bare `TypeError`/`ValueError` on some
hostile bodies, reads a structured body sent as `text/plain`, swallows an invalid
`data_base64`, is about ten times slower than this, and its 2.x line moved the API
(`cloudevents.http` is gone). Spec 1.0 over HTTP is all the mesh speaks.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any
from urllib.parse import unquote

__all__ = [
    "CHECKER",
    "DEFAULT_TYPE",
    "EVENT_TYPE_VERSION",
    "EXT_HOP",
    "EXT_NAMESPACE",
    "EXT_RUN",
    "EXT_SEQUENCE",
    "EXT_SIGNATURE",
    "CloudEvent",
    "Heartbeat",
    "HeartbeatError",
    "Hop",
    "RejectReason",
    "SequenceCounter",
    "canonical_time",
    "heartbeat_from_event",
    "legacy_path",
    "new_heartbeat",
    "new_run_id",
    "parse_http",
    "parse_time",
    "to_binary",
    "to_legacy",
    "to_structured",
    "trace_context",
    "trace_headers",
]

DEFAULT_TYPE = "eventmesh-health.heartbeat"
EVENT_TYPE_VERSION = "v1"
CHECKER = "eventmesh-health"
SPECVERSION = "1.0"

EXT_RUN = "emhrun"
EXT_SEQUENCE = "emhseq"
EXT_HOP = "emhhop"
EXT_NAMESPACE = "emhns"
EXT_SIGNATURE = "emhsig"
EXT_EVENT_TYPE_VERSION = "eventtypeversion"
_FIELDS = (EXT_RUN, EXT_SEQUENCE, EXT_HOP, EXT_NAMESPACE, EXT_SIGNATURE)

STRUCTURED_JSON = "application/cloudevents+json"
JSON_TYPE = "application/json"

MAX_SEQUENCE = 2**63 - 1
_RUN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_SEQUENCE = re.compile(r"[1-9][0-9]{0,18}")
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_ATTRIBUTE_NAME = re.compile(r"[a-z0-9]{1,64}")
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)
_MAX_ATTRIBUTE = 4096  # characters of one attribute value we care to look at


class Hop(StrEnum):
    """Where a probe entered the mesh, upstream first.

    A probe that enters at a hop travels every path segment from there to the receiver:
    `ingress` (event-service -> HTTP adapter -> application Channel), `channel`
    (Channel -> `brokersub-` Subscription -> the namespace's Broker), `broker` (broker
    ingress -> filter -> Trigger -> receiver).
    """

    INGRESS = "ingress"
    CHANNEL = "channel"
    BROKER = "broker"

    @property
    def position(self) -> int:
        return _HOP_POSITION[self]


_HOP_POSITION = {hop: i for i, hop in enumerate(Hop)}


class RejectReason(StrEnum):
    """Why the receiver turned a request down: a bounded set (the metric label)."""

    MALFORMED = "Malformed"  # 400: not a CloudEvent 1.0 over HTTP
    TOO_LARGE = "TooLarge"  # 413: body over the limit
    UNSUPPORTED_MEDIA_TYPE = "UnsupportedMediaType"  # 415: structured mode other than JSON
    INVALID_NAME = "InvalidName"  # 422: a path parameter that is not a Kubernetes name
    NOT_A_HEARTBEAT = "NotAHeartbeat"  # 422: a CloudEvent, but not one of ours
    MISROUTED = "Misrouted"  # 422: a heartbeat of another application or namespace
    UNSIGNED = "Unsigned"  # 401
    UNKNOWN_KEY = "UnknownKey"  # 401: signed with a key id we do not (or no longer) accept
    BAD_SIGNATURE = "BadSignature"  # 401: forged or altered
    STALE = "Stale"  # 403: older than the max age
    FROM_FUTURE = "FromFuture"  # 403: later than now plus the allowed skew
    REPLAYED = "Replayed"  # 403: an event id seen before, after the redelivery window
    BAD_PAIR_TOKEN = "BadPairToken"  # 401: not a heartbeat Trigger's URL of this pair
    NOT_PROBED = "NotProbed"  # 403: a (namespace, application) that is not being probed
    NO_KEYS = "NoKeys"  # 503 (retried by the mesh): the key Secret is not read yet


class HeartbeatError(Exception):
    """A request or event that is not an acceptable heartbeat; `reason` says why."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """One heartbeat, as sent or as received (`signature` is `<key id>:<mac>`)."""

    id: str
    application: str  # = the CloudEvent `source`
    type: str
    time: datetime  # aware, UTC
    run: str
    sequence: int
    hop: Hop
    namespace: str | None = None  # the target namespace of a `broker` probe
    signature: str | None = None

    def unsigned(self) -> Heartbeat:
        return replace(self, signature=None)

    def fields(self) -> dict[str, str]:
        """The `emh*` fields as they travel (extension values and `data` entries)."""
        out = {EXT_RUN: self.run, EXT_SEQUENCE: str(self.sequence), EXT_HOP: self.hop.value}
        if self.namespace is not None:
            out[EXT_NAMESPACE] = self.namespace
        if self.signature is not None:
            out[EXT_SIGNATURE] = self.signature
        return out

    def data(self) -> dict[str, str]:
        return {"checker": CHECKER, **self.fields()}


def new_run_id(identity: str) -> str:
    """A run id for one checker incarnation: `<identity>-<12 hex>` (e.g. the Pod name)."""
    prefix = re.sub(r"[^A-Za-z0-9._-]", "-", identity)[:100].lstrip("._-") or "checker"
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def new_heartbeat(
    application: str,
    hop: Hop,
    sequence: int,
    *,
    run: str,
    at: datetime,
    type: str = DEFAULT_TYPE,
    namespace: str | None = None,
    id: str | None = None,
) -> Heartbeat:
    """An unsigned heartbeat sent at `at` (sign it with `signing.Keyring.sign`).

    `namespace` is required for a `broker` probe (it names the broker it is posted to)
    and not allowed for the others, which fan out to every namespace of the application.
    """
    if (hop is Hop.BROKER) != (namespace is not None):
        raise ValueError("a broker probe names its namespace; other hops do not")
    if not 1 <= sequence <= MAX_SEQUENCE:
        raise ValueError(f"sequence out of range: {sequence}")
    if not _RUN.fullmatch(run):
        raise ValueError(f"invalid run id: {run!r}")
    if at.tzinfo is None:
        raise ValueError("the send time must be timezone-aware")
    return Heartbeat(
        id=id or str(uuid.uuid4()), application=application, type=type,
        time=at.astimezone(UTC), run=run, sequence=sequence, hop=hop, namespace=namespace,
    )


def trace_context(application: str, hop: Hop, sequence: int, *, run: str,
                  namespace: str | None = None) -> tuple[str, str]:
    """(W3C trace id, parent span id) of a heartbeat: derived from what identifies it (run,
    source, hop, broker namespace, sequence), so the health can name the trace of a heartbeat
    that never arrived from the tracker's (run, sequence) alone, with nothing stored."""
    key = "\x1f".join((run, application, hop.value, namespace or "", str(sequence)))
    digest = hashlib.sha256(key.encode()).hexdigest()
    return digest[:32], digest[32:48]


def trace_headers(hb: Heartbeat) -> dict[str, str]:
    """The trace context a heartbeat is posted with: W3C ``traceparent`` (sampled), which
    Knative >= 0.14 continues, and the same ids as B3 headers, which OpenCensus (Knative 0.12,
    Kyma 1.x) and the Kyma event-service (from 1.13) propagate."""
    trace_id, span_id = trace_context(hb.application, hb.hop, hb.sequence, run=hb.run,
                                      namespace=hb.namespace)
    return {"traceparent": f"00-{trace_id}-{span_id}-01", "x-b3-traceid": trace_id,
            "x-b3-spanid": span_id, "x-b3-sampled": "1"}


class SequenceCounter:
    """The sender's sequence numbers: one counter per injection point, from 1.

    An injection point is (application, hop) for `ingress` and `channel` probes, which fan
    out to every namespace, and (application, `broker`, namespace) for broker probes, each
    posted to one namespace's broker. So every namespace sees consecutive numbers on every
    hop, and a gap is a loss. Start a new run (and a new counter) when the checker starts
    or becomes leader; never reset a counter within a run (the receiver would take the
    numbers it sees again for duplicates).
    """

    def __init__(self) -> None:
        self._last: dict[tuple[str, Hop, str | None], int] = {}

    def next(self, application: str, hop: Hop, namespace: str | None = None) -> int:
        key = (application, hop, namespace if hop is Hop.BROKER else None)
        value = self._last.get(key, 0) + 1
        self._last[key] = value
        return value


# --- time ---------------------------------------------------------------------------------


def parse_time(text: str) -> datetime:
    """An RFC 3339 timestamp as an aware UTC datetime (fractions beyond microseconds are cut).

    Raises ValueError.
    """
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise ValueError(f"not an RFC 3339 timestamp: {_echo(text)}")
    year, month, day, hour, minute, second, fraction, zulu, sign, oh, om = match.groups()
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    offset = timedelta(0)
    if not zulu:
        if int(oh) > 23 or int(om) > 59:
            raise ValueError(f"invalid UTC offset in {_echo(text)}")
        offset = timedelta(hours=int(oh), minutes=int(om)) * (-1 if sign == "-" else 1)
    try:
        local = datetime(int(year), int(month), int(day), int(hour), int(minute),
                         min(int(second), 59), micro, tzinfo=UTC)  # 60: a leap second
        return local - offset
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"invalid date or time in {_echo(text)}") from exc


def canonical_time(at: datetime) -> str:
    """How a time is written and signed: UTC, always six fraction digits, `Z`.

    A hop that parses and re-renders `time` keeps the instant but maybe not the text, so
    the signature is over this rendering of the instant, not over the text received.
    """
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --- building -----------------------------------------------------------------------------


def _attributes(hb: Heartbeat) -> dict[str, str]:
    return {
        "specversion": SPECVERSION,
        "id": hb.id,
        "source": hb.application,
        "type": hb.type,
        "time": canonical_time(hb.time),
        EXT_EVENT_TYPE_VERSION: EVENT_TYPE_VERSION,
        **hb.fields(),
    }


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def to_binary(hb: Heartbeat) -> tuple[dict[str, str], bytes]:
    """CloudEvents binary mode: (`ce-*` headers + `content-type`, JSON data)."""
    headers = {f"ce-{name}": value for name, value in _attributes(hb).items()}
    headers["content-type"] = JSON_TYPE
    return headers, _json(hb.data())


def to_structured(hb: Heartbeat) -> tuple[dict[str, str], bytes]:
    """CloudEvents structured mode: (`content-type: application/cloudevents+json`, event)."""
    event: dict[str, object] = {
        **_attributes(hb), "datacontenttype": JSON_TYPE, "data": hb.data(),
    }
    return {"content-type": STRUCTURED_JSON}, _json(event)


def legacy_path(application: str) -> str:
    """The legacy event-service path of an application (relative to its base URL)."""
    return f"/{application}/v1/events"


def to_legacy(hb: Heartbeat) -> tuple[dict[str, str], bytes]:
    """Kyma's legacy event-service body, to `POST` to `legacy_path(application)`.

    The heartbeat fields (signature included) are in `data`; see the module docstring.
    """
    body = {
        "event-type": hb.type,
        "event-type-version": EVENT_TYPE_VERSION,
        "event-id": hb.id,
        "event-time": canonical_time(hb.time),
        "data": hb.data(),
    }
    return {"content-type": JSON_TYPE}, _json(body)


# --- reading ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CloudEvent:
    """A CloudEvent 1.0 as read from HTTP: string attributes (extensions included) and data.

    `data` is the decoded JSON value when the data is JSON, else the raw bytes (None when
    there is none). Extension values that were JSON numbers or booleans in structured mode
    are kept as their JSON text.
    """

    attributes: Mapping[str, str]
    data: object
    mode: str  # "binary" or "structured"

    @property
    def id(self) -> str:
        return self.attributes["id"]

    @property
    def source(self) -> str:
        return self.attributes["source"]

    @property
    def type(self) -> str:
        return self.attributes["type"]


def parse_http(headers: Iterable[tuple[str, str]], body: bytes) -> CloudEvent:
    """A CloudEvent from an HTTP request's headers (name, value pairs) and body.

    Binary mode when there is a `ce-specversion` header, structured mode when the content
    type is `application/cloudevents+json`. Raises `HeartbeatError` (`MALFORMED`, or
    `UNSUPPORTED_MEDIA_TYPE` for other structured formats and batches).
    """
    ce: dict[str, str] = {}
    content_type: str | None = None
    for raw_name, value in headers:
        name = raw_name.lower()
        if name.startswith("ce-"):
            attr = name[3:]
            if attr in ce:
                raise HeartbeatError(RejectReason.MALFORMED, f"header {_echo(name)} repeated")
            ce[attr] = value
        elif name == "content-type":
            if content_type is not None:
                raise HeartbeatError(RejectReason.MALFORMED, "content-type repeated")
            content_type = value
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if "specversion" in ce:
        return _binary(ce, content_type, media, body)
    if media.startswith("application/cloudevents"):
        if media != STRUCTURED_JSON:
            raise HeartbeatError(
                RejectReason.UNSUPPORTED_MEDIA_TYPE,
                f"only single events in {STRUCTURED_JSON} or binary mode are accepted, "
                f"not {_echo(media)}",
            )
        return _structured(body)
    raise HeartbeatError(
        RejectReason.MALFORMED,
        "not a CloudEvent: neither binary mode (a ce-specversion header) nor structured "
        f"mode ({STRUCTURED_JSON})",
    )


def _binary(
    ce: dict[str, str], content_type: str | None, media: str, body: bytes
) -> CloudEvent:
    attributes: dict[str, str] = {}
    for name, raw in ce.items():
        if not _ATTRIBUTE_NAME.fullmatch(name):
            raise HeartbeatError(RejectReason.MALFORMED,
                                 f"invalid attribute name {_echo('ce-' + name)}")
        # CloudEvents HTTP binding 1.0.2: values are percent-encoded; a header is latin-1.
        try:
            attributes[name] = unquote(raw, errors="strict") if "%" in raw else raw
        except UnicodeDecodeError:
            raise HeartbeatError(RejectReason.MALFORMED,
                                 f"header {_echo('ce-' + name)} is not UTF-8") from None
    if content_type is not None:
        attributes["datacontenttype"] = content_type
    _check_required(attributes)
    data: object = None
    if body:
        data = body
        if _is_json(media):
            try:
                data = json.loads(body)
            except (ValueError, RecursionError):
                data = body  # not our business unless it carries the heartbeat fields
    return CloudEvent(attributes, data, "binary")


def _structured(body: bytes) -> CloudEvent:
    try:
        event = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise HeartbeatError(RejectReason.MALFORMED, f"body is not JSON: {exc}") from None
    if not isinstance(event, dict):
        raise HeartbeatError(RejectReason.MALFORMED, "a structured event is a JSON object")
    attributes: dict[str, str] = {}
    data: object = None
    for name, value in event.items():
        if name == "data":
            data = value
        elif name == "data_base64":
            if not isinstance(value, str):
                raise HeartbeatError(RejectReason.MALFORMED, "data_base64 is not a string")
            try:
                data = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raise HeartbeatError(RejectReason.MALFORMED, "data_base64 is not base64") from None
        elif not _ATTRIBUTE_NAME.fullmatch(name):
            raise HeartbeatError(RejectReason.MALFORMED, f"invalid attribute name {_echo(name)}")
        elif isinstance(value, str):
            attributes[name] = value
        elif isinstance(value, bool):
            attributes[name] = "true" if value else "false"
        elif isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
            attributes[name] = str(int(value))
        else:
            raise HeartbeatError(
                RejectReason.MALFORMED,
                f"attribute {_echo(name)} is a {type(value).__name__}, not a string",
            )
    if "data" in event and "data_base64" in event:
        raise HeartbeatError(RejectReason.MALFORMED, "both data and data_base64")
    _check_required(attributes)
    if isinstance(data, bytes) and _is_json(attributes.get("datacontenttype", "").lower()):
        with contextlib.suppress(ValueError, RecursionError):
            data = json.loads(data)
    return CloudEvent(attributes, data, "structured")


def _check_required(attributes: Mapping[str, str]) -> None:
    if attributes.get("specversion") != SPECVERSION:
        raise HeartbeatError(
            RejectReason.MALFORMED,
            f"specversion must be {SPECVERSION}, not {_echo(attributes.get('specversion'))}",
        )
    for name in ("id", "source", "type"):
        if not attributes.get(name):
            raise HeartbeatError(RejectReason.MALFORMED, f"attribute {name!r} missing or empty")
    for name, value in attributes.items():
        if len(value) > _MAX_ATTRIBUTE:
            raise HeartbeatError(RejectReason.MALFORMED, f"attribute {name!r} is too long")


def _is_json(media: str) -> bool:
    media = media.split(";", 1)[0].strip()
    return media in ("application/json", "text/json") or media.endswith("+json")


def heartbeat_from_event(event: CloudEvent, heartbeat_type: str = DEFAULT_TYPE) -> Heartbeat:
    """The heartbeat an event carries; raises `HeartbeatError`.

    `NOT_A_HEARTBEAT` for another type, a missing or wrong `eventtypeversion`, a missing
    `time` or missing or invalid `emh*` fields; `UNSIGNED` when only the signature is
    missing. The signature is not checked here (`signing.Verifier` does).
    """
    attrs = event.attributes
    if attrs["type"] != heartbeat_type:
        raise HeartbeatError(
            RejectReason.NOT_A_HEARTBEAT,
            f"type {_echo(attrs['type'])} is not the heartbeat type {heartbeat_type!r}",
        )
    if attrs.get(EXT_EVENT_TYPE_VERSION) != EVENT_TYPE_VERSION:
        raise HeartbeatError(
            RejectReason.NOT_A_HEARTBEAT,
            f"eventtypeversion must be {EVENT_TYPE_VERSION!r}, not "
            f"{_echo(attrs.get(EXT_EVENT_TYPE_VERSION))}",
        )
    if "time" not in attrs:
        raise HeartbeatError(RejectReason.NOT_A_HEARTBEAT, "a heartbeat has a time")
    try:
        at = parse_time(attrs["time"])
    except ValueError as exc:
        raise HeartbeatError(RejectReason.MALFORMED, str(exc)) from None
    fields = _heartbeat_fields(event)
    run = fields.get(EXT_RUN)
    if run is None or not _RUN.fullmatch(run):
        raise HeartbeatError(RejectReason.NOT_A_HEARTBEAT, f"missing or invalid {EXT_RUN}")
    sequence = fields.get(EXT_SEQUENCE)
    if sequence is None or not _SEQUENCE.fullmatch(sequence) or int(sequence) > MAX_SEQUENCE:
        raise HeartbeatError(RejectReason.NOT_A_HEARTBEAT, f"missing or invalid {EXT_SEQUENCE}")
    try:
        hop = Hop(fields.get(EXT_HOP, ""))
    except ValueError:
        raise HeartbeatError(
            RejectReason.NOT_A_HEARTBEAT,
            f"{EXT_HOP} must be one of {', '.join(h.value for h in Hop)}",
        ) from None
    namespace = fields.get(EXT_NAMESPACE)
    if (hop is Hop.BROKER) != (namespace is not None) or (
        namespace is not None and not _DNS1123_LABEL.fullmatch(namespace)
    ):
        raise HeartbeatError(
            RejectReason.NOT_A_HEARTBEAT,
            f"{EXT_NAMESPACE} (a namespace name) is required on broker probes, only there",
        )
    signature = fields.get(EXT_SIGNATURE)
    if not signature:
        raise HeartbeatError(RejectReason.UNSIGNED, f"no signature ({EXT_SIGNATURE})")
    return Heartbeat(
        id=attrs["id"], application=attrs["source"], type=attrs["type"], time=at, run=run,
        sequence=int(sequence), hop=hop, namespace=namespace, signature=signature,
    )


def _heartbeat_fields(event: CloudEvent) -> dict[str, str]:
    """The `emh*` fields: from the extensions if any is there, else from a `data` object."""
    attrs = event.attributes
    if any(name in attrs for name in _FIELDS):
        return {name: attrs[name] for name in _FIELDS if name in attrs}
    data = event.data
    if not isinstance(data, dict):
        return {}
    out: dict[str, str] = {}
    for name in _FIELDS:
        value: Any = data.get(name)
        if isinstance(value, str):
            out[name] = value
        elif isinstance(value, int) and not isinstance(value, bool):
            out[name] = str(value)
    return out


def _echo(value: object, limit: int = 80) -> str:
    """A value from a request, quoted and cut short, safe to put into a message."""
    text = "null" if value is None else str(value)
    if len(text) > limit:
        text = text[:limit] + "..."
    return '"' + text.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'
