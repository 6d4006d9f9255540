"""Sharing pages (共享): apply for a catalog entry, the application queues, one application
with the actions its status and the caller's role allow, grants, and the platform admin's
board of overdue and contested applications.

Thin like every page: every rule is ``datatong.sharing.service``'s (the actions offered are
read from its ``TRANSITIONS``); a refused step comes back as an ``AppError`` whose Chinese
message is shown by the form that asked for it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import select
from starlette.datastructures import FormData

from datatong.audit.writer import log_access
from datatong.catalog import service as catalog
from datatong.catalog.models import CatalogEntry
from datatong.errors import AppError, Forbidden, NotFound
from datatong.orgs import service as orgs
from datatong.orgs.models import ClientApp, Role, User
from datatong.orgs.service import Principal
from datatong.sharing import service, workdays
from datatong.sharing.api import application_out
from datatong.sharing.authorize import SENSITIVE
from datatong.sharing.models import (
    APPLICATION_STATUSES,
    COMMITMENT_TEXT,
    COMMITMENT_VERSION,
    GRANT_STATUSES,
    PURPOSE_KINDS,
    Grant,
    ShareApplication,
    ShareEvent,
)
from datatong.web.pages import (
    CheckedForm,
    Page,
    PageDep,
    PageRoute,
    error_map,
    form_text,
    place_errors,
    require_login,
    templates,
)

router: APIRouter = APIRouter(route_class=PageRoute, include_in_schema=False)

# The entry page's 获取授权 form (无条件共享) picks a purpose from these.
templates.env.globals.update(PURPOSE_KINDS=PURPOSE_KINDS)

AWAITING = ("compliance_review", "awaiting_provider")
# "待答复": what the provider's queue shows first — waiting for review or its answer, or
# reopened by negotiation (the provider may answer again).
PENDING = "pending"
PENDING_LABEL = "待答复（含审查中、协商中）"
PENDING_STATUSES = ("compliance_review", "awaiting_provider", "negotiation")
LIST_LIMIT = 200
MAX_NUMBER = 10**9
TEXT_LIMITS = {"system_name": 200, "purpose": 2000, "legal_basis": 2000, "reason": 2000}
APPLY_FIELDS = [
    "items",
    "purpose_kind",
    "purpose",
    "legal_basis",
    "period_start",
    "period_end",
    "rows_per_day",
    "calls_per_minute",
    "system_name",
    "client_id",
    "accept_commitment",
]
APP_TABS = {"mine": "我的申请", "provider": "待我答复", "all": "全部"}
GRANT_TABS = {"mine": "我的授权", "provided": "我提供的授权", "all": "全部授权"}
EVENT_LABELS = {
    "create": "创建",
    "edit": "修改",
    "transfer": "转移",
    **{action: step.label for action, step in service.TRANSITIONS.items()},
    **{action: spec[2] for action, spec in service.GRANT_TRANSITIONS.items()},
}
# The forms of the application page, each serving one or more TRANSITIONS actions.
ACTION_GROUPS = {
    "submit": ("submit",),
    "withdraw": ("withdraw",),
    "review": ("review_pass", "review_return"),
    "decide": ("approve", "partially_approve", "reject"),
    "negotiate": ("negotiate",),
    "escalate": ("escalate",),
    "coordinate": ("coordinate_approve", "coordinate_partially_approve", "coordinate_uphold"),
}


# ---------------------------------------------------------------- helpers


def _is_dept_user(p: Principal) -> bool:
    return p.kind == "user" and p.role in service.DEPT_ROLES


def _require_sharing_user(page: Page) -> None:
    """Platform admin or a department's officer: those the sharing service answers."""
    require_login(page)
    orgs.require_role(page.principal, Role.PLATFORM_ADMIN, *service.DEPT_ROLES)


def days_left(today: date, due: date | None) -> int | None:
    """Working days from today to the due date (0: due today, negative: overdue)."""
    if due is None:
        return None
    try:
        return workdays.working_days_between(today, due)
    except workdays.CalendarUnknownYear:
        return None


