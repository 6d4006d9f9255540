"""Rules of sharing (国发〔2016〕51号 art. 14–17): who may ask for what, who answers, when.

* 无条件共享 entries: ``request_unconditional_grant`` gives the caller's department a grant
  at once; the provider may revoke it for cause.
* 有条件共享 entries: only through an application (``ShareApplication``), whose life cycle is
  the table ``TRANSITIONS`` below.
* 不予共享 entries: no path (``sharing.not_shareable``); a department that needs one for
  its duties opens a coordination case with the platform admin (cases.py).

Every function takes the session and the caller, raises AppError on a broken rule and
records the audit entry last, in the caller's transaction.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Select, or_, select
from sqlalchemy.orm import Session

from datatong.audit.service import record
from datatong.catalog.models import CatalogEntry
from datatong.db import get_by_id, utcnow
from datatong.errors import AppError, Forbidden, NotFound, invalid
from datatong.orgs.models import ClientApp, Department, Role, SecurityPolicy
from datatong.orgs.service import Principal, require_platform_admin, require_role
from datatong.sharing import calendar, notify
from datatong.sharing.models import (
    APPLICATION_STATUSES,
    COMMITMENT_VERSION,
    GRANT_STATUSES,
    PURPOSE_KINDS,
    Grant,
    ShareApplication,
    ShareEvent,
)
from datatong.sharing.workdays import CalendarUnknownYear, due_date, local_date

DEPT_ROLES = (Role.DEPT_ADMIN, Role.DATA_OFFICER)
DEFAULT_CALLS_PER_MINUTE = 60
COMPLIANCE_POLICY_KEY = "sharing_compliance_review"


@dataclass(frozen=True)
class Step:
    sources: frozenset[str]
    who: str  # "consumer", "provider" or "platform"
    label: str
    reason_required: bool = False


# action -> where it may start, who may take it. Targets depend on the action's outcome
# (see the functions below); ``TARGETS`` lists them for the state-machine test.
TRANSITIONS: dict[str, Step] = {
    "submit": Step(frozenset({"draft"}), "consumer", "提交"),
    "withdraw": Step(
        frozenset({"draft", "compliance_review", "awaiting_provider", "negotiation", "coordination"}),
        "consumer",
        "撤回",
    ),
    "review_pass": Step(frozenset({"compliance_review"}), "platform", "符合性审查通过"),
    "review_return": Step(frozenset({"compliance_review"}), "platform", "符合性审查退回", True),
    "approve": Step(frozenset({"awaiting_provider", "negotiation"}), "provider", "同意"),
    "partially_approve": Step(frozenset({"awaiting_provider", "negotiation"}), "provider", "部分同意", True),
    "reject": Step(frozenset({"awaiting_provider", "negotiation"}), "provider", "不同意", True),
    "negotiate": Step(frozenset({"rejected"}), "consumer", "申请协商", True),
    "escalate": Step(frozenset({"negotiation"}), "consumer", "申请协调", True),
    "coordinate_approve": Step(frozenset({"coordination"}), "platform", "协调同意"),
    "coordinate_partially_approve": Step(frozenset({"coordination"}), "platform", "协调部分同意", True),
    "coordinate_uphold": Step(frozenset({"coordination"}), "platform", "协调维持不予共享", True),
}
TARGETS: dict[str, str] = {
    "withdraw": "withdrawn",
    "review_pass": "awaiting_provider",
    "review_return": "draft",
    "approve": "approved",
    "partially_approve": "partially_approved",
    "reject": "rejected",
    "negotiate": "negotiation",
    "escalate": "coordination",
    "coordinate_approve": "approved",
    "coordinate_partially_approve": "partially_approved",
    "coordinate_uphold": "rejection_upheld",
    # "submit" goes to compliance_review or awaiting_provider (setting-controlled).
}
GRANT_TRANSITIONS: dict[str, tuple[frozenset[str], str, str, bool]] = {
    # action: (sources, target, label, reason required)
    "suspend": (frozenset({"active"}), "suspended", "暂停", True),
    "resume": (frozenset({"suspended"}), "active", "恢复", False),
    "revoke": (frozenset({"active", "suspended"}), "revoked", "撤销", True),
    "renew": (frozenset({"active", "suspended"}), "", "续期", False),
}


def compliance_review_on(session: Session, settings: Any) -> bool:
    """Whether submitted applications first go to the platform admin's 符合性审查: the
    platform admin's switch (``set_compliance_review``) if set, else the settings' default."""
    row = session.get(SecurityPolicy, COMPLIANCE_POLICY_KEY)
    if row is not None:
        return bool(json.loads(row.value))
    return bool(getattr(settings, "compliance_review_required", False))


def set_compliance_review(session: Session, principal: Principal, on: bool) -> bool:
    """The platform admin switches 符合性审查 on or off for applications submitted from now."""
    require_platform_admin(principal)
    row = session.get(SecurityPolicy, COMPLIANCE_POLICY_KEY)
    old = None if row is None else bool(json.loads(row.value))
    if row is None:
        row = SecurityPolicy(key=COMPLIANCE_POLICY_KEY, value="false")
        session.add(row)
    row.value = json.dumps(bool(on))
    row.updated_by = principal.username
    session.flush()
    record(session, principal, "sharing.settings.update", detail={"compliance_review": {"from": old, "to": bool(on)}})
    return bool(on)


# ---------------------------------------------------------------- helpers


def _reason(reason: str | None, required: bool) -> str | None:
    text = (reason or "").strip() or None
    if required and text is None:
        raise invalid("sharing.reason_required", "请填写理由", "A reason is required", "reason")
    return text


def _transition_invalid(status: str, label: str, action: str) -> AppError:
    return AppError(
        "sharing.transition_invalid",
        f"“{APPLICATION_STATUSES.get(status, GRANT_STATUSES.get(status, status))}”状态下不能执行“{label}”",
        f"Cannot {action} in state {status}",
        field="status",
        status_code=409,
    )


def _user_in(principal: Principal, department_id: int) -> bool:
    return principal.kind == "user" and principal.role in DEPT_ROLES and principal.department_id == department_id


def _event(
    session: Session,
    principal: Principal,
    action: str,
    old: str | None,
    new: str,
    reason: str | None,
    *,
    application_id: int | None = None,
    grant_id: int | None = None,
    now: datetime | None = None,
) -> None:
    session.add(
        ShareEvent(
            created_at=now or utcnow(),
            application_id=application_id,
            grant_id=grant_id,
            action=action,
            from_status=old,
            to_status=new,
            actor_id=principal.id if principal.kind == "user" else None,
            actor_name=principal.username,
            reason=reason,
        )
    )


def _published_entry(session: Session, entry_id: int) -> CatalogEntry:
    entry = get_by_id(session, CatalogEntry, entry_id)
    if entry is None or entry.status != "published":
        raise NotFound("信息资源", "Catalog entry")
    return entry


def _check_shareable(entry: CatalogEntry, principal: Principal) -> None:
    if entry.share_type == "none":
        raise AppError(
            "sharing.not_shareable",
            "该信息资源为不予共享类，不能申请使用",
            "This resource is not shared (不予共享)",
            status_code=409,
        )
    if entry.provider_id == principal.department_id:
        raise Forbidden("本部门的信息资源无需申请共享", "Your own department's resources need no sharing grant")


def check_can_apply(entry: CatalogEntry, principal: Principal) -> None:
    """An application is the path for 有条件共享 entries of other departments only (the
    apply form checks this before it is shown, create_application when it is saved)."""
    _check_shareable(entry, principal)
    if entry.share_type == "unconditional":
        raise AppError(
            "sharing.unconditional_no_application",
            "该信息资源为无条件共享，可在信息资源页面直接获取授权，无需申请",
            "This resource is shared unconditionally: request a grant directly",
            status_code=409,
        )


def _check_items(entry: CatalogEntry, items: Sequence[str], field: str = "items") -> list[str]:
    names = [i.name for i in entry.items]
    wanted = [i.strip() for i in items]
    if not wanted:
        raise invalid("sharing.items_required", "请选择所需信息项", "Choose at least one data item", field)
    unknown = [i for i in wanted if i not in names]
    if unknown:
        raise invalid(
            "sharing.item_unknown",
            f"信息项不属于该信息资源：{'、'.join(unknown)}",
            f"Not data items of this resource: {', '.join(unknown)}",
            field,
        )
    if len(set(wanted)) != len(wanted):
        raise invalid("sharing.item_duplicate", "信息项不能重复", "Data items must not repeat", field)
    return [n for n in names if n in wanted]  # in the entry's order


def _check_purpose(kind: str) -> str:
    if kind not in PURPOSE_KINDS:
        raise invalid(
            "sharing.purpose_invalid",
            "用途须为 行政依据/工作参考/数据校核/业务协同/其他",
            "Purpose must be administrative_basis, work_reference, verification, collaboration or other",
            "purpose_kind",
        )
    return kind


def _client_app(session: Session, client_id: str | None, department_id: int) -> ClientApp | None:
    if not client_id:
        return None
    app = session.scalar(select(ClientApp).where(ClientApp.client_id == client_id))
    if app is None or app.department_id != department_id or not app.is_active:
        raise invalid(
            "sharing.system_unknown",
            f"本部门没有应用系统 {client_id}",
            f"Your department has no system {client_id}",
            "client_id",
        )
    return app


def today(now: datetime | None = None) -> date:
    """The calendar day in Beijing: periods and deadlines are Chinese calendar days, and a
    UTC date would still be yesterday until 08:00."""
    return local_date(now or utcnow())


_today = today


# ---------------------------------------------------------------- unconditional


def request_unconditional_grant(
    session: Session,
    principal: Principal,
    entry_id: int,
    *,
    purpose_kind: str,
    purpose: str | None = None,
    items: Sequence[str] | None = None,
    client_id: str | None = None,
    now: datetime | None = None,
) -> Grant:
    """无条件共享: the caller's department gets a grant at once (all items unless fewer are
    asked for; sensitive items masked, no quota, until revoked). An active grant of the
    same department, system and purpose is returned as it is."""
    require_role(principal, *DEPT_ROLES)
    entry = _published_entry(session, entry_id)
    _check_shareable(entry, principal)
    if entry.share_type != "unconditional":
        raise AppError(
            "sharing.application_required",
            "该信息资源为有条件共享，须提交共享申请",
            "This resource is shared on conditions: file an application",
            status_code=409,
        )
    assert principal.department_id is not None
    kind = _check_purpose(purpose_kind)
    wanted = _check_items(entry, items) if items else [i.name for i in entry.items]
    app = _client_app(session, client_id, principal.department_id)
    existing = session.scalar(
        select(Grant).where(
            Grant.consumer_id == principal.department_id,
            Grant.entry_id == entry.id,
            Grant.status == "active",
            Grant.source == "unconditional",
            Grant.purpose_kind == kind,
            Grant.client_app_id == app.id if app else Grant.client_app_id.is_(None),
        )
    )
    if existing is not None and set(wanted) <= set(existing.items):
        return existing
    grant = Grant(
        consumer_id=principal.department_id,
        client_app_id=app.id if app else None,
        system_name=app.name if app else None,
        entry_id=entry.id,
        entry_code=entry.code,
        provider_id=entry.provider_id,
        items=wanted,
        clear_items=[],
        purpose_kind=kind,
        valid_from=_today(now),
        valid_to=None,
        rows_per_day=None,
        calls_per_minute=None,
        status="active",
        source="unconditional",
        created_by_id=principal.id,
    )
    session.add(grant)
    session.flush()
    _event(session, principal, "create", None, "active", (purpose or "").strip() or None, grant_id=grant.id)
    session.flush()
    record(
        session,
        principal,
        "sharing.grant.create",
        resource=entry.code,
        subject_department=entry.provider_code,
        items=wanted,
        purpose=kind,
        grant_id=grant.id,
        detail={"source": "unconditional", "purpose": (purpose or "").strip() or None, "system": client_id},
    )
    notify.grant_changed(session, grant, "create", principal)
    return grant


# ---------------------------------------------------------------- applications: read


def can_see_application(principal: Principal, app: ShareApplication) -> bool:
    if principal.is_platform_admin:
        return True
    if principal.kind != "user" or principal.role not in DEPT_ROLES:
        return False
    if principal.department_id == app.consumer_id:
        return True
    return principal.department_id == app.provider_id and app.status != "draft"


def get_application(session: Session, principal: Principal, application_id: int) -> ShareApplication:
    require_role(principal, Role.PLATFORM_ADMIN, *DEPT_ROLES)
    app = get_by_id(session, ShareApplication, application_id)
    if app is None or not can_see_application(principal, app):
        raise NotFound("共享申请", "Application")
    return app


def application_history(session: Session, principal: Principal, application_id: int) -> list[ShareEvent]:
    get_application(session, principal, application_id)
    return list(
        session.scalars(select(ShareEvent).where(ShareEvent.application_id == application_id).order_by(ShareEvent.id))
    )


def list_applications(
    session: Session,
    principal: Principal,
    *,
    view: str = "mine",
    status: str | None = None,
    overdue_on: date | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[ShareApplication]:
    """``mine``: my department's applications; ``provider``: the queue of applications to my
    department (by due date); ``all``: every one (platform admin). ``overdue_on``: only those
    still awaiting an answer whose due date is before that day."""
    require_role(principal, Role.PLATFORM_ADMIN, *DEPT_ROLES)
    stmt: Select[Any] = select(ShareApplication)
    if view == "mine":
        stmt = stmt.where(ShareApplication.consumer_id == principal.department_id).order_by(ShareApplication.id.desc())
    elif view == "provider":
        stmt = stmt.where(
            ShareApplication.provider_id == principal.department_id, ShareApplication.status != "draft"
        ).order_by(ShareApplication.due_at.is_(None), ShareApplication.due_at, ShareApplication.id)
    elif view == "all":
        if not principal.is_platform_admin:
            raise Forbidden("只有平台管理员可以查看全部申请", "Only the platform admin sees every application")
        stmt = stmt.where(ShareApplication.status != "draft").order_by(
            ShareApplication.due_at.is_(None), ShareApplication.due_at, ShareApplication.id
        )
    else:
        raise invalid(
            "sharing.view_invalid", "view 须为 mine/provider/all", "view must be mine, provider or all", "view"
        )
    if status:
        stmt = stmt.where(ShareApplication.status == status)
    if overdue_on is not None:
        stmt = stmt.where(
            ShareApplication.status.in_(("compliance_review", "awaiting_provider")),
            ShareApplication.due_at < overdue_on,
        )
    return list(session.scalars(stmt.limit(limit).offset(offset)))


# ---------------------------------------------------------------- applications: write


def create_application(
    session: Session,
    principal: Principal,
    *,
    entry_id: int,
    purpose_kind: str,
    purpose: str,
    legal_basis: str,
    items: Sequence[str],
    period_start: date,
    period_end: date,
    rows_per_day: int,
    calls_per_minute: int | None = None,
    system_name: str | None = None,
    client_id: str | None = None,
    now: datetime | None = None,
) -> ShareApplication:
    """A draft application of the caller's department for a 有条件共享 entry."""
    require_role(principal, *DEPT_ROLES)
    assert principal.department_id is not None and principal.id is not None
    entry = _published_entry(session, entry_id)
    check_can_apply(entry, principal)
    terms = _terms(
        session,
        principal,
        entry,
        purpose_kind=purpose_kind,
        purpose=purpose,
        legal_basis=legal_basis,
        items=items,
        period_start=period_start,
        period_end=period_end,
        rows_per_day=rows_per_day,
        calls_per_minute=calls_per_minute,
        system_name=system_name,
        client_id=client_id,
        now=now,
    )
    app = ShareApplication(
        entry_id=entry.id,
        entry_code=entry.code,
        provider_id=entry.provider_id,
        consumer_id=principal.department_id,
        applicant_id=principal.id,
        status="draft",
        **terms,
    )
    session.add(app)
    session.flush()
    _event(session, principal, "create", None, "draft", None, application_id=app.id)
    session.flush()
    _audit(session, principal, app, "create", None, None)
    return app


