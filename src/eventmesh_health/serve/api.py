"""The read-only REST API of `serve`: the current report, the probes and the metrics.

| endpoint | answer |
|---|---|
| `GET /api/v1/health` | the whole report, exactly as `check -o json` prints it |
| `GET /api/v1/applications` | `{"applications": [ApplicationReport, ...]}` |
| `GET /api/v1/applications/{name}` | one ApplicationReport plus `lastTransitionTime` |
| `GET /api/v1/applications/{name}/namespaces/{namespace}` | one NamespaceReport |
| `GET /api/v1/flows` | `{"flows": [FlowReport, ...]}` |
| `GET /api/v1/flows/{namespace}/{kind}/{name}` | one FlowReport |
| `GET /api/v1/applications/{name}/tree` | the chain as `explain NAME -o json` has it |
| `GET /api/v1/flows/{namespace}/{kind}/{name}/tree` | the flow's chain (`explain`) |
| `GET /api/v1/applications/{name}/history` | its transitions, oldest first |
| `GET /api/v1/flows/{namespace}/{kind}/{name}/history` | the flow's transitions |
| `GET /api/v1/summary?q=&health=&page=&flowPage=&pageSize=` | the web page's grid (ETag) |
| `GET /`, `/applications/{name}`, `/flows/...`, `/static/...` | the web page (`serve.web`) |
| `GET /healthz` | `ok` while the process runs |
| `GET /readyz` | `ok`, or 503 and why not (`HealthState.ready()`) |
| `GET /metrics` | Prometheus text exposition of the `Metrics` registry |
| `GET /openapi.json` | the OpenAPI document (the schemas are the report models') |

Every endpoint answers GET and HEAD only (other methods: 405 with `Allow: GET, HEAD`) and
takes no request body (a GET with one: 400). Errors are JSON, `{"error": code, "detail":
text}`: 404 `NotFound` (unknown path, application or namespace, named in `detail`), 422
`InvalidName` (a path parameter that is not a Kubernetes name), 503 `NotReady` (no report
yet: the caches have not synced; with `Retry-After`), 405 `MethodNotAllowed`, 400
`BodyNotAccepted`, 500 `InternalError` (never a traceback). `/docs` and `/redoc` are off:
they load their assets from a CDN.

The app runs in the event loop of the rest of `serve` (it only reads `HealthState`,
which the orchestrator replaces field by field in the same loop)::

    app = create_app(state, metrics)
    server = embedded_server(app, host="0.0.0.0", port=8080, log_level="info")
    task = asyncio.create_task(server.serve())
    ...
    server.should_exit = True      # graceful stop: finish open requests, close the socket
    await task

`embedded_server` is `uvicorn.Server(uvicorn.Config(app, host=..., port=...,
log_level=..., lifespan="off"))` except that it leaves SIGINT/SIGTERM to the caller:
plain `uvicorn.Server.serve()` installs its own handlers while it runs and re-raises the
signal when it stops. Either way, a port that cannot be bound makes `serve()` raise
`SystemExit(1)` (uvicorn's behaviour) after logging why.

The JSON of one report is rendered once, when first asked for, and reused until the
orchestrator puts a new `MeshReport` object into the state (it replaces the report; it
never mutates the one the API may be serving).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any

import uvicorn
from fastapi import APIRouter, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from eventmesh_health.model import ApplicationReport, FlowReport, MeshReport, NamespaceReport
from eventmesh_health.serve.history import flow_key
from eventmesh_health.serve.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from eventmesh_health.serve.metrics import Metrics
from eventmesh_health.serve.state import HealthState
from eventmesh_health.serve.views import (
    MAX_PAGE_SIZE,
    PAGE_SIZE,
    ApplicationTree,
    FlowTree,
    HistoryList,
    Summary,
    SummaryIndex,
    history_json,
)

__all__ = [
    "ALLOWED_METHODS",
    "DNS1123_LABEL",
    "DNS1123_SUBDOMAIN",
    "ApplicationDetail",
    "ApplicationList",
    "ErrorBody",
    "FlowList",
    "create_app",
    "embedded_server",
]

# An Application is named like any cluster-scoped object (DNS-1123 subdomain, at most
# 253 characters); a namespace is a DNS-1123 label (at most 63).
DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
ALLOWED_METHODS = "GET, HEAD"
JSON = "application/json"
_ECHO_LIMIT = 80  # how much of a rejected name or path an error message repeats


class ErrorBody(BaseModel):
    """Every error answer of the API."""

    error: str = Field(
        description="What went wrong, as a code: NotFound, InvalidName, NotReady, "
        "MethodNotAllowed, BodyNotAccepted, InternalError.",
        examples=["NotFound"],
    )
    detail: str = Field(
        description="For a person: which name was not found, why a name is invalid, ...",
        examples=['no application "commerce-mock"'],
    )


class ApplicationList(BaseModel):
    applications: list[ApplicationReport]


class FlowList(BaseModel):
    flows: list[FlowReport]


class ApplicationDetail(ApplicationReport):
    """One application's report (as in `check -o json`) and when its health last changed."""

    model_config = ConfigDict(populate_by_name=True)

    last_transition_time: datetime | None = Field(
        default=None,
        alias="lastTransitionTime",
        description="When the application's health last changed (first seen counts); "
        "null when not recorded.",
    )


