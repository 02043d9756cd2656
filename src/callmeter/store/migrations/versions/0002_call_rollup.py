"""Hourly rollup of calls per tenant, hour and agent (for statistics); 0003 fills it.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "call_rollup",
        sa.Column("tenant", sa.String(length=200), nullable=False),
        sa.Column("hour", sa.BigInteger(), nullable=False),
        sa.Column("agent_key", sa.String(length=501), nullable=False),
        sa.Column("agent_name", sa.Text(), nullable=True),
        *(
            sa.Column(name, sa.BigInteger(), nullable=False)
            for name in ("calls", "ends", "tool_calls", "tool_errors", "errors")
        ),
        *(
            sa.Column(name, sa.Float(), nullable=False)
            for name in ("cost", "cost_llm", "cost_stt", "cost_tts", "cost_realtime")
        ),
        sa.Column("e2e_sketch", sa.LargeBinary(), nullable=True),
        sa.Column("ttft_sketch", sa.LargeBinary(), nullable=True),
        sa.Column("model_costs", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("tenant", "hour", "agent_key", name="call_rollup_pk"),
    )
    # filled by 0003, which builds the rollup of the existing calls in its current format


def downgrade() -> None:
    op.drop_table("call_rollup")
