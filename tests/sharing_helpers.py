"""Helpers of the sharing tests: principals, service calls in their own transaction,
a filed application, and the worker of the two-process quota test."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any

from conftest import CLIENT_ID, create_entry
from sqlalchemy import select

from datatong.db import session_scope
from datatong.orgs.models import ClientApp, User
from datatong.orgs.service import Principal, principal_for
from datatong.sharing import service


class WithReview:
    """Settings with 符合性审查 switched on (the rest as given)."""

    compliance_review_required = True

    def __init__(self, settings: Any) -> None:
        self._settings = settings

    def __getattr__(self, name: str) -> Any:
        return getattr(self._settings, name)


def who(settings: Any, username: str) -> Principal:
    with session_scope(settings.database_url) as s:
        if username == "client":
            app = s.scalar(select(ClientApp).where(ClientApp.client_id == CLIENT_ID))
            assert app is not None
            return Principal("client", app.id, app.client_id, app.name, "client", app.department_id, "MZ")
        user = s.scalar(select(User).where(User.username == username))
        assert user is not None
        return principal_for(user)


def call(settings: Any, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(session, *args, **kwargs)`` in a transaction of its own."""
    with session_scope(settings.database_url) as s:
        return fn(s, *args, **kwargs)


def published(client: Any, share_type: str = "conditional") -> dict[str, Any]:
    extra: dict[str, Any] = {"share_type": share_type}
    if share_type == "none":
        extra |= {"no_share_basis": "涉及国家秘密", "share_condition": None}
    if share_type == "unconditional":
        extra |= {"share_condition": None}
    return create_entry(client, publish=True, **extra)


def application_fields(entry_id: int, **overrides: Any) -> dict[str, Any]:
    today = date.today()
    fields: dict[str, Any] = {
        "entry_id": entry_id,
        "purpose_kind": "verification",
        "purpose": "最低生活保障资格核验",
        "legal_basis": "《社会救助暂行办法》第十一条",
        "items": ["身份证号", "姓名"],
        "period_start": today,
        "period_end": today + timedelta(days=365),
        "rows_per_day": 1000,
        "calls_per_minute": 60,
        "system_name": "低保审核系统",
    }
    fields.update(overrides)
    return fields


def draft(settings: Any, entry_id: int, username: str = "mz_officer", **overrides: Any) -> int:
    app = call(
        settings, service.create_application, who(settings, username), **application_fields(entry_id, **overrides)
    )
    return int(app.id)


def submitted(settings: Any, entry_id: int, **overrides: Any) -> int:
    app_id = draft(settings, entry_id, **overrides)
    call(settings, service.submit, settings, who(settings, "mz_officer"), app_id, accept_commitment=True)
    return app_id


def quota_worker(
    url: str, principal: Principal, entry_code: str, n: int, now: datetime, rows: int, start_at: float
) -> list[bool]:
    """Run in a separate process: ``n`` authorize calls, each in its own transaction,
    starting at wall-clock ``start_at`` so that both processes run at once."""
    import time

    from datatong.sharing.authorize import authorize

    with session_scope(url) as s:  # connect before the start
        s.execute(select(User.id).limit(1))
    time.sleep(max(0.0, start_at - time.time()))

    results = []
    for _ in range(n):
        with session_scope(url) as s:
            d = authorize(s, consumer=principal, entry=entry_code, items=[], purpose="verification", now=now, rows=rows)
            results.append(d.allowed)
    return results
