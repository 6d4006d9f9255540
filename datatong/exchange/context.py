"""The request context every exchange call carries (learned from X-Road): which consumer
system (应用系统) calls, for which end user (经办人), for what purpose (用途) and in which
case (办件编号/事项编码).

It arrives in four headers; a value may be percent-encoded UTF-8, so Chinese travels in
plain ASCII headers (``X-Datatong-Operator: %E5%BC%A0%E4%B8%89`` is 张三):

=====================  ==========================================  ==========
header                 meaning                                     max chars
=====================  ==========================================  ==========
X-Datatong-System      calling system; a client-credential caller  64
                       may omit it (its client id is used) and
                       may not name another system
X-Datatong-Operator    end user (经办人): a clerk's name or ID      64
X-Datatong-Purpose     purpose kind (sharing.models.PURPOSE_KINDS)  —
X-Datatong-Case        case number (办件编号/事项编码)              100
=====================  ==========================================  ==========

Every one is required; a missing one is refused with 422 ``exchange.context_missing``
(``field`` names the header), a malformed one (too long, control or format characters,
invalid percent-encoding, unknown purpose) with 422 ``exchange.context_invalid``.
"""

from __future__ import annotations

import threading
import time
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import jwt
from fastapi import Depends, Request
from sqlalchemy import event
from sqlalchemy.orm import Session, object_session
from starlette.concurrency import run_in_threadpool

from datatong.errors import Unauthenticated, ValidationFailed
from datatong.orgs.models import ClientApp, Department, User
from datatong.orgs.service import Principal
from datatong.sharing.models import PURPOSE_KINDS
from datatong.web.deps import get_principal

SYSTEM = "X-Datatong-System"
OPERATOR = "X-Datatong-Operator"
PURPOSE = "X-Datatong-Purpose"
CASE = "X-Datatong-Case"

# header: (Chinese label, English label, max length)
_FIELDS: dict[str, tuple[str, str, int]] = {
    SYSTEM: ("应用系统", "consumer system", 64),
    OPERATOR: ("经办人", "end user", 64),
    PURPOSE: ("用途", "purpose", 32),
    CASE: ("办件编号", "case number", 100),
}


@dataclass
class RequestContext:
    """Who asks, for whom, why and in which case; carried into ``authorize`` (purpose),
    the audit record (``audit_detail``) and the signed receipt. (Not frozen, so it meets
    service.Context's plain ``purpose: str`` protocol member; treat it as read-only.)"""

    system: str
    operator: str
    purpose: str
    case: str

    def audit_detail(self) -> dict[str, str]:
        return {"system": self.system, "operator": self.operator, "purpose": self.purpose, "case": self.case}

    @property
    def purpose_label(self) -> str:
        return PURPOSE_KINDS.get(self.purpose, self.purpose)


def _missing(header: str) -> ValidationFailed:
    zh, en, _ = _FIELDS[header]
    return ValidationFailed(
        "exchange.context_missing",
        f"缺少请求上下文 {header}（{zh}）",
        f"The request context header {header} ({en}) is missing",
        field=header,
    )


def _invalid(header: str, why_zh: str, why_en: str) -> ValidationFailed:
    zh, en, _ = _FIELDS[header]
    return ValidationFailed(
        "exchange.context_invalid",
        f"请求上下文 {header}（{zh}）无效：{why_zh}",
        f"The request context header {header} ({en}) is invalid: {why_en}",
        field=header,
    )


def _decode(header: str, raw: str) -> str:
    """A header value as text: raw UTF-8 bytes (which Starlette hands over as latin-1)
    are taken as UTF-8, then percent-encoding is undone."""
    try:
        value = raw.encode("latin-1").decode("utf-8")
    except UnicodeEncodeError:
        value = raw  # already text (a caller outside HTTP)
    except UnicodeDecodeError:
        raise _invalid(header, "不是有效的 UTF-8 文本", "not valid UTF-8 text") from None
    if "%" in value:
        try:
            value = unquote(value, errors="strict")
        except UnicodeDecodeError:
            raise _invalid(header, "百分号编码不是有效的 UTF-8", "percent-encoding is not valid UTF-8") from None
    return value.strip()


