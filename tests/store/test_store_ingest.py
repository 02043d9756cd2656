"""Store ingest: idempotent on (tenant, session_id, seq), call summaries kept up to date."""

from __future__ import annotations

import math
import threading

import pytest
import sqlalchemy as sa

from callmeter import metrics
from callmeter.errors import InvalidArgumentError
from callmeter.store import Store, resolve_url, schema

from .factory import make_call


def calls(store: Store, tenant: str = "default") -> dict[str, dict]:
    with store.read_engine.connect() as c:
        q = sa.select(schema.calls).where(schema.calls.c.tenant == tenant)
        return {r["session_id"]: dict(r) for r in c.execute(q).mappings()}


def count(store: Store, table: sa.Table) -> int:
    with store.read_engine.connect() as c:
        return c.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def test_storing_twice_is_a_no_op(store):
    recs = make_call("c1")
    assert (store.ingest(recs).accepted, store.ingest(recs).duplicates) == (len(recs), len(recs))
    assert count(store, schema.records) == len(recs)
    assert calls(store)["c1"]["records"] == len(recs)
    assert count(store, schema.turns) == 3


def test_duplicates_inside_one_batch_count_once(store):
    recs = make_call("c1")
    r = store.ingest(recs + recs[:4])
    assert (r.accepted, r.duplicates) == (len(recs), 4)


def test_partial_retry_adds_only_the_new_records(store):
    recs = make_call("c1", turns=4)
    store.ingest(recs[:7])
    r = store.ingest(recs[3:])
    assert (r.accepted, r.duplicates) == (len(recs) - 7, 4)
    row = calls(store)["c1"]
    assert row["records"] == len(recs) and row["turns"] == 4 and row["llm_requests"] == 4


def test_summary_matches_usage_collector(store):
    recs = make_call("c1", labels={"env": "prod"}, tool_error=True, e2e=0.8, breach=True)
    store.ingest(recs)
    row = calls(store)["c1"]
    usage = metrics.UsageCollector()
    for r in recs:
        if r.__class__.__name__ == "MetricsCollectedEvent":
            usage.collect(r.metrics)
    s = usage.get_summary()
    assert row["llm_prompt_tokens"] == s.llm_prompt_tokens == 300
    assert row["llm_completion_tokens"] == s.llm_completion_tokens
    assert row["tool_calls"] == s.tool_calls and row["tool_errors"] == s.tool_errors == 3
    assert row["tts_characters"] == s.tts_characters_count
    assert math.isclose(row["cost"], float(s.cost), rel_tol=1e-12) and row["cost"] > 0
    assert math.isclose(row["cost_llm"] + row["cost_tts"], row["cost"], rel_tol=1e-12)
    assert row["errors"] == 3 and row["budget_breaches"] == 3
    assert row["closed"] and row["duration"] == pytest.approx(recs[-1].duration)
    assert row["agent_name"] == "support" and row["labels"] == '{"env":"prod"}'
    assert row["e2e_p95"] == pytest.approx(0.8, rel=0.01)
    assert row["ttft_p50"] == pytest.approx(0.2, rel=0.01)


def test_summary_is_the_same_whatever_the_batching(tmp_path):
    recs = make_call("c1", turns=5) + make_call("c2", turns=2)
    with Store(tmp_path / "one.db") as one, Store(tmp_path / "two.db") as two:
        for r in reversed(recs):  # one record per batch, newest first
            one.ingest([r])
        two.ingest(recs)
        a_rows, b_rows = calls(one), calls(two)
    for sid in ("c1", "c2"):
        a, b = a_rows[sid], b_rows[sid]
        for k in (*schema.COUNTS, "started_at", "ended_at", "duration", "e2e_p95"):
            assert a[k] == pytest.approx(b[k]), k
        assert a["cost"] == pytest.approx(b["cost"], rel=1e-9)


def test_open_call_duration_grows_with_its_records(store):
    recs = make_call("c1", close=False)
    store.ingest(recs[:3])
    d1 = calls(store)["c1"]["duration"]
    store.ingest(recs[3:])
    row = calls(store)["c1"]
    assert not row["closed"] and row["ended_at"] is None
    assert row["duration"] > d1 >= 0


def test_tenants_are_separate(store):
    recs = make_call("c1")
    assert store.ingest(recs, tenant="a").accepted == len(recs)
    assert store.ingest(recs, tenant="b").accepted == len(recs)
    assert set(calls(store, "a")) == {"c1"} == set(calls(store, "b"))


def test_group_commit_of_several_batches(store):
    a, b = make_call("c1"), make_call("c2")
    out = store.ingest_batches([("t", a), ("t", b), ("t", a)])
    assert [(r.accepted, r.duplicates) for r in out] == [(len(a), 0), (len(b), 0), (0, len(a))]


