"""Supply–demand docking (供需对接): a consumer's need (需求) for data not in the catalog.

Life cycle (``TRANSITIONS``)::

    open ──route──▶ routed ──answer──▶ will_publish ──close (entry linked)──▶ closed
      ▲                │                    │
      │                └──answer──▶ cannot ─┴──route (another department)──▶ routed

* a department (its admin or data officer) posts a need: ``open``;
* the platform admin routes it to the likely provider: ``routed``, answer due in
  ``need_answer_days`` working days (10 by default);
* the routed department answers ``will_publish`` (its plan, possibly the entry it is
  cataloguing) or ``cannot`` (reason required); a ``cannot`` need may be re-routed;
* the consumer or the platform admin closes a need at any time before it is closed,
  optionally linking the published entry that meets it; the answering department closes
  its ``will_publish`` need by linking its published entry (answering with an entry that is
  already published closes at once).

Every function takes the session and the caller, raises AppError on a broken rule and
records the audit entry last, in the caller's transaction.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from datatong.audit.chain import clean
from datatong.audit.models import AuditRecord
from datatong.audit.service import record
from datatong.catalog.models import CatalogEntry
from datatong.db import get_by_id, utcnow
from datatong.errors import AppError, Forbidden, NotFound, invalid
from datatong.orgs.models import Role
from datatong.orgs.service import Principal, department_by_code, require_platform_admin, require_role
from datatong.sharing import calendar, notify
from datatong.sharing.models import NEED_STATUSES, ShareNeed
from datatong.sharing.service import DEPT_ROLES, _check_purpose, today
from datatong.sharing.workdays import due_date, is_overdue

ANSWERS = {"will_publish": "将编目发布", "cannot": "无法提供"}
VIEWS = ("mine", "assigned", "all")
MAX_ITEMS = 200
MAX_ITEM_LENGTH = 200
UNUSABLE_ENTRY_STATUSES = ("pending_revoke", "revoked")


@dataclass(frozen=True)
class Step:
    sources: frozenset[str]
    label: str


TRANSITIONS: dict[str, Step] = {
    "route": Step(frozenset({"open", "cannot"}), "分派"),
    "answer": Step(frozenset({"routed"}), "答复"),
    "close": Step(frozenset({"open", "routed", "will_publish", "cannot"}), "关闭"),
    # The answering department closes only its own will_publish need, by linking its entry.
    "link": Step(frozenset({"will_publish"}), "关联信息资源并关闭"),
}


# ---------------------------------------------------------------- helpers


def _transition_invalid(status: str, label: str, action: str) -> AppError:
    return AppError(
        "sharing.need_transition_invalid",
        f"需求处于“{NEED_STATUSES.get(status, status)}”状态，不能执行“{label}”",
        f"Cannot {action} a need in state {status}",
        field="status",
        status_code=409,
    )


def _text(value: str | None, field: str, zh: str, en: str, *, required: bool = True) -> str | None:
    text = (value or "").strip() or None
    if required and text is None:
        raise invalid(f"sharing.need_{field}_required", f"请填写{zh}", f"{en} is required", field)
    return text


def _items(items: Sequence[str]) -> list[str]:
    wanted = [(i or "").strip() for i in items]
    if not wanted or any(not i for i in wanted):
        raise invalid(
            "sharing.need_items_required",
            "请列出所需的数据项（每项不能为空）",
            "List the data items needed (none may be empty)",
            "items",
        )
    if any(len(i) > MAX_ITEM_LENGTH for i in wanted):
        raise invalid(
            "sharing.need_items_invalid",
            f"数据项名称不能超过 {MAX_ITEM_LENGTH} 字",
            f"A data item's name has at most {MAX_ITEM_LENGTH} characters",
            "items",
        )
    if len(wanted) > MAX_ITEMS:
        raise invalid(
            "sharing.need_items_too_many",
            f"数据项不能超过 {MAX_ITEMS} 个",
            f"At most {MAX_ITEMS} data items",
            "items",
        )
    if len(set(wanted)) != len(wanted):
        raise invalid("sharing.item_duplicate", "数据项不能重复", "Data items must not repeat", "items")
    return wanted


def _in_department(principal: Principal, department_id: int | None) -> bool:
    return (
        department_id is not None
        and principal.kind == "user"
        and principal.role in DEPT_ROLES
        and principal.department_id == department_id
    )


def _short(reason: str | None) -> str | None:
    """The audit record's reason column holds 64 characters; the whole text is in detail."""
    return clean(reason)[:64] if reason else None