def _terms(
    session: Session,
    principal: Principal,
    entry: CatalogEntry,
    *,
    purpose_kind: str,
    purpose: str,
    legal_basis: str,
    items: Sequence[str],
    period_start: date,
    period_end: date,
    rows_per_day: int,
    calls_per_minute: int | None,
    system_name: str | None,
    client_id: str | None,
    now: datetime | None,
) -> dict[str, Any]:
    """The checked terms of an application (create and edit share the rules)."""
    assert principal.department_id is not None
    kind = _check_purpose(purpose_kind)
    if not (purpose or "").strip():
        raise invalid("sharing.purpose_required", "请说明用途", "State the purpose", "purpose")
    if not (legal_basis or "").strip():
        raise invalid("sharing.legal_basis_required", "请填写依据", "State the legal basis", "legal_basis")
    wanted = _check_items(entry, items)
    if period_end < period_start:
        raise invalid(
            "sharing.period_invalid", "使用期限的结束日期不能早于开始日期", "Period ends before it starts", "period_end"
        )
    if period_end < _today(now):
        raise invalid("sharing.period_past", "使用期限已过", "The period is already over", "period_end")
    if rows_per_day < 1 or (calls_per_minute is not None and calls_per_minute < 1):
        raise invalid(
            "sharing.volume_invalid", "预计数据量须为正数", "Expected volume must be positive", "rows_per_day"
        )
    app_sys = _client_app(session, client_id, principal.department_id)
    name = (system_name or "").strip() or (app_sys.name if app_sys else "")
    if not name:
        raise invalid("sharing.system_required", "请填写使用数据的应用系统", "Name the consuming system", "system_name")
    return {
        "client_app_id": app_sys.id if app_sys else None,
        "system_name": name,
        "purpose_kind": kind,
        "purpose": purpose.strip(),
        "legal_basis": legal_basis.strip(),
        "items": wanted,
        "period_start": period_start,
        "period_end": period_end,
        "rows_per_day": rows_per_day,
        "calls_per_minute": calls_per_minute or DEFAULT_CALLS_PER_MINUTE,
    }


