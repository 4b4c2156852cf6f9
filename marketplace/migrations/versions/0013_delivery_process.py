"""delivery process: the delivery processes that keep access answers under a lease (PostgreSQL), so that a change
to what grants access is reported done only once every running process has stopped using what it read before it

Revision ID: 0013_delivery_process
Revises: 0012_usage_day
Create Date: 2026-12-04 17:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013_delivery_process"
down_revision: str | None = "0012_usage_day"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "delivery_process",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("label", sa.String(length=200), nullable=False),
        sa.Column("cleared_before", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_delivery_process"),
    )
    op.create_index("ix_delivery_process_lease_until", "delivery_process", ["lease_until"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_delivery_process_lease_until", table_name="delivery_process")
    op.drop_table("delivery_process")
