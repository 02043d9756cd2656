"""Hostile data for the hourly rollup and the dashboard's overview on it (SQLite and
PostgreSQL): every rollup column equals a rebuild from the call rows after odd agents, calls
that move hour or get their agent late, open calls spanning many hours, duplicates, prune
and re-ingest; migrations from 0001 and 0002 with calls; tables and charts equal the call
rows on awkward ranges; one tenant never sees another; buckets end at the range's end."""

from __future__ import annotations

import math
import time
from pathlib import Path

import msgspec
import pytest
import sqlalchemy as sa

from callmeter.errors import InvalidArgumentError
from callmeter.model.types import TurnBreakdown, TurnMetrics
from callmeter.records import MetricsCollectedEvent
from callmeter.server.dashboard import queries as dq
from callmeter.server.dashboard.routes import overview_data
from callmeter.store import Store, queries, schema
from callmeter.store import store as store_mod
from callmeter.store.rollup import decode_models, rebuild

from .conftest import new_store_url
from .factory import make_call, unpriced
from .test_dashboard_rollup import same_models

H = 3600.0
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
ODD_AGENTS = [None, "", "*", "=x", "a=b*", "ünï ☎ " * 50, "a"]  # the long one: 300 chars


def _shift(records: list, seq: int = 0, dt: float = 0.0) -> list:
    """The records with ``seq`` added to their seq and ``dt`` to their times."""
    out = []
    for r in records:
        r = msgspec.structs.replace(r, seq=r.seq + seq, created_at=r.created_at + dt)
        if isinstance(r, MetricsCollectedEvent):
            m = msgspec.structs.replace(r.metrics, timestamp=r.metrics.timestamp + dt,
                                        started_at=r.metrics.started_at + dt)  # fmt: skip
            r = msgspec.structs.replace(r, metrics=m)
        out.append(r)
    return out


def _with_ttfb(records: list, ttfb: float) -> list:
    """The records with every turn's breakdown waiting ``ttfb`` seconds on TTS."""
    out = []
    for r in records:
        if isinstance(r, MetricsCollectedEvent) and isinstance(r.metrics, TurnMetrics):
            m = r.metrics
            bd = TurnBreakdown(tts_ttfb=ttfb, other=max(m.duration - ttfb, 0.0))
            r = msgspec.structs.replace(r, metrics=msgspec.structs.replace(m, breakdown=bd))
        out.append(r)
    return out


def hostile(store, tenant: str = "default") -> None:
    """Calls of odd agents; a call whose start moves to an earlier hour; one whose agent
    arrives late; open calls spanning many hours; unpriced models; duplicates; a prune; and
    a pruned call ingested again."""
    ing = lambda recs: store.ingest(recs, tenant=tenant)  # noqa: E731
    for i, agent in enumerate(ODD_AGENTS):
        for j in range(3):
            recs = make_call(f"o{i}-{j}", t0=T0 + i * 1800 + j * 1300.5, agent=agent,
                             turns=j + 1, e2e=0.3 + 0.4 * j, tool_error=j == 1,
                             close=j != 2)  # fmt: skip
            ing(unpriced(recs) if j == 1 else recs)
    # a call first seen at 05:10, whose session_started (07:50 earlier) arrives later
    late = make_call("moved", t0=T0 + 5 * H + 600, agent="a", turns=2)
    ing(late[3:])
    ing(late[:3] + _shift(make_call("moved", t0=T0 + 2 * H + 50, agent="a", turns=1,
                                    close=False), seq=100))  # fmt: skip
    # agent name only with the later records
    ing(make_call("anon", t0=T0 + 3 * H + 1, agent=None, turns=1, close=False))
    ing(_shift(make_call("anon", t0=T0 + 9 * H, agent="=x", turns=2), seq=100))
    # an open call whose records keep coming for 30 hours, a batch every few hours
    for k in range(8):
        ing(_shift(make_call("long", t0=T0 + 6 * H, agent="*", turns=1, close=False),
                   seq=100 * k, dt=k * 4 * H))  # fmt: skip
    # duplicates: whole calls sent again, and a batch mixing new and old records
    ing(make_call("o1-0", t0=T0 + 1800, agent="", turns=1))
    ing(make_call("dup", t0=T0 + 11 * H + 7, agent="a")[:4])
    ing(make_call("dup", t0=T0 + 11 * H + 7, agent="a"))
    # prune the first hour, then one of its calls comes back
    store.prune(0, now=T0 + 1000)
    ing(make_call("o0-0", t0=T0, agent=None, turns=1))


