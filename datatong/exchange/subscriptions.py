"""Subscriptions (订阅): a consumer department follows the changes of an entry it holds a
grant for — pushed to its webhook (``mode="webhook"``) or pulled from a feed with offsets
(``mode="feed"``; a webhook subscription may be pulled too, e.g. to catch up).

Changes come from the bus (bus.py), put there by change capture (delivery.py). Every
change has an ``id`` (the same however often it is delivered: consumers drop repeats by
it) and an ``offset`` (its place on the bus). Delivery is at least once; with the id,
exactly once for a consumer that remembers the ids it has applied.

Every delivered batch, pushed or pulled, goes through ``authorize`` again (a revoked or
expired grant stops the flow; rows count against the grant's quota), carries only the
granted items, masked as the grant says, and is audited before it leaves.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Sequence
from typing import Any, NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session

from datatong import crypto
from datatong.audit.service import make_event
from datatong.audit.writer import log_refusal, writer_for
from datatong.catalog.models import CatalogEntry
from datatong.db import get_by_id, utcnow
from datatong.errors import AppError, Conflict, Forbidden, NotFound, Unauthenticated, invalid
from datatong.exchange import netguard
from datatong.exchange.bus import Bus, Change
from datatong.exchange.models import DeadLetter, Subscription
from datatong.exchange.service import Context, Refused, _json_value, entry_by_code
from datatong.orgs.models import ClientApp, Department, User
from datatong.orgs.service import Principal
from datatong.sharing import masking, policy
from datatong.sharing.authorize import Decision, authorize
from datatong.sharing.notify import check_webhook_url

MAX_FEED = 1000


def secret_aad(subscription_id: int) -> str:
    return f"exchange_subscription:{subscription_id}:secret"


def change_id(epoch: str, key: Any, changed: Any) -> str:
    """The id of one change: the same every time the same row version is captured by the
    same capture (``epoch``: see CaptureState)."""
    raw = json.dumps([epoch, _json_value(key), _json_value(changed)], ensure_ascii=False, default=str)
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def change_body(key: Any, changed: Any, row: dict[str, Any]) -> dict[str, Any]:
    return {"op": "upsert", "key": _json_value(key), "changed": _json_value(changed), "row": row}


# ---------------------------------------------------------------- who may see a subscription


def _visible(principal: Principal, sub: Subscription) -> bool:
    return principal.is_platform_admin or (
        principal.department_id is not None and principal.department_id == sub.department_id
    )


def _signed_in(principal: Principal) -> None:
    if not principal.is_authenticated:
        raise Unauthenticated()


def get(session: Session, principal: Principal, subscription_id: int) -> Subscription:
    _signed_in(principal)
    sub = get_by_id(session, Subscription, subscription_id)
    if sub is None or not _visible(principal, sub):
        raise NotFound("订阅", "Subscription")  # another department's: not even its existence
    return sub


def _own(session: Session, principal: Principal, subscription_id: int) -> Subscription:
    """For changes: only the subscribing department (the platform admin may cancel)."""
    sub = get(session, principal, subscription_id)
    if sub.status == "cancelled":
        raise Conflict("exchange.subscription_cancelled", "订阅已取消", "The subscription is cancelled")
    return sub


def list_for(session: Session, principal: Principal, entry_code: str | None = None) -> list[Subscription]:
    _signed_in(principal)
    stmt = select(Subscription).order_by(Subscription.id.desc()).limit(500)
    if not principal.is_platform_admin:
        stmt = stmt.where(Subscription.department_id == (principal.department_id or -1))
    if entry_code:
        stmt = stmt.join(CatalogEntry, CatalogEntry.id == Subscription.entry_id).where(CatalogEntry.code == entry_code)
    return list(session.scalars(stmt))


def entry_code_of(session: Session, sub: Subscription) -> str:
    entry = session.get(CatalogEntry, sub.entry_id)
    return entry.code if entry else ""


# ---------------------------------------------------------------- deciding


class EntryRef(NamedTuple):
    """What delivery needs of an entry, read without the ORM's joined loads (the worker
    asks for it on every batch)."""

    id: int
    code: str
    provider_code: str
    status: str


def entry_ref(session: Session, entry_id: int) -> EntryRef | None:
    stmt = select(CatalogEntry.id, CatalogEntry.code, CatalogEntry.provider_code, CatalogEntry.status).where(
        CatalogEntry.id == entry_id
    )
    row = session.execute(stmt).first()
    return EntryRef(*row) if row else None


def caller_of(session: Session, sub: Subscription) -> Principal | None:
    """The principal a delivery is authorised as: the subscribing system or user, if
    still active (a disabled app or user stops its subscriptions). Plain column reads:
    the worker asks on every batch."""
    if sub.caller_kind == "client":
        stmt = (
            select(ClientApp.id, ClientApp.client_id, ClientApp.name, ClientApp.department_id, Department.code)
            .join(Department, Department.id == ClientApp.department_id)
            .where(ClientApp.id == sub.caller_id, ClientApp.is_active.is_(True))
        )
        row = session.execute(stmt).first()
        return Principal("client", row[0], row[1], row[2], "client", row[3], row[4]) if row else None
    stmt2 = (
        select(User.id, User.username, User.display_name, User.role, User.department_id, Department.code)
        .join(Department, Department.id == User.department_id)
        .where(User.id == sub.caller_id, User.is_active.is_(True))
    )
    got = session.execute(stmt2).first()
    return Principal("user", got[0], got[1], got[2], got[3], got[4], got[5]) if got else None


def decide(
    session: Session,
    settings: Any,
    principal: Principal,
    entry: CatalogEntry | EntryRef,
    items: Sequence[str],
    purpose: str,
    rows: int,
    action: str,
    context: dict[str, Any],
) -> Decision:
    decision = authorize(
        session, consumer=principal, entry=entry.code, items=list(items), purpose=purpose, now=utcnow(), rows=rows
    )
    if not decision.allowed:
        log_refusal(
            settings,
            principal,
            action,
            resource=entry.code,
            reason=decision.reason or "refused",
            detail={"context": context, "items": list(items)},
        )
        raise Refused(decision)
    return decision


def masked_changes(
    session: Session, decision: Decision, items: Sequence[str], changes: Sequence[Change]
) -> list[dict[str, Any]]:
    """The changes as a consumer receives them: granted items only, masked as granted."""
    rules = policy.masking_rules(session)
    keep = [i for i in items if i in decision.items]
    out = []
    for ch in changes:
        row = {k: v for k, v in ch.body.get("row", {}).items() if k in keep}
        row = masking.mask_row(row, decision.masked_items, decision.mask_kinds, rules)
        out.append({"id": ch.change_id, "offset": ch.offset, "op": ch.body.get("op", "upsert"), "row": row})
    return out


def audit_batch(
    settings: Any,
    principal: Principal,
    sub: Subscription,
    entry: CatalogEntry | EntryRef,
    decision: Decision,
    changes: Sequence[Change],
    action: str,
    context: dict[str, Any],
) -> None:
    """Committed before the batch leaves (fail closed, as for every exchange call)."""
    fields = decision.audit_fields()
    detail = {
        **(fields.pop("detail") or {}),
        "context": context,
        "subscription": sub.id,
        "offsets": [changes[0].offset, changes[-1].offset] if changes else None,
    }
    fields.update(resource=entry.code, subject_department=entry.provider_code, rows=len(changes), detail=detail)
    writer = writer_for(settings.database_url, settings.keys_path, settings.audit_checkpoint_every)
    writer.write(make_event(principal, action, **fields))


def stored_context(sub: Subscription) -> dict[str, Any]:
    return {"system": sub.system, "operator": sub.operator, "purpose": sub.purpose, "case": sub.case_no or ""}


# ---------------------------------------------------------------- actions


def create(
    session: Session,
    settings: Any,
    bus: Bus,
    principal: Principal,
    *,
    entry_code: str,
    mode: str,
    url: str | None,
    items: Sequence[str] | None,
    ctx: Context,
) -> tuple[Subscription, str | None]:
    """Subscribe ``principal``'s department; returns the subscription and, for a webhook,
    the signing secret (shown once, sealed at rest)."""
    if principal.kind not in ("user", "client") or principal.department_id is None:
        raise Forbidden("仅部门用户或应用系统可订阅", "Only a department's users and systems may subscribe")
    if mode not in ("webhook", "feed"):
        raise invalid("exchange.mode_invalid", "mode 须为 webhook 或 feed", "mode must be webhook or feed", "mode")
    target = netguard.check_url(check_webhook_url(url or ""), settings.outbound_allow) if mode == "webhook" else None
    entry = entry_by_code(session, entry_code)
    from datatong.exchange import sources

    source = sources.source_for_entry(session, entry.id)
    if source is None or not source.change_column:
        raise AppError(
            "exchange.no_change_tracking",
            "该信息资源的数据源未配置变更跟踪列，不能订阅",
            "The resource's data source tracks no changes: it cannot be subscribed to",
            status_code=409,
        )
    context = ctx.audit_detail()
    decision = decide(
        session, settings, principal, entry, list(items or []), ctx.purpose, 0, "exchange.subscribe", context
    )
    sub = Subscription(
        entry_id=entry.id,
        department_id=principal.department_id,
        mode=mode,
        url=target,
        items=json.dumps(list(items or decision.items), ensure_ascii=False),
        system=context.get("system", ""),
        operator=context.get("operator", ""),
        purpose=ctx.purpose,
        case_no=context.get("case") or None,
        caller_kind=principal.kind,
        caller_id=principal.id or 0,
        status="active",
        position=bus.head(session, entry.id),  # changes from now on
        created_by=principal.username,
    )
    session.add(sub)
    session.flush()
    secret = None
    if mode == "webhook":
        secret = "whsec_" + secrets.token_urlsafe(24)
        sub.secret_sealed = crypto.seal(secret, aad=secret_aad(sub.id), settings=settings)
    _record(session, principal, "exchange.subscription.create", sub, entry, {"mode": mode, "position": sub.position})
    return sub, secret


def _record(
    session: Session,
    principal: Principal,
    action: str,
    sub: Subscription,
    entry: CatalogEntry | None,
    detail: dict[str, Any],
) -> None:
    from datatong.audit.service import record

    record(
        session,
        principal,
        action,
        resource=entry.code if entry else None,
        subject_department=entry.provider_code if entry else None,
        detail={"subscription": sub.id, **detail},
    )


def cancel(session: Session, principal: Principal, subscription_id: int) -> Subscription:
    sub = _own(session, principal, subscription_id)
    sub.status, sub.updated_at = "cancelled", utcnow()
    _record(session, principal, "exchange.subscription.cancel", sub, session.get(CatalogEntry, sub.entry_id), {})
    return sub


def set_paused(session: Session, principal: Principal, subscription_id: int, paused: bool) -> Subscription:
    sub = _own(session, principal, subscription_id)
    sub.status, sub.updated_at = ("paused" if paused else "active"), utcnow()
    if not paused:
        sub.attempts, sub.next_attempt_at = 0, None
    action = "exchange.subscription.pause" if paused else "exchange.subscription.resume"
    _record(session, principal, action, sub, session.get(CatalogEntry, sub.entry_id), {})
    return sub


def replay(session: Session, bus: Bus, principal: Principal, subscription_id: int, offset: int) -> Subscription:
    """Deliver again everything after ``offset`` (e.g. a dead-lettered batch's first
    offset minus one, or 0 for all the bus still holds)."""
    sub = _own(session, principal, subscription_id)
    head = bus.head(session, sub.entry_id)
    if offset < 0 or offset > max(head, sub.position):
        raise invalid(
            "exchange.offset_invalid",
            f"偏移量须在 0–{max(head, sub.position)} 之间",
            f"offset must be 0–{max(head, sub.position)}",
            "offset",
        )
    before = sub.position
    sub.position, sub.attempts, sub.next_attempt_at, sub.updated_at = offset, 0, None, utcnow()
    entry = session.get(CatalogEntry, sub.entry_id)
    _record(session, principal, "exchange.subscription.replay", sub, entry, {"from": before, "to": offset})
    return sub


def dead_letters(session: Session, principal: Principal, subscription_id: int) -> list[DeadLetter]:
    sub = get(session, principal, subscription_id)
    stmt = select(DeadLetter).where(DeadLetter.subscription_id == sub.id).order_by(DeadLetter.id.desc()).limit(200)
    return list(session.scalars(stmt))


def feed(
    session: Session,
    settings: Any,
    bus: Bus,
    principal: Principal,
    subscription_id: int,
    *,
    after: int | None,
    limit: int,
    ctx: Context,
) -> dict[str, Any]:
    """Pull: changes after ``after`` (default: the last offset acknowledged), masked and
    audited; ``next`` is the offset to pass as ``after`` next time."""
    if not 1 <= limit <= MAX_FEED:
        raise invalid("exchange.limit_invalid", f"每次条数须为 1–{MAX_FEED}", f"limit must be 1–{MAX_FEED}", "limit")
    sub = _own(session, principal, subscription_id)
    start = sub.position if after is None else after
    if start < 0:
        raise invalid("exchange.offset_invalid", "偏移量不能为负数", "offset must not be negative", "after")
    entry = session.get(CatalogEntry, sub.entry_id)
    if entry is None or entry.status != "published":
        raise NotFound("信息资源", "Catalog entry")
    items = json.loads(sub.items)
    changes = bus.read(session, sub.entry_id, start, limit)
    context = ctx.audit_detail()
    decision = decide(
        session, settings, principal, entry, items, ctx.purpose, len(changes), "exchange.subscription.feed", context
    )
    body = {
        "subscription": sub.id,
        "entry": entry.code,
        "changes": masked_changes(session, decision, items, changes),
        "next": changes[-1].offset if changes else start,
        "grant_id": decision.grant_id,
    }
    audit_batch(settings, principal, sub, entry, decision, changes, "exchange.subscription.feed", context)
    if sub.mode == "feed" and after is not None and after > sub.position:
        # Passing ``after`` acknowledges everything up to it: a consumer that lost an
        # answer asks again from its own last offset and loses nothing.
        sub.position, sub.updated_at = after, utcnow()
    return body