def application_row(app: ShareApplication, today: date) -> dict[str, Any]:
    out = application_out(app)
    return {
        "app": app,
        "o": out,
        "days_left": days_left(today, app.due_at) if app.status in AWAITING else None,
    }


def roles_on(p: Principal, app: ShareApplication) -> set[str]:
    """The parts the caller plays on an application, as ``TRANSITIONS`` names them."""
    roles = set()
    if _is_dept_user(p) and p.department_id == app.consumer_id:
        roles.add("consumer")
    if _is_dept_user(p) and p.department_id == app.provider_id:
        roles.add("provider")
    if p.is_platform_admin:
        roles.add("platform")
    return roles


def allowed_actions(p: Principal, app: ShareApplication) -> list[str]:
    roles = roles_on(p, app)
    return [a for a, step in service.TRANSITIONS.items() if app.status in step.sources and step.who in roles]


def _user_names(page: Page, ids: Sequence[int | None]) -> dict[int, str]:
    wanted = {i for i in ids if i is not None}
    if not wanted:
        return {}
    rows = page.session.execute(select(User.id, User.display_name, User.username).where(User.id.in_(wanted)))
    return {uid: f"{name}（{username}）" for uid, name, username in rows}


def _client_apps(page: Page) -> list[ClientApp]:
    """The caller's department's active systems (a read: no service function lists them
    for data officers)."""
    if page.principal.department_id is None:
        return []
    stmt = (
        select(ClientApp)
        .where(ClientApp.department_id == page.principal.department_id, ClientApp.is_active.is_(True))
        .order_by(ClientApp.name)
    )
    return list(page.session.scalars(stmt))


def _add_error(errors: dict[str, list[str]], name: str, message: str) -> None:
    errors.setdefault(name, []).append(message)


def _date_field(form: FormData, name: str, errors: dict[str, list[str]], required: bool = True) -> date | None:
    text = form_text(form, name)
    if not text:
        if required:
            _add_error(errors, name, "请填写日期")
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        _add_error(errors, name, "日期格式应为 年-月-日，如 2025-01-31")
        return None


def _int_field(
    form: FormData, name: str, errors: dict[str, list[str]], required: bool = True, what: str = "数量"
) -> int | None:
    text = form_text(form, name)
    if not text:
        if required:
            _add_error(errors, name, f"请填写{what}")
        return None
    try:
        value = int(text)
    except ValueError:
        _add_error(errors, name, "请填写整数")
        return None
    if value > MAX_NUMBER:
        _add_error(errors, name, f"不能大于 {MAX_NUMBER}")
        return None
    return value


def _text_field(form: FormData, name: str, errors: dict[str, list[str]]) -> str:
    text = form_text(form, name)
    limit = TEXT_LIMITS.get(name)
    if limit and len(text) > limit:
        _add_error(errors, name, f"不能超过 {limit} 个字符")
    return text


def _strings(form: FormData, name: str) -> list[str]:
    return [v for v in form.getlist(name) if isinstance(v, str)]


def _refused(exc: AppError) -> bool:
    """Errors shown as their own page (login, 403, 404) rather than on the form."""
    return exc.status_code in (401, 403, 404)


def _tab_url(path: str, **params: str | None) -> str:
    pairs = [(k, v) for k, v in params.items() if v]
    return path + ("?" + urlencode(pairs) if pairs else "")


# ---------------------------------------------------------------- apply


def _apply_entry(page: Page, raw_id: str) -> CatalogEntry:
    """The entry an application form is for: published, 有条件共享, not the caller's own.
    (The service checks the same again when the form is posted.)"""
    require_login(page)
    orgs.require_role(page.principal, *service.DEPT_ROLES)
    if not raw_id.isdigit():
        raise NotFound("信息资源", "Catalog entry")
    entry = catalog.get_entry(page.session, page.principal, int(raw_id))
    if entry.status != "published":
        raise NotFound("信息资源", "Catalog entry")
    service.check_can_apply(entry, page.principal)
    return entry


