"""The rollup gains turns, duration and calls without a price per model (the dashboard's
tables read it), and is rebuilt from the calls; the e2e p95 sort key gets its index.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import msgspec
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_E2E_KEY = sa.text("coalesce(e2e_p95, -1.0)")


def upgrade() -> None:
    with op.batch_alter_table("call_rollup") as batch:
        batch.add_column(sa.Column("turns", sa.BigInteger(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("duration", sa.Float(), nullable=False, server_default="0"))
    op.drop_index("calls_e2e_p95", table_name="calls")
    op.create_index("calls_e2e_p95", "calls", ["tenant", _E2E_KEY, "session_id"], unique=False)
    from callmeter.store.rollup import rebuild

    rebuild(op.get_bind())


def downgrade() -> None:
    op.drop_index("calls_e2e_p95", table_name="calls")
    op.create_index("calls_e2e_p95", "calls", ["tenant", "e2e_p95"], unique=False)
    with op.batch_alter_table("call_rollup") as batch:
        batch.drop_column("duration")
        batch.drop_column("turns")
    # model_costs back to the format of 0002: (kind, provider, model, cost, calls with a price)
    conn = op.get_bind()
    t = sa.table("call_rollup", sa.column("tenant"), sa.column("hour"), sa.column("agent_key"),
                 sa.column("model_costs", sa.LargeBinary))  # fmt: skip
    dec = msgspec.msgpack.Decoder(list[tuple[str, str, str, float, int, int]])
    enc = msgspec.msgpack.Encoder()
    rows = conn.execute(sa.select(t).where(t.c.model_costs.is_not(None))).all()
    for tenant, hour, key, data in rows:
        old = [(k, p, m, c, n - u) for k, p, m, c, n, u in dec.decode(data) if n > u]
        conn.execute(
            t.update()
            .where(t.c.tenant == tenant, t.c.hour == hour, t.c.agent_key == key)
            .values(model_costs=enc.encode(old) if old else None)
        )
