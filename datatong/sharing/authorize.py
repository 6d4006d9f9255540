"""``authorize``: the one decision exchange asks for before moving any data.

Given who is calling, which resource, which items, for what purpose and how many rows,
it answers allowed or not, which grant allows it, which items go out and which of those
are masked, or the reason code of the refusal. It neither commits nor writes the audit
record: the caller does both, with ``Decision.audit_fields()``.

Speed (issue 4 item 10: ≥ 20,000 decisions/s warm with 100,000 grants). Each process
keeps, per database, what the decision needs in memory:

* catalog entries by code: id, provider, share type, status, each data item's
  sensitivity (an unknown code is not remembered: asked again each time);
* the grants of each (consumer department, entry) pair (a pair with none too),
  with their items, purpose, window, quotas and the masking already worked out per
  requested item list (at most ``MAX_CACHED`` pairs; past that the cache starts afresh).

A warm decision reads no table at all. The caches are kept honest three ways:

1. In this process, at once. Any ORM insert, update or delete of a ``Grant``,
   ``CatalogEntry`` or ``DataItem`` (``service.change_grant``, ``transfer_grant``,
   ``decide``, catalog edits …) drops the affected cache entries when it is flushed and
   again when its transaction commits or rolls back. ``invalidate()`` drops everything;
   code that changes these tables by Core SQL (bulk ``UPDATE``) must call it.
2. From other processes, within ``REFRESH_SECONDS`` (1 s). At most once a second per
   process one query reads the grants whose ``updated_at`` and the entries whose
   ``modified_at`` moved since the last look (less ``COMMIT_SKEW_SECONDS``, for
   transactions that commit a little after they stamped the row and for clocks that
   differ a little between servers) and drops what they touch. Every change the
   platform makes stamps those columns (grant created, suspended, resumed, revoked,
   renewed, transferred, expired; entry edited, published, withdrawn), so a revocation
   made anywhere is honoured everywhere within about one second of its commit. (The
   grant half of that query wants an index on ``share_grant.updated_at``; without one
   it scans the table: about 20 ms a second with 100,000 grants.)
3. Whatever else happens (a hand-made SQL change that stamps nothing, a transaction
   open longer than the skew), every cached pair and entry is re-read after
   ``MAX_AGE_SECONDS`` (60 s): that is the hard bound.

A session that itself holds uncommitted changes of grants or entries bypasses the
caches (it must see its own changes, and others must not see them).

Quotas. A grant without quotas does no counter work. With quotas, the process leases
blocks of units from ``share_quota_counter`` — the same conditional upsert
``… ON CONFLICT DO UPDATE SET n = n + k WHERE n + k <= limit``, ``k`` units at once
(at least the call's need, else ``max(1, limit // LEASE_FRACTION)``, at most what is
left) — in a short transaction of its own, committed before any unit is used, and
spends them from memory. The database counter therefore never passes the limit and no
process uses a unit it has not leased: all processes together never exceed the quota.
The price: units a process leased but did not spend before the window (minute or
Beijing day) ended stay unused, so other processes may be refused up to
``max(1, limit // 20)`` units (per process) early; and a leased unit is spent when the
decision allows, whether or not the caller's transaction then commits. On SQLite, when
the caller's connection already holds a write transaction (it would block a second
writer), and in a session with uncommitted grant changes, units are counted exactly in
the caller's transaction, one call at a time, as before.

``Decision.calls_this_minute`` / ``rows_today``: the window's database counter as of
this process's last lease, less the units this process leased and has not spent — i.e.
the units used in the window as far as this process knows, counting other processes'
leased units as used. With one process this is exactly the calls/rows so far.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Engine, bindparam, event, select, text
from sqlalchemy.orm import ORMExecuteState, Session, object_session

from datatong.catalog.models import CatalogEntry, DataItem
from datatong.db import is_sqlite, utcnow, writes_to
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

REFRESH_SECONDS = 1.0  # other processes' changes are looked for at most this often
COMMIT_SKEW_SECONDS = 5.0  # a row's stamp may precede its commit (or another clock) by this much
MAX_AGE_SECONDS = 60.0  # every cached pair and entry is re-read at least this often
MAX_CACHED = 500_000  # pairs (and entries) remembered at most; beyond, the cache starts afresh
LEASE_FRACTION = 20  # a lease takes max(1, limit // LEASE_FRACTION) units (or the call's need)
_LEASE_ATTEMPTS = 8


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


# ---------------------------------------------------------------- cached views


@dataclass(slots=True)
class _EntryView:
    id: int
    code: str
    provider_code: str
    share_type: str
    status: str
    sensitivity: dict[str, str]
    loaded_at: float


@dataclass(slots=True)
class _GrantView:
    id: int
    client_app_id: int | None
    items: tuple[str, ...]
    item_set: frozenset[str]
    clear: frozenset[str]
    purpose_kind: str
    valid_from: date
    valid_to: date | None
    rows_per_day: int | None
    calls_per_minute: int | None
    status: str
    masks: dict[tuple[str, ...], tuple[list[str], dict[str, str]]] = field(default_factory=dict)


@dataclass(slots=True)
class _Pair:
    grants: tuple[_GrantView, ...]  # newest first
    loaded_at: float


@dataclass(slots=True)
class _Lease:
    window: str
    limit: int
    left: int = 0  # leased and not yet spent by this process
    counted: int = 0  # the database counter as of this process's last look
    db_left: int = 0  # at most this many units are left in the database for the window


class _Cache:
    """What one process remembers of one database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sqlite = is_sqlite(engine)
        self.entries: dict[str, _EntryView] = {}  # by code
        self.entry_codes: dict[int, str] = {}  # entry id -> code
        self.pairs: dict[tuple[int, int], _Pair] = {}  # (consumer department, entry)
        self.pair_of_grant: dict[int, tuple[int, int]] = {}
        self.leases: dict[tuple[int, str], _Lease] = {}
        self.quota_lock = threading.Lock()
        self.refresh_lock = threading.Lock()
        self.last_refresh = time.time()
        self.next_refresh = self.last_refresh + REFRESH_SECONDS

    def clear(self) -> None:
        self.entries.clear()
        self.entry_codes.clear()
        self.pairs.clear()
        self.pair_of_grant.clear()

    def drop_pair(self, key: tuple[int, int] | None) -> None:
        if key is not None:
            self.pairs.pop(key, None)

    def drop_grant(self, grant_id: int, key: tuple[int, int] | None) -> None:
        self.drop_pair(self.pair_of_grant.pop(grant_id, None))
        self.drop_pair(key)

    def drop_entry(self, entry_id: int | None, code: str | None) -> None:
        if entry_id is not None:
            self.entries.pop(self.entry_codes.pop(entry_id, ""), None)
        if code is not None:
            self.entries.pop(code, None)


