"""Pages of the two requests a department sends the platform admin: supply–demand docking
(供需对接: a need for data not in the catalog, routed to a department that answers) and
不予共享 coordination cases (协调: a department needs a 不予共享 entry for its duties).

Thin like every page: the rules are ``datatong.sharing.needs`` and ``datatong.sharing.cases``;
a refused step comes back as an ``AppError`` whose Chinese message is shown by the form
that asked for it (refusals of access — login, 403, a need one may not see — as pages).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.datastructures import FormData

from datatong.audit.writer import log_access
from datatong.catalog import service as catalog
from datatong.catalog.models import CatalogEntry
from datatong.db import MAX_ID
from datatong.errors import AppError, NotFound
from datatong.orgs import service as orgs
from datatong.orgs.models import Role
from datatong.orgs.service import Principal
from datatong.sharing import cases, needs, service, workdays
from datatong.sharing.models import CASE_STATUSES, NEED_STATUSES, PURPOSE_KINDS, CoordinationCase, ShareNeed
from datatong.web.pages import (
    CheckedForm,
    Page,
    PageDep,
    PageRoute,
    error_map,
    form_text,
    place_errors,
    require_login,
)

router: APIRouter = APIRouter(route_class=PageRoute, include_in_schema=False)

LIST_LIMIT = 200
NEED_TABS = {"mine": "我的需求", "assigned": "分派给本部门", "all": "全部需求"}
NEED_FIELDS = ["title", "description", "items", "purpose_kind", "purpose"]
NEED_LIMITS = {"title": 300, "description": 8000, "items": 20000, "purpose": 4000}
ACTION_LIMITS = {"reason": 2000, "text": 4000, "resolution": 4000}
CASE_FIELDS = ["items", "duty", "legal_basis"]
CASE_LIMITS = {"duty": 4000, "legal_basis": 4000}
_ITEM_SPLIT = re.compile(r"[,，、;；\r\n]+")


# ---------------------------------------------------------------- form helpers (also used by admin_pages)


class FormInvalid(AppError):
    """A form value the page refuses before calling the service (shown on the form)."""

    status_code = 422

    def __init__(self, field: str, message: str) -> None:
        super().__init__("form_invalid", message, "The form holds an invalid value", field=field)


def is_dept_user(p: Principal) -> bool:
    return p.kind == "user" and p.role in service.DEPT_ROLES


def require_sharing_user(page: Page) -> None:
    """Platform admin or a department's officer: those the sharing services answer."""
    require_login(page)
    orgs.require_role(page.principal, Role.PLATFORM_ADMIN, *service.DEPT_ROLES)


def check_lengths(values: dict[str, Any], limits: dict[str, int]) -> None:
    for name, limit in limits.items():
        value = values.get(name)
        if isinstance(value, str) and len(value) > limit:
            raise FormInvalid(name, f"不能超过 {limit} 个字符")


def optional_id(form: FormData, name: str, what: str = "信息资源编号") -> int | None:
    """An optional numeric id typed into a form; ids no table holds are left to the
    service, which answers them as missing."""
    text = form_text(form, name)
    if not text:
        return None
    if not text.isdigit():
        raise FormInvalid(name, f"{what}应为数字")
    value = int(text) if len(text) <= 20 else MAX_ID + 1
    return value


def split_items(text: str) -> list[str]:
    """Data items typed one per line or separated by commas (，、; also accepted)."""
    return [i.strip() for i in _ITEM_SPLIT.split(text) if i.strip()]


def shown(exc: AppError) -> bool:
    """Errors shown by the form that asked (the others as their own page)."""
    return exc.status_code not in (401, 403)


def form_status(exc: AppError) -> int:
    """A refused form answers 4xx; a missing thing the form named (an entry) is the form's
    error, not a missing page."""
    return 422 if exc.status_code == 404 else exc.status_code


def _url(path: str, **params: str | None) -> str:
    pairs = [(k, v) for k, v in params.items() if v]
    return path + ("?" + urlencode(pairs) if pairs else "")


# ---------------------------------------------------------------- needs: list


def need_row(need: ShareNeed) -> dict[str, Any]:
    return {
        "need": need,
        "status_label": NEED_STATUSES.get(need.status, need.status),
        "overdue": needs.overdue(need),
        "provisional": bool(need.due_at and need.routed_at and workdays.is_provisional(need.routed_at, need.due_at)),
    }


def _need_tabs(p: Principal) -> list[str]:
    return ["all"] if p.is_platform_admin else ["mine", "assigned"]


