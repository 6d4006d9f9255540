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

import time
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote

import jwt
from fastapi import Depends, Request
from sqlalchemy.orm import Session

from datatong.errors import Unauthenticated, ValidationFailed
from datatong.orgs.models import ClientApp, Department, User
from datatong.orgs.service import Principal
from datatong.sharing.models import PURPOSE_KINDS
from datatong.swrcache import SwrCache
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
# whole lifetime (15 minutes). So exchange calls keep the answer per token (swrcache.py:
# fresh for PRINCIPAL_SECONDS, then re-checked by one caller, never older than
# PRINCIPAL_STALE_SECONDS — the bound authorize() gives for grant changes made by other
# processes — and never past the token's own expiry). A change of a user, client app or
# department in this process (deactivated, token version bumped, also by a bulk UPDATE
# through the ORM session) drops the cache at once and again when it commits.
PRINCIPAL_SECONDS = 0.5
PRINCIPAL_STALE_SECONDS = 1.0
_principals: SwrCache[tuple[str, str], Principal] = SwrCache(
    "principals", fresh=PRINCIPAL_SECONDS, stale=PRINCIPAL_STALE_SECONDS, max_entries=10_000
)
_principals.watch((User, ClientApp, Department))


def _bearer(auth: str) -> str:
    return auth[7:].strip() if auth[:7].lower() == "bearer " else ""


def call_principal(request: Request, session: Session) -> Principal:
    """Who calls (``web.deps.get_principal``), from the cache for a bearer token seen in
    the last second; anonymous callers are told to log in (401), as exchange_context does."""
    token = _bearer(request.headers.get("authorization", ""))
    if not token:  # a browser session (cookie): checked every time, never cached
        return _checked(request, session, "")[0]
    key = (str(request.app.state.settings.database_url), token)
    principal = _principals.get(session, key, lambda s: _checked(request, s, token))
    request.state.principal = principal
    return principal


async def principal_in_memory(request: Request, auth: str) -> Principal | None:
    """``call_principal`` for a caller on the event loop (``auth``: its Authorization
    header), without blocking it: the cached caller of this bearer token, checked again
    in a thread when stale. None when the token is not cached (ask ``call_principal``)."""
    token = _bearer(auth)
    if not token:
        return None
    url = request.app.state.settings.database_url
    principal = await _principals.get_in_memory((str(url), token), lambda s: _checked(request, s, token), url)
    if principal is not None:
        request.state.principal = principal
    return principal


def _checked(request: Request, session: Session, token: str) -> tuple[Principal, float | None]:
    """The caller, and how long its answer may be kept: not past the token's expiry."""
    principal = get_principal(request, session)
    if not principal.is_authenticated:
        raise Unauthenticated()
    # The token was just verified; its expiry is read without checking the signature again.
    exp = jwt.decode(token, options={"verify_signature": False}).get("exp") if token else None
    return principal, (float(exp) - time.time() if isinstance(exp, int | float) else None)


def forget_principals() -> None:
    _principals.forget()
