"""``authorize``: every refusal reason, masking, and quota counting under concurrency."""

from __future__ import annotations

import multiprocessing
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sharing_helpers import call, published, quota_worker, submitted, who
from sqlalchemy import select

from datatong.audit.service import record
from datatong.catalog.models import CatalogEntry
from datatong.db import session_scope
from datatong.sharing import service
from datatong.sharing.authorize import REASONS, authorize
from datatong.sharing.models import Grant, QuotaCounter
from datatong.sharing.service import Approval

NOW = datetime.now(UTC).replace(second=5, microsecond=0)


def granted(client: Any, settings: Any, *, clear: tuple[str, ...] = (), **overrides: Any) -> tuple[dict[str, Any], int]:
    """A published GA entry and an approved grant of it to 民政局."""
    entry = published(client)
    app_id = submitted(settings, entry["id"], **overrides)
    app = call(
        settings,
        service.decide,
        who(settings, "ga_admin"),
        app_id,
        decision="approve",
        approval=Approval(clear_items=clear),
    )
    return entry, int(app.grant_id)


def ask(
    settings: Any,
    entry: Any,
    *,
    username: str = "mz_officer",
    items: Any = ("身份证号",),
    purpose: str = "verification",
    now: datetime = NOW,
    rows: int = 0,
) -> Any:
    with session_scope(settings.database_url) as s:
        return authorize(
            s, consumer=who(settings, username), entry=entry, items=list(items), purpose=purpose, now=now, rows=rows
        )


def test_allowed_with_masking_of_sensitive_items(client, settings):
    entry, grant_id = granted(client, settings, items=["身份证号", "姓名", "出生日期"], clear=("姓名",))
    d = ask(settings, entry["code"], items=["身份证号", "姓名", "出生日期"], rows=10)
    assert d.allowed and d.reason is None and d.grant_id == grant_id
    assert d.items == ["身份证号", "姓名", "出生日期"]
    assert d.masked_items == ["身份证号"]  # 姓名 is granted in clear, 出生日期 is not sensitive
    assert d.mask_kinds == {"身份证号": "id_card"}
    assert d.provider_code == "GA" and d.consumer_code == "MZ" and d.rows == 10
    # Empty items: everything the grant allows.
    assert ask(settings, entry["code"], items=[]).items == ["身份证号", "姓名", "出生日期"]


def test_decision_carries_what_the_audit_needs(client, settings):
    entry, grant_id = granted(client, settings)
    d = ask(settings, entry["code"], rows=3)
    fields = d.audit_fields()
    assert fields["grant_id"] == grant_id and fields["outcome"] == "allowed" and fields["subject_department"] == "GA"
    refused = ask(settings, entry["code"], purpose="collaboration").audit_fields()
    assert refused["outcome"] == "refused" and refused["reason"] == "purpose_mismatch"
    with session_scope(settings.database_url) as s:
        record(s, who(settings, "mz_officer"), "exchange.query", **fields)  # accepted as it is


def test_no_grant(client, settings):
    entry = published(client)
    d = ask(settings, entry["code"])
    assert not d.allowed and d.reason == "no_grant" and d.message == REASONS["no_grant"]
    assert ask(settings, "NO-SUCH-CODE").reason == "no_grant"
    entry2, _ = granted(client, settings)
    # Another department has no grant, nor does a system of the grantee when the grant is
    # bound to another system... and a user cannot use a grant bound to a system.
    assert ask(settings, entry2["code"], username="auditor").reason == "no_grant"


def test_grant_bound_to_a_system_serves_only_that_system(client, settings):
    entry, _ = granted(client, settings, client_id="dt_mz_system")
    assert ask(settings, entry["code"], username="client").allowed
    assert ask(settings, entry["code"], username="mz_officer").reason == "no_grant"


def test_not_shareable(client, settings):
    entry = published(client, "none")
    assert ask(settings, entry["code"]).reason == "not_shareable"
    # A granted entry later taken out of the published catalog serves nobody.
    granted_entry, _ = granted(client, settings)
    assert ask(settings, granted_entry["code"]).allowed
    with session_scope(settings.database_url) as s:
        s.get(CatalogEntry, granted_entry["id"]).status = "revoked"
    assert ask(settings, granted_entry["code"]).reason == "not_shareable"


def test_expired_and_not_yet_valid(client, settings):
    start = date.today() + timedelta(days=10)
    entry, _ = granted(client, settings, period_start=start, period_end=start + timedelta(days=5))
    assert ask(settings, entry["code"]).reason == "expired"  # not yet valid
    inside = datetime.combine(start + timedelta(days=1), NOW.time(), tzinfo=UTC)
    assert ask(settings, entry["code"], now=inside).allowed
    after = datetime.combine(start + timedelta(days=6), NOW.time(), tzinfo=UTC)
    assert ask(settings, entry["code"], now=after).reason == "expired"


