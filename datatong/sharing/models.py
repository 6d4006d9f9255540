"""Tables of sharing: applications (共享申请), their history, grants (授权) and quota counters."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import JSON, Boolean, Date, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from datatong.catalog.models import CatalogEntry
from datatong.db import Base, utcnow
from datatong.orgs.models import Department

PURPOSE_KINDS = {
    "administrative_basis": "行政依据",
    "work_reference": "工作参考",
    "verification": "数据校核",
    "collaboration": "业务协同",
    "other": "其他",
}

APPLICATION_STATUSES = {
    "draft": "草稿",
    "compliance_review": "符合性审查中",
    "awaiting_provider": "待提供方答复",
    "approved": "已同意",
    "partially_approved": "部分同意",
    "rejected": "不同意",
    "withdrawn": "已撤回",
    "negotiation": "协商中",
    "coordination": "协调中",
    "rejection_upheld": "协调维持不予共享",
}

GRANT_STATUSES = {"active": "有效", "suspended": "已暂停", "revoked": "已撤销", "expired": "已过期"}

# The security commitment (安全承诺) an applicant signs when submitting; its version is
# stored with the signature, so a later change of wording does not rewrite what was signed.
COMMITMENT_VERSION = "2026.1"
COMMITMENT_TEXT = (
    "本部门承诺：共享数据仅用于申请所述用途，不向第三方提供，不用于其他目的；"
    "按国家和本市数据安全要求妥善保管，使用期满或授权撤销后依规删除；对违规使用承担责任。"
)


class ShareApplication(Base):
    __tablename__ = "share_application"
    __table_args__ = (
        Index("ix_share_application_provider_status", "provider_id", "status", "due_at"),
        Index("ix_share_application_consumer_status", "consumer_id", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    entry_id: Mapped[int] = mapped_column(ForeignKey("catalog_entry.id"), index=True)
    entry_code: Mapped[str] = mapped_column(String(80))
    provider_id: Mapped[int] = mapped_column(ForeignKey("department.id"))
    consumer_id: Mapped[int] = mapped_column(ForeignKey("department.id"))
    client_app_id: Mapped[int | None] = mapped_column(ForeignKey("client_app.id"))
    system_name: Mapped[str] = mapped_column(String(200))
    applicant_id: Mapped[int] = mapped_column(ForeignKey("user_account.id"))
    purpose_kind: Mapped[str] = mapped_column(String(32))
    purpose: Mapped[str] = mapped_column(Text)
    legal_basis: Mapped[str] = mapped_column(Text)
    items: Mapped[list[str]] = mapped_column(JSON, default=list)
    period_start: Mapped[date] = mapped_column(Date)
    period_end: Mapped[date] = mapped_column(Date)
    rows_per_day: Mapped[int] = mapped_column(Integer)  # expected volume
    calls_per_minute: Mapped[int] = mapped_column(Integer)
    commitment_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    commitment_at: Mapped[datetime | None]
    commitment_version: Mapped[str | None] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(24), default="draft")
    compliance_review: Mapped[bool] = mapped_column(Boolean, default=False)
    submitted_at: Mapped[datetime | None]
    due_at: Mapped[date | None] = mapped_column(Date)
    decision_reason: Mapped[str | None] = mapped_column(Text)
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    decided_at: Mapped[datetime | None]
    approved_items: Mapped[list[str] | None] = mapped_column(JSON)
    approved_start: Mapped[date | None] = mapped_column(Date)
    approved_end: Mapped[date | None] = mapped_column(Date)
    approved_rows_per_day: Mapped[int | None] = mapped_column(Integer)
    approved_calls_per_minute: Mapped[int | None] = mapped_column(Integer)
    grant_id: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    entry: Mapped[CatalogEntry] = relationship(lazy="joined")
    provider: Mapped[Department] = relationship(foreign_keys=[provider_id], lazy="joined")
    consumer: Mapped[Department] = relationship(foreign_keys=[consumer_id], lazy="joined")


class ShareEvent(Base):
    """One transition of an application or a grant: who, when, from, to, why."""

    __tablename__ = "share_event"

    id: Mapped[int] = mapped_column(primary_key=True)
    application_id: Mapped[int | None] = mapped_column(ForeignKey("share_application.id"), index=True)
    grant_id: Mapped[int | None] = mapped_column(ForeignKey("share_grant.id"), index=True)
    action: Mapped[str] = mapped_column(String(32))
    from_status: Mapped[str | None] = mapped_column(String(24))
    to_status: Mapped[str] = mapped_column(String(24))
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    actor_name: Mapped[str] = mapped_column(String(100))
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Grant(Base):
    """What a consumer may use: items, purpose, window, quota, items in clear."""

    __tablename__ = "share_grant"
    __table_args__ = (Index("ix_share_grant_lookup", "consumer_id", "entry_id", "status"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    consumer_id: Mapped[int] = mapped_column(ForeignKey("department.id"))
    client_app_id: Mapped[int | None] = mapped_column(ForeignKey("client_app.id"))
    system_name: Mapped[str | None] = mapped_column(String(200))
    entry_id: Mapped[int] = mapped_column(ForeignKey("catalog_entry.id"), index=True)
    entry_code: Mapped[str] = mapped_column(String(80))
    provider_id: Mapped[int] = mapped_column(ForeignKey("department.id"), index=True)
    items: Mapped[list[str]] = mapped_column(JSON, default=list)
    clear_items: Mapped[list[str]] = mapped_column(JSON, default=list)
    purpose_kind: Mapped[str] = mapped_column(String(32))
    valid_from: Mapped[date] = mapped_column(Date)
    valid_to: Mapped[date | None] = mapped_column(Date)  # None: until revoked
    rows_per_day: Mapped[int | None] = mapped_column(Integer)  # None: no limit
    calls_per_minute: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default="active")
    status_reason: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(16))  # unconditional | application
    application_id: Mapped[int | None] = mapped_column(ForeignKey("share_application.id"))
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    consumer: Mapped[Department] = relationship(foreign_keys=[consumer_id], lazy="joined")
    provider: Mapped[Department] = relationship(foreign_keys=[provider_id], lazy="joined")


class QuotaCounter(Base):
    """Use of a grant in one window: kind "m" (calls in a minute) or "d" (rows in a day).

    Incremented only by one INSERT … ON CONFLICT DO UPDATE … WHERE n + k <= limit, so two
    processes can never both take the last unit (see authorize.py)."""

    __tablename__ = "share_quota_counter"

    grant_id: Mapped[int] = mapped_column(ForeignKey("share_grant.id", ondelete="CASCADE"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(1), primary_key=True)
    window_key: Mapped[str] = mapped_column(String(16), primary_key=True)
    n: Mapped[int] = mapped_column(Integer, default=0)