def render_apply(
    page: Page,
    entry: CatalogEntry,
    values: dict[str, Any],
    errors: dict[str, list[str]] | None = None,
    status_code: int = 200,
    draft: ShareApplication | None = None,
) -> Response:
    errors = place_errors(errors or {}, set(APPLY_FIELDS))
    error_list = [(n, m) for n in ["", *APPLY_FIELDS] for m in errors.get(n, [])]
    return page.render(
        "sharing/apply.html",
        status_code=status_code,
        entry=entry,
        draft=draft,
        values=values,
        errors=errors,
        error_list=error_list,
        purpose_kinds=PURPOSE_KINDS,
        client_apps=_client_apps(page),
        commitment_text=COMMITMENT_TEXT,
        commitment_version=COMMITMENT_VERSION,
        today=service.today(),
    )


@router.get("/sharing/apply")
def apply_form(request: Request, page: Page = PageDep) -> Response:
    entry = _apply_entry(page, request.query_params.get("entry_id", ""))
    today = service.today()
    values: dict[str, Any] = {
        "items": [],
        "purpose_kind": "",
        "period_start": today.isoformat(),
        "period_end": today.replace(year=today.year + 1).isoformat() if (today.month, today.day) != (2, 29) else "",
        "calls_per_minute": str(service.DEFAULT_CALLS_PER_MINUTE),
    }
    return render_apply(page, entry, values)


@dataclass
class ApplyForm:
    """The application form as typed (kept as text to be shown again) and as parsed."""

    values: dict[str, Any]
    errors: dict[str, list[str]]
    period_start: date | None = None
    period_end: date | None = None
    rows: int | None = None
    calls: int | None = None

    @classmethod
    def read(cls, form: FormData) -> ApplyForm:
        values: dict[str, Any] = {name: form_text(form, name) for name in APPLY_FIELDS}
        values["items"] = _strings(form, "items")
        values["accept_commitment"] = bool(form.get("accept_commitment"))
        errors: dict[str, list[str]] = {}
        me = cls(values, errors)
        me.period_start = _date_field(form, "period_start", errors)
        me.period_end = _date_field(form, "period_end", errors)
        me.rows = _int_field(form, "rows_per_day", errors, what="预计每日数据量")
        me.calls = _int_field(form, "calls_per_minute", errors, required=False)
        for name in ("system_name", "purpose", "legal_basis"):
            _text_field(form, name, errors)
        return me

    @property
    def ok(self) -> bool:
        return not self.errors and None not in (self.period_start, self.period_end, self.rows)

    def terms(self) -> dict[str, Any]:
        """The keyword arguments of ``create_application`` / ``update_application``."""
        v = self.values
        return {
            "purpose_kind": v["purpose_kind"],
            "purpose": v["purpose"],
            "legal_basis": v["legal_basis"],
            "items": v["items"],
            "period_start": self.period_start,
            "period_end": self.period_end,
            "rows_per_day": self.rows,
            "calls_per_minute": self.calls,
        }


def _save_application(
    page: Page, entry: CatalogEntry, form: FormData, draft: ShareApplication | None = None
) -> Response:
    """Create (or edit) the draft and, for "提交申请", submit it — all or nothing."""
    typed = ApplyForm.read(form)
    submit_now = form_text(form, "action") == "submit"
    if not typed.ok:
        return render_apply(page, entry, typed.values, typed.errors, 422, draft)
    v = typed.values
    try:
        if draft is None:
            app = service.create_application(
                page.session,
                page.principal,
                entry_id=entry.id,
                system_name=v["system_name"] or None,
                client_id=v["client_id"] or None,
                **typed.terms(),
            )
        else:
            app = service.update_application(
                page.session,
                page.principal,
                draft.id,
                system_name=v["system_name"],
                client_id=v["client_id"],
                **typed.terms(),
            )
        if submit_now:
            service.submit(
                page.session, page.settings, page.principal, app.id, accept_commitment=bool(v["accept_commitment"])
            )
    except AppError as exc:
        if _refused(exc):
            raise
        page.rollback()  # neither the draft (or its edit) nor half a submission stays
        entry = catalog.get_entry(page.session, page.principal, entry.id)
        draft = service.get_application(page.session, page.principal, draft.id) if draft else None
        return render_apply(page, entry, v, error_map(exc), exc.status_code, draft)
    status = APPLICATION_STATUSES.get(app.status, app.status)
    page.flash(f"{'申请已提交' if submit_now else '草稿已保存'}（当前状态：{status}）")
    return page.redirect(f"/sharing/applications/{app.id}")