FIELD_LABELS = {
    "purpose_kind": "用途类别",
    "purpose": "用途说明",
    "legal_basis": "申请依据",
    "items": "信息项",
    "period_start": "使用期限开始",
    "period_end": "使用期限结束",
    "rows_per_day": "预计每日数据量",
    "calls_per_minute": "每分钟调用次数",
    "system_name": "应用系统",
    "client_app_id": "应用系统",
}
EDITABLE = (
    "purpose_kind",
    "purpose",
    "legal_basis",
    "items",
    "period_start",
    "period_end",
    "rows_per_day",
    "calls_per_minute",
    "system_name",
    "client_id",
)


def update_application(
    session: Session, principal: Principal, application_id: int, *, now: datetime | None = None, **changes: Any
) -> ShareApplication:
    """Edit a draft (new, or returned by 符合性审查) before (re)submitting; the same rules as
    creating apply to the result. Only the applying department edits, only drafts."""
    app = get_application(session, principal, application_id)
    if not _user_in(principal, app.consumer_id):
        raise Forbidden("只有申请部门可以修改申请", "Only the applying department edits an application")
    if app.status != "draft":
        raise _transition_invalid(app.status, "修改", "edit")
    unknown = set(changes) - set(EDITABLE)
    if unknown:
        raise invalid("sharing.field_unknown", f"不能修改：{'、'.join(sorted(unknown))}", "Not editable", None)
    current: dict[str, Any] = {f: getattr(app, f) for f in EDITABLE if f != "client_id"}
    current["client_id"] = None
    if app.client_app_id is not None and "system_name" not in changes:
        client = session.get(ClientApp, app.client_app_id)
        current["client_id"] = client.client_id if client else None
    merged = {**current, **{k: v for k, v in changes.items() if v is not None}}
    terms = _terms(session, principal, app.entry, now=now, **merged)
    changed = {k: v for k, v in terms.items() if getattr(app, k) != v}
    for key, value in terms.items():
        setattr(app, key, value)
    app.updated_at = utcnow()
    session.flush()
    labels = sorted({FIELD_LABELS.get(k, k) for k in changed})
    note = ("修改：" + "、".join(labels)) if labels else None
    _event(session, principal, "edit", "draft", "draft", note, application_id=app.id)
    session.flush()
    _audit(session, principal, app, "edit", "draft", note)
    return app


