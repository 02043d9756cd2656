"""The dashboard in Debian's Chromium (Playwright) against a real ``callmeter serve`` on
loopback with seeded calls. Writes screenshots of every page at 1280 and 390 px wide under
``out/screenshots/`` (and, with ``CALLMETER_UPDATE_SCREENSHOT=1``, the README's
``docs/dashboard.png``)."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from store.factory import make_call
from test_browser import ARGS, CHROMIUM

from .conftest import INGEST_A, READ_A, Client
from .dashboard_seed import real_calls, synthetic_calls

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium); "
    ".ci/run does this so CI always runs the browser test",
)
ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "out" / "screenshots"
WIDTHS = {1280: 900, 390: 844}


@pytest.fixture(scope="module")
def site(server, tmp_path_factory):
    c = Client(server.url)
    recs = real_calls(tmp_path_factory.mktemp("real"), n=6) + synthetic_calls(40)
    assert c.post_records(recs, token=INGEST_A).status == 200
    c.close()
    return server


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield b
        b.close()


class Watched:
    """A page that records console errors, page errors and failed requests."""

    def __init__(self, context, allow_status: tuple[int, ...] = ()) -> None:
        self.page = context.new_page()
        self.problems: list[str] = []
        p = self.page
        allowed = tuple(f"status of {n} " for n in allow_status)  # the browser logs them too
        p.on("console", lambda m: self.problems.append(m.text)
             if m.type == "error" and not any(a in m.text for a in allowed) else None)  # fmt: skip
        p.on("pageerror", lambda e: self.problems.append(str(e)))
        p.on("requestfailed", self._failed)
        p.on("response", lambda r: self.problems.append(f"{r.status} {r.url}")
             if r.status >= 400 and r.status not in allow_status else None)  # fmt: skip

    def _failed(self, r) -> None:
        # the browser fetches the icon after the page's load event; the test's next
        # navigation may abort that fetch, which is the test's doing, not the page's
        if r.url.endswith("/favicon.svg") and r.failure == "net::ERR_ABORTED":
            return
        self.problems.append(f"failed {r.url} {r.failure}")

    def close(self) -> None:
        assert self.problems == []
        self.page.close()


@pytest.fixture(scope="module")
def contexts(site, browser):
    """Logged-in browser contexts at both widths (login typed once, at 1280 px)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    out = {}
    for w, h in WIDTHS.items():
        out[w] = browser.new_context(viewport={"width": w, "height": h})
    w = Watched(out[1280])
    p = w.page
    p.goto(site.url + "/calls")
    assert p.url.startswith(site.url + "/login?next=")
    for width, ctx in out.items():
        q = Watched(ctx)
        q.page.goto(site.url + "/login")
        q.page.screenshot(path=str(SHOTS / f"login-{width}.png"), full_page=True)
        q.close()
    p.fill("#token", READ_A)
    p.keyboard.press("Enter")
    p.wait_for_url(site.url + "/calls")
    cookie = next(c for c in out[1280].cookies() if c["name"] == "callmeter_token")
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
    assert p.evaluate("document.cookie") == ""  # not readable by scripts
    w.close()
    out[390].add_cookies([cookie])
    yield out
    for ctx in out.values():
        ctx.close()


@pytest.mark.parametrize("width", list(WIDTHS))
def test_every_page_loads_clean_and_is_screenshotted(site, contexts, width):
    for name, path in (("overview", "/?range=1h"), ("calls", "/calls"),
                       ("call", "/calls/real-2"), ("live", "/live")):  # fmt: skip
        w = Watched(contexts[width])
        w.page.goto(site.url + path, wait_until="load")
        assert w.page.locator("main h1").count() == 1
        if name == "live":
            w.page.wait_for_selector("tbody[data-live=open]", state="attached")
        if name == "overview":
            assert w.page.locator("svg.chart").count() == 4
            for svg in w.page.locator("svg.chart").all():
                box = svg.bounding_box()
                assert box and box["width"] <= width and box["height"] > 100
                assert svg.get_attribute("aria-label")
        # nothing wider than the window but the scrollable tables and waterfall
        overflow = w.page.evaluate("document.documentElement.scrollWidth")
        assert overflow <= width, (name, overflow)
        w.page.screenshot(path=str(SHOTS / f"{name}-{width}.png"), full_page=True)
        if name == "overview" and width == 1280 and os.environ.get("CALLMETER_UPDATE_SCREENSHOT"):
            w.page.screenshot(path=str(ROOT / "docs" / "dashboard.png"))
        w.close()
    assert (SHOTS / f"overview-{width}.png").stat().st_size > 10_000


