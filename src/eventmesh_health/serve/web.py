"""The web page of `serve`: the mesh at a glance, on the API's port, read-only.

- `GET /`: the grid: the system components, applications x their namespaces, and flows,
  coloured by health (with a mark and the word: colour is never the only signal), state,
  root cause, time since the last transition; filter by name and health; pages of
  `PAGE_SIZE`, worst first;
- `GET /applications/{name}`, `GET /flows/{namespace}/{kind}/{name}`: the chain as a tree
  (`explain`), the root cause highlighted, its symptoms dimmed and linked to it, every
  link's conditions, heartbeat findings, and the history;
- `GET /static/{app.js,style.css,icon.svg}`: the page's own script, style and icon
  (committed, no build step).

Server-rendered with Jinja2 from the very objects the REST API answers with
(`SummaryIndex.summary`, the `/tree` and `/history` JSON): the page shows nothing the API
does not. Without JavaScript it is complete (the filter is a GET form, pages are links); with
it, `static/app.js` polls `/api/v1/summary` (with `If-None-Match`: 304 while nothing
changed) and patches the grid in place, and on an application or flow page fetches the page
again (also by ETag) and swaps its content, so a change shows within about a second without a
reload. Every HTML answer carries a Content-Security-Policy with no `unsafe-inline` and no
other origin: the pages have no inline script or style at all.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from jinja2 import Environment, PackageLoader, select_autoescape

from eventmesh_health.serve.api import ApiError, etag_response
from eventmesh_health.serve.history import flow_key
from eventmesh_health.serve.state import HealthState
from eventmesh_health.serve.views import HEALTH_ORDER, PAGE_SIZE

__all__ = ["CSP", "MARK", "mount_web"]

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
# The mark beside each health word (the same as `check`'s table).
MARK = {"Healthy": "✓", "Progressing": "…", "Unknown": "?", "Degraded": "!",
        "Unhealthy": "✗"}
_STATIC = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8",
           "icon.svg": "image/svg+xml"}
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_KIND = re.compile(r"^[A-Z][A-Za-z0-9]*$")


def since(value: str | None, now: datetime | None = None) -> str:
    """'3m ago' for an RFC 3339 time; '' for none."""
    if not value:
        return ""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return ""
    seconds = int(((now or datetime.now(UTC)) - moment).total_seconds())
    if seconds < 60:
        return f"{max(seconds, 0)}s ago"
    if seconds < 3600:
        return f"{seconds // 60}m ago"
    if seconds < 86400:
        return f"{seconds // 3600}h {seconds % 3600 // 60}m ago"
    return f"{seconds // 86400}d {seconds % 86400 // 3600}h ago"


def _ref_text(ref: dict[str, Any] | None) -> str:
    if not ref:
        return ""
    where = f"{ref['namespace']}/" if ref.get("namespace") else ""
    return f"{ref.get('kind', '')} {where}{ref.get('name') or '<unnamed>'}"


def _anchor(ref: dict[str, Any]) -> str:
    text = f"{ref.get('kind', '')}-{ref.get('namespace') or ''}-{ref.get('name') or ''}"
    return "rc-" + re.sub(r"[^A-Za-z0-9-]", "-", text).lower()


def _annotate(tree: dict[str, Any]) -> None:
    """Give the first occurrence of each root cause an anchor, and each symptom the anchor
    of its cause when the page shows it."""
    links: list[dict[str, Any]] = []

    def walk(nodes: list[dict[str, Any]]) -> None:
        for node in nodes:
            links.append(node)
            walk(node.get("children", []))

    walk(tree.get("links", []))
    for ns in tree.get("namespaces", []):
        walk(ns.get("links", []))
    walk(tree.get("system", []))
    anchors: dict[str, str] = {}
    for node in links:
        if node.get("rootCause"):
            anchor = _anchor(node["object"])
            if anchor not in anchors.values():
                node["anchor"] = anchor
            anchors[_ref_text(node["object"])] = anchor
    for node in links:
        cause = node.get("causedBy")
        if cause:
            node["causeText"] = _ref_text(cause)
            node["causeAnchor"] = anchors.get(node["causeText"])


def _environment() -> Environment:
    env = Environment(loader=PackageLoader("eventmesh_health.serve", "templates"),
                      autoescape=select_autoescape(default=True), trim_blocks=True,
                      lstrip_blocks=True)
    env.filters["mark"] = lambda health: MARK.get(str(health), "?")
    env.filters["since"] = since
    env.filters["ref"] = _ref_text
    return env


def mount_web(app: FastAPI, state: HealthState, current: Callable[[], Any]) -> None:
    """The pages and their static files on `app` (`current()`: the rendered report, or
    raises the API's 503)."""
    env = _environment()
    static = {name: (resources.files("eventmesh_health.serve").joinpath("static", name)
                     .read_bytes(), media) for name, media in _STATIC.items()}

    def page(request: Request, template: str, status: int = 200, **context: Any) -> Response:
        html = env.get_template(template).render(
            healths=HEALTH_ORDER, degraded=state.degraded_reason, **context).encode()
        if status != 200:
            return Response(html, status_code=status, media_type="text/html; charset=utf-8",
                            headers=SECURITY_HEADERS)
        return etag_response(request, html, "text/html; charset=utf-8", SECURITY_HEADERS)

    def report_or_page(request: Request) -> Any:
        try:
            return current()
        except ApiError as err:
            return page(request, "error.html", err.status, title="No report yet",
                        detail=err.detail, retry=True)

    def not_found(request: Request, what: str) -> Response:
        return page(request, "error.html", 404, title="Not found", detail=what, retry=False)

    @app.get("/", include_in_schema=False)
    async def grid(request: Request) -> Response:
        rendered = report_or_page(request)
        if isinstance(rendered, Response):
            return rendered
        params = request.query_params
        q = params.get("q", "")[:253]
        health = params.get("health", "")
        if health not in ("", "problem", *HEALTH_ORDER):
            health = ""
        summary = rendered.summary().summary(
            q=q, health=health, page=_int(params.get("page")),
            flow_page=_int(params.get("flowPage")), page_size=PAGE_SIZE,
            degraded_reason=state.degraded_reason)
        return page(request, "grid.html", s=summary, q=q, health=health)

    @app.get("/applications/{name}", include_in_schema=False)
    async def application_page(request: Request, name: str) -> Response:
        rendered = report_or_page(request)
        if isinstance(rendered, Response):
            return rendered
        found = rendered.apps.get(name) if _NAME.match(name) and len(name) <= 253 else None
        if found is None:
            return not_found(request, f"no application {name[:80]!r}")
        tree = state.explain(found) if state.explain is not None else None
        if tree is not None:
            _annotate(tree)
        summary = rendered.summary()
        row = next((r for _, r in summary.apps if r["name"] == name), None)
        history = [t.to_json() for t in reversed(state.history.of(name))]
        return page(request, "application.html", app=found, row=row, tree=tree,
                    history=history, api=f"/api/v1/applications/{name}")

    @app.get("/flows/{namespace}/{kind}/{name}", include_in_schema=False)
    async def flow_page(request: Request, namespace: str, kind: str, name: str) -> Response:
        rendered = report_or_page(request)
        if isinstance(rendered, Response):
            return rendered
        ok = _LABEL.match(namespace) and _KIND.match(kind) and _NAME.match(name)
        found = rendered.flows.get((namespace, kind, name)) if ok else None
        if found is None:
            return not_found(request, f"no flow {kind[:60]} {namespace[:63]}/{name[:80]}")
        tree = state.explain_flow(found) if state.explain_flow is not None else None
        if tree is not None:
            _annotate(tree)
        key = flow_key(namespace, kind, name)
        summary = rendered.summary()
        row = next((r for _, r in summary.flows if (r["namespace"], r["kind"], r["name"])
                    == (namespace, kind, name)), None)
        history = [t.to_json() for t in reversed(state.history.of(key))]
        return page(request, "flow.html", flow=found, row=row, tree=tree, history=history,
                    api=f"/api/v1/flows/{namespace}/{kind}/{name}")

    @app.get("/static/{file}", include_in_schema=False)
    async def static_file(request: Request, file: str) -> Response:
        if file not in static:
            return not_found(request, "no such file")
        body, media = static[file]
        return etag_response(request, body, media, SECURITY_HEADERS)


def _int(value: str | None) -> int:
    try:
        return max(1, min(int(value or "1"), 1_000_000))
    except ValueError:
        return 1
