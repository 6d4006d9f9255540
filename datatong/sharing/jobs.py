"""Scheduled jobs of sharing: deadline reminders, overdue escalation, grant expiry,
pruning of quota counters and delivery of department webhooks.

Every job takes ``now`` (UTC; Beijing's calendar day is derived from it) so tests can
move the clock, and is idempotent: a second run at the same moment changes nothing and
sends nothing (reminders and overdue messages carry a dedupe key, escalation sets
``escalated_at`` once). ``run_all`` runs each job in its own transaction; ``datatong
sharing run-jobs`` and the background thread of ``datatong serve`` call it.

Webhook signature (receivers check it with :func:`verify_signature`)::

    X-Datatong-Signature: sha256=<hex HMAC-SHA256(secret, f"{timestamp}.{body}")>

where ``timestamp`` is the ``X-Datatong-Timestamp`` header (Unix seconds) and ``body``
the exact request body (UTF-8 JSON).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from datatong import __version__
from datatong.audit.service import record
from datatong.catalog.models import CatalogEntry
from datatong.crypto import unseal
from datatong.db import session_scope, utcnow
from datatong.orgs.service import Principal
from datatong.settings import Settings
from datatong.sharing import notify
from datatong.sharing.models import (
    DepartmentWebhook,
    Grant,
    QuotaCounter,
    ShareApplication,
    ShareEvent,
    WebhookDelivery,
)
from datatong.sharing.workdays import CalendarUnknownYear, is_overdue, local_date, reminder_due

log = logging.getLogger("datatong.sharing.jobs")

ANSWERING = ("compliance_review", "awaiting_provider")  # statuses whose clock runs
MAX_ATTEMPTS = 8  # a delivery failing this often is given up ("dead")
BACKOFF_FIRST = timedelta(minutes=1)  # then 2, 4, 8 … minutes
BACKOFF_CAP = timedelta(hours=1)
DELIVERY_TIMEOUT = 5.0  # seconds, per HTTP attempt
DELIVERY_LEASE = timedelta(minutes=1)  # a claimed delivery is not taken by another worker meanwhile
JOB_INTERVAL_SECONDS = 300
QUOTA_KEEP_DAYS = 2
SYSTEM = Principal("system", None, "system", "系统", "system", None)


def _now(now: datetime | None) -> datetime:
    return now or utcnow()


# ---------------------------------------------------------------- application deadlines


def _days_left(settings: Settings, today: date, due: date) -> int | None:
    """Working days left when a reminder is due today, else None (also for a year the
    calendar does not know: no reminder beats a wrong one)."""
    try:
        return reminder_due(settings, today, due)
    except CalendarUnknownYear:
        return None


def send_reminders(session: Session, settings: Settings, now: datetime | None = None) -> int:
    """Remind the answering side of each running application at 3 and 1 working days
    left (``settings.reminder_days``); returns the number of inbox messages written."""
    today = local_date(_now(now))
    apps = session.scalars(
        select(ShareApplication).where(
            ShareApplication.status.in_(ANSWERING),
            ShareApplication.due_at.is_not(None),
            ShareApplication.due_at >= today,
        )
    )
    written = 0
    for app in apps:
        assert app.due_at is not None
        left = _days_left(settings, today, app.due_at)
        if left is None:
            continue
        key = f"reminder:{app.id}:{app.status}:{app.due_at.isoformat()}:{left}"
        title = f"答复期限提醒：“{app.entry.name}”（申请 #{app.id}）还剩 {left} 个工作日"
        kw: dict[str, Any] = {
            "body": f"{app.consumer.name}的共享申请须于{notify.cn_date(app.due_at)}前答复，逾期将报平台督办。",
            "link": notify.application_link(app.id),
            "application_id": app.id,
            "dedupe_key": key,
        }
        if app.status == "compliance_review":
            written += notify.notify_platform_admins(session, "reminder", title, **kw)
        else:
            written += notify.notify_department(session, app.provider_id, "reminder", title, **kw)
    return written


def flag_overdue(session: Session, settings: Settings, now: datetime | None = None) -> int:
    """Escalate each application not answered by its due date, once: mark it, tell the
    answering side and the platform admins (督办), audit it. Returns how many."""
    moment = _now(now)
    today = local_date(moment)
    apps = session.scalars(
        select(ShareApplication).where(
            ShareApplication.status.in_(ANSWERING),
            ShareApplication.due_at < today,
            ShareApplication.escalated_at.is_(None),
        )
    )
    flagged = 0
    for app in apps:
        assert app.due_at is not None
        if not is_overdue(today, app.due_at):
            continue
        app.escalated_at = moment
        _overdue_messages(session, app)
        record(
            session,
            None,  # the system
            "sharing.application.overdue",
            resource=f"application:{app.id}",
            subject_department=app.provider.code,
            items=app.items,
            purpose=app.purpose_kind,
            detail={"status": app.status, "due_at": app.due_at, "consumer": app.consumer.code, "entry": app.entry_code},
        )
        flagged += 1
    session.flush()
    return flagged


def _overdue_messages(session: Session, app: ShareApplication) -> None:
    assert app.due_at is not None
    key = f"overdue:{app.id}:{app.status}:{app.due_at.isoformat()}"
    ref = f"“{app.entry.name}”（申请 #{app.id}）"
    common: dict[str, Any] = {"link": notify.application_link(app.id), "application_id": app.id}
    stage = "符合性审查" if app.status == "compliance_review" else "答复"
    if app.status == "awaiting_provider":
        notify.notify_department(
            session,
            app.provider_id,
            "overdue",
            f"共享申请答复已逾期：{ref}",
            body=f"答复期限为{notify.cn_date(app.due_at)}，已逾期，已报平台管理员督办。请尽快答复。",
            dedupe_key=key + ":provider",
            **common,
        )
    notify.notify_platform_admins(
        session,
        "overdue",
        f"逾期督办：{ref}{stage}逾期",
        body=(f"提供方：{app.provider.name}；申请方：{app.consumer.name}；{stage}期限：{notify.cn_date(app.due_at)}。"),
        dedupe_key=key + ":platform",
        **common,
    )


# ---------------------------------------------------------------- catalog update deadline


def catalog_deadlines(session: Session, settings: Settings, now: datetime | None = None) -> int:
    """Entries whose data items changed must be updated by ``update_due_at``: remind the
    provider at 3 and 1 working days left and tell it once when overdue. Returns the
    number of inbox messages written."""
    today = local_date(_now(now))
    entries = session.scalars(select(CatalogEntry).where(CatalogEntry.update_due_at.is_not(None)))
    written = 0
    for entry in entries:
        due = entry.update_due_at
        assert due is not None
        link = f"/catalog/{entry.id}"
        if is_overdue(today, due):
            title = f"目录更新已逾期：“{entry.name}”"
            body = f"该信息资源的数据项已变更，须于{notify.cn_date(due)}前更新目录，现已逾期。"
            key = f"catalog_overdue:{entry.id}:{due.isoformat()}"
        else:
            left = _days_left(settings, today, due)
            if left is None:
                continue
            title = f"目录更新期限提醒：“{entry.name}”还剩 {left} 个工作日"
            body = f"该信息资源的数据项已变更，请于{notify.cn_date(due)}前更新目录。"
            key = f"catalog_reminder:{entry.id}:{due.isoformat()}:{left}"
        written += notify.notify_department(
            session, entry.provider_id, "catalog_update", title, body=body, link=link, dedupe_key=key
        )
    return written


# ---------------------------------------------------------------- grants and quotas


def expire_grants(session: Session, now: datetime | None = None) -> int:
    """Active grants whose last day (Beijing calendar) has passed become ``expired``."""
    moment = _now(now)
    today = local_date(moment)
    grants = list(
        session.scalars(
            select(Grant).where(Grant.status == "active", Grant.valid_to.is_not(None), Grant.valid_to < today)
        )
    )
    for grant in grants:
        grant.status = "expired"
        grant.status_reason = "有效期届满"
        grant.updated_at = moment
        session.add(
            ShareEvent(
                grant_id=grant.id,
                action="expire",
                from_status="active",
                to_status="expired",
                actor_id=None,
                actor_name=SYSTEM.username,
                reason="有效期届满",
                created_at=moment,
            )
        )
        session.flush()
        notify.grant_changed(session, grant, "expire", SYSTEM)
        record(
            session,
            None,
            "sharing.grant.expire",
            resource=grant.entry_code,
            subject_department=grant.provider.code,
            items=grant.items,
            purpose=grant.purpose_kind,
            grant_id=grant.id,
            detail={"from": "active", "to": "expired", "consumer": grant.consumer.code, "valid_to": grant.valid_to},
        )
    return len(grants)


def prune_quota_counters(session: Session, now: datetime | None = None) -> int:
    """Delete quota counters of windows older than two days: only the current minute and
    day are ever read (authorize.py keys windows ``YYYYMMDDHHMM`` and ``YYYYMMDD``)."""
    cutoff = (local_date(_now(now)) - timedelta(days=QUOTA_KEEP_DAYS)).strftime("%Y%m%d")
    # "YYYYMMDD" sorts before every "YYYYMMDDHHMM" of the same day, so one comparison
    # keeps both kinds of window from the cutoff day on.
    result = session.execute(
        delete(QuotaCounter).where(QuotaCounter.window_key < cutoff).execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


# ---------------------------------------------------------------- webhooks


def sign(secret: str, timestamp: str, body: str | bytes) -> str:
    """The value of ``X-Datatong-Signature`` for a body sent at ``timestamp``."""
    raw = body.encode() if isinstance(body, str) else body
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + raw, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_signature(
    secret: str, timestamp: str, body: str | bytes, header: str, *, max_age: int | None = 300, now: float | None = None
) -> bool:
    """For receivers: whether ``header`` signs ``body`` at ``timestamp`` under ``secret``
    (constant-time), and, unless ``max_age`` is None, the timestamp is within ``max_age``
    seconds of now (a replayed old delivery is refused)."""
    if max_age is not None:
        try:
            age = abs((now if now is not None else utcnow().timestamp()) - int(timestamp))
        except ValueError:
            return False
        if age > max_age:
            return False
    return hmac.compare_digest(sign(secret, timestamp, body), header or "")


def backoff(attempts: int) -> timedelta:
    """Wait after the ``attempts``-th failure: 1, 2, 4 … minutes, at most an hour."""
    return min(BACKOFF_FIRST * 2 ** max(attempts - 1, 0), BACKOFF_CAP)


@dataclass(frozen=True)
class _Claimed:
    id: int
    event: str
    payload: str
    url: str | None
    secret: str | None


def _claim(session: Session, settings: Settings, now: datetime, only: int | None) -> _Claimed | None:
    """Take one due delivery: pushing its next attempt past ``now`` in the same UPDATE
    that checks it is still due means two workers never both send it."""
    stmt = select(WebhookDelivery.id).where(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= now)
    if only is not None:
        stmt = stmt.where(WebhookDelivery.id == only)
    for delivery_id in session.scalars(stmt.order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id).limit(10)):
        taken = session.execute(
            update(WebhookDelivery)
            .where(
                WebhookDelivery.id == delivery_id,
                WebhookDelivery.status == "pending",
                WebhookDelivery.next_attempt_at <= now,
            )
            .values(next_attempt_at=now + DELIVERY_LEASE)
            .execution_options(synchronize_session=False)
        )
        if taken.rowcount == 1:  # type: ignore[attr-defined]
            delivery = session.get(WebhookDelivery, delivery_id)
            assert delivery is not None
            hook = session.get(DepartmentWebhook, delivery.department_id)
            secret = None
            if hook is not None:
                secret = unseal(hook.secret_sealed, aad=notify.webhook_aad(hook.department_id), settings=settings)
            return _Claimed(delivery.id, delivery.event, delivery.payload, hook.url if hook else None, secret)
    return None


def _post(claimed: _Claimed, now: datetime) -> str | None:
    """Send one delivery; None on a 2xx answer, else why not (never the secret)."""
    if claimed.url is None or claimed.secret is None:
        return "部门未配置 Webhook"
    timestamp = str(int(now.timestamp()))
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": f"Datatong-Webhook/{__version__}",
        "X-Datatong-Event": claimed.event,
        "X-Datatong-Delivery": str(claimed.id),
        "X-Datatong-Timestamp": timestamp,
        "X-Datatong-Signature": sign(claimed.secret, timestamp, claimed.payload),
    }
    try:
        r = httpx.post(claimed.url, content=claimed.payload.encode(), headers=headers, timeout=DELIVERY_TIMEOUT)
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"[:500]
    if 200 <= r.status_code < 300:
        return None
    return f"HTTP {r.status_code}"


def _settle(session: Session, claimed: _Claimed, error: str | None, now: datetime) -> bool:
    delivery = session.get(WebhookDelivery, claimed.id)
    assert delivery is not None
    delivery.attempts += 1
    delivery.last_error = error
    if error is None:
        delivery.status, delivery.delivered_at = "delivered", now
    elif claimed.url is None or delivery.attempts >= MAX_ATTEMPTS:
        delivery.status = "dead"
    else:
        delivery.next_attempt_at = now + backoff(delivery.attempts)
    if error is not None:
        log.warning("webhook delivery %s failed (attempt %s): %s", delivery.id, delivery.attempts, error)
    return error is None


def deliver_due(url: str, settings: Settings, now: datetime | None = None, *, limit: int = 100) -> int:
    """POST due deliveries (each claimed and settled in its own short transaction, so
    no transaction stays open across an HTTP call); returns how many succeeded."""
    moment = _now(now)
    delivered = 0
    for _ in range(limit):
        if (outcome := deliver_one(url, settings, None, moment)) is None:
            break
        delivered += outcome
    return delivered


def deliver_one(url: str, settings: Settings, delivery_id: int | None, now: datetime | None = None) -> bool | None:
    """Send one due delivery (``delivery_id`` or the next due); None when there was none."""
    moment = _now(now)
    with session_scope(url) as session:
        claimed = _claim(session, settings, moment, delivery_id)
    if claimed is None:
        return None
    error = _post(claimed, moment)
    with session_scope(url) as session:
        return _settle(session, claimed, error, moment)


# ---------------------------------------------------------------- running them


def run_all(url: str, settings: Settings, now: datetime | None = None) -> dict[str, int]:
    """Every job once, each in its own transaction (one failing does not undo the others);
    returns the count of each."""
    moment = _now(now)
    in_session: dict[str, Callable[[Session], int]] = {
        "expired_grants": lambda s: expire_grants(s, moment),
        "overdue": lambda s: flag_overdue(s, settings, moment),
        "reminders": lambda s: send_reminders(s, settings, moment),
        "catalog_deadlines": lambda s: catalog_deadlines(s, settings, moment),
        "quota_counters_pruned": lambda s: prune_quota_counters(s, moment),
    }
    counts: dict[str, int] = {}
    for name, job in in_session.items():
        try:
            with session_scope(url) as session:
                counts[name] = job(session)
        except Exception:  # the next run tries again; the other jobs still run
            log.exception("sharing job %s failed", name)
            counts[name] = -1
    try:
        counts["webhooks_delivered"] = deliver_due(url, settings, moment)
    except Exception:
        log.exception("webhook delivery failed")
        counts["webhooks_delivered"] = -1
    return counts


def job_interval() -> int:
    """Seconds between background runs: ``DATATONG_JOB_INTERVAL`` (0 turns them off)."""
    raw = os.environ.get("DATATONG_JOB_INTERVAL", "").strip()
    try:
        return max(0, int(raw)) if raw else JOB_INTERVAL_SECONDS
    except ValueError:
        return JOB_INTERVAL_SECONDS


def start_background(settings: Settings, interval: int | None = None) -> threading.Event | None:
    """Run ``run_all`` every ``interval`` seconds in a daemon thread (for ``datatong
    serve``); returns the event that stops it, or None when turned off."""
    seconds = job_interval() if interval is None else interval
    if seconds <= 0:
        return None
    stop = threading.Event()

    def loop() -> None:
        # The first run comes soon after start, so a restart does not delay reminders.
        wait = min(seconds, 30)
        while not stop.wait(wait):
            wait = seconds
            try:
                run_all(settings.database_url, settings)
            except Exception:  # never let the thread die: the next tick tries again
                log.exception("sharing jobs failed")

    threading.Thread(target=loop, name="sharing-jobs", daemon=True).start()
    return stop
