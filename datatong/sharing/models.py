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
    # When the overdue application was put on the platform admin's board (escalated once).
    escalated_at: Mapped[datetime | None]
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
    __table_args__ = (
        Index("ix_share_grant_lookup", "consumer_id", "entry_id", "status"),
        # authorize()'s once-a-second look for grants changed by other processes.
        Index("ix_share_grant_updated_at", "updated_at"),
    )

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


# ------------------------------------------------------------------ work calendar


class WorkCalendarYear(Base):
    """A year of the State Council's holiday arrangement (国务院办公厅关于某年部分节假日安排的通知)
    entered by the platform admin. It takes precedence over the ``chinese_calendar`` package,
    which only knows the years it was released with."""

    __tablename__ = "work_calendar_year"

    year: Mapped[int] = mapped_column(Integer, primary_key=True)
    notice: Mapped[str] = mapped_column(String(200))  # the notice's 文号 or title
    imported_by: Mapped[str] = mapped_column(String(64))
    imported_at: Mapped[datetime] = mapped_column(default=utcnow)


class WorkCalendarDay(Base):
    """A day that differs from the plain week in a supplementary year: a holiday on a
    weekday (``is_working`` false) or a 调休 make-up working day on a weekend (true)."""

    __tablename__ = "work_calendar_day"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    year: Mapped[int] = mapped_column(ForeignKey("work_calendar_year.year", ondelete="CASCADE"), index=True)
    is_working: Mapped[bool] = mapped_column(Boolean)
    name: Mapped[str | None] = mapped_column(String(50))  # e.g. 春节


# ------------------------------------------------------------------ inbox and webhooks

INBOX_KINDS = {
    "application_new": "新的共享申请",
    "decision": "申请答复",
    "reminder": "答复期限提醒",
    "overdue": "申请逾期",
    "revoked": "授权撤销",
    "grant_changed": "授权变更",
    "coordination": "协调",
    "need": "供需对接",
    "catalog_update": "目录更新提醒",
    "calendar": "工作日历",
}


class InboxMessage(Base):
    """One notification in a user's inbox (站内消息)."""

    __tablename__ = "inbox_message"
    __table_args__ = (Index("ix_inbox_message_user_read", "user_id", "read_at", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(24))
    title: Mapped[str] = mapped_column(String(300))
    body: Mapped[str | None] = mapped_column(Text)
    link: Mapped[str | None] = mapped_column(String(300))
    application_id: Mapped[int | None] = mapped_column(ForeignKey("share_application.id"))
    grant_id: Mapped[int | None] = mapped_column(ForeignKey("share_grant.id"))
    need_id: Mapped[int | None] = mapped_column(ForeignKey("share_need.id"))
    # Set for messages that must be sent once only (reminders, overdue): a second job run
    # inserting the same key is a no-op.
    dedupe_key: Mapped[str | None] = mapped_column(String(160), unique=True)
    read_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DepartmentWebhook(Base):
    """A department's outgoing webhook: events addressed to its users are POSTed there,
    signed with HMAC-SHA256 under a secret sealed at rest."""

    __tablename__ = "department_webhook"

    department_id: Mapped[int] = mapped_column(ForeignKey("department.id", ondelete="CASCADE"), primary_key=True)
    url: Mapped[str] = mapped_column(String(500))
    secret_sealed: Mapped[str] = mapped_column(Text)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookDelivery(Base):
    """An outbox row: written in the same transaction as the event, sent afterwards."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (Index("ix_webhook_delivery_due", "status", "next_attempt_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    department_id: Mapped[int] = mapped_column(ForeignKey("department.id", ondelete="CASCADE"), index=True)
    event: Mapped[str] = mapped_column(String(40))
    payload: Mapped[str] = mapped_column(Text)  # the exact JSON body that is signed
    status: Mapped[str] = mapped_column(String(12), default="pending")  # pending|delivered|dead
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    delivered_at: Mapped[datetime | None]


# ------------------------------------------------------------------ supply–demand docking

NEED_STATUSES = {
    "open": "待分派",
    "routed": "待部门答复",
    "will_publish": "将编目发布",
    "cannot": "无法提供",
    "closed": "已关闭",
}


class ShareNeed(Base):
    """A consumer's need (需求) for data not in the catalog (供需对接)."""

    __tablename__ = "share_need"
    __table_args__ = (Index("ix_share_need_routed_status", "routed_to_id", "status"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    consumer_id: Mapped[int] = mapped_column(ForeignKey("department.id"), index=True)
    requester_id: Mapped[int] = mapped_column(ForeignKey("user_account.id"))
    title: Mapped[str] = mapped_column(String(300))
    description: Mapped[str] = mapped_column(Text)
    items: Mapped[list[str]] = mapped_column(JSON, default=list)
    purpose_kind: Mapped[str] = mapped_column(String(32))
    purpose: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="open")
    routed_to_id: Mapped[int | None] = mapped_column(ForeignKey("department.id"))
    routed_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    routed_at: Mapped[datetime | None]
    due_at: Mapped[date | None] = mapped_column(Date)
    answer: Mapped[str | None] = mapped_column(Text)
    answered_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    answered_at: Mapped[datetime | None]
    entry_id: Mapped[int | None] = mapped_column(ForeignKey("catalog_entry.id"))
    closed_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)

    consumer: Mapped[Department] = relationship(foreign_keys=[consumer_id], lazy="joined")
    routed_to: Mapped[Department | None] = relationship(foreign_keys=[routed_to_id], lazy="joined")


# ------------------------------------------------------------------ 不予共享 coordination

CASE_STATUSES = {"open": "待协调", "upheld": "维持不予共享", "referred": "已协调提供方调整"}


class CoordinationCase(Base):
    """A consumer's case for a 不予共享 entry it needs for its duties; the platform admin
    coordinates (协调). Sees the entry's no-share basis, which consumers do not."""

    __tablename__ = "share_coordination_case"

    id: Mapped[int] = mapped_column(primary_key=True)
    entry_id: Mapped[int] = mapped_column(ForeignKey("catalog_entry.id"), index=True)
    provider_id: Mapped[int] = mapped_column(ForeignKey("department.id"))
    consumer_id: Mapped[int] = mapped_column(ForeignKey("department.id"), index=True)
    requester_id: Mapped[int] = mapped_column(ForeignKey("user_account.id"))
    duty: Mapped[str] = mapped_column(Text)  # the duty that needs the data (履职需要)
    legal_basis: Mapped[str] = mapped_column(Text)
    items: Mapped[list[str]] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(16), default="open")
    resolution: Mapped[str | None] = mapped_column(Text)
    resolved_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    resolved_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    entry: Mapped[CatalogEntry] = relationship(lazy="joined")
    consumer: Mapped[Department] = relationship(foreign_keys=[consumer_id], lazy="joined")
    provider: Mapped[Department] = relationship(foreign_keys=[provider_id], lazy="joined")
