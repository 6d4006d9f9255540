"""Request-scoped dependencies: the database session and who is calling."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from datatong.db import get_by_id, session_factory
from datatong.orgs.models import User
from datatong.orgs.service import (
    ANONYMOUS,
    Principal,
    Unauthenticated,
    enrolment_principal_from_token,
    principal_for,
    principal_from_token,
)
from datatong.settings import Settings

SESSION_EXPIRED = "登录已超过最长有效时间，请重新登录"
SESSION_IDLE = "由于长时间未操作，您已自动退出，请重新登录"


def clock() -> float:
    """Seconds since the epoch; tests move it to age sessions."""
    return time.time()


def start_session(request: Request, user: User) -> None:
    """A fresh page session for ``user`` (after login): who, which token version, and
    when it began and was last used — the server enforces both lifetimes, because the
    cookie's own expiry is renewed with every response and a copied cookie keeps it."""
    now = int(clock())
    request.session.clear()
    request.session.update(uid=user.id, ver=user.token_version, iat=now, seen=now)


def session_expiry(settings: Settings, data: Any, now: float) -> str | None:
    """Why a page session has ended (a Chinese notice), or None while it is valid."""
    issued, seen = data.get("iat"), data.get("seen")
    if not isinstance(issued, int) or not isinstance(seen, int):
        return SESSION_EXPIRED
    if now - issued > settings.session_hours * 3600:
        return SESSION_EXPIRED
    if now - seen > settings.session_idle_minutes * 60:
        return SESSION_IDLE
    return None


def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_session(request: Request) -> Iterator[Session]:
    """One transaction per request: committed when the handler returns normally,
    rolled back on any error, so a refused request never leaves half a record."""
    session = session_factory(request.app.state.settings.database_url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def get_principal(request: Request, session: Session = Depends(get_session)) -> Principal:
    """Bearer token (API, systems) first; else the page session cookie; else anonymous."""
    principal = _principal(request, session)
    request.state.principal = principal
    return principal


def _principal(request: Request, session: Session) -> Principal:
    settings: Settings = request.app.state.settings
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return principal_from_token(session, settings.secret_key, auth[7:].strip())
    user_id = request.session.get("uid") if "session" in request.scope else None
    if user_id:
        now = clock()
        ended = session_expiry(settings, request.session, now)
        user = get_by_id(session, User, user_id) if ended is None else None
        if user is not None and user.is_active and user.token_version == request.session.get("ver"):
            request.session["seen"] = int(now)
            return principal_for(user)
        request.session.clear()
        if ended:
            request.session["flash"] = ended
    return ANONYMOUS


def get_enrolling_principal(request: Request, session: Session = Depends(get_session)) -> Principal:
    """For the TOTP enrolment endpoints only: also accepts the enrolment-only token."""
    settings: Settings = request.app.state.settings
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        principal = enrolment_principal_from_token(session, settings.secret_key, auth[7:].strip())
    else:
        principal = _principal(request, session)
    if not principal.is_authenticated:
        raise Unauthenticated()
    request.state.principal = principal
    return principal
