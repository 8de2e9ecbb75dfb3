"""The heartbeat receiver: HTTP endpoints the heartbeat Triggers deliver to.

    receiver = Receiver(tracker, Verifier(keyring))
    app.include_router(receiver.router)          # into serve's FastAPI app
    ProbeMetrics(tracker, receiver.rejected_counts).register(registry)

- `POST /heartbeat/{namespace}/{application}`: a heartbeat Trigger's subscriber (its
  URL says which namespace's Trigger and which application it is for);
- `POST /deadletter/{namespace}/{application}`: the heartbeat Trigger's
  `delivery.deadLetterSink`: a heartbeat the mesh gave up on, with the `knativeerrordest`,
  `knativeerrorcode` and `knativeerrordata` extensions.

Both take one CloudEvent 1.0, binary or structured (`application/cloudevents+json`)
mode, of at most `max_body` bytes (64 KiB): a larger `Content-Length` is refused before
anything is read, and a body without one is read in chunks only up to the limit.

Answers (JSON; errors as `{"error": code, "detail": text}`, like the rest of the API):

- 202 `Accepted`: a new heartbeat; `arrival` says InOrder, OutOfOrder or Late;
- 202 `Duplicate`: a heartbeat whose event id already arrived at this namespace and hop
  within the redelivery window (`redelivery_window`, 60 s: the mesh's retries);
- 400 `Malformed`: not a CloudEvent 1.0 (neither a `ce-specversion` header nor structured
  JSON, bad JSON, missing `id`/`source`/`type`, a bad `time`, repeated headers, ...);
- 401 `Unsigned`, `UnknownKey`, `BadSignature`: no signature; a key id not accepted;
  forged or altered;
- 401 `BadPairToken`: the URL lacks the `pair` token of this (namespace, application)
  (a random token in its heartbeat Trigger's URLs, see `triggers.py`): a heartbeat
  captured on its way to one namespace cannot be posted to another's URL;
- 403 `NotProbed`: a (namespace, application) that is not being probed: nothing is
  recorded for invented pairs, so they create no tracker series and no metrics;
- 403 `Stale`, `FromFuture`: its time is older than the max age, or ahead beyond the skew;
- 403 `Replayed`: an event id that already arrived here longer ago than the redelivery
  window (and within the max age): a captured heartbeat posted again;
- 403 `Stale` for a dead letter older than `dead_letter_max_age` (30 min);
- 413 `TooLarge`: body over `max_body`;
- 415 `UnsupportedMediaType`: structured mode other than JSON (batches, XML, ...);
- 422 `InvalidName`: a path parameter that is not a Kubernetes name;
- 422 `NotAHeartbeat`: a CloudEvent of another type, or without `eventtypeversion: v1`,
  `time` or the `emh*` fields;
- 422 `Misrouted`: a heartbeat of another application (`source`) or, for a broker probe,
  of another namespace;
- 503 `NoKeys`: the key Secret has not been read yet (logged once, not per request):
  the mesh retries a 503, so nothing is lost.

Every 4xx is counted by reason (`rejected_counts()`, the metric
`eventmesh_heartbeats_rejected_total`) and changes no tracker state: the checks run in
the order names, pair (probed, token), size, parse, heartbeat fields, signature, time,
routing, and the tracker
(and the replay cache) only hear of a heartbeat that passed them all. None is one that
Knative retries (it retries 404, 409, 429 and 5xx), so a rejected heartbeat is
dead-lettered at most once. Nothing raises through to a 5xx: an unexpected error is
logged, counted in `internal_errors` and answered 400.

**Redeliveries are answered 202, replays 403.** Knative's data-plane contract says a
recipient MUST accept duplicate deliveries and that `409` is retried: refusing a
redelivered event would make the mesh retry it, then dead-letter it, turning one
duplicate into noise on two endpoints. An event id is remembered per namespace,
application and hop for max age + skew (the `ReplayCache`, consulted only after the
signature and time checks). Seen again within `redelivery_window` of its first arrival,
it is what the mesh's at-least-once delivery and retries produce: counted as a duplicate
(the `HeartbeatDuplicates` verdict), nothing else changes (no arrival, no latency sample,
no sequence, no last-arrival time). Seen again later, it can only be a captured heartbeat
posted again: `Replayed`, rejected and counted like the other rejections, changing no
tracker state at all. Either way a repeated heartbeat can make a pair look worse, never
healthier. One older than the max age is `Stale`. The signature cannot bind ingress and channel
probes to a namespace (one event serves all of them); the pair token in each Trigger's URL
does (a random token per Trigger): a heartbeat counts only at the URL of the pair it was
delivered to. Broker probes are
also bound by their signed `emhns`.

Dead letters must be signed heartbeats of that application, at most `dead_letter_max_age`
old (retries take time, but not days); they are kept in a bounded log (`dead_letters`,
`latest_dead_letter`) and counted per hop in the tracker, each event id once. Their
unsigned fields (`knativeerrordest`, `knativeerrordata`) are cut short and their control
characters escaped before they reach a log line or a finding.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import logging
import re
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.requests import ClientDisconnect

from eventmesh_health.model import printable
from eventmesh_health.probing.heartbeat import (
    DEFAULT_TYPE,
    STRUCTURED_JSON,
    CloudEvent,
    Heartbeat,
    HeartbeatError,
    Hop,
    RejectReason,
    _echo,
    heartbeat_from_event,
    parse_http,
)
from eventmesh_health.probing.signing import ReplayCache, Verifier
from eventmesh_health.probing.tracker import Arrival, Tracker

__all__ = [
    "DEFAULT_MAX_BODY",
    "STATUS",
    "DeadLetter",
    "DeadLetterRecorded",
    "HeartbeatAccepted",
    "ProbeError",
    "Receiver",
    "ReceiverConfig",
]

log = logging.getLogger("eventmesh_health.probing")

DEFAULT_MAX_BODY = 64 * 1024
# As in serve/api.py (not imported from there, so serve can import this module freely).
_APPLICATION = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_ERROR_DATA_LIMIT = 1024
_ERROR_DEST_LIMIT = 512
JSON = "application/json"

STATUS: dict[RejectReason, int] = {
    RejectReason.MALFORMED: 400,
    RejectReason.UNSIGNED: 401,
    RejectReason.UNKNOWN_KEY: 401,
    RejectReason.BAD_SIGNATURE: 401,
    RejectReason.STALE: 403,
    RejectReason.FROM_FUTURE: 403,
    RejectReason.REPLAYED: 403,
    RejectReason.BAD_PAIR_TOKEN: 401,
    RejectReason.NOT_PROBED: 403,
    RejectReason.NO_KEYS: 503,
    RejectReason.TOO_LARGE: 413,
    RejectReason.UNSUPPORTED_MEDIA_TYPE: 415,
    RejectReason.INVALID_NAME: 422,
    RejectReason.NOT_A_HEARTBEAT: 422,
    RejectReason.MISROUTED: 422,
}


@dataclass(frozen=True, slots=True)
class ReceiverConfig:
    heartbeat_type: str = DEFAULT_TYPE
    max_body: int = DEFAULT_MAX_BODY
    dead_letter_log: int = 1000  # dead letters kept for inspection
    replay_entries: int = 200_000  # ids remembered (apps x namespaces x hops x max age / interval)
    # a repeated event id within this of its first arrival is a redelivery (202, duplicate),
    # after it a replay (403); Knative retries with backoff for seconds, rarely a minute
    redelivery_window: timedelta = timedelta(seconds=60)
    # a dead letter is older than its heartbeat's retries can make it (Knative's default
    # delivery gives up within minutes): an older one is a captured heartbeat posted again
    dead_letter_max_age: timedelta = timedelta(minutes=30)


class ProbeError(BaseModel):
    """An error answer of the heartbeat endpoints (the shape of the API's `ErrorBody`)."""

    error: str = Field(description="A `RejectReason`: why the request was turned down.",
                       examples=["BadSignature"])
    detail: str = Field(description="For a person: what exactly was wrong.")


class HeartbeatAccepted(BaseModel):
    status: Literal["Accepted", "Duplicate"] = Field(
        description="Accepted: a new heartbeat. Duplicate: this event id already arrived "
        "at this namespace and hop (counted as a duplicate delivery, nothing else).")
    arrival: Literal["InOrder", "OutOfOrder", "Late", "Duplicate"]
    hop: Literal["ingress", "channel", "broker"]
    sequence: int


class DeadLetterRecorded(BaseModel):
    status: Literal["Recorded", "Duplicate"]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A heartbeat the mesh could not deliver, with what the mesh said about it."""

    at: datetime
    application: str
    namespace: str
    event_id: str
    hop: Hop
    sequence: int
    run: str
    error_dest: str | None  # knativeerrordest: where delivery failed
    error_code: int | None  # knativeerrorcode: the HTTP status it got
    error_data: str | None  # knativeerrordata: the response body (decoded, cut short)

    def describe(self) -> str:
        code = f"HTTP {self.error_code}" if self.error_code is not None else "an error"
        dest = f" from {self.error_dest}" if self.error_dest else ""
        data = f": {self.error_data[:200]}" if self.error_data else ""
        return (f"{self.hop.value} heartbeat #{self.sequence} got {code}{dest}{data} "
                f"(at {self.at.isoformat()})")


class _Reply(Exception):
    def __init__(self, status: int, body: BaseModel) -> None:
        self.status = status
        self.body = body


class Receiver:
    """Heartbeat and dead-letter endpoints over a tracker; see the module docstring."""

    def __init__(
        self,
        tracker: Tracker,
        verifier: Verifier,
        *,
        config: ReceiverConfig | None = None,
        clock: Callable[[], datetime] | None = None,
        on_arrival: Callable[[Heartbeat, str, Arrival, datetime], None] | None = None,
        pair_tokens: Callable[[str, str], str | None] | None = None,
    ) -> None:
        self.tracker = tracker
        # (namespace, application) -> the pair token of its heartbeat Trigger, None when it
        # is not probed: only the pairs being probed are accepted, each at its own URL.
        # None: any pair (tests of the other checks only; serve always passes it).
        self.pair_tokens = pair_tokens
        self._keys_missing_logged = False
        # told of every recorded heartbeat (duplicates too): (heartbeat, namespace, how it
        # arrived, when); the runner sends confirmation probes from it. Its errors are
        # logged, never answered.
        self.on_arrival = on_arrival
        self.verifier = verifier
        self.config = config or ReceiverConfig()
        self.clock = clock or tracker.clock
        fresh = verifier.freshness
        self.replay = ReplayCache(fresh.max_age + fresh.max_skew, self.config.replay_entries)
        self.dead_letters: deque[DeadLetter] = deque(maxlen=self.config.dead_letter_log)
        self.internal_errors = 0
        self._rejected: dict[str, int] = dict.fromkeys((r.value for r in RejectReason), 0)
        self._lock = threading.Lock()
        self.router = self._router()

    # --- figures ------------------------------------------------------------------------

    def rejected_counts(self) -> dict[str, int]:
        """Requests turned down so far, per `RejectReason` value (thread-safe)."""
        with self._lock:
            return dict(self._rejected)

    def latest_dead_letter(self, application: str, namespace: str) -> DeadLetter | None:
        for letter in reversed(self.dead_letters):
            if letter.application == application and letter.namespace == namespace:
                return letter
        return None

    # --- the handlers, without HTTP -----------------------------------------------------

    def handle_heartbeat(
        self, namespace: str, application: str, headers: Iterable[tuple[str, str]],
        body: bytes, pair_token: str | None = None,
    ) -> tuple[int, BaseModel]:
        """(status, body) for one delivery to `/heartbeat/{namespace}/{application}`."""
        return self._guard(lambda: self._heartbeat(namespace, application, headers, body,
                                                   pair_token))

    def handle_dead_letter(
        self, namespace: str, application: str, headers: Iterable[tuple[str, str]],
        body: bytes, pair_token: str | None = None,
    ) -> tuple[int, BaseModel]:
        """(status, body) for one delivery to `/deadletter/{namespace}/{application}`."""
        return self._guard(lambda: self._dead_letter(namespace, application, headers, body,
                                                     pair_token))

    def _guard(self, handle: Callable[[], tuple[int, BaseModel]]) -> tuple[int, BaseModel]:
        try:
            reply = handle()
        except HeartbeatError as exc:
            return self._reject(exc)
        except LookupError:  # the key Secret has not been read (yet): the mesh retries a 503
            if not self._keys_missing_logged:
                self._keys_missing_logged = True
                log.warning("heartbeat receiver: no keys loaded yet (the key Secret has not "
                            "been read): answering 503 NoKeys until it is")
            return self._reject(HeartbeatError(
                RejectReason.NO_KEYS, "the heartbeat keys are not loaded yet; retry later"))
        except Exception:
            self.internal_errors += 1
            log.exception("heartbeat receiver: unexpected error")
            return self._reject(HeartbeatError(
                RejectReason.MALFORMED, "the request could not be processed"))
        self._keys_missing_logged = False
        return reply

    def _reject(self, exc: HeartbeatError) -> tuple[int, BaseModel]:
        with self._lock:
            self._rejected[exc.reason.value] += 1
        log.debug("heartbeat rejected: %s: %s", exc.reason.value, exc.detail)
        return STATUS[exc.reason], ProbeError(error=exc.reason.value, detail=exc.detail)

    def _verified(
        self, namespace: str, application: str, headers: Iterable[tuple[str, str]],
        body: bytes, pair_token: str | None, *, max_age: timedelta | None = None,
    ) -> tuple[Heartbeat, CloudEvent, datetime]:
        _check_names(namespace, application)
        if self.pair_tokens is not None:
            expected = self.pair_tokens(namespace, application)
            if expected is None:
                raise HeartbeatError(
                    RejectReason.NOT_PROBED,
                    f"application {_echo(application)} is not probed in namespace "
                    f"{_echo(namespace)}")
            if not hmac.compare_digest(expected.encode(),
                                       (pair_token or "").encode("utf-8", "replace")):
                raise HeartbeatError(
                    RejectReason.BAD_PAIR_TOKEN,
                    "no valid pair token in the URL: not the URL of the heartbeat Trigger "
                    "of this namespace and application")
        event = parse_http(headers, body)
        hb = heartbeat_from_event(event, self.config.heartbeat_type)
        self.verifier.check_signature(hb)
        now = self.clock()
        if max_age is None:
            self.verifier.check_time(hb, now)
        elif now - hb.time > max_age:
            raise HeartbeatError(
                RejectReason.STALE,
                f"a dead letter of a heartbeat sent {(now - hb.time).total_seconds():.0f}s "
                f"ago; at most {max_age.total_seconds():g}s accepted")
        if hb.application != application:
            raise HeartbeatError(
                RejectReason.MISROUTED,
                f"a heartbeat of application {_echo(hb.application)} delivered to the "
                f"endpoint of {_echo(application)}")
        if hb.namespace is not None and hb.namespace != namespace:
            raise HeartbeatError(
                RejectReason.MISROUTED,
                f"a broker probe for namespace {_echo(hb.namespace)} delivered to the "
                f"endpoint of {_echo(namespace)}")
        return hb, event, now

    def _heartbeat(
        self, namespace: str, application: str, headers: Iterable[tuple[str, str]],
        body: bytes, pair_token: str | None,
    ) -> tuple[int, BaseModel]:
        hb, _, now = self._verified(namespace, application, headers, body, pair_token)
        first = self.replay.first_seen(("heartbeat", namespace, application, hb.hop, hb.id),
                                       now)
        if first is not None:
            if now - first > self.config.redelivery_window:
                raise HeartbeatError(
                    RejectReason.REPLAYED,
                    f"event id {_echo(hb.id)} arrived here {(now - first).total_seconds():.0f}s "
                    f"ago; the mesh redelivers within "
                    f"{self.config.redelivery_window.total_seconds():g}s: a replay")
            self.tracker.record_duplicate(hb, namespace, at=now)
            self._tell(hb, namespace, Arrival.DUPLICATE, now)
            return 202, HeartbeatAccepted(status="Duplicate", arrival="Duplicate",
                                          hop=hb.hop.value, sequence=hb.sequence)
        arrival = self.tracker.record_arrival(hb, namespace, at=now)
        self._tell(hb, namespace, arrival, now)
        status: Literal["Accepted", "Duplicate"] = (
            "Duplicate" if arrival is Arrival.DUPLICATE else "Accepted")
        return 202, HeartbeatAccepted(status=status, arrival=arrival.value,
                                      hop=hb.hop.value, sequence=hb.sequence)

    def _tell(self, hb: Heartbeat, namespace: str, arrival: Arrival, at: datetime) -> None:
        if self.on_arrival is None:
            return
        try:
            self.on_arrival(hb, namespace, arrival, at)
        except Exception:
            log.exception("heartbeat receiver: the arrival hook failed")

    def _dead_letter(
        self, namespace: str, application: str, headers: Iterable[tuple[str, str]],
        body: bytes, pair_token: str | None,
    ) -> tuple[int, BaseModel]:
        hb, event, now = self._verified(namespace, application, headers, body, pair_token,
                                        max_age=self.config.dead_letter_max_age)
        if self.replay.seen(("deadletter", namespace, application, hb.hop, hb.id), now):
            return 202, DeadLetterRecorded(status="Duplicate")
        attrs = event.attributes
        code = attrs.get("knativeerrorcode", "")
        letter = DeadLetter(
            at=now, application=application, namespace=namespace, event_id=hb.id,
            hop=hb.hop, sequence=hb.sequence, run=hb.run,
            error_dest=_printable(attrs.get("knativeerrordest"), _ERROR_DEST_LIMIT),
            error_code=int(code) if code.isdigit() and len(code) <= 3 else None,
            error_data=_error_data(attrs.get("knativeerrordata")),
        )
        self.dead_letters.append(letter)
        self.tracker.record_dead_letter(application, namespace, hb.hop, at=now)
        log.info("heartbeat dead-lettered for %s/%s: %s", namespace, application,
                 letter.describe())
        return 202, DeadLetterRecorded(status="Recorded")

    # --- HTTP ---------------------------------------------------------------------------

    async def _read(self, request: Request) -> bytes:
        limit = self.config.max_body
        length = request.headers.get("content-length")
        if length is not None:
            if not length.strip().isdigit():
                raise HeartbeatError(RejectReason.MALFORMED, "invalid Content-Length")
            if int(length) > limit:
                raise HeartbeatError(
                    RejectReason.TOO_LARGE,
                    f"body of {int(length)} bytes; at most {limit} accepted")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise HeartbeatError(RejectReason.TOO_LARGE,
                                     f"body over {limit} bytes")
        return bytes(body)

    async def _serve(
        self, request: Request,
        handle: Callable[[str, str, Iterable[tuple[str, str]], bytes, str | None],
                         tuple[int, BaseModel]],
    ) -> Response:
        namespace = str(request.path_params.get("namespace", ""))
        application = str(request.path_params.get("application", ""))
        try:
            _check_names(namespace, application)
            body = await self._read(request)
        except HeartbeatError as exc:
            status, reply = self._reject(exc)
        except ClientDisconnect:
            return Response(status_code=400)  # nobody is listening
        else:
            status, reply = handle(namespace, application, request.headers.items(), body,
                                   request.query_params.get("pair"))
        return Response(reply.model_dump_json().encode(), status_code=status,
                        media_type=JSON)

    def _router(self) -> APIRouter:
        router = APIRouter(tags=["probing"])
        errors: dict[int | str, dict[str, Any]] = {
            status: {"model": ProbeError, "description": ", ".join(
                r.value for r, s in STATUS.items() if s == status)}
            for status in sorted(set(STATUS.values()))
        }
        body_doc: dict[str, Any] = {
            "requestBody": {
                "required": True,
                "description": "One CloudEvent 1.0: binary mode (ce-* headers, data as the "
                               "body) or structured mode.",
                "content": {
                    STRUCTURED_JSON: {"schema": {"type": "object"}},
                    JSON: {"schema": {}},
                },
            },
        }

        @router.post(
            "/heartbeat/{namespace}/{application}", status_code=202,
            response_model=HeartbeatAccepted, responses=errors, openapi_extra=body_doc,
            summary="Receive a heartbeat (a heartbeat Trigger's subscriber)",
        )
        async def heartbeat(request: Request, namespace: str, application: str) -> Response:
            return await self._serve(request, self.handle_heartbeat)

        @router.post(
            "/deadletter/{namespace}/{application}", status_code=202,
            response_model=DeadLetterRecorded, responses=errors, openapi_extra=body_doc,
            summary="Record a heartbeat the mesh could not deliver (dead-letter sink)",
        )
        async def dead_letter(request: Request, namespace: str, application: str) -> Response:
            return await self._serve(request, self.handle_dead_letter)

        return router


def _check_names(namespace: str, application: str) -> None:
    if len(namespace) > 63 or not _NAMESPACE.fullmatch(namespace):
        raise HeartbeatError(RejectReason.INVALID_NAME,
                             f"namespace {_echo(namespace)} is not a Kubernetes namespace name")
    if len(application) > 253 or not _APPLICATION.fullmatch(application):
        raise HeartbeatError(
            RejectReason.INVALID_NAME,
            f"application {_echo(application)} is not a Kubernetes object name")


def _printable(value: str | None, limit: int) -> str | None:
    """An unsigned value from the mesh, safe for a log line or a finding message."""
    return None if value is None else printable(value, limit)


def _error_data(value: str | None) -> str | None:
    """knativeerrordata: the failed response's body, base64 (Knative >= 0.2x) or as is."""
    if not value:
        return None
    text = value
    with contextlib.suppress(binascii.Error, ValueError):
        text = base64.b64decode(value, validate=True).decode("utf-8")
    return _printable(text, _ERROR_DATA_LIMIT)
