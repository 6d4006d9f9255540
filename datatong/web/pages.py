"""The Chinese web UI: shared page machinery, login/logout, and the section routers.

Pages stay thin: they parse forms, call the same service functions as the API,
and render Jinja2 templates. A rule broken in a service comes back as an
``AppError`` whose Chinese message is shown next to the field it names.

The catalog and organisation pages live in ``datatong.catalog.pages`` and
``datatong.orgs.pages``; they import the helpers below, and this module includes
their routers at the end (so it must be the module imported first, as the app does).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from datatong.catalog import vocab
from datatong.catalog.service import EDITOR_ROLES
from datatong.errors import AppError, Unauthenticated
from datatong.orgs.models import ROLE_LABELS, Department, Role
from datatong.orgs.service import ANONYMOUS, Principal
from datatong.web import csrf
from datatong.web.deps import get_principal, get_session
from datatong.web.errors import audit_refusal

TEMPLATES = Path(__file__).parent / "templates"
templates = Jinja2Templates(directory=TEMPLATES)
# Times are stored in UTC; officers read them in Beijing time.
BEIJING = timezone(timedelta(hours=8), "北京时间")


def local_time(value: datetime | date | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    if value is None:
        return ""
    if not isinstance(value, datetime):
        return value.isoformat()
    if value.tzinfo is None:  # SQLite hands back naive UTC
        value = value.replace(tzinfo=UTC)
    return value.astimezone(BEIJING).strftime(fmt)


templates.env.filters["local_time"] = local_time
ROLES = {str(k): v for k, v in ROLE_LABELS.items()}
templates.env.globals.update(vocab=vocab)


# ---------------------------------------------------------------- page context


@dataclass
class Page:
    """What every page handler needs: the request, its transaction and who is asking."""

    request: Request
    session: Session
    principal: Principal

    @property
    def settings(self) -> Any:
        return self.request.app.state.settings

    @property
    def is_editor(self) -> bool:
        p = self.principal
        return p.is_platform_admin or (p.kind == "user" and p.role in EDITOR_ROLES)

    @property
    def is_admin(self) -> bool:
        return self.principal.kind == "user" and self.principal.role in (
            Role.PLATFORM_ADMIN,
            Role.DEPT_ADMIN,
        )

    def rollback(self) -> None:
        """Undo a refused write: the session dependency commits whatever is left."""
        self.session.rollback()

    def render(self, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        # Partials ("_name.html", fetched by htmx) leave the one-time notice for the next full page.
        context.update(self._common(partial=template.rsplit("/", 1)[-1].startswith("_")))
        return templates.TemplateResponse(
            self.request,
            template,
            context,
            status_code=status_code,
            headers={"Vary": "HX-Request, Cookie"},
        )

    def flash(self, message: str) -> None:
        """A one-time notice shown on the next full page (after a redirect)."""
        self.request.session["flash"] = message

    def _common(self, partial: bool = False) -> dict[str, Any]:
        department = None
        if self.principal.department_id is not None:
            department = self.session.get(Department, self.principal.department_id)
        return {
            "principal": self.principal,
            "department": department,
            "role_label": ROLES.get(self.principal.role, ""),
            "csrf_token": csrf.csrf_token(self.request),
            "nav": self._nav(),
            "flash": None if partial else self.request.session.pop("flash", None),
        }

    def _nav(self) -> list[dict[str, Any]]:
        p, path = self.principal, self.request.url.path
        items = [
            ("目录检索", "/catalog", True),
            ("新建信息资源", "/catalog/new", self.is_editor),
            ("审核", "/review", p.is_platform_admin),
            ("部门管理", "/admin/departments", self.is_admin),
            ("用户管理", "/admin/users", self.is_admin),
            ("安全策略", "/admin/security", p.is_platform_admin),
            ("审计日志", "/audit", p.kind == "user" and p.role in (Role.AUDITOR, Role.PLATFORM_ADMIN, Role.DEPT_ADMIN)),
        ]
        # The longest matching prefix is the current item ("/catalog/new" beats "/catalog").
        current = max((url for _, url, show in items if show and path.startswith(url)), key=len, default="")
        return [{"label": label, "url": url, "current": url == current} for label, url, show in items if show]

    def redirect(self, url: str) -> RedirectResponse:
        # 303: after a POST the browser follows with a GET.
        return RedirectResponse(url, status_code=303)


def page_context(
    request: Request,
    session: Session = Depends(get_session),
    principal: Principal = Depends(get_principal),
) -> Page:
    page = Page(request, session, principal)
    request.state.page = page  # for the error handler of PageRoute
    return page


def require_login(page: Page) -> None:
    if not page.principal.is_authenticated:
        raise Unauthenticated()


def safe_next(target: str | None, default: str = "/catalog") -> str:
    """Only same-site relative paths, so a crafted link cannot send users elsewhere."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or any(ord(c) < 32 for c in target):
        return default
    return target


