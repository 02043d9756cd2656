"""The dashboard's overview from the hourly rollup equals the same numbers from the call rows
(SQLite and PostgreSQL): tables by agent and by model, the series in buckets of whole hours."""

from __future__ import annotations

import math

import msgspec
import pytest
import sqlalchemy as sa

from callmeter.server.dashboard import queries as dq
from callmeter.store import Store, schema

from .conftest import new_store_url
from .factory import make_call, unpriced
from .test_store_rollup import T0, H, fill

RANGES = [
    (T0, T0 + 4 * 86_400),  # whole hours only
    (T0 + 30 * H + 1234.5, T0 + 50 * H - 17.25),  # parts of hours at both ends
    (T0 + 4 * H + 1800, T0 + 6 * H),
    (T0 + 5 * H + 60, T0 + 5 * H + 3000),  # inside one hour: no rollup row at all
    (T0 - 86_400, T0 + 10 * 86_400),
]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def busy_shared(request, tmp_path_factory):
    """The store of ``test_store_rollup.fill``, shared by the tests that only read it."""
    url = new_store_url(request, tmp_path_factory.mktemp("dash"), "dash_shared")
    s = Store(url, prices=None)
    yield fill(s)
    s.close()


@pytest.fixture
def busy(store):
    return fill(store)


def same_agents(fast: list[dict], slow: list[dict]) -> None:
    assert [r["agent"] for r in fast] == [r["agent"] for r in slow]
    for a, b in zip(fast, slow, strict=True):
        for k in ("calls", "turns", "errors", "tool_calls", "tool_errors", "e2e_p50", "e2e_p95"):
            assert a[k] == b[k], (k, a, b)
        assert a["cost"] == pytest.approx(b["cost"], abs=1e-9)
        assert a["mean_duration"] == pytest.approx(b["mean_duration"], rel=1e-12)


def same_models(fast: list[dict], slow: list[dict]) -> None:
    key = lambda r: (r["kind"], r["provider"], r["model"])  # noqa: E731
    assert sorted(map(key, fast)) == sorted(map(key, slow))
    want = {key(r): r for r in slow}
    for a in fast:
        b = want[key(a)]
        assert (a["calls"], a["unpriced"], a["cost_complete"]) == (
            b["calls"], b["unpriced"], b["cost_complete"])  # fmt: skip
        assert a["cost"] == pytest.approx(b["cost"], abs=1e-9)


@pytest.mark.parametrize("since,until", RANGES)
@pytest.mark.parametrize("agent", [None, "a", "b"])
def test_tables_from_the_rollup_equal_the_call_rows(busy_shared, since, until, agent):
    kw = {"since": since, "until": until, "agent": agent}
    fast = dq.by_agent(busy_shared, "default", **kw)
    same_agents(fast, dq.by_agent(busy_shared, "default", rollup=False, **kw))
    same_models(
        dq.by_model(busy_shared, "default", **kw),
        dq.by_model(busy_shared, "default", rollup=False, **kw),
    )
    if agent is not None:
        assert [r["agent"] for r in fast] in ([], [agent])


def test_every_call_is_in_the_tables(busy_shared):
    rows = dq.by_agent(busy_shared, "default", since=T0 - H, until=T0 + 5 * 86_400)
    assert sum(r["calls"] for r in rows) == 122
    assert {r["agent"] for r in rows} == {"a", "b", "c", "", None}  # None and "" stay apart
    assert all(r["e2e_p95"] for r in rows if r["turns"])
    models = dq.by_model(busy_shared, "default", since=T0 - H, until=T0 + 5 * 86_400)
    assert {(r["kind"], r["model"]) for r in models} >= {("llm", "gpt-4o-mini"),
                                                          ("tts", "tts-1")}  # fmt: skip
    assert all(r["cost"] > 0 and r["cost_complete"] for r in models)


@pytest.mark.parametrize("since,until", RANGES[:3])
@pytest.mark.parametrize("agent", [None, "a"])
def test_hourly_series_from_the_rollup_equals_the_call_rows(busy_shared, since, until, agent):
    kw = {"since": since, "until": until, "interval": 3600, "agent": agent}
    fast = dq.series(busy_shared, "default", **kw)
    slow = dq.series(busy_shared, "default", rollup=False, **kw)
    assert fast["sample_every"] == slow["sample_every"] == 1  # 122 calls: nothing sampled
    assert fast["buckets"].keys() == slow["buckets"].keys()
    assert len(fast["buckets"]) == math.ceil(until / H) - math.floor(since / H)
    for start, a in fast["buckets"].items():
        b = slow["buckets"][start]
        for k in ("calls", "active_calls", "tool_calls", "tool_errors", "tool_error_rate",
                  "e2e_p50", "e2e_p95", "ttft_p50"):  # fmt: skip
            assert a[k] == b[k], (k, start, a, b)
        assert a["cost"] == pytest.approx(b["cost"], abs=1e-9)
        for kind in schema.COST_KINDS:
            assert a["cost_by_kind"].get(kind, 0.0) == pytest.approx(
                b["cost_by_kind"].get(kind, 0.0), abs=1e-9
            )


def test_the_overview_reads_the_rollup(busy):
    kw = {"since": T0, "until": T0 + 4 * 86_400}
    assert dq.by_agent(busy, "default", **kw) and dq.by_model(busy, "default", **kw)
    with busy.write_engine.begin() as conn:
        conn.execute(schema.call_rollup.delete())
    assert dq.by_agent(busy, "default", **kw) == []
    assert dq.by_model(busy, "default", **kw) == []
    assert dq.by_agent(busy, "default", rollup=False, **kw)