def _audit(
    session: Session, principal: Principal, app: ShareApplication, action: str, old: str | None, reason: str | None
) -> None:
    record(
        session,
        principal,
        f"sharing.application.{action}",
        resource=f"application:{app.id}",
        subject_department=app.provider.code,
        items=app.approved_items if app.approved_items is not None else app.items,
        purpose=app.purpose_kind,
        grant_id=app.grant_id,
        reason=reason,
        detail={"from": old, "to": app.status, "entry": app.entry_code, "consumer": app.consumer.code},
    )


def _move(
    session: Session,
    principal: Principal,
    app: ShareApplication,
    action: str,
    target: str,
    reason: str | None,
    audit_action: str | None = None,
    now: datetime | None = None,
) -> ShareApplication:
    old = app.status
    app.status = target
    app.updated_at = utcnow()
    session.flush()
    _event(session, principal, action, old, target, reason, application_id=app.id, now=now)
    session.flush()
    _audit(session, principal, app, audit_action or action, old, reason)
    notify.application_moved(session, app, action, principal)
    return app


def _authorised_step(session: Session, principal: Principal, application_id: int, action: str) -> ShareApplication:
    """The application, once the caller may take ``action`` on it now (else an AppError)."""
    step = TRANSITIONS[action]
    app = get_application(session, principal, application_id)
    if step.who == "consumer" and not _user_in(principal, app.consumer_id):
        raise Forbidden("只有申请部门可以执行此操作", "Only the applying department may do this")
    if step.who == "provider" and not _user_in(principal, app.provider_id):
        raise Forbidden("只有提供方部门可以答复申请", "Only the providing department answers")
    if step.who == "platform" and not principal.is_platform_admin:
        raise Forbidden("只有平台管理员可以执行此操作", "Only the platform admin may do this")
    if app.status not in step.sources:
        raise _transition_invalid(app.status, step.label, action)
    return app


