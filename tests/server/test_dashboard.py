"""The dashboard over HTTP against a real ``callmeter serve`` on loopback: login, pages,
filters, pagination, the call waterfall, the live event stream, hostile parameters."""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from callmeter.errors import InvalidArgumentError
from callmeter.export import JSONLWriter
from callmeter.server.dashboard import dashboard_command, demo_store
from store.factory import make_call

from .conftest import BOTH_B, INGEST_A, READ_A, Client
from .dashboard_seed import real_calls, synthetic_calls


@pytest.fixture(scope="module")
def seeded(server, tmp_path_factory):
    c = Client(server.url)
    recs = real_calls(tmp_path_factory.mktemp("real")) + synthetic_calls(60)
    recs += make_call("xss", agent="<script>alert(1)</script>", labels={"k": '"><b>x'})
    assert c.post_records(recs, token=INGEST_A).status == 200
    assert c.post_records(make_call("globex-secret"), token=BOTH_B).status == 200
    c.close()
    return server


@pytest.fixture
def web(seeded):
    """A client logged in with acme's read token (its cookie)."""
    c = Client(seeded.url)
    r = c.request("POST", "/login", f"token={READ_A}&next=%2Fcalls".encode(),
                  {"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert r.status == 303 and r.headers["location"] == "/calls"
    cookie = r.headers["set-cookie"]
    c.cookie = cookie.split(";")[0]
    yield c
    c.close()


def get(c: Client, path: str, cookie: str | None = None):
    h = {"Cookie": cookie if cookie is not None else getattr(c, "cookie", "")}
    return c.request("GET", path, headers=h)


def rows(html: str, table: str) -> list[str]:
    m = re.search(rf'<table class="{table}">.*?<tbody>(.*?)</tbody>', html, re.S)
    assert m, table
    return re.findall(r"<tr>(.*?)</tr>", m.group(1), re.S)


def ids(html: str) -> list[str]:
    return re.findall(r'<tr><td><a href="/calls/[^"]+">([^<]+)</a>', html)


def test_login_sets_a_secure_http_only_cookie(seeded):
    c = Client(seeded.url)
    r = c.request("POST", "/login", f"token={READ_A}".encode(),
                  {"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    cookie = r.headers["set-cookie"].lower()
    assert r.status == 303
    for flag in ("httponly", "secure", "samesite=strict", "path=/"):
        assert flag in cookie
    c.close()


def test_wrong_token_cannot_see_data(seeded):
    c = Client(seeded.url)
    for cookie in ("", "callmeter_token=wrong-token-123", f"callmeter_token={INGEST_A}",
                   "callmeter_token=" + "x" * 5000):  # fmt: skip
        for path in ("/", "/calls", "/calls/real-0", "/live", "/?range=7d"):
            r = get(c, path, cookie)
            assert r.status == 303 and r.headers["location"].startswith("/login?next=")
            assert b"real-0" not in r.body and b"support" not in r.body
        r = get(c, "/calls/real-0?format=json", cookie)
        assert r.status == 401 and b"real-0" not in r.body
        assert get(c, "/live/events", cookie).status == 401
    for body in (
        b"token=wrong-token-123",
        f"token={INGEST_A}".encode(),
        b"token=",
        b"token=%ff%fe",
        b"token=\xff\xfe",
        b"",
        b"token=" + b"%00" * 100,
    ):
        r = c.request("POST", "/login", body,
                      {"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
        assert r.status == 401 and "set-cookie" not in r.headers
        assert b'role="alert"' in r.body and b"real-0" not in r.body
    r = c.request("POST", "/login", b"token=" + b"a" * 20_000)
    assert r.status == 413
    c.close()


def test_login_next_never_leaves_the_site(seeded):
    c = Client(seeded.url)
    for nxt, want in (
        ("//evil.example/x", "/"),
        ("https://evil.example", "/"),
        ("/\\evil.example", "/"),
        ("/calls?agent=sales", "/calls?agent=sales"),
    ):
        body = f"token={READ_A}&next={quote(nxt, safe='')}".encode()
        r = c.request("POST", "/login", body, {"Content-Type": "application/x-www-form-urlencoded"})
        assert r.headers["location"] == want
    c.close()


def test_tenant_sees_only_its_own_calls(web):
    for path in ("/calls", "/", "/calls?agent=support"):
        assert b"globex-secret" not in get(web, path).body
    assert get(web, "/calls/globex-secret").status == 404


def test_every_page_renders(web):
    for path in ("/", "/?range=1h", "/?range=7d&agent=sales", "/calls", "/calls/real-1",
                 "/live"):  # fmt: skip
        r = get(web, path)
        assert r.status == 200, (path, r.body[:300])
        assert r.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in r.headers["content-security-policy"]
        html = r.body.decode()
        assert not re.search(r"(src|href|action)=\"?(https?:)?//", html)  # nothing from elsewhere
        assert "http://" not in html and "https://" not in html
    for name in ("dashboard.css", "live.js", "favicon.svg", "LICENSE.txt"):
        assert get(web, f"/static/{name}").status == 200
    assert get(web, "/static/nope.js").status == 404
    assert get(web, "/static/..%2Fapp.py").status == 404


def test_overview_has_charts_tables_and_agent_filter(web):
    html = get(web, "/?range=1h").body.decode()
    assert html.count('<svg class="chart') == 4
    for text in ("Calls and active calls", "Cost by kind", "Latency", "Tool error rate",
                 "Costliest calls", "Slowest calls", "By agent", "By model", "TTS TTFB p50",
                 "call-level"):  # fmt: skip
        assert text in html
    agents = [re.sub("<.*?>", "", r.split("</td>")[0]) for r in rows(html, "by-agent")]
    assert set(agents) >= {"support", "sales"}
    one = get(web, "/?range=1h&agent=sales").body.decode()
    assert [re.sub("<.*?>", "", r.split("</td>")[0]) for r in rows(one, "by-agent")] == ["sales"]
    assert all("<td>sales</td>" in r for r in rows(one, "costliest"))
    assert 'value="sales" selected' in one
    # the costliest table is sorted by cost
    costs = [float(m) for m in re.findall(r"<td>\$([\d.]+)", "".join(rows(html, "costliest")))]
    assert costs == sorted(costs, reverse=True) and len(costs) == 5


def test_calls_filters_and_sorts_change_the_table(web):
    everything = ids(get(web, "/calls").body.decode())
    assert len(everything) == 50
    sales = get(web, "/calls?agent=sales").body.decode()
    assert ids(sales) and all("<td>sales</td>" in r for r in rows(sales, "calls"))
    gold = get(web, "/calls?label=tier%3Agold").body.decode()
    assert all("tier: gold" in r for r in rows(gold, "calls"))
    errs = get(web, "/calls?has_errors=true").body.decode()
    assert ids(errs) and all(not r.endswith("<td>0</td>") for r in rows(errs, "calls"))
    asc = get(web, "/calls?sort=cost&order=asc").body.decode()
    costs = [float(x) for x in re.findall(r"<td>\$([\d.]+)", asc)]
    assert costs == sorted(costs) and 'aria-sort="ascending"' in asc
    # the sort links keep the filters
    links = re.findall(r'<a href="/calls\?([^"]+)" data-sort', sales)
    assert links and all("agent=sales" in q.replace("&amp;", "&") for q in links)


def test_cursor_pages_cover_every_call_once(web):
    seen: list[str] = []
    path = "/calls?agent=support&sort=duration"
    while True:
        html = get(web, path).body.decode()
        seen += ids(html)
        m = re.search(r'<a href="/calls\?([^"]+)" rel="next"', html)
        if not m:
            break
        q = parse_qs(m.group(1).replace("&amp;", "&"))
        assert q["agent"] == ["support"] and q["sort"] == ["duration"]  # filters kept
        path = "/calls?" + m.group(1).replace("&amp;", "&")
    api = Client(web.host and f"http://{web.host}:{web.port}")
    want = api.get("/v1/calls", token=READ_A, agent="support", limit="1000").json()["calls"]
    api.close()
    assert len(seen) == len(set(seen)) == len(want) > 30


@pytest.mark.parametrize(
    "query",
    ["min_cost=nan", "min_cost=-1", "min_cost=inf", "min_cost=abc", "min_e2e_p95=1e999",
     "since=yesterday", "until=nan", "sort=drop%20table", "order=sideways", "label=nokey",
     "cursor=AAAA", "cursor=" + "x" * 5000, "has_errors=maybe", "since=%ff%fe"],
)  # fmt: skip
def test_bad_calls_filters_are_a_400_page_never_a_500(web, query):
    r = get(web, f"/calls?{query}")
    assert r.status == 400 and b'role="alert"' in r.body and b'<form method="get"' in r.body


def test_huge_filter_values_find_nothing(web):
    r = get(web, "/calls?label=k:" + "v" * 10_000 + "&agent=" + "a" * 10_000)
    assert r.status == 200 and ids(r.body.decode()) == []


@pytest.mark.parametrize(
    "query", ["range=2y", "range=custom", "range=custom&since=2026-01-02T00:00&until=2026-01-01",
              "range=custom&since=0&until=1e12", "range=custom&since=nan&until=1"],
)  # fmt: skip
def test_bad_overview_ranges_are_a_400_page(web, query):
    r = get(web, f"/?{query}")
    assert r.status == 400 and b'role="alert"' in r.body


def test_custom_range_in_utc(web):
    now = time.time()
    a = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(now - 7200))
    b = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(now + 60))
    html = get(web, f"/?range=custom&since={a}&until={b}").body.decode()
    assert len(rows(html, "costliest")) == 5


def test_markup_in_stored_values_is_escaped(web):
    for path in ("/calls?agent=%3Cscript%3Ealert(1)%3C%2Fscript%3E", "/calls/xss", "/"):
        html = get(web, path).body.decode()
        assert "<script>alert(1)" not in html and "<b>x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in get(web, "/calls/xss").body.decode()


def test_call_page_one_waterfall_bar_per_turn_matching_the_breakdown(web):
    api = Client(f"http://{web.host}:{web.port}", READ_A)
    for sid in ("real-0", "real-1", "real-2"):
        stored = api.get(f"/v1/calls/{sid}").json()
        html = get(web, f"/calls/{sid}").body.decode()
        groups = re.findall(r'<g class="turn".*?</g>', html, re.S)
        assert len(groups) == len(stored["turns"]) == stored["call"]["turns"] >= 1
        scale = max(t["duration"] for t in stored["turns"])
        for g, turn in zip(groups, stored["turns"], strict=True):
            rects = re.findall(r'<rect [^>]*width="([\d.]+)"[^>]*data-component="(\w+)"', g)
            segs = turn["breakdown"]["segments"]
            assert [c for _, c in rects] == [s["component"] for s in segs]
            for (w, _), s in zip(rects, segs, strict=True):
                assert float(w) == pytest.approx((s["end"] - s["start"]) * 600 / scale, abs=2e-3)
        assert "This call as JSON" in html and html.count("<details>") == stored["call"]["records"]
        href = re.search(r'<a href="([^"]+)"[^>]*>This call as JSON', html).group(1)
        j = get(web, href.replace("&amp;", "&")).json()
        assert j["call"] == stored["call"] and j["turns"] == stored["turns"]
    api.close()
    assert get(web, "/calls/nope").status == 404
    assert get(web, "/calls/nope?format=json").status == 404


def test_live_stream_shows_a_new_call_within_two_seconds(web):
    conn = http.client.HTTPConnection(web.host, web.port, timeout=10)
    conn.request("GET", "/live/events", headers={"Cookie": web.cookie})
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("content-type").startswith("text/event-stream")
    sid = f"live-{time.time_ns()}"
    first = make_call(sid, t0=time.time(), close=False)[:1]
    poster = Client(f"http://{web.host}:{web.port}")
    assert poster.post_records(first, token=INGEST_A).status == 200
    t = time.monotonic()
    found = False
    while time.monotonic() - t < 2.0 and not found:
        line = resp.fp.readline().decode()
        if line.startswith("data: "):
            found = sid in [c["id"] for c in json.loads(line[6:])]
    assert found, "the new call did not arrive within 2 s"
    conn.close()
    poster.close()


def test_eight_threads_at_once(web):
    errors: list[object] = []

    def work(k: int) -> None:
        c = Client(f"http://{web.host}:{web.port}")
        try:
            for path in ("/", "/calls?sort=cost", f"/calls/real-{k % 4}", "/live"):
                r = get(c, path, web.cookie)
                if r.status != 200:
                    errors.append((path, r.status))
        except Exception as exc:
            errors.append(exc)
        finally:
            c.close()

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []


def test_without_tokens_there_is_no_login(tmp_path):
    """The app in this process on a real uvicorn (loopback), with no tokens."""
    import uvicorn

    from callmeter.server import create_app
    from callmeter.store import Store

    store = Store(tmp_path / "open.db", prices=None)
    srv = uvicorn.Server(uvicorn.Config(create_app(store), host="127.0.0.1", port=0,
                                        log_level="warning"))  # fmt: skip
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    deadline = time.monotonic() + 30
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.02)
    port = srv.servers[0].sockets[0].getsockname()[1]
    try:
        c = Client(f"http://127.0.0.1:{port}")
        assert c.post_records(make_call("open-1", t0=time.time() - 60)).status == 200
        assert get(c, "/login?next=%2Fcalls", "").headers["location"] == "/calls"
        html = get(c, "/calls", "").body.decode()
        assert "open-1" in html and "Log out" not in html
        assert get(c, "/calls/open-1", "").status == 200
        c.close()
    finally:
        srv.should_exit = True
        th.join(20)
        store.close()


def test_demo_store_is_idempotent(tmp_path):
    from callmeter import AgentSession

    src = tmp_path / "demo.jsonl"
    with JSONLWriter(src) as w, w.attach(AgentSession(session_id="demo-1")):
        pass
    db = tmp_path / "demo db.sqlite"
    stored, dup = demo_store(src, db)
    assert stored >= 2 and dup == 0
    assert demo_store(src, db) == (0, stored)
    with pytest.raises(InvalidArgumentError, match="readable JSONL"):
        demo_store(tmp_path / "missing.jsonl", db)
    cmd = dashboard_command(db)
    assert "callmeter serve --db" in cmd and "'" + str(db) + "'" in cmd
    assert urlsplit(cmd.split()[-1]).path == "/"


def test_overview_series_agrees_with_the_query_layer_stats(tmp_path, monkeypatch):
    from callmeter.server.dashboard import queries as dq
    from callmeter.store import Store
    from callmeter.store import queries as sq

    now = 1_790_000_000.0
    with Store(tmp_path / "s.db", prices=None) as store:
        store.ingest(synthetic_calls(80, now=now) + make_call("open", t0=now - 500, close=False))
        since, until = now - 3600, now
        for agent in (None, "sales"):
            got = dq.series(store, "default", since=since, until=until, interval=300, agent=agent)
            assert got["sample_every"] == 1
            want = sq.stats(store, "default", since=since, until=until, interval=300,
                            group_by="agent" if agent else None)  # fmt: skip
            rows = [b for b in want["buckets"] if agent is None or b["group"] == agent]
            assert rows
            for w in rows:
                g = got["buckets"][w["start"]]
                assert (g["calls"], g["active_calls"]) == (w["calls"], w["active_calls"])
                assert g["cost"] == pytest.approx(w["cost"] or 0.0, abs=1e-9)
                assert (g["e2e_p50"], g["e2e_p95"], g["ttft_p50"]) == (
                    w["e2e_p50"], w["e2e_p95"], w["ttft_p50"])  # fmt: skip
                assert g["tool_error_rate"] == w["tool_error_rate"]
            assert sum(b["calls"] for b in got["buckets"].values()) == sum(r["calls"] for r in rows)
        monkeypatch.setattr(dq, "LATENCY_CALLS", 10)
        # buckets of whole hours come from the rollup: every sketch, never sampled
        assert dq.series(store, "default", since=since, until=until,
                         interval=3600)["sample_every"] == 1  # fmt: skip
        got = dq.series(store, "default", since=since, until=until, interval=900)
        assert got["sample_every"] > 1
        one = next(b for b in got["buckets"].values() if b["e2e_p50"] is not None)
        assert sum(b["calls"] for b in got["buckets"].values()) == 81  # counts stay exact
        assert 0.4 <= one["e2e_p50"] <= 1.3  # a sample, still sane


def test_tts_ttfb_is_the_median_of_the_turns_over_a_systematic_sample(tmp_path, monkeypatch):
    import math

    from callmeter.server.dashboard import queries as dq
    from callmeter.store import Store
    from callmeter.store import queries as sq

    with Store(tmp_path / "s.db", prices=None) as store:
        store.ingest(real_calls(tmp_path, n=6))
        calls = [sq.get_call(store, "default", f"real-{i}") for i in range(6)]
        starts = [c["call"]["started_at"] for c in calls]
        kw = {"since": min(starts), "until": max(starts) + 1, "interval": 60}
        per: dict[float, list[float]] = {}
        for c in calls:
            for t in c["turns"]:
                if (v := t["breakdown"]["tts_ttfb"]) > 0:
                    per.setdefault(math.floor(t["started_at"] / 60) * 60.0, []).append(v)
        want = {b: sorted(v)[(len(v) - 1) // 2] for b, v in per.items()}
        assert want
        assert dq.tts_ttfb_p50(store, "default", **kw) == (want, 1)
        assert dq.tts_ttfb_p50(store, "default", agent="sales", **kw)[0].keys() <= want.keys()
        monkeypatch.setattr(dq, "TTFB_CALLS", 2)
        got, k = dq.tts_ttfb_p50(store, "default", **kw)
        assert k == 3  # 6 calls, at most about 2: the calls of every 3rd minute
        values = {v for vs in per.values() for v in vs}
        assert all(v in values for v in got.values())