@router.post("/sharing/apply")
def apply_post(form: FormData = CheckedForm, page: Page = PageDep) -> Response:
    entry = _apply_entry(page, form_text(form, "entry_id"))
    return _save_application(page, entry, form)


def _own_draft(page: Page, application_id: int) -> ShareApplication:
    """A draft the caller's department may still edit (the service checks again on save)."""
    _require_sharing_user(page)
    app = service.get_application(page.session, page.principal, application_id)
    if "consumer" not in roles_on(page.principal, app):
        raise Forbidden("只有申请部门可以修改申请", "Only the applying department edits an application")
    if app.status != "draft":
        raise AppError(
            "sharing.transition_invalid",
            f"“{APPLICATION_STATUSES.get(app.status, app.status)}”状态下不能执行“修改”",
            f"Cannot edit in state {app.status}",
            status_code=409,
        )
    return app


def draft_values(page: Page, app: ShareApplication) -> dict[str, Any]:
    client = page.session.get(ClientApp, app.client_app_id) if app.client_app_id else None
    return {
        "items": list(app.items),
        "purpose_kind": app.purpose_kind,
        "purpose": app.purpose,
        "legal_basis": app.legal_basis,
        "period_start": app.period_start.isoformat(),
        "period_end": app.period_end.isoformat(),
        "rows_per_day": str(app.rows_per_day),
        "calls_per_minute": str(app.calls_per_minute),
        "system_name": "" if client else app.system_name,
        "client_id": client.client_id if client else "",
    }


@router.get("/sharing/applications/{application_id:int}/edit")
def edit_form(application_id: int, page: Page = PageDep) -> Response:
    app = _own_draft(page, application_id)
    return render_apply(page, app.entry, draft_values(page, app), draft=app)


@router.post("/sharing/applications/{application_id:int}/edit")
def edit_post(application_id: int, form: FormData = CheckedForm, page: Page = PageDep) -> Response:
    app = _own_draft(page, application_id)
    return _save_application(page, app.entry, form, app)


# ---------------------------------------------------------------- application lists


def _app_tabs(p: Principal) -> list[str]:
    if p.is_platform_admin:
        return ["all"]
    return ["mine", "provider"]


@router.get("/sharing/applications")
def applications_page(request: Request, page: Page = PageDep) -> Response:
    _require_sharing_user(page)
    tabs = _app_tabs(page.principal)
    tab = request.query_params.get("tab", "")
    tab = tab if tab in APP_TABS else tabs[0]
    # The provider's queue opens on what still waits for its answer.
    default = PENDING if tab == "provider" and "status" not in request.query_params else ""
    status = request.query_params.get("status", default)
    status = status if status in APPLICATION_STATUSES or (status == PENDING and tab == "provider") else ""
    overdue = request.query_params.get("overdue") == "1"
    today = service.today()

    def listed(one: str | None) -> list[ShareApplication]:
        return service.list_applications(
            page.session,
            page.principal,
            view=tab,
            status=one,
            overdue_on=today if overdue else None,
            limit=LIST_LIMIT,
        )

    if status == PENDING:
        apps = sorted(
            (a for one in PENDING_STATUSES for a in listed(one)),
            key=lambda a: (a.due_at is None, a.due_at or today, a.id),
        )[:LIST_LIMIT]
    else:
        apps = listed(status or None)
    context: dict[str, Any] = {
        "tab": tab,
        "tabs": [
            {"key": t, "label": APP_TABS[t], "url": _tab_url("/sharing/applications", tab=t), "current": t == tab}
            for t in tabs
        ],
        "status": status,
        "overdue": overdue,
        "statuses": ({PENDING: PENDING_LABEL} if tab == "provider" else {}) | APPLICATION_STATUSES,
        "rows": [application_row(a, today) for a in apps],
        "limit": LIST_LIMIT,
        "today": today,
    }
    htmx = request.headers.get("hx-request") == "true" and not request.headers.get("hx-history-restore-request")
    if htmx:
        return page.render("sharing/_applications_table.html", **context)
    return page.render("sharing/applications.html", **context)