def form_text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def error_map(exc: AppError) -> dict[str, list[str]]:
    """Messages by form field ('' for those with no field on the form)."""
    errors: dict[str, list[str]] = {}
    details = [d for d in exc.details if isinstance(d, dict)]
    for d in details or [{"field": exc.field, "message": exc.message}]:
        errors.setdefault(d.get("field") or "", []).append(d.get("message") or exc.message)
    return errors


def place_errors(errors: dict[str, list[str]], fields: set[str]) -> dict[str, list[str]]:
    """Messages for fields the form does not show go to the form's general notice ('')."""
    placed: dict[str, list[str]] = {}
    for name, messages in errors.items():
        placed.setdefault(name if name in fields else "", []).extend(messages)
    return placed


# ---------------------------------------------------------------- errors as pages


class PageRoute(APIRoute):
    """Routes that answer errors with Chinese HTML pages instead of the API's JSON."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except AppError as exc:
                return await run_in_threadpool(error_page, request, exc)
            except RequestValidationError:
                bad = AppError(
                    "bad_request",
                    "请求参数不正确",
                    "Invalid request",
                    status_code=404 if request.method == "GET" else 400,
                )
                return await run_in_threadpool(error_page, request, bad)

        return page_handler


def error_page(request: Request, exc: AppError) -> Response:
    page: Page | None = getattr(request.state, "page", None)
    if page is not None:
        page.rollback()
    if exc.status_code == 403:
        audit_refusal(request, exc)
    if exc.status_code == 401:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        if request.method != "GET":  # a form posted after the session ended: back to its page
            back = urlsplit(request.headers.get("referer", ""))
            target = back.path + (f"?{back.query}" if back.query else "")
        login = "/login?next=" + quote(safe_next(target), safe="/")
        return RedirectResponse(login, status_code=303)
    if page is None:  # failed before the page context existed: render without a user
        return templates.TemplateResponse(
            request,
            "error.html",
            {
                "error": exc,
                "principal": ANONYMOUS,
                "department": None,
                "role_label": "",
                "csrf_token": csrf.csrf_token(request),
                "flash": None,
                "nav": [{"label": "目录检索", "url": "/catalog", "current": False}],
            },
            status_code=exc.status_code,
        )
    return page.render("error.html", status_code=exc.status_code, error=exc)


router = APIRouter(route_class=PageRoute, include_in_schema=False)
PageDep: Any = Depends(page_context)
CheckedForm: Any = Depends(csrf.checked_form)


# ---------------------------------------------------------------- login


@router.get("/")
def home() -> RedirectResponse:
    return RedirectResponse("/catalog", status_code=302)


# The login form and its steps (TOTP code, 统一身份认证) are in datatong/orgs/account_pages.py.


@router.post("/logout")
def logout(form: FormData = CheckedForm, page: Page = PageDep) -> Response:
    page.request.session.clear()
    csrf.rotate(page.request)
    return page.redirect("/catalog")


# The section routers import the helpers above, so they are included last.
from datatong.catalog.pages import router as catalog_router  # noqa: E402
from datatong.orgs.pages import router as orgs_router  # noqa: E402

router.include_router(catalog_router)
router.include_router(orgs_router)
