"""The exchange services a consumer calls: query (查询接口) and verification (查询核验).

Every call, in this order: find the entry's data source; ask ``authorize`` (grant, items,
purpose, quota — deny by default); read only what is allowed, with filters and the page
pushed into the source's database; mask what the grant does not give in clear; write the
audit record with the request context — and only then return data (fail closed: if the
record cannot be written the caller gets 503 and no data).

Quota: a query page counts its page size (``limit``) against the grant's rows per day
(the consumer chooses small pages: 小批量、多频次); a verification counts its subjects.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from datatong import crypto
from datatong.audit.service import AuditUnavailable, Event, make_event
from datatong.audit.writer import log_refusal, writer_for
from datatong.catalog.models import CatalogEntry
from datatong.db import engine_for, utcnow
from datatong.errors import AppError, NotFound, invalid
from datatong.exchange import metrics
from datatong.exchange.batching import batcher_for
from datatong.exchange.readers import OPS, Filter, SourceReader, SqlReader
from datatong.orgs.service import Principal
from datatong.sharing import masking, policy
from datatong.sharing.authorize import (
    Decision,
    NeedsDatabase,
    NeedsLease,
    NeedsRefresh,
    authorize,
    authorize_cached,
    lease,
    refresh,
)
from datatong.swrcache import SwrCache

log = logging.getLogger("datatong.exchange")
MAX_PAGE = 1000
MAX_SUBJECTS = 100


class Context(Protocol):
    """The request context (X-Road style) every call carries: see context.py."""

    purpose: str

    def audit_detail(self) -> dict[str, Any]: ...


class ReaderFactory(Protocol):
    def __call__(self, session: Session, settings: Any, entry: CatalogEntry) -> tuple[SourceReader, str]: ...


class Refused(AppError):
    """authorize said no: 403 with the refusal code (``exchange.<reason>``)."""

    status_code = 403

    def __init__(self, decision: Decision) -> None:
        zh = decision.message or "无权访问该信息资源"
        super().__init__(
            f"exchange.{decision.reason}",
            zh,
            f"Refused: {decision.reason}",
            status_code=429 if decision.reason == "over_quota" else 403,
        )
        self.decision = decision


@dataclass
class Result:
    """What a call returns, plus what the receipt and the metrics need."""

    body: dict[str, Any]
    decision: Decision
    rows: int
    entry_code: str
    items: list[str] = field(default_factory=list)
    sealed: Any = None  # what verify_in_memory's after_commit gave (the signed receipt)


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    return value


def _seal_cursor(after: Any, aad: str, settings: Any) -> str | None:
    """The next-page cursor, sealed: it holds the last row's key in clear, which the grant
    may give only masked (e.g. 身份证号); the consumer passes it back unread."""
    if after is None:
        return None
    return crypto.seal(json.dumps(_json_value(after), ensure_ascii=False), aad=aad, settings=settings)


def _open_cursor(token: Any, aad: str, settings: Any) -> Any:
    if token is None:
        return None
    try:
        return json.loads(crypto.unseal(str(token), aad=aad, settings=settings))
    except (crypto.CryptoError, ValueError):
        raise invalid(
            "exchange.cursor_invalid",
            "分页游标无效：请使用上一页返回的 next",
            "Invalid cursor: pass the next value of the previous page",
            "after",
        ) from None


def _filters(raw: Sequence[Mapping[str, Any]], allowed: Sequence[str], masked: Sequence[str] = ()) -> list[Filter]:
    """Filters only on items the caller may see (a filter on another item would leak it);
    on a masked item only exact matches (a range or prefix would reveal it piece by piece)."""
    out: list[Filter] = []
    for i, f in enumerate(raw):
        item, op = str(f.get("item", "")), str(f.get("op", "eq"))
        if op not in OPS:
            raise invalid(
                "exchange.filter_invalid",
                f"第 {i + 1} 个筛选条件的 op 须为 {'/'.join(OPS)}",
                f"filter {i + 1}: op must be one of {', '.join(OPS)}",
                "filters",
            )
        if item not in allowed:
            raise invalid(
                "exchange.filter_item_not_granted",
                f"不能按未授权的信息项“{item}”筛选",
                f"Cannot filter on a data item not granted: {item}",
                "filters",
            )
        if item in masked and op not in ("eq", "in"):
            raise invalid(
                "exchange.filter_masked_item",
                f"信息项“{item}”为脱敏提供，只能按等于或属于筛选",
                f"{item} is masked: only eq and in filters are allowed on it",
                "filters",
            )
        out.append(Filter(item, op, f.get("value")))
    return out


def _decide(
    session: Session,
    settings: Any,
    principal: Principal,
    entry_code: str,
    items: Sequence[str],
    ctx: Context,
    rows: int,
    service: str,
    now: datetime | None,
) -> Decision:
    decision = authorize(
        session,
        consumer=principal,
        entry=entry_code,
        items=list(items),
        purpose=ctx.purpose,
        now=now or utcnow(),
        rows=rows,
    )
    if not decision.allowed:
        log_refusal(
            settings,
            principal,
            f"exchange.{service}",
            resource=entry_code,
            reason=decision.reason or "refused",
            detail={"context": ctx.audit_detail(), "items": list(items)},
        )
        raise Refused(decision)
    return decision


def query(
    session: Session,
    settings: Any,
    principal: Principal,
    reader_for: ReaderFactory,
    *,
    entry: CatalogEntry | Target,
    ctx: Context,
    items: Sequence[str] | None,
    filters: Sequence[Mapping[str, Any]] = (),
    after: Any = None,
    limit: int = 100,
    now: datetime | None = None,
) -> Result:
    """One page of rows of ``entry``: only granted items, masked as the grant says."""
    if not 1 <= limit <= MAX_PAGE:
        raise invalid("exchange.limit_invalid", f"每页条数须为 1–{MAX_PAGE}", f"limit must be 1–{MAX_PAGE}", "limit")
    # A Target (the API's cached entry) brings its reader along.
    reader = entry.reader if isinstance(entry, Target) else reader_for(session, settings, entry)[0]
    # No items named: everything the grant allows (authorize answers with the grant's items).
    wanted = list(items or [])
    decision = _decide(session, settings, principal, entry.code, wanted, ctx, limit, "query", now)
    granted = [i for i in decision.items if i in reader.items]
    aad = f"exchange.cursor:{entry.code}:{decision.grant_id}"
    page = reader.page(
        granted, _filters(filters, granted, decision.masked_items), _open_cursor(after, aad, settings), limit
    )
    rules = policy.masking_rules(session)
    rows = [
        {
            k: _json_value(v)
            for k, v in masking.mask_row(r, decision.masked_items, decision.mask_kinds, rules).items()
            if k in granted
        }
        for r in page.rows
    ]
    body = {
        "entry": entry.code,
        "items": granted,
        "masked_items": list(decision.masked_items),
        "rows": rows,
        "next": _seal_cursor(page.after, aad, settings),
        "grant_id": decision.grant_id,
    }
    _audit(settings, principal, "exchange.query", entry, decision, len(rows), ctx, {"filters": len(filters)})
    return Result(body, decision, len(rows), entry.code, granted)


def _same(claimed: Any, stored: Any) -> bool:
    if stored is None:
        return claimed is None
    a, b = str(_json_value(claimed)).strip(), str(_json_value(stored)).strip()
    return a.upper() == b.upper()


def verify(
    session: Session,
    settings: Any,
    principal: Principal,
    reader_for: ReaderFactory,
    *,
    entry: CatalogEntry,
    ctx: Context,
    subjects: Sequence[Mapping[str, Any]],
    now: datetime | None = None,
) -> Result:
    """查询核验: per subject and claimed item ``match`` / ``mismatch``, or the subject
    ``not_found`` — never a stored value."""
    _check_subject_count(subjects)
    reader, key_item = reader_for(session, settings, entry)
    target = Target(entry.id, entry.code, entry.provider_code, reader, key_item)
    return verify_target(session, settings, principal, target, ctx=ctx, subjects=subjects, now=now)


def _check_subject_count(subjects: Sequence[Mapping[str, Any]]) -> None:
    if not 1 <= len(subjects) <= MAX_SUBJECTS:
        raise invalid(
            "exchange.subjects_invalid",
            f"每次核验 1–{MAX_SUBJECTS} 个对象",
            f"1–{MAX_SUBJECTS} subjects per call",
            "subjects",
        )


def verify_target(
    session: Session,
    settings: Any,
    principal: Principal,
    target: Target,
    *,
    ctx: Context,
    subjects: Sequence[Mapping[str, Any]],
    now: datetime | None = None,
) -> Result:
    """``verify`` on an entry already resolved to its reader (``target``: the API's fast path)."""
    keys, claimed_items, wanted = _verify_plan(target, subjects)
    decision = _decide(session, settings, principal, target.code, wanted, ctx, len(subjects), "verify", now)
    found = _lookup(target, keys, claimed_items)
    result, event = _verified(principal, target, decision, ctx, subjects, keys, found, wanted)
    writer = writer_for(settings.database_url, settings.keys_path, settings.audit_checkpoint_every)
    writer.write(event)
    return result


# A call may meet each need once: other processes' changes due, the minute's calls and the
# day's rows to lease, a new minute starting meanwhile.
_ATTEMPTS = 5


async def verify_in_memory(
    settings: Any,
    principal: Principal,
    target: Target,
    *,
    ctx: Context,
    subjects: Sequence[Mapping[str, Any]],
    now: datetime | None = None,
    after_commit: Callable[[Result], Callable[[], Any]] | None = None,
) -> Result | None:
    """``verify_target`` for a caller on the event loop, without a thread of its own:
    ``authorize`` from memory (``authorize_cached``), the lookup batched with other
    calls' (batching.py), the audit record handed to the group-commit writer and awaited
    — still committed before the answer leaves (fail closed). ``None`` when this call
    cannot be answered so (not a SQL source, something to read from the platform
    database, quota units to lease, or a refusal, which is logged there): the caller
    then runs ``verify_target`` in a thread, which gives the same answer.

    ``after_commit(result)`` gives work for the audit writer's thread once the record is
    committed (the API signs the receipt there); its value is ``result.sealed``."""
    if not isinstance(target.reader, SqlReader):
        return None
    keys, claimed_items, wanted = _verify_plan(target, subjects)
    engine = engine_for(settings.database_url)
    for attempt in range(_ATTEMPTS):
        try:
            decision = authorize_cached(
                engine,
                consumer=principal,
                entry=target.code,
                items=wanted,
                purpose=ctx.purpose,
                now=now or utcnow(),
                rows=len(subjects),
            )
            break
        except NeedsRefresh:
            if attempt == _ATTEMPTS - 1:
                return None
            await run_in_threadpool(refresh, engine)  # this call looks; the others go on meanwhile
        except NeedsLease as need:
            if attempt == _ATTEMPTS - 1:
                return None
            await run_in_threadpool(lease, need)  # a block of quota units, as authorize() leases
        except NeedsDatabase:
            return None
    else:
        return None
    if not decision.allowed:
        return None
    metrics.child(metrics.PATHS, "memory").inc()
    found = await batcher_for(target.reader).submit(target.key_item, keys, claimed_items)
    result, event = _verified(principal, target, decision, ctx, subjects, keys, found, wanted)
    writer = writer_for(settings.database_url, settings.keys_path, settings.audit_checkpoint_every)
    then = after_commit(result) if after_commit is not None else None
    try:
        done = await writer.submit(event, then)
    except Exception as exc:
        log.error("audit record not written: %s", type(exc).__name__)
        raise AuditUnavailable() from exc
    if then is not None:
        result.sealed = done
    return result


def _verify_plan(target: Target, subjects: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[str], list[str]]:
    """The subjects' keys, the items they claim, and the items to authorize (key first)."""
    _check_subject_count(subjects)
    key_item = target.key_item
    claimed_items: list[str] = []
    for i, s in enumerate(subjects):
        claims = s.get("claims")
        if not isinstance(s.get("key"), str) or not s["key"].strip() or not isinstance(claims, Mapping) or not claims:
            raise invalid(
                "exchange.subject_invalid",
                f"第 {i + 1} 个对象须有 key 和至少一项 claims",
                f"subject {i + 1} needs a key and at least one claim",
                "subjects",
            )
        claimed_items += [str(k) for k in claims if str(k) not in claimed_items]
    wanted = [key_item, *[i for i in claimed_items if i != key_item]]
    keys = [str(s["key"]).strip() for s in subjects]
    return keys, claimed_items, wanted


def _verified(
    principal: Principal,
    target: Target,
    decision: Decision,
    ctx: Context,
    subjects: Sequence[Mapping[str, Any]],
    keys: list[str],
    found: Mapping[str, Mapping[str, Any]],
    wanted: list[str],
) -> tuple[Result, Event]:
    """The answer — per subject and claimed item match / mismatch / not_found — and its
    audit record (to be committed before the answer leaves)."""
    results = []
    for key, s in zip(keys, subjects, strict=True):
        row = found.get(key) or found.get(key.upper())
        if row is None:
            results.append({"key": key, "found": False, "items": {k: "not_found" for k in s["claims"]}})
        else:
            results.append(
                {
                    "key": key,
                    "found": True,
                    "items": {k: "match" if _same(v, row.get(k)) else "mismatch" for k, v in s["claims"].items()},
                }
            )
    body = {"entry": target.code, "results": results, "grant_id": decision.grant_id}
    extra = {"found": sum(1 for r in results if r["found"])}
    event = _audit_event(principal, "exchange.verify", target, decision, len(subjects), ctx, extra)
    return Result(body, decision, len(subjects), target.code, wanted), event


def _audit(
    settings: Any,
    principal: Principal,
    action: str,
    entry: CatalogEntry | Target,
    decision: Decision,
    rows: int,
    ctx: Context,
    extra: dict[str, Any],
) -> None:
    """Written (committed) before the data goes out, whatever ``audit_reads`` says: every
    exchange is audited. Raises AuditUnavailable (503) when it cannot be: fail closed."""
    writer = writer_for(settings.database_url, settings.keys_path, settings.audit_checkpoint_every)
    writer.write(_audit_event(principal, action, entry, decision, rows, ctx, extra))


def _audit_event(
    principal: Principal,
    action: str,
    entry: CatalogEntry | Target,
    decision: Decision,
    rows: int,
    ctx: Context,
    extra: dict[str, Any],
) -> Event:
    fields = decision.audit_fields()
    detail = {**(fields.pop("detail") or {}), "context": ctx.audit_detail(), **extra}
    fields.update(resource=entry.code, subject_department=entry.provider_code, rows=rows, detail=detail)
    return make_event(principal, action, **fields)


def entry_by_code(session: Session, code: str) -> CatalogEntry:

    entry = session.scalar(select(CatalogEntry).where(CatalogEntry.code == code))
    if entry is None or entry.status != "published":
        raise NotFound("信息资源", "Catalog entry")
    return entry


# ---------------------------------------------------------------- targets, cached


@dataclass(frozen=True)
class Target:
    """What a call needs of a published entry: its id, code and provider, and its data
    source's reader and key item."""

    id: int
    code: str
    provider_code: str
    reader: SourceReader
    key_item: str


def _lookup(target: Target, keys: list[str], items: list[str]) -> dict[str, dict[str, Any]]:
    """The rows of ``keys`` by key, as ``reader.lookup`` gives them: through the source's
    batcher for a SQL source (one query for this call and whatever else is queued, see
    batching.py), else the reader itself."""
    if isinstance(target.reader, SqlReader):
        return batcher_for(target.reader).lookup(target.key_item, keys, items)
    return target.reader.lookup(target.key_item, keys, items)


# Resolving an entry code to its reader costs two ORM loads (the entry with its data
# items, the source) — most of a verification call — for an answer that rarely changes.
# So each process keeps it (swrcache.py: fresh for TARGET_SECONDS, then read again by one
# caller, never older than TARGET_STALE_SECONDS — within the second that authorize()
# gives for changes made by other processes). Changes made in this process (ORM writes of
# an entry, its items or its source) drop the cache at once, again when they commit. Only
# found entries with a source are kept: misses are asked again. A withdrawn entry is
# refused by authorize() in any case (not_shareable).
TARGET_SECONDS = 0.5
TARGET_STALE_SECONDS = 1.0
_targets: SwrCache[tuple[str, str], Target] = SwrCache("targets", fresh=TARGET_SECONDS, stale=TARGET_STALE_SECONDS)


def target(session: Session, settings: Any, code: str, reader_for: ReaderFactory) -> Target:
    """The published entry ``code`` and its reader (404 ``NotFound``, 409
    ``exchange.no_source`` as ``entry_by_code`` and ``reader_for`` say), cached."""
    return _targets.get(session, (str(settings.database_url), code), _loader(settings, code, reader_for))


async def target_in_memory(settings: Any, code: str, reader_for: ReaderFactory) -> Target | None:
    """``target`` without blocking the event loop (a stale one is read again in a
    thread); None when not cached (ask ``target`` in a thread)."""
    key = (str(settings.database_url), code)
    return await _targets.get_in_memory(key, _loader(settings, code, reader_for), settings.database_url)


def _loader(settings: Any, code: str, reader_for: ReaderFactory) -> Callable[[Session], tuple[Target, None]]:
    def load(session: Session) -> tuple[Target, None]:
        entry = entry_by_code(session, code)
        reader, key_item = reader_for(session, settings, entry)
        return Target(entry.id, entry.code, entry.provider_code, reader, key_item), None

    return load


def forget_targets() -> None:
    """Drop every cached target (after a change of entries or sources)."""
    _targets.forget()


def _watch_targets() -> None:
    from datatong.catalog.models import DataItem
    from datatong.exchange.models import DataSource

    _targets.watch((CatalogEntry, DataItem, DataSource))


_watch_targets()
