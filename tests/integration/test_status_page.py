"""The status page in a real browser: headless Chromium (Debian's ``chromium``) driven by Playwright.

The real ``twistd imagefactory`` daemon (tests/support/daemon.py) serves the page over
HTTPS with its self-signed certificate; mock builds take 6 s, so the page is
seen while they run.  Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Route, sync_playwright

from support.daemon import Daemon, DaemonPool, mock_config
from support.many_builders import fill_sqlite

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
PAGE = "/imagefactory/builders"
WAIT_MS = 30_000

TEMPLATE = (
    "<template><name>{name}</name><os><name>Fedora</name><version>14</version><arch>x86_64</arch>"
    "<install type='url'><url>http://download.fedoraproject.org/pub/fedora/linux/releases/14/Fedora/"
    "x86_64/os/</url></install></os><description>status page test</description></template>"
)
FAIL_REASON = "the mock target fails templates named FAIL on purpose"

# Computed badge backgrounds in the light colour scheme (status.css).
GREEN_BG, RED_BG, BLUE_BG = "rgb(218, 251, 225)", "rgb(255, 235, 233)", "rgb(221, 244, 255)"


# -- the browser --------------------------------------------------------------


def _chromium_missing() -> str | None:
    """None when /usr/bin/chromium is there (installing it with apt if need be), else why not."""
    if CHROMIUM.exists():
        return None
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        return f"{CHROMIUM} is missing and apt-get cannot install it here (no apt-get, or not root)"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    output = ""
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        try:
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
            output += done.stdout + done.stderr
        except (OSError, subprocess.TimeoutExpired) as error:
            output += repr(error)
    if CHROMIUM.exists():
        return None
    return f"{CHROMIUM} is missing and `apt-get install chromium` did not install it: {output[-500:]}"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless, through Playwright (never a browser that Playwright downloads)."""
    missing = _chromium_missing()
    if missing:
        pytest.skip(missing)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS, timeout=60_000)
        try:
            yield launched
        finally:
            launched.close()


class Tab:
    """A browser context and page that record every request and console error."""

    def __init__(self, browser: Browser, **options: Any) -> None:
        self.context: BrowserContext = browser.new_context(ignore_https_errors=True, color_scheme="light", **options)
        self.context.set_default_timeout(WAIT_MS)
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.context.on("request", lambda request: self.requests.append(request.url))
        self.page: Page = self.context.new_page()
        self.page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def tab(browser: Browser) -> Iterator[Tab]:
    opened = Tab(browser, viewport={"width": 1280, "height": 760})
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def phone(browser: Browser) -> Iterator[Tab]:
    opened = Tab(browser, viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, has_touch=True)
    try:
        yield opened
    finally:
        opened.close()


# -- the daemon and its builds ------------------------------------------------


@pytest.fixture(scope="module")
def slow_daemon(module_daemon_factory: DaemonPool) -> Daemon:
    """TLS + OAuth daemon whose mock builds take 6 s, three at a time."""
    return module_daemon_factory.make(mock_config(mock_duration=6.0, max_concurrent_builds=3), name="status-page")


@pytest.fixture(scope="module")
def builds(slow_daemon: Daemon) -> dict[str, Any]:
    """A build of a FAIL template, then three mock builds (the last one waits PENDING for a slot)."""
    ids = []
    for name in ("FAIL", "f14jeos", "f14jeos", "f14jeos"):
        answer = slow_daemon.post(
            PAGE.replace("builders", "images"), data={"targets": "mock", "template": TEMPLATE.format(name=name)}
        )
        assert answer.status_code == 202, f"{answer.status_code}: {answer.text}"
        ids.append(answer.json()["build"]["target_images"][0]["id"])
    return {"fail": ids[0], "oldest_first": ids}


def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path


def row_ids(page: Page) -> list[str]:
    return page.eval_on_selector_all("#rows tr", "rows => rows.map(row => row.dataset.id)")