@router.get("/sharing/needs")
def needs_page(request: Request, page: Page = PageDep) -> Response:
    require_sharing_user(page)
    tabs = _need_tabs(page.principal)
    tab = request.query_params.get("tab", "")
    tab = tab if tab in tabs else tabs[0]
    status = request.query_params.get("status", "")
    status = status if status in NEED_STATUSES else ""
    overdue = request.query_params.get("overdue") == "1"
    found = needs.list_needs(
        page.session,
        page.principal,
        view=tab,
        status=status or None,
        overdue_on=service.today() if overdue else None,
        limit=LIST_LIMIT,
    )
    return page.render(
        "sharing/needs/list.html",
        tab=tab,
        tabs=[
            {"key": t, "label": NEED_TABS[t], "url": _url("/sharing/needs", tab=t), "current": t == tab} for t in tabs
        ],
        status=status,
        statuses=NEED_STATUSES,
        overdue=overdue,
        rows=[need_row(n) for n in found],
        limit=LIST_LIMIT,
        can_post=is_dept_user(page.principal),
    )


# ---------------------------------------------------------------- needs: post


def _render_new_need(
    page: Page, values: dict[str, Any], errors: dict[str, list[str]] | None = None, status_code: int = 200
) -> Response:
    errors = place_errors(errors or {}, set(NEED_FIELDS))
    error_list = [(n, m) for n in ["", *NEED_FIELDS] for m in errors.get(n, [])]
    return page.render(
        "sharing/needs/new.html",
        status_code=status_code,
        values=values,
        errors=errors,
        error_list=error_list,
        purpose_kinds=PURPOSE_KINDS,
    )


def _require_poster(page: Page) -> None:
    require_login(page)
    orgs.require_role(page.principal, *service.DEPT_ROLES)


@router.get("/sharing/needs/new")
def new_need_form(page: Page = PageDep) -> Response:
    _require_poster(page)
    return _render_new_need(page, {})


@router.post("/sharing/needs/new")
def new_need_post(form: FormData = CheckedForm, page: Page = PageDep) -> Response:
    _require_poster(page)
    values = {name: form_text(form, name) for name in NEED_FIELDS}
    try:
        check_lengths(values, NEED_LIMITS)
        need = needs.post_need(
            page.session,
            page.principal,
            title=values["title"],
            description=values["description"],
            items=split_items(values["items"]),
            purpose_kind=values["purpose_kind"],
            purpose=values["purpose"],
        )
    except AppError as exc:
        if not shown(exc):
            raise
        page.rollback()
        return _render_new_need(page, values, error_map(exc), form_status(exc))
    page.flash(f"需求已提出（第 {need.id} 号），等待平台管理员分派")
    return page.redirect(f"/sharing/needs/{need.id}")


# ---------------------------------------------------------------- needs: one need and its actions


def need_actions(p: Principal, need: ShareNeed) -> list[str]:
    """The forms the caller may use, read from the service's ``TRANSITIONS`` and roles."""
    in_consumer = is_dept_user(p) and p.department_id == need.consumer_id
    in_routed = is_dept_user(p) and need.routed_to_id is not None and p.department_id == need.routed_to_id
    steps = needs.TRANSITIONS
    actions = []
    if p.is_platform_admin and need.status in steps["route"].sources:
        actions.append("route")
    if in_routed and need.status in steps["answer"].sources:
        actions.append("answer")
    if (p.is_platform_admin or in_consumer) and need.status in steps["close"].sources:
        actions.append("close")
    elif in_routed and need.status in steps["link"].sources:
        actions.append("link")
    return actions


def _entry_label(page: Page, entry_id: int | None) -> dict[str, Any] | None:
    if entry_id is None:
        return None
    entry = page.session.get(CatalogEntry, entry_id)
    if entry is None:
        return None
    # Another department's unpublished entry is shown by its number only.
    visible = entry.status == "published" or entry.provider_id == page.principal.department_id
    return {"id": entry.id, "code": entry.code if visible else None, "name": entry.name if visible else None}


def _moment(value: Any) -> Any:
    """The audit trail keeps times as ISO text; the page shows them in Beijing time."""
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return value
    return value


