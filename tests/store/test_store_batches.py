"""Storing several batches in one pass: the same rows and counts as one after the other,
call sums identical to the bit whatever the batching, and the fast batch check agreeing
with check_record."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from callmeter.model.events import SessionStartedEvent
from callmeter.records import encode
from callmeter.store import Store, check_record, schema
from callmeter.store.store import MAX_ID, MAX_LABELS, MAX_SEQ, all_storable

from .factory import make_call

# every column of a call row but the tenant (compared across tenants of one store)
SUMMARY = [c.name for c in schema.calls.c if c.name != "tenant"]


def call_rows(store: Store, tenant: str) -> dict[str, dict]:
    with store.read_engine.connect() as c:
        q = sa.select(schema.calls).where(schema.calls.c.tenant == tenant)
        return {r["session_id"]: {k: r[k] for k in SUMMARY} for r in c.execute(q).mappings()}


def table_rows(store: Store, table: sa.Table, tenant: str) -> list[tuple]:
    cols = [c for c in table.c if c.name != "tenant"]
    with store.read_engine.connect() as c:
        q = sa.select(*cols).where(table.c.tenant == tenant)
        return sorted(tuple(r) for r in c.execute(q))


def test_a_group_of_batches_equals_the_batches_one_after_the_other(store):
    c1 = make_call("c1", turns=4, labels={"tier": "gold"})
    c2 = make_call("c2", turns=2, tool_error=True, breach=True)
    c3 = make_call("c3", turns=3, agent=None)
    store.ingest(c3[:5], tenant="g")  # an existing call, continued by the group
    store.ingest(c3[:5], tenant="s")
    batches = [
        c1[:7] + c2 + c3[5:9],
        [*c1[5:], c2[3], c2[3], *c3[9:]],  # overlaps the first batch, a duplicate inside
        c3[:2] + c1[:1],  # nothing new
    ]
    group = store.ingest_batches([("g", b) for b in batches] + [("other", c1)])
    one_by_one = [store.ingest(b, tenant="s") for b in batches]
    assert [(r.accepted, r.duplicates, r.invalid) for r in group[:3]] == [
        (r.accepted, r.duplicates, r.invalid) for r in one_by_one
    ]
    assert [(r.accepted, r.duplicates) for r in group] == [
        (7 + len(c2) + 4, 0),
        (len(c1) - 7 + len(c3) - 9, 2 + 2),
        (0, 3),
        (len(c1), 0),
    ]
    assert call_rows(store, "g") == call_rows(store, "s")
    for table in (schema.records, schema.turns, schema.call_models, schema.call_labels):
        assert table_rows(store, table, "g") == table_rows(store, table, "s"), table.name
    rollup = schema.call_rollup
    assert table_rows(store, rollup, "g") == table_rows(store, rollup, "s")


def test_call_sums_are_identical_to_the_bit_whatever_the_batching(store):
    recs = make_call("c1", turns=9, e2e=0.37) + make_call("c2", turns=5, e2e=1.3)
    recs.sort(key=lambda r: r.created_at)  # two calls interleaved
    for r in recs:  # one record at a time, each call's sums read back from the database
        store.ingest([r], tenant="one")
    store.ingest(recs, tenant="all")
    for i in range(0, len(recs), 7):
        store.ingest_batches([("seven", recs[i : i + 7])])
    one, all_, seven = (call_rows(store, t) for t in ("one", "all", "seven"))
    assert one == all_ == seven  # exact: floats compared with ==, sketches byte for byte
    assert one["c1"]["cost"] > 0 and one["c1"]["llm_duration"] > 0


def test_given_bodies_are_what_is_stored(store):
    recs = make_call("b1", turns=2)
    bodies = [encode(r) for r in recs]
    (res,) = store.ingest_batches([("t", recs, bodies)])
    assert res.accepted == len(recs)
    with store.read_engine.connect() as c:
        rows = c.execute(
            sa.select(schema.records.c.seq, schema.records.c.body).order_by(schema.records.c.seq)
        ).all()
    assert [bytes(b) for _, b in rows] == bodies
    with pytest.raises(ValueError):  # bodies must match the records one for one
        store.ingest_batches([("t2", recs, bodies[:-1])])
    with store.read_engine.connect() as c:
        q = sa.select(sa.func.count()).where(schema.records.c.tenant == "t2")
        assert c.execute(q).scalar_one() == 0  # nothing of the failed group stored


def _start(**kw) -> SessionStartedEvent:
    env = {"session_id": "s", "seq": 0, "created_at": 1.0} | kw
    return SessionStartedEvent(**env)


@pytest.mark.parametrize(
    "bad",
    [
        {"session_id": ""},
        {"session_id": "x" * (MAX_ID + 1)},
        {"agent_name": "a" * (MAX_ID + 1)},
        {"labels": {f"k{i}": "v" for i in range(MAX_LABELS + 1)}},
        {"labels": {"": "v"}},
        {"labels": {"k" * 201: "v"}},
        {"labels": {"k": "v" * 501}},
        {"seq": MAX_SEQ + 1},
    ],
    ids=lambda b: next(iter(b)) + str(len(str(next(iter(b.values()))))),
)
def test_the_batch_check_agrees_with_check_record(bad):
    ok = [_start(session_id=f"ok{i}", agent_name="a", labels={"k": "v"}) for i in range(50)]
    assert all_storable(ok) and all(check_record(r) is None for r in ok)
    assert all_storable([])
    rec = _start(**bad)
    assert check_record(rec) is not None
    for where in (0, 25, 50):  # first, in the middle, last
        assert not all_storable([*ok[:where], rec, *ok[where:]])
    # labels equal to the previous record's are checked once; a different bad one is not
    # hidden behind them
    if "labels" in bad:
        same = [_start(labels=dict(bad["labels"])) for _ in range(3)]
        assert not all_storable([ok[0], *same])


def test_warm_up_loads_the_prices(tmp_path):
    with Store(tmp_path / "w.db") as s:
        s.warm_up()
        assert s._request_pricer is not None and s._request_pricer.prices is not None
    with Store(tmp_path / "w.db", prices=False) as s:
        s.warm_up()  # nothing to load
        assert s.ingest(make_call("c")).accepted == 14
