"""Tables of exchange: data sources (where an entry's data lives) and their field mapping."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from datatong.catalog.models import CatalogEntry
from datatong.db import Base, utcnow

SOURCE_KINDS = {"sql": "外部数据库表/视图", "file": "上传文件（平台托管表）", "http": "上游 HTTP JSON 接口"}
CHANGE_KINDS = {"updated_at": "更新时间列", "increasing_id": "递增编号列"}


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