def render_need(
    page: Page,
    need_id: int,
    status_code: int = 200,
    action_errors: dict[str, str] | None = None,
    values: dict[str, Any] | None = None,
    log: bool = False,
) -> Response:
    need = needs.get_need(page.session, page.principal, need_id)
    history = [
        {**h, "occurred_at": _moment(h["occurred_at"])}
        for h in needs.need_history(page.session, page.principal, need_id)
    ]
    if log:
        log_access(
            page.settings,
            page.principal,
            "sharing.need.read",
            resource=f"need:{need.id}",
            subject_department=need.routed_to.code if need.routed_to else need.consumer.code,
        )
    actions = need_actions(page.principal, need)
    departments = []
    if "route" in actions:
        departments = [
            d
            for d in orgs.list_departments(page.session)
            if d.id != need.consumer_id and not (need.status == "cannot" and d.id == need.routed_to_id)
        ]
    return page.render(
        "sharing/needs/need.html",
        status_code=status_code,
        r=need_row(need),
        need=need,
        history=history,
        statuses=NEED_STATUSES,
        purpose_label=PURPOSE_KINDS.get(need.purpose_kind, need.purpose_kind),
        entry=_entry_label(page, need.entry_id),
        actions=actions,
        departments=departments,
        answers=needs.ANSWERS,
        action_errors=action_errors or {},
        values=values or {},
    )


@router.get("/sharing/needs/{need_id:int}")
def need_page(need_id: int, page: Page = PageDep) -> Response:
    require_sharing_user(page)
    return render_need(page, need_id, log=True)


def _need_step(page: Page, need_id: int, action: str, form: FormData, run: Callable[[], ShareNeed]) -> Response:
    require_sharing_user(page)
    needs.get_need(page.session, page.principal, need_id)  # a need one may not see: its own 404 page
    values = {k: form_text(form, k) for k in ("department_code", "reason", "answer", "text", "entry_id")}
    try:
        check_lengths(values, ACTION_LIMITS)
        need = run()
    except AppError as exc:
        if not shown(exc):
            raise
        page.rollback()
        return render_need(page, need_id, form_status(exc), {action: exc.message}, values)
    page.flash(f"已完成（当前状态：{NEED_STATUSES.get(need.status, need.status)}）")
    return page.redirect(f"/sharing/needs/{need_id}")


@router.post("/sharing/needs/{need_id:int}/route")
def route_need(need_id: int, form: FormData = CheckedForm, page: Page = PageDep) -> Response:
    def run() -> ShareNeed:
        code = form_text(form, "department_code")
        if not code:
            raise FormInvalid("department_code", "请选择分派给的部门")
        return needs.route(
            page.session,
            page.settings,
            page.principal,
            need_id,
            department_code=code,
            reason=form_text(form, "reason") or None,
        )

    return _need_step(page, need_id, "route", form, run)


@router.post("/sharing/needs/{need_id:int}/answer")
def answer_need(need_id: int, form: FormData = CheckedForm, page: Page = PageDep) -> Response:
    def run() -> ShareNeed:
        answer = form_text(form, "answer")
        if not answer:
            raise FormInvalid("answer", "请选择答复：将编目发布或无法提供")
        return needs.answer(
            page.session,
            page.principal,
            need_id,
            answer=answer,
            text=form_text(form, "text") or None,
            entry_id=optional_id(form, "entry_id"),
        )

    return _need_step(page, need_id, "answer", form, run)


@router.post("/sharing/needs/{need_id:int}/close")
def close_need(need_id: int, form: FormData = CheckedForm, page: Page = PageDep) -> Response:
    def run() -> ShareNeed:
        return needs.close(
            page.session,
            page.principal,
            need_id,
            entry_id=optional_id(form, "entry_id"),
            reason=form_text(form, "reason") or None,
        )

    # The routed department's form is "link" (close by linking its published entry).
    action = form_text(form, "action")
    return _need_step(page, need_id, action if action in ("close", "link") else "close", form, run)


# ---------------------------------------------------------------- 不予共享 coordination cases


def _case_row(p: Principal, case: CoordinationCase) -> dict[str, Any]:
    return {"case": case, "o": cases.case_out(p, case)}


@router.get("/sharing/cases")
def cases_page(request: Request, page: Page = PageDep) -> Response:
    require_sharing_user(page)
    status = request.query_params.get("status", "")
    status = status if status in CASE_STATUSES else ""
    found = cases.list_cases(page.session, page.principal, status=status or None, limit=LIST_LIMIT)
    return page.render(
        "sharing/cases/list.html",
        rows=[_case_row(page.principal, c) for c in found],
        status=status,
        statuses=CASE_STATUSES,
        limit=LIST_LIMIT,
    )


def _case_entry(page: Page, raw_id: str) -> CatalogEntry:
    """The 不予共享 entry a case form is for (the service checks the same again on post)."""
    require_login(page)
    orgs.require_role(page.principal, *service.DEPT_ROLES)
    if not raw_id.isdigit() or len(raw_id) > 20:
        raise NotFound("信息资源", "Catalog entry")
    entry = catalog.get_entry(page.session, page.principal, int(raw_id))
    if entry.status != "published":
        raise NotFound("信息资源", "Catalog entry")
    cases.check_can_open(entry, page.principal)
    return entry


