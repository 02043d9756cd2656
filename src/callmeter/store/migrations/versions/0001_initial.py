"""Initial schema: calls, call_models, call_labels, turns, records.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "call_labels",
        sa.Column("tenant", sa.String(length=200), nullable=False),
        sa.Column("session_id", sa.String(length=500), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "session_id", "key", name="call_labels_pk"),
    )
    op.create_index("call_labels_kv", "call_labels", ["tenant", "key", "value"], unique=False)
    op.create_table(
        "call_models",
        sa.Column("tenant", sa.String(length=200), nullable=False),
        sa.Column("session_id", sa.String(length=500), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("provider", sa.String(length=200), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=False),
        sa.Column("audio_duration", sa.Float(), nullable=False),
        sa.Column("characters", sa.BigInteger(), nullable=False),
        sa.Column("duration", sa.Float(), nullable=False),
        sa.Column("errors", sa.BigInteger(), nullable=False),
        sa.Column("cost", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint(
            "tenant", "session_id", "kind", "provider", "model", name="call_models_pk"
        ),
    )
    op.create_table(
        "calls",
        sa.Column("tenant", sa.String(length=200), nullable=False),
        sa.Column("session_id", sa.String(length=500), nullable=False),
        sa.Column("part_time", sa.Float(), nullable=False),
        sa.Column("agent_name", sa.Text(), nullable=True),
        sa.Column("labels", sa.Text(), nullable=True),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("start_minute", sa.BigInteger(), nullable=False),
        sa.Column("last_at", sa.Float(), nullable=False),
        sa.Column("ended_at", sa.Float(), nullable=True),
        sa.Column("duration", sa.Float(), nullable=False),
        sa.Column("closed", sa.Boolean(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("records", sa.BigInteger(), nullable=False),
        sa.Column("turns", sa.BigInteger(), nullable=False),
        sa.Column("interrupted_turns", sa.BigInteger(), nullable=False),
        sa.Column("llm_requests", sa.BigInteger(), nullable=False),
        sa.Column("llm_prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("llm_cached_tokens", sa.BigInteger(), nullable=False),
        sa.Column("llm_completion_tokens", sa.BigInteger(), nullable=False),
        sa.Column("llm_errors", sa.BigInteger(), nullable=False),
        sa.Column("tool_calls", sa.BigInteger(), nullable=False),
        sa.Column("tool_errors", sa.BigInteger(), nullable=False),
        sa.Column("stt_requests", sa.BigInteger(), nullable=False),
        sa.Column("stt_errors", sa.BigInteger(), nullable=False),
        sa.Column("tts_requests", sa.BigInteger(), nullable=False),
        sa.Column("tts_characters", sa.BigInteger(), nullable=False),
        sa.Column("tts_errors", sa.BigInteger(), nullable=False),
        sa.Column("realtime_requests", sa.BigInteger(), nullable=False),
        sa.Column("errors", sa.BigInteger(), nullable=False),
        sa.Column("budget_breaches", sa.BigInteger(), nullable=False),
        sa.Column("llm_duration", sa.Float(), nullable=False),
        sa.Column("tool_duration", sa.Float(), nullable=False),
        sa.Column("stt_audio_duration", sa.Float(), nullable=False),
        sa.Column("tts_audio_duration", sa.Float(), nullable=False),
        sa.Column("cost_llm", sa.Float(), nullable=False),
        sa.Column("cost_stt", sa.Float(), nullable=False),
        sa.Column("cost_tts", sa.Float(), nullable=False),
        sa.Column("cost_realtime", sa.Float(), nullable=False),
        sa.Column("cost", sa.Float(), nullable=False),
        sa.Column("cost_complete", sa.Boolean(), nullable=False),
        sa.Column("e2e_p50", sa.Float(), nullable=True),
        sa.Column("e2e_p95", sa.Float(), nullable=True),
        sa.Column("ttft_p50", sa.Float(), nullable=True),
        sa.Column("ttft_p95", sa.Float(), nullable=True),
        sa.Column("e2e_sketch", sa.LargeBinary(), nullable=True),
        sa.Column("ttft_sketch", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("tenant", "session_id", name="calls_pk"),
    )
    op.create_index("calls_agent", "calls", ["tenant", "agent_name", "started_at"], unique=False)
    op.create_index("calls_cost", "calls", ["tenant", "cost", "session_id"], unique=False)
    op.create_index("calls_duration", "calls", ["tenant", "duration", "session_id"], unique=False)
    op.create_index("calls_e2e_p95", "calls", ["tenant", "e2e_p95"], unique=False)
    op.create_index("calls_minute", "calls", ["tenant", "start_minute"], unique=False)
    op.create_index("calls_part_time", "calls", ["part_time"], unique=False)
    op.create_index("calls_started", "calls", ["tenant", "started_at", "session_id"], unique=False)
    op.create_table(
        "records",
        sa.Column("tenant", sa.String(length=200), nullable=False),
        sa.Column("session_id", sa.String(length=500), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("part_time", sa.Float(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("event", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=True),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "session_id", "seq", "part_time", name="records_pk"),
        postgresql_partition_by="RANGE (part_time)",
    )
    op.create_table(
        "turns",
        sa.Column("tenant", sa.String(length=200), nullable=False),
        sa.Column("session_id", sa.String(length=500), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("speech_id", sa.Text(), nullable=True),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("duration", sa.Float(), nullable=False),
        sa.Column("e2e_latency", sa.Float(), nullable=False),
        sa.Column("interrupted", sa.Boolean(), nullable=False),
        sa.Column("llm_requests", sa.Integer(), nullable=False),
        sa.Column("tool_calls", sa.Integer(), nullable=False),
        sa.Column("breakdown", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("tenant", "session_id", "seq", name="turns_pk"),
    )


def downgrade() -> None:
    op.drop_table("turns")
    op.drop_table("records")
    op.drop_index("calls_started", table_name="calls")
    op.drop_index("calls_part_time", table_name="calls")
    op.drop_index("calls_minute", table_name="calls")
    op.drop_index("calls_e2e_p95", table_name="calls")
    op.drop_index("calls_duration", table_name="calls")
    op.drop_index("calls_cost", table_name="calls")
    op.drop_index("calls_agent", table_name="calls")
    op.drop_table("calls")
    op.drop_table("call_models")
    op.drop_index("call_labels_kv", table_name="call_labels")
    op.drop_table("call_labels")