def _audit(
    session: Session,
    principal: Principal,
    need: ShareNeed,
    action: str,
    old: str | None,
    reason: str | None = None,
    *,
    to: str | None = None,
    **extra: Any,
) -> None:
    detail: dict[str, Any] = {
        "need": need.id,
        "title": need.title,
        "from": old,
        "to": to or need.status,
        "consumer": need.consumer.code,
        "routed_to": need.routed_to.code if need.routed_to else None,
        **extra,
    }
    if reason:
        detail["reason"] = reason
    record(
        session,
        principal,
        f"sharing.need.{action}",
        resource=f"need:{need.id}",
        subject_department=need.routed_to.code if need.routed_to else need.consumer.code,
        items=need.items,
        purpose=need.purpose_kind,
        reason=_short(reason),
        detail=detail,
    )


def _entry(session: Session, entry_id: int) -> CatalogEntry:
    entry = get_by_id(session, CatalogEntry, entry_id)
    if entry is None:
        raise NotFound("信息资源", "Catalog entry")
    return entry


def _published(session: Session, entry_id: int) -> CatalogEntry:
    entry = _entry(session, entry_id)
    if entry.status != "published":
        # Another department's unpublished entry does not exist for the caller.
        raise NotFound("已发布的信息资源", "Published catalog entry")
    return entry


def _link(need: ShareNeed) -> str:
    return f"/sharing/needs/{need.id}"


# ---------------------------------------------------------------- read


def can_see_need(principal: Principal, need: ShareNeed) -> bool:
    if principal.is_platform_admin:
        return True
    return _in_department(principal, need.consumer_id) or _in_department(principal, need.routed_to_id)


def get_need(session: Session, principal: Principal, need_id: int) -> ShareNeed:
    require_role(principal, Role.PLATFORM_ADMIN, *DEPT_ROLES)
    need = get_by_id(session, ShareNeed, need_id)
    if need is None or not can_see_need(principal, need):
        raise NotFound("需求", "Need")
    return need