def rollup_table(store, conn=None) -> dict[tuple, dict]:
    t = schema.call_rollup
    if conn is None:
        with store.read_engine.connect() as c:
            rows = c.execute(sa.select(t)).mappings().all()
    else:
        rows = conn.execute(sa.select(t)).mappings().all()
    out = {}
    for r in rows:
        d = dict(r)
        d["model_costs"] = decode_models(d["model_costs"])
        out[(d.pop("tenant"), d.pop("hour"), d.pop("agent_key"))] = d
    return out


def assert_same_rollup(got: dict, want: dict) -> None:
    """Every row and column equal; sums of floats to 1e-9."""
    assert got.keys() == want.keys()
    for key, a in got.items():
        b = want[key]
        assert a.keys() == b.keys()
        for col in a:
            x, y = a[col], b[col]
            if col == "model_costs":
                assert [m[:3] + m[4:] for m in x] == [m[:3] + m[4:] for m in y], (key, x, y)
                for m, n in zip(x, y, strict=True):
                    assert m[3] == pytest.approx(n[3], abs=1e-9)
            elif isinstance(x, float) or isinstance(y, float):
                assert x == pytest.approx(y, abs=1e-9), (key, col, x, y)
            else:
                assert x == y, (key, col, x, y)


def rebuilt(store) -> dict:
    """The rollup as a rebuild from the call rows makes it (rolled back: left unchanged)."""
    with store.write_engine.connect() as conn:
        trans = conn.begin()
        try:
            rebuild(conn)
            return rollup_table(store, conn)
        finally:
            trans.rollback()


@pytest.fixture
def odd(store):
    hostile(store)
    hostile(store, tenant="other")
    return store


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def odd_shared(request, tmp_path_factory):
    """The store of :func:`hostile` (two tenants), shared by the tests that only read it."""
    url = new_store_url(request, tmp_path_factory.mktemp("odd"), "odd_shared")
    s = Store(url, prices=None)
    hostile(s)
    hostile(s, tenant="other")
    yield s
    s.close()


def test_every_rollup_column_equals_a_rebuild_after_hostile_ingest(odd_shared):
    incremental = rollup_table(odd_shared)
    assert {k[2] for k in incremental} >= {"", "=", "=*", "==x", "=a=b*", "*"}
    assert_same_rollup(incremental, rebuilt(odd_shared))
    assert rollup_table(odd_shared) == incremental


def _alembic(conn):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(store_mod.__file__).parent / "migrations"))
    cfg.attributes["connection"] = conn
    return cfg


@pytest.mark.parametrize("start", ["0001", "0002"])
def test_a_store_at_an_older_revision_with_calls_upgrades_to_a_true_rollup(odd, start):
    from alembic import command

    want = rollup_table(odd)
    kw = {"since": T0 - H, "until": T0 + 2 * 86_400}
    agents = dq.by_agent(odd, "default", **kw)
    with odd.write_engine.begin() as conn:
        command.downgrade(_alembic(conn), start)
        if start == "0002":  # the rows of 0002 are in 0002's format; empty them too
            conn.execute(sa.text("DELETE FROM call_rollup WHERE hour % 2 = 0"))
    odd.migrate()
    assert_same_rollup(rollup_table(odd), want)
    got = dq.by_agent(odd, "default", **kw)
    assert [r["agent"] for r in got] == [r["agent"] for r in agents]
    # up, down, up again: still the same
    with odd.write_engine.begin() as conn:
        command.downgrade(_alembic(conn), "0002")
        command.upgrade(_alembic(conn), "head")
    assert_same_rollup(rollup_table(odd), want)
    # and ingest keeps going on the migrated table
    odd.ingest(make_call("after", t0=T0 + 3 * H + 5, agent="*"))
    assert_same_rollup(rollup_table(odd), rebuilt(odd))


def _same_agents(fast: list[dict], slow: list[dict]) -> None:
    assert [r["agent"] for r in fast] == [r["agent"] for r in slow]
    for a, b in zip(fast, slow, strict=True):
        for k in ("calls", "turns", "errors", "tool_calls", "tool_errors", "e2e_p50", "e2e_p95"):
            assert a[k] == b[k], (k, a, b)
        assert a["cost"] == pytest.approx(b["cost"], abs=1e-9)
        if b["mean_duration"] is None:
            assert a["mean_duration"] is None
        else:
            assert a["mean_duration"] == pytest.approx(b["mean_duration"], rel=1e-9)