# ---------------------------------------------------------------- one application


def _item_info(entry: CatalogEntry) -> dict[str, str]:
    return {i.name: i.sensitivity for i in entry.items}


def render_application(
    page: Page,
    application_id: int,
    status_code: int = 200,
    action_errors: dict[str, str] | None = None,
    values: dict[str, Any] | None = None,
    log: bool = False,
) -> Response:
    app = service.get_application(page.session, page.principal, application_id)
    history = service.application_history(page.session, page.principal, application_id)
    if log:
        log_access(
            page.settings,
            page.principal,
            "sharing.application.read",
            resource=f"application:{app.id}",
            subject_department=app.provider.code,
        )
    today = service.today()
    names = _user_names(
        page, [app.applicant_id, app.commitment_by_id, app.decided_by_id, *(h.actor_id for h in history)]
    )
    actions = allowed_actions(page.principal, app)
    return page.render(
        "sharing/application.html",
        status_code=status_code,
        r=application_row(app, today),
        app=app,
        history=history,
        event_labels=EVENT_LABELS,
        statuses={**APPLICATION_STATUSES, **GRANT_STATUSES},
        names=names,
        actions=actions,
        groups={g for g, members in ACTION_GROUPS.items() if any(a in actions for a in members)},
        action_errors=action_errors or {},
        values=values or {},
        sensitivity=_item_info(app.entry),
        sensitive_names=[n for n, level in _item_info(app.entry).items() if level in SENSITIVE],
        roles=roles_on(page.principal, app),
        commitment_text=COMMITMENT_TEXT,
        commitment_version=COMMITMENT_VERSION,
        purpose_kinds=PURPOSE_KINDS,
    )


@router.get("/sharing/applications/{application_id:int}")
def application_page(application_id: int, page: Page = PageDep) -> Response:
    _require_sharing_user(page)
    return render_application(page, application_id, log=True)


def _step(
    page: Page,
    application_id: int,
    group: str,
    run: Callable[[], ShareApplication],
    values: dict[str, Any] | None = None,
) -> Response:
    """Run one step of the life cycle; a refused step is shown by the form that asked."""
    _require_sharing_user(page)
    try:
        app = run()
    except AppError as exc:
        if _refused(exc):
            raise
        page.rollback()
        return render_application(page, application_id, exc.status_code, {group: exc.message}, values)
    status = APPLICATION_STATUSES.get(app.status, app.status)
    page.flash(f"已完成（当前状态：{status}）")
    return page.redirect(f"/sharing/applications/{application_id}")


def _form_values(form: FormData) -> dict[str, Any]:
    values: dict[str, Any] = {
        k: form_text(form, k)
        for k in ("decision", "reason", "valid_from", "valid_to", "rows_per_day", "calls_per_minute")
    }
    values["items"] = _strings(form, "items")
    values["clear_items"] = _strings(form, "clear_items")
    return values


class FormInvalid(AppError):
    status_code = 422

    def __init__(self, errors: dict[str, list[str]]) -> None:
        name = next(iter(errors))
        super().__init__(
            "form_invalid",
            "；".join(m for ms in errors.values() for m in ms),
            "The form holds invalid values",
            field=name,
        )


def approval_from(form: FormData) -> service.Approval:
    """What the provider (or the platform admin) allows: the narrowing fields count only for
    a partial approval; items in clear for any approval."""
    clear = tuple(_strings(form, "clear_items"))
    if form_text(form, "decision") != "partial":
        return service.Approval(clear_items=clear)
    errors: dict[str, list[str]] = {}
    valid_from = _date_field(form, "valid_from", errors, required=False)
    valid_to = _date_field(form, "valid_to", errors, required=False)
    rows = _int_field(form, "rows_per_day", errors, required=False)
    calls = _int_field(form, "calls_per_minute", errors, required=False)
    if errors:
        raise FormInvalid(errors)
    return service.Approval(
        items=_strings(form, "items"),
        valid_from=valid_from,
        valid_to=valid_to,
        rows_per_day=rows,
        calls_per_minute=calls,
        clear_items=clear,
    )


