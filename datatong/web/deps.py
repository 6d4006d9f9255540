"""Request-scoped dependencies: the database session and who is calling."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from datatong.db import session_factory
from datatong.orgs.models import User
from datatong.orgs.service import ANONYMOUS, Principal, principal_for, principal_from_token
from datatong.settings import Settings


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
    settings: Settings = request.app.state.settings
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return principal_from_token(session, settings.secret_key, auth[7:].strip())
    user_id = request.session.get("uid") if "session" in request.scope else None
    if user_id:
        user = session.get(User, user_id)
        if user is not None and user.is_active and user.token_version == request.session.get("ver"):
            return principal_for(user)
        request.session.clear()
    return ANONYMOUS
