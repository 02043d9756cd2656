"""Store: open (and migrate) the database, ingest records idempotently, prune old calls."""

from __future__ import annotations

import logging
import math
import operator
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import InvalidArgumentError
from ..model.events import RECORD_TYPES, MetricsCollectedEvent, Record
from ..records.codec import encode
from . import schema
from .rollup import SNAPSHOT, RollupDelta, call_models_of
from .summary import TURN_COLUMNS, CallDelta, RequestPricer, apply_records, new_call

try:
    import sqlalchemy as sa
    from sqlalchemy import event
    from sqlalchemy.engine import Connection, Engine
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "callmeter.store needs SQLAlchemy and Alembic: pip install 'callmeter[store]'"
    ) from exc

logger = logging.getLogger("callmeter.store")

DEFAULT_DB = "callmeter.db"
DEFAULT_TENANT = "default"
_CHUNK = 400  # rows per IN (...) list, well under every driver's parameter limit
MAX_SEQ = 2**63 - 1
MAX_ID = 500
MAX_LABELS = 64
MAX_LABEL_KEY = 200
MAX_LABEL_VALUE = 500
_TAGS = {cls: cls.__struct_config__.tag for cls in RECORD_TYPES}
_MIGRATE_LOCK = threading.Lock()  # see Store.migrate
_batch_index = operator.itemgetter(2)
# a NUL escape in JSON: \u0000 after an even run of backslashes (after an odd one, the
# backslash before the u is itself escaped, and the string holds a backslash, not a NUL)
_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


def has_nul(body: bytes) -> bool:
    """Whether the JSON ``body`` holds a NUL character in a string (or key)."""
    return b"\\u0000" in body and _NUL.search(body) is not None


Batch = tuple[str, Sequence[Record]] | tuple[str, Sequence[Record], Sequence[bytes]]
"""A batch to store: ``(tenant, records)``, or ``(tenant, records, bodies)`` with each
record's JSON (see :meth:`Store.ingest_batches`)."""


def _label_sizes_fit(labels: dict[str, str]) -> bool:
    return all(
        k and len(k) <= MAX_LABEL_KEY and len(v) <= MAX_LABEL_VALUE for k, v in labels.items()
    )


def check_record(record: Record, body: bytes | None = None) -> str | None:
    """Why the store cannot keep ``record`` (a decoded, valid record), or None.

    The store's columns are bounded: ``seq`` below 2**63, ``session_id`` and ``agent_name``
    up to 500 characters, at most 64 labels (keys up to 200, values up to 500 characters),
    and no NUL character anywhere (PostgreSQL text cannot hold one).
    """
    if record.seq > MAX_SEQ:
        return f"seq must be below 2**63, got {record.seq}"
    sid = record.session_id
    if not sid or len(sid) > MAX_ID:
        return f"session_id must be 1 to {MAX_ID} characters"
    if record.agent_name is not None and len(record.agent_name) > MAX_ID:
        return f"agent_name must be at most {MAX_ID} characters"
    labels = record.labels
    if labels:
        if len(labels) > MAX_LABELS:
            return f"at most {MAX_LABELS} labels"
        if not _label_sizes_fit(labels):
            return (
                f"label keys must be 1 to {MAX_LABEL_KEY} characters and values at most "
                f"{MAX_LABEL_VALUE}"
            )
    if has_nul(body if body is not None else encode(record)):
        return "strings must not contain NUL (\\u0000)"
    return None


def all_storable(records: Sequence[Record]) -> bool:
    """Whether :func:`check_record` passes every one of ``records`` (decoded, valid
    records), but for the NUL check, which the caller makes on the whole encoded batch. A
    fast path for a batch: names are measured once each, labels once per run of equal ones.
    """
    if not records:
        return True
    if max([r.seq for r in records]) > MAX_SEQ:
        return False
    if any(not s or len(s) > MAX_ID for s in {r.session_id for r in records}):
        return False
    if any(a is not None and len(a) > MAX_ID for a in {r.agent_name for r in records}):
        return False
    prev: dict[str, str] | None = None
    for labels in [r.labels for r in records]:
        if labels and labels != prev:
            if len(labels) > MAX_LABELS or not _label_sizes_fit(labels):
                return False
            prev = labels
    return True