def summary(page: Page) -> dict[str, int]:
    return page.eval_on_selector_all(
        "#summary li",
        "items => Object.fromEntries(items.map(i => [i.dataset.status, +i.querySelector('strong').textContent]))",
    )


def badge_background(page: Page, builder_id: str) -> str:
    return page.eval_on_selector(
        f'#rows tr[data-id="{builder_id}"] .badge', "badge => getComputedStyle(badge).backgroundColor"
    )


# -- tests --------------------------------------------------------------------


def test_status_page_shows_builders_live(slow_daemon: Daemon, builds: dict[str, Any], tab: Tab) -> None:
    """The browser gets the page (not JSON): a row per builder, newest first, whose progress moves without
    a reload; the FAILED row shows its reason; the log link shows the log; nothing comes from elsewhere."""
    page = tab.page
    answer = page.goto(slow_daemon.url(PAGE))
    assert answer is not None and answer.status == 200
    assert answer.headers["content-type"].startswith("text/html")

    # One row per builder, newest first (the API lists oldest first).
    page.wait_for_function("n => document.querySelectorAll('#rows tr').length === n", arg=len(builds["oldest_first"]))
    assert row_ids(page) == builds["oldest_first"][::-1]
    listed = [builder["id"] for builder in slow_daemon.get_json(PAGE)["builders"]]
    assert row_ids(page) == listed[::-1]

    # A running row's progress changes in place: same document, same row element.
    page.wait_for_selector('#rows tr[data-status="BUILDING"]')
    running = page.evaluate("""() => {
        const row = [...document.querySelectorAll('#rows tr[data-status="BUILDING"]')]
            .find(r => r.querySelector('progress').value < 90);
        window.__row = row;
        window.__loadMarker = Math.random();
        return row && {id: row.dataset.id, value: row.querySelector('progress').value};
    }""")
    assert running, "no BUILDING row below 90 %"
    marker = page.evaluate("window.__loadMarker")
    page.wait_for_function(
        """([id, before]) => {
        const bar = document.querySelector(`#rows tr[data-id="${id}"] progress`);
        return bar && bar.value !== before;
    }""",
        arg=[running["id"], running["value"]],
        timeout=15_000,
    )
    assert page.evaluate("window.__loadMarker") == marker
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1
    assert page.evaluate(f"""() => document.querySelector('#rows tr[data-id="{running["id"]}"]') === window.__row""")
    value, percent = page.eval_on_selector(
        f'#rows tr[data-id="{running["id"]}"]',
        "row => [row.querySelector('progress').value, row.querySelector('.percent').textContent]",
    )
    assert value > running["value"] and percent == f"{value:g}%"
    # The running stage shows next to the bar (a mock target's work is its conversion).
    stage = page.eval_on_selector(f'#rows tr[data-id="{running["id"]}"] .stage', "cell => cell.textContent")
    assert stage == "converting" == slow_daemon.get_json(f"/imagefactory/builders/{running['id']}")["stage"]

    # The FAILED row, with its reason and a red badge; running rows' badges are blue.
    failed = page.wait_for_selector(f'#rows tr[data-id="{builds["fail"]}"][data-status="FAILED"]')
    assert failed.eval_on_selector(".badge", "b => b.textContent") == "FAILED"
    assert FAIL_REASON in failed.eval_on_selector(".reason", "cell => cell.textContent")
    assert badge_background(page, builds["fail"]) == RED_BG
    page.wait_for_function("() => document.querySelector('#rows tr[data-status=\"BUILDING\"]')")
    assert (
        page.eval_on_selector('#rows tr[data-status="BUILDING"] .badge', "b => getComputedStyle(b).backgroundColor")
        == BLUE_BG
    )
    counts = summary(page)
    assert counts["ALL"] == 4 and counts["FAILED"] == 1
    assert re.search(r"\d", page.text_content("#updated") or ""), "no 'last updated' time"
    assert page.is_hidden("#banner")
    screenshot(page, "status-page.png")

    # Accessible: column headers, a row header per row, labelled progress bars.
    assert page.eval_on_selector_all("thead th[scope=col]", "cells => cells.length") == 8
    assert page.eval_on_selector_all("#rows th[scope=row]", "cells => cells.length") == 4
    labels = page.eval_on_selector_all("#rows progress", "bars => bars.map(b => b.getAttribute('aria-label'))")
    assert len(labels) == 4 and all(label and label.startswith("Progress of builder ") for label in labels)

    # Everything ends: three COMPLETED (green), one FAILED, in the same document.
    page.wait_for_function(
        "() => document.querySelector('#summary li[data-status=\"COMPLETED\"] strong').textContent === '3'"
    )
    assert summary(page) == {"ALL": 4, "NEW": 0, "PENDING": 0, "BUILDING": 0, "PUSHING": 0, "COMPLETED": 3, "FAILED": 1}
    assert badge_background(page, builds["oldest_first"][1]) == GREEN_BG
    assert page.eval_on_selector_all("#rows progress", "bars => bars.slice(0, 3).map(b => b.value)") == [100] * 3
    assert page.evaluate("window.__loadMarker") == marker
    assert tab.errors == [], tab.errors

    # The detail and log links; the log link shows the builder's log.
    fail_row = f'#rows tr[data-id="{builds["fail"]}"]'
    assert page.get_attribute(f"{fail_row} a.details", "href") == f"{PAGE}/{builds['fail']}"
    page.click(f"{fail_row} a.log")
    page.wait_for_url(re.compile(r"/log$"))
    log_text = page.text_content("body") or ""
    assert "mock build of 'FAIL'" in log_text and "FAILED" in log_text
    page.go_back()
    page.click(f"{fail_row} a.details")
    page.wait_for_url(re.compile(re.escape(builds["fail"]) + "$"))
    assert json.loads(page.text_content("body") or "")["status_detail"].endswith(FAIL_REASON)

    # Nothing was fetched from anywhere but the daemon.
    foreign = [url for url in tab.requests if urlsplit(url).netloc != slow_daemon.host]
    assert tab.requests and not foreign, foreign


