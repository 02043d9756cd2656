"""Ingest and query speed of the store and server, on SQLite.

    python bench/ingest.py            # full run (100,000 calls / 5,000,000 records)
    python bench/ingest.py --quick    # smaller, for a smoke run
    python bench/ingest.py --query-db big.db   # queries only (the database is kept)

1. End to end: records through HTTPExporter -> HTTP -> ``callmeter serve`` -> SQLite, in
   records per second, beside the storage floor measured in the same run: the same record
   rows inserted into the same table with ``executemany`` (one transaction per batch of the
   same size, same pragmas). Rounds are interleaved; medians are reported.
2. Queries: a database of 100,000 calls and 5,000,000 records, then ``GET /v1/calls`` (pages
   of 50 with various filters and sorts) and ``GET /v1/stats`` over 30 days by hour, each
   timed over HTTP (p50/p95).
"""

from __future__ import annotations

import argparse
import http.client
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from callmeter.export.http import HTTPExporter
from callmeter.records import encode
from callmeter.store import Store
from callmeter.store.queries import stats as query_stats
from callmeter.store.rollup import rebuild
from store.factory import make_call

T0 = 1_767_225_600.0  # 2026-01-01


def start_server(db: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "callmeter", "serve", "--db", db, "--port", "0"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    url = proc.stdout.readline().split()[3]
    host, port = url.split("//")[1].split(":")
    for _ in range(600):
        try:
            c = http.client.HTTPConnection(host, int(port))
            c.request("GET", "/health")
            if c.getresponse().status == 200:
                break
        except OSError:
            time.sleep(0.05)
    return proc, url


def records_for(n_calls: int, prefix: str) -> list:
    recs = []
    for i in range(n_calls):
        recs += make_call(f"{prefix}-{i}", t0=T0 + i, turns=12)  # 50 records a call
    return recs


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of process ``pid`` (Linux; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def end_to_end(recs: list, tmp: Path, k: int, cpu: list[float]) -> float:
    db = str(tmp / f"e2e-{k}.db")
    Store(db, prices=False).close()  # created and migrated before the clock starts
    proc, url = start_server(db)
    try:
        ex = HTTPExporter(url, batch_size=2000, flush_interval=0.05, max_queue=len(recs) + 1)
        c0 = cpu_seconds(proc.pid)
        t = time.perf_counter()
        for r in recs:
            ex.receive(r)
        assert ex.flush(timeout=600)
        elapsed = time.perf_counter() - t
        c1 = cpu_seconds(proc.pid)
        if c0 is not None and c1 is not None:
            cpu.append((c1 - c0) / len(recs))
        ex.close()
        assert ex.sent == len(recs) and ex.dropped == 0
    finally:
        proc.terminate()
        proc.wait()
    return len(recs) / elapsed


def floor(recs: list, tmp: Path, k: int, batch: int = 2000) -> float:
    db = tmp / f"floor-{k}.db"
    Store(db, prices=False).close()  # the same schema and indexes
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    sql = ("INSERT INTO records (tenant, session_id, seq, part_time, created_at, event, kind, "
           "body) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")  # fmt: skip
    t = time.perf_counter()
    for i in range(0, len(recs), batch):
        rows = [("default", r.session_id, r.seq, T0, r.created_at, "e", None, encode(r))
                for r in recs[i : i + batch]]  # fmt: skip
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(sql, rows)
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - t
    conn.close()
    return len(recs) / elapsed


def build_query_db(db: str, calls: int, seed_calls: int = 1000, records: bool = True) -> None:
    """``seed_calls`` calls ingested for real, then cloned (SQL) to ``calls`` calls (without
    their records when ``records`` is false: lists and statistics never read them)."""
    with Store(db, prices=None) as s:
        recs = []
        for i in range(seed_calls):
            agent = f"agent-{i % 5}"
            recs += make_call(f"seed-{i}", t0=T0 + i * 60, turns=12, agent=agent,
                              labels={"tier": "gold" if i % 3 else "free"},
                              e2e=0.5 + (i % 40) * 0.05, tool_error=i % 17 == 0)  # fmt: skip
            if len(recs) >= 20_000:
                s.ingest(recs)
                recs = []
        if recs:
            s.ingest(recs)
    copies = calls // seed_calls
    span = 30 * 86_400 / copies  # spread over 30 days
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("BEGIN")
    cols = [r[1] for r in conn.execute("PRAGMA table_info(calls)")]
    for k in range(1, copies):
        shift = k * span
        sel = []
        for c in cols:
            if c == "session_id":
                sel.append(f"session_id || '-c{k}'")
            elif c in ("started_at", "last_at", "ended_at", "part_time"):
                sel.append(f"{c} + {shift}")
            elif c == "start_minute":
                sel.append(f"CAST(floor((started_at + {shift}) / 60) AS INTEGER)")
            else:
                sel.append(c)
        seeds = "session_id LIKE 'seed-%' AND session_id NOT LIKE '%-c%'"
        conn.execute(f"INSERT INTO calls ({', '.join(cols)}) SELECT {', '.join(sel)} "
                     f"FROM calls WHERE {seeds}")  # fmt: skip
        for table in ("call_labels", "call_models"):
            tcols = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
            tsel = [f"session_id || '-c{k}'" if c == "session_id" else c for c in tcols]
            conn.execute(f"INSERT INTO {table} ({', '.join(tcols)}) SELECT {', '.join(tsel)} "
                         f"FROM {table} WHERE session_id NOT LIKE '%-c%'")  # fmt: skip
        if not records:
            continue
        conn.execute(
            "INSERT INTO records (tenant, session_id, seq, part_time, created_at, event, kind, "
            f"body) SELECT tenant, session_id || '-c{k}', seq, part_time + {shift}, "
            f"created_at + {shift}, event, kind, body FROM records WHERE session_id NOT LIKE '%-c%'"
        )  # fmt: skip
    conn.execute("COMMIT")
    conn.close()
    with Store(db, prices=None) as s, s.write_engine.begin() as wconn:
        rebuild(wconn)  # the clones went around ingest: build their hourly rollup
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("ANALYZE")
    n_calls = conn.execute("SELECT count(*) FROM calls").fetchone()[0]
    n_recs = conn.execute("SELECT count(*) FROM records").fetchone()[0]
    conn.close()
    print(f"query database: {n_calls:,} calls, {n_recs:,} records")


def timed_get(conn: http.client.HTTPConnection, path: str) -> float:
    t = time.perf_counter()
    conn.request("GET", path)
    r = conn.getresponse()
    r.read()
    assert r.status == 200, path
    return time.perf_counter() - t


def pct(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, round(q * (len(v) - 1)))]


def queries(db: str, rounds: int) -> None:
    proc, url = start_server(db)
    host, port = url.split("//")[1].split(":")
    conn = http.client.HTTPConnection(host, int(port))
    conn.connect()
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        list_params = [
            {}, {"sort": "cost"}, {"sort": "e2e_p95"}, {"sort": "duration", "order": "asc"},
            {"agent": "agent-3"}, {"label": "tier:free"}, {"has_errors": "true"},
            {"min_cost": "0.003"}, {"min_e2e_p95": "2"},
            {"since": str(T0 + 10 * 86_400), "until": str(T0 + 11 * 86_400)},
        ]  # fmt: skip
        calls_t = []
        for i in range(rounds * len(list_params)):
            p = list_params[i % len(list_params)]
            calls_t.append(timed_get(conn, "/v1/calls?" + urlencode(p)))
        # follow cursors a few pages deep too
        stats_t = []
        q = {"since": str(T0), "until": str(T0 + 30 * 86_400), "interval": "1h"}
        for _ in range(5):
            stats_t.append(timed_get(conn, "/v1/stats?" + urlencode(q)))
        grouped_t = []
        for g in ("agent", "model", "label:tier"):
            grouped_t.append(timed_get(conn, "/v1/stats?" + urlencode(q | {"group_by": g})))
    finally:
        proc.terminate()
        proc.wait()
    ms = 1000
    print(f"GET /v1/calls ({len(calls_t)} requests, 10 filter/sort mixes): "
          f"p50 {pct(calls_t, 0.5) * ms:.1f} ms, p95 {pct(calls_t, 0.95) * ms:.1f} ms "
          f"(goal: p95 < 100 ms)")  # fmt: skip
    print(f"GET /v1/stats 30 days by hour ({len(stats_t)} requests): "
          f"p50 {pct(stats_t, 0.5) * ms:.1f} ms, p95 {pct(stats_t, 0.95) * ms:.1f} ms "
          f"(goal: < 300 ms)")  # fmt: skip
    print(
        "GET /v1/stats 30 days by hour, grouped by agent / model / label:tier: "
        + ", ".join(f"{t * ms:.0f} ms" for t in grouped_t)
    )
    # in process: the hourly rollup against the baseline, the same stats from the call rows
    kw = {"since": T0, "until": T0 + 30 * 86_400, "interval": "1h"}
    times: dict[bool, list[float]] = {True: [], False: []}
    with Store(db, prices=None) as s:
        for _ in range(3):  # interleaved
            for use in (False, True):
                t = time.perf_counter()
                query_stats(s, "default", rollup=use, **kw)
                times[use].append(time.perf_counter() - t)
    fast, slow = statistics.median(times[True]), statistics.median(times[False])
    print(f"stats() 30 days by hour, in process (medians of 3): rollup {fast * ms:.0f} ms, "
          f"call rows (baseline) {slow * ms:.0f} ms, {slow / fast:.0f}x faster")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--query-db", help="queries only, on this database (built there if missing)")
    ap.add_argument("--calls", type=int, help="calls in the query database (default 100,000)")
    ap.add_argument("--ingest-only", action="store_true", help="skip the query phase")
    ap.add_argument("--rounds", type=int, default=3, help="ingest rounds (default 3)")
    ap.add_argument(
        "--no-records",
        action="store_true",
        help="build the query database without copies of the records (faster)",
    )
    args = ap.parse_args()
    size = args.calls or (10_000 if args.quick else 100_000)
    if args.query_db:
        if not Path(args.query_db).exists():
            build_query_db(args.query_db, size, records=not args.no_records)
        queries(args.query_db, rounds=10 if args.quick else 30)
        return
    n_calls = 200 if args.quick else 1000  # 50 records a call
    rounds = args.rounds
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        e2e, fl, cpu = [], [], []
        for k in range(rounds):  # interleaved
            recs = records_for(n_calls, f"r{k}")
            fl.append(floor(recs, tmp, k))
            e2e.append(end_to_end(recs, tmp, k, cpu))
        m_e2e, m_fl = statistics.median(e2e), statistics.median(fl)
        print(f"ingest, {n_calls * 50:,} records a round, {rounds} rounds (medians):")
        print(f"  storage floor (executemany into records): {m_fl:,.0f} records/s")
        print(f"  end to end (HTTPExporter -> HTTP -> serve -> SQLite): {m_e2e:,.0f} records/s")
        print(f"  ratio end to end / floor: {m_e2e / m_fl:.0%} (goal: >= 50 %)")
        if cpu:
            print(f"  server CPU (user + system) per record: {statistics.median(cpu) * 1e6:.1f} us")
        ratios = ", ".join(f"{a / b:.0%}" for a, b in zip(e2e, fl, strict=True))
        print(f"  ratio by round: {ratios}; load average {load0:.1f} -> {os.getloadavg()[0]:.1f}")
        if args.ingest_only:
            return
        db = str(tmp / "query.db")
        build_query_db(db, size, records=not args.no_records)
        queries(db, rounds=10 if args.quick else 30)


if __name__ == "__main__":
    main()
