"""The query layer (store/queries.py) on SQLite and PostgreSQL: lists, detail, statistics."""

from __future__ import annotations

import pytest

from callmeter.errors import InvalidArgumentError
from callmeter.store import queries

from .factory import make_call

H = 3600.0
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


@pytest.fixture
def filled(store):
    recs = []
    # hour 0: two calls of agent a (gold), one with tool errors; hour 2: agent b
    recs += make_call("a1", t0=T0 + 60, agent="a", labels={"tier": "gold"}, e2e=1.0)
    recs += make_call("a2", t0=T0 + 120, agent="a", labels={"tier": "gold"}, e2e=3.0,
                      tool_error=True)  # fmt: skip
    recs += make_call("b1", t0=T0 + 2 * H + 10, agent="b", labels={"tier": "free"}, e2e=2.0)
    # a long call: starts in hour 0, still open in hour 3
    long = make_call("long", t0=T0 + 30, agent="a", turns=1, close=False)
    long[-1].created_at = T0 + 3 * H + 5
    long[-1].metrics.timestamp = T0 + 3 * H + 5
    recs += long
    store.ingest(recs)
    store.ingest(make_call("other-tenant", t0=T0 + 60), tenant="intruder")
    return store


def test_stats_by_hour(filled):
    out = queries.stats(filled, "default", since=T0, until=T0 + 4 * H, interval="1h")
    b = {int((x["start"] - T0) // H): x for x in out["buckets"]}
    assert set(b) == {0, 1, 2, 3}
    assert [b[h]["calls"] for h in range(4)] == [3, 0, 1, 0]
    assert [b[h]["active_calls"] for h in range(4)] == [3, 1, 2, 1]
    a1 = queries.get_call(filled, "default", "a1")["call"]
    assert b[0]["cost"] == pytest.approx(7 / 3 * a1["cost"], rel=1e-6)  # 3 + 3 + 1 turns
    assert b[0]["cost_by_kind"]["llm"] > 0 and b[0]["cost_by_kind"]["tts"] > 0
    assert set(b[0]["cost_by_model"]) == {"openai/gpt-4o-mini", "openai/tts-1"}
    assert b[0]["cost_by_provider"]["openai"] == pytest.approx(b[0]["cost"], rel=1e-6)
    assert b[0]["e2e_p95"] == pytest.approx(3.0, rel=0.011)
    assert b[0]["e2e_p50"] == pytest.approx(1.0, rel=0.011)
    assert b[0]["ttft_p50"] == pytest.approx(0.2, rel=0.011)
    assert b[0]["tool_calls"] == 7 and b[0]["tool_errors"] == 3
    assert b[0]["tool_error_rate"] == pytest.approx(3 / 7)
    assert b[1]["e2e_p95"] is None and b[1]["tool_error_rate"] is None


def test_stats_grouped(filled):
    by_agent = queries.stats(filled, "default", since=T0, until=T0 + 4 * H, group_by="agent")
    calls = {(x["group"], x["start"]): x["calls"] for x in by_agent["buckets"]}
    assert calls[("a", T0)] == 3 and calls[("b", T0 + 2 * H)] == 1
    by_label = queries.stats(filled, "default", since=T0, until=T0 + 4 * H, interval="1d",
                             group_by="label:tier")  # fmt: skip
    assert {x["group"]: x["calls"] for x in by_label["buckets"]} == {"gold": 2, "free": 1}
    by_model = queries.stats(filled, "default", since=T0, until=T0 + 4 * H, interval="1d",
                             group_by="model")  # fmt: skip
    g = {x["group"]: x for x in by_model["buckets"]}
    assert set(g) == {"openai/gpt-4o-mini", "openai/tts-1"} and g["openai/tts-1"]["calls"] == 4
    total = queries.stats(filled, "default", since=T0, until=T0 + 4 * H, interval="1d")
    assert sum(x["cost"] for x in g.values()) == pytest.approx(total["buckets"][0]["cost"])
    by_provider = queries.stats(filled, "default", since=T0, until=T0 + 4 * H, interval="1d",
                                group_by="provider")  # fmt: skip
    assert [x["group"] for x in by_provider["buckets"]] == ["openai"]


def test_stats_arguments(filled):
    for kw in ({"interval": "2s"}, {"interval": "2d"}, {"interval": "x"}, {"group_by": "nope"},
               {"group_by": "label:"}, {"since": T0, "until": T0}, {"until": float("nan")},
               {"since": 0, "until": 1e11, "interval": "1m"}):  # fmt: skip
        args = {"since": T0, "until": T0 + H} | kw
        with pytest.raises(InvalidArgumentError):
            queries.stats(filled, "default", **args)


def test_list_and_detail_see_one_tenant(filled):
    page = queries.list_calls(filled, "default", limit=2, sort="cost", order="asc")
    assert len(page.calls) == 2 and page.next_cursor
    rest = queries.list_calls(filled, "default", sort="cost", order="asc",
                              cursor=page.next_cursor)  # fmt: skip
    ids = [c["session_id"] for c in page.calls + rest.calls]
    assert sorted(ids) == ["a1", "a2", "b1", "long"]
    assert queries.list_calls(filled, "default", labels={"tier": "gold"}, has_errors=True) \
        .calls[0]["session_id"] == "a2"  # fmt: skip
    assert queries.get_call(filled, "default", "other-tenant") is None
    assert [c["session_id"] for c in queries.list_calls(filled, "intruder").calls] == [
        "other-tenant"
    ]
    d = queries.get_call(filled, "default", "long")
    assert not d["call"]["closed"] and d["call"]["duration"] == pytest.approx(3 * H - 25)
    with pytest.raises(InvalidArgumentError):
        queries.list_calls(filled, "default", cursor=page.next_cursor, sort="started")
