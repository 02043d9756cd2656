"""The HTTP API against a real ``callmeter serve`` on loopback."""

from __future__ import annotations

import gzip
import json
import threading

from callmeter.records import encode_lines
from store.factory import make_call

from .conftest import BOTH_B, INGEST_A, READ_A, Client


def test_ingest_then_list_and_detail(client):
    recs = make_call("api-1", labels={"env": "prod"}) + make_call("api-2", tool_error=True)
    r = client.post_records(recs, token=INGEST_A)
    assert r.status == 200, r.body
    assert r.json() == {"accepted": len(recs), "duplicates": 0, "rejected": []}
    page = client.get("/v1/calls", token=READ_A, agent="support").json()
    ids = [c["session_id"] for c in page["calls"]]
    assert {"api-1", "api-2"} <= set(ids)
    one = next(c for c in page["calls"] if c["session_id"] == "api-1")
    assert one["labels"] == {"env": "prod"} and one["turns"] == 3 and one["cost"] > 0
    assert abs(one["e2e_p95"] - 1.0) < 0.011 and one["errors"] == 0
    detail = client.get("/v1/calls/api-2", token=READ_A).json()
    assert detail["call"]["errors"] == 3
    assert len(detail["turns"]) == 3 and "llm_ttft" in detail["turns"][0]["breakdown"]
    assert [t["tool_name"] for t in detail["tool_calls"]] == ["lookup"] * 3
    assert [r["seq"] for r in detail["records"]] == list(range(len(recs) // 2))
    assert client.get("/v1/calls/nope", token=READ_A).status == 404


def test_a_retried_batch_is_a_success_with_duplicates(client):
    recs = make_call("retry-1")
    assert client.post_records(recs, token=INGEST_A).json()["accepted"] == len(recs)
    r = client.post_records(recs, gzip=True, token=INGEST_A)
    assert r.status == 200
    assert r.json() == {"accepted": 0, "duplicates": len(recs), "rejected": []}


def test_invalid_lines_are_reported_by_line_number(client):
    recs = make_call("lines-1", turns=1)
    lines = encode_lines(recs).split(b"\n")
    body = b"\n".join([lines[0], b"{not json", b"", lines[1], b'{"event": "close"}', *lines[2:]])
    r = client.request("POST", "/v1/records", body, {"Content-Type": "application/x-ndjson"},
                       token=INGEST_A)  # fmt: skip
    assert r.status == 200
    out = r.json()
    assert out["accepted"] == len(recs)
    assert [x["line"] for x in out["rejected"]] == [2, 5]
    assert "JSON" in out["rejected"][0]["error"]
    bad = client.request("POST", "/v1/records", b"nope\n\n{}\n", token=INGEST_A)
    assert bad.status == 400
    assert [x["line"] for x in bad.json()["rejected"]] == [1, 3]
    assert bad.json()["accepted"] == 0


def test_json_array_body(client):
    recs = make_call("array-1", turns=1)
    items = [json.loads(x) for x in encode_lines(recs).splitlines()]
    items.insert(1, {"event": "nope"})
    r = client.request("POST", "/v1/records", json.dumps(items).encode(),
                       {"Content-Type": "application/json"}, token=INGEST_A)  # fmt: skip
    assert r.status == 200
    assert r.json()["accepted"] == len(recs) and r.json()["rejected"][0]["line"] == 2
    r = client.request("POST", "/v1/records", b'{"a": 1}', {"Content-Type": "application/json"},
                       token=INGEST_A)  # fmt: skip
    assert r.status == 400


def test_auth_401_and_403(client):
    recs = make_call("auth-1", turns=1)
    assert client.post_records(recs).status == 401
    assert client.post_records(recs, token="wrong-token-xyz").status == 401
    r = client.request("POST", "/v1/records", b"", {"Authorization": "Basic abc"})
    assert r.status == 401 and r.headers["www-authenticate"] == "Bearer"
    assert client.post_records(recs, token=READ_A).status == 403
    assert client.get("/v1/calls", token=INGEST_A).status == 403
    assert client.get("/v1/calls").status == 401
    assert client.get("/v1/calls/auth-1", token="x" * 30).status == 401
    assert client.get("/health").status == 200


def test_tenant_isolation(client):
    client.post_records(make_call("secret-b", agent="b-agent"), token=BOTH_B)
    client.post_records(make_call("visible-a", agent="a-agent"), token=INGEST_A)
    a_ids = {c["session_id"] for c in client.get("/v1/calls", token=READ_A, limit=1000)
             .json()["calls"]}  # fmt: skip
    b_ids = {c["session_id"] for c in client.get("/v1/calls", token=BOTH_B, limit=1000)
             .json()["calls"]}  # fmt: skip
    assert "secret-b" in b_ids and "secret-b" not in a_ids
    assert "visible-a" in a_ids and "visible-a" not in b_ids
    assert client.get("/v1/calls/secret-b", token=READ_A).status == 404
    assert client.get("/v1/calls", token=READ_A, agent="b-agent").json()["calls"] == []
    # the same session_id in two tenants: two calls
    client.post_records(make_call("shared", agent="a-agent"), token=INGEST_A)
    assert (
        client.post_records(make_call("shared", agent="b-agent"), token=BOTH_B).json()["accepted"]
        == 14
    )
    assert client.get("/v1/calls/shared", token=READ_A).json()["call"]["agent_name"] == "a-agent"


def test_body_and_batch_limits_413(client):
    big = b"x" * 400_000
    assert client.request("POST", "/v1/records", big, token=INGEST_A).status == 413
    bomb = gzip.compress(b"\n" * 2_000_000)
    r = client.request("POST", "/v1/records", bomb, {"Content-Encoding": "gzip"}, token=INGEST_A)
    assert r.status == 413
    many = [r for i in range(80) for r in make_call(f"many-{i}")]  # 1,120 > 1,000 per batch
    assert client.post_records(many, gzip=True, token=INGEST_A).status == 413
    r = client.request("POST", "/v1/records", b"x", {"Content-Encoding": "br"}, token=INGEST_A)
    assert r.status == 415


def test_filters_sorting_and_pagination(client):
    t0 = 1_750_000_000.0
    recs = []
    for i in range(25):
        recs += make_call(f"page-{i:02d}", t0=t0 + i * 100, agent="pager", e2e=0.5 + i * 0.1,
                          turns=1 + i % 3, labels={"tier": "gold" if i % 2 else "free"},
                          tool_error=i % 5 == 0)  # fmt: skip
    assert client.post_records(recs, token=INGEST_A).status == 200
    seen, cursor = [], None
    while True:
        params = {"agent": "pager", "limit": 7, "sort": "e2e_p95"}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/v1/calls", token=READ_A, **params).json()
        seen += page["calls"]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == 25 and len({c["session_id"] for c in seen}) == 25
    p95 = [c["e2e_p95"] for c in seen]
    assert p95 == sorted(p95, reverse=True)
    q = client.get("/v1/calls", token=READ_A, agent="pager", label="tier:gold", has_errors="true",
                   since=str(t0 + 500), until="2025-06-15T16:00:00Z").json()  # fmt: skip
    expect = {f"page-{i:02d}" for i in range(5, 25) if i % 2 and i % 5 == 0
              and t0 + i * 100 < 1_750_003_200}  # fmt: skip
    assert {c["session_id"] for c in q["calls"]} == expect
    asc = client.get("/v1/calls", token=READ_A, agent="pager", sort="duration", order="asc",
                     min_e2e_p95=2.05).json()["calls"]  # fmt: skip
    assert [c["duration"] for c in asc] == sorted(c["duration"] for c in asc)
    assert all(c["e2e_p95"] >= 2.05 for c in asc) and len(asc) == 9  # e2e 2.1 .. 2.9
    for bad in ({"sort": "nope"}, {"limit": "0"}, {"limit": "x"}, {"since": "yesterday"},
                {"min_cost": "nan"}, {"has_errors": "maybe"}, {"label": "novalue"},
                {"cursor": "!!!"}, {"since": "2025-01-01T00:00:00"}):  # fmt: skip
        r = client.get("/v1/calls", token=READ_A, **bad)
        assert r.status == 400, bad
        assert "error" in r.json()


def test_metrics_count_ingest(client):
    client.post_records(make_call("metrics-1"), token=INGEST_A)
    text = client.get("/metrics").body.decode()
    accepted = next(ln for ln in text.splitlines() if 'outcome="accepted"' in ln)
    assert int(accepted.split()[-1]) >= 14
    assert "callmeter_ingest_batch_seconds_count" in text
    assert "callmeter_ingest_queue_depth" in text


def test_eight_clients_at_once(server):
    results = []

    def worker(k: int) -> None:
        c = Client(server.url, INGEST_A)
        for i in range(5):
            recs = make_call(f"conc-{k}-{i}")
            results.append(c.post_records(recs).json()["accepted"])
            results.append(c.post_records(recs).json()["duplicates"])
        c.close()

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [14] * 80


def test_stats_endpoint(client):
    t0 = 1_760_000_000.0
    recs = make_call("stats-1", t0=t0, agent="stats") + make_call("stats-2", t0=t0 + 4000,
                                                                  agent="stats")  # fmt: skip
    client.post_records(recs, token=INGEST_A)
    client.post_records(make_call("stats-b", t0=t0), token=BOTH_B)
    r = client.get("/v1/stats", token=READ_A, since=str(t0 - 1), until=str(t0 + 7200),
                   interval="1h", group_by="agent")  # fmt: skip
    assert r.status == 200, r.body
    rows = [x for x in r.json()["buckets"] if x["group"] == "stats"]
    assert sum(x["calls"] for x in rows) == 2
    assert all(x["e2e_p95"] is not None for x in rows if x["calls"])
    other = client.get("/v1/stats", token=BOTH_B, since=str(t0 - 1), until=str(t0 + 7200))
    assert sum(x["calls"] for x in other.json()["buckets"]) == 1  # tenant B's own call only
    assert client.get("/v1/stats", token=INGEST_A).status == 403
    assert client.get("/v1/stats", token=READ_A, interval="7s").status == 400
    assert client.get("/v1/stats", token=READ_A, group_by="label:").status == 400
    assert client.get("/v1/stats", token=READ_A).status == 200  # the last 24 hours
