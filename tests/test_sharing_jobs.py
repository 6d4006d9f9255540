"""Scheduled jobs: reminders at 3 and 1 working days left (across 国庆 2025 and its 调休
days), overdue escalation once, grant expiry on the Beijing calendar day, quota counter
pruning, the catalog update deadline, and the command that runs them all."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

from conftest import auth
from sharing_helpers import WithReview, application_fields, call, published, who
from sqlalchemy import select, update

from datatong.audit.models import AuditRecord
from datatong.catalog.models import CatalogEntry
from datatong.db import session_scope
from datatong.sharing import jobs, service
from datatong.sharing.models import (
    Grant,
    InboxMessage,
    QuotaCounter,
    ShareApplication,
    ShareEvent,
    WebhookDelivery,
)


def at(day: date, hour_utc: int = 1) -> datetime:
    """A moment on ``day`` in Beijing (01:00 UTC is 09:00 Beijing)."""
    return datetime(day.year, day.month, day.day, hour_utc, tzinfo=UTC)


def days(start: date, end: date) -> list[date]:
    return [start + timedelta(n) for n in range((end - start).days + 1)]


def submit_on(settings: Any, entry_id: int, day: date, conf: Any = None) -> int:
    mz = who(settings, "mz_officer")
    app = call(settings, service.create_application, mz, **application_fields(entry_id))
    call(settings, service.submit, conf or settings, mz, app.id, accept_commitment=True, now=at(day))
    return int(app.id)


def messages(settings: Any, username: str, kind: str | None = None) -> list[InboxMessage]:
    uid = who(settings, username).id
    with session_scope(settings.database_url) as s:
        stmt = select(InboxMessage).where(InboxMessage.user_id == uid).order_by(InboxMessage.id)
        if kind:
            stmt = stmt.where(InboxMessage.kind == kind)
        return list(s.scalars(stmt))


def audit_count(settings: Any, action: str) -> int:
    with session_scope(settings.database_url) as s:
        return len(s.scalars(select(AuditRecord.actor).where(AuditRecord.action == action)).all())


# ---------------------------------------------------------------- reminders and overdue


def test_reminders_at_3_and_1_working_days_across_national_day(client, settings):
    r = client.put("/api/v1/sharing/webhooks/GA", json={"url": "http://127.0.0.1:9/"}, headers=auth(client, "ga_admin"))
    assert r.status_code == 200
    entry = published(client)
    # Submitted Monday 2025-09-22: ten working days skip 国庆 (10-01…10-08) and count the
    # 调休 Sunday 09-28 and Saturday 10-11, so the provider must answer by 10-11.
    app_id = submit_on(settings, entry["id"], date(2025, 9, 22))
    with session_scope(settings.database_url) as s:
        assert s.get(ShareApplication, app_id).due_at == date(2025, 10, 11)  # type: ignore[union-attr]

    sent: dict[date, int] = {}
    for day in days(date(2025, 9, 22), date(2025, 10, 11)):
        for _ in range(2):  # a second run the same day sends nothing more
            n = call(settings, jobs.send_reminders, settings, at(day))
            if n:
                sent[day] = sent.get(day, 0) + n
    # 3 left on 09-30 (10-09, 10-10, 10-11), 1 left on 10-10; nothing during the holiday.
    assert sent == {date(2025, 9, 30): 2, date(2025, 10, 10): 2}  # GA's admin and officer
    reminders = messages(settings, "ga_officer", "reminder")
    assert ["还剩 3 个工作日" in reminders[0].title, "还剩 1 个工作日" in reminders[1].title] == [True, True]
    assert reminders[0].link == f"/sharing/applications/{app_id}" and "2025年10月11日" in (reminders[0].body or "")
    assert messages(settings, "mz_officer", "reminder") == [] and messages(settings, "admin", "reminder") == []
    with session_scope(settings.database_url) as s:  # one webhook delivery per reminder too
        events = s.scalars(select(WebhookDelivery.event).order_by(WebhookDelivery.id)).all()
        assert events == ["application_new", "reminder", "reminder"]


def test_reminder_on_a_make_up_sunday_goes_to_the_platform_admin_in_review(client, settings):
    entry = published(client)
    # 符合性审查 takes 2 working days: submitted Friday 09-26, due Monday 09-29, with the
    # 调休 Sunday 09-28 as working day 1, which is therefore the "1 day left" day.
    app_id = submit_on(settings, entry["id"], date(2025, 9, 26), WithReview(settings))
    with session_scope(settings.database_url) as s:
        assert s.get(ShareApplication, app_id).due_at == date(2025, 9, 29)  # type: ignore[union-attr]
    assert call(settings, jobs.send_reminders, settings, at(date(2025, 9, 27))) == 0  # Saturday off
    assert call(settings, jobs.send_reminders, settings, at(date(2025, 9, 28))) == 1
    [reminder] = messages(settings, "admin", "reminder")
    assert "还剩 1 个工作日" in reminder.title
    assert messages(settings, "ga_admin", "reminder") == []


def test_overdue_is_flagged_once_and_reaches_the_platform_admin(client, settings):
    entry = published(client)
    app_id = submit_on(settings, entry["id"], date(2025, 9, 22))  # due 2025-10-11
    assert call(settings, jobs.flag_overdue, settings, at(date(2025, 10, 11), 15)) == 0  # 23:00 on the due day
    assert call(settings, jobs.flag_overdue, settings, at(date(2025, 10, 11), 16)) == 1  # Beijing midnight
    for day in (date(2025, 10, 12), date(2025, 10, 20)):
        assert jobs.run_all(settings.database_url, settings, at(day))["overdue"] == 0
    with session_scope(settings.database_url) as s:
        app = s.get(ShareApplication, app_id)
        assert app is not None and app.escalated_at is not None and app.status == "awaiting_provider"
    [board] = messages(settings, "admin", "overdue")
    assert "逾期" in board.title and board.application_id == app_id
    assert len(messages(settings, "ga_admin", "overdue")) == 1
    assert messages(settings, "mz_officer", "overdue") == []
    assert audit_count(settings, "sharing.application.overdue") == 1
    # After the due date no reminder is sent any more.
    assert call(settings, jobs.send_reminders, settings, at(date(2025, 10, 13))) == 0
    # The platform admin finds it on the board (the admin's inbox through the API).
    r = client.get("/api/v1/inbox", params={"unread_only": True}, headers=auth(client, "admin"))
    assert [m["kind"] for m in r.json()["items"]] == ["overdue"]


def test_answered_applications_are_not_flagged(client, settings):
    entry = published(client)
    app_id = submit_on(settings, entry["id"], date(2025, 9, 22))
    call(settings, service.decide, who(settings, "ga_admin"), app_id, decision="reject", reason="不符合条件")
    assert call(settings, jobs.flag_overdue, settings, at(date(2025, 11, 1))) == 0
    assert call(settings, jobs.send_reminders, settings, at(date(2025, 10, 10))) == 0


# ---------------------------------------------------------------- grants and quotas


def _grant(client: Any, settings: Any) -> int:
    entry = published(client)
    mz = who(settings, "mz_officer")
    app = call(settings, service.create_application, mz, **application_fields(entry["id"]))
    call(settings, service.submit, settings, mz, app.id, accept_commitment=True)
    return int(call(settings, service.decide, who(settings, "ga_admin"), app.id, decision="approve").grant_id)


def test_grants_expire_after_their_last_beijing_day(client, settings):
    grant_id = _grant(client, settings)
    with session_scope(settings.database_url) as s:
        s.execute(update(Grant).where(Grant.id == grant_id).values(valid_to=date(2025, 10, 7)))
    assert call(settings, jobs.expire_grants, at(date(2025, 10, 7), 15)) == 0  # 23:00 Beijing, last day
    assert call(settings, jobs.expire_grants, at(date(2025, 10, 7), 16)) == 1  # 00:00 Beijing, 10-08
    assert call(settings, jobs.expire_grants, at(date(2025, 10, 9))) == 0
    with session_scope(settings.database_url) as s:
        grant = s.get(Grant, grant_id)
        assert grant is not None and grant.status == "expired"
        event = s.scalars(
            select(ShareEvent).where(ShareEvent.grant_id == grant_id).order_by(ShareEvent.id.desc())
        ).first()
        assert event is not None and (event.action, event.from_status, event.to_status) == (
            "expire",
            "active",
            "expired",
        )
        assert event.actor_name == "system"
    assert audit_count(settings, "sharing.grant.expire") == 1
    expired = messages(settings, "mz_officer", "grant_changed")
    assert len(expired) == 1 and "到期" in expired[0].title and expired[0].grant_id == grant_id


def test_old_quota_counters_are_pruned(client, settings):
    grant_id = _grant(client, settings)
    keys = [("d", "20251005"), ("d", "20251006"), ("d", "20251008"), ("m", "202510051200"), ("m", "202510060001")]
    with session_scope(settings.database_url) as s:
        s.add_all(QuotaCounter(grant_id=grant_id, kind=k, window_key=w, n=1) for k, w in keys)
    assert call(settings, jobs.prune_quota_counters, at(date(2025, 10, 8))) == 2
    with session_scope(settings.database_url) as s:
        left = sorted(s.scalars(select(QuotaCounter.window_key)))
    assert left == ["20251006", "202510060001", "20251008"]


# ---------------------------------------------------------------- catalog update deadline


def test_catalog_update_deadline_reminds_and_flags_once(client, settings):
    entry = published(client)
    with session_scope(settings.database_url) as s:
        s.execute(update(CatalogEntry).where(CatalogEntry.id == entry["id"]).values(update_due_at=date(2025, 10, 11)))
    assert call(settings, jobs.catalog_deadlines, settings, at(date(2025, 9, 29))) == 0
    for _ in range(2):
        assert call(settings, jobs.catalog_deadlines, settings, at(date(2025, 9, 30))) in (2, 0)
    assert call(settings, jobs.catalog_deadlines, settings, at(date(2025, 10, 12))) == 2
    assert call(settings, jobs.catalog_deadlines, settings, at(date(2025, 10, 13))) == 0
    titles = [m.title for m in messages(settings, "ga_admin", "catalog_update")]
    assert len(titles) == 2 and "还剩 3 个工作日" in titles[0] and "已逾期" in titles[1]


# ---------------------------------------------------------------- running them


def test_run_all_counts_and_the_command(client, settings, monkeypatch):
    counts = jobs.run_all(settings.database_url, settings)
    assert set(counts) == {
        "expired_grants",
        "overdue",
        "reminders",
        "catalog_deadlines",
        "quota_counters_pruned",
        "webhooks_delivered",
    }
    assert all(v >= 0 for v in counts.values())

    from typer.testing import CliRunner

    from datatong.cli import app
    from datatong.settings import get_settings

    monkeypatch.setenv("DATATONG_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("DATATONG_VAR_DIR", str(settings.var_dir))
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["sharing", "run-jobs"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.stdout.strip().splitlines()[-1])) == set(counts)


def test_job_interval_from_the_environment(monkeypatch):
    monkeypatch.delenv("DATATONG_JOB_INTERVAL", raising=False)
    assert jobs.job_interval() == jobs.JOB_INTERVAL_SECONDS == 300
    monkeypatch.setenv("DATATONG_JOB_INTERVAL", "0")
    assert jobs.job_interval() == 0
    assert jobs.start_background(settings=None) is None  # type: ignore[arg-type]
    monkeypatch.setenv("DATATONG_JOB_INTERVAL", "60")
    assert jobs.job_interval() == 60
