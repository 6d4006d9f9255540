"""Helpers shared by the identity tests and the authorization matrix: TOTP set up
directly in the database (as enrolment would leave it), and codes for it."""

from __future__ import annotations

from typing import Any

import pyotp
from sqlalchemy import select

from datatong.crypto import seal
from datatong.db import session_scope
from datatong.orgs.models import User

# One known secret for every user the helper touches, so a single request body holds a
# code valid for whichever role the matrix tries.
SHARED_SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


def set_totp(client: Any, *, enabled: bool, usernames: list[str] | None = None, secret: str = SHARED_SECRET) -> None:
    settings = client.app.state.settings
    with session_scope(settings.database_url) as session:
        stmt = select(User)
        if usernames is not None:
            stmt = stmt.where(User.username.in_(usernames))
        for user in session.scalars(stmt):
            user.totp_secret = seal(secret, aad=f"user:{user.id}:totp", settings=settings)
            user.totp_enabled = enabled
            user.totp_last_step = None


def code_now(secret: str = SHARED_SECRET, at: float | None = None) -> str:
    totp = pyotp.TOTP(secret)
    return totp.now() if at is None else totp.at(at)