_caches: dict[int, _Cache] = {}
_generation = 0  # bumped by every in-process invalidation; a load that saw it move is not kept
_caches_lock = threading.Lock()
_DIRTY = "datatong.authorize.dirty"
_CACHE = "datatong.authorize.cache"


def invalidate(*, forget_leases: bool = False) -> None:
    """Forget every cached entry, grant and pair in this process. Call after changing
    grants or catalog entries other than through an ORM session — plain SQL on a
    connection (changes through a session, ORM objects or UPDATE/DELETE statements,
    invalidate by themselves). Leased quota units are kept — they are counted in the database already —
    unless ``forget_leases`` (after the counters were deleted, e.g. a test's reset;
    forgetting them is always safe, it only leaves leased units unused)."""
    global _generation
    _generation += 1
    for cache in list(_caches.values()):
        cache.clear()
        if forget_leases:
            with cache.quota_lock:
                cache.leases.clear()


def _cache_for(session: Session) -> _Cache:
    cache = _cache_of_bind(session)
    session.info[_CACHE] = cache  # the session keeps its bind
    return cache


def _cache_of_bind(session: Session) -> _Cache:
    bind = session.get_bind()
    engine: Engine = bind if isinstance(bind, Engine) else bind.engine
    cache = _caches.get(id(engine))
    if cache is None or cache.engine is not engine:
        with _caches_lock:
            cache = _caches.get(id(engine))
            if cache is None or cache.engine is not engine:
                cache = _caches[id(engine)] = _Cache(engine)
    return cache


def _key_of(target: Any) -> tuple[Any, ...]:
    """What a changed row touches, taken while its attributes are loaded (at flush)."""
    if isinstance(target, Grant):
        return ("grant", target.id, target.consumer_id, target.entry_id)
    if isinstance(target, CatalogEntry):
        return ("entry", target.id, target.code)
    return ("entry", target.entry_id, None)  # a DataItem: its entry's sensitivities


