"""``authorize`` benchmark (issue 4 item 10: ≥ 20,000 decisions/s warm with 100,000
grants in the database).

``run`` builds a fresh database (a temporary SQLite file, or a temporary database on
the PostgreSQL server named by ``database_url``, dropped afterwards) and bulk-loads,
with Core ``INSERT``s, ``consumers`` consuming departments, ``entries`` published
catalog entries of ``providers`` providing departments (five data items each, two of
them personal; 2 % 不予共享) and ``grants`` grants on distinct (consumer, entry) pairs:
90 % active, 4 % suspended, 3 % revoked, 3 % expired; 30 % with quotas (calls per
minute and rows per day; 1 % of all grants with a quota so small — 5 calls a minute —
that repeated calls run over it), the rest without.

The calls: 84 % ask a granted pair for some of its items for the grant's purpose with
1–50 rows, 5 % ask for another purpose, 3 % for an item not granted, 5 % a pair without
a grant, 3 % an entry that is not shared, as department users (principals are built
directly: ``authorize`` reads no user). The calls are made by ``threads`` threads (4),
each with its own session, as a server's worker threads make them — a thread waiting
for the database (a quota lease, a first read) does not hold up the others; Python runs
one decision at a time all the same. Timed:

* ``decisions_per_s_cold``: caches emptied (``invalidate``), then the first call for
  each of up to ``cold_pairs`` distinct pairs, in random order (entries are met for the
  first time too; quota'd grants take their first lease);
* ``decisions_per_s_warm``: ``working_set`` calls made once to warm up, then repeated in
  random order for ``seconds`` (the once-a-second check for other processes' changes
  runs inside this, and so do the quota leases: every quota'd grant leases a new block
  at each minute boundary — ``warm_minute_rollovers`` says how many the run crossed,
  ``warm_quota_leases`` and ``warm_lease_ms_mean`` what they cost);
* ``baseline_lookups_per_s``: ``SELECT … FROM share_grant WHERE id = :id`` (Core, the
  whole row) for random grant ids for ``seconds / 2``; ``baseline_orm_get_per_s`` is
  ``session.get(Grant, id)`` (with its joined departments) likewise, for reference.

The ratios ``warm_vs_baseline`` and ``cold_vs_baseline`` are against the Core lookup.
"""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from collections import Counter
from datetime import date, timedelta
from typing import Any

import sqlalchemy as sa
from rich.console import Console

from bench.catalog import fresh_database
from datatong.catalog.models import CatalogClass, CatalogEntry, DataItem
from datatong.db import engine_for, is_sqlite, session_factory, utcnow
from datatong.orgs.models import Department
from datatong.orgs.service import Principal
from datatong.settings import Settings
from datatong.sharing import authorize as authz
from datatong.sharing.models import Grant

TARGET = 20_000
ITEMS = [
    ("身份证号", "personal"),
    ("姓名", "personal"),
    ("出生日期", "internal"),
    ("户籍地址", "internal"),
    ("登记机关", "public"),
]
PURPOSES = ["verification", "administrative_basis", "collaboration", "work_reference"]
COMMIT_EVERY = 1000

Call = tuple[Principal, str, list[str], str, int]