def _reason(form: FormData) -> str | None:
    text = form_text(form, "reason")
    if len(text) > TEXT_LIMITS["reason"]:
        raise FormInvalid({"reason": [f"理由不能超过 {TEXT_LIMITS['reason']} 个字符"]})
    return text or None


@router.post("/sharing/applications/{application_id:int}/submit")
def submit_application(application_id: int, form: FormData = CheckedForm, page: Page = PageDep) -> Response:
    accept = bool(form.get("accept_commitment"))
    return _step(
        page,
        application_id,
        "submit",
        lambda: service.submit(page.session, page.settings, page.principal, application_id, accept_commitment=accept),
    )


@router.post("/sharing/applications/{application_id:int}/withdraw")
def withdraw_application(application_id: int, form: FormData = CheckedForm, page: Page = PageDep) -> Response:
    return _step(
        page,
        application_id,
        "withdraw",
        lambda: service.withdraw(page.session, page.principal, application_id, _reason(form)),
    )


@router.post("/sharing/applications/{application_id:int}/review")
def review_application(application_id: int, form: FormData = CheckedForm, page: Page = PageDep) -> Response:
    return _step(
        page,
        application_id,
        "review",
        lambda: service.review(
            page.session,
            page.settings,
            page.principal,
            application_id,
            decision=form_text(form, "decision"),
            reason=_reason(form),
        ),
        _form_values(form),
    )


@router.post("/sharing/applications/{application_id:int}/decide")
def decide_application(application_id: int, form: FormData = CheckedForm, page: Page = PageDep) -> Response:
    return _step(
        page,
        application_id,
        "decide",
        lambda: service.decide(
            page.session,
            page.principal,
            application_id,
            decision=form_text(form, "decision"),
            reason=_reason(form),
            approval=approval_from(form),
        ),
        _form_values(form),
    )


@router.post("/sharing/applications/{application_id:int}/negotiate")
def negotiate_application(application_id: int, form: FormData = CheckedForm, page: Page = PageDep) -> Response:
    return _step(
        page,
        application_id,
        "negotiate",
        lambda: service.negotiate(page.session, page.principal, application_id, _reason(form)),
        _form_values(form),
    )


@router.post("/sharing/applications/{application_id:int}/escalate")
def escalate_application(application_id: int, form: FormData = CheckedForm, page: Page = PageDep) -> Response:
    return _step(
        page,
        application_id,
        "escalate",
        lambda: service.escalate(page.session, page.principal, application_id, _reason(form)),
        _form_values(form),
    )


@router.post("/sharing/applications/{application_id:int}/coordinate")
def coordinate_application(application_id: int, form: FormData = CheckedForm, page: Page = PageDep) -> Response:
    return _step(
        page,
        application_id,
        "coordinate",
        lambda: service.coordinate(
            page.session,
            page.principal,
            application_id,
            decision=form_text(form, "decision"),
            reason=_reason(form),
            approval=approval_from(form),
        ),
        _form_values(form),
    )


# ---------------------------------------------------------------- grants


def _entry_names(page: Page, ids: Sequence[int]) -> dict[int, str]:
    if not ids:
        return {}
    rows = page.session.execute(select(CatalogEntry.id, CatalogEntry.name).where(CatalogEntry.id.in_(set(ids))))
    return {i: name for i, name in rows}


def grant_row(grant: Grant, today: date, names: dict[int, str]) -> dict[str, Any]:
    return {
        "g": grant,
        "entry_name": names.get(grant.entry_id, grant.entry_code),
        "status_label": GRANT_STATUSES.get(grant.status, grant.status),
        "purpose_label": PURPOSE_KINDS.get(grant.purpose_kind, grant.purpose_kind),
        "ended": grant.valid_to is not None and grant.valid_to < today,
        "masked": [i for i in grant.items if i not in set(grant.clear_items or [])],
    }


