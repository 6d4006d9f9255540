"""audit trail: hash-chained records, chain head, signed checkpoints

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 01:50:00

``audit_record`` and ``audit_checkpoint`` are append-only: triggers refuse UPDATE and
DELETE (and TRUNCATE on PostgreSQL). For defence in depth run the application under a
role that has only SELECT and INSERT on them (docs/operations.md).
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

PROTECTED = ("audit_record", "audit_checkpoint")

PG_FUNCTION = """
CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'audit trail is append-only (审计日志只能追加): % on %', TG_OP, TG_TABLE_NAME
    USING ERRCODE = 'insufficient_privilege';
END $$
"""


def _protect(sqlite: bool) -> None:
    if not sqlite:
        op.execute(PG_FUNCTION)
    for table in PROTECTED:
        if sqlite:
            for verb in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, 'audit trail is append-only (审计日志只能追加)'); END"
                )
        else:
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION audit_append_only()"
            )
            op.execute(
                f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only()"
            )


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.create_table(
        "audit_record",
        # INTEGER on SQLite: seq becomes the rowid, so the table is stored in chain order.
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=False, nullable=False),
        sa.Column("occurred_at", sa.String(length=32), nullable=False),
        sa.Column("actor_kind", sa.String(length=16), nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("actor_department", sa.String(length=32), nullable=True),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("resource", sa.String(length=160), nullable=True),
        sa.Column("subject_department", sa.String(length=32), nullable=True),
        sa.Column("items", sa.Text(), nullable=True),
        sa.Column("purpose", sa.Text(), nullable=True),
        sa.Column("grant_id", sa.BigInteger(), nullable=True),
        sa.Column("rows", sa.Integer(), nullable=True),
        sa.Column("outcome", sa.String(length=8), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=True),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("client_addr", sa.String(length=64), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("alg", sa.String(length=8), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_record")),
    )
    op.create_index("ix_audit_record_actor_department_seq", "audit_record", ["actor_department", "seq"])
    op.create_index("ix_audit_record_subject_department_seq", "audit_record", ["subject_department", "seq"])
    op.create_index("ix_audit_record_occurred_at", "audit_record", ["occurred_at"])
    op.create_index("ix_audit_record_resource", "audit_record", ["resource"])
    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("alg", sa.String(length=8), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_head")),
    )
    op.execute("INSERT INTO audit_head (id, seq, hash, alg) VALUES (1, 0, '" + "0" * 64 + "', 'sha256')")
    op.create_table(
        "audit_checkpoint",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("signed_at", sa.String(length=32), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("signature", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_checkpoint")),
    )
    op.create_index(op.f("ix_audit_checkpoint_seq"), "audit_checkpoint", ["seq"])
    _protect(sqlite)


def downgrade() -> None:
    for table in ("audit_checkpoint", "audit_head", "audit_record"):
        op.drop_table(table)
    if op.get_bind().dialect.name != "sqlite":
        op.execute("DROP FUNCTION IF EXISTS audit_append_only()")
