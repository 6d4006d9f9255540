"""Notifications of sharing: each user's inbox (站内消息) and each department's optional
outgoing webhook (HMAC-signed; sent by ``jobs.deliver_due``).

Callers (service.py, needs.py, jobs.py) use only the functions of the first part, inside
their own transaction: a message exists exactly when the change that caused it committed
(the webhook row is an outbox, written in the same transaction and sent afterwards).
The second part is what the inbox and webhook API (inbox_api.py) calls.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterable
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from sqlalchemy import Table, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from datatong.audit.service import record
from datatong.crypto import seal
from datatong.db import get_by_id, utcnow
from datatong.errors import Forbidden, NotFound, Unauthenticated, invalid
from datatong.orgs.models import Department, Role, User
from datatong.orgs.service import can_manage_department
from datatong.sharing.models import (
    INBOX_KINDS,
    DepartmentWebhook,
    InboxMessage,
    ShareEvent,
    WebhookDelivery,
)

if TYPE_CHECKING:
    from datatong.orgs.service import Principal
    from datatong.settings import Settings
    from datatong.sharing.models import Grant, ShareApplication

DEPT_RECIPIENTS = (Role.DEPT_ADMIN, Role.DATA_OFFICER)
_KEY_LEN = 160  # InboxMessage.dedupe_key


def _row_key(dedupe_key: str | None, user_id: int) -> str | None:
    """The unique key of one recipient's copy; hashed when it would not fit the column."""
    if dedupe_key is None:
        return None
    key = f"{dedupe_key}#u{user_id}"
    if len(key) > _KEY_LEN:
        key = "sha256:" + hashlib.sha256(key.encode()).hexdigest()
    return key


