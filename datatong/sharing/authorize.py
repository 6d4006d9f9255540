"""``authorize``: the one decision exchange asks for before moving any data.

Given who is calling, which resource, which items, for what purpose and how many rows,
it answers allowed or not, which grant allows it, which items go out and which of those
are masked, or the reason code of the refusal. It counts calls per minute and rows per
day in ``share_quota_counter`` with one atomic statement per counter, so two processes
cannot both take the last unit of a quota. It neither commits nor writes the audit
record: the caller does both, with ``Decision.audit_fields()``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from datatong.catalog.models import CatalogEntry
from datatong.db import utcnow
from datatong.orgs.service import Principal
from datatong.sharing.models import Grant
from datatong.sharing.workdays import local_date

# Refusal reason codes, with the Chinese message shown to the caller.
REASONS = {
    "not_shareable": "该信息资源不予共享",
    "no_grant": "没有使用该信息资源的授权",
    "suspended": "授权已暂停",
    "revoked": "授权已撤销",
    "expired": "授权不在有效期内",
    "purpose_mismatch": "用途与授权不符",
    "item_not_granted": "请求了未授权的信息项",
    "over_quota": "超出授权的调用频次或数据量",
}
# How far a grant got through the checks, to report the most telling refusal when
# several grants exist (e.g. "item_not_granted" of a valid grant beats "revoked" of an old one).
_RANK = {"revoked": 0, "suspended": 1, "expired": 2, "purpose_mismatch": 3, "item_not_granted": 4}
SENSITIVE = {"personal", "sensitive"}


@dataclass
class Decision:
    allowed: bool
    reason: str | None = None
    message: str | None = None
    grant_id: int | None = None
    entry_code: str | None = None
    provider_code: str | None = None
    consumer_code: str | None = None
    purpose: str | None = None
    items: list[str] = field(default_factory=list)
    masked_items: list[str] = field(default_factory=list)
    mask_kinds: dict[str, str] = field(default_factory=dict)
    rows: int = 0
    calls_this_minute: int | None = None
    rows_today: int | None = None

    def audit_fields(self) -> dict[str, Any]:
        """Keyword arguments for audit ``record``/``make_event`` of this exchange call."""
        return {
            "resource": self.entry_code,
            "subject_department": self.provider_code,
            "items": self.items,
            "purpose": self.purpose,
            "grant_id": self.grant_id,
            "rows": self.rows,
            "outcome": "allowed" if self.allowed else "refused",
            "reason": self.reason,
            "detail": {"masked": self.masked_items} if self.masked_items else None,
        }


def _refuse(reason: str, **kw: Any) -> Decision:
    return Decision(False, reason, REASONS[reason], **kw)


def _check(grant: Grant, items: list[str], purpose: str, now: datetime) -> str | None:
    if grant.status in ("revoked", "suspended"):
        return grant.status
    today = local_date(now)  # grants run in Beijing calendar days
    if grant.status == "expired" or today < grant.valid_from or (grant.valid_to is not None and today > grant.valid_to):
        return "expired"
    if grant.purpose_kind != purpose:
        return "purpose_mismatch"
    if not set(items) <= set(grant.items):
        return "item_not_granted"
    return None


_COUNT_SQL = text(
    "INSERT INTO share_quota_counter (grant_id, kind, window_key, n) VALUES (:g, :kind, :w, :k) "
    "ON CONFLICT (grant_id, kind, window_key) DO UPDATE SET n = share_quota_counter.n + :k "
    "WHERE share_quota_counter.n + :k <= :lim RETURNING n"
)
_UNDO_SQL = text("UPDATE share_quota_counter SET n = n - :k WHERE grant_id = :g AND kind = :kind AND window_key = :w")


def _take(session: Session, grant_id: int, kind: str, window: str, k: int, limit: int) -> int | None:
    """Add ``k`` to the counter unless that passes ``limit``; the new value, or None."""
    if k > limit:
        return None
    n = session.execute(_COUNT_SQL, {"g": grant_id, "kind": kind, "w": window, "k": k, "lim": limit}).scalar()
    return None if n is None else int(n)


def authorize(
    session: Session,
    *,
    consumer: Principal,
    entry: CatalogEntry | str,
    items: Sequence[str],
    purpose: str,
    now: datetime | None = None,
    rows: int = 0,
) -> Decision:
    """May ``consumer`` (a user or a system of a department) use ``items`` of ``entry``
    (object or code) for ``purpose`` now, taking ``rows`` rows? Empty ``items``: all the
    grant allows. A system uses grants made to it or to its whole department; a user only
    department-wide ones."""
    now = now or utcnow()
    if isinstance(entry, str):
        found = session.scalar(select(CatalogEntry).where(CatalogEntry.code == entry))
        if found is None:
            return _refuse("no_grant", entry_code=entry, purpose=purpose, items=list(items), rows=rows)
        entry = found
    base: dict[str, Any] = {
        "entry_code": entry.code,
        "provider_code": entry.provider_code,
        "consumer_code": consumer.department_code,
        "purpose": purpose,
        "items": list(items),
        "rows": rows,
    }
    if entry.share_type == "none" or entry.status != "published":
        # 不予共享, or no longer in the published catalog (e.g. 撤销): no grant applies.
        return _refuse("not_shareable", **base)
    stmt = select(Grant).where(Grant.consumer_id == consumer.department_id, Grant.entry_id == entry.id)
    if consumer.kind == "client":
        stmt = stmt.where((Grant.client_app_id.is_(None)) | (Grant.client_app_id == consumer.id))
    else:
        stmt = stmt.where(Grant.client_app_id.is_(None))
    grants = list(session.scalars(stmt.order_by(Grant.id.desc())))
    if not grants or consumer.department_id is None:
        return _refuse("no_grant", **base)
    wanted = list(items)
    best: tuple[int, str] | None = None
    chosen: Grant | None = None
    for grant in grants:
        why = _check(grant, wanted or list(grant.items), purpose, now)
        if why is None:
            chosen = grant
            break
        if best is None or _RANK[why] > best[0]:
            best = (_RANK[why], why)
            base["grant_id"] = grant.id
    if chosen is None:
        assert best is not None
        return _refuse(best[1], **base)
    grant = chosen
    base["grant_id"] = grant.id
    base["items"] = wanted = wanted or list(grant.items)
    minute = now.strftime("%Y%m%d%H%M")
    day = local_date(now).strftime("%Y%m%d")  # rows per day reset at Beijing midnight
    if grant.rows_per_day is not None and rows > 0:
        taken = _take(session, grant.id, "d", day, rows, grant.rows_per_day)
        if taken is None:
            return _refuse("over_quota", **base)
        base["rows_today"] = taken
    if grant.calls_per_minute is not None:
        calls = _take(session, grant.id, "m", minute, 1, grant.calls_per_minute)
        if calls is None:
            if "rows_today" in base:
                session.execute(_UNDO_SQL, {"g": grant.id, "kind": "d", "w": day, "k": rows})
                base.pop("rows_today")
            return _refuse("over_quota", **base)
        base["calls_this_minute"] = calls
    masked, kinds = masking_of(entry, wanted, grant.clear_items)
    return Decision(True, masked_items=masked, mask_kinds=kinds, **base)


def masking_of(
    entry: CatalogEntry, items: Sequence[str], clear_items: Sequence[str]
) -> tuple[list[str], dict[str, str]]:
    """The items to mask: sensitive ones (by the catalog's sensitivity or by the masking
    rules' kind of the item's name) unless the grant gives them in clear."""
    from datatong.sharing import masking  # written beside this module; imported late

    sensitivity = {i.name: i.sensitivity for i in entry.items}
    clear = set(clear_items)
    masked: list[str] = []
    kinds: dict[str, str] = {}
    for name in items:
        if name in clear:
            continue
        kind = masking.kind_for_item(name)
        if kind != "none" or sensitivity.get(name) in SENSITIVE:
            masked.append(name)
            # Sensitive by the catalog but of no known kind: masked fully, never in clear.
            kinds[name] = kind if kind != "none" else "text"
    return masked, kinds
