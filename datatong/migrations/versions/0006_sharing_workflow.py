"""sharing: work calendar, inbox, webhooks, needs, coordination cases, catalog update deadline

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 07:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "work_calendar_year",
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("notice", sa.String(length=200), nullable=False),
        sa.Column("imported_by", sa.String(length=64), nullable=False),
        sa.Column("imported_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("year", name=op.f("pk_work_calendar_year")),
    )
    op.create_table(
        "department_webhook",
        sa.Column("department_id", sa.Integer(), nullable=False),
        sa.Column("url", sa.String(length=500), nullable=False),
        sa.Column("secret_sealed", sa.Text(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["department_id"],
            ["department.id"],
            name=op.f("fk_department_webhook_department_id_department"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("department_id", name=op.f("pk_department_webhook")),
    )
    op.create_table(
        "webhook_delivery",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("department_id", sa.Integer(), nullable=False),
        sa.Column("event", sa.String(length=40), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["department_id"],
            ["department.id"],
            name=op.f("fk_webhook_delivery_department_id_department"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_delivery")),
    )
    with op.batch_alter_table("webhook_delivery", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_webhook_delivery_department_id"), ["department_id"], unique=False)
        batch_op.create_index("ix_webhook_delivery_due", ["status", "next_attempt_at"], unique=False)

    op.create_table(
        "work_calendar_day",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("year", sa.Integer(), nullable=False),
        sa.Column("is_working", sa.Boolean(), nullable=False),
        sa.Column("name", sa.String(length=50), nullable=True),
        sa.ForeignKeyConstraint(
            ["year"],
            ["work_calendar_year.year"],
            name=op.f("fk_work_calendar_day_year_work_calendar_year"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("day", name=op.f("pk_work_calendar_day")),
    )
    with op.batch_alter_table("work_calendar_day", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_work_calendar_day_year"), ["year"], unique=False)

    op.create_table(
        "share_coordination_case",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("entry_id", sa.Integer(), nullable=False),
        sa.Column("provider_id", sa.Integer(), nullable=False),
        sa.Column("consumer_id", sa.Integer(), nullable=False),
        sa.Column("requester_id", sa.Integer(), nullable=False),
        sa.Column("duty", sa.Text(), nullable=False),
        sa.Column("legal_basis", sa.Text(), nullable=False),
        sa.Column("items", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("resolution", sa.Text(), nullable=True),
        sa.Column("resolved_by_id", sa.Integer(), nullable=True),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["consumer_id"], ["department.id"], name=op.f("fk_share_coordination_case_consumer_id_department")
        ),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["catalog_entry.id"], name=op.f("fk_share_coordination_case_entry_id_catalog_entry")
        ),
        sa.ForeignKeyConstraint(
            ["provider_id"], ["department.id"], name=op.f("fk_share_coordination_case_provider_id_department")
        ),
        sa.ForeignKeyConstraint(
            ["requester_id"], ["user_account.id"], name=op.f("fk_share_coordination_case_requester_id_user_account")
        ),
        sa.ForeignKeyConstraint(
            ["resolved_by_id"], ["user_account.id"], name=op.f("fk_share_coordination_case_resolved_by_id_user_account")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_share_coordination_case")),
    )
    with op.batch_alter_table("share_coordination_case", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_share_coordination_case_consumer_id"), ["consumer_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_share_coordination_case_entry_id"), ["entry_id"], unique=False)

    op.create_table(
        "share_need",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("consumer_id", sa.Integer(), nullable=False),
        sa.Column("requester_id", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(length=300), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("items", sa.JSON(), nullable=False),
        sa.Column("purpose_kind", sa.String(length=32), nullable=False),
        sa.Column("purpose", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("routed_to_id", sa.Integer(), nullable=True),
        sa.Column("routed_by_id", sa.Integer(), nullable=True),
        sa.Column("routed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("due_at", sa.Date(), nullable=True),
        sa.Column("answer", sa.Text(), nullable=True),
        sa.Column("answered_by_id", sa.Integer(), nullable=True),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("entry_id", sa.Integer(), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["answered_by_id"], ["user_account.id"], name=op.f("fk_share_need_answered_by_id_user_account")
        ),
        sa.ForeignKeyConstraint(["consumer_id"], ["department.id"], name=op.f("fk_share_need_consumer_id_department")),
        sa.ForeignKeyConstraint(["entry_id"], ["catalog_entry.id"], name=op.f("fk_share_need_entry_id_catalog_entry")),
        sa.ForeignKeyConstraint(
            ["requester_id"], ["user_account.id"], name=op.f("fk_share_need_requester_id_user_account")
        ),
        sa.ForeignKeyConstraint(
            ["routed_by_id"], ["user_account.id"], name=op.f("fk_share_need_routed_by_id_user_account")
        ),
        sa.ForeignKeyConstraint(
            ["routed_to_id"], ["department.id"], name=op.f("fk_share_need_routed_to_id_department")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_share_need")),
    )
    with op.batch_alter_table("share_need", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_share_need_consumer_id"), ["consumer_id"], unique=False)
        batch_op.create_index("ix_share_need_routed_status", ["routed_to_id", "status"], unique=False)

    op.create_table(
        "inbox_message",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("title", sa.String(length=300), nullable=False),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("link", sa.String(length=300), nullable=True),
        sa.Column("application_id", sa.Integer(), nullable=True),
        sa.Column("grant_id", sa.Integer(), nullable=True),
        sa.Column("need_id", sa.Integer(), nullable=True),
        sa.Column("dedupe_key", sa.String(length=160), nullable=True),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["application_id"], ["share_application.id"], name=op.f("fk_inbox_message_application_id_share_application")
        ),
        sa.ForeignKeyConstraint(["grant_id"], ["share_grant.id"], name=op.f("fk_inbox_message_grant_id_share_grant")),
        sa.ForeignKeyConstraint(["need_id"], ["share_need.id"], name=op.f("fk_inbox_message_need_id_share_need")),
        sa.ForeignKeyConstraint(
            ["user_id"], ["user_account.id"], name=op.f("fk_inbox_message_user_id_user_account"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inbox_message")),
        sa.UniqueConstraint("dedupe_key", name=op.f("uq_inbox_message_dedupe_key")),
    )
    with op.batch_alter_table("inbox_message", schema=None) as batch_op:
        batch_op.create_index("ix_inbox_message_user_read", ["user_id", "read_at", "id"], unique=False)

    with op.batch_alter_table("catalog_entry", schema=None) as batch_op:
        batch_op.add_column(sa.Column("items_changed_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("update_due_at", sa.Date(), nullable=True))

    with op.batch_alter_table("share_application", schema=None) as batch_op:
        batch_op.add_column(sa.Column("escalated_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_share_grant_updated_at", "share_grant", ["updated_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_share_grant_updated_at", table_name="share_grant")
    with op.batch_alter_table("share_application", schema=None) as batch_op:
        batch_op.drop_column("escalated_at")

    with op.batch_alter_table("catalog_entry", schema=None) as batch_op:
        batch_op.drop_column("update_due_at")
        batch_op.drop_column("items_changed_at")

    with op.batch_alter_table("inbox_message", schema=None) as batch_op:
        batch_op.drop_index("ix_inbox_message_user_read")

    op.drop_table("inbox_message")
    with op.batch_alter_table("share_need", schema=None) as batch_op:
        batch_op.drop_index("ix_share_need_routed_status")
        batch_op.drop_index(batch_op.f("ix_share_need_consumer_id"))

    op.drop_table("share_need")
    with op.batch_alter_table("share_coordination_case", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_share_coordination_case_entry_id"))
        batch_op.drop_index(batch_op.f("ix_share_coordination_case_consumer_id"))

    op.drop_table("share_coordination_case")
    with op.batch_alter_table("work_calendar_day", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_work_calendar_day_year"))

    op.drop_table("work_calendar_day")
    with op.batch_alter_table("webhook_delivery", schema=None) as batch_op:
        batch_op.drop_index("ix_webhook_delivery_due")
        batch_op.drop_index(batch_op.f("ix_webhook_delivery_department_id"))

    op.drop_table("webhook_delivery")
    op.drop_table("department_webhook")
    op.drop_table("work_calendar_year")
