"""Attacks on the ingest path: groups of batches with a failing batch, two tenants and
duplicates in one group, cancelled batches, bodies that bend the JSONL format, the NUL
check, batches out of order in a group, and sketch percentiles on edge inputs."""

from __future__ import annotations

import gzip as gz
import logging
import math
import random
import socket
import threading
import time

import pytest
import sqlalchemy as sa

from callmeter.metrics import LLMMetrics, Metadata
from callmeter.records import MetricsCollectedEvent, SessionStartedEvent, encode_lines
from callmeter.server import Limits, create_app
from callmeter.server.auth import Tokens
from callmeter.server.body import parse_body
from callmeter.server.writer import Writer
from callmeter.store import Store, schema
from callmeter.store.sketch import Sketch
from store.conftest import (  # noqa: F401 - the store fixtures (SQLite and PostgreSQL)
    pg_cluster,
    pg_template,
    sqlite_template,
    store_url,
)
from store.factory import make_call
from store.test_store_batches import call_rows, table_rows

from .conftest import Client, serve_in_thread

TOK_A, TOK_B = "attack-token-a-1", "attack-token-b-1"


@pytest.fixture
def live(tmp_path):
    """create_app on a real uvicorn (loopback) with two tenants; the store's records table
    refuses the session ``poison`` (a database error inside a group)."""
    store = Store(tmp_path / "a.db", prices=False)
    with store.write_engine.begin() as c:
        c.exec_driver_sql(
            "CREATE TRIGGER poison BEFORE INSERT ON records WHEN NEW.session_id = 'poison' "
            "BEGIN SELECT RAISE(ABORT, 'poisoned'); END"
        )
    tokens = Tokens.parse([f"{TOK_A}:ta:ingest+read", f"{TOK_B}:tb:ingest+read"], "test")
    app = create_app(store, tokens, Limits(max_records=50))
    with serve_in_thread(app) as url:
        yield url, store
    store.close()


def _in_one_group(url: str, store: Store, posts: list[tuple[str, list]]) -> list:
    """POST every batch while the writer is held, so that it takes them as one group."""
    replies: list = [None] * len(posts)

    def send(i: int) -> None:
        tok, recs = posts[i]
        replies[i] = Client(url, tok).post_records(recs)

    with store._lock:
        threads = [threading.Thread(target=send, args=(i,)) for i in range(len(posts))]
        for th in threads:
            th.start()
        c = Client(url, TOK_A)
        deadline = time.monotonic() + 20
        # all queued, but for one the writer may have taken before the others came
        want = sum(len(r) for _, r in posts) - max(len(r) for _, r in posts)
        while c.get("/health").json()["queue_depth"] < want:
            if time.monotonic() > deadline:
                break
            time.sleep(0.01)
    for th in threads:
        th.join(20)
    return replies


def _stored(store: Store, tenant: str) -> set[tuple[str, int]]:
    r = schema.records
    with store.read_engine.connect() as c:
        q = sa.select(r.c.session_id, r.c.seq).where(r.c.tenant == tenant)
        return {(s, q_) for s, q_ in c.execute(q)}


def test_a_failing_batch_fails_alone_in_its_group_and_tenants_stay_apart(live):
    url, store = live
    a, b, shared = make_call("a1"), make_call("b1"), make_call("shared")
    poison = make_call("poison")
    replies = _in_one_group(
        url,
        store,
        [
            (TOK_A, a[:8] + shared),
            (TOK_A, poison),
            (TOK_B, shared + b),  # same session ids, another tenant: two calls
            (TOK_A, a[5:] + a[5:6]),  # overlaps the first batch, a duplicate inside
        ],
    )
    assert [r.status for r in replies] == [200, 503, 200, 200]
    assert "retry-after" in replies[1].headers
    assert replies[2].json() == {"accepted": len(shared) + len(b), "duplicates": 0,
                                 "rejected": []}  # fmt: skip
    # the first and the fourth batch share 3 records (+1 inside the fourth): whichever of
    # the two was stored first, the pair accounts for every record once
    r0, r3 = replies[0].json(), replies[3].json()
    assert r0["accepted"] + r3["accepted"] == len(a) + len(shared)
    assert r0["duplicates"] + r3["duplicates"] == 3 + 1
    ta, tb = _stored(store, "ta"), _stored(store, "tb")
    assert ta == {(r.session_id, r.seq) for r in a + shared}  # acknowledged = committed
    assert tb == {(r.session_id, r.seq) for r in shared + b}
    assert not any(s == "poison" for s, _ in ta | tb)
    c = Client(url, TOK_B)
    assert c.get("/v1/calls/a1").status == 404  # tenant a's call is not b's
    assert c.get("/v1/calls/shared").json()["call"]["records"] == len(shared)
    # the server goes on: the poisoned batch keeps failing, the next batch is stored
    assert c.post_records(poison, token=TOK_A).status == 503
    assert c.post_records(make_call("b2")).json()["accepted"] == 14


