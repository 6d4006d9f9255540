"""CSRF protection for the pages: one random token per browser session.

The session cookie is sent by the browser on any cross-site form post, so every
state-changing page request must also prove it came from one of our pages: a
hidden ``csrf_token`` field (plain forms) or the ``X-CSRF-Token`` header (htmx,
which reads the token from the ``<meta name="csrf-token">`` tag).
"""

from __future__ import annotations

import hmac
import secrets

from fastapi import Request
from starlette.datastructures import FormData

from datatong.errors import AppError

SESSION_KEY = "csrf"
FIELD = "csrf_token"
HEADER = "x-csrf-token"


class CsrfRefused(AppError):
    status_code = 403

    def __init__(self) -> None:
        super().__init__(
            "csrf.invalid",
            "页面已过期或请求来源无法验证，请刷新页面后重试",
            "The form is stale or its origin cannot be verified; reload the page",
        )


def csrf_token(request: Request) -> str:
    """The session's token, created on first use."""
    token = request.session.get(SESSION_KEY)
    if not isinstance(token, str) or not token:
        token = secrets.token_urlsafe(32)
        request.session[SESSION_KEY] = token
    return token


def rotate(request: Request) -> None:
    """A new token after login/logout, so a token seen before does not outlive the session."""
    request.session[SESSION_KEY] = secrets.token_urlsafe(32)


def check(request: Request, form: FormData) -> None:
    expected = request.session.get(SESSION_KEY)
    sent = form.get(FIELD) or request.headers.get(HEADER) or ""
    if not expected or not isinstance(sent, str) or not hmac.compare_digest(sent, expected):
        raise CsrfRefused()


async def checked_form(request: Request) -> FormData:
    """Dependency for every POST page route: the parsed form, once its token is verified."""
    form = await request.form()
    check(request, form)
    return form
