"""The store's tables (SQLAlchemy Core). The migrations in ``migrations/`` create them.

``calls`` holds one row per call with its summary, kept up to date as records arrive, so
listing and aggregating read call rows only. ``call_models`` (usage and cost per model) and
``call_labels`` (one row per label) are per-call side tables for grouping and filtering.
``turns`` has one row per finished turn, ``records`` every record as received (its JSON),
unique on ``(tenant, session_id, seq)``. ``part_time`` is the time of the first record stored
for a call: PostgreSQL partitions ``records`` by it, and since every record of a call carries
the same value, the primary key ``(tenant, session_id, seq, part_time)`` is unique on
``(tenant, session_id, seq)``.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    func,
    literal_column,
)

metadata = MetaData()

COUNTS = (
    "records",
    "turns",
    "interrupted_turns",
    "llm_requests",
    "llm_prompt_tokens",
    "llm_cached_tokens",
    "llm_completion_tokens",
    "llm_errors",
    "tool_calls",
    "tool_errors",
    "stt_requests",
    "stt_errors",
    "tts_requests",
    "tts_characters",
    "tts_errors",
    "realtime_requests",
    "errors",
    "budget_breaches",
)
"""Integer summary columns of ``calls`` that add up across records."""

SUMS = (
    "llm_duration",
    "tool_duration",
    "stt_audio_duration",
    "tts_audio_duration",
    "cost_llm",
    "cost_stt",
    "cost_tts",
    "cost_realtime",
    "cost",
)
"""Float summary columns of ``calls`` that add up across records (seconds, USD)."""

COST_KINDS = ("llm", "stt", "tts", "realtime")

calls = Table(
    "calls",
    metadata,
    Column("tenant", String(200), nullable=False),
    Column("session_id", String(500), nullable=False),
    Column("part_time", Float, nullable=False),
    Column("agent_name", Text),
    Column("labels", Text),
    Column("started_at", Float, nullable=False),
    Column("start_minute", BigInteger, nullable=False),
    Column("last_at", Float, nullable=False),
    Column("ended_at", Float),
    Column("duration", Float, nullable=False),
    Column("closed", Boolean, nullable=False),
    Column("error", Text),
    *(Column(name, BigInteger, nullable=False) for name in COUNTS),
    *(Column(name, Float, nullable=False) for name in SUMS),
    Column("cost_complete", Boolean, nullable=False),
    Column("e2e_p50", Float),
    Column("e2e_p95", Float),
    Column("ttft_p50", Float),
    Column("ttft_p95", Float),
    Column("e2e_sketch", LargeBinary),
    Column("ttft_sketch", LargeBinary),
    PrimaryKeyConstraint("tenant", "session_id", name="calls_pk"),
)
# sort keys end in session_id (the cursor's tie-break), so a page reads the index in order
Index("calls_started", calls.c.tenant, calls.c.started_at, calls.c.session_id)
Index("calls_minute", calls.c.tenant, calls.c.start_minute)
Index("calls_cost", calls.c.tenant, calls.c.cost, calls.c.session_id)
E2E_P95_KEY = func.coalesce(calls.c.e2e_p95, literal_column("-1.0"))
"""The e2e p95 sort key (no e2e: -1, last when descending); the literal is inline so that
the query's expression is the index's (SQLite matches indexed expressions as written)."""
Index("calls_e2e_p95", calls.c.tenant, E2E_P95_KEY, calls.c.session_id)
Index("calls_duration", calls.c.tenant, calls.c.duration, calls.c.session_id)
Index("calls_agent", calls.c.tenant, calls.c.agent_name, calls.c.started_at)
Index("calls_part_time", calls.c.part_time)

call_models = Table(
    "call_models",
    metadata,
    Column("tenant", String(200), nullable=False),
    Column("session_id", String(500), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("provider", String(200), nullable=False),
    Column("model", String(200), nullable=False),
    Column("requests", BigInteger, nullable=False),
    Column("prompt_tokens", BigInteger, nullable=False),
    Column("completion_tokens", BigInteger, nullable=False),
    Column("audio_duration", Float, nullable=False),
    Column("characters", BigInteger, nullable=False),
    Column("duration", Float, nullable=False),
    Column("errors", BigInteger, nullable=False),
    Column("cost", Float),
    PrimaryKeyConstraint(
        "tenant", "session_id", "kind", "provider", "model", name="call_models_pk"
    ),
)

call_labels = Table(
    "call_labels",
    metadata,
    Column("tenant", String(200), nullable=False),
    Column("session_id", String(500), nullable=False),
    Column("key", String(200), nullable=False),
    Column("value", Text, nullable=False),
    PrimaryKeyConstraint("tenant", "session_id", "key", name="call_labels_pk"),
)
Index("call_labels_kv", call_labels.c.tenant, call_labels.c.key, call_labels.c.value)

turns = Table(
    "turns",
    metadata,
    Column("tenant", String(200), nullable=False),
    Column("session_id", String(500), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("speech_id", Text),
    Column("started_at", Float, nullable=False),
    Column("duration", Float, nullable=False),
    Column("e2e_latency", Float, nullable=False),
    Column("interrupted", Boolean, nullable=False),
    Column("llm_requests", Integer, nullable=False),
    Column("tool_calls", Integer, nullable=False),
    Column("breakdown", Text, nullable=False),
    PrimaryKeyConstraint("tenant", "session_id", "seq", name="turns_pk"),
)

records = Table(
    "records",
    metadata,
    Column("tenant", String(200), nullable=False),
    Column("session_id", String(500), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("part_time", Float, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("event", String(40), nullable=False),
    Column("kind", String(40)),
    Column("body", LargeBinary, nullable=False),
    PrimaryKeyConstraint("tenant", "session_id", "seq", "part_time", name="records_pk"),
    postgresql_partition_by="RANGE (part_time)",
)

ROLLUP_SECONDS = 3600
ROLLUP_SUMS = ("cost", "cost_llm", "cost_stt", "cost_tts", "cost_realtime")
ROLLUP_COUNTS = ("calls", "ends", "tool_calls", "tool_errors", "errors")
ROLLUP_TOTALS = ("turns", "duration")
"""Sums of ``calls`` columns in the rollup since migration 0003 (the dashboard's by-agent
table: turns, and the mean duration)."""

call_rollup = Table(
    "call_rollup",
    metadata,
    Column("tenant", String(200), nullable=False),
    Column("hour", BigInteger, nullable=False),
    Column("agent_key", String(501), nullable=False),
    Column("agent_name", Text),
    *(Column(name, BigInteger, nullable=False) for name in ROLLUP_COUNTS),
    *(Column(name, Float, nullable=False) for name in ROLLUP_SUMS),
    Column("turns", BigInteger, nullable=False, server_default="0"),
    Column("duration", Float, nullable=False, server_default="0"),
    Column("e2e_sketch", LargeBinary),
    Column("ttft_sketch", LargeBinary),
    Column("model_costs", LargeBinary),
    PrimaryKeyConstraint("tenant", "hour", "agent_key", name="call_rollup_pk"),
)
"""Hourly rollup of ``calls`` per tenant, hour and agent (see :mod:`.rollup`)."""