def _insert_ignoring_duplicates(session: Session, rows: list[dict[str, Any]]) -> int:
    """INSERT … ON CONFLICT (dedupe_key) DO NOTHING: atomic on both databases, so two job
    runs at once still write a keyed message once. NULL keys never conflict."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    table = cast(Table, InboxMessage.__table__)
    stmt = insert(table).values(rows).on_conflict_do_nothing(index_elements=["dedupe_key"]).returning(table.c.id)
    session.flush()  # the rows referred to (application, grant) must exist first
    return len(session.execute(stmt).all())


def notify_users(
    session: Session,
    user_ids: Iterable[int],
    kind: str,
    title: str,
    *,
    body: str | None = None,
    link: str | None = None,
    application_id: int | None = None,
    grant_id: int | None = None,
    need_id: int | None = None,
    dedupe_key: str | None = None,
) -> int:
    """Put a message in each user's inbox; returns how many were written (a ``dedupe_key``
    already used writes nothing). ``kind`` is a key of models.INBOX_KINDS."""
    if kind not in INBOX_KINDS:
        raise ValueError(f"unknown inbox kind {kind!r}")
    now = utcnow()
    rows = [
        {
            "user_id": uid,
            "kind": kind,
            "title": title[:300],
            "body": body,
            "link": link,
            "application_id": application_id,
            "grant_id": grant_id,
            "need_id": need_id,
            "dedupe_key": _row_key(dedupe_key, uid),
            "created_at": now,
        }
        for uid in sorted(set(user_ids))
    ]
    return _insert_ignoring_duplicates(session, rows) if rows else 0


def _active_users(session: Session, *conditions: Any) -> list[int]:
    return list(session.scalars(select(User.id).where(User.is_active.is_(True), *conditions)))


def department_recipients(session: Session, department_id: int) -> list[int]:
    return _active_users(session, User.department_id == department_id, User.role.in_(list(DEPT_RECIPIENTS)))


def platform_admins(session: Session) -> list[int]:
    return _active_users(session, User.role == Role.PLATFORM_ADMIN)


def _webhook_already_queued(session: Session, department_id: int, dedupe_key: str) -> bool:
    pattern = f"%{json.dumps({'dedupe_key': dedupe_key}, ensure_ascii=False)[1:-1]}%"
    found = session.scalar(
        select(WebhookDelivery.id)
        .where(WebhookDelivery.department_id == department_id, WebhookDelivery.payload.like(pattern))
        .limit(1)
    )
    return found is not None


def queue_delivery(session: Session, department: Department, event: str, data: dict[str, Any]) -> WebhookDelivery:
    """An outbox row holding the exact JSON body that will be signed and sent."""
    now = utcnow()
    payload = {"event": event, "department": department.code, "sent_for": now.isoformat(), **data}
    delivery = WebhookDelivery(
        department_id=department.id,
        event=event,
        payload=json.dumps(payload, ensure_ascii=False, sort_keys=True, default=str),
        status="pending",
        attempts=0,
        next_attempt_at=now,
        created_at=now,
    )
    session.add(delivery)
    session.flush()
    return delivery


def notify_department(
    session: Session,
    department_id: int,
    kind: str,
    title: str,
    **kw: object,
) -> int:
    """Inbox messages to the department's admins and data officers, and one webhook
    delivery (outbox row) when the department has an enabled webhook."""
    users = department_recipients(session, department_id)
    written = notify_users(session, users, kind, title, **kw)  # type: ignore[arg-type]
    hook = session.get(DepartmentWebhook, department_id)
    if hook is None or not hook.enabled:
        return written
    key = kw.get("dedupe_key")
    # A keyed message is sent once: its inbox copies tell whether it went out before
    # (or, in a department with nobody to read them, the outbox itself).
    if isinstance(key, str) and (
        (users and not written) or (not users and _webhook_already_queued(session, department_id, key))
    ):
        return written
    department = session.get(Department, department_id)
    assert department is not None
    data = {"kind": kind, "kind_label": INBOX_KINDS[kind], "title": title, **kw}
    queue_delivery(session, department, kind, data)
    return written


def notify_platform_admins(session: Session, kind: str, title: str, **kw: object) -> int:
    """Inbox messages to every platform admin (overdue board, coordination, needs)."""
    return notify_users(session, platform_admins(session), kind, title, **kw)  # type: ignore[arg-type]


# ---------------------------------------------------------------- texts


def cn_date(d: date | datetime | None) -> str:
    return "" if d is None else f"{d.year}年{d.month}月{d.day}日"


def application_link(app_id: int) -> str:
    return f"/sharing/applications/{app_id}"


def grant_link(grant_id: int) -> str:
    return f"/sharing/grants/{grant_id}"


def _app_ref(app: ShareApplication) -> str:
    return f"“{app.entry.name}”（申请 #{app.id}）"


def _reason_line(app: ShareApplication) -> str:
    return f"理由：{app.decision_reason}" if app.decision_reason else ""


def _last_reason(session: Session, app: ShareApplication) -> str | None:
    return session.scalar(
        select(ShareEvent.reason).where(ShareEvent.application_id == app.id).order_by(ShareEvent.id.desc()).limit(1)
    )


def _last_from(session: Session, app: ShareApplication) -> str | None:
    return session.scalar(
        select(ShareEvent.from_status)
        .where(ShareEvent.application_id == app.id)
        .order_by(ShareEvent.id.desc())
        .limit(1)
    )


def _lines(*parts: str | None) -> str:
    return "\n".join(p for p in parts if p)


# Decisions the consumer hears about: action → what happened, in the title.
_DECISIONS = {
    "review_return": "符合性审查退回",
    "approve": "已同意",
    "partially_approve": "部分同意",
    "reject": "不同意",
    "coordinate_approve": "协调结果：同意",
    "coordinate_partially_approve": "协调结果：部分同意",
    "coordinate_uphold": "协调结果：维持不予共享",
}


def application_moved(session: Session, app: ShareApplication, action: str, principal: Principal) -> None:
    """Called by service._move after every transition of an application."""
    ref, link = _app_ref(app), application_link(app.id)
    common: dict[str, Any] = {"link": link, "application_id": app.id}
    due = f"答复期限：{cn_date(app.due_at)}" if app.due_at else None
    if action in ("submit", "review_pass"):
        # A new clock starts: an application escalated in 符合性审查 may be escalated again.
        app.escalated_at = None
        if app.status == "compliance_review":
            title = f"新的共享申请待符合性审查：{ref}"
            body = _lines(f"{app.consumer.name}申请使用{app.provider.name}的“{app.entry.name}”。", due)
            notify_platform_admins(session, "application_new", title, body=body, **common)
        else:
            title = f"新的共享申请待答复：{ref}"
            body = _lines(f"{app.consumer.name}申请使用本部门的“{app.entry.name}”，用途：{app.purpose}。", due)
            notify_department(session, app.provider_id, "application_new", title, body=body, **common)
    elif action in _DECISIONS:
        title = f"共享申请{_DECISIONS[action]}：{ref}"
        grant = f"已生成授权 #{app.grant_id}。" if app.grant_id and "approve" in action else None
        body = _lines(f"{principal.display_name}答复了本部门的共享申请。", grant, _reason_line(app))
        notify_department(session, app.consumer_id, "decision", title, body=body, grant_id=app.grant_id, **common)
    elif action == "negotiate":
        title = f"申请方请求协商：{ref}"
        body = _lines(f"{app.consumer.name}对不同意的答复请求协商。", _reason(session, app))
        notify_department(session, app.provider_id, "coordination", title, body=body, **common)
    elif action == "escalate":
        title = f"共享申请请求协调：{ref}"
        body = _lines(f"{app.consumer.name}与{app.provider.name}协商未果，请求平台协调。", _reason(session, app))
        notify_platform_admins(session, "coordination", title, body=body, **common)
    elif action == "withdraw" and _last_from(session, app) in ("awaiting_provider", "negotiation"):
        title = f"共享申请已撤回：{ref}"
        body = f"{app.consumer.name}撤回了该申请，无需再答复。"
        notify_department(session, app.provider_id, "decision", title, body=body, **common)


def _reason(session: Session, app: ShareApplication) -> str | None:
    text = _last_reason(session, app)
    return f"理由：{text}" if text else None


_GRANT_TITLES = {
    "suspend": "授权已暂停",
    "resume": "授权已恢复",
    "renew": "授权已续期",
    "transfer": "授权已转移",
    "expire": "授权已到期",
}


def grant_changed(session: Session, grant: Grant, action: str, principal: Principal) -> None:
    """Called by service after a grant is created, suspended, resumed, revoked, renewed or transferred."""
    from datatong.catalog.models import CatalogEntry

    entry = session.get(CatalogEntry, grant.entry_id)
    name = entry.name if entry is not None else grant.entry_code
    ref = f"“{name}”（授权 #{grant.id}）"
    common: dict[str, Any] = {"link": grant_link(grant.id), "grant_id": grant.id}
    reason = f"理由：{grant.status_reason}" if grant.status_reason and action != "renew" else None
    until = f"有效期至：{cn_date(grant.valid_to)}" if grant.valid_to else "有效期：至撤销为止"
    if action == "create":
        if grant.source == "unconditional":
            # The provider may revoke an unconditional grant for cause: it must know it exists.
            title = f"无条件共享授权已生成：{ref}"
            body = f"{grant.consumer.name}获取了本部门“{name}”的无条件共享授权。"
            notify_department(session, grant.provider_id, "grant_changed", title, body=body, **common)
        return
    if action == "revoke":
        title = f"授权已撤销：{ref}"
        body = _lines(f"{grant.provider.name}撤销了本部门的授权，须停止使用并依规删除已获取的数据。", reason)
        notify_department(session, grant.consumer_id, "revoked", title, body=body, **common)
    elif action in _GRANT_TITLES:
        title = f"{_GRANT_TITLES[action]}：{ref}"
        body = _lines(f"操作人：{principal.display_name}", until, reason)
        notify_department(session, grant.consumer_id, "grant_changed", title, body=body, **common)


# ---------------------------------------------------------------- the inbox (API)


def _require_user(principal: Principal) -> int:
    """Inboxes belong to people: an anonymous caller must sign in, a system has none."""
    if not principal.is_authenticated:
        raise Unauthenticated()
    if principal.kind != "user" or principal.id is None:
        raise Forbidden("应用系统没有站内消息", "Systems have no inbox")
    return principal.id


def list_inbox(
    session: Session, principal: Principal, *, unread_only: bool = False, limit: int = 50, offset: int = 0
) -> tuple[list[InboxMessage], int, int]:
    """The caller's messages, newest first; with the number unread and the total listed."""
    uid = _require_user(principal)
    mine = InboxMessage.user_id == uid
    filters = [mine, InboxMessage.read_at.is_(None)] if unread_only else [mine]
    items = session.scalars(
        select(InboxMessage).where(*filters).order_by(InboxMessage.id.desc()).limit(limit).offset(offset)
    )
    unread = session.scalar(select(func.count()).where(mine, InboxMessage.read_at.is_(None))) or 0
    total = session.scalar(select(func.count()).select_from(InboxMessage).where(*filters)) or 0
    return list(items), int(unread), int(total)


