"""identity hardening: TOTP, lockout, OIDC subject, password age, security policy

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 09:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (no table rebuild on SQLite, where other tables reference users).
    for column in (
        sa.Column("password_changed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("totp_secret", sa.Text(), nullable=True),
        sa.Column("totp_enabled", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("totp_last_step", sa.BigInteger(), nullable=True),
        sa.Column("failed_logins", sa.Integer(), server_default="0", nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("oidc_subject", sa.String(length=255), nullable=True),
    ):
        op.add_column("user_account", column)
    op.create_index(op.f("ix_user_account_oidc_subject"), "user_account", ["oidc_subject"], unique=True)

    op.create_table(
        "security_policy",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_security_policy")),
    )


def downgrade() -> None:
    op.drop_table("security_policy")
    op.drop_index(op.f("ix_user_account_oidc_subject"), table_name="user_account")
    with op.batch_alter_table("user_account", schema=None) as batch_op:
        for column in (
            "oidc_subject",
            "locked_until",
            "failed_logins",
            "totp_last_step",
            "totp_enabled",
            "totp_secret",
            "password_changed_at",
        ):
            batch_op.drop_column(column)
