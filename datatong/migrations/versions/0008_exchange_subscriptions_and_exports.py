"""exchange subscriptions and exports

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 13:04:25.794437
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "exchange_change",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("entry_id", sa.Integer(), nullable=False),
        sa.Column("change_id", sa.String(length=64), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["entry_id"],
            ["catalog_entry.id"],
            name=op.f("fk_exchange_change_entry_id_catalog_entry"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_exchange_change")),
        sa.UniqueConstraint("change_id", name=op.f("uq_exchange_change_change_id")),
    )
    with op.batch_alter_table("exchange_change", schema=None) as batch_op:
        batch_op.create_index("ix_exchange_change_entry_offset", ["entry_id", "id"], unique=False)

    op.create_table(
        "exchange_export",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("entry_id", sa.Integer(), nullable=False),
        sa.Column("grant_id", sa.Integer(), nullable=True),
        sa.Column("department_id", sa.Integer(), nullable=True),
        sa.Column("format", sa.String(length=8), nullable=False),
        sa.Column("items", sa.Text(), nullable=False),
        sa.Column("masked", sa.Text(), nullable=False),
        sa.Column("after", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["catalog_entry.id"], name=op.f("fk_exchange_export_entry_id_catalog_entry")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_exchange_export")),
    )
    with op.batch_alter_table("exchange_export", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_exchange_export_entry_id"), ["entry_id"], unique=False)

    op.create_table(
        "exchange_subscription",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("entry_id", sa.Integer(), nullable=False),
        sa.Column("department_id", sa.Integer(), nullable=False),
        sa.Column("mode", sa.String(length=8), nullable=False),
        sa.Column("url", sa.String(length=500), nullable=True),
        sa.Column("secret_sealed", sa.Text(), nullable=True),
        sa.Column("items", sa.Text(), nullable=False),
        sa.Column("system", sa.String(length=200), nullable=False),
        sa.Column("operator", sa.String(length=64), nullable=False),
        sa.Column("purpose", sa.String(length=500), nullable=False),
        sa.Column("case_no", sa.String(length=100), nullable=True),
        sa.Column("caller_kind", sa.String(length=8), nullable=False),
        sa.Column("caller_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("delivered", sa.BigInteger(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["department_id"], ["department.id"], name=op.f("fk_exchange_subscription_department_id_department")
        ),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["catalog_entry.id"], name=op.f("fk_exchange_subscription_entry_id_catalog_entry")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_exchange_subscription")),
    )
    with op.batch_alter_table("exchange_subscription", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_exchange_subscription_department_id"), ["department_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_exchange_subscription_entry_id"), ["entry_id"], unique=False)

    op.create_table(
        "exchange_capture",
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.String(length=32), nullable=False),
        sa.Column("last_change", sa.Text(), nullable=True),
        sa.Column("last_key", sa.Text(), nullable=True),
        sa.Column("captured", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["source_id"],
            ["exchange_source.id"],
            name=op.f("fk_exchange_capture_source_id_exchange_source"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("source_id", name=op.f("pk_exchange_capture")),
    )
    op.create_table(
        "exchange_dead_letter",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("subscription_id", sa.Integer(), nullable=False),
        sa.Column("first_offset", sa.BigInteger(), nullable=False),
        sa.Column("last_offset", sa.BigInteger(), nullable=False),
        sa.Column("changes", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["exchange_subscription.id"],
            name=op.f("fk_exchange_dead_letter_subscription_id_exchange_subscription"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_exchange_dead_letter")),
    )
    with op.batch_alter_table("exchange_dead_letter", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_exchange_dead_letter_subscription_id"), ["subscription_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("exchange_dead_letter", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_exchange_dead_letter_subscription_id"))

    op.drop_table("exchange_dead_letter")
    op.drop_table("exchange_capture")
    with op.batch_alter_table("exchange_subscription", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_exchange_subscription_entry_id"))
        batch_op.drop_index(batch_op.f("ix_exchange_subscription_department_id"))

    op.drop_table("exchange_subscription")
    with op.batch_alter_table("exchange_export", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_exchange_export_entry_id"))

    op.drop_table("exchange_export")
    with op.batch_alter_table("exchange_change", schema=None) as batch_op:
        batch_op.drop_index("ix_exchange_change_entry_offset")

    op.drop_table("exchange_change")