def test_validity_runs_in_beijing_calendar_days(client, settings):
    start = date.today() + timedelta(days=10)
    entry, _ = granted(client, settings, period_start=start, period_end=start + timedelta(days=5))
    eve = datetime.combine(start - timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    # 15:00 UTC is 23:00 in Beijing, still the day before; 17:00 UTC is 01:00 on the first day.
    assert ask(settings, entry["code"], now=eve.replace(hour=15)).reason == "expired"
    assert ask(settings, entry["code"], now=eve.replace(hour=17)).allowed


def test_item_not_granted(client, settings):
    entry, _ = granted(client, settings, items=["姓名"])
    d = ask(settings, entry["code"], items=["姓名", "身份证号"])
    assert d.reason == "item_not_granted" and not d.allowed


def test_purpose_mismatch(client, settings):
    entry, _ = granted(client, settings)
    assert ask(settings, entry["code"], purpose="collaboration").reason == "purpose_mismatch"


def test_suspended_and_revoked(client, settings):
    entry, grant_id = granted(client, settings)
    ga = who(settings, "ga_admin")
    call(settings, service.change_grant, ga, grant_id, "suspend", "核查")
    assert ask(settings, entry["code"]).reason == "suspended"
    call(settings, service.change_grant, ga, grant_id, "resume")
    assert ask(settings, entry["code"]).allowed
    call(settings, service.change_grant, ga, grant_id, "revoke", "违规")
    assert ask(settings, entry["code"]).reason == "revoked"


def test_over_quota_calls_per_minute(client, settings):
    entry, grant_id = granted(client, settings, calls_per_minute=3)
    assert [ask(settings, entry["code"]).allowed for _ in range(4)] == [True, True, True, False]
    assert ask(settings, entry["code"]).reason == "over_quota"
    assert ask(settings, entry["code"], now=NOW + timedelta(minutes=1)).allowed  # a new minute


def test_over_quota_rows_per_day(client, settings):
    entry, grant_id = granted(client, settings, rows_per_day=100)
    assert ask(settings, entry["code"], rows=60).allowed
    d = ask(settings, entry["code"], rows=50)
    assert d.reason == "over_quota"
    assert ask(settings, entry["code"], rows=40).rows_today == 100
    assert ask(settings, entry["code"], rows=1).reason == "over_quota"
    assert ask(settings, entry["code"], rows=1, now=NOW + timedelta(days=1)).allowed


def test_refused_call_does_not_spend_rows(client, settings):
    entry, grant_id = granted(client, settings, rows_per_day=100, calls_per_minute=1)
    assert ask(settings, entry["code"], rows=10).allowed
    assert ask(settings, entry["code"], rows=10).reason == "over_quota"  # the minute is full
    with session_scope(settings.database_url) as s:
        day = s.scalar(select(QuotaCounter.n).where(QuotaCounter.grant_id == grant_id, QuotaCounter.kind == "d"))
    assert day == 10


def test_unconditional_grant_is_used_by_authorize(client, settings):
    entry = published(client, "unconditional")
    call(
        settings,
        service.request_unconditional_grant,
        who(settings, "mz_officer"),
        entry["id"],
        purpose_kind="work_reference",
    )
    d = ask(settings, entry["code"], items=[], purpose="work_reference", rows=10_000)
    assert d.allowed and set(d.masked_items) == {"身份证号", "姓名"}


def _race(settings: Any, entry_code: str, per_process: int) -> tuple[int, int]:
    """Two processes call authorize ``per_process`` times each in the same minute; the
    number allowed and the minute's counter."""
    ctx = multiprocessing.get_context("spawn")
    principal = who(settings, "mz_officer")
    now = NOW + timedelta(minutes=7)
    start_at = time.time() + 4  # both processes are up by then
    args = (settings.database_url, principal, entry_code, per_process, now, 1, start_at)
    with ctx.Pool(2) as pool:
        results = pool.starmap(quota_worker, [args, args])
    allowed = sum(sum(r) for r in results)
    with session_scope(settings.database_url) as s:
        n = s.scalar(
            select(QuotaCounter.n)
            .join(Grant, Grant.id == QuotaCounter.grant_id)
            .where(
                Grant.entry_code == entry_code,
                QuotaCounter.kind == "m",
                QuotaCounter.window_key == now.strftime("%Y%m%d%H%M"),
            )
        )
        rows = s.scalar(
            select(QuotaCounter.n)
            .join(Grant, Grant.id == QuotaCounter.grant_id)
            .where(Grant.entry_code == entry_code, QuotaCounter.kind == "d")
        )
    assert rows == n  # one row per allowed call, none spent by refused ones
    return allowed, int(n or 0)


def test_quota_counted_exactly_across_two_processes(client, settings):
    per_process = 150
    entry, _ = granted(client, settings, calls_per_minute=200, rows_per_day=100_000)
    allowed, counted = _race(settings, entry["code"], per_process)
    assert allowed == counted == 200  # never more than the quota
    entry2, _ = granted(client, settings, calls_per_minute=1000, rows_per_day=100_000)
    allowed, counted = _race(settings, entry2["code"], per_process)
    assert allowed == counted == 2 * per_process  # never a lost update