def test_a_cancelled_batch_neither_stops_the_writer_nor_holds_the_others(tmp_path):
    with Store(tmp_path / "c.db", prices=False) as store:
        w = Writer(store, max_queue=1000)
        with store._lock:  # the writer is held in its first group
            first = w.submit("t", make_call("c-0"))
            deadline = time.monotonic() + 10
            while w.depth and w._items:  # taken
                assert time.monotonic() < deadline
                time.sleep(0.005)
            gone = w.submit("t", make_call("c-1"))
            kept = w.submit("t", make_call("c-2"))
            assert gone.cancel()  # its request went away (a cancelled task)
        assert first.result(10).accepted == 14
        assert kept.result(10).accepted == 14  # not left waiting forever
        assert w.submit("t", make_call("c-3")).result(10).accepted == 14
        assert w.depth == 0
        assert {s for s, _ in _stored(store, "t")} == {"c-0", "c-2", "c-3"}
        w.stop()


def _line(seq: int, sid: str = "s", **extra: str) -> bytes:
    fields = "".join(f',"{k}":"{v}"' for k, v in extra.items())
    return b'{"event":"session_started","session_id":"%s","seq":%d,"created_at":1.0%s}' % (
        sid.encode(),
        seq,
        fields.encode(),
    )


def test_several_records_on_one_line_do_not_pass_max_records(live):
    url, _store = live
    c = Client(url, TOK_A)
    body = b"".join(_line(i, "many") for i in range(60)) + b"\n"  # 60 > max_records=50
    r = c.request("POST", "/v1/records", body, {"Content-Type": "application/x-ndjson"})
    assert r.status in (400, 413), r.body
    assert c.get("/v1/calls/many").status == 404
    # and the lines are what counts: two records on line 2 are that line's error
    body = _line(0, "two") + b"\n" + _line(1, "two") + _line(2, "two") + b"\n" + _line(3, "two")
    p = parse_body(body, json_array=False, max_records=50)
    assert [r.seq for r in p.records] == [0, 3] and [x["line"] for x in p.rejected] == [2]
    # blank lines, CRLF and a record over two lines: line numbers still from 1
    body = b"\r\n" + _line(0, "crlf") + b"\r\n\n  \n{\n" + _line(1, "crlf")[1:] + b"\n"
    p = parse_body(body, json_array=False, max_records=50)
    assert [r.seq for r in p.records] == [0] and [x["line"] for x in p.rejected] == [5, 6]
    for data in (b"\xef\xbb\xbf" + _line(0), _line(0)[:-1] + b',"x":"\\ud800"}'):
        p = parse_body(data, json_array=False, max_records=50)
        assert not p.records and [x["line"] for x in p.rejected] == [1]  # no exception
    for data in (b"\n\n", b"", b" \r\n"):
        r = c.request("POST", "/v1/records", data, {"Content-Type": "application/x-ndjson"})
        assert r.status == 400 and r.json()["accepted"] == 0


