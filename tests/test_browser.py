"""The HTML report in a real headless Chromium (Playwright driving Debian's chromium)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("CALLMETER_CHROMIUM", "/usr/bin/chromium"))
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

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason=f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium); "
    ".ci/run does this so CI always runs the browser test",
)


@pytest.fixture
def report_html(tmp_path):
    from callmeter import AgentSession
    from callmeter.export import JSONLWriter
    from callmeter.report import write_html
    from test_report import tool_turn

    path = tmp_path / "calls.jsonl"
    with JSONLWriter(path) as w:
        for i in range(3):
            s = w.attach(AgentSession(session_id=f"call_{i}", agent_name="browser"))
            with s:
                for k in range(i + 1):
                    tool_turn(s, f"t{i}{k}", 0.2 + 0.4 * k)
        with w.attach(AgentSession(session_id="call_empty")):
            pass  # a call without turns still gets its (empty) waterfall
    return write_html(path, tmp_path / "report.html")


def test_html_report_opens_without_errors_one_waterfall_per_call(report_html):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            page = browser.new_page()
            errors: list[str] = []
            requests: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(report_html.as_uri(), wait_until="load")
            assert errors == []
            assert requests == [report_html.as_uri()]  # self-contained: nothing else fetched
            assert page.locator("section.call").count() == 4
            assert page.locator("svg.waterfall").count() == 4
            for i in range(3):
                svg = page.locator(f"section.call#call_{i} svg.waterfall")
                assert svg.count() == 1
                # one row per turn: one duration label per turn after the bars
                assert svg.locator("text", has_text=" s").count() >= i + 1
                box = svg.bounding_box()
                assert box is not None and box["width"] > 600 and box["height"] > 20
            assert (
                page.locator("section.call#call_empty svg.waterfall").inner_html().count("no turns")
                == 1
            )
            tool_rect = page.locator('rect[fill="#3d85c6"]').first
            assert "tools" in tool_rect.locator("title").text_content()
        finally:
            browser.close()


def test_html_report_clips_adversarial_segments_in_the_browser(tmp_path):
    from playwright.sync_api import sync_playwright

    from callmeter.model.types import TurnSegment
    from callmeter.report import write_html
    from test_report_stream import call_lines, turn, write

    weird = turn(
        "weird",
        2.0,
        [
            TurnSegment(component="quantum_wait", start=-5.0, end=0.5),
            TurnSegment(component="tool", start=0.5, end=1e300),
        ],
    )
    many = [turn(f"t{i}", 1.0) for i in range(60)]
    lines = call_lines("<weird>", turns=[weird]) + call_lines("long", turns=many)
    html = write_html(write(tmp_path / "w.jsonl", lines), tmp_path / "w.html")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(html.as_uri(), wait_until="load")
            assert errors == [] and page.locator("section.call").count() == 2
            svg = page.locator("svg.waterfall").first
            box = svg.bounding_box()
            assert box is not None
            for rect in svg.locator("rect").all():
                r = rect.bounding_box()
                assert r is not None and r["x"] + r["width"] <= box["x"] + box["width"] + 0.5
            unknown = svg.locator("rect title", has_text="?quantum_wait")
            assert unknown.count() == 1
            long_svg = page.locator("svg.waterfall").nth(1)
            assert long_svg.locator("rect").count() == 40  # the first 40 turns are drawn
            assert "20 more turns" in long_svg.inner_html()
        finally:
            browser.close()