def test_calls_without_a_price_are_counted_not_costed(store):
    for i in range(6):
        recs = make_call(f"p{i}", t0=T0 + i * 600, agent="a", turns=2)
        store.ingest(unpriced(recs) if i % 2 else recs)
    store.ingest(unpriced(make_call("late", t0=T0 + 2 * H + 5, agent="b", turns=1)))
    for since, until in ((T0, T0 + 3 * H), (T0 + 100.5, T0 + 3 * H - 7)):
        fast = dq.by_model(store, "default", since=since, until=until)
        same_models(fast, dq.by_model(store, "default", since=since, until=until, rollup=False))
    rows = {r["model"]: r for r in dq.by_model(store, "default", since=T0, until=T0 + 3 * H)}
    acme = rows["no-such-model"]
    assert (acme["calls"], acme["unpriced"], acme["cost_complete"]) == (4, 4, False)
    assert (rows["gpt-4o-mini"]["calls"], rows["gpt-4o-mini"]["unpriced"]) == (3, 0)
    assert rows["tts-1"]["calls"] == 7 and rows["tts-1"]["cost_complete"]
    # the statistics still leave a model with no priced call out of the cost by model
    from callmeter.store import queries

    st = queries.stats(store, "default", since=T0, until=T0 + 3 * H, interval="1h")
    slow = queries.stats(store, "default", since=T0, until=T0 + 3 * H, interval="1h",
                         rollup=False)  # fmt: skip
    assert [b["cost_by_model"].keys() for b in st["buckets"]] == [
        b["cost_by_model"].keys() for b in slow["buckets"]
    ]
    assert all("acme/no-such-model" not in b["cost_by_model"] for b in st["buckets"])
    # pruning subtracts them again
    store.prune(0, now=T0 + 2 * H)
    same_models(
        dq.by_model(store, "default", since=T0, until=T0 + 3 * H),
        dq.by_model(store, "default", since=T0, until=T0 + 3 * H, rollup=False),
    )


def test_migration_0003_down_to_the_old_format_and_up_again(busy):
    from pathlib import Path

    from alembic import command
    from alembic.config import Config

    from callmeter.store import store as store_mod
    from callmeter.store.rollup import rebuild

    from .test_store_rollup import rollup_rows

    expected = rollup_rows(busy)
    kw = {"since": T0 - H, "until": T0 + 5 * 86_400}
    agents = dq.by_agent(busy, "default", **kw)
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(store_mod.__file__).parent / "migrations"))
    with busy.write_engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0002")
        cols = {c["name"] for c in sa.inspect(conn).get_columns("call_rollup")}
        assert "turns" not in cols and "duration" not in cols
        old = msgspec.msgpack.Decoder(list[tuple[str, str, str, float, int]])
        blobs = conn.execute(sa.text("SELECT model_costs FROM call_rollup "
                                     "WHERE model_costs IS NOT NULL")).scalars().all()  # fmt: skip
        assert blobs and all(n > 0 for b in blobs for *_, n in old.decode(b))
    busy.migrate()
    assert rollup_rows(busy) == expected
    same_agents(dq.by_agent(busy, "default", **kw), agents)
    with busy.write_engine.begin() as conn:  # and what the migration built is a rebuild
        rebuild(conn)
    assert rollup_rows(busy) == expected


def test_sort_by_e2e_p95_reads_its_index(tmp_path):
    from callmeter.store import queries

    with Store(tmp_path / "s.db", prices=None) as store:
        for i in range(30):
            store.ingest(make_call(f"c{i}", t0=T0 + i, e2e=0.1 * (i % 7), turns=i % 3))
        seen: list[tuple[str, tuple]] = []

        def spy(conn, cursor, statement, params, context, executemany):
            seen.append((statement, params))

        sa.event.listen(store.read_engine, "before_cursor_execute", spy)
        first = queries.list_calls(store, "default", sort="e2e_p95", limit=10)
        page = queries.list_calls(store, "default", sort="e2e_p95", limit=10,
                                  cursor=first.next_cursor)  # fmt: skip
        both = queries.list_calls(store, "default", sort="e2e_p95", limit=100, min_e2e_p95=0.3)
        sa.event.remove(store.read_engine, "before_cursor_execute", spy)
        keys = [c["e2e_p95"] if c["e2e_p95"] is not None else -1 for c in first.calls + page.calls]
        assert (
            keys == sorted(keys, reverse=True)
            and len(set(c["session_id"] for c in first.calls + page.calls)) == 20
        )
        assert [c["session_id"] for c in both.calls] and all(
            c["e2e_p95"] >= 0.3 for c in both.calls
        )
        every = queries.list_calls(store, "default", limit=100).calls
        want = {c["session_id"] for c in every if c["e2e_p95"] is not None and c["e2e_p95"] >= 0.3}
        assert {c["session_id"] for c in both.calls} == want
        with store.read_engine.connect() as conn:
            lists = [(q, p) for q, p in seen if "FROM calls" in q]
            assert len(lists) == 3
            for statement, params in lists:
                plan = " ".join(r[-1] for r in conn.exec_driver_sql(
                    "EXPLAIN QUERY PLAN " + statement, params))  # fmt: skip
                assert "calls_e2e_p95" in plan, plan
                assert "TEMP B-TREE" not in plan, plan