def test_status_page_on_a_phone(slow_daemon: Daemon, builds: dict[str, Any], phone: Tab) -> None:
    """At 390x844 the rows are cards and nothing scrolls sideways."""
    page = phone.page
    page.goto(slow_daemon.url(PAGE))
    page.wait_for_function("n => document.querySelectorAll('#rows tr').length === n", arg=len(builds["oldest_first"]))
    page.wait_for_selector(f'#rows tr[data-id="{builds["fail"]}"][data-status="FAILED"]')
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), page.evaluate(
        "[document.documentElement.scrollWidth, window.innerWidth]"
    )
    assert page.eval_on_selector("#rows tr", "row => getComputedStyle(row).display") == "block"
    # The column headers are only for screen readers: each card repeats them as labels.
    assert page.eval_on_selector("thead", "head => head.getBoundingClientRect().height") <= 1
    assert (
        page.eval_on_selector("#rows td.reason", "cell => getComputedStyle(cell, '::before').content")
        == '"Failure reason"'
    )
    widest = page.eval_on_selector_all(
        "#rows tr, #rows progress, header, footer",
        "nodes => Math.max(...nodes.map(n => n.getBoundingClientRect().right))",
    )
    assert widest <= page.evaluate("window.innerWidth")
    screenshot(page, "status-page-phone.png")
    assert phone.errors == [], phone.errors


