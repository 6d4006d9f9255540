"""exchange data sources

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 08:10:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "exchange_source",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("entry_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("url", sa.String(length=500), nullable=True),
        sa.Column("secret_sealed", sa.Text(), nullable=True),
        sa.Column("table_name", sa.String(length=200), nullable=True),
        sa.Column("key_column", sa.String(length=200), nullable=False),
        sa.Column("change_column", sa.String(length=200), nullable=True),
        sa.Column("change_kind", sa.String(length=16), nullable=True),
        sa.Column("options", sa.Text(), nullable=True),
        sa.Column("rows", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("last_tested_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["catalog_entry.id"], name=op.f("fk_exchange_source_entry_id_catalog_entry")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_exchange_source")),
        sa.UniqueConstraint("entry_id", name=op.f("uq_exchange_source_entry_id")),
    )
    op.create_table(
        "exchange_source_field",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("item_name", sa.String(length=200), nullable=False),
        sa.Column("column", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(
            ["source_id"],
            ["exchange_source.id"],
            name=op.f("fk_exchange_source_field_source_id_exchange_source"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_exchange_source_field")),
        sa.UniqueConstraint("source_id", "item_name", name=op.f("uq_exchange_source_field_source_id")),
    )
    with op.batch_alter_table("exchange_source_field", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_exchange_source_field_source_id"), ["source_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("exchange_source_field", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_exchange_source_field_source_id"))

    op.drop_table("exchange_source_field")
    op.drop_table("exchange_source")