def mark_read(session: Session, principal: Principal, message_id: int) -> InboxMessage:
    uid = _require_user(principal)
    message = get_by_id(session, InboxMessage, message_id)
    if message is None or message.user_id != uid:  # someone else's message does not exist for you
        raise NotFound("消息", "Message")
    if message.read_at is None:
        message.read_at = utcnow()
        session.flush()
    return message


def mark_all_read(session: Session, principal: Principal) -> int:
    uid = _require_user(principal)
    result = session.execute(
        update(InboxMessage)
        .where(InboxMessage.user_id == uid, InboxMessage.read_at.is_(None))
        .values(read_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


# ---------------------------------------------------------------- department webhooks (API)


def webhook_aad(department_id: int) -> str:
    """Binds a sealed secret to its row: copied to another department, it does not open."""
    return f"department:{department_id}:webhook"


def _managed_department(session: Session, principal: Principal, code: str) -> Department:
    if not principal.is_authenticated:
        raise Unauthenticated()
    department = session.scalar(select(Department).where(Department.code == code))
    if department is None:
        raise NotFound("部门", "Department")
    if principal.kind != "user" or not can_manage_department(principal, department.id):
        raise Forbidden("只有本部门管理员或平台管理员可以管理部门 Webhook", "Only the department's admin manages it")
    return department


def check_webhook_url(url: str) -> str:
    """An absolute http(s) URL with a host, no credentials in it (they would be logged)."""
    text = url.strip()
    try:
        parts = urlsplit(text)
        host = parts.hostname
    except ValueError:
        host = None
        parts = None
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not host
        or parts.username is not None
        or any(c.isspace() for c in text)
        or len(text) > 500
    ):
        raise invalid(
            "sharing.webhook_url_invalid",
            "Webhook 地址须为 http:// 或 https:// 开头的完整网址（不含用户名口令）",
            "The webhook URL must be an absolute http:// or https:// URL without credentials",
            "url",
        )
    return text


def get_webhook(session: Session, principal: Principal, code: str) -> tuple[Department, DepartmentWebhook]:
    department = _managed_department(session, principal, code)
    hook = session.get(DepartmentWebhook, department.id)
    if hook is None:
        raise NotFound("部门 Webhook", "Department webhook")
    return department, hook


def recent_deliveries(session: Session, department_id: int, limit: int = 20) -> list[WebhookDelivery]:
    stmt = (
        select(WebhookDelivery)
        .where(WebhookDelivery.department_id == department_id)
        .order_by(WebhookDelivery.id.desc())
        .limit(limit)
    )
    return list(session.scalars(stmt))


def put_webhook(
    session: Session,
    settings: Settings,
    principal: Principal,
    code: str,
    *,
    url: str,
    enabled: bool = True,
    rotate_secret: bool = False,
) -> tuple[Department, DepartmentWebhook, str | None]:
    """Create or change the department's webhook. The secret is made here and returned
    once (on creation or rotation); only its sealed form is stored."""
    department = _managed_department(session, principal, code)
    target = check_webhook_url(url)
    hook = session.get(DepartmentWebhook, department.id)
    created = hook is None
    secret = secrets.token_urlsafe(32) if created or rotate_secret else None
    now = utcnow()
    if hook is None:
        hook = DepartmentWebhook(department_id=department.id, created_at=now)
        session.add(hook)
    old_url = None if created else hook.url
    hook.url, hook.enabled, hook.updated_at = target, bool(enabled), now
    if secret is not None:
        hook.secret_sealed = seal(secret, aad=webhook_aad(department.id), settings=settings)
    session.flush()
    detail = {"url": {"from": old_url, "to": target}, "enabled": bool(enabled), "secret_rotated": secret is not None}
    action = "sharing.webhook.create" if created else "sharing.webhook.update"
    record(
        session,
        principal,
        action,
        resource=f"webhook:{department.code}",
        subject_department=department.code,
        detail=detail,
    )
    return department, hook, secret


def delete_webhook(session: Session, principal: Principal, code: str) -> None:
    department, hook = get_webhook(session, principal, code)
    session.delete(hook)
    # What was queued for it has nowhere to go any more.
    session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.department_id == department.id, WebhookDelivery.status == "pending")
        .values(status="dead", last_error="Webhook 已删除")
        .execution_options(synchronize_session=False)
    )
    session.flush()
    record(
        session,
        principal,
        "sharing.webhook.delete",
        resource=f"webhook:{department.code}",
        subject_department=department.code,
        detail={"url": hook.url},
    )


def queue_ping(session: Session, principal: Principal, code: str) -> tuple[DepartmentWebhook, WebhookDelivery]:
    """A ``ping`` delivery, so an admin can check the receiver and its signature check."""
    department, hook = get_webhook(session, principal, code)
    data = {"title": "数据通 Webhook 测试", "by": principal.username}
    return hook, queue_delivery(session, department, "ping", data)