def resolve_url(url: str | os.PathLike[str] | None = None) -> str:
    """A database URL: ``url``, else ``$CALLMETER_DB``, else ``./callmeter.db`` (SQLite).

    A plain path (no ``://``) means a SQLite file; ``postgresql://`` uses psycopg 3.
    """
    if url is None:
        url = os.environ.get("CALLMETER_DB") or DEFAULT_DB
    text = os.fspath(url)
    if not isinstance(text, str) or not text.strip():
        raise InvalidArgumentError(f"a database URL or path is needed, got {url!r}")
    if "://" not in text:
        return f"sqlite:///{Path(text).expanduser().resolve()}"
    if text.startswith("postgresql://") or text.startswith("postgres://"):
        return "postgresql+psycopg://" + text.split("://", 1)[1]
    return text


@dataclass(slots=True)
class IngestResult:
    """What storing one batch did: records newly stored, and records already stored."""

    accepted: int = 0
    duplicates: int = 0
    invalid: int = 0
    """Records the store cannot keep (see :func:`check_record`), left out."""


@dataclass(slots=True)
class PruneResult:
    """What a prune removed."""

    calls: int = 0
    records: int = 0


def _chunks(items: Sequence[Any], n: int = _CHUNK) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


class Store:
    """The call store on SQLite (WAL, the default) or PostgreSQL.

    ``Store()`` opens ``$CALLMETER_DB`` or ``./callmeter.db``, creating and migrating it on
    first use. :meth:`ingest` stores records idempotently: a record whose ``(tenant,
    session_id, seq)`` is already stored is counted as a duplicate and changes nothing.
    """

    def __init__(self, url: str | os.PathLike[str] | None = None, *, prices: Any = None) -> None:
        self.url = resolve_url(url)
        try:
            parsed = sa.engine.make_url(self.url)
        except sa.exc.ArgumentError as exc:
            raise InvalidArgumentError(f"not a database URL: {self.url!r} ({exc})") from None
        self.dialect = parsed.get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise InvalidArgumentError(
                f"unsupported database {self.dialect!r}: use a SQLite path or a postgresql:// URL"
            )
        if self.dialect == "sqlite":
            path = parsed.database
            if path and path != ":memory:":
                try:
                    Path(path).parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise InvalidArgumentError(f"cannot create {path!r}: {exc}") from None
            self.write_engine = self._sqlite_engine(self.url, write=True)
            self.read_engine = self._sqlite_engine(self.url, write=False)
        else:
            self.write_engine = sa.create_engine(self.url, pool_pre_ping=True)
            self.read_engine = self.write_engine
        self._prices_arg = prices
        self._prices: Any = None
        self._prices_loaded = False
        self._request_pricer: RequestPricer | None = None
        ph = "?" if self.dialect == "sqlite" else "%s"
        self._insert_records_sql = (
            "INSERT INTO records (tenant, session_id, seq, part_time, created_at, event, kind, "
            f"body) VALUES ({', '.join([ph] * 8)})"
        )
        self._call_columns = [c.name for c in schema.calls.c]
        self._call_update_columns = [
            c for c in self._call_columns if c not in ("tenant", "session_id", "part_time")
        ]
        self._insert_calls_sql = (
            f"INSERT INTO calls ({', '.join(self._call_columns)}) "
            f"VALUES ({', '.join([ph] * len(self._call_columns))})"
        )
        self._call_values = operator.itemgetter(*self._call_columns)
        self._call_update_values = operator.itemgetter(
            *self._call_update_columns, "tenant", "session_id"
        )
        model_columns = [c.name for c in schema.call_models.c]
        self._model_values = operator.itemgetter(*model_columns)
        self._insert_models_sql = (
            f"INSERT INTO call_models ({', '.join(model_columns)}) "
            f"VALUES ({', '.join([ph] * len(model_columns))})"
        )
        self._update_calls_sql = (
            "UPDATE calls SET "
            + ", ".join(f"{c} = {ph}" for c in self._call_update_columns)
            + f" WHERE tenant = {ph} AND session_id = {ph}"
        )
        self._insert_turns_sql = (
            f"INSERT INTO turns ({', '.join(TURN_COLUMNS)}) "
            f"VALUES ({', '.join([ph] * len(TURN_COLUMNS))})"
        )
        self._lock = threading.Lock()  # one writer per Store (group commit happens above)
        self._partitions: set[int] = set()
        try:
            self.migrate()
        except (sa.exc.DBAPIError, ValueError, OSError) as exc:
            self.close()
            raise InvalidArgumentError(
                f"cannot open the store at {parsed.render_as_string(hide_password=True)!r}: "
                f"{str(exc).splitlines()[0]}"
            ) from None

    @staticmethod
    def _sqlite_engine(url: str, *, write: bool) -> Engine:
        engine = sa.create_engine(
            url, connect_args={"isolation_level": None, "check_same_thread": False, "timeout": 30}
        )

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")  # acknowledged means on disk
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=OFF")
            try:
                cur.execute("SELECT floor(1.5)")
            except Exception:  # SQLite built without its math functions
                dbapi_conn.create_function("floor", 1, _floor, deterministic=True)
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        return engine

    def migrate(self) -> None:
        """Bring the schema to the newest migration (Alembic)."""
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
        # Alembic keeps the running migration's context in module globals: stores opened
        # by several threads at once would run one store's migration on another's connection
        with _MIGRATE_LOCK, self.write_engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    @property
    def prices(self) -> Any:
        """The prices calls are costed with (callmeter's defaults unless given; None when
        the store was opened with ``prices=False``). ``prices`` takes what
        :class:`~callmeter.usage.UsageCollector` takes: a ``Prices``, override rates (a dict
        or a TOML path), None for the defaults, False for no cost."""
        if not self._prices_loaded:
            from ..pricing.prices import resolve_prices

            self._prices = resolve_prices(self._prices_arg)
            self._prices_loaded = True
        return self._prices

    @property
    def _pricer(self) -> RequestPricer:
        if self._request_pricer is None:
            self._request_pricer = RequestPricer(self.prices)
        return self._request_pricer

    def warm_up(self) -> None:
        """Load the prices and the pricing code now rather than on the first ingest (a
        server calls this at startup, so its first batch is not slower than the others)."""
        pricer = self._pricer
        if pricer.prices is not None:
            # an unknown name goes through every price table (and imports genai-prices)
            pricer.prices.lookup("callmeter-warm-up", "callmeter-warm-up")

    def close(self) -> None:
        """Release the database connections."""
        self.write_engine.dispose()
        if self.read_engine is not self.write_engine:
            self.read_engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ingest ------------------------------------------------------------------------------

    def ingest(self, records: Sequence[Record], *, tenant: str = DEFAULT_TENANT) -> IngestResult:
        """Store ``records`` in one transaction; returns what was new and what was not."""
        return self.ingest_batches([(tenant, records)])[0]

    def ingest_batches(
        self, batches: Sequence[Batch], *, before_commit: Callable[[], None] | None = None
    ) -> list[IngestResult]:
        """Store several batches in one transaction (group commit), one result each.

        A batch is ``(tenant, records)`` or ``(tenant, records, bodies)``, where ``bodies``
        holds each record's JSON as :func:`~callmeter.records.encode` gives it, the
        records already checked with :func:`check_record` (the server's parser does both
        for a whole body at once). The result is the same as storing the batches one after
        the other. Returns once the transaction is committed; raises (and stores nothing)
        when it cannot be. ``before_commit`` is called when only the commit is left (the
        server's writer lets requests decode their bodies while the commit waits for the
        disk).
        """
        for b in batches:
            tenant = b[0]
            if not isinstance(tenant, str) or not tenant:
                raise InvalidArgumentError(f"tenant must be a non-empty str, got {tenant!r}")
        prices = self._pricer
        if self.dialect == "postgresql":
            self._ensure_partitions({r.created_at for b in batches for r in b[1]})
        by_tenant: dict[str, list[int]] = {}
        for i, b in enumerate(batches):
            by_tenant.setdefault(b[0], []).append(i)
        for attempt in range(5):
            results = [IngestResult() for _ in batches]
            try:
                with self._lock, self.write_engine.begin() as conn:
                    for tenant, idx in by_tenant.items():
                        self._ingest(conn, tenant, [batches[i] for i in idx],
                                     [results[i] for i in idx], prices)  # fmt: skip
                    if before_commit is not None:
                        before_commit()
                return results
            except sa.exc.IntegrityError:
                # Another writer (another process on the same PostgreSQL database) created
                # one of these calls first: the transaction rolled back, so run it again.
                if attempt == 4:
                    raise
                time.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    def _ingest(
        self,
        conn: Connection,
        tenant: str,
        batches: list[Batch],
        results: list[IngestResult],
        prices: Any,
    ) -> None:
        """Store the batches of one tenant (in order), counting into ``results``."""
        # session -> seq -> (record, body, index of its batch); the first occurrence wins
        by_session: dict[str, dict[int, tuple[Record, bytes, int]]] = {}
        for bi, batch in enumerate(batches):
            result = results[bi]
            records = batch[1]
            if len(batch) > 2:
                pairs: Iterable[tuple[Record, bytes]] = zip(records, batch[2], strict=True)
            else:
                pairs = self._checked(records, result)
            for r, body in pairs:
                sid = r.session_id
                seqs = by_session.get(sid)
                if seqs is None:
                    seqs = by_session[sid] = {}
                if r.seq in seqs:
                    result.duplicates += 1
                else:
                    seqs[r.seq] = (r, body, bi)
        if not by_session:
            return
        calls_t = schema.calls
        rows: dict[str, dict[str, Any]] = {}
        for chunk in _chunks(list(by_session)):
            q = sa.select(calls_t).where(
                calls_t.c.tenant == tenant, calls_t.c.session_id.in_(chunk)
            )
            if self.dialect == "postgresql":
                q = q.with_for_update()
            for row in conn.execute(q).mappings():
                rows[row["session_id"]] = dict(row)
        existing_calls = set(rows)
        # records already stored
        rec_t = schema.records
        stored: set[tuple[str, int]] = set()
        known = [(sid, seq) for sid in existing_calls for seq in by_session[sid]]
        for chunk in _chunks(known):
            q = sa.select(rec_t.c.session_id, rec_t.c.seq).where(
                rec_t.c.tenant == tenant, sa.tuple_(rec_t.c.session_id, rec_t.c.seq).in_(chunk)
            )
            stored.update((sid, seq) for sid, seq in conn.execute(q))
        for sid, seq in stored:
            results[by_session[sid][seq][2]].duplicates += 1
        new_records: list[tuple[Any, ...]] = []
        deltas: dict[str, CallDelta] = {}
        model_runs: dict[str, list[dict[tuple[str, str, str], dict[str, Any]]]] = {}
        before: dict[str, dict[str, Any]] = {}
        tags = _TAGS
        metrics_cls = MetricsCollectedEvent
        accepted = [0] * len(batches)
        single = len(batches) == 1
        for sid, seqs in by_session.items():
            # in the order of storing the batches one after the other: by batch, then seq
            items = [v for _, v in sorted(seqs.items())] if len(seqs) > 1 else seqs.values()
            if not single and len(seqs) > 1:
                items.sort(key=_batch_index)  # stable: by seq within a batch
            if sid in existing_calls:
                fresh = [v for v in items if (sid, v[0].seq) not in stored]
                if not fresh:
                    continue
            else:
                fresh = list(items)
            row = rows.get(sid)
            if row is None:  # created by the first batch with records of it
                first = fresh[0][2]
                t0 = min(v[0].created_at for v in fresh if v[2] == first)
                row = rows[sid] = new_call(tenant, sid, t0)
            else:
                before[sid] = {k: row[k] for k in SNAPSHOT}
            part_time = row["part_time"]
            new_records += [
                (
                    tenant,
                    sid,
                    r.seq,
                    part_time,
                    r.created_at,
                    tags[r.__class__],
                    r.metrics.__class__.type if r.__class__ is metrics_cls else None,
                    body,
                )
                for r, body, _ in fresh
            ]
            if single:
                accepted[0] += len(fresh)
            else:
                for v in fresh:
                    accepted[v[2]] += 1
            recs = [v[0] for v in fresh]
            if single or fresh[0][2] == fresh[-1][2]:
                deltas[sid] = apply_records(row, recs, prices, tenant=tenant)
            else:  # records of several batches: each batch's run on its own, as one after
                # the other would (a model's usage is summed per batch, then added)
                deltas[sid], model_runs[sid] = self._apply_runs(row, fresh, recs, prices, tenant)
        for result, n in zip(results, accepted, strict=True):
            result.accepted += n
        if not new_records:
            return
        # the hot insert goes straight to the driver (no per-row SQLAlchemy processing)
        conn.exec_driver_sql(self._insert_records_sql, new_records)
        inserts = [rows[s] for s in deltas if s not in existing_calls]
        updates = [rows[s] for s in deltas if s in existing_calls]
        # calls rows go straight to the driver too: dozens of columns a row
        if inserts:
            conn.exec_driver_sql(self._insert_calls_sql, [*map(self._call_values, inserts)])
        if updates:
            conn.exec_driver_sql(self._update_calls_sql, [*map(self._call_update_values, updates)])
        old_models = self._write_side_tables(conn, tenant, deltas, existing_calls, model_runs)
        rollup = RollupDelta()
        for sid, d in deltas.items():
            prev = old_models.get(sid, [])
            if sid in before:
                rollup.add(before[sid], prev, -1)
            if d.models:
                merged: dict[tuple[str, str, str], float | None] = {
                    (k, p, m): c for k, p, m, c in prev
                }
                for run in model_runs.get(sid) or (d.models,):
                    for key, mu in run.items():
                        c = merged.get(key)
                        if mu["cost"] is not None:
                            c = (c or 0.0) + mu["cost"]
                        merged[key] = c
                prev = [(*k, c) for k, c in merged.items()]
            rollup.add(rows[sid], prev)
        rollup.write(conn, tenant, lock=self.dialect == "postgresql")

    @staticmethod
    def _checked(records: Sequence[Record], result: IngestResult) -> list[tuple[Record, bytes]]:
        """Each record the store can keep with its JSON; the others counted as invalid."""
        out = []
        for r in records:
            body = encode(r)
            if check_record(r, body) is not None:
                result.invalid += 1
            else:
                out.append((r, body))
        return out

    @staticmethod
    def _apply_runs(
        row: dict[str, Any],
        fresh: list[tuple[Record, bytes, int]],
        recs: list[Record],
        prices: Any,
        tenant: str,
    ) -> tuple[CallDelta, list[dict[tuple[str, str, str], dict[str, Any]]]]:
        """:func:`apply_records` for each batch's run of ``fresh`` (ordered by batch):
        the deltas joined, and each run's model usage in order."""
        out: CallDelta | None = None
        runs = []
        i = 0
        while i < len(fresh):
            j, bi = i, fresh[i][2]
            while j < len(fresh) and fresh[j][2] == bi:
                j += 1
            d = apply_records(row, recs[i:j], prices, tenant=tenant)
            runs.append(d.models)
            if out is None:
                out = d
                out.models = dict(d.models)  # runs[0] stays this run's own
            else:
                out.turns += d.turns
                if out.labels is None:
                    out.labels = d.labels
                for key, mu in d.models.items():  # which models: the runs say how much
                    out.models.setdefault(key, mu)
            i = j
        assert out is not None
        return out, runs

    def _write_side_tables(
        self,
        conn: Connection,
        tenant: str,
        deltas: dict[str, CallDelta],
        existing: set[str],
        model_runs: dict[str, list[dict[tuple[str, str, str], dict[str, Any]]]] | None = None,
    ) -> dict[str, list[tuple[str, str, str, float | None]]]:
        """Write turns, labels and model usage (of each batch's run in turn, where
        ``model_runs`` has them); returns the calls' model costs from before."""
        turns = [t for d in deltas.values() for t in d.turns]
        if turns:  # straight to the driver, like records: several rows a call
            conn.exec_driver_sql(self._insert_turns_sql, turns)
        labels = [
            {"tenant": tenant, "session_id": sid, "key": k, "value": v}
            for sid, d in deltas.items()
            if d.labels
            for k, v in d.labels.items()
        ]
        if labels:
            conn.execute(schema.call_labels.insert(), labels)
        cm = schema.call_models
        models: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for sid, d in deltas.items():
            for run in (model_runs or {}).get(sid) or (d.models,):
                for key, m in run.items():
                    models.setdefault((sid, *key), []).append(m)
        old: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        old_costs: dict[str, list[tuple[str, str, str, float | None]]] = {}
        sids = sorted(s for s in deltas if s in existing)
        for chunk in _chunks(sids):
            q = sa.select(cm).where(cm.c.tenant == tenant, cm.c.session_id.in_(chunk))
            for row in conn.execute(q).mappings():
                sid = row["session_id"]
                old[(sid, row["kind"], row["provider"], row["model"])] = dict(row)
                old_costs.setdefault(sid, []).append(
                    (row["kind"], row["provider"], row["model"], row["cost"])
                )
        if not models:
            return old_costs
        inserts, updates = [], []
        for key, ms in models.items():
            prev = old.get(key)
            new = prev is None
            if prev is None:
                prev, ms = ms[0], ms[1:]
                if ms:
                    prev = dict(prev)
            for m in ms:
                for f in ("requests", "prompt_tokens", "completion_tokens", "audio_duration",
                          "characters", "duration", "errors"):  # fmt: skip
                    prev[f] += m[f]
                if m["cost"] is not None:
                    prev["cost"] = (prev["cost"] or 0.0) + m["cost"]
            (inserts if new else updates).append(prev)
        if inserts:  # straight to the driver too: several rows a call
            conn.exec_driver_sql(self._insert_models_sql, [*map(self._model_values, inserts)])
        if updates:
            vals = ("requests", "prompt_tokens", "completion_tokens", "audio_duration",
                    "characters", "duration", "errors", "cost")  # fmt: skip
            stmt = (
                cm.update()
                .where(
                    cm.c.tenant == sa.bindparam("b_tenant"),
                    cm.c.session_id == sa.bindparam("b_session_id"),
                    cm.c.kind == sa.bindparam("b_kind"),
                    cm.c.provider == sa.bindparam("b_provider"),
                    cm.c.model == sa.bindparam("b_model"),
                )
                .values({v: sa.bindparam(v) for v in vals})
            )
            conn.execute(
                stmt,
                [
                    {f"b_{k}": u[k] for k in ("tenant", "session_id", "kind", "provider", "model")}
                    | {v: u[v] for v in vals}
                    for u in updates
                ],
            )
        return old_costs

    def _ensure_partitions(self, times: set[float]) -> None:
        """Create the monthly partitions of ``records`` these times fall in (PostgreSQL),
        in their own transaction, serialized across processes by an advisory lock. A call's
        ``part_time`` is the ``created_at`` of one of its records, so this covers it."""
        months = {_month(t) for t in times} - self._partitions
        if not months:
            return
        with self.write_engine.begin() as conn:
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(4242424242)")
            for month in sorted(months):
                start, end = _month_bounds(month)
                name = f"records_{month // 12:04d}{month % 12 + 1:02d}"
                conn.exec_driver_sql(
                    f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF records "
                    f"FOR VALUES FROM ({start}) TO ({end})"
                )
        self._partitions |= months

    # retention ---------------------------------------------------------------------------

    def prune(self, older_than: float, *, now: float | None = None) -> PruneResult:
        """Delete calls that started more than ``older_than`` seconds ago, with their turns,
        records and side rows (every tenant). On PostgreSQL, emptied monthly partitions of
        ``records`` are dropped."""
        if (
            isinstance(older_than, bool)
            or not isinstance(older_than, int | float)
            or not 0 <= older_than < math.inf
        ):
            raise InvalidArgumentError(
                f"older_than must be a non-negative number of seconds, got {older_than!r}"
            )
        cutoff = (time.time() if now is None else now) - older_than
        out = PruneResult()
        c = schema.calls
        with self._lock, self.write_engine.begin() as conn:
            old = sa.select(c.c.tenant, c.c.session_id).where(c.c.started_at < cutoff)
            victims = [tuple(r) for r in conn.execute(old)]
            self._unroll(conn, victims)
            for chunk in _chunks(victims):
                for table in (schema.records, schema.turns, schema.call_models, schema.call_labels):
                    res = conn.execute(
                        table.delete().where(
                            sa.tuple_(table.c.tenant, table.c.session_id).in_(chunk)
                        )
                    )
                    if table is schema.records:
                        out.records += res.rowcount
                res = conn.execute(
                    c.delete().where(sa.tuple_(c.c.tenant, c.c.session_id).in_(chunk))
                )
                out.calls += res.rowcount
            if self.dialect == "postgresql":
                self._drop_empty_partitions(conn, cutoff)
        return out

    def _unroll(self, conn: Connection, victims: list[tuple[str, str]]) -> None:
        """Subtract the contributions of calls about to be deleted from the rollup."""
        c = schema.calls
        by_tenant: dict[str, list[str]] = {}
        for tenant, sid in victims:
            by_tenant.setdefault(tenant, []).append(sid)
        cols = [c.c.session_id, *(getattr(c.c, k) for k in SNAPSHOT)]
        for tenant, sids in by_tenant.items():
            delta = RollupDelta()
            models = call_models_of(conn, tenant, sids)
            for chunk in _chunks(sids):
                q = sa.select(*cols).where(c.c.tenant == tenant, c.c.session_id.in_(chunk))
                for row in conn.execute(q).mappings():
                    delta.add(row, models.get(row["session_id"], ()), -1)
            delta.write(conn, tenant, lock=self.dialect == "postgresql")

    def _drop_empty_partitions(self, conn: Connection, cutoff: float) -> None:
        rows = conn.exec_driver_sql(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'records'"
        ).all()
        for (name,) in rows:
            try:
                year, month = int(name[8:12]), int(name[12:14])
            except ValueError:
                continue
            _, end = _month_bounds(year * 12 + month - 1)
            if end <= cutoff:
                empty = conn.exec_driver_sql(f"SELECT NOT EXISTS (SELECT 1 FROM {name})").scalar()
                if empty:
                    conn.exec_driver_sql(f"DROP TABLE {name}")
                    self._partitions.discard(year * 12 + month - 1)


def _floor(x: float | None) -> float | None:
    return None if x is None else float(math.floor(x))


def _month(t: float) -> int:
    d = datetime.fromtimestamp(max(0.0, t), UTC)
    return d.year * 12 + d.month - 1


def _month_bounds(month: int) -> tuple[float, float]:
    y, m = divmod(month, 12)
    start = datetime(y, m + 1, 1, tzinfo=UTC).timestamp()
    y2, m2 = divmod(month + 1, 12)
    end = datetime(y2, m2 + 1, 1, tzinfo=UTC).timestamp()
    return start, end
