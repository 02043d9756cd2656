"""The hourly rollup (store/rollup.py): statistics from it equal those from the call rows."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import sqlalchemy as sa

from callmeter.store import Store, queries, schema
from callmeter.store import store as store_mod
from callmeter.store.rollup import rebuild

from .conftest import new_store_url
from .factory import make_call

H = 3600.0
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
EXACT = ("start", "group", "calls", "active_calls", "tool_calls", "tool_errors", "errors",
         "tool_error_rate", "e2e_p50", "e2e_p95", "ttft_p50", "ttft_p95")  # fmt: skip


def assert_same(fast: dict, slow: dict) -> None:
    """Counts and percentiles equal, costs equal to the stored precision (1e-9 USD)."""
    assert len(fast["buckets"]) == len(slow["buckets"])
    for a, b in zip(fast["buckets"], slow["buckets"], strict=True):
        assert a.keys() == b.keys()
        for k in EXACT:
            assert a.get(k) == b.get(k), (k, a, b)
        assert a["cost"] == pytest.approx(b["cost"], abs=1e-9)
        for k in ("cost_by_kind", "cost_by_model", "cost_by_provider"):
            assert a[k].keys() == b[k].keys(), (k, a, b)
            for name in a[k]:
                assert a[k][name] == pytest.approx(b[k][name], abs=1e-9)


def compare(store, **kw) -> dict:
    fast = queries.stats(store, "default", **kw)
    slow = queries.stats(store, "default", rollup=False, **kw)
    assert_same(fast, slow)
    return fast


def rollup_rows(store) -> list[tuple]:
    t = schema.call_rollup
    cols = [t.c.tenant, t.c.hour, t.c.agent_key, t.c.calls, t.c.ends, t.c.tool_calls,
            t.c.tool_errors, t.c.errors, t.c.e2e_sketch, t.c.ttft_sketch]  # fmt: skip
    with store.read_engine.connect() as conn:
        return sorted(tuple(r) for r in conn.execute(sa.select(*cols)))


@pytest.fixture
def busy(store):
    """A store filled by :func:`fill` (for the tests that change it)."""
    return fill(store)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def busy_shared(request, tmp_path_factory):
    """A store filled by :func:`fill`, shared by the tests that only read it."""
    url = new_store_url(request, tmp_path_factory.mktemp("rollup"), "rollup_shared")
    s = Store(url, prices=None)
    yield fill(s)
    s.close()


def fill(store):
    """Calls of 4 agents (and none) over 3 days, in shuffled batches, some split so that a
    later batch moves a call's start to an earlier hour or brings its agent name."""
    rng = random.Random(7)
    recs = []
    for i in range(120):
        agent = rng.choice(["a", "b", "c", "", None])
        recs += make_call(f"c{i}", t0=T0 + rng.uniform(0, 3 * 86_400), agent=agent,
                          turns=rng.randint(0, 4), e2e=rng.uniform(0.2, 4.0),
                          tool_error=rng.random() < 0.2, close=rng.random() < 0.8)  # fmt: skip
    # a call whose first records arrive last, 50 minutes earlier, in the hour before
    late = make_call("moved", t0=T0 + 5 * H + 600, agent="a", turns=3)
    early = make_call("moved", t0=T0 + 4 * H + 3000, agent="a", turns=1, close=False)
    for r in early:
        r.seq += 100
    # a call whose agent name comes with its later records
    anon = make_call("anon", t0=T0 + 7 * H, agent=None, turns=1, close=False)
    named = make_call("anon", t0=T0 + 7 * H + 30, agent="b", turns=2)
    for r in named:
        r.seq += 100
    rng.shuffle(recs)
    for i in range(0, len(recs), 97):
        store.ingest(recs[i : i + 97])
    store.ingest(late)
    store.ingest(early + recs[:50])  # with duplicates
    store.ingest(anon)
    store.ingest(named)
    store.ingest(make_call("x", t0=T0 + 60, agent="a"), tenant="other")
    return store