def test_eight_threads_ingesting_the_same_records_store_each_once(store):
    recs = [r for i in range(20) for r in make_call(f"c{i}")]
    results = []
    errors = []

    def worker() -> None:
        try:
            for i in range(0, len(recs), 37):
                results.append(store.ingest(recs[i : i + 37]))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sum(r.accepted for r in results) == len(recs)
    assert sum(r.duplicates for r in results) == 7 * len(recs)
    assert count(store, schema.records) == len(recs)
    assert all(row["records"] == 14 for row in calls(store).values())


def test_stores_opened_by_several_threads_at_once_each_get_their_schema(tmp_path):
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def open_one(i: int) -> None:
        try:
            barrier.wait()
            s = Store(str(tmp_path / f"s{i}.db"))
            try:
                s.ingest(make_call(f"c{i}"))
            finally:
                s.close()
        except BaseException as exc:
            errors.append(exc)

    for _ in range(3):
        threads = [threading.Thread(target=open_one, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        for i in range(4):
            s = Store(str(tmp_path / f"s{i}.db"))
            assert list(calls(s)) == [f"c{i}"]
            s.close()
            (tmp_path / f"s{i}.db").unlink()


def test_bad_tenant_is_refused(store):
    with pytest.raises(InvalidArgumentError, match="tenant"):
        store.ingest(make_call("c1"), tenant="")
    with pytest.raises(InvalidArgumentError, match="tenant"):
        store.ingest(make_call("c1"), tenant=None)  # type: ignore[arg-type]


def test_prune_removes_old_calls_and_their_rows(store):
    store.ingest(make_call("old", t0=1_000_000.0) + make_call("new", t0=2_000_000.0))
    r = store.prune(500_000, now=2_000_100.0)
    assert (r.calls, r.records) == (1, 14)
    assert set(calls(store)) == {"new"}
    assert count(store, schema.records) == 14 and count(store, schema.turns) == 3
    with pytest.raises(InvalidArgumentError):
        store.prune(-1)
    with pytest.raises(InvalidArgumentError):
        store.prune(float("nan"))


def test_default_location_and_env(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CALLMETER_DB", raising=False)
    assert resolve_url() == f"sqlite:///{tmp_path / 'callmeter.db'}"
    monkeypatch.setenv("CALLMETER_DB", str(tmp_path / "x.db"))
    with Store(prices=False) as s:
        s.ingest(make_call("c1"))
    assert (tmp_path / "x.db").exists()
    with Store(prices=False) as s:  # reopening migrates nothing and keeps the data
        assert count(s, schema.records) == 14
    assert resolve_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"


def test_bad_urls_are_refused(tmp_path):
    with pytest.raises(InvalidArgumentError):
        Store("mysql://x/y")
    with pytest.raises(InvalidArgumentError):
        Store("")
    with pytest.raises(InvalidArgumentError):
        Store("sqlite:///" + str(tmp_path / "a\0b"))


def test_two_stores_on_one_database_store_each_record_once(store_url):
    recs = [r for i in range(30) for r in make_call(f"c{i}")]
    stores = [Store(store_url, prices=False) for _ in range(2)]
    results, errors = [], []

    def worker(s: Store, k: int) -> None:
        try:
            for i in range(k * 7 % 40, len(recs), 40):
                results.append(s.ingest(recs[i : i + 40]))
            for i in range(0, len(recs), 40):
                results.append(s.ingest(recs[i : i + 40]))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(stores[k % 2], k)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert sum(r.accepted for r in results) == len(recs)
    assert count(stores[0], schema.records) == len(recs)
    assert all(row["records"] == 14 for row in calls(stores[0]).values())
    for s in stores:
        s.close()


def test_records_the_store_cannot_keep_are_left_out(store):
    bad = make_call("c\x00nul", turns=1)[:2] + make_call("x" * 501, turns=1)[:2]
    ok = make_call("fine", turns=1)
    r = store.ingest(bad + ok)
    assert (r.accepted, r.invalid) == (len(ok), 4)


def test_postgres_partitions_records_by_month(store):
    if store.dialect != "postgresql":
        pytest.skip("partitions are PostgreSQL's")
    jan, mar = 1_704_067_200.0 + 86_400, 1_709_251_200.0 + 86_400  # 2024-01-02, 2024-03-02
    store.ingest(make_call("jan", t0=jan) + make_call("mar", t0=mar))
    with store.read_engine.connect() as c:
        parts = sorted(c.exec_driver_sql(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'records'"
        ).scalars())  # fmt: skip
        assert parts == ["records_202401", "records_202403"]
        assert c.exec_driver_sql("SELECT count(*) FROM records_202401").scalar() == 14
    store.prune(0, now=mar - 86_400)  # everything that started before 2024-03-01
    with store.read_engine.connect() as c:
        parts = (
            c.exec_driver_sql(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'records'"
            )
            .scalars()
            .all()
        )
    assert parts == ["records_202403"]
    assert set(calls(store)) == {"mar"}