def submit(
    session: Session,
    settings: Any,
    principal: Principal,
    application_id: int,
    *,
    accept_commitment: bool,
    now: datetime | None = None,
) -> ShareApplication:
    """Submit a draft: the applicant signs the security commitment; the clock starts."""
    app = _authorised_step(session, principal, application_id, "submit")
    if not accept_commitment:
        raise invalid(
            "sharing.commitment_required",
            "提交申请须签署数据安全承诺",
            "Submitting requires signing the security commitment",
            "accept_commitment",
        )
    if app.period_end < _today(now):
        raise invalid("sharing.period_past", "使用期限已过，请新建申请", "The period is already over", "period_end")
    moment = now or utcnow()
    calendar.refresh(session)
    app.commitment_by_id = principal.id
    app.commitment_at = moment
    app.commitment_version = COMMITMENT_VERSION
    app.submitted_at = moment
    app.compliance_review = compliance_review_on(session, settings)
    if app.compliance_review:
        app.due_at = due_date(settings, "compliance_review", moment)
        target = "compliance_review"
    else:
        app.due_at = due_date(settings, "provider_answer", moment)
        target = "awaiting_provider"
    return _move(session, principal, app, "submit", target, None, now=moment)


def withdraw(
    session: Session, principal: Principal, application_id: int, reason: str | None = None
) -> ShareApplication:
    app = _authorised_step(session, principal, application_id, "withdraw")
    return _move(session, principal, app, "withdraw", "withdrawn", _reason(reason, False))


def review(
    session: Session,
    settings: Any,
    principal: Principal,
    application_id: int,
    *,
    decision: str,
    reason: str | None = None,
    now: datetime | None = None,
) -> ShareApplication:
    """符合性审查 by the platform admin: ``pass`` (on to the provider, whose clock starts now)
    or ``return`` (back to the applicant's draft, reason required)."""
    if decision not in ("pass", "return"):
        raise invalid(
            "sharing.decision_invalid", "审查结论须为 pass 或 return", "Decision must be pass or return", "decision"
        )
    action = f"review_{decision}"
    app = _authorised_step(session, principal, application_id, action)
    text = _reason(reason, TRANSITIONS[action].reason_required)
    if decision == "pass":
        calendar.refresh(session)
        app.due_at = due_date(settings, "provider_answer", now or utcnow())
    else:
        app.due_at = None
    return _move(session, principal, app, action, TARGETS[action], text, now=now)


