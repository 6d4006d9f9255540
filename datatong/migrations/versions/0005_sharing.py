"""sharing: applications, their history, grants, quota counters

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 12:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "share_application",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("entry_id", sa.Integer(), nullable=False),
        sa.Column("entry_code", sa.String(length=80), nullable=False),
        sa.Column("provider_id", sa.Integer(), nullable=False),
        sa.Column("consumer_id", sa.Integer(), nullable=False),
        sa.Column("client_app_id", sa.Integer(), nullable=True),
        sa.Column("system_name", sa.String(length=200), nullable=False),
        sa.Column("applicant_id", sa.Integer(), nullable=False),
        sa.Column("purpose_kind", sa.String(length=32), nullable=False),
        sa.Column("purpose", sa.Text(), nullable=False),
        sa.Column("legal_basis", sa.Text(), nullable=False),
        sa.Column("items", sa.JSON(), nullable=False),
        sa.Column("period_start", sa.Date(), nullable=False),
        sa.Column("period_end", sa.Date(), nullable=False),
        sa.Column("rows_per_day", sa.Integer(), nullable=False),
        sa.Column("calls_per_minute", sa.Integer(), nullable=False),
        sa.Column("commitment_by_id", sa.Integer(), nullable=True),
        sa.Column("commitment_at", TZ, nullable=True),
        sa.Column("commitment_version", sa.String(length=32), nullable=True),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("compliance_review", sa.Boolean(), nullable=False),
        sa.Column("submitted_at", TZ, nullable=True),
        sa.Column("due_at", sa.Date(), nullable=True),
        sa.Column("decision_reason", sa.Text(), nullable=True),
        sa.Column("decided_by_id", sa.Integer(), nullable=True),
        sa.Column("decided_at", TZ, nullable=True),
        sa.Column("approved_items", sa.JSON(), nullable=True),
        sa.Column("approved_start", sa.Date(), nullable=True),
        sa.Column("approved_end", sa.Date(), nullable=True),
        sa.Column("approved_rows_per_day", sa.Integer(), nullable=True),
        sa.Column("approved_calls_per_minute", sa.Integer(), nullable=True),
        sa.Column("grant_id", sa.Integer(), nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.ForeignKeyConstraint(
            ["entry_id"], ["catalog_entry.id"], name=op.f("fk_share_application_entry_id_catalog_entry")
        ),
        sa.ForeignKeyConstraint(
            ["provider_id"], ["department.id"], name=op.f("fk_share_application_provider_id_department")
        ),
        sa.ForeignKeyConstraint(
            ["consumer_id"], ["department.id"], name=op.f("fk_share_application_consumer_id_department")
        ),
        sa.ForeignKeyConstraint(
            ["client_app_id"], ["client_app.id"], name=op.f("fk_share_application_client_app_id_client_app")
        ),
        sa.ForeignKeyConstraint(
            ["applicant_id"], ["user_account.id"], name=op.f("fk_share_application_applicant_id_user_account")
        ),
        sa.ForeignKeyConstraint(
            ["commitment_by_id"], ["user_account.id"], name=op.f("fk_share_application_commitment_by_id_user_account")
        ),
        sa.ForeignKeyConstraint(
            ["decided_by_id"], ["user_account.id"], name=op.f("fk_share_application_decided_by_id_user_account")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_share_application")),
    )
    op.create_index(op.f("ix_share_application_entry_id"), "share_application", ["entry_id"])
    op.create_index("ix_share_application_provider_status", "share_application", ["provider_id", "status", "due_at"])
    op.create_index("ix_share_application_consumer_status", "share_application", ["consumer_id", "status"])

    op.create_table(
        "share_grant",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("consumer_id", sa.Integer(), nullable=False),
        sa.Column("client_app_id", sa.Integer(), nullable=True),
        sa.Column("system_name", sa.String(length=200), nullable=True),
        sa.Column("entry_id", sa.Integer(), nullable=False),
        sa.Column("entry_code", sa.String(length=80), nullable=False),
        sa.Column("provider_id", sa.Integer(), nullable=False),
        sa.Column("items", sa.JSON(), nullable=False),
        sa.Column("clear_items", sa.JSON(), nullable=False),
        sa.Column("purpose_kind", sa.String(length=32), nullable=False),
        sa.Column("valid_from", sa.Date(), nullable=False),
        sa.Column("valid_to", sa.Date(), nullable=True),
        sa.Column("rows_per_day", sa.Integer(), nullable=True),
        sa.Column("calls_per_minute", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("status_reason", sa.Text(), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("application_id", sa.Integer(), nullable=True),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.Column("updated_at", TZ, nullable=False),
        sa.ForeignKeyConstraint(["consumer_id"], ["department.id"], name=op.f("fk_share_grant_consumer_id_department")),
        sa.ForeignKeyConstraint(
            ["client_app_id"], ["client_app.id"], name=op.f("fk_share_grant_client_app_id_client_app")
        ),
        sa.ForeignKeyConstraint(["entry_id"], ["catalog_entry.id"], name=op.f("fk_share_grant_entry_id_catalog_entry")),
        sa.ForeignKeyConstraint(["provider_id"], ["department.id"], name=op.f("fk_share_grant_provider_id_department")),
        sa.ForeignKeyConstraint(
            ["application_id"], ["share_application.id"], name=op.f("fk_share_grant_application_id_share_application")
        ),
        sa.ForeignKeyConstraint(
            ["created_by_id"], ["user_account.id"], name=op.f("fk_share_grant_created_by_id_user_account")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_share_grant")),
    )
    op.create_index(op.f("ix_share_grant_entry_id"), "share_grant", ["entry_id"])
    op.create_index(op.f("ix_share_grant_provider_id"), "share_grant", ["provider_id"])
    op.create_index("ix_share_grant_lookup", "share_grant", ["consumer_id", "entry_id", "status"])

    op.create_table(
        "share_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("application_id", sa.Integer(), nullable=True),
        sa.Column("grant_id", sa.Integer(), nullable=True),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("from_status", sa.String(length=24), nullable=True),
        sa.Column("to_status", sa.String(length=24), nullable=False),
        sa.Column("actor_id", sa.Integer(), nullable=True),
        sa.Column("actor_name", sa.String(length=100), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", TZ, nullable=False),
        sa.ForeignKeyConstraint(
            ["application_id"], ["share_application.id"], name=op.f("fk_share_event_application_id_share_application")
        ),
        sa.ForeignKeyConstraint(["grant_id"], ["share_grant.id"], name=op.f("fk_share_event_grant_id_share_grant")),
        sa.ForeignKeyConstraint(["actor_id"], ["user_account.id"], name=op.f("fk_share_event_actor_id_user_account")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_share_event")),
    )
    op.create_index(op.f("ix_share_event_application_id"), "share_event", ["application_id"])
    op.create_index(op.f("ix_share_event_grant_id"), "share_event", ["grant_id"])

    op.create_table(
        "share_quota_counter",
        sa.Column("grant_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=1), nullable=False),
        sa.Column("window_key", sa.String(length=16), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["grant_id"],
            ["share_grant.id"],
            name=op.f("fk_share_quota_counter_grant_id_share_grant"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("grant_id", "kind", "window_key", name=op.f("pk_share_quota_counter")),
    )


def downgrade() -> None:
    op.drop_table("share_quota_counter")
    op.drop_index(op.f("ix_share_event_grant_id"), table_name="share_event")
    op.drop_index(op.f("ix_share_event_application_id"), table_name="share_event")
    op.drop_table("share_event")
    op.drop_index("ix_share_grant_lookup", table_name="share_grant")
    op.drop_index(op.f("ix_share_grant_provider_id"), table_name="share_grant")
    op.drop_index(op.f("ix_share_grant_entry_id"), table_name="share_grant")
    op.drop_table("share_grant")
    op.drop_index("ix_share_application_consumer_status", table_name="share_application")
    op.drop_index("ix_share_application_provider_status", table_name="share_application")
    op.drop_index(op.f("ix_share_application_entry_id"), table_name="share_application")
    op.drop_table("share_application")
