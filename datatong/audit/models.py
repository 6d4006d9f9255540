"""Audit tables. ``audit_record`` is append-only (a trigger refuses UPDATE/DELETE on
PostgreSQL and SQLite); ``audit_head`` is the one mutable row that serialises appends."""

from __future__ import annotations

from sqlalchemy import BigInteger, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from datatong.db import Base

GENESIS = "0" * 64
SEQ = BigInteger().with_variant(Integer(), "sqlite")


class AuditRecord(Base):
    """One access or change. Times are ISO-8601 UTC text (``2026-11-22T01:36:28.123456Z``)
    so that both databases hand back exactly the bytes that were hashed."""

    __tablename__ = "audit_record"

    # INTEGER on SQLite makes seq the rowid: the table is stored in chain order, which
    # is the order verification reads it in.
    seq: Mapped[int] = mapped_column(SEQ, primary_key=True, autoincrement=False)
    occurred_at: Mapped[str] = mapped_column(String(32))
    actor_kind: Mapped[str] = mapped_column(String(16))  # user | client | node | anonymous | system
    actor: Mapped[str] = mapped_column(String(128))
    actor_department: Mapped[str | None] = mapped_column(String(32))  # department code
    action: Mapped[str] = mapped_column(String(64))
    resource: Mapped[str | None] = mapped_column(String(160))
    subject_department: Mapped[str | None] = mapped_column(String(32))  # whose data it is
    items: Mapped[str | None] = mapped_column(Text)  # data items touched, comma-separated
    purpose: Mapped[str | None] = mapped_column(Text)
    grant_id: Mapped[int | None] = mapped_column(BigInteger)
    rows: Mapped[int | None] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(8))  # allowed | refused
    reason: Mapped[str | None] = mapped_column(String(64))  # machine code of a refusal
    request_id: Mapped[str | None] = mapped_column(String(64))
    client_addr: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str | None] = mapped_column(Text)  # JSON: changed fields, counts
    alg: Mapped[str] = mapped_column(String(8))  # sha256 | sm3
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_audit_record_actor_department_seq", "actor_department", "seq"),
        Index("ix_audit_record_subject_department_seq", "subject_department", "seq"),
        Index("ix_audit_record_occurred_at", "occurred_at"),
        Index("ix_audit_record_resource", "resource"),
    )


class AuditHead(Base):
    """The chain's tip. Every append updates this single row first, which takes the
    database's row (PostgreSQL) or write (SQLite) lock: two writers can never read the
    same tip, so the chain cannot fork."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
    alg: Mapped[str] = mapped_column(String(8))  # used for records appended from now on


class AuditCheckpoint(Base):
    """The platform's Ed25519 signature over (seq, hash): rewriting the chain or cutting
    its tail cannot go unnoticed without the key, which is not in the database."""

    __tablename__ = "audit_checkpoint"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, index=True)
    hash: Mapped[str] = mapped_column(String(64))
    signed_at: Mapped[str] = mapped_column(String(32))
    key_id: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(String(128))
