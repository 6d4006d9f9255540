"""不予共享 coordination cases (协调).

A 不予共享 entry has no path to a grant. A department that needs its data to perform its
duties opens a case stating the duty and its legal basis; the platform admin — who alone
sees the entry's no-share basis (不予共享依据) — coordinates with the provider and either
upholds the classification (``upheld``) or refers it back to the provider, which then
re-classifies the entry (``referred``: the entry becomes 有条件共享 through the catalog's
normal edit and review, after which the consumer applies as usual).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from datatong.audit.service import record
from datatong.catalog.models import CatalogEntry
from datatong.db import get_by_id, utcnow
from datatong.errors import AppError, Forbidden, NotFound, invalid
from datatong.orgs.models import Role
from datatong.orgs.service import Principal, require_platform_admin, require_role
from datatong.sharing import notify
from datatong.sharing.models import CASE_STATUSES, CoordinationCase
from datatong.sharing.service import DEPT_ROLES, _check_items, _published_entry, _reason

RESOLUTIONS = ("upheld", "referred")


def _text(value: str | None, field: str, zh: str, en: str) -> str:
    text = (value or "").strip()
    if not text:
        raise invalid("sharing.case_field_required", f"请填写{zh}", f"{en} is required", field)
    return text


def check_can_open(entry: CatalogEntry, principal: Principal) -> None:
    """A case is only for another department's 不予共享 entry (the form checks this before
    it is shown, open_case when it is saved)."""
    if entry.share_type != "none":
        raise AppError(
            "sharing.case_not_needed",
            "该信息资源可以共享，请直接申请或获取授权",
            "This resource is shared: apply for it or take the unconditional grant",
            status_code=409,
        )
    if entry.provider_id == principal.department_id:
        raise Forbidden("本部门的信息资源无需协调", "Your own department's resources need no coordination")


def open_case(
    session: Session,
    principal: Principal,
    *,
    entry_id: int,
    duty: str,
    legal_basis: str,
    items: Sequence[str] = (),
) -> CoordinationCase:
    """A department asks the platform admin to coordinate access to a 不予共享 entry."""
    require_role(principal, *DEPT_ROLES)
    assert principal.department_id is not None and principal.id is not None
    entry = _published_entry(session, entry_id)
    check_can_open(entry, principal)
    wanted = _check_items(entry, items) if items else []
    open_exists = session.scalar(
        select(CoordinationCase.id).where(
            CoordinationCase.entry_id == entry.id,
            CoordinationCase.consumer_id == principal.department_id,
            CoordinationCase.status == "open",
        )
    )
    if open_exists:
        raise AppError(
            "sharing.case_exists",
            f"本部门已有该资源的待协调事项（编号 {open_exists}）",
            f"Your department already has an open case for this resource ({open_exists})",
            status_code=409,
        )
    case = CoordinationCase(
        entry_id=entry.id,
        provider_id=entry.provider_id,
        consumer_id=principal.department_id,
        requester_id=principal.id,
        duty=_text(duty, "duty", "履职需要", "The duty"),
        legal_basis=_text(legal_basis, "legal_basis", "法律依据", "The legal basis"),
        items=wanted,
    )
    session.add(case)
    session.flush()
    record(
        session,
        principal,
        "sharing.case.open",
        resource=entry.code,
        subject_department=entry.provider_code,
        items=wanted,
        detail={"case": case.id, "duty": case.duty},
    )
    notify.notify_platform_admins(
        session, "coordination", f"不予共享协调申请：{entry.name}", link=f"/sharing/cases/{case.id}"
    )
    return case


def can_see_case(principal: Principal, case: CoordinationCase) -> bool:
    if principal.is_platform_admin:
        return True
    return (
        principal.kind == "user"
        and principal.role in DEPT_ROLES
        and principal.department_id
        in (
            case.consumer_id,
            case.provider_id,
        )
    )


def get_case(session: Session, principal: Principal, case_id: int) -> CoordinationCase:
    require_role(principal, Role.PLATFORM_ADMIN, *DEPT_ROLES)
    case = get_by_id(session, CoordinationCase, case_id)
    if case is None or not can_see_case(principal, case):
        raise NotFound("协调事项", "Coordination case")
    return case


def list_cases(
    session: Session, principal: Principal, *, status: str | None = None, limit: int = 100, offset: int = 0
) -> list[CoordinationCase]:
    """The platform admin sees every case; a department those it opened or that concern it."""
    require_role(principal, Role.PLATFORM_ADMIN, *DEPT_ROLES)
    stmt = select(CoordinationCase).order_by(CoordinationCase.id.desc())
    if not principal.is_platform_admin:
        dept = principal.department_id
        stmt = stmt.where(or_(CoordinationCase.consumer_id == dept, CoordinationCase.provider_id == dept))
    if status:
        if status not in CASE_STATUSES:
            raise invalid("sharing.status_unknown", f"未知状态 {status}", f"Unknown status {status}", "status")
        stmt = stmt.where(CoordinationCase.status == status)
    return list(session.scalars(stmt.limit(max(1, min(limit, 500))).offset(max(0, offset))))


def no_share_basis(principal: Principal, case: CoordinationCase) -> str | None:
    """The entry's 不予共享依据: for the platform admin (and the provider, who wrote it) only."""
    if principal.is_platform_admin or principal.department_id == case.provider_id:
        return case.entry.no_share_basis
    return None


