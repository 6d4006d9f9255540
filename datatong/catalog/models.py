"""Tables of the 政务信息资源目录: classification, entries, data items, versions."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Date, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from datatong.db import Base, utcnow
from datatong.orgs.models import Department


class CatalogClass(Base):
    """One node of the classification: 类 (1 digit) / 项 (2) / 目 (3) / 细目 (any).

    ``code`` is the full code, the concatenation of the codes on the path from the
    root, so "101" is 基础(1) → 人口(01).
    """

    __tablename__ = "catalog_class"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    level: Mapped[int] = mapped_column(Integer)  # 1 类, 2 项, 3 目, 4 细目
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("catalog_class.id"), index=True)
    department_id: Mapped[int | None] = mapped_column(ForeignKey("department.id"))
    description: Mapped[str | None] = mapped_column(Text)

    parent: Mapped[CatalogClass | None] = relationship(remote_side=[id])


class CodeSequence(Base):
    """The last sequence number handed out per code prefix; it only ever grows,
    so a 信息资源代码 is never handed out twice, even after its entry is deleted."""

    __tablename__ = "code_sequence"

    prefix: Mapped[str] = mapped_column(String(80), primary_key=True)
    last: Mapped[int] = mapped_column(Integer, default=0)


class CatalogEntry(Base):
    __tablename__ = "catalog_entry"
    __table_args__ = (
        Index("ix_catalog_entry_status_provider", "status", "provider_id"),
        Index("ix_catalog_entry_modified", "modified_at", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(80), unique=True)
    name: Mapped[str] = mapped_column(String(300))
    class_id: Mapped[int] = mapped_column(ForeignKey("catalog_class.id"), index=True)
    # Denormalised for facets: catalog type (1/2/3) and the 项-level class code.
    catalog_type: Mapped[str] = mapped_column(String(1))
    class_code: Mapped[str] = mapped_column(String(32), index=True)
    provider_id: Mapped[int] = mapped_column(ForeignKey("department.id"), index=True)
    provider_code: Mapped[str] = mapped_column(String(32))
    provider_unit: Mapped[str | None] = mapped_column(String(200))  # 提供方内部部门
    summary: Mapped[str] = mapped_column(Text)
    keywords: Mapped[str | None] = mapped_column(String(500))
    format_category: Mapped[str] = mapped_column(String(32), index=True)
    format_type: Mapped[str | None] = mapped_column(String(64))
    share_type: Mapped[str] = mapped_column(String(16), index=True)
    share_condition: Mapped[str | None] = mapped_column(Text)
    no_share_basis: Mapped[str | None] = mapped_column(Text)
    share_method: Mapped[str | None] = mapped_column(String(16))
    share_subtype: Mapped[str | None] = mapped_column(String(16))
    is_open: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    open_condition: Mapped[str | None] = mapped_column(Text)
    update_cycle: Mapped[str] = mapped_column(String(16), index=True)
    release_date: Mapped[date | None] = mapped_column(Date)  # 发布日期
    related_codes: Mapped[str | None] = mapped_column(String(500))
    source_system: Mapped[str | None] = mapped_column(String(200))
    online_url: Mapped[str | None] = mapped_column(String(500))
    service_info: Mapped[str | None] = mapped_column(Text)
    metadata_maintainer: Mapped[str | None] = mapped_column(String(200))
    metadata_updated_at: Mapped[date | None] = mapped_column(Date)
    # A reported change of the data items (数据项变更) starts the 15-working-day deadline
    # for updating the entry; an update of its items clears both.
    items_changed_at: Mapped[datetime | None]
    update_due_at: Mapped[date | None] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(24), default="draft")
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    modified_at: Mapped[datetime] = mapped_column(default=utcnow)

    provider: Mapped[Department] = relationship(lazy="joined")
    catalog_class: Mapped[CatalogClass] = relationship(lazy="joined")
    items: Mapped[list[DataItem]] = relationship(
        back_populates="entry",
        order_by="DataItem.position",
        cascade="all, delete-orphan",
        lazy="selectin",
    )


class DataItem(Base):
    """信息项: one field of an information resource."""

    __tablename__ = "catalog_item"

    id: Mapped[int] = mapped_column(primary_key=True)
    entry_id: Mapped[int] = mapped_column(ForeignKey("catalog_entry.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(200))
    code: Mapped[str | None] = mapped_column(String(64))
    data_type: Mapped[str] = mapped_column(String(1))
    length: Mapped[int | None] = mapped_column(Integer)
    description: Mapped[str | None] = mapped_column(Text)
    sensitivity: Mapped[str] = mapped_column(String(16), default="internal")
    is_authoritative: Mapped[bool] = mapped_column(Boolean, default=False)

    entry: Mapped[CatalogEntry] = relationship(back_populates="items")


class EntryVersion(Base):
    """One change of an entry: who, when, why and what (a field-level diff)."""

    __tablename__ = "catalog_entry_version"
    __table_args__ = (Index("ix_version_entry", "entry_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    entry_id: Mapped[int] = mapped_column(ForeignKey("catalog_entry.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(24))
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    actor_name: Mapped[str] = mapped_column(String(100))
    reason: Mapped[str | None] = mapped_column(Text)
    changes: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