def _drop(key: tuple[Any, ...]) -> None:
    global _generation
    _generation += 1
    for cache in list(_caches.values()):
        if key[0] == "grant":
            _, gid, consumer_id, entry_id = key
            cache.drop_grant(gid, (consumer_id, entry_id) if consumer_id and entry_id else None)
        else:
            cache.drop_entry(key[1], key[2])


def _on_row_change(_mapper: Any, _connection: Any, target: Any) -> None:
    key = _key_of(target)
    session = object_session(target)
    if session is not None:
        session.info.setdefault(_DIRTY, []).append(key)
    _drop(key)


def _on_statement(state: ORMExecuteState) -> None:
    # An UPDATE/DELETE/INSERT statement through the session (``update(Grant)…``) changes
    # rows no ORM object stands for, and names none: forget everything, now and at commit.
    if writes_to(state, (Grant, CatalogEntry, DataItem)):
        state.session.info.setdefault(_DIRTY, []).append(_ALL)
        invalidate()


def _on_transaction_done(session: Session, *_: Any) -> None:
    for key in session.info.pop(_DIRTY, ()):
        if key == _ALL:
            invalidate()
        else:
            _drop(key)


_ALL = ("all",)
for _model in (Grant, CatalogEntry, DataItem):
    for _name in ("after_insert", "after_update", "after_delete"):
        event.listen(_model, _name, _on_row_change)
event.listen(Session, "do_orm_execute", _on_statement)
event.listen(Session, "after_commit", _on_transaction_done)
event.listen(Session, "after_rollback", _on_transaction_done)


# ---------------------------------------------------------------- loading and refreshing

_E = CatalogEntry.__table__.c
_G = Grant.__table__.c
_I = DataItem.__table__.c
_ENTRY_SQL = select(_E.id, _E.code, _E.provider_code, _E.share_type, _E.status).where(_E.code == bindparam("code"))
_ITEMS_SQL = select(_I.name, _I.sensitivity).where(_I.entry_id == bindparam("entry_id"))
_GRANTS_SQL = (
    select(
        _G.id,
        _G.client_app_id,
        _G["items"],
        _G.clear_items,
        _G.purpose_kind,
        _G.valid_from,
        _G.valid_to,
        _G.rows_per_day,
        _G.calls_per_minute,
        _G.status,
    )
    # No ORDER BY: SQLite (without ANALYZE statistics) would then prefer the one-column
    # entry index, which yields rows in id order, to the (consumer, entry) one; sorted below.
    .where(_G.consumer_id == bindparam("consumer_id"), _G.entry_id == bindparam("entry_id"))
)
_GRANTS_CHANGED_SQL = select(_G.id, _G.consumer_id, _G.entry_id, _G.updated_at).where(
    _G.updated_at >= bindparam("since", type_=_G.updated_at.type)
)
_ENTRIES_CHANGED_SQL = select(_E.id, _E.code, _E.modified_at).where(
    _E.modified_at >= bindparam("since", type_=_E.modified_at.type)
)


def _epoch(value: datetime) -> float:
    """Seconds since the epoch of a stored timestamp (SQLite gives it back without zone: UTC)."""
    return (value if value.tzinfo is not None else value.replace(tzinfo=UTC)).timestamp()


def _load_entry(session: Session, code: str) -> _EntryView | None:
    loaded_at = time.time()
    row = session.execute(_ENTRY_SQL, {"code": code}).first()
    if row is None:
        return None
    sensitivity = {name: s for name, s in session.execute(_ITEMS_SQL, {"entry_id": row.id})}
    return _EntryView(row.id, row.code, row.provider_code, row.share_type, row.status, sensitivity, loaded_at)


def _load_pair(session: Session, consumer_id: int, entry_id: int) -> _Pair:
    loaded_at = time.time()
    rows = session.execute(_GRANTS_SQL, {"consumer_id": consumer_id, "entry_id": entry_id}).all()
    grants = tuple(
        _GrantView(gid, app, tuple(its or ()), frozenset(its or ()), frozenset(clear or ()), *rest)
        for gid, app, its, clear, *rest in sorted(rows, key=lambda r: -r[0])  # newest first
    )
    return _Pair(grants, loaded_at)