AWKWARD = [
    (T0, T0 + H),  # exactly one hour, on its boundaries
    (T0 + 1.5, T0 + H - 0.5),  # inside one hour
    (T0 - 30, T0 + 6 * H + 1),  # 6 h + 31 s, parts of hours at both ends
    (T0 + 2 * H - 1, T0 + 8 * H + 1),
    (T0 + 3 * H, T0 + 3 * H + 1e-3),  # a millisecond
    (T0 + 400 * H, T0 + 500 * H),  # empty, in the future
    (T0 - 86_400 * 30, T0 + 86_400 * 30),
]


@pytest.mark.parametrize("agent", [None, "", "*", "=x", "a=b*", ODD_AGENTS[5], "nobody"])
def test_tables_from_the_rollup_equal_the_call_rows_on_awkward_ranges(odd_shared, agent):
    odd = odd_shared
    for since, until in AWKWARD:
        kw = {"since": since, "until": until, "agent": agent}
        _same_agents(dq.by_agent(odd, "default", **kw),
                     dq.by_agent(odd, "default", rollup=False, **kw))  # fmt: skip
        same_models(dq.by_model(odd, "default", **kw),
                     dq.by_model(odd, "default", rollup=False, **kw))  # fmt: skip
    # and the call rows, counted by hand
    with odd.read_engine.connect() as conn:
        c = schema.calls.c
        q = sa.select(c.agent_name, c.turns).where(c.tenant == "default")
        calls = [(a, n) for a, n in conn.execute(q) if agent is None or a == agent]
    rows = dq.by_agent(odd, "default", since=0, until=T0 + 30 * 86_400, agent=agent)
    assert sum(r["calls"] for r in rows) == len(calls)
    assert sum(r["turns"] for r in rows) == sum(n for _, n in calls)


def test_reversed_or_empty_ranges_are_empty_not_errors(odd_shared):
    odd = odd_shared
    for since, until in ((T0 + H, T0), (T0, T0)):
        assert dq.by_agent(odd, "default", since=since, until=until) == []
        assert dq.by_model(odd, "default", since=since, until=until) == []


def test_hourly_series_equals_the_call_rows_with_active_calls(odd_shared):
    odd = odd_shared
    for since, until, agent in ((T0, T0 + 2 * 86_400, None), (T0, T0 + 2 * 86_400, "*"),
                                (T0 + 5 * H, T0 + 20 * H, "=x")):  # fmt: skip
        kw = {"since": since, "until": until, "interval": 3600, "agent": agent}
        fast, slow = dq.series(odd, "default", **kw), dq.series(odd, "default", rollup=False, **kw)
        assert fast["buckets"].keys() == slow["buckets"].keys()
        for start, a in fast["buckets"].items():
            b = slow["buckets"][start]
            for k in ("calls", "active_calls", "tool_calls", "tool_errors", "e2e_p50",
                      "e2e_p95", "ttft_p50"):  # fmt: skip
                assert a[k] == b[k], (k, start, a, b)
            assert a["cost"] == pytest.approx(b["cost"], abs=1e-9)
    # the long open call is active in every hour from 06:00 to its last record at 10:00 the
    # day after, of agent "*" only ("*" is not the key of the rows of every agent)
    long = dq.series(odd, "default", since=T0, until=T0 + 2 * 86_400, interval=3600, agent="*")
    active = [b["active_calls"] for s, b in sorted(long["buckets"].items())]
    assert all(n >= 1 for n in active[6 : 6 + 29])


# --- tenant isolation --------------------------------------------------------------------

CUSTOM = [
    {"range": "custom", "since": str(T0), "until": str(T0 + 86_400)},  # hourly
    {"range": "custom", "since": str(T0 + 120), "until": str(T0 + 4 * H)},  # by 5 minutes
    {"range": "custom", "since": str(T0), "until": str(T0 + 6 * H + 1)},
    {"range": "custom", "since": str(T0 + 3 * H), "until": str(T0 + 3 * H + 600),
     "agent": "a"},
]  # fmt: skip


