"""Login (password, TOTP code, 统一身份认证), one's own account (password, TOTP
enrolment) and the platform's security policy — as pages.

Between the steps of a login the signed session cookie holds a short-lived marker:

* ``pending`` — password (or the identity provider) accepted, a TOTP code is due;
* ``enrol`` — accepted, but the role requires TOTP and the account has none: only the
  enrolment page is open until it is done.

Neither is a login: ``get_principal`` sees only ``uid``, so both leave the caller anonymous.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from datatong.errors import AppError, Unauthenticated
from datatong.orgs import oidc, security
from datatong.orgs import service as orgs
from datatong.orgs.models import ROLE_LABELS, Role, User
from datatong.orgs.service import Principal, principal_for
from datatong.web import csrf, deps
from datatong.web.deps import start_session
from datatong.web.pages import CheckedForm, Page, PageDep, PageRoute, error_map, form_text, safe_next
from datatong.web.ratelimit import check_login_rate

router: APIRouter = APIRouter(route_class=PageRoute, include_in_schema=False)

PENDING_SECONDS = 5 * 60
ENROL_SECONDS = security.ENROL_TOKEN_MINUTES * 60
ROLES = {str(k): v for k, v in ROLE_LABELS.items()}


def _secret(form: FormData, name: str) -> str:
    """A password or code exactly as typed (not stripped, never echoed back)."""
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response


def _marker(request: Request, name: str, max_age: int) -> dict[str, Any] | None:
    data = request.session.get(name)
    if not isinstance(data, dict) or not isinstance(data.get("at"), int) or deps.clock() - data["at"] > max_age:
        request.session.pop(name, None)
        return None
    return data


def _marked_user(page: Page, name: str, max_age: int) -> User | None:
    data = _marker(page.request, name, max_age)
    if data is None:
        return None
    user = page.session.get(User, data.get("uid"))
    if user is None or not user.is_active or user.token_version != data.get("ver"):
        page.request.session.pop(name, None)
        return None
    return user


def _set_marker(request: Request, name: str, user: User, target: str, method: str) -> None:
    for key in ("uid", "ver", "iat", "seen", "pending", "enrol"):
        request.session.pop(key, None)
    request.session[name] = {
        "uid": user.id,
        "ver": user.token_version,
        "at": int(deps.clock()),
        "next": target,
        "method": method,
    }


def _logged_in(page: Page, user: User, method: str, target: str, totp: bool, notice: str | None = None) -> Response:
    security.complete_login(page.session, user, method, totp)
    start_session(page.request, user)
    csrf.rotate(page.request)
    if notice:
        page.flash(notice)
    return page.redirect(target)


def _after_first_factor(page: Page, user: User, method: str, target: str) -> Response:
    due = security.second_factor(page.session, user)
    if due == "otp":
        _set_marker(page.request, "pending", user, target, method)
        return page.redirect("/login")
    if due == "enrol":
        _set_marker(page.request, "enrol", user, target, method)
        page.flash("您的角色要求启用双因素认证：请用手机上的身份验证器扫描二维码完成绑定")
        return page.redirect("/account/totp")
    return _logged_in(page, user, method, target, False)


def render_login(
    page: Page, *, status_code: int = 200, error: AppError | None = None, username: str = "", target: str = "/catalog"
) -> Response:
    pending = _marked_user(page, "pending", PENDING_SECONDS)
    response = page.render(
        "login.html",
        status_code=status_code,
        step="otp" if pending else "password",
        pending_user=pending,
        next=target,
        username=username,
        error=error.message if error else None,
        oidc_enabled=page.settings.oidc_enabled,
    )
    if error is not None:
        response.headers.update(error.headers)
    return _no_store(response)


# ---------------------------------------------------------------- login


@router.get("/login")
def login_form(next: str | None = None, page: Page = PageDep) -> Response:
    if page.principal.is_authenticated:
        return RedirectResponse(safe_next(next), status_code=302)
    if _marked_user(page, "enrol", ENROL_SECONDS):
        return page.redirect("/account/totp")
    return render_login(page, target=safe_next(next))


@router.post("/login")
def login(form: FormData = CheckedForm, page: Page = PageDep) -> Response:
    username, target = form_text(form, "username"), safe_next(form_text(form, "next"))
    try:
        check_login_rate(page.request, username)
        user = security.check_password(page.session, username, _secret(form, "password"))
        orgs.rehash_if_needed(user, _secret(form, "password"))
        if _secret(form, "otp").strip() and security.second_factor(page.session, user) == "otp":
            # The code typed on the same form (password managers, scripted clients).
            security.check_code(page.session, page.settings, user, _secret(form, "otp"))
            return _logged_in(page, user, "password", target, True)
        return _after_first_factor(page, user, "password", target)
    except AppError as exc:
        page.rollback()
        status = exc.status_code if exc.status_code in (423, 429, 503) else 400
        return render_login(page, status_code=status, error=exc, username=username, target=target)


@router.post("/login/otp")
def login_code(form: FormData = CheckedForm, page: Page = PageDep) -> Response:
    user = _marked_user(page, "pending", PENDING_SECONDS)
    if user is None:
        page.flash("验证已超时，请重新登录")
        return page.redirect("/login")
    marker = page.request.session["pending"]
    try:
        check_login_rate(page.request, f"uid:{user.id}", kind="otp")
        security.check_code(page.session, page.settings, user, _secret(form, "otp"))
        page.request.session.pop("pending", None)
        return _logged_in(page, user, marker.get("method", "password"), safe_next(marker.get("next")), True)
    except AppError as exc:
        page.rollback()
        if exc.code == "auth.account_locked":
            page.request.session.pop("pending", None)
        status = exc.status_code if exc.status_code in (423, 429, 503) else 400
        return render_login(page, status_code=status, error=exc, target=safe_next(marker.get("next")))


@router.post("/login/cancel")
def login_cancel(form: FormData = CheckedForm, page: Page = PageDep) -> Response:
    for key in ("pending", "enrol"):
        page.request.session.pop(key, None)
    return page.redirect("/login")


@router.get("/login/oidc")
async def oidc_login(request: Request, next: str | None = None) -> Response:
    request.session["oidc_next"] = safe_next(next)
    return await oidc.redirect_to_provider(request, str(request.url_for("oidc_callback")))


@router.get("/login/oidc/callback", name="oidc_callback")
async def oidc_callback(request: Request, page: Page = PageDep) -> Response:
    claims = await oidc.claims_from_callback(request)
    target = safe_next(request.session.pop("oidc_next", None))
    return await run_in_threadpool(_oidc_finish, page, claims, target)


def _oidc_finish(page: Page, claims: dict[str, Any], target: str) -> Response:
    user = security.oidc_user(page.session, page.settings, claims)
    return _after_first_factor(page, user, "oidc", target)


# ---------------------------------------------------------------- my account


def _account_user(page: Page) -> tuple[User, Principal, bool]:
    """The account being looked after: the logged-in user's, or — during a login that
    requires enrolment — the enrolling one's (the flag says which)."""
    if page.principal.kind == "user" and page.principal.id is not None:
        return orgs.get_user(page.session, page.principal.id), page.principal, False
    if not page.principal.is_authenticated:
        user = _marked_user(page, "enrol", ENROL_SECONDS)
        if user is not None:
            return user, principal_for(user), True
        raise Unauthenticated()
    raise AppError("forbidden", "只有用户账号有个人设置", "Only user accounts have settings", status_code=403)


