"""``authorize``: every refusal reason, masking, and quota counting under concurrency."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sharing_helpers import call, published, quota_worker, submitted, who
from sqlalchemy import select, text
from sqlalchemy import update as sa_update

from datatong.audit.service import record
from datatong.catalog.models import CatalogEntry
from datatong.db import session_scope
from datatong.sharing import authorize as authorize_module
from datatong.sharing import service
from datatong.sharing.authorize import REASONS, authorize, invalidate
from datatong.sharing.models import Grant, QuotaCounter
from datatong.sharing.service import Approval

NOW = datetime.now(UTC).replace(second=5, microsecond=0)


@pytest.fixture(autouse=True)
def fresh_caches() -> Iterator[None]:
    """Each test's database is reset by plain DELETEs (ids start again): forget what
    authorize() remembered of the previous one. ``NOW`` is taken again for each test:
    taken once at import, a test run after Beijing midnight made grants valid from a day
    later than ``NOW`` (CI saw ``expired``)."""
    global NOW
    NOW = datetime.now(UTC).replace(second=5, microsecond=0)
    invalidate(forget_leases=True)
    yield


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
    now: datetime | None = None,
    rows: int = 0,
) -> Any:
    with session_scope(settings.database_url) as s:
        return authorize(
            s,
            consumer=who(settings, username),
            entry=entry,
            items=list(items),
            purpose=purpose,
            now=now or NOW,
            rows=rows,
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


def _race(settings: Any, entry_code: str, per_process: int, rows: int = 1) -> tuple[int, int, int]:
    """Two processes call authorize ``per_process`` times each in the same minute, taking
    ``rows`` rows each time: the number allowed, the minute's and the day's counters."""
    ctx = multiprocessing.get_context("spawn")
    principal = who(settings, "mz_officer")
    now = NOW + timedelta(minutes=7)
    start_at = time.time() + 4  # both processes are up by then
    args = (settings.database_url, principal, entry_code, per_process, now, rows, start_at)
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
        day = s.scalar(
            select(QuotaCounter.n)
            .join(Grant, Grant.id == QuotaCounter.grant_id)
            .where(Grant.entry_code == entry_code, QuotaCounter.kind == "d")
        )
    return allowed, int(n or 0), int(day or 0)


def test_quota_counted_exactly_across_two_processes(client, settings):
    """Each process leases blocks of max(1, limit // 20) units and spends them locally:
    together they never pass the limit; at most a block per process goes unused."""
    per_process = 150
    entry, _ = granted(client, settings, calls_per_minute=200, rows_per_day=100_000)
    allowed, counted, rows = _race(settings, entry["code"], per_process)
    assert counted <= 200 and allowed <= 200  # never more than the quota
    assert allowed >= 200 - 2 * (200 // authorize_module.LEASE_FRACTION)
    assert allowed <= rows <= 100_000  # every allowed call's row was leased first
    entry2, _ = granted(client, settings, calls_per_minute=1000, rows_per_day=100_000)
    allowed, counted, rows = _race(settings, entry2["code"], per_process)
    assert allowed == 2 * per_process  # never a lost unit, never a wrong refusal
    assert 2 * per_process <= counted <= 1000


def test_rows_quota_leased_across_two_processes(client, settings):
    """Two processes taking 3 rows a call from a 400-row day: never more than 400 rows
    allowed in all, and no more than a lease block per process (plus one call) unused."""
    entry, _ = granted(client, settings, calls_per_minute=100_000, rows_per_day=400)
    allowed, _, rows = _race(settings, entry["code"], 150, rows=3)
    assert 3 * allowed <= rows <= 400
    assert 3 * allowed >= 400 - 2 * (400 // authorize_module.LEASE_FRACTION) - 3


def test_quota_leases_a_block_and_reports_use(client, settings):
    entry, grant_id = granted(client, settings, calls_per_minute=100, rows_per_day=1000)
    first = ask(settings, entry["code"], rows=7)
    second = ask(settings, entry["code"], rows=7)
    assert (first.calls_this_minute, first.rows_today) == (1, 7)
    assert (second.calls_this_minute, second.rows_today) == (2, 14)
    with session_scope(settings.database_url) as s:
        rows = s.execute(select(QuotaCounter.kind, QuotaCounter.n).where(QuotaCounter.grant_id == grant_id))
        counters = {kind: n for kind, n in rows}
    assert counters == {"m": 100 // 20, "d": 1000 // 20}  # one block each, spent from memory


def test_quota_counted_in_the_callers_write_transaction_on_sqlite(client, settings):
    """A caller already writing on SQLite (one writer) is counted exactly in its own
    transaction instead of leasing through a second connection (which would wait)."""
    entry, grant_id = granted(client, settings, calls_per_minute=100)
    with session_scope(settings.database_url) as s:
        s.execute(text("UPDATE department SET name = name WHERE id = -1"))  # begins a write
        d = authorize(s, consumer=who(settings, "mz_officer"), entry=entry["code"], items=[], purpose="verification")
        assert d.allowed and d.calls_this_minute == 1
    with session_scope(settings.database_url) as s:
        n = s.scalar(select(QuotaCounter.n).where(QuotaCounter.grant_id == grant_id, QuotaCounter.kind == "m"))
    assert n == (1 if settings.database_url.startswith("sqlite") else 100 // 20)


def _behind_the_orm(settings: Any, sql: str, **params: Any) -> None:
    """A change made as another process would: plain SQL, no ORM event in this one."""
    from datatong.db import engine_for

    with engine_for(settings.database_url).begin() as conn:
        conn.execute(text(sql), params)


def test_revocation_by_another_process_is_honoured_within_a_second(client, settings):
    entry, grant_id = granted(client, settings)
    assert ask(settings, entry["code"]).allowed
    assert ask(settings, entry["code"]).allowed  # warm: answered from memory
    _behind_the_orm(
        settings,
        "UPDATE share_grant SET status = 'revoked', updated_at = :t WHERE id = :g",
        t=datetime.now(UTC),
        g=grant_id,
    )
    assert ask(settings, entry["code"]).allowed  # not read again yet: the cache is in use
    time.sleep(authorize_module.REFRESH_SECONDS + 0.1)
    assert ask(settings, entry["code"]).reason == "revoked"
    # An entry withdrawn elsewhere (its modified_at stamped) likewise.
    entry2, _ = granted(client, settings)
    assert ask(settings, entry2["code"]).allowed
    _behind_the_orm(
        settings,
        "UPDATE catalog_entry SET status = 'revoked', modified_at = :t WHERE code = :c",
        t=datetime.now(UTC),
        c=entry2["code"],
    )
    time.sleep(authorize_module.REFRESH_SECONDS + 0.1)
    assert ask(settings, entry2["code"]).reason == "not_shareable"


def test_invalidate_takes_effect_at_once(client, settings):
    entry, grant_id = granted(client, settings)
    assert ask(settings, entry["code"]).allowed
    _behind_the_orm(settings, "UPDATE share_grant SET status = 'suspended' WHERE id = :g", g=grant_id)
    assert ask(settings, entry["code"]).allowed  # unstamped, unseen so far
    invalidate()
    assert ask(settings, entry["code"]).reason == "suspended"


def test_a_statement_through_the_session_takes_effect_at_once(client, settings):
    """An UPDATE statement on grants through the ORM session (no ORM object changed, no
    stamp) is honoured by the very next call in this process."""
    entry, grant_id = granted(client, settings)
    assert ask(settings, entry["code"]).allowed
    assert ask(settings, entry["code"]).allowed  # warm: answered from memory
    with session_scope(settings.database_url) as s:
        s.execute(sa_update(Grant).where(Grant.id == grant_id).values(status="suspended"))
    assert ask(settings, entry["code"]).reason == "suspended"


def test_unstamped_change_is_seen_after_the_maximum_age(client, settings, monkeypatch):
    entry, grant_id = granted(client, settings)
    monkeypatch.setattr(authorize_module, "MAX_AGE_SECONDS", 0.3)
    assert ask(settings, entry["code"]).allowed
    _behind_the_orm(settings, "UPDATE share_grant SET status = 'revoked' WHERE id = :g", g=grant_id)
    time.sleep(0.4)
    assert ask(settings, entry["code"]).reason == "revoked"


MOVE = (
    "UPDATE share_grant SET consumer_id = (SELECT id FROM department WHERE code = :code), updated_at = :t WHERE id = :g"
)


def test_new_grant_from_another_process_is_seen(client, settings):
    """A refusal is cached too (no grant yet); a grant made elsewhere ends it within the bound."""
    entry, grant_id = granted(client, settings)
    _behind_the_orm(settings, MOVE, code="SJ", t=datetime.now(UTC) - timedelta(hours=1), g=grant_id)
    invalidate()
    assert ask(settings, entry["code"]).reason == "no_grant"
    _behind_the_orm(
        settings,
        MOVE,
        code="MZ",
        t=datetime.now(UTC),
        g=grant_id,
    )
    time.sleep(authorize_module.REFRESH_SECONDS + 0.1)
    assert ask(settings, entry["code"]).allowed
