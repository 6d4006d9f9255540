"""Administration pages: departments (as a tree) and users."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from starlette.datastructures import FormData

from datatong.errors import AppError, Forbidden
from datatong.orgs import service as orgs
from datatong.orgs.models import LEVEL_LABELS, ROLE_LABELS, Department, Role, User
from datatong.orgs.security import locked_for
from datatong.web.pages import (
    CheckedForm,
    Page,
    PageDep,
    PageRoute,
    error_map,
    form_text,
    place_errors,
)

router: APIRouter = APIRouter(route_class=PageRoute, include_in_schema=False)

DEPT_FIELDS = ("code", "name", "short_name", "level", "parent_code", "contact")
LEVELS = {str(k): v for k, v in LEVEL_LABELS.items()}
ROLES = {str(k): v for k, v in ROLE_LABELS.items()}
USER_FIELDS = ("username", "display_name", "password", "role", "department_code")


def _refused_or_inline(exc: AppError) -> None:
    """Who-may-do-what refusals get the error page; input errors stay on the form."""
    if exc.status_code in (401, 403, 404):
        raise exc


# ---------------------------------------------------------------- departments


def department_tree(departments: list[Department]) -> list[tuple[Department, int]]:
    """Departments in tree order with their depth (parents before children)."""
    ids = {d.id for d in departments}
    children: dict[int | None, list[Department]] = {}
    for d in departments:
        parent = d.parent_id if d.parent_id in ids else None
        children.setdefault(parent, []).append(d)
    out: list[tuple[Department, int]] = []

    def walk(parent: int | None, depth: int) -> None:
        for d in sorted(children.get(parent, []), key=lambda d: d.code):
            out.append((d, depth))
            walk(d.id, depth + 1)

    walk(None, 0)
    return out


def render_departments(
    page: Page,
    status_code: int = 200,
    values: dict[str, str] | None = None,
    errors: dict[str, list[str]] | None = None,
) -> Response:
    departments = orgs.list_departments(page.session)
    tree = [
        {
            "dept": d,
            "depth": depth,
            "level": LEVELS.get(d.level, d.level),
            "manage": orgs.can_manage_department(page.principal, d.id),
        }
        for d, depth in department_tree(departments)
    ]
    return page.render(
        "admin/departments.html",
        status_code=status_code,
        tree=tree,
        departments=departments,
        levels=LEVELS,
        values=values or {"level": "city"},
        errors=place_errors(errors or {}, set(DEPT_FIELDS)),
    )


def _require_admin(page: Page) -> None:
    orgs.require_role(page.principal, Role.PLATFORM_ADMIN, Role.DEPT_ADMIN)


@router.get("/admin/departments")
def departments_page(page: Page = PageDep) -> Response:
    _require_admin(page)
    return render_departments(page)


@router.post("/admin/departments")
def create_department(form: FormData = CheckedForm, page: Page = PageDep) -> Response:
    orgs.require_platform_admin(page.principal)
    values = {name: form_text(form, name) for name in DEPT_FIELDS}
    try:
        dept = orgs.create_department(
            page.session,
            page.principal,
            values["code"],
            values["name"],
            values["level"],
            values["parent_code"] or None,
            values["short_name"] or None,
            values["contact"] or None,
        )
    except AppError as exc:
        _refused_or_inline(exc)
        page.rollback()
        errors = error_map(exc)
        if "department_code" in errors:  # an unknown parent is reported by its code
            errors["parent_code"] = errors.pop("department_code")
        return render_departments(page, exc.status_code, values, errors)
    page.flash(f"已新建部门：{dept.name}")
    return page.redirect("/admin/departments")


def _managed_department(page: Page, department_id: int) -> Department:
    _require_admin(page)
    dept = orgs.get_department(page.session, department_id)
    if not orgs.can_manage_department(page.principal, dept.id):
        raise Forbidden("只能管理本部门", "You may manage only your own department")
    return dept


def render_department_form(
    page: Page,
    dept: Department,
    status_code: int = 200,
    values: dict[str, str] | None = None,
    errors: dict[str, list[str]] | None = None,
) -> Response:
    values = values or {
        "name": dept.name,
        "short_name": dept.short_name or "",
        "contact": dept.contact or "",
    }
    return page.render(
        "admin/department_edit.html",
        status_code=status_code,
        dept=dept,
        values=values,
        errors=place_errors(errors or {}, {"name", "short_name", "contact"}),
        level=LEVELS.get(dept.level, dept.level),
    )


@router.get("/admin/departments/{department_id:int}/edit")
def department_form(department_id: int, page: Page = PageDep) -> Response:
    return render_department_form(page, _managed_department(page, department_id))


@router.post("/admin/departments/{department_id:int}/edit")
def update_department(department_id: int, form: FormData = CheckedForm, page: Page = PageDep) -> Response:
    dept = _managed_department(page, department_id)
    values = {name: form_text(form, name) for name in ("name", "short_name", "contact")}
    try:
        orgs.update_department(page.session, page.principal, dept.id, **values)
    except AppError as exc:
        _refused_or_inline(exc)
        page.rollback()
        return render_department_form(page, dept, exc.status_code, values, error_map(exc))
    page.flash(f"已保存部门信息：{dept.name}")
    return page.redirect("/admin/departments")


# ---------------------------------------------------------------- users


def _assignable_roles(page: Page) -> dict[str, str]:
    roles = list(Role) if page.principal.is_platform_admin else [Role.DEPT_ADMIN, Role.DATA_OFFICER]
    return {str(r): ROLE_LABELS[r] for r in roles}


def render_users(
    page: Page,
    status_code: int = 200,
    values: dict[str, str] | None = None,
    errors: dict[str, list[str]] | None = None,
    row_errors: dict[int, str] | None = None,
) -> Response:
    users: list[User] = orgs.list_users(page.session, page.principal)  # refuses non-admins
    departments = (
        orgs.list_departments(page.session)
        if page.principal.is_platform_admin
        else [orgs.get_department(page.session, page.principal.department_id or 0)]
    )
    default: dict[str, Any] = {
        "role": str(Role.DATA_OFFICER),
        "department_code": page.principal.department_code or "",
    }
    shown = set(USER_FIELDS) - (set() if page.principal.is_platform_admin else {"department_code"})
    return page.render(
        "admin/users.html",
        status_code=status_code,
        users=users,
        departments=departments,
        roles=_assignable_roles(page),
        role_labels=ROLES,
        locked={u.id for u in users if locked_for(u)},
        values=values or default,
        errors=place_errors(errors or {}, shown),
        row_errors=row_errors or {},
    )


@router.get("/admin/users")
def users_page(page: Page = PageDep) -> Response:
    return render_users(page)


@router.post("/admin/users")
def create_user(form: FormData = CheckedForm, page: Page = PageDep) -> Response:
    orgs.require_role(page.principal, Role.PLATFORM_ADMIN, Role.DEPT_ADMIN)
    values = {name: form_text(form, name) for name in USER_FIELDS}
    password = form.get("password")
    password = password if isinstance(password, str) else ""
    try:
        user = orgs.create_user(
            page.session,
            page.principal,
            values["username"],
            values["display_name"],
            password,
            values["role"],
            values["department_code"] or None,
        )
    except AppError as exc:
        _refused_or_inline(exc)
        page.rollback()
        values["password"] = ""  # never echo a password back into the page
        return render_users(page, exc.status_code, values, error_map(exc))
    page.flash(f"已新建用户：{user.display_name}（{user.username}）")
    return page.redirect("/admin/users")


def _update_user(page: Page, user_id: int, done: str, **changes: Any) -> Response:
    """One change to a user; a refused input is shown on that user's row."""
    try:
        user = orgs.update_user(page.session, page.principal, user_id, **changes)
    except AppError as exc:
        _refused_or_inline(exc)
        page.rollback()
        return render_users(page, exc.status_code, row_errors={user_id: exc.message})
    page.flash(f"{done}：{user.display_name}（{user.username}）")
    return page.redirect("/admin/users")