def list_needs(
    session: Session,
    principal: Principal,
    *,
    view: str = "mine",
    status: str | None = None,
    overdue_on: date | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[ShareNeed]:
    """``mine``: needs my department posted; ``assigned``: needs routed to my department (by
    due date); ``all``: every need (platform admin). ``overdue_on``: only needs still
    awaiting an answer whose due date is before that day."""
    require_role(principal, Role.PLATFORM_ADMIN, *DEPT_ROLES)
    stmt: Select[Any] = select(ShareNeed)
    if view == "mine":
        stmt = stmt.where(ShareNeed.consumer_id == principal.department_id).order_by(ShareNeed.id.desc())
    elif view == "assigned":
        stmt = stmt.where(ShareNeed.routed_to_id == principal.department_id).order_by(
            ShareNeed.due_at.is_(None), ShareNeed.due_at, ShareNeed.id
        )
    elif view == "all":
        if not principal.is_platform_admin:
            raise Forbidden("只有平台管理员可以查看全部需求", "Only the platform admin sees every need")
        stmt = stmt.order_by(ShareNeed.id.desc())
    else:
        raise invalid(
            "sharing.view_invalid", "view 须为 mine/assigned/all", "view must be mine, assigned or all", "view"
        )
    if status:
        if status not in NEED_STATUSES:
            raise invalid("sharing.status_unknown", f"未知状态 {status}", f"Unknown status {status}", "status")
        stmt = stmt.where(ShareNeed.status == status)
    if overdue_on is not None:
        stmt = stmt.where(ShareNeed.status == "routed", ShareNeed.due_at < overdue_on)
    return list(session.scalars(stmt.limit(max(1, min(limit, 500))).offset(max(0, offset))))


ACTION_LABELS = {"post": "提出需求", "route": "分派", "answer": "答复", "close": "关闭"}


def need_history(session: Session, principal: Principal, need_id: int) -> list[dict[str, Any]]:
    """The need's moves, read back from the audit trail (each move is recorded there)."""
    get_need(session, principal, need_id)
    rows = session.scalars(
        select(AuditRecord)
        .where(
            AuditRecord.resource == f"need:{need_id}",
            AuditRecord.action.in_([f"sharing.need.{a}" for a in ACTION_LABELS]),
        )
        .order_by(AuditRecord.seq)
    )
    history = []
    for row in rows:
        try:
            detail = json.loads(row.detail or "{}")
        except ValueError:
            detail = {}
        action = row.action.removeprefix("sharing.need.")
        history.append(
            {
                "action": action,
                "label": ACTION_LABELS.get(action, action),
                "actor": row.actor,
                "actor_department": row.actor_department,
                "from_status": detail.get("from"),
                "to_status": detail.get("to"),
                "reason": detail.get("reason") or detail.get("text"),
                "occurred_at": row.occurred_at,
            }
        )
    return history


def overdue(need: ShareNeed, on: date | None = None) -> bool:
    """Routed and not answered by its due date (Beijing calendar day ``on``, today by default)."""
    return need.status == "routed" and need.due_at is not None and is_overdue(on or today(), need.due_at)


# ---------------------------------------------------------------- write


def post_need(
    session: Session,
    principal: Principal,
    *,
    title: str,
    description: str,
    items: Sequence[str],
    purpose_kind: str,
    purpose: str,
    now: datetime | None = None,
) -> ShareNeed:
    """A department asks for data the catalog does not have; the platform admin is told."""
    require_role(principal, *DEPT_ROLES)
    assert principal.department_id is not None and principal.id is not None
    moment = now or utcnow()
    need = ShareNeed(
        consumer_id=principal.department_id,
        requester_id=principal.id,
        title=_text(title, "title", "需求名称", "The title"),
        description=_text(description, "description", "需求描述", "The description"),
        items=_items(items),
        purpose_kind=_check_purpose(purpose_kind),
        purpose=_text(purpose, "purpose", "用途说明", "The purpose"),
        status="open",
        created_at=moment,
        updated_at=moment,
    )
    session.add(need)
    session.flush()
    notify.notify_platform_admins(
        session, "need", f"新的数据需求待分派：{need.title}", link=_link(need), need_id=need.id
    )
    _audit(session, principal, need, "post", None)
    return need


def route(
    session: Session,
    settings: Any,
    principal: Principal,
    need_id: int,
    *,
    department_code: str,
    reason: str | None = None,
    now: datetime | None = None,
) -> ShareNeed:
    """The platform admin sends an open need (or one a department cannot meet) to the
    department likely to hold the data; its answer is due in ``need_answer_days``."""
    require_platform_admin(principal)
    need = get_need(session, principal, need_id)
    step = TRANSITIONS["route"]
    if need.status not in step.sources:
        raise _transition_invalid(need.status, step.label, "route")
    dept = department_by_code(session, (department_code or "").strip())
    if dept.id == need.consumer_id:
        raise invalid(
            "sharing.need_route_self",
            "不能分派给提出需求的部门本身",
            "A need cannot be routed to the department that posted it",
            "department_code",
        )
    if need.status == "cannot" and dept.id == need.routed_to_id:
        raise invalid(
            "sharing.need_route_same",
            f"{dept.name}已答复无法提供，请分派给其他部门",
            f"{dept.code} already answered it cannot provide the data: route to another department",
            "department_code",
        )
    text = _text(reason, "reason", "分派说明", "The reason", required=False)
    moment = now or utcnow()
    calendar.refresh(session)
    old, previous = need.status, (need.routed_to.code if need.routed_to else None)
    need.status = "routed"
    need.routed_to_id = dept.id
    need.routed_to = dept
    need.routed_by_id = principal.id
    need.routed_at = moment
    need.due_at = due_date(settings, "need_answer", moment)
    need.answer = None
    need.answered_by_id = None
    need.answered_at = None
    need.entry_id = None
    need.updated_at = moment
    session.flush()
    notify.notify_department(
        session,
        dept.id,
        "need",
        f"数据需求待答复：{need.title}（{need.due_at.isoformat()} 前）",
        link=_link(need),
        need_id=need.id,
    )
    _audit(session, principal, need, "route", old, text, previous=previous, due_at=need.due_at.isoformat())
    return need


def answer(
    session: Session,
    principal: Principal,
    need_id: int,
    *,
    answer: str,
    text: str | None = None,
    entry_id: int | None = None,
    now: datetime | None = None,
) -> ShareNeed:
    """The routed department answers: ``will_publish`` (its plan; ``entry_id`` names its
    entry when it exists — an already published one closes the need at once) or
    ``cannot`` (the reason is required)."""
    need = get_need(session, principal, need_id)
    if not _in_department(principal, need.routed_to_id):
        raise Forbidden("只有被分派的部门可以答复需求", "Only the department the need is routed to answers it")
    step = TRANSITIONS["answer"]
    if need.status not in step.sources:
        raise _transition_invalid(need.status, step.label, "answer")
    if answer not in ANSWERS:
        raise invalid(
            "sharing.need_answer_invalid",
            "答复须为 will_publish（将编目发布）或 cannot（无法提供）",
            "The answer must be will_publish or cannot",
            "answer",
        )
    entry: CatalogEntry | None = None
    if answer == "cannot":
        if entry_id is not None:
            raise invalid(
                "sharing.need_entry_unexpected",
                "答复无法提供时不能关联信息资源",
                "An answer of cannot links no entry",
                "entry_id",
            )
        body = _text(text, "text", "无法提供的理由", "The reason")
    else:
        if entry_id is not None:
            entry = _own_entry(session, need, entry_id)
        body = _text(text, "text", "编目发布计划", "The plan", required=entry is None)
    moment = now or utcnow()
    old = need.status
    need.status = answer
    need.answer = body
    need.answered_by_id = principal.id
    need.answered_at = moment
    need.entry_id = entry.id if entry else None
    need.updated_at = moment
    closes = entry is not None and entry.status == "published"
    if closes:
        need.status = "closed"
        need.closed_at = moment
    session.flush()
    label = ANSWERS[answer] if not closes else "已关联发布的信息资源，需求关闭"
    notify.notify_department(
        session,
        need.consumer_id,
        "need",
        f"数据需求已答复：{need.title}（{label}）",
        body=body,
        link=_link(need),
        need_id=need.id,
    )
    entry_code = entry.code if entry else None
    reason = body if answer == "cannot" else None
    _audit(session, principal, need, "answer", old, reason, to=answer, entry=entry_code, text=body)
    if closes:  # an entry already published: the answer closes the need (two records)
        _audit(session, principal, need, "close", answer, None, entry=entry_code)
    return need


def _own_entry(session: Session, need: ShareNeed, entry_id: int) -> CatalogEntry:
    """An entry of the answering department that is (or will be) published."""
    entry = get_by_id(session, CatalogEntry, entry_id)
    if entry is None or (entry.provider_id != need.routed_to_id and entry.status != "published"):
        raise NotFound("信息资源", "Catalog entry")
    if entry.provider_id != need.routed_to_id:
        raise invalid(
            "sharing.need_entry_not_own",
            "只能关联本部门的信息资源",
            "Link an entry of your own department",
            "entry_id",
        )
    if entry.status in UNUSABLE_ENTRY_STATUSES:
        raise invalid(
            "sharing.need_entry_revoked",
            "该信息资源已撤销或正在撤销，不能关联",
            "The entry is revoked or being revoked",
            "entry_id",
        )
    return entry


def close(
    session: Session,
    principal: Principal,
    need_id: int,
    *,
    entry_id: int | None = None,
    reason: str | None = None,
    now: datetime | None = None,
) -> ShareNeed:
    """Close a need. The consumer or the platform admin may close it in any state before
    closed, optionally linking a published entry that meets it; the answering department
    closes its ``will_publish`` need by linking its own published entry (the one named in
    its answer unless ``entry_id`` names another)."""
    need = get_need(session, principal, need_id)
    by_owner = principal.is_platform_admin or _in_department(principal, need.consumer_id)
    if not by_owner and not _in_department(principal, need.routed_to_id):
        raise Forbidden(
            "只有提出需求的部门、被分派的部门或平台管理员可以关闭需求",
            "Only the consumer, the routed department or the platform admin closes a need",
        )
    action = "close" if by_owner else "link"
    step = TRANSITIONS[action]
    if need.status not in step.sources:
        raise _transition_invalid(need.status, step.label, action)
    text = _text(reason, "reason", "关闭说明", "The reason", required=False)
    entry: CatalogEntry | None = None
    if by_owner:
        if entry_id is not None:
            entry = _published(session, entry_id)
        elif need.entry_id is not None:
            planned = session.get(CatalogEntry, need.entry_id)
            entry = planned if planned is not None and planned.status == "published" else None
    else:
        wanted = entry_id if entry_id is not None else need.entry_id
        if wanted is None:
            raise invalid(
                "sharing.need_entry_required",
                "请关联本部门已发布的信息资源",
                "Link your department's published entry",
                "entry_id",
            )
        entry = _own_entry(session, need, wanted)
        if entry.status != "published":
            raise invalid(
                "sharing.need_entry_unpublished",
                "该信息资源尚未发布，发布后再关联",
                "The entry is not published yet",
                "entry_id",
            )
    moment = now or utcnow()
    old = need.status
    need.status = "closed"
    need.entry_id = entry.id if entry else None
    need.closed_at = moment
    need.updated_at = moment
    session.flush()
    title = f"数据需求已关闭：{need.title}" + (f"（已关联信息资源 {entry.code} {entry.name}）" if entry else "")
    for dept_id in (need.consumer_id, need.routed_to_id):
        if dept_id is not None and not _in_department(principal, dept_id):
            notify.notify_department(session, dept_id, "need", title, body=text, link=_link(need), need_id=need.id)
    _audit(session, principal, need, "close", old, text, entry=entry.code if entry else None)
    return need
