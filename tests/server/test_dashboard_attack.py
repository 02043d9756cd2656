"""The dashboard over HTTP (a real ``callmeter serve`` on loopback) on hostile data: odd
agent names, session ids and labels, open calls spanning hours, two tenants with the same
names; awkward ranges. No page is ever a 500, and one tenant never sees the other's data."""

from __future__ import annotations

import time
from urllib.parse import quote

import pytest

from store.factory import make_call

from .conftest import BOTH_B, INGEST_A, READ_A, Client

NOW = time.time()
ODD_AGENTS = ["", "*", "=x", "a=b*", "<i>ünï</i> ☎ " * 30, "a&b;c", "%2F..", "agent"]
ODD_IDS = ["a/b", "é ☎", "50%", "x?y=1#z", "..", "  spaced  "]


def _odd_calls(prefix: str, agent_tag: str) -> list:
    recs = []
    for i, agent in enumerate([*ODD_AGENTS, None]):
        for j in range(2):
            recs += make_call(
                f"{prefix}{i}-{j}", t0=NOW - 3 * 3600 + i * 700 + j * 311.5,
                agent=None if agent is None else agent + agent_tag, turns=j + 1,
                labels={"k:v=*": "a:b", "ü": "<b>", " ": ""} if j else {"tier": " "},
                tool_error=j == 1, close=j == 0,
            )  # fmt: skip
    for k, sid in enumerate(ODD_IDS):
        recs += make_call(prefix + sid, t0=NOW - 26 * 3600 + k * 3600, agent="*" + agent_tag)
    # an open call whose records span 30 hours
    recs += make_call(prefix + "long", t0=NOW - 30 * 3600, agent="=x" + agent_tag, close=False)
    late = make_call(prefix + "long", t0=NOW - 600, agent="=x" + agent_tag, close=False)
    for r in late:
        r.seq += 100
    return recs + late


@pytest.fixture(scope="module")
def seeded(server):
    c = Client(server.url)
    for recs, tok in ((_odd_calls("acme-", ""), INGEST_A), (_odd_calls("gx-", "-GLOBEX"), BOTH_B)):
        for i in range(0, len(recs), 400):
            r = c.post_records(recs[i : i + 400], token=tok)
            assert r.status == 200 and r.json()["accepted"] == len(recs[i : i + 400]), r.body
    c.close()
    return server


@pytest.fixture
def web(seeded):
    c = Client(seeded.url)
    r = c.request("POST", "/login", f"token={READ_A}".encode(),
                  {"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert r.status == 303
    c.cookie = r.headers["set-cookie"].split(";")[0]
    yield c
    c.close()


def get(c: Client, path: str):
    return c.request("GET", path, headers={"Cookie": c.cookie})


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t))


H = 3600
ON_HOUR = NOW // H * H
RANGES = [
    (ON_HOUR - 5 * H, ON_HOUR),  # on hour boundaries
    (NOW - 6 * H, NOW),  # 6 h: by 5 minutes
    (NOW - 6 * H - 1, NOW),  # 6 h + 1 s: whole hours
    (NOW - 6 * H + 1, NOW),
    (NOW - 1, NOW),  # a second
    (NOW + 86_400, NOW + 3 * 86_400),  # the future
    (NOW - 400 * 86_400, NOW),  # by days
]


def _overview_paths() -> list[str]:
    paths = ["/", "/?range=1h", "/?range=1d", "/?range=7d", "/?agent=nobody"]
    for a in ODD_AGENTS:
        paths += [f"/?range=1d&agent={quote(a)}", f"/?range=1h&agent={quote(a)}"]
    for since, until in RANGES:
        paths.append(f"/?range=custom&since={since!r}&until={until!r}")
        paths.append(f"/?range=custom&since={_iso(since)}&until={_iso(until)}&agent=%2A")
    paths += ["/?range=custom&since=0001-01-01T00:00&until=0001-01-03T00:00",
              "/?range=custom&since=9999-12-30T00:30&until=9999-12-31T23:30",
              "/?range=custom&since=9999-12-31T23:00&until=9999-12-31T23:59:59.5"]  # fmt: skip
    return paths


def test_no_overview_is_a_500_and_none_shows_the_other_tenant(web):
    for path in _overview_paths():
        r = get(web, path)
        assert r.status == 200, (path, r.status, r.body[-500:])
        html = r.body.decode()
        assert "GLOBEX" not in html and "gx-" not in html, path
    day = get(web, "/?range=1d").body.decode()
    for a in ("=x", "a=b*", "&lt;i&gt;ünï&lt;/i&gt;", "a&amp;b;c", "%2F.."):
        assert f"<td>{a}" in day, a


@pytest.mark.parametrize(
    "query",
    ["range=custom&since=4e22&until=4.0000000000000008e22",
     "range=custom&since=-4.0000000000000008e22&until=-4e22",
     "range=custom&since=-62135596801&until=-62135590000",
     "range=custom&since=2026-01-01T10:00&until=2026-01-01T10:00",
     "range=custom&since=2026-01-02T10:00&until=2026-01-01T10:00"],
)  # fmt: skip
def test_far_reversed_or_empty_custom_ranges_are_a_400_page(web, query):
    r = get(web, f"/?{query}")
    assert r.status == 400 and b'role="alert"' in r.body, r.body[-300:]


def test_far_stats_ranges_are_a_400_not_a_500(seeded):
    c = Client(seeded.url, token=READ_A)
    for since, until in (("4e22", "4.0000000000000008e22"), ("-4.0000000000000008e22", "-4e22")):
        r = c.get("/v1/stats", since=since, until=until, interval="1d")
        assert r.status == 400, r.body
    on = c.get("/v1/stats", since=repr(ON_HOUR - 5 * H), until=repr(ON_HOUR), interval="1h")
    assert on.status == 200
    assert all(b["start"] < ON_HOUR for b in on.json()["buckets"])
    c.close()


def test_calls_pages_with_odd_agents_ids_and_labels(web):
    paths = ["/calls?sort=e2e_p95&order=asc", "/calls?sort=e2e_p95&min_e2e_p95=0",
             "/calls?label=" + quote("k:v=*:a:b"), "/calls?label=" + quote("ü:<b>"),
             "/live"]  # fmt: skip
    paths += [f"/calls?agent={quote(a)}" for a in ODD_AGENTS]
    paths += [f"/calls/{quote('acme-' + sid, safe='')}" for sid in ODD_IDS]
    for path in paths:
        r = get(web, path)
        assert r.status in (200, 404), (path, r.status)
        assert b"GLOBEX" not in r.body and b"gx-" not in r.body, path
    assert get(web, f"/calls/{quote('acme-a/b', safe='')}").status == 200
    assert get(web, f"/calls/{quote('gx-a/b', safe='')}").status == 404
