"""End to end in headless Chromium: sign in, trigger, watch an instance live, act on it.

Runs Debian's ``chromium`` through Playwright (never a downloaded browser). Where that binary
is missing these tests fail, naming it and how to install it: `make test` runs the whole suite,
so a real tier never skips silently. STEPSTONE_CHROMIUM names another binary;
STEPSTONE_SKIP_BROWSER=1 skips them on purpose (and the summary says so). Screenshots of the
main pages go to build/screenshots/ (or to $STEPSTONE_SCREENSHOTS: `make screenshots` refreshes
the ones under docs/).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.api.conftest import start_server
from tests.dashboard.conftest import ACCOUNT, LiveServer, prepare

CHROMIUM_ENV = "STEPSTONE_CHROMIUM"
SKIP_ENV = "STEPSTONE_SKIP_BROWSER"
# Every run saves them; only `make screenshots` writes the committed copies, so a test run
# leaves the work tree clean.
SHOTS = Path(
    os.environ.get(
        "STEPSTONE_SCREENSHOTS", Path(__file__).resolve().parents[2] / "build" / "screenshots"
    )
)
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LAPTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}
WAIT_MS = 15_000


def chromium_path() -> str:
    """The binary to drive, looked for as the Makefile's check looks for it."""
    return os.environ.get(CHROMIUM_ENV) or shutil.which("chromium") or "/usr/bin/chromium"


def missing_chromium(path: str) -> str | None:
    """Why ``path`` cannot be the browser, naming the fix; None when it can."""
    if os.path.isfile(path) and os.access(path, os.X_OK):
        return None
    return (
        f"Debian's chromium is not at {path}, and the dashboard's browser tests need it:"
        f" apt-get install -y chromium (.ci/run does), or set {CHROMIUM_ENV} to the binary;"
        f" {SKIP_ENV}=1 skips these tests on purpose"
    )


def require_chromium() -> str:
    """The browser's path; a test that needs one fails without it (skips only when asked)."""
    path = chromium_path()
    problem = missing_chromium(path)
    if problem is not None:
        if os.environ.get(SKIP_ENV):
            pytest.skip(f"{SKIP_ENV} is set: {problem}")
        pytest.fail(problem, pytrace=False)
    return path


@pytest.fixture
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    executable = require_chromium()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveServer]:
    server, stop = start_server(f"sqlite:///{tmp_path / 'e2e.db'}")
    try:
        yield prepare(server)
    finally:
        stop()


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / name), full_page=True)


def sign_in(page: Any, live: LiveServer) -> None:
    page.goto(f"{live.base}/dashboard")
    page.wait_for_url("**/dashboard/login**")
    page.get_by_label("API token").fill(live.token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/dashboard/workflows")


def test_watch_an_instance_live_and_act_on_it(browser: Any, live: LiveServer) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=WAIT_MS)
    context = browser.new_context(viewport=LAPTOP, accept_downloads=True)
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())

    page.goto(f"{live.base}/dashboard")
    page.wait_for_url("**/dashboard/login**")
    shot(page, "sign-in.png")
    page.get_by_label("API token").fill(live.token)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/dashboard/workflows")
    expect(page.get_by_role("link", name="journey")).to_be_visible()

    # Trigger from the workflow's page, then stay on the instance page: no reloads from here
    # until the event is sent, so every change seen comes over the event stream.
    page.get_by_role("link", name="journey").click()
    expect(page.get_by_role("heading", name="No instances")).to_be_visible()
    page.get_by_text("Trigger an instance").click()
    page.get_by_label("Params (JSON)").fill('{"sleep": "3 seconds", "customer": "ana"}')
    page.get_by_label("Instance id").fill("order-1")
    page.get_by_role("button", name="Trigger").click()
    page.wait_for_url("**/instances/order-1")
    page.evaluate("window.__notReloaded = true")

    sleeping = page.locator("li.step.sleeping", has_text="cool off-1")
    expect(sleeping).to_be_visible()
    expect(sleeping).to_contain_text("Sleeping until")
    expect(page.locator("li.step", has_text="prepare-1")).to_contain_text("retry after 300 ms")
    waiting = page.locator("li.step.waiting", has_text="await approval-1")
    expect(waiting).to_contain_text("approval")
    expect(page.locator("#status")).to_have_text("waiting")
    assert page.evaluate("window.__notReloaded === true"), "the page reloaded instead of streaming"
    expect(page.locator("li.step", has_text="secret-1")).to_contain_text("[REDACTED]")
    shot(page, "instance-waiting.png")

    expect(page.get_by_label("Event type")).to_have_value("approval")
    page.get_by_label("Payload (JSON)").fill('{"approved": true}')
    page.get_by_role("button", name="Send event").click()
    expect(page.locator("#status")).to_have_text("complete")
    expect(page.locator("li.step", has_text="ship-1")).to_be_visible()
    expect(page.locator("#live")).to_contain_text("trk_order-1")
    shot(page, "instance.png")

    # Full output on demand: JSON shown whole, the byte stream downloaded.
    page.get_by_role("link", name="Full output of prepare-1").click()
    expect(page.locator("#output")).to_contain_text('"note": "ready"')
    page.go_back()
    with page.expect_download() as download_info:
        page.locator("li.step", has_text="report-1").get_by_role("link", name="Download").click()
    downloaded = Path(download_info.value.path()).read_bytes()
    assert downloaded == b"sku,qty\n" + b"A1,2\n" * 200

    # Pause, resume and terminate from the page.
    page.goto(f"{live.base}/dashboard/accounts/{ACCOUNT}/workflows/waiter")
    page.get_by_text("Trigger an instance").click()
    page.get_by_label("Instance id").fill("hold-1")
    page.get_by_role("button", name="Trigger").click()
    page.wait_for_url("**/instances/hold-1")
    expect(page.locator("#status")).to_have_text("waiting")
    page.get_by_role("button", name="Pause").click()
    expect(page.locator("#status")).to_have_text("paused")
    expect(page.get_by_role("status").filter(has_text="Pause requested")).to_be_visible()
    page.get_by_role("button", name="Resume").click()
    expect(page.locator("#status")).to_have_text("waiting")
    page.get_by_role("button", name="Terminate").click()
    expect(page.locator("#status")).to_have_text("terminated")
    expect(page.get_by_role("button", name="Pause")).to_have_count(0)

    # The instances page, with a few more to list, filter and terminate in bulk.
    for n in range(3):
        live.run(live.engine.workflow("waiter").create(id=f"batch-{n}"))
    page.goto(f"{live.base}/dashboard/accounts/{ACCOUNT}/workflows/waiter")
    expect(page.locator("#instances-table tbody tr")).to_have_count(4)
    shot(page, "instances.png")
    page.get_by_label("Status", exact=True).select_option("terminated")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#instances-table tbody tr")).to_have_count(1)
    page.goto(f"{live.base}/dashboard/accounts/{ACCOUNT}/workflows/waiter")
    page.get_by_label("Select all on this page").check()
    page.get_by_role("button", name="Terminate…").click()
    expect(page.get_by_role("heading", name="Terminate 4 instances?")).to_be_visible()
    page.get_by_role("button", name="Yes, terminate").click()
    expect(page.get_by_role("status")).to_contain_text("Terminated 3 instances")

    page.goto(f"{live.base}/dashboard/workflows")
    shot(page, "workflows.png")
    context.close()