@dataclass(frozen=True)
class Approval:
    """What a provider (or the platform admin in coordination) allows; None = as asked."""

    items: Sequence[str] | None = None
    valid_from: date | None = None
    valid_to: date | None = None
    rows_per_day: int | None = None
    calls_per_minute: int | None = None
    clear_items: Sequence[str] = ()


def _approved_terms(app: ShareApplication, approval: Approval, partial: bool) -> tuple[list[str], date, date, int, int]:
    entry = app.entry
    items = _check_items(entry, approval.items) if approval.items is not None else list(app.items)
    start = approval.valid_from or app.period_start
    end = approval.valid_to or app.period_end
    rows = approval.rows_per_day if approval.rows_per_day is not None else app.rows_per_day
    calls = approval.calls_per_minute if approval.calls_per_minute is not None else app.calls_per_minute
    if not set(items) <= set(app.items):
        raise invalid(
            "sharing.approval_wider", "同意的信息项不能超出申请范围", "Cannot grant items not asked for", "items"
        )
    if start < app.period_start or end > app.period_end or end < start:
        raise invalid(
            "sharing.approval_wider",
            "同意的使用期限须在申请期限之内",
            "The period must lie within the one asked for",
            "valid_to",
        )
    if rows < 1 or calls < 1 or rows > app.rows_per_day or calls > app.calls_per_minute:
        raise invalid(
            "sharing.approval_wider",
            "同意的数据量须为正数且不超过申请量",
            "Quota must be positive and not above the request",
            "rows_per_day",
        )
    narrower = (
        len(items) < len(app.items)
        or start > app.period_start
        or end < app.period_end
        or rows < app.rows_per_day
        or calls < app.calls_per_minute
    )
    if partial and not narrower:
        raise invalid(
            "sharing.partial_not_narrower",
            "部分同意须缩小信息项、期限或数据量中的至少一项",
            "A partial approval must narrow the items, period or quota",
            "items",
        )
    if not partial and narrower:
        raise invalid(
            "sharing.approval_narrowed",
            "缩小范围的同意请选择“部分同意”并说明理由",
            "An approval that narrows the request is a partial approval (with a reason)",
            "decision",
        )
    clear = [i for i in approval.clear_items]
    if not set(clear) <= set(items):
        raise invalid(
            "sharing.clear_item_invalid",
            "明文信息项须在同意的信息项之内",
            "Clear items must be granted items",
            "clear_items",
        )
    return items, start, end, rows, calls


def _grant_from(
    session: Session, principal: Principal, app: ShareApplication, approval: Approval, partial: bool
) -> Grant:
    items, start, end, rows, calls = _approved_terms(app, approval, partial)
    app.approved_items = items
    app.approved_start, app.approved_end = start, end
    app.approved_rows_per_day, app.approved_calls_per_minute = rows, calls
    grant = Grant(
        consumer_id=app.consumer_id,
        client_app_id=app.client_app_id,
        system_name=app.system_name,
        entry_id=app.entry_id,
        entry_code=app.entry_code,
        provider_id=app.provider_id,
        items=items,
        clear_items=[i for i in items if i in set(approval.clear_items)],
        purpose_kind=app.purpose_kind,
        valid_from=start,
        valid_to=end,
        rows_per_day=rows,
        calls_per_minute=calls,
        status="active",
        source="application",
        application_id=app.id,
        created_by_id=principal.id if principal.kind == "user" else None,
    )
    session.add(grant)
    session.flush()
    app.grant_id = grant.id
    _event(session, principal, "create", None, "active", None, grant_id=grant.id)
    return grant


def decide(
    session: Session,
    principal: Principal,
    application_id: int,
    *,
    decision: str,
    reason: str | None = None,
    approval: Approval | None = None,
    now: datetime | None = None,
) -> ShareApplication:
    """The provider's answer: ``approve``, ``partial`` (narrower, reason required) or
    ``reject`` (reason required). Approval creates the grant."""
    actions = {"approve": "approve", "partial": "partially_approve", "reject": "reject"}
    if decision not in actions:
        raise invalid(
            "sharing.decision_invalid",
            "答复须为 approve/partial/reject",
            "Decision must be approve, partial or reject",
            "decision",
        )
    return _decide(session, principal, application_id, actions[decision], reason, approval, now)


def _decide(
    session: Session,
    principal: Principal,
    application_id: int,
    action: str,
    reason: str | None,
    approval: Approval | None,
    now: datetime | None,
) -> ShareApplication:
    app = _authorised_step(session, principal, application_id, action)
    text = _reason(reason, TRANSITIONS[action].reason_required)
    target = TARGETS[action]
    if target in ("approved", "partially_approved"):
        _grant_from(session, principal, app, approval or Approval(), target == "partially_approved")
    app.decision_reason = text
    app.decided_by_id = principal.id if principal.kind == "user" else None
    app.decided_at = now or utcnow()
    return _move(session, principal, app, action, target, text)