def test_a_backslash_before_u0000_is_no_nul(live):
    url, store = live
    c = Client(url, TOK_A)
    # the string holds a backslash then "u0000": JSON escapes it as \\u0000
    ok = _line(0, "path", agent_name="C:\\\\u0000dir")
    nul = _line(1, "path", agent_name="bad\\u0000")  # a real NUL in a stored field
    odd = _line(2, "path", agent_name="x\\\\\\u0000")  # a backslash, then a NUL
    unknown = _line(3, "path", future_field="z\\u0000")  # not stored: dropped
    body = b"\n".join([ok, nul, odd, unknown]) + b"\n"
    r = c.request("POST", "/v1/records", body, {"Content-Type": "application/x-ndjson"})
    assert r.status == 200, r.body
    assert r.json()["accepted"] == 2
    assert [x["line"] for x in r.json()["rejected"]] == [2, 3]
    assert "NUL" in r.json()["rejected"][0]["error"]
    call = c.get("/v1/calls/path").json()["call"]
    assert call["agent_name"] == "C:\\u0000dir"
    for data in (ok + b"\n", ok + b"\n" + unknown + b"\n"):  # the batch path, alone
        assert len(parse_body(data, json_array=False, max_records=9).records) == data.count(b"\n")
    assert _stored(store, "ta") == {("path", 0), ("path", 3)}


def test_every_member_of_a_gzip_body_is_read_or_the_body_refused(live):
    url, store = live
    c = Client(url, TOK_A)
    one, two = encode_lines(make_call("gz-1")), encode_lines(make_call("gz-2"))
    headers = {"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"}
    # two gzip members are one gzip file (as gzip.decompress reads it): a 200 must mean
    # both were stored, not the first one only
    r = c.request("POST", "/v1/records", gz.compress(one) + gz.compress(two), headers)
    assert r.status == 200 and r.json()["accepted"] == 28
    assert {s for s, _ in _stored(store, "ta")} == {"gz-1", "gz-2"}
    r = c.request("POST", "/v1/records", gz.compress(one) + b"\0" * 8, headers)  # padding
    assert r.status == 200 and r.json()["duplicates"] == 14
    for bad in (gz.compress(one) + b"trailing junk", gz.compress(one) + gz.compress(two)[:30]):
        r = c.request("POST", "/v1/records", bad, headers)
        assert r.status == 400 and "gzip" in r.json()["rejected"][0]["error"]
    # the members together are held to --max-body once decompressed
    big = gz.compress(b"\n" * 16 * 1024 * 1024)
    r = c.request("POST", "/v1/records", gz.compress(one) + big, headers)
    assert r.status == 413


def test_a_client_gone_mid_body_is_no_server_error(live, caplog):
    url, store = live
    port = int(url.rsplit(":", 1)[1])
    errors = logging.getLogger("uvicorn.error")
    errors.addHandler(caplog.handler)
    try:
        body = encode_lines(make_call("cut"))
        head = (
            b"POST /v1/records HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
            b"Content-Type: application/x-ndjson\r\nContent-Length: %d\r\n\r\n"
            % (TOK_A.encode(), len(body))
        )
        slow = socket.create_connection(("127.0.0.1", port))
        slow.sendall(head + body[:10])  # a slow client, holding its request open
        with socket.create_connection(("127.0.0.1", port)) as gone:
            gone.sendall(head + body[:100])
            time.sleep(0.3)
        c = Client(url, TOK_A)  # the others are served meanwhile
        assert c.post_records(make_call("meanwhile")).json()["accepted"] == 14
        slow.sendall(body[10:])
        assert b" 200 OK" in slow.recv(4096).split(b"\r\n")[0]
        slow.close()
        time.sleep(0.2)
    finally:
        errors.removeHandler(caplog.handler)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert {s for s, _ in _stored(store, "ta")} == {"cut", "meanwhile"}


LLM = Metadata(model_name="gpt-4o-mini", model_provider="openai")


@pytest.fixture
def any_store(store_url):  # noqa: F811 - the imported fixture
    """A store on SQLite, then on PostgreSQL (with prices)."""
    s = Store(store_url)
    yield s
    s.close()