def render_account(
    page: Page, status_code: int = 200, errors: dict[str, list[str]] | None = None, error: str | None = None
) -> Response:
    user, principal, _ = _account_user(page)
    if page.principal.kind != "user":
        return page.redirect("/account/totp")
    response = page.render(
        "account/account.html",
        status_code=status_code,
        user=user,
        role_name=ROLES.get(user.role, user.role),
        totp=security.totp_status(page.session, principal),
        errors=errors or {},
        error=error,
    )
    return _no_store(response)


@router.get("/account")
def account(page: Page = PageDep) -> Response:
    return render_account(page)


@router.post("/account/password")
def change_password(form: FormData = CheckedForm, page: Page = PageDep) -> Response:
    _account_user(page)
    try:
        user = security.change_own_password(
            page.session, page.principal, _secret(form, "current_password"), _secret(form, "new_password")
        )
    except AppError as exc:
        if exc.status_code in (401, 403, 404):
            raise
        page.rollback()
        errors = error_map(exc)
        if "password" in errors and exc.code.startswith("user."):
            errors["new_password"] = errors.pop("password")
        elif "password" in errors:
            errors["current_password"] = errors.pop("password")
        return render_account(page, exc.status_code, errors=errors)
    start_session(page.request, user)  # this session goes on; all others have ended
    page.flash("密码已修改，其他设备上的登录已失效")
    return page.redirect("/account")


