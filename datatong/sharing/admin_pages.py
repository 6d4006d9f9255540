"""The platform admin's sharing settings pages: the work calendar (工作日历: the years the
deadlines can be counted on, a year's holiday notice entered by hand) and the masking
rules (脱敏规则).

Thin like every page: parsing and rules are ``datatong.sharing.calendar`` and
``datatong.sharing.policy``; after a year is entered or deleted every running deadline is
recounted (``service.recompute_due_dates``), as the API does.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from starlette.datastructures import FormData

from datatong.errors import AppError, NotFound
from datatong.orgs import service as orgs
from datatong.sharing import calendar, masking, policy, service
from datatong.sharing.needs_pages import FormInvalid, check_lengths, form_status, shown
from datatong.web.pages import CheckedForm, Page, PageDep, PageRoute, error_map, form_text, require_login

router: APIRouter = APIRouter(route_class=PageRoute, include_in_schema=False)

CALENDAR_FIELDS = ["year", "notice", "content"]
CALENDAR_LIMITS = {"notice": 200, "content": 20000}
EXAMPLE = "2027-01-01 休 元旦\n2027-02-06 至 2027-02-12 休 春节\n2027-02-14 班 春节调休"


def require_platform_admin(page: Page) -> None:
    require_login(page)  # anonymous: to the login form
    orgs.require_platform_admin(page.principal)  # others: the 403 page


# ---------------------------------------------------------------- work calendar


def render_calendar(
    page: Page, values: dict[str, Any] | None = None, errors: dict[str, list[str]] | None = None, status_code: int = 200
) -> Response:
    errors = errors or {}
    placed: dict[str, list[str]] = {}
    for name, messages in errors.items():
        # The parser's messages (no field: they name the line) belong to the text box.
        key = name if name in CALENDAR_FIELDS else "content"
        placed.setdefault(key, []).extend(messages)
    return page.render(
        "sharing/admin/calendar.html",
        status_code=status_code,
        years=calendar.list_years(page.session, page.principal),
        values=values or {"year": str(service.today().year + 1)},
        errors=placed,
        error_list=[(n, m) for n in CALENDAR_FIELDS for m in placed.get(n, [])],
        example=EXAMPLE,
    )


@router.get("/sharing/admin/calendar")
def calendar_page(page: Page = PageDep) -> Response:
    require_platform_admin(page)
    return render_calendar(page)


def _year(text: str) -> int:
    if not text:
        raise FormInvalid("year", "请填写年份")
    if not text.isdigit() or len(text) != 4 or not 2000 <= int(text) <= 2100:
        raise FormInvalid("year", "年份应为 2000–2100 之间的四位数字，如 2027")
    return int(text)


@router.post("/sharing/admin/calendar")
def calendar_import(form: FormData = CheckedForm, page: Page = PageDep) -> Response:
    require_platform_admin(page)
    values = {name: form_text(form, name) for name in CALENDAR_FIELDS}
    try:
        check_lengths(values, CALENDAR_LIMITS)
        year = _year(values["year"])
        if not values["notice"]:
            raise FormInvalid("notice", "请填写通知文号或标题（如 国办发明电〔2026〕7号）")
        if not values["content"]:
            raise FormInvalid("content", "请填写放假和调休安排")
        plan = calendar.parse(values["content"], year, values["notice"])
        if plan.year != year:  # JSON naming another year than the form
            raise FormInvalid("year", f"内容中的年份 {plan.year} 与填写的年份 {year} 不一致")
        calendar.import_year(page.session, page.principal, plan)
        moved = service.recompute_due_dates(page.session, page.settings)
    except AppError as exc:
        if not shown(exc):
            raise
        page.rollback()
        calendar.load(page.session)  # the refused year is not in force in this process either
        return render_calendar(page, values, error_map(exc), form_status(exc))
    holidays = sum(1 for working, _ in plan.days.values() if not working)
    page.flash(
        f"已导入 {plan.year} 年工作日历：放假 {holidays} 天、调休上班 {len(plan.days) - holidays} 天；"
        f"重算了 {moved} 个在办申请的截止日期"
    )
    return page.redirect(f"/sharing/admin/calendar/{plan.year}")


def _year_info(page: Page, year: int) -> dict[str, Any]:
    info = next((y for y in calendar.list_years(page.session, page.principal) if y["year"] == year), None)
    if info is None:
        raise NotFound(f"{year} 年工作日历", f"work calendar {year}")
    return info


@router.get("/sharing/admin/calendar/{year:int}")
def calendar_year_page(year: int, page: Page = PageDep) -> Response:
    require_platform_admin(page)
    info = _year_info(page, year)  # before any query: a year no column holds is simply missing
    days = calendar.year_days(page.session, year)
    return page.render(
        "sharing/admin/calendar_year.html",
        info=info,
        days=days,
        holidays=sum(1 for d in days if not d.is_working),
        workdays=sum(1 for d in days if d.is_working),
    )


@router.post("/sharing/admin/calendar/{year:int}/delete")
def calendar_delete(year: int, form: FormData = CheckedForm, page: Page = PageDep) -> Response:
    require_platform_admin(page)
    info = _year_info(page, year)
    if info["source"] != "platform":
        raise NotFound(f"平台导入的 {year} 年工作日历", f"work calendar {year} entered on the platform")
    calendar.delete_year(page.session, page.principal, year)
    moved = service.recompute_due_dates(page.session, page.settings)
    page.flash(f"已删除平台导入的 {year} 年工作日历；重算了 {moved} 个在办申请的截止日期")
    return page.redirect("/sharing/admin/calendar")


# ---------------------------------------------------------------- masking rules


def render_masking(
    page: Page,
    values: dict[str, dict[str, str]] | None = None,
    errors: dict[str, list[str]] | None = None,
    status_code: int = 200,
) -> Response:
    table = policy.masking_table(page.session, page.principal)
    if values is None:
        values = {
            r["kind"]: {
                "mode": r["mode"],
                "head": "" if r["head"] is None else str(r["head"]),
                "tail": "" if r["tail"] is None else str(r["tail"]),
            }
            for r in table
        }
    return page.render(
        "sharing/admin/masking.html",
        status_code=status_code,
        rules=table,
        modes=masking.MODES,
        max_keep=masking.MAX_KEEP,
        values=values,
        errors=[m for ms in (errors or {}).values() for m in ms],
    )


@router.get("/sharing/admin/masking")
def masking_page(page: Page = PageDep) -> Response:
    require_platform_admin(page)
    return render_masking(page)


def _keep_number(text: str, label: str, what: str) -> int:
    if not text:
        return 0
    if not text.isdigit() or len(text) > 2:
        raise FormInvalid("rules", f"{label}：{what}应为 0–{masking.MAX_KEEP} 的整数")
    return int(text)


@router.post("/sharing/admin/masking")
def masking_save(form: FormData = CheckedForm, page: Page = PageDep) -> Response:
    require_platform_admin(page)
    kinds = [k for k in masking.KINDS if k != "none"]
    values = {
        k: {
            "mode": form_text(form, f"mode_{k}") or "default",
            "head": form_text(form, f"head_{k}"),
            "tail": form_text(form, f"tail_{k}"),
        }
        for k in kinds
    }
    try:
        config: dict[str, dict[str, Any]] = {}
        for kind, v in values.items():
            label = masking.RULES[kind].label
            if v["mode"] not in masking.MODES:
                raise FormInvalid("rules", f"{label}：请选择脱敏方式")
            rule: dict[str, Any] = {"mode": v["mode"]}
            if v["mode"] == "keep":
                rule["head"] = _keep_number(v["head"], label, "保留前几位")
                rule["tail"] = _keep_number(v["tail"], label, "保留后几位")
            config[kind] = rule
        policy.set_masking_rules(page.session, page.principal, config)
    except AppError as exc:
        if not shown(exc):
            raise
        page.rollback()
        return render_masking(page, values, error_map(exc), form_status(exc))
    page.flash("脱敏规则已保存，立即用于此后的数据交换")
    return page.redirect("/sharing/admin/masking")