def _overview(store, tenant: str) -> list[dict]:
    out = []
    for params in CUSTOM:
        d = overview_data(store, tenant, params, now=T0 + 86_400)
        out.append(msgspec.json.decode(msgspec.json.encode(d)))
    return out


def test_a_tenant_never_sees_another_in_any_table_or_chart(store):
    for i in range(6):
        store.ingest(_with_ttfb(make_call(f"a{i}", t0=T0 + i * 1700, agent="a", turns=2), 0.25),
                     tenant="acme")  # fmt: skip
    mine = _overview(store, "acme")
    assert any(v == 0.25 for d in mine for v in d["tts_ttfb"])
    # another tenant: the same session ids, agent names and hours, other numbers
    for i in range(12):
        recs = make_call(f"a{i % 6}", t0=T0 + i * 900 + 7, agent="a", turns=3, e2e=3.5,
                         tool_error=True, close=i % 2 == 0)  # fmt: skip
        store.ingest(_with_ttfb(unpriced(recs), 0.75), tenant="globex")
    store.ingest(make_call("g-other", t0=T0 + 60, agent="globex-only"), tenant="globex")
    assert _overview(store, "acme") == mine
    theirs = _overview(store, "globex")
    assert theirs != mine and all(v in (None, 0.75) for d in theirs for v in d["tts_ttfb"])
    assert "globex-only" in [r["agent"] for r in theirs[0]["by_agent"]]
    assert dq.agents(store, "acme") == ["a"]
    # a tenant with no calls: zeros, no rows, no error
    for d in _overview(store, "nobody"):
        assert d["totals"] == {"calls": 0, "cost": 0, "turns": 0, "errors": 0}
        assert d["by_agent"] == d["by_model"] == d["costliest"] == d["slowest"] == []
        assert all(b["calls"] == 0 for b in d["buckets"])


# --- ranges ---------------------------------------------------------------------------------


def test_buckets_end_where_the_range_ends(store):
    """A range that ends on a bucket boundary has no bucket starting at its end."""
    store.ingest(make_call("open", t0=T0 + 2 * H + 1800, close=False, turns=1))
    store.ingest(_shift(make_call("open", t0=T0 + 2 * H + 1800, turns=1, close=False),
                        seq=100, dt=2 * H))  # fmt: skip
    for since, until, iv in ((T0, T0 + 86_400, "1h"), (T0, T0 + 3 * H, "1h"),
                             (T0, T0 + 3 * H, "15m"), (T0 + 0.5, T0 + 3 * H, "1h")):  # fmt: skip
        for rollup in (True, False):
            got = queries.stats(store, "default", since=since, until=until, interval=iv,
                                rollup=rollup)  # fmt: skip
            assert got["buckets"] and all(b["start"] < until for b in got["buckets"]), (
                since,
                until,
                iv,
                rollup,
                [b["start"] - T0 for b in got["buckets"]],
            )
    for span, points in ((86_400, 24), (4 * H, 48), (H, 60)):
        d = overview_data(store, "default",
                          {"range": "custom", "since": str(T0), "until": str(T0 + span)},
                          now=time.time())  # fmt: skip
        assert len(d["xs"]) == len(d["buckets"]) == len(d["tts_ttfb"]) == points, span
        assert d["xs"][-1] < T0 + span
        ser = dq.series(store, "default", since=T0, until=T0 + span, interval=d["interval"])
        assert len(ser["buckets"]) == points


@pytest.mark.parametrize("since,until", [("4e22", "4.0000000000000008e22"),
                                         ("-4.0000000000000008e22", "-4e22"),
                                         ("1e300", "1e300")])  # fmt: skip
def test_a_custom_range_far_from_now_is_refused_not_an_overflow(store, since, until):
    store.ingest(make_call("c", t0=T0))
    with pytest.raises(InvalidArgumentError):
        overview_data(store, "default", {"range": "custom", "since": since, "until": until},
                      now=T0)  # fmt: skip
    with pytest.raises(InvalidArgumentError):
        queries.stats(store, "default", since=float(since), until=float(until), interval="1d")


