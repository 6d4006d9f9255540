"""Demo sharing data: applications in every state of their life cycle (overdue ones too),
grants in every status, a 不予共享 coordination case, so that a new user sees the whole
of sharing on the first visit.

Everything goes through the service functions (the same rules as the API), with ``now``
set in the past so that deadlines, reminders and overdue flags are real. 民政局's data
officer (``mz_officer``) is the consumer; 公安局 (``ga_officer``) answers most
applications, so each demo account has work waiting.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from datatong.catalog.models import CatalogEntry
from datatong.orgs.models import User
from datatong.orgs.service import Principal, principal_for
from datatong.sharing import service
from datatong.sharing.service import Approval

PURPOSES = [
    ("verification", "最低生活保障对象家庭经济状况核对", "《社会救助暂行办法》第十一条"),
    ("administrative_basis", "特困人员供养资格认定", "《特困人员认定办法》第十条"),
    ("collaboration", "婚姻登记“跨省通办”身份核验", "《婚姻登记条例》第五条"),
    ("work_reference", "养老服务补贴对象年度复核", "《关于建立健全养老服务综合监管制度的指导意见》"),
    ("verification", "临时救助申请人身份核实", "《社会救助暂行办法》第四十七条"),
]


@dataclass
class Cast:
    consumer: Principal
    provider: Principal
    provider_admin: Principal
    admin: Principal


def _principal(session: Session, username: str) -> Principal:
    user = session.scalar(select(User).where(User.username == username))
    assert user is not None, f"demo user {username} missing"
    return principal_for(user)


def _entries(session: Session, provider_code: str, share_type: str, limit: int) -> list[CatalogEntry]:
    stmt = (
        select(CatalogEntry)
        .where(
            CatalogEntry.provider_code == provider_code,
            CatalogEntry.share_type == share_type,
            CatalogEntry.status == "published",
        )
        .order_by(CatalogEntry.id)
        .limit(limit)
    )
    return list(session.scalars(stmt).unique())


def _apply(
    session: Session, settings: Any, cast: Cast, entry: CatalogEntry, n: int, when: datetime, *, submit: bool = True
) -> int:
    kind, purpose, basis = PURPOSES[n % len(PURPOSES)]
    items = [i.name for i in entry.items][:4]
    start = when.date()
    app = service.create_application(
        session,
        cast.consumer,
        entry_id=entry.id,
        purpose_kind=kind,
        purpose=purpose,
        legal_basis=basis,
        items=items,
        period_start=start,
        period_end=date(start.year + 1, 12, 31),
        rows_per_day=[500, 2000, 10000][n % 3],
        calls_per_minute=[30, 60, 120][n % 3],
        system_name=["社会救助信息系统", "婚姻登记系统", "养老服务管理平台"][n % 3],
        now=when,
    )
    if submit:
        service.submit(session, settings, cast.consumer, app.id, accept_commitment=True, now=when)
    return app.id


def seed_sharing(session: Session, settings: Any, now: datetime | None = None) -> dict[str, int]:
    """Seed the demo's sharing life cycle; returns counts by application status."""
    now = now or datetime.now(UTC)
    cast = Cast(
        consumer=_principal(session, "mz_officer"),
        provider=_principal(session, "ga_officer"),
        provider_admin=_principal(session, "ga_admin"),
        admin=_principal(session, "admin"),
    )
    conditional = _entries(session, "QYGA", "conditional", 12)
    if len(conditional) < 10:
        return {}
    days = lambda n: now - timedelta(days=n)  # noqa: E731 - a readable local shorthand
    ids: dict[str, int] = {}
    p, pa, c, a = cast.provider, cast.provider_admin, cast.consumer, cast.admin

    ids["draft"] = _apply(session, settings, cast, conditional[0], 0, days(1), submit=False)
    # Waiting for 公安局: one fresh, one with a day left (reminder), one overdue.
    ids["awaiting_provider"] = _apply(session, settings, cast, conditional[1], 1, days(2))
    ids["awaiting_provider_due_soon"] = _apply(session, settings, cast, conditional[2], 2, days(12))
    ids["overdue"] = _apply(session, settings, cast, conditional[3], 3, days(24))
    # Decided ones.
    ids["approved"] = _apply(session, settings, cast, conditional[4], 4, days(40))
    service.decide(session, p, ids["approved"], decision="approve", reason="同意，按申请范围提供", now=days(35))
    ids["partially_approved"] = _apply(session, settings, cast, conditional[5], 5, days(30))
    app = service.get_application(session, p, ids["partially_approved"])
    narrowed = Approval(items=app.items[:2], rows_per_day=max(1, app.rows_per_day // 2))
    service.decide(
        session,
        p,
        app.id,
        decision="partial",
        reason="仅提供核验所需信息项，数据量减半",
        approval=narrowed,
        now=days(26),
    )
    ids["rejected"] = _apply(session, settings, cast, conditional[6], 6, days(20))
    service.decide(session, p, ids["rejected"], decision="reject", reason="申请用途与所需信息项不对应", now=days(15))
    ids["withdrawn"] = _apply(session, settings, cast, conditional[7], 7, days(9))
    service.withdraw(session, c, ids["withdrawn"], "业务调整，暂不需要")
    ids["negotiation"] = _apply(session, settings, cast, conditional[8], 8, days(22))
    service.decide(
        session, pa, ids["negotiation"], decision="reject", reason="涉及个人隐私，需进一步论证", now=days(18)
    )
    service.negotiate(session, c, ids["negotiation"], "已补充法律依据，请再次研究")
    ids["coordination"] = _apply(session, settings, cast, conditional[9], 9, days(28))
    service.decide(session, p, ids["coordination"], decision="reject", reason="无法律依据", now=days(25))
    service.negotiate(session, c, ids["coordination"], "请提供方说明不同意的依据")
    service.escalate(session, c, ids["coordination"], "协商未果，提请平台协调")
    if len(conditional) > 10:
        ids["rejection_upheld"] = _apply(session, settings, cast, conditional[10], 10, days(45))
        service.decide(session, p, ids["rejection_upheld"], decision="reject", reason="涉密", now=days(40))
        service.negotiate(session, c, ids["rejection_upheld"], "请协商")
        service.escalate(session, c, ids["rejection_upheld"], "协商未果")
        service.coordinate(session, a, ids["rejection_upheld"], decision="uphold", reason="经协调，维持不予提供")
    _compliance_review(session, settings, cast, conditional, ids, days(1))
    _grants(session, cast, ids)
    _unconditional_and_cases(session, cast)
    _needs(session, settings, cast, now)
    return ids


def _needs(session: Session, settings: Any, cast: Cast, now: datetime) -> None:
    """供需对接: one need waiting for routing, one routed (overdue), one answered, one closed."""
    from datatong.sharing import needs

    def post(title: str, items: list[str], when: datetime) -> int:
        return needs.post_need(
            session,
            cast.consumer,
            title=title,
            description=f"{title}，用于社会救助对象精准认定。",
            items=items,
            purpose_kind="verification",
            purpose="社会救助家庭经济状况核对",
            now=when,
        ).id

    post("不动产登记权属信息", ["权利人", "身份证号", "不动产坐落", "登记日期"], now - timedelta(days=2))
    late = post("住房公积金缴存信息", ["身份证号", "姓名", "缴存基数", "缴存状态"], now - timedelta(days=30))
    needs.route(session, settings, cast.admin, late, department_code="QYZJ", now=now - timedelta(days=29))
    answered = post("机动车登记信息（按身份证号）", ["身份证号", "号牌号码", "车辆类型"], now - timedelta(days=20))
    needs.route(session, settings, cast.admin, answered, department_code="QYGA", now=now - timedelta(days=19))
    needs.answer(
        session,
        cast.provider,
        answered,
        answer="will_publish",
        text="已纳入本季度编目计划",
        now=now - timedelta(days=15),
    )
    closed = post("户籍人口基本信息", ["身份证号", "姓名", "户籍地址"], now - timedelta(days=50))
    conditional = _entries(session, "QYGA", "conditional", 1)
    if conditional:
        needs.close(session, cast.consumer, closed, entry_id=conditional[0].id, reason="目录中已有，直接申请")


def _compliance_review(
    session: Session, settings: Any, cast: Cast, entries: list[CatalogEntry], ids: dict[str, int], when: datetime
) -> None:
    """One application waiting in 符合性审查 (the switch is turned back off afterwards)."""
    before = service.compliance_review_on(session, settings)
    service.set_compliance_review(session, cast.admin, True)
    entry = entries[11] if len(entries) > 11 else entries[0]
    ids["compliance_review"] = _apply(session, settings, cast, entry, 11, when)
    service.set_compliance_review(session, cast.admin, before)


def _grants(session: Session, cast: Cast, ids: dict[str, int]) -> None:
    """The approved grant stays active; the partial one is suspended for a check."""
    app = service.get_application(session, cast.provider, ids["partially_approved"])
    if app.grant_id:
        service.change_grant(session, cast.provider_admin, app.grant_id, "suspend", "核查调用异常，暂停使用")


def _unconditional_and_cases(session: Session, cast: Cast) -> None:
    """民政局 takes an unconditional grant of 大数据局's data and opens a 不予共享 case."""
    from datatong.sharing import cases

    for entry in _entries(session, "QYDSJ", "unconditional", 1):
        service.request_unconditional_grant(
            session, cast.consumer, entry_id=entry.id, purpose_kind="work_reference", purpose="政务服务事项梳理"
        )
    for entry in _entries(session, "QYGA", "none", 1):
        cases.open_case(
            session,
            cast.consumer,
            entry_id=entry.id,
            duty="核查救助对象是否存在违法犯罪记录以确定救助资格",
            legal_basis="《社会救助暂行办法》第五十条",
        )