class ApiError(Exception):
    """An error answer raised by a handler (rendered as `ErrorBody`)."""

    def __init__(
        self, status: int, error: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = headers


def _error(
    status: int, error: str, detail: str, headers: Mapping[str, str] | None = None
) -> Response:
    body = ErrorBody(error=error, detail=detail).model_dump_json().encode()
    return Response(body, status_code=status, media_type=JSON, headers=headers)


def _echo(text: object) -> str:
    """A rejected name or path, quoted and cut short, safe to put into a message."""
    value = str(text)
    if len(value) > _ECHO_LIMIT:
        value = value[:_ECHO_LIMIT] + "..."
    return '"' + value.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'


class _Rendered:
    """The JSON of one report, rendered on first use, and an index of its applications."""

    def __init__(self, report: MeshReport, state: HealthState | None = None) -> None:
        self.report = report
        self._state = state
        self._summary: SummaryIndex | None = None
        self._mesh: bytes | None = None
        self._applications: bytes | None = None
        self.apps = {app.name: app for app in report.applications}
        self.flows = {(f.namespace, f.kind, f.name): f for f in report.flows}

    def mesh(self) -> bytes:
        if self._mesh is None:
            self._mesh = self.report.model_dump_json(by_alias=True).encode()
        return self._mesh

    def summary(self) -> SummaryIndex:
        if self._summary is None:
            state = self._state or HealthState()
            self._summary = SummaryIndex(self.report, state.history, state.transitions)
        return self._summary

    def applications(self) -> bytes:
        if self._applications is None:
            listing = ApplicationList(applications=self.report.applications)
            self._applications = listing.model_dump_json(by_alias=True).encode()
        return self._applications


_ERRORS_NOT_READY: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorBody,
          "description": "No report yet: the caches have not synced, or the first analysis "
                         "has not run."},
}
_ERRORS_LOOKUP: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "No such application or namespace."},
    422: {"model": ErrorBody, "description": "A name that is not a Kubernetes name."},
    **_ERRORS_NOT_READY,
}

AppName = Annotated[str, Path(
    min_length=1, max_length=253, pattern=DNS1123_SUBDOMAIN,
    description="The Application's name (DNS-1123 subdomain).",
)]
KindName = Annotated[str, Path(
    min_length=1, max_length=63, pattern=r"^[A-Z][A-Za-z0-9]*$",
    description="The flow root's kind (Broker, Channel, PingSource, ...).",
)]
NamespaceName = Annotated[str, Path(
    min_length=1, max_length=63, pattern=DNS1123_LABEL,
    description="The namespace's name (DNS-1123 label).",
)]
HEALTH_FILTER = r"^(Healthy|Progressing|Unknown|Degraded|Unhealthy|problem)?$"
FilterText = Annotated[str, Query(
    max_length=253, description="Only names (or namespaces) containing this text.")]