def run(
    grants: int = 100_000,
    database_url: str | None = None,
    seconds: float = 10.0,
    console: Console | None = None,
    *,
    threads: int = 4,
    consumers: int = 500,
    providers: int = 50,
    entries: int | None = None,
    working_set: int = 5_000,
    cold_pairs: int = 20_000,
    seed: int = 2026,
) -> dict[str, Any]:
    from datatong.app import prepare_database

    console = console or Console(stderr=True)
    entries = entries or max(200, grants // 50)
    rng = random.Random(seed)
    with fresh_database(database_url) as (url, tmp):
        database = "sqlite" if is_sqlite(url) else "postgresql"
        prepare_database(Settings(database_url=url, var_dir=tmp, secret_key="bench-" + uuid.uuid4().hex))
        console.print(f"[bold]授权判定基准[/bold] {database}：写入 {grants} 条授权 …")
        started = time.perf_counter()
        world = _seed(url, rng, grants=grants, consumers=consumers, providers=providers, entries=entries)
        seed_seconds = time.perf_counter() - started
        console.print(f"写入用时 {seed_seconds:.1f} 秒；冷启动判定 …")
        cold_calls = _calls(world, rng, cold_pairs, distinct=True)
        authz.invalidate(forget_leases=True)
        with _Leases() as cold_leases:
            cold_rate, _ = _time_calls(url, cold_calls, None, threads)
        console.print(f"冷启动 {cold_rate:,.0f} 次/秒；热缓存判定 {seconds:g} 秒 …")
        warm_calls = _calls(world, rng, working_set, distinct=False)
        _time_calls(url, warm_calls, None, threads)  # warm up
        refresh_ms = _time_refresh(url)
        first_minute = int(time.time() // 60)
        with _Leases() as warm_leases:
            warm_rate, reasons = _time_calls(url, warm_calls, seconds, threads, rng)
        rollovers = int(time.time() // 60) - first_minute
        console.print(f"热缓存 {warm_rate:,.0f} 次/秒；基线主键查询 …")
        ids = [rng.randint(1, grants) for _ in range(200_000)]
        base_rate = _time_lookups(url, ids, seconds / 2)
        orm_rate = _time_orm_gets(url, ids, seconds / 2)
        quota_share = sum(1 for c in warm_calls if world["quota"].get((c[0].department_id, c[1]))) / len(warm_calls)
        total = sum(reasons.values())
        return {
            "benchmark": "authorize",
            "database": database,
            "grants": grants,
            "entries": entries,
            "consumers": consumers,
            "cpu_count": os.cpu_count(),
            "threads": threads,
            "load_average_1m": round(os.getloadavg()[0], 2),  # other work on the machine meanwhile
            "seed_seconds": round(seed_seconds, 2),
            "cold_calls": len(cold_calls),
            "decisions_per_s_cold": round(cold_rate),
            "cold_quota_leases": cold_leases.count,
            "working_set": len(warm_calls),
            "warm_calls": total,
            "decisions_per_s_warm": round(warm_rate),
            "warm_seconds": seconds,
            "warm_minute_rollovers": rollovers,
            "warm_quota_leases": warm_leases.count,
            "warm_lease_ms_mean": round(warm_leases.seconds / warm_leases.count * 1000, 2)
            if warm_leases.count
            else None,
            "baseline_lookups_per_s": round(base_rate),
            "baseline_orm_get_per_s": round(orm_rate),
            "warm_vs_baseline": round(warm_rate / base_rate, 2),
            "cold_vs_baseline": round(cold_rate / base_rate, 2),
            "refresh_check_ms": round(refresh_ms, 2),
            "refresh_every_s": authz.REFRESH_SECONDS,
            "mix": {
                "grants_with_quota": round(world["quota_grants"] / grants, 3),
                "warm_calls_on_quota_grants": round(quota_share, 3),
                "warm_outcomes": {k: round(v / total, 3) for k, v in sorted(reasons.items())},
                "rows_per_call": "1-50",
                "callers": "department users (department-wide grants)",
            },
            "target_decisions_per_s": TARGET,
            "target_met": warm_rate >= TARGET,
        }


# ---------------------------------------------------------------- data


def _seed(url: str, rng: random.Random, *, grants: int, consumers: int, providers: int, entries: int) -> dict[str, Any]:
    """Departments, entries, items and grants by Core bulk inserts; what the calls need."""
    engine = engine_for(url)
    now = utcnow() - timedelta(days=1)  # made yesterday: not "just changed" for the refresh check
    today = date.today()
    with engine.begin() as conn:
        class_id, class_code = conn.execute(
            sa.select(CatalogClass.id, CatalogClass.code).where(CatalogClass.level == 2).limit(1)
        ).one()
        depts = [
            {"code": f"P{i:03d}", "name": f"提供部门{i}", "level": "city", "created_at": now, "updated_at": now}
            for i in range(providers)
        ]
        depts += [
            {"code": f"C{i:04d}", "name": f"使用部门{i}", "level": "city", "created_at": now, "updated_at": now}
            for i in range(consumers)
        ]
        conn.execute(sa.insert(Department), depts)
        dept_ids = dict(conn.execute(sa.select(Department.code, Department.id)).tuples().all())
        rows = []
        for i in range(entries):
            p = f"P{i % providers:03d}"
            rows.append(
                {
                    "code": f"BENCH-{i:06d}",
                    "name": f"基准信息资源{i}",
                    "class_id": class_id,
                    "catalog_type": "1",
                    "class_code": class_code,
                    "provider_id": dept_ids[p],
                    "provider_code": p,
                    "summary": "基准测试",
                    "format_category": "数据库",
                    "share_type": "none" if i % 50 == 0 else "conditional",
                    "update_cycle": "每日",
                    "status": "published",
                    "version": 1,
                    "is_open": False,
                    "created_at": now,
                    "modified_at": now,
                }
            )
        conn.execute(sa.insert(CatalogEntry), rows)
        entry_ids = dict(conn.execute(sa.select(CatalogEntry.code, CatalogEntry.id)).tuples().all())
        conn.execute(
            sa.insert(DataItem),
            [
                {
                    "entry_id": eid,
                    "position": n,
                    "name": name,
                    "data_type": "C",
                    "sensitivity": sens,
                    "is_authoritative": False,
                }
                for eid in entry_ids.values()
                for n, (name, sens) in enumerate(ITEMS)
            ],
        )
        shared = [c for i, c in enumerate(sorted(entry_ids)) if i % 50]
        consumer_codes = [f"C{i:04d}" for i in range(consumers)]
        pairs: set[tuple[str, str]] = set()
        while len(pairs) < min(grants, len(shared) * consumers):
            pairs.add((rng.choice(consumer_codes), rng.choice(shared)))
        grant_rows = []
        terms: dict[tuple[int, str], tuple[list[str], str]] = {}
        quota: dict[tuple[int, str], bool] = {}
        quota_grants = 0
        for consumer, code in sorted(pairs):
            items = [name for name, _ in ITEMS[: rng.randint(2, len(ITEMS))]]
            purpose = rng.choice(PURPOSES)
            status = rng.choices(["active", "suspended", "revoked", "expired"], [90, 4, 3, 3])[0]
            r = rng.random()
            cpm, rpd = (5, 1000) if r < 0.01 else (6000, 10_000_000) if r < 0.30 else (None, None)
            quota_grants += cpm is not None
            valid_to = today - timedelta(days=1) if status == "expired" else today + timedelta(days=365)
            key = (dept_ids[consumer], code)
            terms[key], quota[key] = (items, purpose), cpm is not None
            grant_rows.append(
                {
                    "consumer_id": dept_ids[consumer],
                    "entry_id": entry_ids[code],
                    "entry_code": code,
                    "provider_id": dept_ids[f"P{int(code[6:]) % providers:03d}"],
                    "items": items,
                    "clear_items": ["姓名"] if rng.random() < 0.3 else [],
                    "purpose_kind": purpose,
                    "valid_from": today - timedelta(days=30),
                    "valid_to": valid_to,
                    "rows_per_day": rpd,
                    "calls_per_minute": cpm,
                    "status": "active" if status == "expired" else status,
                    "source": "application",
                    "created_at": now,
                    "updated_at": now,
                }
            )
        for start in range(0, len(grant_rows), 20_000):
            conn.execute(sa.insert(Grant), grant_rows[start : start + 20_000])
    if not is_sqlite(url):
        with engine.connect() as conn:
            conn.execute(sa.text("ANALYZE"))  # what autovacuum would soon do for a loaded table
    unshared = [c for i, c in enumerate(sorted(entry_ids)) if i % 50 == 0]
    return {
        "terms": terms,
        "quota": quota,
        "quota_grants": quota_grants,
        "shared": shared,
        "unshared": unshared,
        "consumers": [(dept_ids[c], c) for c in consumer_codes],
    }


def _principal(dept: tuple[int, str]) -> Principal:
    return Principal("user", dept[0], f"user{dept[0]}", "基准用户", "data_officer", dept[0], dept[1])


def _calls(world: dict[str, Any], rng: random.Random, n: int, *, distinct: bool) -> list[Call]:
    """``n`` calls of the mix (see the module doc); ``distinct``: each pair at most once."""
    terms: dict[tuple[int, str], tuple[list[str], str]] = world["terms"]
    granted = list(terms)
    rng.shuffle(granted)
    by_id = dict(world["consumers"])
    used: set[tuple[int, str]] = set()
    calls: list[Call] = []
    it = iter(granted)
    while len(calls) < n:
        r = rng.random()
        if r < 0.92:
            key = next(it, None) if distinct else rng.choice(granted)
            if key is None:
                break
            items, purpose = terms[key]
            ask = rng.sample(items, rng.randint(1, len(items)))
            if r < 0.05:
                purpose = "other"
            elif r < 0.08:
                ask.append("婚姻状况")
        elif r < 0.97:
            dept = rng.choice(world["consumers"])
            key, ask, purpose = (dept[0], rng.choice(world["shared"])), ["姓名"], "verification"
            if key in terms:
                continue
        else:
            dept = rng.choice(world["consumers"])
            key, ask, purpose = (dept[0], rng.choice(world["unshared"])), ["姓名"], "verification"
        if distinct and key in used:
            continue
        used.add(key)
        calls.append((_principal((key[0], by_id[key[0]])), key[1], ask, purpose, rng.randint(1, 50)))
    return calls


# ---------------------------------------------------------------- timing


def _time_calls(
    url: str, calls: list[Call], seconds: float | None, threads: int, rng: random.Random | None = None
) -> tuple[float, Counter[str]]:
    """Decisions per second over ``calls`` (once each; or repeated, shuffled, for
    ``seconds``) made by ``threads`` threads, each with its session, as a server's worker
    threads would (one waiting for the database does not stop the others)."""
    slices = (
        [calls[i::threads] for i in range(threads)]
        if seconds is None
        else [random.Random(i if rng is None else rng.random()).sample(calls, len(calls)) for i in range(threads)]
    )
    results: list[tuple[int, Counter[str]]] = []
    barrier = threading.Barrier(threads + 1)
    stop = [0.0]

    def worker(mine: list[Call]) -> None:
        outcomes: Counter[str] = Counter()
        authorize = authz.authorize
        done = 0
        with session_factory(url)() as session:
            barrier.wait()
            while True:
                for i, (who, code, items, purpose, rows) in enumerate(mine):
                    d = authorize(session, consumer=who, entry=code, items=items, purpose=purpose, rows=rows)
                    outcomes[d.reason or "allowed"] += 1
                    if i % COMMIT_EVERY == COMMIT_EVERY - 1:
                        session.commit()
                        if seconds is not None and time.perf_counter() >= stop[0]:
                            break
                done += i + 1
                if seconds is None or time.perf_counter() >= stop[0]:
                    break
            session.commit()
        results.append((done, outcomes))

    pool = [threading.Thread(target=worker, args=(mine,)) for mine in slices]
    for t in pool:
        t.start()
    started = time.perf_counter()
    stop[0] = started + (seconds or 0)
    barrier.wait()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - started
    total: Counter[str] = Counter()
    for _, outcomes in results:
        total.update(outcomes)
    return sum(done for done, _ in results) / elapsed, total


class _Leases:
    """Counts the quota leases (database transactions) ``authorize`` takes meanwhile."""

    def __init__(self) -> None:
        self.count, self.seconds = 0, 0.0

    def __enter__(self) -> _Leases:
        self.original = original = authz._add_leases

        def counted(*args: Any) -> bool:
            started = time.perf_counter()
            try:
                return original(*args)
            finally:
                self.count += 1
                self.seconds += time.perf_counter() - started

        authz._add_leases = counted  # type: ignore[assignment]
        return self

    def __exit__(self, *_: Any) -> None:
        authz._add_leases = self.original  # type: ignore[assignment]


def _time_refresh(url: str) -> float:
    """Milliseconds of one look for other processes' changes (the query of ``_refresh``)."""
    with session_factory(url)() as session:
        cache = authz._cache_for(session)
    cache.last_refresh = time.time()
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        authz._refresh(cache)
        best = min(best, (time.perf_counter() - started) * 1000)
    return best


def _time_lookups(url: str, ids: list[int], seconds: float) -> float:
    stmt = sa.select(Grant.__table__).where(Grant.__table__.c.id == sa.bindparam("id"))
    done = 0
    with engine_for(url).connect() as conn:
        started = time.perf_counter()
        stop = started + seconds
        for i, gid in enumerate(ids):
            conn.execute(stmt, {"id": gid}).first()
            if i % 1000 == 999 and time.perf_counter() >= stop:
                break
        done = i + 1
        elapsed = time.perf_counter() - started
    return done / elapsed


def _time_orm_gets(url: str, ids: list[int], seconds: float) -> float:
    with session_factory(url)() as session:
        started = time.perf_counter()
        stop = started + seconds
        for i, gid in enumerate(ids):
            session.get(Grant, gid)
            if i % 1000 == 999:
                session.expunge_all()  # each id read from the database, not the identity map
                if time.perf_counter() >= stop:
                    break
        elapsed = time.perf_counter() - started
    return (i + 1) / elapsed