@router.post("/admin/users/{user_id:int}/active")
def set_active(user_id: int, form: FormData = CheckedForm, page: Page = PageDep) -> Response:
    active = form_text(form, "active") == "1"
    return _update_user(page, user_id, "已启用" if active else "已停用", is_active=active)


@router.post("/admin/users/{user_id:int}/password")
def reset_password(user_id: int, form: FormData = CheckedForm, page: Page = PageDep) -> Response:
    password = form.get("password")
    return _update_user(page, user_id, "已重置密码", password=password if isinstance(password, str) else "")


@router.post("/admin/users/{user_id:int}/unlock")
def unlock(user_id: int, form: FormData = CheckedForm, page: Page = PageDep) -> Response:
    orgs.managed_user(page.session, page.principal, user_id)
    return _update_user(page, user_id, "已解锁", unlock=True)


@router.post("/admin/users/{user_id:int}/totp-reset")
def totp_reset(user_id: int, form: FormData = CheckedForm, page: Page = PageDep) -> Response:
    orgs.managed_user(page.session, page.principal, user_id)
    return _update_user(page, user_id, "已重置双因素认证", totp_reset=True)


# Login steps, one's own account and the security policy.
from datatong.orgs.account_pages import router as account_router  # noqa: E402

router.include_router(account_router)