@pytest.mark.parametrize("group_by", [None, "agent"])
@pytest.mark.parametrize("interval", ["1h", "6h", "1d"])
def test_rollup_stats_equal_call_stats(busy_shared, group_by, interval):
    out = compare(
        busy_shared, since=T0, until=T0 + 4 * 86_400, interval=interval, group_by=group_by
    )
    assert sum(b["calls"] for b in out["buckets"]) == 122
    assert any(b["e2e_p95"] for b in out["buckets"])


@pytest.mark.parametrize("since,until", [
    (T0 + 30 * H, T0 + 50 * H),  # calls started before and still active
    (T0 + 30 * H + 1234.5, T0 + 50 * H - 17.25),  # parts of hours at both ends
    (T0 + 4 * H + 1800, T0 + 6 * H),
    (T0 - 86_400, T0 + 10 * 86_400),
])  # fmt: skip
def test_rollup_stats_equal_on_any_range(busy_shared, since, until):
    for group_by in (None, "agent"):
        compare(busy_shared, since=since, until=until, interval="1h", group_by=group_by)


def test_a_call_moved_to_an_earlier_hour_or_agent_moves_in_the_rollup(busy_shared):
    out = compare(busy_shared, since=T0 + 4 * H, until=T0 + 8 * H, group_by="agent")
    moved = [b for b in out["buckets"] if b["group"] == "a" and b["start"] == T0 + 4 * H]
    assert moved and moved[0]["calls"] >= 1
    assert all(b["group"] is not None or b["start"] != T0 + 7 * H or b["calls"] == 0
               for b in out["buckets"])  # fmt: skip


def test_incremental_rollup_equals_a_rebuild(busy):
    before = rollup_rows(busy)
    with busy.write_engine.begin() as conn:
        rebuild(conn)
    assert rollup_rows(busy) == before


def test_prune_subtracts_from_the_rollup(busy):
    busy.prune(0, now=T0 + 36 * H)
    compare(busy, since=T0, until=T0 + 4 * 86_400, interval="1h", group_by="agent")
    before = rollup_rows(busy)
    with busy.write_engine.begin() as conn:
        rebuild(conn)
    assert rollup_rows(busy) == before


def test_stats_read_the_rollup(busy):
    kw = {"since": T0, "until": T0 + 4 * 86_400, "interval": "1h"}
    assert queries.stats(busy, "default", **kw)["buckets"]
    with busy.write_engine.begin() as conn:
        conn.execute(schema.call_rollup.delete())
    assert queries.stats(busy, "default", **kw)["buckets"] == []
    assert queries.stats(busy, "default", rollup=False, **kw)["buckets"]
    # finer intervals and other groupings read the calls
    assert queries.stats(busy, "default", **(kw | {"interval": "15m"}))["buckets"]
    assert queries.stats(busy, "default", group_by="model", **kw)["buckets"]


def test_migration_builds_the_rollup_of_existing_calls(busy):
    from alembic import command
    from alembic.config import Config

    expected = rollup_rows(busy)
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(store_mod.__file__).parent / "migrations"))
    with busy.write_engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0001")
    busy.migrate()
    assert rollup_rows(busy) == expected
    compare(busy, since=T0, until=T0 + 4 * 86_400, interval="1d", group_by="agent")


@pytest.mark.parametrize("agent", ["a", "b", "nobody"])
def test_rollup_stats_of_one_agent_equal_call_stats(busy_shared, agent):
    for since, until in ((T0, T0 + 4 * 86_400), (T0 + 30 * H + 1234.5, T0 + 50 * H - 17.25)):
        for group_by in (None, "agent"):
            out = compare(busy_shared, since=since, until=until, interval="1h",
                          group_by=group_by, agent=agent)  # fmt: skip
            assert all(b.get("group", agent) == agent for b in out["buckets"])
    every = queries.stats(busy_shared, "default", since=T0, until=T0 + 4 * 86_400,
                          group_by="agent")["buckets"]  # fmt: skip
    mine = compare(busy_shared, since=T0, until=T0 + 4 * 86_400, agent=agent)["buckets"]
    assert sum(b["calls"] for b in mine) == sum(b["calls"] for b in every if b["group"] == agent)
    assert (agent == "nobody") == (mine == [])