def _llm_call(sid: str) -> list:
    rng = random.Random(sid)
    t0 = 1_700_000_000.0
    out = []
    for i in range(12):
        env = {"session_id": sid, "seq": i, "created_at": t0 + i,
               "agent_name": "early" if i < 6 else "late"}  # fmt: skip
        if i == 0:
            out.append(SessionStartedEvent(**env))
            continue
        d = rng.uniform(0.1, 3.0)
        m = LLMMetrics(timestamp=t0 + i + d, started_at=t0 + i, duration=d, ttft=d / 3,
                       prompt_tokens=100 + i, completion_tokens=7 * i,
                       total_tokens=100 + 8 * i, metadata=LLM)  # fmt: skip
        out.append(MetricsCollectedEvent(metrics=m, **env))
    return out


def test_batches_out_of_order_in_one_group_equal_them_one_after_the_other(any_store):
    store = any_store
    # an exporter with several batches in flight: the later records may arrive first
    recs = _llm_call("ooo")
    late, early = recs[6:], recs[:6]
    group = store.ingest_batches([("g", late), ("g", early), ("g", recs[4:8])])
    seq = [store.ingest(b, tenant="s") for b in (late, early, recs[4:8])]
    assert [(r.accepted, r.duplicates) for r in group] == [(r.accepted, r.duplicates) for r in seq]
    g, s = call_rows(store, "g"), call_rows(store, "s")
    assert g["ooo"]["agent_name"] == s["ooo"]["agent_name"] == "late"  # the first stored
    assert g == s  # every column, floats to the bit
    assert table_rows(store, schema.records, "g") == table_rows(store, schema.records, "s")


def test_call_model_sums_of_a_group_equal_them_one_after_the_other(tmp_path):
    with Store(tmp_path / "m.db", prices=False) as store:
        recs = _llm_call("mm1")  # durations whose sums differ in the last bit
        parts = [recs[:4], recs[4:8], recs[8:]]
        store.ingest(parts[0], tenant="g")
        store.ingest_batches([("g", parts[1]), ("g", parts[2])])
        for p in parts:
            store.ingest(p, tenant="s")
        assert call_rows(store, "g") == call_rows(store, "s")
        # each model's usage: the stored row plus each batch's sum in turn, to the bit
        cm = schema.call_models
        assert table_rows(store, cm, "g") == table_rows(store, cm, "s")
        assert table_rows(store, cm, "g")[0][9] > 0  # the duration column, summed


def _reference_quantile(values: list[float], q: float) -> float | None:
    """The percentile as the sketch gave it before add() and quantiles() were rewritten:
    key_of per value, one quantile() per q."""
    from callmeter.store.sketch import key_of, value_of

    keys = [key_of(v) for v in values if v >= 0 and v < math.inf]
    if not keys:
        return None
    zeros = sum(1 for k in keys if k is None)
    bins = sorted(k for k in keys if k is not None)
    rank = q * (len(keys) - 1)
    if rank < zeros:
        return 0.0
    return value_of(bins[min(len(bins) - 1, math.floor(rank - zeros))])


@pytest.mark.parametrize(
    "values",
    [
        [],
        [0.42],
        [0.0],
        [0.0, 0.0, 0.0],
        [0.0] * 19 + [5.0],
        [1e-9, 1.0000001e-9, 2e-9],
        [1e9, 1e9, 0.5],
        [math.nan, -1.0, math.inf, -math.inf],
        [math.nan, 0.3, -0.0, 5e-324],
        [0.25, 0.5] * 50,
        [random.Random(7).lognormvariate(0, 1) for _ in range(999)],
    ],
    ids=lambda v: f"n{len(v)}",
)
def test_sketch_percentiles_on_edge_inputs(values):
    s = Sketch()
    s.add(values)
    qs = (0.0, 0.5, 0.95, 0.99, 1.0)
    got = s.quantiles(*qs)
    assert got == [s.quantile(q) for q in qs]
    assert got == [_reference_quantile(values, q) for q in qs]
    again = Sketch.from_bytes(s.to_bytes())
    assert again.quantiles(*qs) == got and again.count == s.count
    one = Sketch()
    for v in values:  # one value at a time: the same bins
        one.add([v])
    assert one.bins == s.bins and one.zeros == s.zeros