def _grant_tabs(p: Principal) -> list[str]:
    return ["all"] if p.is_platform_admin else ["mine", "provided"]


@router.get("/sharing/grants")
def grants_page(request: Request, page: Page = PageDep) -> Response:
    _require_sharing_user(page)
    tabs = _grant_tabs(page.principal)
    tab = request.query_params.get("tab", "")
    tab = tab if tab in GRANT_TABS else tabs[0]
    status = request.query_params.get("status", "")
    status = status if status in GRANT_STATUSES else ""
    grants = service.list_grants(page.session, page.principal, view=tab, status=status or None, limit=LIST_LIMIT)
    today = service.today()
    names = _entry_names(page, [g.entry_id for g in grants])
    return page.render(
        "sharing/grants.html",
        tab=tab,
        tabs=[
            {"key": t, "label": GRANT_TABS[t], "url": _tab_url("/sharing/grants", tab=t), "current": t == tab}
            for t in tabs
        ],
        status=status,
        statuses=GRANT_STATUSES,
        rows=[grant_row(g, today, names) for g in grants],
        limit=LIST_LIMIT,
    )


def grant_history(page: Page, grant_id: int) -> list[ShareEvent]:
    """The grant's events (a read: the service has no history function for grants; the
    caller's right to see the grant was checked by ``get_grant``)."""
    stmt = select(ShareEvent).where(ShareEvent.grant_id == grant_id).order_by(ShareEvent.id)
    return list(page.session.scalars(stmt))


TRANSFERABLE = ("active", "suspended")


def grant_actions(p: Principal, grant: Grant) -> list[str]:
    """What the caller may do to a grant now: the provider's ``GRANT_TRANSITIONS``, and
    转移 (the provider or the platform admin, see ``service.transfer_grant``)."""
    provider = _is_dept_user(p) and p.department_id == grant.provider_id
    actions = [a for a, spec in service.GRANT_TRANSITIONS.items() if provider and grant.status in spec[0]]
    if (provider or p.is_platform_admin) and grant.status in TRANSFERABLE:
        actions.append("transfer")
    return actions


def render_grant(
    page: Page, grant_id: int, status_code: int = 200, action_errors: dict[str, str] | None = None, log: bool = False
) -> Response:
    grant = service.get_grant(page.session, page.principal, grant_id)
    if log:
        log_access(
            page.settings,
            page.principal,
            "sharing.grant.read",
            resource=grant.entry_code,
            subject_department=grant.provider.code,
            grant_id=grant.id,
        )
    history = grant_history(page, grant.id)
    today = service.today()
    entry = page.session.get(CatalogEntry, grant.entry_id)
    actions = grant_actions(page.principal, grant)
    return page.render(
        "sharing/grant.html",
        status_code=status_code,
        r=grant_row(grant, today, {grant.entry_id: entry.name} if entry else {}),
        grant=grant,
        history=history,
        event_labels=EVENT_LABELS,
        statuses={**GRANT_STATUSES, **APPLICATION_STATUSES},
        names=_user_names(page, [grant.created_by_id, *(h.actor_id for h in history)]),
        actions=actions,
        action_errors=action_errors or {},
        sensitivity=_item_info(entry) if entry else {},
        labels={"transfer": "转移", **{a: spec[2] for a, spec in service.GRANT_TRANSITIONS.items()}},
        departments=orgs.list_departments(page.session) if "transfer" in actions else [],
        today=today,
    )


@router.get("/sharing/grants/{grant_id:int}")
def grant_page(grant_id: int, page: Page = PageDep) -> Response:
    _require_sharing_user(page)
    return render_grant(page, grant_id, log=True)


