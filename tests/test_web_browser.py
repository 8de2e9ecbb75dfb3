"""The web page in a real browser: Playwright for Python driving Debian's Chromium
(`/usr/bin/chromium`, installed by `make browser`; nothing is downloaded at test time), against
`serve` on the envtest API server, and against 10,000 applications in-process.

Writes docs/screenshots/grid.png and docs/screenshots/application.png (shown in the README).
axe-core is vendored (tests/vendor/axe-core, from npm) and evaluated in the page.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from eventmesh_health.serve.api import create_app, embedded_server
from eventmesh_health.serve.metrics import Metrics
from tests.envtest.controlplane import ControlPlane
from tests.live_objects import ApiServer
from tests.test_serve import api, set_trigger_ready, start_serve, wait_for
from tests.test_web import big_state

__all__ = ["api"]  # the module-scoped fixture of tests/test_serve.py, used here too

REPO = Path(__file__).parent.parent
CHROMIUM = os.environ.get("EVENTMESH_HEALTH_CHROMIUM", "/usr/bin/chromium")
AXE = (REPO / "tests" / "vendor" / "axe-core" / "axe.min.js").read_text()
SCREENSHOTS = REPO / "docs" / "screenshots"
# --no-sandbox: the tests may run as root (containers, CI); the pages are our own. The rest
# keep Chromium from reaching out on its own (component updates, DNS, mDNS, metrics): the
# run is loopback only (hack/loopback-only.sh counts every other packet).
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-pings",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-domain-reliability", "--disable-breakpad", "--dns-prefetch-disable",
    "--disable-features=MediaRouter,OptimizationHints,Translate,AutofillServerCommunication,"
    "CertificateTransparencyComponentUpdater,InterestFeedContentSuggestions",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]
RED = "rgb(179, 38, 30)"  # --unhealthy in style.css
TRIGGER = "commerce-mock-order-created"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: run `make browser` (apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def new_page(browser: Browser, **options: Any) -> tuple[Page, list[str]]:
    """A page of its own context; the list collects CSP refusals and script errors."""
    context = browser.new_context(viewport={"width": 1280, "height": 800}, **options)
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    return page, problems


def axe_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations (WCAG 2.x A and AA rules, best practices)."""
    page.evaluate(AXE)  # through DevTools, not a <script>: the page's CSP stays in force
    result = page.evaluate("""async () => {
        const r = await axe.run(document, {resultTypes: ['violations']});
        return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                                       nodes: v.nodes.map(n => n.target.join(' '))}));
    }""")
    return [v for v in result if v["impact"] in ("serious", "critical")]


def wait_js(page: Page, expression: str, timeout: float = 5.0) -> float:
    """Wait until `expression` is true in the page; the seconds it took. (Not Playwright's
    wait_for_function: it evaluates its predicate with `eval`, which the page's CSP refuses.)"""
    started = time.monotonic()
    while not page.evaluate(expression):
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not true within {timeout} s: {expression}")
        time.sleep(0.05)
    return time.monotonic() - started


def tab_to(page: Page, href: str, limit: int = 80) -> int:
    """Press Tab until the link to `href` has the focus; how many presses it took."""
    for presses in range(1, limit + 1):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement && document.activeElement"
                         ".getAttribute('href')") == href:
            return presses
    raise AssertionError(f"{href} not reached with {limit} presses of Tab")