def _check(header: str, value: str) -> str:
    _, _, limit = _FIELDS[header]
    if len(value) > limit:
        raise _invalid(header, f"不能超过 {limit} 个字符", f"at most {limit} characters")
    # Cc (control: newline, NUL …), Cf (format: zero-width, bidi overrides), Cs, Co, Cn.
    # Printable ASCII (most values) has none: one C-level check instead of one per character.
    if not (value.isascii() and value.isprintable()) and any(unicodedata.category(ch)[0] == "C" for ch in value):
        raise _invalid(header, "含有控制字符", "contains control characters")
    return value


def _value(headers: Mapping[str, str], header: str) -> str | None:
    raw = headers.get(header)
    if raw is None:
        return None
    value = _decode(header, raw)
    return _check(header, value) if value else None


def context_from_headers(headers: Mapping[str, str], principal: Principal | None = None) -> RequestContext:
    """The context of a call from its headers (case-insensitive mapping, e.g. Starlette's);
    raises ValidationFailed (422) naming the header at fault."""
    system = _value(headers, SYSTEM)
    if principal is not None and principal.kind == "client":
        # A system calling with its own credentials is that system, whatever it claims.
        if system is not None and system != principal.username:
            raise _invalid(SYSTEM, "须为调用方的 client_id", "must be the caller's client id")
        system = principal.username
    if system is None:
        raise _missing(SYSTEM)
    operator = _value(headers, OPERATOR)
    if operator is None:
        raise _missing(OPERATOR)
    purpose = _value(headers, PURPOSE)
    if purpose is None:
        raise _missing(PURPOSE)
    if purpose not in PURPOSE_KINDS:
        raise _invalid(PURPOSE, "须为 " + "、".join(PURPOSE_KINDS), "must be one of " + ", ".join(PURPOSE_KINDS))
    case = _value(headers, CASE)
    if case is None:
        raise _missing(CASE)
    return RequestContext(system=system, operator=operator, purpose=purpose, case=case)


def exchange_context(request: Request, principal: Principal = Depends(get_principal)) -> RequestContext:
    """FastAPI dependency: the request context of an exchange call, or 422. Exchange calls
    are never anonymous, so an anonymous caller is told to log in (401) first."""
    if not principal.is_authenticated:
        raise Unauthenticated()
    ctx = context_from_headers(request.headers, principal)
    request.state.exchange_context = ctx
    return ctx


# ---------------------------------------------------------------- the caller, cached

# A bearer token's check (signature, then the user or client app row and its department)
# is a third of a verification call, and a system calls with the same token for its
# whole lifetime (15 minutes). So exchange calls keep the answer per token for
# PRINCIPAL_SECONDS; past that ONE caller checks again while the others go on with the
# old answer (a burst would otherwise check all at once), never for longer than
# PRINCIPAL_STALE_SECONDS — the bound authorize() gives for grant changes made by other
# processes — and never past the token's own expiry. In this process a change of a
# user, client app or department (deactivated, token version bumped, also by a bulk
# UPDATE through the ORM session) drops the cache at once and again when it commits.
PRINCIPAL_SECONDS = 0.5
PRINCIPAL_STALE_SECONDS = 1.0
_MAX_PRINCIPALS = 10_000
# token → (checked at, valid until, principal)
_principals: dict[tuple[str, str], tuple[float, float, Principal]] = {}
_principals_checking: set[tuple[str, str]] = set()
_principals_generation = 0
_principals_lock = threading.Lock()
_PRINCIPALS_DIRTY = "datatong.exchange.principals.dirty"