def negotiate(session: Session, principal: Principal, application_id: int, reason: str | None) -> ShareApplication:
    """协商: the consumer contests a rejection; the provider may answer again."""
    app = _authorised_step(session, principal, application_id, "negotiate")
    return _move(session, principal, app, "negotiate", "negotiation", _reason(reason, True))


def escalate(session: Session, principal: Principal, application_id: int, reason: str | None) -> ShareApplication:
    """Ask the platform admin to coordinate (协调) when negotiation fails."""
    app = _authorised_step(session, principal, application_id, "escalate")
    return _move(session, principal, app, "escalate", "coordination", _reason(reason, True))


def coordinate(
    session: Session,
    principal: Principal,
    application_id: int,
    *,
    decision: str,
    reason: str | None = None,
    approval: Approval | None = None,
    now: datetime | None = None,
) -> ShareApplication:
    """协调 by the platform admin: ``uphold`` the rejection (final) or order ``approve`` /
    ``partial`` approval, which creates the grant."""
    actions = {
        "approve": "coordinate_approve",
        "partial": "coordinate_partially_approve",
        "uphold": "coordinate_uphold",
    }
    if decision not in actions:
        raise invalid(
            "sharing.decision_invalid",
            "协调结论须为 approve/partial/uphold",
            "Decision must be approve, partial or uphold",
            "decision",
        )
    return _decide(session, principal, application_id, actions[decision], reason, approval, now)


# ---------------------------------------------------------------- grants


def can_see_grant(principal: Principal, grant: Grant) -> bool:
    if principal.is_platform_admin:
        return True
    if principal.kind == "client":
        return grant.consumer_id == principal.department_id and grant.client_app_id in (None, principal.id)
    return (
        principal.kind == "user"
        and principal.role in DEPT_ROLES
        and principal.department_id
        in (
            grant.consumer_id,
            grant.provider_id,
        )
    )


def get_grant(session: Session, principal: Principal, grant_id: int) -> Grant:
    if not principal.is_authenticated:
        require_role(principal, *DEPT_ROLES)
    grant = get_by_id(session, Grant, grant_id)
    if grant is None or not can_see_grant(principal, grant):
        raise NotFound("授权", "Grant")
    return grant