class NeedsDatabase(Exception):
    """``authorize_cached`` cannot decide from memory: ask ``authorize`` with a session."""


class NeedsRefresh(NeedsDatabase):
    """``authorize_cached``: other processes' changes are due to be looked for; call
    ``refresh`` (in a thread) and ask again."""


class NeedsLease(NeedsDatabase):
    """``authorize_cached``: this process holds too few quota units; call ``lease(exc)``
    (in a thread: a short transaction of its own) and ask again."""

    def __init__(self, cache: _Cache, grant_id: int, wants: list[tuple[str, str, int, int]]) -> None:
        super().__init__()
        self.cache, self.grant_id, self.wants = cache, grant_id, wants


def lease(need: NeedsLease) -> None:
    """Lease what ``need`` names (``authorize`` leases the same way, inline)."""
    _add_leases(need.cache, need.grant_id, need.wants)


def _entry_view(cache: _Cache | None, session: Session | None, code: str, now_s: float) -> _EntryView | None:
    if cache is None:
        assert session is not None
        return _load_entry(session, code)
    view = cache.entries.get(code)
    if view is not None and now_s - view.loaded_at < MAX_AGE_SECONDS:
        return view
    if session is None:
        raise NeedsDatabase
    gen = _generation
    view = _load_entry(session, code)
    if view is not None and gen == _generation:  # unknown codes are not remembered
        if len(cache.entries) >= MAX_CACHED:
            cache.entries.clear()
            cache.entry_codes.clear()
        cache.entries[code] = view
        cache.entry_codes[view.id] = code
    return view


def _pair(cache: _Cache | None, session: Session | None, consumer_id: int, entry_id: int, now_s: float) -> _Pair:
    if cache is None:
        assert session is not None
        return _load_pair(session, consumer_id, entry_id)
    key = (consumer_id, entry_id)
    pair = cache.pairs.get(key)
    if pair is not None and now_s - pair.loaded_at < MAX_AGE_SECONDS:
        return pair
    if session is None:
        raise NeedsDatabase
    gen = _generation
    pair = _load_pair(session, consumer_id, entry_id)
    if gen == _generation:
        if len(cache.pairs) >= MAX_CACHED:
            cache.pairs.clear()
            cache.pair_of_grant.clear()
        cache.pairs[key] = pair
        for g in pair.grants:
            cache.pair_of_grant[g.id] = key
    return pair


def _refresh(cache: _Cache) -> None:
    """Drop what other processes changed since the last look (at most once per
    ``REFRESH_SECONDS``; one thread at a time, the others go on with the caches)."""
    if not cache.refresh_lock.acquire(blocking=False):
        return
    try:
        started = time.time()
        since = datetime.fromtimestamp(cache.last_refresh - COMMIT_SKEW_SECONDS, UTC)
        with cache.engine.connect() as conn:
            grants = conn.execute(_GRANTS_CHANGED_SQL, {"since": since}).all()
            entries = conn.execute(_ENTRIES_CHANGED_SQL, {"since": since}).all()
        # A cached view loaded before a row's stamp plus the skew may predate its commit.
        for gid, consumer_id, entry_id, stamp in grants:
            limit = _epoch(stamp) + COMMIT_SKEW_SECONDS
            for key in (cache.pair_of_grant.get(gid), (consumer_id, entry_id)):
                pair = cache.pairs.get(key) if key is not None else None
                if pair is not None and pair.loaded_at < limit:
                    cache.pairs.pop(key, None)  # type: ignore[arg-type]
        for _eid, code, stamp in entries:
            view = cache.entries.get(code)
            if view is not None and view.loaded_at < _epoch(stamp) + COMMIT_SKEW_SECONDS:
                cache.entries.pop(code, None)
        cache.last_refresh = started
        cache.next_refresh = time.time() + REFRESH_SECONDS
    finally:
        cache.refresh_lock.release()


# ---------------------------------------------------------------- checks

_window_memo: tuple[Any, date, str, str] | None = None