def test_status_page_escapes_data_and_reports_an_unreachable_daemon(slow_daemon: Daemon, tab: Tab) -> None:
    """Markup in the data is shown as text; when the daemon cannot be reached a banner says so and the
    page keeps retrying, then recovers on its own."""
    page = tab.page
    mode = {"now": "evil"}
    evil = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
    document = {
        "_type": "builders",
        "href": slow_daemon.url(PAGE),
        "builders": [
            {
                "status": "FAILED",
                "_type": "builder",
                "completed": 40,
                "provider_account_identifier": None,
                "image_id": "<b>image</b>",
                "href": "javascript:alert(1)",
                "operation": "build",
                "id": "x/<i>y</i>",
                "build_id": "build",
                "target": "<u>mock</u>",
                "provider": None,
                "target_image_id": None,
                "status_detail": evil,
            }
        ],
    }

    def handle(route: Route) -> None:
        if route.request.resource_type != "fetch" or mode["now"] == "real":
            route.continue_()
        elif mode["now"] == "evil":
            route.fulfill(status=200, content_type="application/json", body=json.dumps(document))
        else:
            route.abort("connectionrefused")

    page.route(re.compile(r"/imagefactory/builders(\?.*)?$"), handle)
    page.goto(slow_daemon.url(PAGE))
    page.wait_for_selector('#rows tr[data-status="FAILED"]')
    assert page.text_content("#rows .reason") == evil
    assert page.text_content("#rows td:nth-child(3)") == "<u>mock</u>"
    assert page.eval_on_selector_all("#rows img, #rows script, #rows b, #rows i, #rows u", "n => n.length") == 0
    assert page.get_attribute("#rows a.details", "href") == f"{PAGE}/x%2F%3Ci%3Ey%3C%2Fi%3E"
    assert page.evaluate("window.__pwned") is None

    mode["now"] = "down"
    page.wait_for_selector("#banner", state="visible", timeout=10_000)
    assert "Cannot reach the Image Factory daemon" in (page.text_content("#banner") or "")
    assert page.text_content("#state") == "Offline"
    assert page.eval_on_selector_all("#rows tr", "rows => rows.length") == 1  # the last rows stay
    screenshot(page, "status-page-offline.png")

    mode["now"] = "real"
    page.wait_for_selector("#banner", state="hidden", timeout=10_000)
    assert page.text_content("#state") == "Live"
    page.wait_for_function("() => !document.querySelector('#rows tr[data-id^=\"x/\"]')")


def test_status_page_pages_and_reads_only_what_changes(module_daemon_factory: DaemonPool, tab: Tab) -> None:
    """With 1 200 builders stored the page reads them in pages (``limit``), shows every one, and then polls only
    the builders made since (``marker``), the unfinished ones and those that ended: never the whole list again."""
    daemon = module_daemon_factory.make(mock_config(mock_duration=2.0), name="status-page-many", start=False)
    ids = fill_sqlite(str(daemon.state_dir), 1200)
    daemon.start_ready()
    page = tab.page
    page.goto(daemon.url(PAGE))
    page.wait_for_function("n => document.querySelectorAll('#rows tr').length === n", arg=1200, timeout=WAIT_MS)
    assert row_ids(page)[:3] == ids[::-1][:3] and row_ids(page)[-1] == ids[0]
    assert summary(page)["ALL"] == 1200 and summary(page)["FAILED"] == 120
    loaded = len(tab.requests)
    reads = [urlsplit(url).query for url in tab.requests if urlsplit(url).path == PAGE and urlsplit(url).query]
    assert reads[0] == "limit=500" and reads[1] == f"limit=500&marker={ids[499]}"
    assert reads[2] == f"limit=500&marker={ids[999]}"

    answer = daemon.post("/imagefactory/images", data={"targets": "mock", "template": TEMPLATE.format(name="new")})
    assert answer.status_code == 202, answer.text
    new_id = answer.json()["build"]["target_images"][0]["id"]
    page.wait_for_function(f"() => document.querySelector('#rows tr').dataset.id === {json.dumps(new_id)}")
    page.wait_for_selector(f'#rows tr[data-id="{new_id}"][data-status="COMPLETED"]', timeout=WAIT_MS)
    assert summary(page)["ALL"] == 1201 and summary(page)["COMPLETED"] == 1081

    later = [urlsplit(url).query for url in tab.requests[loaded:] if urlsplit(url).path == PAGE]
    assert later and all("marker=" in query or query == "unfinished=1" for query in later), later
    assert f"{PAGE}/{new_id}" in [urlsplit(url).path for url in tab.requests]  # read once when it ended
    assert tab.errors == [], tab.errors
