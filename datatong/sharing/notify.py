"""Notifications of sharing: each user's inbox (站内消息) and each department's optional
outgoing webhook (HMAC-signed). STUB: the interface is fixed, the bodies are being built.

Callers (service.py, needs.py, jobs.py) use only these functions, inside their own
transaction: a message exists exactly when the change that caused it committed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

if TYPE_CHECKING:
    from datatong.orgs.service import Principal
    from datatong.sharing.models import Grant, ShareApplication


def notify_users(
    session: Session,
    user_ids: Iterable[int],
    kind: str,
    title: str,
    *,
    body: str | None = None,
    link: str | None = None,
    application_id: int | None = None,
    grant_id: int | None = None,
    need_id: int | None = None,
    dedupe_key: str | None = None,
) -> int:
    """Put a message in each user's inbox; returns how many were written (a ``dedupe_key``
    already used writes nothing). ``kind`` is a key of models.INBOX_KINDS."""
    return 0


def notify_department(
    session: Session,
    department_id: int,
    kind: str,
    title: str,
    **kw: object,
) -> int:
    """Inbox messages to the department's admins and data officers, and one webhook
    delivery (outbox row) when the department has an enabled webhook."""
    return 0


def notify_platform_admins(session: Session, kind: str, title: str, **kw: object) -> int:
    """Inbox messages to every platform admin (overdue board, coordination, needs)."""
    return 0


def application_moved(session: Session, app: ShareApplication, action: str, principal: Principal) -> None:
    """Called by service._move after every transition of an application."""


def grant_changed(session: Session, grant: Grant, action: str, principal: Principal) -> None:
    """Called by service after a grant is created, suspended, resumed, revoked, renewed or transferred."""