def _windows(now: datetime) -> tuple[date, str, str]:
    """The Beijing calendar day of ``now``, its quota minute ``YYYYMMDDHHMM`` (in ``now``'s
    own zone, as stored so far) and day ``YYYYMMDD``; remembered for the current minute."""
    global _window_memo
    if now.tzinfo is None:  # naive: taken as local already, not memoised
        today = local_date(now)
        return today, now.strftime("%Y%m%d%H%M"), today.strftime("%Y%m%d")
    key = (int(now.timestamp() // 60), now.tzinfo)
    memo = _window_memo
    if memo is not None and memo[0] == key:
        return memo[1], memo[2], memo[3]
    today = local_date(now)  # Beijing days change on a minute boundary: one per minute
    memo = _window_memo = (key, today, now.strftime("%Y%m%d%H%M"), today.strftime("%Y%m%d"))
    return memo[1], memo[2], memo[3]


def _check(grant: _GrantView, wanted: Sequence[str], purpose: str, today: date) -> str | None:
    if grant.status == "revoked" or grant.status == "suspended":
        return grant.status
    if grant.status == "expired" or today < grant.valid_from or (grant.valid_to is not None and today > grant.valid_to):
        return "expired"
    if grant.purpose_kind != purpose:
        return "purpose_mismatch"
    if wanted and not grant.item_set.issuperset(wanted):
        return "item_not_granted"
    return None


# ---------------------------------------------------------------- quotas

_COUNT_SQL = text(
    "INSERT INTO share_quota_counter (grant_id, kind, window_key, n) VALUES (:g, :kind, :w, :k) "
    "ON CONFLICT (grant_id, kind, window_key) DO UPDATE SET n = share_quota_counter.n + :k "
    "WHERE share_quota_counter.n + :k <= :lim RETURNING n"
)
_READ_SQL = text("SELECT n FROM share_quota_counter WHERE grant_id = :g AND kind = :kind AND window_key = :w")
_UNDO_SQL = text("UPDATE share_quota_counter SET n = n - :k WHERE grant_id = :g AND kind = :kind AND window_key = :w")


def _take(conn: Any, grant_id: int, kind: str, window: str, k: int, limit: int) -> int | None:
    """Add ``k`` to the counter unless that passes ``limit``; the new value, or None."""
    if k > limit:
        return None
    n = conn.execute(_COUNT_SQL, {"g": grant_id, "kind": kind, "w": window, "k": k, "lim": limit}).scalar()
    return None if n is None else int(n)


def _lease(conn: Any, grant_id: int, kind: str, window: str, short: int, limit: int) -> tuple[int, int]:
    """Lease at least ``short`` units (a block if there is room): (units leased, the
    counter after); no units when fewer than ``short`` are left."""
    want = max(short, limit // LEASE_FRACTION, 1)
    used = 0
    for _ in range(_LEASE_ATTEMPTS):
        n = _take(conn, grant_id, kind, window, want, limit)
        if n is not None:
            return want, n
        used = int(conn.execute(_READ_SQL, {"g": grant_id, "kind": kind, "w": window}).scalar() or 0)
        if limit - used < short:
            break
        want = limit - used  # less than a block is left: take all of it
    return 0, used


def _window_lease(cache: _Cache, grant_id: int, kind: str, window: str, limit: int) -> _Lease:
    """This process's lease of the window (call with ``quota_lock`` held)."""
    lease = cache.leases.get((grant_id, kind))
    if lease is None or lease.window != window or lease.limit != limit:
        lease = cache.leases[(grant_id, kind)] = _Lease(window, limit, db_left=limit)
    return lease


def _spend(
    cache: _Cache, grant: _GrantView, minute: str, day: str, rows: int, lease: bool = True
) -> tuple[int | None, int | None] | None:
    """Take one call and ``rows`` rows from this process's leases, leasing more when
    short: (calls this minute, rows today) as far as known, or None when over quota.
    A call refused for its minute leases no rows; one refused for rows spends no call.
    What is left in the database only shrinks within a window, so a need larger than
    the last known remainder is refused without asking it again."""
    cpm, rpd = grant.calls_per_minute, grant.rows_per_day
    need_rows = rows if (rpd is not None and rows > 0) else 0
    for _ in range(_LEASE_ATTEMPTS):
        with cache.quota_lock:
            calls = _window_lease(cache, grant.id, "m", minute, cpm) if cpm is not None else None
            day_rows = _window_lease(cache, grant.id, "d", day, rpd) if rpd is not None and need_rows else None
            call_short = 1 - calls.left if calls is not None else 0
            rows_short = need_rows - day_rows.left if day_rows is not None else 0
            if call_short <= 0 and rows_short <= 0:
                if calls is not None:
                    calls.left -= 1
                if day_rows is not None:
                    day_rows.left -= need_rows
                return (
                    calls.counted - calls.left if calls is not None else None,
                    day_rows.counted - day_rows.left if day_rows is not None else None,
                )
            if (calls is not None and call_short > calls.db_left) or (
                day_rows is not None and rows_short > day_rows.db_left
            ):
                return None
        wants = []
        if call_short > 0:
            wants.append(("m", minute, call_short, cpm or 0))
        if rows_short > 0:
            wants.append(("d", day, rows_short, rpd or 0))
        if not lease:
            raise NeedsLease(cache, grant.id, wants)  # nothing was spent: lease in a thread, ask again
        # Even when the database had nothing more to lease, another thread of this
        # process may just have leased units this call can spend: look again (bounded).
        _add_leases(cache, grant.id, wants)
    return None


def _add_leases(cache: _Cache, grant_id: int, wants: list[tuple[str, str, int, int]]) -> bool:
    """Lease what ``wants`` lists — (kind, window, units short, limit) — in one short
    transaction of the process's own, committed before any unit is spent; stop at the
    first that cannot be had (a call over its minute leases no rows)."""
    got: list[tuple[str, str, int, int, int]] = []
    with cache.engine.begin() as conn:
        for kind, window, short, limit in wants:
            units, counted = _lease(conn, grant_id, kind, window, short, limit)
            got.append((kind, window, limit, units, counted))
            if not units:
                break
    with cache.quota_lock:
        for kind, window, limit, units, counted in got:
            lease = _window_lease(cache, grant_id, kind, window, limit)
            lease.left += units
            lease.counted = max(lease.counted, counted)
            lease.db_left = min(lease.db_left, limit - counted)
    return all(units for *_, units, _counted in got)


def _spend_exact(
    session: Session, grant: _GrantView, minute: str, day: str, rows: int
) -> tuple[int | None, int | None] | None:
    """Count this one call in the caller's transaction (no lease)."""
    rows_today = calls = None
    if grant.rows_per_day is not None and rows > 0:
        rows_today = _take(session, grant.id, "d", day, rows, grant.rows_per_day)
        if rows_today is None:
            return None
    if grant.calls_per_minute is not None:
        calls = _take(session, grant.id, "m", minute, 1, grant.calls_per_minute)
        if calls is None:
            if rows_today is not None:
                session.execute(_UNDO_SQL, {"g": grant.id, "kind": "d", "w": day, "k": rows})
            return None
    return calls, rows_today


def _holds_write(session: Session, cache: _Cache) -> bool:
    """Whether a second connection writing now would wait for the caller's (SQLite has one writer)."""
    if not cache.sqlite:
        return False
    dbapi = session.connection().connection.dbapi_connection
    return bool(getattr(dbapi, "in_transaction", False))


# ---------------------------------------------------------------- the decision


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
    now_s = time.time()
    # A session with its own uncommitted grant or entry changes reads through the caches.
    info = session.info
    cache = None if _DIRTY in info else (info.get(_CACHE) or _cache_for(session))
    if cache is not None and now_s >= cache.next_refresh:
        _refresh(cache)
    return _decide(session, cache, consumer, entry, items, purpose, now, now_s, rows)


def authorize_cached(
    engine: Engine, *, consumer: Principal, entry: str, items: Sequence[str], purpose: str, now: datetime, rows: int = 0
) -> Decision:
    """``authorize`` from this process's memory alone — no database, no lock held for
    long — for callers on an event loop. The same rules and the same answer; raises
    NeedsDatabase (having spent nothing) when an entry or grant is not cached or is
    due for a re-read, other processes' changes are due to be looked for, or quota
    units must be leased: the caller then asks ``authorize`` with a session."""
    cache = _caches.get(id(engine))
    now_s = time.time()
    if cache is None or cache.engine is not engine:
        raise NeedsDatabase
    if now_s >= cache.next_refresh and not cache.refresh_lock.locked():
        # Due to look for other processes' changes: the caller does it in a thread. While
        # it runs, calls go on with the caches, as authorize()'s own callers do.
        raise NeedsRefresh
    return _decide(None, cache, consumer, entry, items, purpose, now, now_s, rows)


def refresh(engine: Engine) -> None:
    """Look for other processes' changes now if due (what ``authorize`` does first)."""
    cache = _caches.get(id(engine))
    if cache is not None and cache.engine is engine and time.time() >= cache.next_refresh:
        _refresh(cache)


def _decide(
    session: Session | None,
    cache: _Cache | None,
    consumer: Principal,
    entry: CatalogEntry | str,
    items: Sequence[str],
    purpose: str,
    now: datetime,
    now_s: float,
    rows: int,
) -> Decision:
    code = entry if isinstance(entry, str) else entry.code
    view = _entry_view(cache, session, code, now_s)
    if view is None:
        if isinstance(entry, str):
            return _refuse("no_grant", entry_code=entry, purpose=purpose, items=list(items), rows=rows)
        sensitivity = {i.name: i.sensitivity for i in entry.items}
        view = _EntryView(entry.id, entry.code, entry.provider_code, "", "", sensitivity, now_s)
    if not isinstance(entry, str):  # the caller's object is the authority on its own state
        share_type, status, provider_code = entry.share_type, entry.status, entry.provider_code
    else:
        share_type, status, provider_code = view.share_type, view.status, view.provider_code
    wanted = list(items)
    base: dict[str, Any] = {
        "entry_code": code,
        "provider_code": provider_code,
        "consumer_code": consumer.department_code,
        "purpose": purpose,
        "items": wanted,
        "rows": rows,
    }
    if share_type == "none" or status != "published":
        # 不予共享, or no longer in the published catalog (e.g. 撤销): no grant applies.
        return _refuse("not_shareable", **base)
    if consumer.department_id is None:
        return _refuse("no_grant", **base)
    pair = _pair(cache, session, consumer.department_id, view.id, now_s)
    client_id = consumer.id if consumer.kind == "client" else None
    today, minute, day = _windows(now)  # grants run in Beijing calendar days
    best: tuple[int, str] | None = None
    chosen: _GrantView | None = None
    for grant in pair.grants:
        if grant.client_app_id is not None and grant.client_app_id != client_id:
            continue  # bound to another system (a user only uses department-wide grants)
        why = _check(grant, wanted, purpose, today)
        if why is None:
            chosen = grant
            break
        if best is None or _RANK[why] > best[0]:
            best = (_RANK[why], why)
            base["grant_id"] = grant.id
    if chosen is None:
        if best is None:
            return _refuse("no_grant", **base)
        return _refuse(best[1], **base)
    grant = chosen
    base["grant_id"] = grant.id
    key = tuple(wanted) if wanted else grant.items
    if not wanted:
        base["items"] = list(grant.items)
    if grant.calls_per_minute is not None or (grant.rows_per_day is not None and rows > 0):
        if session is None:  # authorize_cached: no transaction of the caller's to wait for
            assert cache is not None
            counted = _spend(cache, grant, minute, day, rows, lease=False)
        elif cache is None or _holds_write(session, cache):
            counted = _spend_exact(session, grant, minute, day, rows)
        else:
            counted = _spend(cache, grant, minute, day, rows)
        if counted is None:
            return _refuse("over_quota", **base)
        base["calls_this_minute"], base["rows_today"] = counted
    masks = grant.masks.get(key)
    if masks is None:
        masks = _masking(view.sensitivity, key, grant.clear)
        if len(grant.masks) < 64:  # the item lists a caller keeps asking for, not every order of them
            grant.masks[key] = masks
    return Decision(True, masked_items=list(masks[0]), mask_kinds=dict(masks[1]), **base)


def _masking(
    sensitivity: dict[str, str], items: Sequence[str], clear: frozenset[str]
) -> tuple[list[str], dict[str, str]]:
    from datatong.sharing import masking  # written beside this module; imported late

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


def masking_of(
    entry: CatalogEntry, items: Sequence[str], clear_items: Sequence[str]
) -> tuple[list[str], dict[str, str]]:
    """The items to mask: sensitive ones (by the catalog's sensitivity or by the masking
    rules' kind of the item's name) unless the grant gives them in clear."""
    return _masking({i.name: i.sensitivity for i in entry.items}, items, frozenset(clear_items))