def _render_new_case(
    page: Page,
    entry: CatalogEntry,
    values: dict[str, Any],
    errors: dict[str, list[str]] | None = None,
    status_code: int = 200,
) -> Response:
    errors = place_errors(errors or {}, set(CASE_FIELDS))
    error_list = [(n, m) for n in ["", *CASE_FIELDS] for m in errors.get(n, [])]
    return page.render(
        "sharing/cases/new.html",
        status_code=status_code,
        entry=entry,
        values=values,
        errors=errors,
        error_list=error_list,
    )


@router.get("/sharing/cases/new")
def new_case_form(request: Request, page: Page = PageDep) -> Response:
    entry = _case_entry(page, request.query_params.get("entry_id", ""))
    return _render_new_case(page, entry, {"items": []})


@router.post("/sharing/cases/new")
def new_case_post(form: FormData = CheckedForm, page: Page = PageDep) -> Response:
    entry = _case_entry(page, form_text(form, "entry_id"))
    values: dict[str, Any] = {name: form_text(form, name) for name in ("duty", "legal_basis")}
    values["items"] = [v for v in form.getlist("items") if isinstance(v, str)]
    try:
        check_lengths(values, CASE_LIMITS)
        case = cases.open_case(
            page.session,
            page.principal,
            entry_id=entry.id,
            duty=values["duty"],
            legal_basis=values["legal_basis"],
            items=values["items"],
        )
    except AppError as exc:
        if not shown(exc):
            raise
        page.rollback()
        return _render_new_case(page, entry, values, error_map(exc), form_status(exc))
    page.flash(f"协调申请已提交（第 {case.id} 号），等待平台管理员协调")
    return page.redirect(f"/sharing/cases/{case.id}")


def render_case(
    page: Page,
    case_id: int,
    status_code: int = 200,
    error: str | None = None,
    values: dict[str, Any] | None = None,
) -> Response:
    case = cases.get_case(page.session, page.principal, case_id)
    return page.render(
        "sharing/cases/case.html",
        status_code=status_code,
        case=case,
        o=cases.case_out(page.principal, case),
        can_resolve=page.principal.is_platform_admin and case.status == "open",
        resolutions={k: CASE_STATUSES[k] for k in cases.RESOLUTIONS},
        error=error,
        values=values or {},
    )


@router.get("/sharing/cases/{case_id:int}")
def case_page(case_id: int, page: Page = PageDep) -> Response:
    require_sharing_user(page)
    return render_case(page, case_id)


@router.post("/sharing/cases/{case_id:int}/resolve")
def resolve_case(case_id: int, form: FormData = CheckedForm, page: Page = PageDep) -> Response:
    require_sharing_user(page)
    orgs.require_platform_admin(page.principal)
    cases.get_case(page.session, page.principal, case_id)
    values = {k: form_text(form, k) for k in ("decision", "resolution")}
    try:
        check_lengths(values, ACTION_LIMITS)
        case = cases.resolve_case(
            page.session, page.principal, case_id, decision=values["decision"], resolution=values["resolution"]
        )
    except AppError as exc:
        if not shown(exc):
            raise
        page.rollback()
        return render_case(page, case_id, form_status(exc), exc.message, values)
    page.flash(f"协调事项已办结：{CASE_STATUSES.get(case.status, case.status)}")
    return page.redirect(f"/sharing/cases/{case_id}")


# ---------------------------------------------------------------- the platform admin's board


def board_context(page: Page) -> dict[str, Any]:
    """What the board's 供需对接 and 不予共享协调 sections show (platform admin): needs
    waiting to be routed or re-routed, needs overdue at the routed department, and open
    coordination cases. Render ``sharing/needs/_board.html`` and ``sharing/cases/_board.html``."""
    orgs.require_platform_admin(page.principal)
    p, s = page.principal, page.session
    waiting = [
        *needs.list_needs(s, p, view="all", status="open", limit=LIST_LIMIT),
        *needs.list_needs(s, p, view="all", status="cannot", limit=LIST_LIMIT),
    ]
    overdue = needs.list_needs(s, p, view="all", overdue_on=service.today(), limit=LIST_LIMIT)
    return {
        "board_needs_waiting": [need_row(n) for n in sorted(waiting, key=lambda n: n.id)],
        "board_needs_overdue": [need_row(n) for n in overdue],
        "board_cases": [_case_row(p, c) for c in cases.list_cases(s, p, status="open", limit=LIST_LIMIT)],
    }