@pytest.mark.envtest
def test_the_page_follows_a_break_and_a_mend_of_the_live_mesh(
    control_plane: ControlPlane, api: ApiServer, tmp_path: Path, browser: Browser
) -> None:
    serve = start_serve(control_plane, tmp_path, "serve-web", "--no-leader-election")
    try:
        page, problems = new_page(browser)
        page.goto(serve.url + "/")
        # The grid shows the example mesh: every application and its namespaces.
        for app in serve.get("/api/v1/applications").json()["applications"]:
            row = page.locator(f'tr[data-key="{app["name"]}"]')
            assert row.locator("td.cell").inner_text().endswith(app["health"])
            for ns in app["namespaces"]:
                assert row.locator(f'li[data-ns="{ns["name"]}"]').count() == 1
        assert axe_violations(page) == []
        wait_js(page, "document.getElementById('live').textContent.startsWith('Live')")
        cell = page.locator('tr[data-key="commerce-mock"] li[data-ns="stage"]')
        assert "h-Healthy" in (cell.get_attribute("class") or "")

        # Breaking a Trigger turns its cell red within 2 s, without a reload.
        page.evaluate("window.notReloaded = true")
        started = time.monotonic()
        set_trigger_ready(api, TRIGGER, ready=False)
        page.wait_for_selector('tr[data-key="commerce-mock"] li[data-ns="stage"].h-Unhealthy',
                               timeout=2000)
        red_after = time.monotonic() - started
        assert page.evaluate("window.notReloaded") is True
        assert cell.evaluate("e => getComputedStyle(e).backgroundColor") == RED
        assert "Unhealthy" in cell.inner_text()  # not colour alone: the word (hidden) too
        assert page.locator('tr[data-key="commerce-mock"] td.cell').inner_text().endswith(
            "Unhealthy")
        assert "Unhealthy 1" in page.locator("#counts").inner_text()
        assert page.locator('tr[data-key="commerce-mock"].changed').count() == 1
        assert page.locator("tr.changed").count() == 1  # only the row that changed flashes
        print(f"\ncell red {red_after:.2f} s after the Trigger broke")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "grid.png"), full_page=True)

        # Keyboard only: from the top of the page to the application's page.
        page.goto(serve.url + "/")
        presses = tab_to(page, "/applications/commerce-mock")
        page.keyboard.press("Enter")
        page.wait_for_url(serve.url + "/applications/commerce-mock")
        print(f"application page reached with {presses} x Tab, then Enter")

        # The application page names the root cause, highlighted, its symptoms linked to it.
        cause = f"Trigger stage/{TRIGGER}: SubscriberResolveFailed"
        assert page.locator("#root-cause").inner_text() == cause
        root = page.locator("li.link.root").first
        assert TRIGGER in root.inner_text() and "root cause" in root.inner_text().lower()
        assert axe_violations(page) == []
        before = page.locator("ol.timeline > li").count()
        page.screenshot(path=str(SCREENSHOTS / "application.png"), full_page=True)

        # Mending it adds a transition to the history (live, no reload).
        page.evaluate("window.notReloaded = true")
        set_trigger_ready(api, TRIGGER, ready=True)
        mended = wait_js(page, f"document.querySelectorAll('ol.timeline > li').length > {before}")
        print(f"the mend in the history after {mended:.2f} s")
        newest = page.locator("ol.timeline > li").first.inner_text()
        assert "Unhealthy" in newest and newest.rstrip().endswith("Healthy"), newest
        assert page.evaluate("window.notReloaded") is True
        history = serve.get("/api/v1/applications/commerce-mock/history").json()["transitions"]
        assert [t["health"] for t in history[-2:]] == ["Unhealthy", "Healthy"]
        assert history[-2]["rootCause"] == cause
        # ... and the leader persisted it, for a successor.
        persisted = wait_for("status.history", lambda: (h := api.request(
            "GET", "/apis/eventmesh-health.kyma-project.io/v1alpha1/eventmeshhealths/"
            "commerce-mock").json()["status"].get("history", []))
            and h[-1]["health"] == "Healthy" and h)
        assert persisted[-2]["rootCause"] == cause
        assert problems == [], problems  # no CSP refusal, no script error

        # JavaScript off: the summary is all there.
        quiet, _ = new_page(browser, java_script_enabled=False)
        quiet.goto(serve.url + "/")
        assert quiet.locator('tr[data-key="commerce-mock"] td.cell').inner_text().endswith(
            "Healthy")
        assert "JavaScript disabled" in quiet.locator("#live").inner_text()
        quiet.context.close()
        page.context.close()
    finally:
        serve.stop()


class _Thread:
    """The API and page over `state` in an event loop of its own thread (for sync tests)."""

    def __init__(self, state: Any) -> None:
        self.server = embedded_server(create_app(state, Metrics()), host="127.0.0.1", port=0,
                                      log_level="warning")
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve()),
                                       daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def test_ten_thousand_applications_in_the_browser(browser: Browser) -> None:
    with _Thread(big_state(10_000)) as url:
        page, problems = new_page(browser)
        started = time.monotonic()
        answer = page.goto(url + "/")
        assert answer is not None and answer.ok
        page.wait_for_selector('tr[data-key="app-00000"]')
        wall = time.monotonic() - started
        # The paint entry can be recorded a moment after the rows are in the DOM (CI once read
        # none); its startTime counts from the navigation, so waiting does not change it.
        wait_js(page, "performance.getEntriesByName('first-contentful-paint').length > 0")
        timing = page.evaluate("""() => {
            const nav = performance.getEntriesByType('navigation')[0];
            const paint = performance.getEntriesByName('first-contentful-paint')[0];
            return {fcp: paint ? paint.startTime : null, dcl: nav.domContentLoadedEventEnd,
                    bytes: nav.transferSize, body: nav.decodedBodySize};
        }""")
        rows = page.locator("#apps tbody tr").count()
        print(f"\n10,000 applications in Chromium: first contentful paint "
              f"{timing['fcp']:.0f} ms, DOMContentLoaded {timing['dcl']:.0f} ms, wall "
              f"{wall * 1000:.0f} ms, HTML {timing['body'] / 1024:.0f} KiB, {rows} rows shown")
        assert rows == 100
        assert timing["fcp"] is not None and timing["fcp"] < 2000
        # The live update keeps working at that size: the next page by keyboard, then polls.
        page.locator('a[rel="next"]').first.focus()
        page.keyboard.press("Enter")
        page.wait_for_url(re.compile(r".*[?&]page=2(&|$)"))
        wait_js(page, "document.getElementById('live').textContent.startsWith('Live')")
        assert axe_violations(page) == []
        assert problems == [], problems
        page.context.close()