HealthFilter = Annotated[str, Query(
    pattern=HEALTH_FILTER, description="Only this health; `problem`: all but Healthy.")]
PageNumber = Annotated[int, Query(ge=1, le=1_000_000, description="1 is the first page.")]
PageSize = Annotated[int, Query(alias="pageSize", ge=1, le=MAX_PAGE_SIZE)]
FlowPageNumber = Annotated[int, Query(alias="flowPage", ge=1, le=1_000_000)]
_ERRORS_TREE: dict[int | str, dict[str, Any]] = {
    **_ERRORS_LOOKUP,
    503: {"model": ErrorBody, "description": "No report yet, or no chain for it yet."},
}


def etag_response(request: Request, body: bytes, media_type: str = JSON,
                  headers: Mapping[str, str] | None = None) -> Response:
    """`body` with a strong ETag; 304 without it when the client already has it."""
    tag = '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'
    wanted = request.headers.get("if-none-match", "")
    all_headers = {"ETag": tag, "Cache-Control": "no-cache", **(headers or {})}
    if tag in [t.strip() for t in wanted.split(",")]:
        return Response(status_code=304, headers=all_headers)
    return Response(body, media_type=media_type, headers=all_headers)


def create_app(
    state: HealthState, metrics: Metrics, routers: Sequence[APIRouter] = (),
    *, api: bool = True,
) -> FastAPI:
    """The API over `state` and `metrics`; see the module docstring for how to serve it.

    `routers` are mounted as they are (e.g. the heartbeat receiver's POST endpoints of
    `probing.receiver`); a wrong method on one of their paths gets 405 with the `Allow`
    of that path. Without `api`, only the routers and the probes (`/healthz`, `/readyz`)
    are served: the heartbeat receiver on a port of its own, which a NetworkPolicy can open
    to the mesh alone.
    """
    app = FastAPI(
        title="eventmesh-health",
        summary="Health of a Kyma / Knative event mesh: what is broken, and where.",
        version=_version(),
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json" if api else None,
        # No 307 from `/x/` to `/x`: its Location would echo the Host header back.
        redirect_slashes=False,
    )
    if api:
        current = _mount_api(app, state, metrics)
        from eventmesh_health.serve.web import mount_web

        mount_web(app, state, current)

    @app.get(
        "/healthz", response_class=PlainTextResponse, tags=["probes"],
        summary="Liveness: the process serves requests",
        responses={200: {"content": {"text/plain": {"example": "ok"}}}},
    )
    async def healthz() -> PlainTextResponse:
        return PlainTextResponse("ok")

    @app.get(
        "/readyz", response_class=PlainTextResponse, tags=["probes"],
        summary="Readiness: caches synced and leader election running",
        responses={
            200: {"content": {"text/plain": {"example": "ok"}}},
            503: {"description": "Not ready; the body says why.",
                  "content": {"text/plain": {"example": "caches not yet synced"}}},
        },
    )
    async def readyz() -> PlainTextResponse:
        ready, why = state.ready()
        return PlainTextResponse(why, status_code=200 if ready else 503)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> Response:
        return _error(exc.status, exc.error, exc.detail, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 405:
            allow = _allowed(request)
            what = ("this API is read-only" if allow == ALLOWED_METHODS
                    else "this endpoint only takes")
            return _error(
                405, "MethodNotAllowed",
                f"{_echo(request.method)} is not allowed: {what} ({allow})",
                {"Allow": allow},
            )
        if exc.status_code == 404:
            return _error(404, "NotFound", f"no such endpoint: {_echo(request.url.path)}")
        return _error(exc.status_code, _CODES.get(exc.status_code, "Error"), str(exc.detail),
                      exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        return _error(422, "InvalidName", "; ".join(_validation_messages(exc)))

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> Response:
        return _error(500, "InternalError", "internal error; see the checker's log")

    for router in routers:
        app.include_router(router)
    app.add_middleware(_ReadOnly)
    return app


def _allowed(request: Request) -> str:
    """The methods the routes matching the request's path accept (`Allow` of a 405)."""
    methods = _route_methods(request.app.router.routes, {**request.scope, "method": "GET"})
    if not methods or methods & {"GET", "HEAD"}:
        return ALLOWED_METHODS
    return ", ".join(sorted(methods))


def _route_methods(routes: Sequence[Any], scope: Scope) -> set[str]:
    methods: set[str] = set()
    for route in routes:
        match, _ = route.matches(scope)
        if match is Match.NONE:
            continue
        if isinstance(route, APIRoute):
            methods |= set(route.methods or ())
            continue
        # An included router (FastAPI >= 0.16x keeps it as one route): its own routes.
        inner = getattr(getattr(route, "original_router", None), "routes", None)
        if inner is None:
            inner = getattr(route, "routes", None)
        if inner is not None:
            methods |= _route_methods(inner, scope)
    return methods


_CODES = {400: "BadRequest", 404: "NotFound", 405: "MethodNotAllowed", 503: "NotReady"}


def _validation_messages(exc: RequestValidationError) -> Iterator[str]:
    for err in exc.errors():
        loc = err.get("loc", ())
        what = {"name": "application name", "namespace": "namespace name"}.get(
            str(loc[-1]) if loc else "", "parameter"
        )
        value = err.get("input")
        if err.get("type") == "string_too_long":
            limit = (err.get("ctx") or {}).get("max_length")
            yield f"{what} is longer than {limit} characters"
        elif err.get("type") == "string_pattern_mismatch":
            kind = "DNS-1123 label" if what == "namespace name" else "DNS-1123 subdomain"
            yield (f"{what} {_echo(value)} is not a Kubernetes name ({kind}: lowercase "
                   "letters, digits and '-', starting and ending with a letter or digit"
                   + (", '.' between parts)" if kind.endswith("subdomain") else ")"))
        else:
            yield f"{what} {_echo(value)}: {err.get('msg', 'invalid')}"


class _ReadOnly:
    """HEAD is answered as GET without the body; a GET or HEAD with a body is refused.

    Other methods go on to the router, which answers 405 (or 404 for an unknown path).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        if _has_body(scope):
            response = _error(400, "BodyNotAccepted", "this API accepts no request body")
            await response(scope, receive, send)
            return
        if scope["method"] == "GET":
            await self.app(scope, receive, send)
            return

        async def send_headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, send_headers_only)


def _has_body(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"transfer-encoding":
            return True
        if name == b"content-length" and value.strip() not in (b"0", b""):
            return True
    return False


def _version() -> str:
    with contextlib.suppress(Exception):
        from importlib.metadata import version

        return version("eventmesh-health")
    return "0"


class _SignalsLeftToCaller(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


# Every request must be read and answered within this; a client that sends its request
# slowly (or never finishes it) is cut off, so half-sent requests cannot pile up until the
# process runs out of file descriptors (uvicorn has no header or body read timeout).
REQUEST_DEADLINE = 10.0
# Connections served at once; beyond it uvicorn answers 503 instead of queueing.
MAX_CONNECTIONS = 100
MAX_HEADER_BYTES = 16 * 1024  # an incomplete request head larger than this is refused


class _DeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with `REQUEST_DEADLINE` (per class: `deadline`) from the
    connection's start, or the end of its previous response, to the end of the next one."""

    deadline = REQUEST_DEADLINE

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadline_timer: asyncio.TimerHandle | None = None
        self._arm()

    def _arm(self) -> None:
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
        self._deadline_timer = self.loop.call_later(self.deadline, self._expired)

    def _expired(self) -> None:
        self._deadline_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # the next request on this kept-alive connection gets its own

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
            self._deadline_timer = None
        super().connection_lost(exc)


def embedded_server(
    app: FastAPI, *, host: str, port: int, log_level: str = "info",
    request_deadline: float = REQUEST_DEADLINE, **config: Any,
) -> uvicorn.Server:
    """A uvicorn server for `app` to run with `await server.serve()` in the caller's loop.

    Stop it with `server.should_exit = True`. Unlike a plain `uvicorn.Server` it installs
    no signal handlers: the caller owns SIGINT/SIGTERM. `config` goes to `uvicorn.Config`.
    Limits: each request is read and answered within `request_deadline` seconds, at most
    `MAX_CONNECTIONS` at once, request heads of at most `MAX_HEADER_BYTES`.
    """
    config.setdefault("lifespan", "off")
    config.setdefault("limit_concurrency", MAX_CONNECTIONS)
    config.setdefault("h11_max_incomplete_event_size", MAX_HEADER_BYTES)
    config.setdefault("timeout_keep_alive", 5)
    protocol = type("DeadlineH11Protocol", (_DeadlineH11Protocol,),
                    {"deadline": request_deadline})
    return _SignalsLeftToCaller(
        uvicorn.Config(app, host=host, port=port, log_level=log_level, http=protocol, **config)
    )


def _mount_api(app: FastAPI, state: HealthState, metrics: Metrics) -> Any:
    """The read-only REST API and /metrics; returns `current()`, the rendered report."""
    rendered: list[_Rendered] = []  # at most one: that of the report in `state`

    def current() -> _Rendered:
        report = state.report
        if report is None:
            why = "caches not yet synced" if not state.caches_synced else (
                "first analysis not yet done")
            raise ApiError(503, "NotReady", f"no report yet: {why}", {"Retry-After": "5"})
        if not rendered or rendered[0].report is not report:
            rendered[:] = [_Rendered(report, state)]
        return rendered[0]

    def application(name: str) -> tuple[_Rendered, ApplicationReport]:
        view = current()
        app_report = view.apps.get(name)
        if app_report is None:
            raise ApiError(404, "NotFound", f"no application {_echo(name)}")
        return view, app_report

    @app.get(
        "/api/v1/health", response_model=MeshReport, responses=_ERRORS_NOT_READY,
        tags=["health"], summary="The whole mesh (as `check -o json`)",
    )
    async def mesh() -> Response:
        return Response(current().mesh(), media_type=JSON)

    @app.get(
        "/api/v1/applications", response_model=ApplicationList, responses=_ERRORS_NOT_READY,
        tags=["health"], summary="Every application, with its namespaces",
    )
    async def applications() -> Response:
        return Response(current().applications(), media_type=JSON)

    @app.get(
        "/api/v1/applications/{name}", response_model=ApplicationDetail,
        responses=_ERRORS_LOOKUP, tags=["health"],
        summary="One application, and when its health last changed",
    )
    async def one_application(name: AppName) -> Response:
        _, found = application(name)
        detail = ApplicationDetail(
            name=found.name, health=found.health, state=found.state,
            findings=found.findings, namespaces=found.namespaces,
            last_transition_time=state.transitions.get(name),
        )
        return Response(detail.model_dump_json(by_alias=True).encode(), media_type=JSON)

    @app.get(
        "/api/v1/applications/{name}/namespaces/{namespace}", response_model=NamespaceReport,
        responses=_ERRORS_LOOKUP, tags=["health"],
        summary="One namespace that receives the application's events",
    )
    async def one_namespace(name: AppName, namespace: NamespaceName) -> Response:
        _, found = application(name)
        for ns in found.namespaces:
            if ns.name == namespace:
                return Response(ns.model_dump_json(by_alias=True).encode(), media_type=JSON)
        raise ApiError(
            404, "NotFound",
            f"application {_echo(name)} has no namespace {_echo(namespace)}",
        )

    @app.get(
        "/api/v1/flows", response_model=FlowList, responses=_ERRORS_NOT_READY,
        tags=["health"], summary="Every flow (Broker, Channel, source) with its findings",
    )
    async def flows() -> Response:
        listing = FlowList(flows=current().report.flows)
        return Response(listing.model_dump_json(by_alias=True).encode(), media_type=JSON)

    @app.get(
        "/api/v1/flows/{namespace}/{kind}/{name}", response_model=FlowReport,
        responses=_ERRORS_LOOKUP, tags=["health"], summary="One flow",
    )
    async def one_flow(namespace: NamespaceName, kind: KindName, name: AppName) -> Response:
        found = flow(namespace, kind, name)
        return Response(found.model_dump_json(by_alias=True).encode(), media_type=JSON)

    def flow(namespace: str, kind: str, name: str) -> FlowReport:
        found = current().flows.get((namespace, kind, name))
        if found is None:
            raise ApiError(404, "NotFound", f"no flow {_echo(kind)} {_echo(namespace)}/"
                           f"{_echo(name)}")
        return found

    def json_bytes(data: Any) -> bytes:
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()

    @app.get(
        "/api/v1/applications/{name}/tree", response_model=ApplicationTree,
        responses=_ERRORS_TREE, tags=["health"],
        summary="The application's chain as a tree (as `explain NAME -o json`)",
    )
    async def application_tree(name: AppName) -> Response:
        _, found = application(name)
        tree = state.explain(found) if state.explain is not None else None
        if tree is None:
            raise ApiError(503, "NotReady", f"no chain of {_echo(name)} yet",
                           {"Retry-After": "5"})
        return Response(json_bytes(tree), media_type=JSON)

    @app.get(
        "/api/v1/applications/{name}/history", response_model=HistoryList,
        responses=_ERRORS_LOOKUP, tags=["health"],
        summary="When the application's health or root cause changed, oldest first",
    )
    async def application_history(name: AppName) -> Response:
        application(name)
        return Response(json_bytes(history_json(state.history.of(name))), media_type=JSON)

    @app.get(
        "/api/v1/flows/{namespace}/{kind}/{name}/tree", response_model=FlowTree,
        responses=_ERRORS_TREE, tags=["health"],
        summary="The flow's chain as a tree (as `explain NAMESPACE/NAME -o json`)",
    )
    async def flow_tree(namespace: NamespaceName, kind: KindName, name: AppName) -> Response:
        found = flow(namespace, kind, name)
        tree = state.explain_flow(found) if state.explain_flow is not None else None
        if tree is None:
            raise ApiError(503, "NotReady", f"no chain of {_echo(kind)} {_echo(namespace)}/"
                           f"{_echo(name)} yet", {"Retry-After": "5"})
        return Response(json_bytes(tree), media_type=JSON)

    @app.get(
        "/api/v1/flows/{namespace}/{kind}/{name}/history", response_model=HistoryList,
        responses=_ERRORS_LOOKUP, tags=["health"],
        summary="When the flow's health or root cause changed, oldest first",
    )
    async def flow_history(namespace: NamespaceName, kind: KindName, name: AppName
                           ) -> Response:
        flow(namespace, kind, name)
        entries = state.history.of(flow_key(namespace, kind, name))
        return Response(json_bytes(history_json(entries)), media_type=JSON)

    @app.get(
        "/api/v1/summary", response_model=Summary, responses={
            **_ERRORS_NOT_READY, 304: {"description": "Unchanged since the ETag given."},
            422: {"model": ErrorBody, "description": "A parameter out of range."}},
        tags=["health"],
        summary="The mesh at a glance: one page of applications and one of flows, worst "
                "first, filtered by name and health (the web page's grid)",
    )
    async def summary(
        request: Request, q: FilterText = "", health: HealthFilter = "",
        page: PageNumber = 1, flow_page: FlowPageNumber = 1, page_size: PageSize = PAGE_SIZE,
    ) -> Response:
        data = current().summary().summary(
            q=q, health=health, page=page, flow_page=flow_page, page_size=page_size,
            degraded_reason=state.degraded_reason)
        return etag_response(request, json_bytes(data))

    @app.get(
        "/metrics", response_class=PlainTextResponse, tags=["probes"],
        summary="Prometheus metrics (text exposition format 0.0.4)",
        responses={200: {"content": {"text/plain": {}}}},
    )
    def prometheus() -> Response:
        # A plain `def`: FastAPI runs it in a worker thread, so rendering a big mesh's
        # series after a new report (0.2 s CPU for 10 000 applications) does not stall
        # the event loop. `Metrics` is safe to read from another thread.
        return Response(metrics.exposition(), media_type=METRICS_CONTENT_TYPE)

    return current