def test_phone_layout(browser: Any, live: LiveServer) -> None:
    from playwright.sync_api import expect

    expect.set_options(timeout=WAIT_MS)
    instance = live.run(live.engine.workflow("journey").create(id="phone-1", params={"sleep": 1}))
    live.wait_status("journey", instance.id, {"waiting"})
    live.wait_step("journey", instance.id, "await approval-1")
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    page = context.new_page()
    sign_in(page, live)
    page.goto(f"{live.base}/dashboard/accounts/{ACCOUNT}/workflows/journey/instances/phone-1")
    expect(page.locator("li.step.waiting", has_text="await approval-1")).to_be_visible()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the page scrolls sideways on a phone ({width}px)"
    shot(page, "instance-phone.png")
    context.close()


def _same_origin_only(page: Any, live: LiveServer) -> list[str]:
    """Every URL the page asks for that is not this server (a CDN, a font host): none wanted."""
    elsewhere: list[str] = []
    page.on(
        "request",
        lambda request: (
            None
            if request.url.startswith((live.base + "/", "data:"))
            else elsewhere.append(request.url)
        ),
    )
    return elsewhere


def test_timeline_and_step_graph_render_offline(browser: Any, live: LiveServer) -> None:
    from playwright.sync_api import expect

    from tests.dashboard import truth_flows

    expect.set_options(timeout=WAIT_MS)
    live.run(live.engine.register("pipeline", truth_flows.Pipeline))
    live.run(live.engine.register("napper", truth_flows.Napper))
    live.run(live.engine.workflow("pipeline").create(id="run-1"))
    live.wait_done("pipeline", "run-1")
    nap = live.engine.workflow("napper")
    live.run(nap.create(id="nap-1", params={"sleep": "1 hour"}))
    live.wait_step("napper", "nap-1", "nap-1")
    handle = live.run(nap.get("nap-1"))
    live.run(handle.pause())
    live.wait_status("napper", "nap-1", {"paused"})
    live.run(handle.resume())
    live.wait_status("napper", "nap-1", {"waiting"})
    live.run(handle.terminate())
    live.wait_done("napper", "nap-1")

    context = browser.new_context(viewport=LAPTOP)
    page = context.new_page()
    elsewhere = _same_origin_only(page, live)
    sign_in(page, live)
    workflows = f"{live.base}/dashboard/accounts/{ACCOUNT}/workflows"
    page.goto(f"{workflows}/pipeline/instances/run-1")
    chart = page.locator("#chart")
    expect(chart).to_be_visible()
    lanes = chart.locator("svg.lane")
    expect(lanes).to_have_count(5)
    # Drawn, not just present: the failed attempt, its retry delay and the retry sit left to
    # right on the first lane, and every bar has width on screen.
    fetch = lanes.nth(0)
    failed = fetch.locator("rect.attempt.fail").bounding_box()
    retry = fetch.locator("rect.retry").bounding_box()
    succeeded = fetch.locator("rect.attempt.ok").bounding_box()
    assert failed and retry and succeeded
    assert failed["x"] < retry["x"] < succeeded["x"]
    assert min(failed["width"], retry["width"], succeeded["width"]) > 0
    lane_box = fetch.bounding_box()
    assert lane_box and lane_box["width"] > 400
    sleep = lanes.nth(3).locator("rect.gap").bounding_box()
    assert sleep and sleep["x"] > succeeded["x"]
    shot(page, "instance-timeline.png")

    page.goto(f"{workflows}/napper/instances/nap-1")
    expect(page.locator("li.step.stopped", has_text="nap-1")).to_contain_text("Stopped at")
    expect(page.locator("#termination")).to_contain_text("by api")
    expect(page.locator("ol.pauses")).to_contain_text("resumed")
    expect(page.locator("#chart rect.pause-bar")).to_have_count(1)
    shot(page, "instance-stopped.png")

    page.goto(f"{workflows}/pipeline")
    graph = page.locator("ol.stages")
    expect(graph).to_be_visible()
    expect(page.locator("#graph-source")).to_contain_text("run-1")
    pair = graph.locator("li.stage").nth(2).locator("li.node")  # after "start" and fetch
    expect(pair).to_have_count(2)
    left, right = pair.nth(0).bounding_box(), pair.nth(1).bounding_box()
    assert left and right and left["y"] == right["y"] and left["x"] < right["x"]
    shot(page, "workflow-graph.png")
    assert elsewhere == [], f"the pages fetched from elsewhere: {elsewhere}"
    context.close()


