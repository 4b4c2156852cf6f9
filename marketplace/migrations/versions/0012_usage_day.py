"""usage day: daily usage per product, buyer and mode for the consoles' charts; the delivery table loses the
indexes only those charts used (every metered call writes a delivery row, and each index costs that write)

Revision ID: 0012_usage_day
Revises: 0011_supervision_cursor
Create Date: 2026-12-03 20:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012_usage_day"
down_revision: str | None = "0011_supervision_cursor"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DROPPED = {
    "ix_delivery_buyer_time": ["buyer_org_id", "occurred_at"],
    "ix_delivery_product_time": ["product_id", "occurred_at"],
    "ix_delivery_operator_time": ["operator_id", "occurred_at"],
    "ix_delivery_entitlement_id": ["entitlement_id"],
}


def upgrade() -> None:
    op.create_table(
        "usage_day",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("product_id", sa.Uuid(), nullable=False),
        sa.Column("buyer_org_id", sa.Uuid(), nullable=False),
        sa.Column("operator_id", sa.Uuid(), nullable=False),
        sa.Column("mode", sa.Enum("api", "file", "sandbox", name="deliverymode", native_enum=False, length=32), nullable=False),
        sa.Column("calls", sa.BigInteger(), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["buyer_org_id"], ["organisation.id"], name="fk_usage_day_buyer_org_id_organisation"),
        sa.ForeignKeyConstraint(["operator_id"], ["organisation.id"], name="fk_usage_day_operator_id_organisation"),
        sa.ForeignKeyConstraint(["product_id"], ["product.id"], name="fk_usage_day_product_id_product"),
        sa.PrimaryKeyConstraint("day", "product_id", "buyer_org_id", "operator_id", "mode", name="pk_usage_day"),
    )
    # The deliveries metered so far, added up by day (UTC; SQLite keeps UTC moments as text).
    day = "date(occurred_at)" if op.get_bind().dialect.name == "sqlite" else "(occurred_at AT TIME ZONE 'UTC')::date"
    op.execute(
        f"INSERT INTO usage_day (day, product_id, buyer_org_id, operator_id, mode, calls, rows, bytes) "  # noqa: S608
        f"SELECT {day}, product_id, buyer_org_id, operator_id, mode, count(*), sum(rows), sum(bytes) FROM delivery "
        f"GROUP BY {day}, product_id, buyer_org_id, operator_id, mode"
    )
    for name in DROPPED:
        op.drop_index(name, table_name="delivery")


def downgrade() -> None:
    for name, columns in DROPPED.items():
        op.create_index(name, "delivery", columns, unique=False)
    op.drop_table("usage_day")
