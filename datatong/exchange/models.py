"""Tables of exchange: data sources (where an entry's data lives) and their field mapping."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from datatong.catalog.models import CatalogEntry
from datatong.db import Base, utcnow

SOURCE_KINDS = {"sql": "外部数据库表/视图", "file": "上传文件（平台托管表）", "http": "上游 HTTP JSON 接口"}
CHANGE_KINDS = {"updated_at": "更新时间列", "increasing_id": "递增编号列"}
SOURCE_STATUSES = {"untested": "未测试", "ok": "正常", "failing": "异常"}


class DataSource(Base):
    """Where a published catalog entry's data lives, and how its data items map onto it.

    One source per entry. Secrets (the password in a SQL URL, an HTTP API's token) are
    sealed at rest with the platform's data key (datatong/crypto.py)."""

    __tablename__ = "exchange_source"

    id: Mapped[int] = mapped_column(primary_key=True)
    entry_id: Mapped[int] = mapped_column(ForeignKey("catalog_entry.id"), unique=True)
    kind: Mapped[str] = mapped_column(String(8))  # sql | file | http
    # sql: the SQLAlchemy URL without its password (shown to admins), the sealed password,
    # and the table or view; file: the managed table's name; http: the endpoint URL.
    url: Mapped[str | None] = mapped_column(String(500))
    secret_sealed: Mapped[str | None] = mapped_column(Text)
    table_name: Mapped[str | None] = mapped_column(String(200))
    key_column: Mapped[str] = mapped_column(String(200))  # unique ordering key (keyset pages)
    change_column: Mapped[str | None] = mapped_column(String(200))
    change_kind: Mapped[str | None] = mapped_column(String(16))  # updated_at | increasing_id
    options: Mapped[str | None] = mapped_column(Text)  # JSON: http records path, headers …
    rows: Mapped[int | None] = mapped_column(Integer)  # file sources: rows loaded
    status: Mapped[str] = mapped_column(String(12), default="untested")  # untested | ok | failing
    last_tested_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    entry: Mapped[CatalogEntry] = relationship(lazy="joined")
    fields: Mapped[list[SourceField]] = relationship(
        back_populates="source", cascade="all, delete-orphan", order_by="SourceField.position", lazy="selectin"
    )


class SourceField(Base):
    """One data item of the entry mapped to a column (sql, file) or a JSON field (http)."""

    __tablename__ = "exchange_source_field"
    __table_args__ = (UniqueConstraint("source_id", "item_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    source_id: Mapped[int] = mapped_column(ForeignKey("exchange_source.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    item_name: Mapped[str] = mapped_column(String(200))
    column: Mapped[str] = mapped_column(String(200))

    source: Mapped[DataSource] = relationship(back_populates="fields")


# ---------------------------------------------------------------- subscriptions (订阅)


class CaptureState(Base):
    """How far change capture has read a source: the last (change column, key) seen.

    Capture reads rows ordered by (change column, key) after this point, so a crash
    between publishing and saving the point only re-publishes changes whose ids the bus
    and the consumer already know (duplicates, never gaps)."""

    __tablename__ = "exchange_capture"

    source_id: Mapped[int] = mapped_column(ForeignKey("exchange_source.id", ondelete="CASCADE"), primary_key=True)
    # Random, fixed when capture starts, part of every change id: a source captured anew
    # (deleted and connected again, a restored database) never repeats an earlier id,
    # which the bus's duplicate filter would drop.
    epoch: Mapped[str] = mapped_column(String(32))
    last_change: Mapped[str | None] = mapped_column(Text)  # JSON of the change column's value
    last_key: Mapped[str | None] = mapped_column(Text)  # JSON of the key
    captured: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class ChangeRecord(Base):
    """The database outbox bus: one captured change of an entry's data; ``id`` is its offset."""

    __tablename__ = "exchange_change"
    __table_args__ = (Index("ix_exchange_change_entry_offset", "entry_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    entry_id: Mapped[int] = mapped_column(ForeignKey("catalog_entry.id", ondelete="CASCADE"))
    change_id: Mapped[str] = mapped_column(String(64), unique=True)  # what consumers dedupe by
    body: Mapped[str] = mapped_column(Text)  # JSON: op, key, changed_at, row (unmasked)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


SUBSCRIPTION_MODES = {"webhook": "推送（Webhook）", "feed": "拉取（变更流）"}
SUBSCRIPTION_STATUS = {"active": "生效", "paused": "已暂停", "cancelled": "已取消"}


class Subscription(Base):
    """A consumer department's subscription to the changes of an entry it holds a grant for.

    ``position`` is the bus offset of the last change delivered (webhook) — replay moves it
    back. The request context of every delivery is the one given when subscribing."""

    __tablename__ = "exchange_subscription"

    id: Mapped[int] = mapped_column(primary_key=True)
    entry_id: Mapped[int] = mapped_column(ForeignKey("catalog_entry.id"), index=True)
    department_id: Mapped[int] = mapped_column(ForeignKey("department.id"), index=True)
    mode: Mapped[str] = mapped_column(String(8))  # webhook | feed
    url: Mapped[str | None] = mapped_column(String(500))
    secret_sealed: Mapped[str | None] = mapped_column(Text)
    items: Mapped[str] = mapped_column(Text)  # JSON list of data items
    system: Mapped[str] = mapped_column(String(200))
    operator: Mapped[str] = mapped_column(String(64))
    purpose: Mapped[str] = mapped_column(String(500))
    case_no: Mapped[str | None] = mapped_column(String(100))
    # Who subscribed: deliveries are authorised as this caller (a client app's grants may
    # be bound to it), re-checked on every batch.
    caller_kind: Mapped[str] = mapped_column(String(8))  # user | client
    caller_id: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(12), default="active")
    position: Mapped[int] = mapped_column(BigInteger, default=0)
    delivered: Mapped[int] = mapped_column(BigInteger, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class DeadLetter(Base):
    """A batch of changes a webhook refused N times: set aside so later changes flow; the
    consumer replays it from ``first_offset``."""

    __tablename__ = "exchange_dead_letter"

    id: Mapped[int] = mapped_column(primary_key=True)
    subscription_id: Mapped[int] = mapped_column(ForeignKey("exchange_subscription.id", ondelete="CASCADE"), index=True)
    first_offset: Mapped[int] = mapped_column(BigInteger)
    last_offset: Mapped[int] = mapped_column(BigInteger)
    changes: Mapped[int] = mapped_column(Integer)
    attempts: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# ---------------------------------------------------------------- bulk exports (批量交换)


class ExportRecord(Base):
    """One bulk export: filled in as it streams, so the signed manifest (rows, bytes,
    SHA-256 of exactly what was sent) can be fetched once it is complete."""

    __tablename__ = "exchange_export"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # random, given in a header
    entry_id: Mapped[int] = mapped_column(ForeignKey("catalog_entry.id"), index=True)
    grant_id: Mapped[int | None] = mapped_column(Integer)
    department_id: Mapped[int | None] = mapped_column(Integer)
    format: Mapped[str] = mapped_column(String(8))
    items: Mapped[str] = mapped_column(Text)  # JSON list
    masked: Mapped[str] = mapped_column(Text)  # JSON list
    after: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(12), default="running")  # running | complete | failed
    rows: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    sha256: Mapped[str | None] = mapped_column(String(64))
    created_by: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