def test_filters_change_the_table_and_the_url(site, contexts):
    w = Watched(contexts[1280])
    p = w.page
    p.goto(site.url + "/calls")
    before = p.locator("table.calls tbody tr").count()
    p.select_option("#f-agent", "sales")
    p.fill("#f-label", "tier:gold")
    p.locator("#f-label").press("Enter")  # the keyboard submits the form
    p.wait_for_url(re.compile(r".*agent=sales.*"))
    assert "label=tier%3Agold" in p.url
    agents = p.locator("table.calls tbody tr td:nth-child(2)").all_inner_texts()
    assert agents and set(agents) == {"sales"} and len(agents) < before
    labels = p.locator("table.calls tbody tr td:nth-child(3)").all_inner_texts()
    assert all("tier: gold" in t for t in labels)
    p.get_by_role("link", name=re.compile("^Cost")).click()
    p.wait_for_url(re.compile(r".*sort=cost.*"))
    assert "agent=sales" in p.url
    costs = [
        0.0 if t == "unknown" else float(t.strip("$ +?"))  # no price: stored as 0
        for t in p.locator("table.calls tbody tr td:nth-child(7)").all_inner_texts()
    ]
    assert costs and any(costs)  # fmt: skip
    assert costs == sorted(costs, reverse=True)
    assert p.locator("th[aria-sort=descending]").count() == 1
    shared = p.url  # the URL alone gives the same table
    w.close()
    w2 = Watched(contexts[390])
    w2.page.goto(shared)
    assert w2.page.locator("table.calls tbody tr td:nth-child(2)").all_inner_texts() == agents
    w2.close()


def test_keyboard_reaches_the_skip_link_and_navigation(site, contexts):
    w = Watched(contexts[1280])
    p = w.page
    p.goto(site.url + "/calls")
    p.keyboard.press("Tab")
    assert p.evaluate("document.activeElement.textContent") == "Skip to content"
    p.keyboard.press("Tab")
    assert p.evaluate("document.activeElement.textContent") == "Overview"
    for sel in ("select", "input:not([type=hidden])"):
        for el in p.locator(sel).all():
            assert el.evaluate("e => e.labels.length") == 1  # every control is labelled
    w.close()


def test_call_page_waterfall_widths_match_the_stored_breakdown(site, contexts):
    api = Client(site.url, READ_A)
    w = Watched(contexts[1280])
    p = w.page
    for sid in ("real-1", "real-2"):
        stored = api.get(f"/v1/calls/{sid}").json()
        p.goto(site.url + f"/calls/{sid}")
        groups = p.locator("svg.waterfall g.turn").all()
        assert len(groups) == len(stored["turns"]) == stored["call"]["turns"]
        px_per_s = []
        for g, turn in zip(groups, stored["turns"], strict=True):
            rects = g.locator("rect").all()
            segs = turn["breakdown"]["segments"]
            assert [r.get_attribute("data-component") for r in rects] == [
                s["component"] for s in segs
            ]
            for r, s in zip(rects, segs, strict=True):
                box = r.bounding_box()
                if s["end"] - s["start"] > 0.05:
                    px_per_s.append(box["width"] / (s["end"] - s["start"]))
        assert px_per_s and max(px_per_s) / min(px_per_s) < 1.02  # one scale for all bars
        p.get_by_text(re.compile(r"^\d+ record\(s\)$")).click()  # records expand
        assert p.locator("details.records li").count() == stored["call"]["records"]
    href = p.get_by_role("link", name="This call as JSON").get_attribute("href")
    assert href == "/calls/real-2?format=json"
    w.close()
    api.close()


def test_live_page_shows_a_new_call_within_two_seconds(site, contexts):
    w = Watched(contexts[1280])
    p = w.page
    p.goto(site.url + "/live")
    p.wait_for_selector("tbody[data-live=open]", state="attached")
    sid = f"live-{time.time_ns()}"
    c = Client(site.url)
    t = time.monotonic()
    assert c.post_records(make_call(sid, t0=time.time(), close=False)[:1],
                          token=INGEST_A).status == 200  # fmt: skip
    p.wait_for_selector(f'tr[data-session-id="{sid}"]', timeout=5000)
    elapsed = time.monotonic() - t
    assert elapsed < 2.0, elapsed
    assert sid in p.locator("#live-status").inner_text() or "active now" in (
        p.locator("#live-status").inner_text()
    )
    c.close()
    w.close()


def test_a_wrong_token_cannot_see_data(site, browser):
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    w = Watched(ctx, allow_status=(401,))
    p = w.page
    for path in ("/", "/calls", "/calls/real-1", "/live"):
        p.goto(site.url + path)
        assert "/login?next=" in p.url and p.locator("main table").count() == 0
        assert "support" not in p.content() and "sales" not in p.content()
    p.fill("#token", "not-the-token-123")
    p.keyboard.press("Enter")
    p.wait_for_selector("[role=alert]")
    assert "/login" in p.url and p.locator("main table").count() == 0
    assert "support" not in p.content()
    assert ctx.cookies() == []
    w.close()
    ctx.close()