def render_totp(page: Page, status_code: int = 200, error: str | None = None) -> Response:
    user, principal, enrolling = _account_user(page)
    status = security.totp_status(page.session, principal)
    setup = security.pending_setup(page.session, page.settings, principal) if status["pending"] else None
    response = page.render(
        "account/totp.html",
        status_code=status_code,
        user=user,
        totp=status,
        setup=setup,
        enrolling=enrolling,
        error=error,
    )
    return _no_store(response)


@router.get("/account/totp")
def totp_page(page: Page = PageDep) -> Response:
    return render_totp(page)


@router.post("/account/totp/start")
def totp_start(form: FormData = CheckedForm, page: Page = PageDep) -> Response:
    _, principal, _ = _account_user(page)
    security.start_totp(page.session, page.settings, principal)
    return page.redirect("/account/totp")


@router.post("/account/totp/confirm")
def totp_confirm(form: FormData = CheckedForm, page: Page = PageDep) -> Response:
    user, principal, enrolling = _account_user(page)
    try:
        security.confirm_totp(page.session, page.settings, principal, _secret(form, "code"))
    except AppError as exc:
        if exc.status_code in (401, 403, 404):
            raise
        page.rollback()
        return render_totp(page, exc.status_code, error=exc.message)
    notice = "已启用双因素认证，以后登录时请输入身份验证器中的验证码"
    if enrolling:
        marker = page.request.session.pop("enrol", {})
        target = safe_next(marker.get("next"))
        return _logged_in(page, user, marker.get("method", "password"), target, True, notice)
    page.flash(notice)
    return page.redirect("/account")


@router.post("/account/totp/disable")
def totp_disable(form: FormData = CheckedForm, page: Page = PageDep) -> Response:
    if page.principal.kind != "user":
        raise Unauthenticated()
    try:
        security.disable_totp(
            page.session, page.settings, page.principal, _secret(form, "password"), _secret(form, "code")
        )
    except AppError as exc:
        if exc.status_code in (401, 403, 404):
            raise
        page.rollback()
        return render_account(page, exc.status_code, error=exc.message)
    page.flash("已停用双因素认证")
    return page.redirect("/account")


# ---------------------------------------------------------------- security policy


def render_policy(page: Page, status_code: int = 200, error: str | None = None) -> Response:
    orgs.require_platform_admin(page.principal)
    return page.render(
        "admin/security.html",
        status_code=status_code,
        policy=security.get_policy(page.session),
        roles={str(r): ROLE_LABELS[r] for r in Role},
        error=error,
    )


@router.get("/admin/security")
def policy_page(page: Page = PageDep) -> Response:
    return render_policy(page)


@router.post("/admin/security")
def update_policy(form: FormData = CheckedForm, page: Page = PageDep) -> Response:
    orgs.require_platform_admin(page.principal)
    roles = [v for v in form.getlist("totp_required_roles") if isinstance(v, str)]
    try:
        security.update_policy(page.session, page.principal, roles)
    except AppError as exc:
        if exc.status_code in (401, 403, 404):
            raise
        page.rollback()
        return render_policy(page, exc.status_code, error=exc.message)
    page.flash("已保存安全策略")
    return page.redirect("/admin/security")
