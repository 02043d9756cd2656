"""Server-side render time of the dashboard's pages over 100,000 stored calls on SQLite.

    python bench/dashboard.py            # 100,000 calls (5,000,000 records)
    python bench/dashboard.py --quick    # 10,000 calls, for a smoke run
    python bench/dashboard.py --db PATH  # reuse a database built by an earlier run

The database is the one of ``bench/ingest.py`` (1,000 calls ingested for real, cloned
with SQL over 30 days, 5 agents), with the turns of the 1,000 calls cloned too (the
overview's TTS TTFB reads them). Against a real ``callmeter serve`` on loopback, each
page is fetched over HTTP (the full server-side render: queries, HTML, SVG) interleaved
with its baseline, the JSON API request that reads the same rows:

- overview over the last day of data, then the last week (all agents, and one), ending
  mid-hour like a range ending now, vs GET /v1/stats (the same whole hours the page
  draws);
- calls (10 filter/sort mixes, a second page) vs GET /v1/calls (same parameters);
- call detail (50 records, 12 turns) vs GET /v1/calls/{id}.

Prints p50/p95 per page and the ratio of medians page / baseline. Goal: p95 < 300 ms.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import socket
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest import T0, build_query_db, pct, start_server

DAY = 86_400


def get(conn: http.client.HTTPConnection, path: str) -> tuple[float, bytes]:
    t = time.perf_counter()
    conn.request("GET", path)
    r = conn.getresponse()
    body = r.read()
    elapsed = time.perf_counter() - t
    assert r.status == 200, (path, r.status, body[:200])
    return elapsed, body


def clone_turns(db: str) -> None:
    """Give the cloned calls (``seed-I-cK``) the turns of their seed call, shifted like
    their start (the clones of ``bench/ingest.py`` have none), once."""
    conn = sqlite3.connect(db, isolation_level=None)
    n_calls = conn.execute("SELECT count(*) FROM calls").fetchone()[0]
    n_turns = conn.execute("SELECT count(*) FROM turns").fetchone()[0]
    seeds = conn.execute("SELECT count(*) FROM turns WHERE session_id NOT LIKE '%-c%'")
    n_seed = seeds.fetchone()[0]
    copies = n_calls // 1000
    if n_turns >= n_seed * copies:
        conn.close()
        return
    span = 30 * DAY / copies  # as in ingest.build_query_db
    cols = [r[1] for r in conn.execute("PRAGMA table_info(turns)")]
    conn.execute("BEGIN")
    for k in range(1, copies):
        sel = [f"session_id || '-c{k}'" if c == "session_id"
               else f"started_at + {k * span}" if c == "started_at" else c
               for c in cols]  # fmt: skip
        conn.execute(f"INSERT OR IGNORE INTO turns ({', '.join(cols)}) SELECT {', '.join(sel)} "
                     "FROM turns WHERE session_id NOT LIKE '%-c%'")  # fmt: skip
    conn.execute("COMMIT")
    conn.close()


def cases() -> dict[str, list[tuple[str, str]]]:
    """Per page: (page path, baseline API path) pairs."""
    end = T0 + 30 * DAY - 1234.5  # mid-hour, as "now" is: the rollup has parts of hours
    out: dict[str, list[tuple[str, str]]] = {}
    for days in (1, 7):
        overview = out[f"overview {days}d"] = []
        for agent in ("", "agent-2"):
            q = {"range": "custom", "since": str(end - days * DAY), "until": str(end)}
            if agent:
                q["agent"] = agent
            # the page draws whole hours over whole buckets: the same range for the API
            lo, hi = math.floor((end - days * DAY) / 3600), math.ceil(end / 3600)
            base = {"since": str(lo * 3600), "until": str(hi * 3600), "interval": "1h"}
            if agent:
                base["group_by"] = "agent"
            overview.append(("/?" + urlencode(q), "/v1/stats?" + urlencode(base)))
    mixes = [
        {}, {"sort": "cost"}, {"sort": "e2e_p95"}, {"sort": "duration", "order": "asc"},
        {"agent": "agent-3"}, {"label": "tier:free"}, {"has_errors": "true"},
        {"min_cost": "0.003"}, {"min_e2e_p95": "2"},
        {"since": str(T0 + 10 * DAY), "until": str(T0 + 11 * DAY)},
    ]  # fmt: skip
    calls = [("/calls?" + urlencode(m), "/v1/calls?" + urlencode(m)) for m in mixes]
    detail = [(f"/calls/seed-{i}", f"/v1/calls/seed-{i}") for i in (5, 500, 999)]
    return {**out, "calls": calls, "call detail": detail}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--db", help="an existing database from an earlier run")
    ap.add_argument("--rounds", type=int, default=0)
    args = ap.parse_args()
    n_calls = 10_000 if args.quick else 100_000
    rounds = args.rounds or (5 if args.quick else 15)
    with tempfile.TemporaryDirectory() as d:
        db = args.db or str(Path(d) / "dash.db")
        if not args.db or not Path(db).exists():
            build_query_db(db, n_calls)
        clone_turns(db)
        conn0 = sqlite3.connect(db)
        n_calls = conn0.execute("SELECT count(*) FROM calls").fetchone()[0]
        conn0.close()
        proc, url = start_server(db)
        host, port = url.split("//")[1].split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        conn.connect()
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            plan = cases()
            # the second page of calls needs a cursor from the first
            _, first = get(conn, "/v1/calls?sort=cost")
            cur = json.loads(first)["next_cursor"]
            plan["calls"].append(
                (f"/calls?sort=cost&cursor={cur}", f"/v1/calls?sort=cost&cursor={cur}")
            )
            for page, base in (p for ps in plan.values() for p in ps):  # warm up once
                get(conn, page)
                get(conn, base)
            times: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in plan}
            for _ in range(rounds):
                for name, pairs in plan.items():
                    for page, base in pairs:  # interleaved: page, then its baseline
                        times[name][0].append(get(conn, page)[0])
                        times[name][1].append(get(conn, base)[0])
        finally:
            conn.close()
            proc.terminate()
            proc.wait()
    ms = 1000
    print(f"dashboard pages over {n_calls:,} calls on SQLite, {rounds} rounds, interleaved:")
    for name, (page_t, base_t) in times.items():
        p50, p95 = pct(page_t, 0.5), pct(page_t, 0.95)
        b50 = pct(base_t, 0.5)
        verdict = "ok" if p95 < 0.3 else "OVER"
        print(f"  {name:<12} {len(page_t):>4} requests: p50 {p50 * ms:6.1f} ms, "
              f"p95 {p95 * ms:6.1f} ms ({verdict}: goal p95 < 300 ms); baseline API p50 "
              f"{b50 * ms:6.1f} ms, page / API {p50 / b50:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