def test_six_hours_and_a_second_either_way(store):
    for i in range(8):
        store.ingest(make_call(f"s{i}", t0=T0 + i * 2900.0, agent="a" if i % 2 else None))
    for span, iv in ((6 * H - 1, 300), (6 * H, 300), (6 * H + 1, 3600)):
        d = overview_data(store, "default", {"range": "custom", "since": str(T0 + 1234.5),
                                             "until": str(T0 + 1234.5 + span)}, now=T0)  # fmt: skip
        assert d["interval"] == iv
        assert sum(b["calls"] for b in d["buckets"]) == d["totals"]["calls"]
        if iv == 3600:  # widened to whole hours
            assert (d["since"], d["until"]) == (T0, T0 + 7 * H)
        want = sum(1 for i in range(8) if d["since"] <= T0 + i * 2900.0 < d["until"])
        assert d["totals"]["calls"] == want
    assert math.isfinite(d["totals"]["cost"])


def test_tts_ttfb_sample_leaves_no_hour_without_a_value(tmp_path, monkeypatch):
    """Over many calls, the systematic sample of minutes keeps a minute of every hour."""
    with Store(tmp_path / "s.db", prices=None) as store:
        recs = []
        for h in range(24):
            for j in range(3):
                recs += _with_ttfb(make_call(f"h{h}-{j}", t0=T0 + h * H + j * 1260 + 7,
                                             turns=1), 0.25 + 0.01 * h)  # fmt: skip
        store.ingest(recs)
        kw = {"since": T0, "until": T0 + 86_400}
        assert dq.tts_ttfb_p50(store, "default", interval=3600, **kw)[0] == {
            T0 + h * H: pytest.approx(0.25 + 0.01 * h) for h in range(24)
        }
        monkeypatch.setattr(dq, "TTFB_CALLS", 1)  # 72 calls: k would be 72 minutes
        got, k = dq.tts_ttfb_p50(store, "default", interval=3600, **kw)
        # k = 60: the first minute of every hour, where a call of every hour started
        assert k == 60
        assert sorted(got) == [T0 + h * H for h in range(24)]


def test_servers_starting_at_once_on_an_old_postgresql_store_all_open_it(pg_cluster, pg_template):
    """Several processes opening a PostgreSQL store at 0002 at the same moment (servers
    restarted after an upgrade): one migrates, the others wait and find it current."""
    import subprocess
    import sys

    from alembic import command

    url = pg_cluster.create_database("at_0002", template=pg_template)
    with Store(url, prices=None) as s:
        hostile(s)
        want = rollup_table(s)
        with s.write_engine.begin() as conn:
            command.downgrade(_alembic(conn), "0002")
    code = "import sys; from callmeter.store import Store; Store(sys.argv[1], prices=None).close()"
    procs = [subprocess.Popen([sys.executable, "-c", code, url], stderr=subprocess.PIPE,
                              text=True) for _ in range(3)]  # fmt: skip
    errs = [(p.wait(60), p.stderr.read()) for p in procs]
    for p in procs:
        p.stderr.close()
    assert all(rc == 0 for rc, _ in errs), [e[-300:] for _, e in errs]
    with Store(url, prices=None) as s:
        assert_same_rollup(rollup_table(s), want)


def test_a_nul_character_in_a_filter_is_a_typed_error_not_a_database_error(store):
    """No stored string holds NUL (ingest refuses it), and PostgreSQL text cannot: a filter
    with one is refused with InvalidArgumentError (a 400), a call id with one is not found."""
    import base64

    from callmeter.server.dashboard.routes import calls_data

    store.ingest(make_call("c", t0=T0, agent="a"))
    for span in (86_400, 3600):
        with pytest.raises(InvalidArgumentError, match="NUL"):
            overview_data(store, "default", {"range": "custom", "since": str(T0),
                                             "until": str(T0 + span), "agent": "a\x00"},
                          now=T0)  # fmt: skip
    for params in ({"agent": "a\x00"}, {"label": "k:v\x00"}, {"label": "k\x00:v"}):
        with pytest.raises(InvalidArgumentError, match="NUL"):
            calls_data(store, "default", params)
    with pytest.raises(InvalidArgumentError, match="NUL"):
        queries.stats(store, "default", since=T0, until=T0 + H, agent="\x00")
    with pytest.raises(InvalidArgumentError, match="NUL"):
        queries.stats(store, "default", since=T0, until=T0 + H, group_by="label:k\x00")
    raw = msgspec.json.encode(["started", "desc", T0, "c\x00"])
    with pytest.raises(InvalidArgumentError):
        queries.list_calls(store, "default", cursor=base64.urlsafe_b64encode(raw).decode())
    assert queries.get_call(store, "default", "c\x00") is None
    assert queries.get_call(store, "default", "c") is not None