def resolve_case(
    session: Session, principal: Principal, case_id: int, *, decision: str, resolution: str | None
) -> CoordinationCase:
    """The platform admin closes a case: ``upheld`` (stays 不予共享) or ``referred`` (the
    provider is asked to re-classify the entry). A resolution text is required."""
    require_platform_admin(principal)
    case = get_case(session, principal, case_id)
    if decision not in RESOLUTIONS:
        raise invalid(
            "sharing.decision_invalid",
            "协调结论须为 upheld 或 referred",
            "Decision must be upheld or referred",
            "decision",
        )
    if case.status != "open":
        raise AppError(
            "sharing.case_closed",
            f"该协调事项已办结（{CASE_STATUSES[case.status]}）",
            f"The case is already resolved ({case.status})",
            field="status",
            status_code=409,
        )
    text = _reason(resolution, True)
    case.status = decision
    case.resolution = text
    case.resolved_by_id = principal.id
    case.resolved_at = utcnow()
    session.flush()
    record(
        session,
        principal,
        f"sharing.case.{decision}",
        resource=case.entry.code,
        subject_department=case.provider.code,
        reason=text,
        detail={"case": case.id, "consumer": case.consumer.code},
    )
    title = f"不予共享协调结果：{case.entry.name}（{CASE_STATUSES[decision]}）"
    notify.notify_department(
        session, case.consumer_id, "coordination", title, body=text, link=f"/sharing/cases/{case.id}"
    )
    if decision == "referred":
        notify.notify_department(
            session,
            case.provider_id,
            "coordination",
            f"请调整共享属性：{case.entry.name}",
            body=text,
            link=f"/sharing/cases/{case.id}",
        )
    return case


def case_out(principal: Principal, case: CoordinationCase) -> dict[str, Any]:
    """The fields shown to ``principal`` (the no-share basis only to those allowed)."""
    return {
        "id": case.id,
        "entry_id": case.entry_id,
        "entry_code": case.entry.code,
        "entry_name": case.entry.name,
        "provider_code": case.provider.code,
        "consumer_code": case.consumer.code,
        "duty": case.duty,
        "legal_basis": case.legal_basis,
        "items": case.items,
        "status": case.status,
        "status_label": CASE_STATUSES.get(case.status, case.status),
        "resolution": case.resolution,
        "resolved_at": case.resolved_at,
        "created_at": case.created_at,
        "no_share_basis": no_share_basis(principal, case),
    }