def list_grants(
    session: Session,
    principal: Principal,
    *,
    view: str = "mine",
    status: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[Grant]:
    """``mine``: grants my department (or my system) holds; ``provided``: grants on my
    department's resources; ``all``: platform admin."""
    if principal.kind != "client":
        require_role(principal, Role.PLATFORM_ADMIN, *DEPT_ROLES)
    stmt: Select[Any] = select(Grant).order_by(Grant.id.desc())
    if view == "mine":
        stmt = stmt.where(Grant.consumer_id == principal.department_id)
        if principal.kind == "client":
            stmt = stmt.where(or_(Grant.client_app_id.is_(None), Grant.client_app_id == principal.id))
    elif view == "provided":
        if principal.kind == "client":
            raise Forbidden()
        stmt = stmt.where(Grant.provider_id == principal.department_id)
    elif view == "all":
        if not principal.is_platform_admin:
            raise Forbidden("只有平台管理员可以查看全部授权", "Only the platform admin sees every grant")
    else:
        raise invalid(
            "sharing.view_invalid", "view 须为 mine/provided/all", "view must be mine, provided or all", "view"
        )
    if status:
        stmt = stmt.where(Grant.status == status)
    return list(session.scalars(stmt.limit(limit).offset(offset)))


def change_grant(
    session: Session,
    principal: Principal,
    grant_id: int,
    action: str,
    reason: str | None = None,
    *,
    valid_to: date | None = None,
) -> Grant:
    """The provider suspends, resumes, revokes (reason required) or renews (a later
    ``valid_to``) a grant on its resource."""
    if action not in GRANT_TRANSITIONS:
        raise invalid("sharing.action_unknown", f"未知操作 {action}", f"Unknown action {action}", "action")
    sources, target, label, needs_reason = GRANT_TRANSITIONS[action]
    grant = get_grant(session, principal, grant_id)
    if not _user_in(principal, grant.provider_id):
        raise Forbidden("只有提供方部门可以管理授权", "Only the providing department manages a grant")
    if grant.status not in sources:
        raise _transition_invalid(grant.status, label, action)
    text = _reason(reason, needs_reason)
    detail: dict[str, Any] = {}
    if action == "renew":
        if valid_to is None or (grant.valid_to is not None and valid_to <= grant.valid_to) or valid_to < _today():
            raise invalid(
                "sharing.renew_invalid",
                "续期的截止日期须晚于原截止日期",
                "Renewal must extend the end date",
                "valid_to",
            )
        detail = {"valid_to": {"from": grant.valid_to, "to": valid_to}}
        grant.valid_to = valid_to
        target = grant.status
    old = grant.status
    grant.status = target
    if action != "renew":
        grant.status_reason = text
    grant.updated_at = utcnow()
    session.flush()
    _event(session, principal, action, old, target, text, grant_id=grant.id)
    session.flush()
    record(
        session,
        principal,
        f"sharing.grant.{action}",
        resource=grant.entry_code,
        subject_department=grant.provider.code,
        items=grant.items,
        purpose=grant.purpose_kind,
        grant_id=grant.id,
        reason=text,
        detail={"from": old, "to": target, "consumer": grant.consumer.code, **detail},
    )
    notify.grant_changed(session, grant, action, principal)
    return grant


def transfer_grant(
    session: Session,
    principal: Principal,
    grant_id: int,
    *,
    department_code: str,
    reason: str | None,
    system_name: str | None = None,
    client_id: str | None = None,
) -> Grant:
    """Move a grant to another consuming department or system (机构改革: duties moved), by
    the platform admin or the provider; the grant keeps its terms, history and quota
    counters. Reason required."""
    grant = get_grant(session, principal, grant_id)
    if not (principal.is_platform_admin or _user_in(principal, grant.provider_id)):
        raise Forbidden(
            "只有平台管理员或提供方可以转移授权", "Only the platform admin or the provider transfers a grant"
        )
    if grant.status not in ("active", "suspended"):
        raise _transition_invalid(grant.status, "转移", "transfer")
    text = _reason(reason, True)
    target = session.scalar(select(Department).where(Department.code == (department_code or "").strip()))
    if target is None:
        raise invalid(
            "sharing.department_unknown", f"部门 {department_code} 不存在", "Unknown department", "department_code"
        )
    if target.id == grant.provider_id:
        raise invalid(
            "sharing.transfer_to_provider",
            "不能把授权转给提供方自己",
            "Cannot transfer to the provider",
            "department_code",
        )
    app_sys = _client_app(session, client_id, target.id)
    name = (system_name or "").strip() or (app_sys.name if app_sys else None) or grant.system_name
    if target.id == grant.consumer_id and app_sys is None and name == grant.system_name:
        raise invalid(
            "sharing.transfer_same", "转移目标与当前使用方相同", "The grant already belongs there", "department_code"
        )
    old_consumer, old_code = grant.consumer_id, grant.consumer.code
    grant.consumer_id = target.id
    grant.client_app_id = app_sys.id if app_sys else None
    grant.system_name = name
    grant.updated_at = utcnow()
    session.flush()
    session.refresh(grant)
    _event(session, principal, "transfer", grant.status, grant.status, text, grant_id=grant.id)
    session.flush()
    record(
        session,
        principal,
        "sharing.grant.transfer",
        resource=grant.entry_code,
        subject_department=grant.provider.code,
        items=grant.items,
        purpose=grant.purpose_kind,
        grant_id=grant.id,
        reason=text,
        detail={"from": old_code, "to": target.code, "system": name},
    )
    notify.grant_changed(session, grant, "transfer", principal)
    if old_consumer != target.id:
        notify.notify_department(
            session,
            old_consumer,
            "grant_changed",
            f"授权已转移至{target.name}：{grant.entry_code}",
            body=text,
            grant_id=grant.id,
            link=f"/sharing/grants/{grant.id}",
        )
    return grant


# ---------------------------------------------------------------- calendar changes

_CLOCKS = {"compliance_review": "compliance_review", "awaiting_provider": "provider_answer"}


def recompute_due_dates(session: Session, settings: Any) -> int:
    """After the work calendar changed: recount the due date of every application whose
    clock is running, from the moment it entered its current status. Returns how many
    due dates moved."""
    moved = 0
    apps = session.scalars(select(ShareApplication).where(ShareApplication.status.in_(list(_CLOCKS))))
    for app in apps:
        started = session.scalar(
            select(ShareEvent.created_at)
            .where(ShareEvent.application_id == app.id, ShareEvent.to_status == app.status)
            .order_by(ShareEvent.id.desc())
            .limit(1)
        )
        if started is None:
            continue
        try:
            due = due_date(settings, _CLOCKS[app.status], started)
        except CalendarUnknownYear:
            continue
        if due != app.due_at:
            app.due_at = due
            moved += 1
    return moved + _recompute_need_due_dates(session, settings)


def _recompute_need_due_dates(session: Session, settings: Any) -> int:
    """The same for 供需对接 needs waiting for a department's answer (clock: routing)."""
    from datatong.sharing.models import ShareNeed

    moved = 0
    for need in session.scalars(
        select(ShareNeed).where(ShareNeed.status == "routed", ShareNeed.routed_at.is_not(None))
    ):
        assert need.routed_at is not None
        try:
            due = due_date(settings, "need_answer", need.routed_at)
        except CalendarUnknownYear:
            continue
        if due != need.due_at:
            need.due_at = due
            moved += 1
    session.flush()
    return moved
