"""Read traces from a tracing backend: Jaeger's query API or Zipkin's v2 API.

Both answer with the spans of one trace, normalised to
:class:`eventmesh_health.analysis.trace.Span`; finding a trace by CloudEvent id searches the
tags Knative writes it to where a release writes it at all (``messaging.message_id`` in
v0.15-1.18, ``cloudevents.id`` on v0.14's dispatcher span; OpenCensus releases before and
OpenTelemetry releases from 1.19 record no event id: TRACING.md, and
knative.dev/eventing@v0.48.0 ``pkg/observability/newcontext.go`` ``WithEventLabels``).

Every failure is a :class:`TraceBackendError` with a one-line message: the backend cannot be
reached, answers an HTTP error, answers something that is not the API's JSON, or more than
:data:`MAX_RESPONSE_BYTES`. A missing trace is :class:`TraceNotFound`.
"""

from __future__ import annotations

import base64
import http.client
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any, Literal

from eventmesh_health.analysis.trace import Span

__all__ = [
    "BACKENDS",
    "EVENT_ID_TAGS",
    "MAX_RESPONSE_BYTES",
    "TraceBackend",
    "TraceBackendError",
    "TraceNotFound",
    "normalise_trace_id",
    "parse_jaeger",
    "parse_zipkin",
]

Backend = Literal["jaeger", "zipkin"]
BACKENDS: tuple[Backend, ...] = ("jaeger", "zipkin")
# A trace of a few hundred spans is well under 1 MiB; anything near this is not one event.
MAX_RESPONSE_BYTES = 32 * 1024 * 1024
MAX_SPANS = 100_000
EVENT_ID_TAGS = ("messaging.message_id", "cloudevents.id")
SEARCH_LOOKBACK_S = 7 * 24 * 3600
_TRACE_ID = re.compile(r"^[0-9a-f]{16}([0-9a-f]{16})?$")


class TraceBackendError(Exception):
    """The backend could not be asked or answered unusably (one line)."""


class TraceNotFound(TraceBackendError):
    """The backend has no such trace (or no trace with that event id)."""


def normalise_trace_id(value: str) -> str:
    """A W3C/Zipkin trace id (16 or 32 hex digits), lowercased; a traceparent is accepted too."""
    text = value.strip().lower()
    parts = text.split("-")
    if len(parts) == 4 and len(parts[1]) == 32:  # 00-<trace>-<span>-<flags>
        text = parts[1]
    if not _TRACE_ID.match(text) or set(text) == {"0"}:
        raise ValueError(f"{value[:60]!r} is not a trace id (16 or 32 hex digits, not all zero)")
    return text