def call_principal(request: Request, session: Session) -> Principal:
    """Who calls (``web.deps.get_principal``), from the cache for a bearer token seen in
    the last second; anonymous callers are told to log in (401), as exchange_context does."""
    auth = request.headers.get("authorization", "")
    token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
    key = (str(request.app.state.settings.database_url), token)
    hit = _principals.get(key) if token and _PRINCIPALS_DIRTY not in session.info else None
    now = time.time()
    if hit is not None and now < hit[1]:
        claimed = now - hit[0] >= PRINCIPAL_SECONDS and _claim(key)
        if not claimed and now - hit[0] < PRINCIPAL_STALE_SECONDS:
            request.state.principal = hit[2]
            return hit[2]
    else:
        claimed = False
    try:
        return _check_token(request, session, key)
    finally:
        if claimed:
            with _principals_lock:
                _principals_checking.discard(key)


async def principal_in_memory(request: Request, auth: str) -> Principal | None:
    """``call_principal`` for a caller on the event loop (``auth``: its Authorization
    header): the cached caller of this bearer token while fresh, or while stale if
    another call is checking it again; a stale one is checked again by this call in a
    thread (the others go on with the old answer meanwhile). None when the token is not
    cached (ask ``call_principal``)."""
    token = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
    if not token:
        return None
    key = (str(request.app.state.settings.database_url), token)
    hit = _principals.get(key)
    now = time.time()
    if hit is None or now >= hit[1] or now - hit[0] >= PRINCIPAL_STALE_SECONDS:
        return None
    if now - hit[0] >= PRINCIPAL_SECONDS and _claim(key):
        try:
            return await run_in_threadpool(_recheck, request, key)
        finally:
            with _principals_lock:
                _principals_checking.discard(key)
    request.state.principal = hit[2]
    return hit[2]


def _recheck(request: Request, key: tuple[str, str]) -> Principal:
    from datatong.db import session_scope

    with session_scope(request.app.state.settings.database_url) as session:
        return _check_token(request, session, key)


def _claim(key: tuple[str, str]) -> bool:
    with _principals_lock:
        if key in _principals_checking:
            return False
        _principals_checking.add(key)
        return True


def _check_token(request: Request, session: Session, key: tuple[str, str]) -> Principal:
    generation = _principals_generation
    try:
        principal = get_principal(request, session)
        if not principal.is_authenticated:
            raise Unauthenticated()
    except BaseException:
        with _principals_lock:
            _principals.pop(key, None)
        raise
    if key[1]:
        _remember(key, principal, generation, session)
    return principal


def _remember(key: tuple[str, str], principal: Principal, generation: int, session: Session) -> None:
    # The token was just verified; its expiry is read without checking the signature again.
    exp = jwt.decode(key[1], options={"verify_signature": False}).get("exp")
    now = time.time()
    until = now + PRINCIPAL_STALE_SECONDS
    if isinstance(exp, int | float):
        until = min(until, float(exp))
    with _principals_lock:
        if generation == _principals_generation and _PRINCIPALS_DIRTY not in session.info:
            if len(_principals) >= _MAX_PRINCIPALS:
                _principals.clear()
            _principals[key] = (now, until, principal)


def forget_principals() -> None:
    global _principals_generation
    with _principals_lock:
        _principals_generation += 1
        _principals.clear()


def _on_caller_change(_mapper: Any, _connection: Any, row: Any) -> None:
    session = object_session(row)
    if session is not None:
        session.info[_PRINCIPALS_DIRTY] = True
    forget_principals()


def _on_bulk_change(context: Any) -> None:
    if getattr(context.mapper, "class_", None) in (User, ClientApp, Department):
        context.session.info[_PRINCIPALS_DIRTY] = True
        forget_principals()


def _on_transaction_done(session: Session, *_: Any) -> None:
    if session.info.pop(_PRINCIPALS_DIRTY, None):
        forget_principals()


for _model in (User, ClientApp, Department):
    for _name in ("after_update", "after_delete"):
        event.listen(_model, _name, _on_caller_change)
event.listen(Session, "after_bulk_update", _on_bulk_change)
event.listen(Session, "after_bulk_delete", _on_bulk_change)
event.listen(Session, "after_commit", _on_transaction_done)
event.listen(Session, "after_rollback", _on_transaction_done)