@router.post("/sharing/grants/{grant_id:int}/{action}")
def change_grant(grant_id: int, action: str, form: FormData = CheckedForm, page: Page = PageDep) -> Response:
    _require_sharing_user(page)
    if action not in service.GRANT_TRANSITIONS and action != "transfer":
        raise NotFound("操作", "Action")
    try:
        if action == "transfer":
            too_long: dict[str, list[str]] = {}
            system_name = _text_field(form, "system_name", too_long)
            if too_long:
                raise FormInvalid(too_long)
            grant = service.transfer_grant(
                page.session,
                page.principal,
                grant_id,
                department_code=form_text(form, "department_code"),
                reason=_reason(form),
                system_name=system_name or None,
            )
            page.flash(f"授权已转移至{grant.consumer.name}")
            return page.redirect(f"/sharing/grants/{grant_id}")
        valid_to = None
        if action == "renew":
            errors: dict[str, list[str]] = {}
            valid_to = _date_field(form, "valid_to", errors)
            if errors:
                raise FormInvalid(errors)
        grant = service.change_grant(page.session, page.principal, grant_id, action, _reason(form), valid_to=valid_to)
    except AppError as exc:
        if _refused(exc):
            raise
        page.rollback()
        return render_grant(page, grant_id, exc.status_code, {action: exc.message})
    label = service.GRANT_TRANSITIONS[action][2]
    page.flash(f"已{label}授权（当前状态：{GRANT_STATUSES.get(grant.status, grant.status)}）")
    return page.redirect(f"/sharing/grants/{grant_id}")


@router.post("/sharing/grants/unconditional")
def unconditional_grant(form: FormData = CheckedForm, page: Page = PageDep) -> Response:
    """无条件共享: the button on the entry page; the grant is given at once."""
    require_login(page)
    raw = form_text(form, "entry_id")
    if not raw.isdigit():
        raise NotFound("信息资源", "Catalog entry")
    entry_id = int(raw)
    try:
        grant = service.request_unconditional_grant(
            page.session,
            page.principal,
            entry_id,
            purpose_kind=form_text(form, "purpose_kind"),
            purpose=form_text(form, "purpose")[: TEXT_LIMITS["purpose"]] or None,
        )
    except AppError as exc:
        if _refused(exc):
            raise
        page.rollback()
        from datatong.catalog.pages import render_entry

        entry = catalog.get_entry(page.session, page.principal, entry_id)
        return render_entry(page, entry, exc.status_code, {"grant": exc.message})
    page.flash(f"已获得授权：{grant.entry_code}（{'、'.join(grant.items)}）")
    return page.redirect(f"/sharing/grants/{grant.id}")


# ---------------------------------------------------------------- the platform admin's board


@router.get("/sharing/board")
def board_page(page: Page = PageDep) -> Response:
    from datatong.sharing import needs_pages  # the needs and cases sections live there

    require_login(page)
    orgs.require_platform_admin(page.principal)
    today = service.today()

    def rows(**kwargs: Any) -> list[dict[str, Any]]:
        apps = service.list_applications(page.session, page.principal, view="all", limit=LIST_LIMIT, **kwargs)
        return [application_row(a, today) for a in apps]

    overdue = rows(overdue_on=today)
    for r in overdue:
        left = r["days_left"]
        r["days_overdue"] = -left if left is not None else None
    sections = [
        {"key": "coordination", "title": "协调中", "rows": rows(status="coordination"), "empty": "暂无待协调的申请。"},
        {"key": "negotiation", "title": "协商中", "rows": rows(status="negotiation"), "empty": "暂无协商中的申请。"},
        {
            "key": "compliance_review",
            "title": "待符合性审查",
            "rows": rows(status="compliance_review"),
            "empty": "暂无待审查的申请。",
        },
    ]
    return page.render(
        "sharing/board.html",
        overdue=overdue,
        sections=sections,
        compliance_on=service.compliance_review_on(page.session, page.settings),
        today=today,
        **needs_pages.board_context(page),
    )


@router.post("/sharing/board/compliance")
def board_compliance(form: FormData = CheckedForm, page: Page = PageDep) -> Response:
    require_login(page)
    on = service.set_compliance_review(page.session, page.principal, form_text(form, "on") == "1")
    page.flash("已开启符合性审查：此后提交的申请先经平台审查" if on else "已关闭符合性审查：此后提交的申请直接送提供方")
    return page.redirect("/sharing/board")