def _str(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else json.dumps(value)


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TraceBackendError(f"malformed span: {what} is {type(value).__name__}, not a number")
    return int(value)


def _error_of(tags: dict[str, str]) -> tuple[bool, str]:
    status = tags.get("otel.status_code", "").upper()
    description = tags.get("otel.status_description", "")
    oc = tags.get("opencensus.status_description", "")
    if status == "ERROR":
        # Jaeger turns a Zipkin span's "error" tag into otel.status_code and keeps the
        # OpenCensus description as it was.
        return True, description or (oc if oc.upper() != "OK" else "") or tags.get(
            "error.message", "") or "error"
    # OpenCensus' Zipkin exporter: "error" = the canonical code (UNAVAILABLE, UNKNOWN, ...),
    # the description = the message (contrib.go.opencensus.io/exporter/zipkin v0.1.1 zipkin.go).
    error = tags.get("error", "")
    if error and error.lower() != "false":
        return True, oc or tags.get("error.message", "") or (
            error if error.lower() != "true" else "error")
    if oc and oc.upper() != "OK":
        return True, oc
    return False, ""


def parse_jaeger(body: Any) -> list[Span]:
    """The spans of Jaeger's ``/api/traces/{id}`` or ``/api/traces?...`` answer."""
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        raise TraceBackendError("not a Jaeger query API answer (no 'data' list)")
    spans: list[Span] = []
    for trace in body["data"]:
        if not isinstance(trace, dict):
            raise TraceBackendError("malformed Jaeger answer: a trace is not an object")
        processes = trace.get("processes") or {}
        if not isinstance(processes, dict) or not isinstance(trace.get("spans"), list):
            raise TraceBackendError("malformed Jaeger answer: no spans list or processes map")
        for raw in trace["spans"]:
            if not isinstance(raw, dict):
                raise TraceBackendError("malformed Jaeger answer: a span is not an object")
            try:
                tags = {str(t["key"]): _str(t.get("value")) for t in raw.get("tags") or []}
                parent = next((r["spanID"] for r in raw.get("references") or []
                               if r.get("refType") == "CHILD_OF"), None)
                process = processes.get(raw.get("processID"), {})
                service = str(process.get("serviceName", "")) if isinstance(process, dict) else ""
                error, message = _error_of(tags)
                spans.append(Span(
                    trace_id=str(raw["traceID"]).lower(), span_id=str(raw["spanID"]),
                    parent_id=str(parent) if parent else None, service=service,
                    name=str(raw.get("operationName", "")),
                    kind=tags.get("span.kind", "").lower(),
                    start_us=_int(raw.get("startTime"), "startTime"),
                    duration_us=_int(raw.get("duration", 0), "duration"),
                    tags=tags, error=error, error_message=message))
            except (KeyError, TypeError, AttributeError) as err:
                raise TraceBackendError(f"malformed Jaeger span: {type(err).__name__}: "
                                        f"{str(err)[:80]}") from None
            if len(spans) > MAX_SPANS:
                raise TraceBackendError(f"more than {MAX_SPANS} spans: not one event's trace")
    return spans


def parse_zipkin(body: Any) -> list[Span]:
    """The spans of Zipkin's ``/api/v2/trace/{id}`` (a list of spans) or ``/api/v2/traces``
    (a list of such lists) answer."""
    if not isinstance(body, list):
        raise TraceBackendError("not a Zipkin v2 answer (not a JSON list)")
    flat: list[Any] = []
    for item in body:
        flat.extend(item if isinstance(item, list) else [item])
    if len(flat) > MAX_SPANS:
        raise TraceBackendError(f"more than {MAX_SPANS} spans: not one event's trace")
    spans: list[Span] = []
    for raw in flat:
        if not isinstance(raw, dict):
            raise TraceBackendError("malformed Zipkin answer: a span is not an object")
        try:
            tags = {str(k): _str(v) for k, v in (raw.get("tags") or {}).items()}
            endpoint = raw.get("localEndpoint") or {}
            error, message = _error_of(tags)
            spans.append(Span(
                trace_id=str(raw["traceId"]).lower(), span_id=str(raw["id"]),
                parent_id=str(raw["parentId"]) if raw.get("parentId") else None,
                service=str(endpoint.get("serviceName", "")),
                name=str(raw.get("name", "")), kind=str(raw.get("kind", "")).lower(),
                start_us=_int(raw.get("timestamp"), "timestamp"),
                duration_us=_int(raw.get("duration", 0), "duration"),
                tags=tags, error=error, error_message=message))
        except (KeyError, TypeError, AttributeError) as err:
            raise TraceBackendError(f"malformed Zipkin span: {type(err).__name__}: "
                                    f"{str(err)[:80]}") from None
    return spans


@dataclass
class TraceBackend:
    """A Jaeger query API (``http://jaeger-query:16686``) or a Zipkin server
    (``http://zipkin:9411``)."""

    kind: Backend
    url: str
    timeout: float = 10.0
    max_bytes: int = MAX_RESPONSE_BYTES

    def __post_init__(self) -> None:
        try:
            parts = urllib.parse.urlsplit(self.url)
            parts.port  # noqa: B018 - raises ValueError for a port out of range
        except ValueError:
            parts = urllib.parse.urlsplit("")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{_redacted(self.url)[:80]!r} is not an http(s) URL")
        # Credentials in the URL become a Basic header and never appear in a message.
        self._auth: str | None = None
        if parts.username is not None:
            user = urllib.parse.unquote(parts.username)
            password = urllib.parse.unquote(parts.password or "")
            self._auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
            parts = parts._replace(netloc=parts.netloc.rpartition("@")[2])
        self.url = urllib.parse.urlunsplit(parts).rstrip("/")

    def _get(self, path: str, params: dict[str, str] | None = None) -> Any:
        url = self.url + path + ("?" + urllib.parse.urlencode(params) if params else "")
        status, data = self._http(url)
        if status == 404:
            raise TraceNotFound(f"{self.kind} at {self.url} has no such trace (HTTP 404)")
        if status != 200:
            snippet = data[:120].decode("utf-8", "replace").strip().replace("\n", " ")
            raise TraceBackendError(f"{self.kind} at {self.url} answered HTTP {status}"
                                    + (f": {snippet}" if snippet else ""))
        try:
            return json.loads(data)
        except (ValueError, RecursionError):
            raise TraceBackendError(f"{self.kind} at {self.url} answered something that is not "
                                    f"JSON ({len(data)} bytes)") from None

    def _http(self, url: str) -> tuple[int, bytes]:
        # No proxy from the environment: the backend is named explicitly, like a kubeconfig's
        # server; a proxy variable meant for the internet should not capture it.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        if self._auth is not None:
            request.add_header("Authorization", self._auth)
        try:
            with opener.open(request, timeout=self.timeout) as resp:
                return resp.status, _read_capped(resp, self.url, self.max_bytes)
        except urllib.error.HTTPError as err:
            with err:
                return err.code, err.read(4096)
        except (TimeoutError, urllib.error.URLError, OSError, http.client.HTTPException,
                ValueError) as err:
            reason = getattr(err, "reason", err)
            raise TraceBackendError(f"cannot reach {self.kind} at {self.url}: {reason}") from None

    def trace(self, trace_id: str) -> list[Span]:
        """The spans of one trace; TraceNotFound when the backend has none."""
        trace_id = normalise_trace_id(trace_id)
        if self.kind == "jaeger":
            spans = parse_jaeger(self._get(f"/api/traces/{trace_id}"))
        else:
            spans = parse_zipkin(self._get(f"/api/v2/trace/{trace_id}"))
        if not spans:
            raise TraceNotFound(f"{self.kind} at {self.url} has no spans of trace {trace_id}")
        return spans

    def find_by_event_id(self, event_id: str, now_s: float | None = None) -> list[str]:
        """Ids of the traces with a span tagged with this CloudEvent id (newest first)."""
        end = now_s if now_s is not None else time.time()
        found: list[str] = []
        for tag in EVENT_ID_TAGS:
            if self.kind == "zipkin":
                body = self._get("/api/v2/traces", {
                    "annotationQuery": f"{tag}={event_id}", "endTs": str(int(end * 1000)),
                    "lookback": str(SEARCH_LOOKBACK_S * 1000), "limit": "10"})
                spans = parse_zipkin(body)
            else:
                spans = []
                # Jaeger's legacy search needs a service; ask for the ones Knative uses.
                for service in self._jaeger_services():
                    body = self._get("/api/traces", {
                        "service": service, "tags": json.dumps({tag: event_id}),
                        "start": str(int((end - SEARCH_LOOKBACK_S) * 1e6)),
                        "end": str(int(end * 1e6)), "limit": "10"})
                    spans.extend(parse_jaeger(body))
            for span in sorted(spans, key=lambda s: -s.start_us):
                if span.tags.get(tag) == event_id and span.trace_id not in found:
                    found.append(span.trace_id)
        return found

    def _jaeger_services(self) -> list[str]:
        body = self._get("/api/services")
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list):
            raise TraceBackendError(f"jaeger at {self.url}: /api/services is not a list")
        return [s for s in data if isinstance(s, str)][:200]


def _redacted(url: str) -> str:
    """`url` without the password of its userinfo, for messages."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.partition("@")
    if not at or "/" in userinfo:
        return url
    return f"{scheme}{sep}{userinfo.partition(':')[0]}:***@{host}"


def _read_capped(resp: Any, base: str, limit: int) -> bytes:
    data: bytes = resp.read(limit + 1)
    if len(data) > limit:
        raise TraceBackendError(f"{base} answered more than {limit} bytes: not one event's "
                                "trace")
    return data