def test_long_class_names_never_break_mid_word_on_a_phone(browser: Any, live: LiveServer) -> None:
    from playwright.sync_api import expect

    from tests.dashboard import truth_flows

    expect.set_options(timeout=WAIT_MS)
    live.run(
        live.engine.register(
            "long-name", truth_flows.AnExceptionallyLongWorkflowClassNameThatWouldWrapMidWord
        )
    )
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    page = context.new_page()
    sign_in(page, live)
    for url in ("/dashboard/workflows", f"/dashboard/accounts/{ACCOUNT}/workflows/long-name"):
        page.goto(live.base + url)
        name = page.locator("code.dotted").first
        expect(name).to_be_visible()
        # A part laid out on two lines would have two boxes: each stays on one.
        boxes = name.locator(".part").evaluate_all(
            "parts => parts.map(p => p.getClientRects().length)"
        )
        assert boxes and all(n == 1 for n in boxes), boxes
        lines = name.evaluate("e => e.getClientRects().length")
        assert lines > 1, "the name fits on one line: this phone test shows nothing"
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"the page scrolls sideways on a phone ({width}px)"
    shot(page, "long-class-name-phone.png")
    context.close()


def test_workflow_charts_render_offline(browser: Any, live: LiveServer) -> None:
    from playwright.sync_api import expect

    from tests.dashboard import truth_flows

    expect.set_options(timeout=WAIT_MS)
    live.run(live.engine.register("pipeline", truth_flows.Pipeline))
    for n in range(3):
        live.run(live.engine.workflow("pipeline").create(id=f"run-{n}"))
    for n in range(3):
        live.wait_done("pipeline", f"run-{n}")

    context = browser.new_context(viewport=LAPTOP)
    page = context.new_page()
    elsewhere = _same_origin_only(page, live)
    sign_in(page, live)
    page.goto(f"{live.base}/dashboard/accounts/{ACCOUNT}/workflows/pipeline?window=1h")
    charts = page.locator("#charts")
    expect(charts).to_be_visible()
    expect(page.locator("#created-total")).to_have_text("3")
    for chart in ("#chart-created", "#chart-finished", "#chart-backlog"):
        box = page.locator(chart).bounding_box()
        assert box and box["width"] > 200 and box["height"] > 50, (chart, box)
    # Drawn, not just present: the created column has height on screen.
    column = page.locator("#chart-created rect.seg.complete").first.bounding_box()
    assert column and column["width"] > 0 and column["height"] > 10
    rows = page.locator("#step-stats tbody tr")
    expect(rows).to_have_count(4)
    expect(rows.first).to_contain_text("fetch")
    p95 = rows.first.locator("rect.p95").bounding_box()
    p50 = rows.first.locator("rect.p50").bounding_box()
    assert p95 and p50 and p95["width"] >= p50["width"] > 0
    shot(page, "workflow-charts.png")
    page.get_by_role("link", name="7 d").click()
    expect(page.locator("#charts-h")).to_contain_text("7 d")
    expect(page.locator("#created-total")).to_have_text("3")
    assert elsewhere == [], f"the page fetched from elsewhere: {elsewhere}"
    context.close()
