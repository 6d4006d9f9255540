"""Catalog benchmark: import 470,000 entries, then search them (SPEC: < 2 min, p95 < 50 ms).

``run`` builds a fresh database (a temporary SQLite file, or a temporary database on
the PostgreSQL server named by ``database_url``, dropped afterwards), seeds the
departments of ten fictional cities, generates entries from the demo vocabulary
(``generate_seconds``, not part of the import), and imports them through the catalog
service's bulk import in one transaction (``import_seconds``).

It then loads the search index (``index_warmup_seconds``: what a server process does
once, before its first search), runs ``WARMUP`` searches, and times ``searches``
searches through ``finder.search`` as a logged-in department officer: 1–3 words an
officer would type for a resource (words of its name, its keywords, its main data
items — so some match a quarter of the catalog), half of them with a facet filter,
facets computed, 20 results. The same queries are answered by a naive baseline,
``LIKE '%word%'`` on entry name, summary, keywords and data-item names with the same
filters, newest 20 plus the count, on a sample (``baseline_queries``) since each scan
takes seconds.
"""

from __future__ import annotations

import gc
import os
import random
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jieba
import sqlalchemy as sa
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from datatong import demo
from datatong import demodata as vocab_data
from datatong.catalog import bulk, finder
from datatong.catalog import search as fts
from datatong.catalog.schemas import EntryIn
from datatong.db import engine_for, is_sqlite, session_factory, session_scope
from datatong.orgs.models import Department, Role
from datatong.orgs.service import Principal, create_user, principal_for
from datatong.settings import Settings

IMPORT_TARGET_S = 120.0
SEARCH_TARGET_MS = 50.0
WARMUP = 10
# Words that occur in nearly every entry and that nobody types into a catalog search.
GENERIC = {"信息", "基本", "负责", "采集", "维护", "包括", "更新", "可用", "用于"}
REGION_NAMES = [
    "清源",
    "临川",
    "白鹭",
    "云岭",
    "青川",
    "海澜",
    "金沙",
    "玉泉",
    "松江",
    "桐城",
    "望海",
    "丹霞",
    "石湖",
    "银滩",
    "雁门",
    "鹤鸣",
]


@dataclass
class Query:
    text: str
    params: finder.SearchParams


# ---------------------------------------------------------------- database


@contextmanager
def fresh_database(database_url: str | None) -> Iterator[tuple[str, Path]]:
    """A new, empty database for one run, removed afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix="datatong-bench-"))
    if not database_url or is_sqlite(database_url):
        url = f"sqlite:///{tmp / 'bench.db'}"
        try:
            yield url, tmp
        finally:
            engine_for(url).dispose()
            fts.forget(url)
            shutil.rmtree(tmp, ignore_errors=True)
        return
    name = f"datatong_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(database_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = database_url.rsplit("/", 1)[0] + "/" + name
    try:
        yield url, tmp
    finally:
        engine_for(url).dispose()
        fts.forget(url)
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- data


def seed_regions(url: str, regions: int) -> tuple[list[tuple[str, Department]], Principal]:
    """Departments of ``regions`` cities (template code, department) and one officer."""
    out: list[tuple[str, Department]] = []
    with session_scope(url) as session:
        for r in range(regions):
            city = REGION_NAMES[r % len(REGION_NAMES)] + ("市" if r < len(REGION_NAMES) else f"{r}市")
            depts = demo.seed_departments(session, prefix=f"R{r:02d}", city=city, with_classes=r == 0)
            out += [(code, d) for code, d in depts.items() if code != vocab_data.GOV_CODE]
        officer = create_user(
            session, None, "bench_officer", "基准测试数据管理员", "Bench@2026x", Role.DATA_OFFICER, "R00QYGA"
        )
        principal = principal_for(officer)
        for _, d in out:
            session.expunge(d)
    return out, principal


def generate(count: int, depts: list[tuple[str, Department]], seed: int) -> list[EntryIn]:
    """``count`` entries: each region's departments publish from their templates."""
    factory = demo.EntryFactory(seed)
    templates = demo.resources()
    by_dept: dict[str, list[demo.Resource]] = {}
    for res in templates:
        by_dept.setdefault(res.dept, []).append(res)
    classes = demo.department_class_codes()
    pool = [(by_dept[code], d, classes[code]) for code, d in depts if code in by_dept]
    rng = factory.rng
    made = []
    for _ in range(count):
        options, dept, cls = rng.choice(pool)
        res = rng.choice(options)
        made.append(factory.make(res, dept.code, dept.name, cls, dept.short_name or dept.name))
    return made


def import_entries(url: str, entries: list[EntryIn], console: Console) -> float:
    """Seconds taken by the catalog service to store ``entries`` in one transaction."""
    admin = Principal("user", None, "bench", "基准测试", Role.PLATFORM_ADMIN, None)
    columns = [TextColumn("导入目录"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("import", total=len(entries))
        started = time.perf_counter()
        with session_scope(url) as session:
            bulk.bulk_create(
                session,
                admin,
                entries,
                status="published",
                reason="基准测试导入",
                keep_codes=False,
                progress=lambda n: progress.advance(task, n),
            )
        return time.perf_counter() - started


# ---------------------------------------------------------------- queries


def _words(res: demo.Resource) -> list[str]:
    """What an officer looking for this resource might type: words of its name, its
    keywords, the names of its main data items."""
    words = [w for w in jieba.cut(res.name) if len(w) >= 2 and w not in GENERIC]
    words += res.keywords.split(",") + [name for name, _ in res.items[:3]]
    return list(dict.fromkeys(w for w in words if w))


def make_queries(count: int, depts: list[tuple[str, Department]], seed: int) -> list[Query]:
    """1–3 words taken from one resource (what an officer would type); half filtered."""
    rng = random.Random(seed)
    templates = demo.resources()
    codes = [(code, d.code) for code, d in depts]
    out = []
    for _ in range(count):
        res = rng.choice(templates)
        words = _words(res)
        k = min(len(words), rng.choice([1, 1, 1, 2, 2, 3]))
        text = " ".join(rng.sample(words, k))
        params = finder.SearchParams(q=text, limit=20)
        if rng.random() < 0.5:
            _add_filter(rng, params, res, [c for t, c in codes if t == res.dept])
        out.append(Query(text, params))
    return out


def _add_filter(rng: random.Random, params: finder.SearchParams, res: demo.Resource, providers: list[str]) -> None:
    kind = rng.choices(["provider", "share_type", "class", "open", "update_cycle"], weights=[35, 25, 25, 10, 5])[0]
    if kind == "provider" and providers:
        params.provider = rng.choice(providers)
    elif kind == "share_type":
        params.share_type = rng.choice(["conditional", "unconditional", "unconditional"])
    elif kind == "class":
        params.class_code = rng.choice([res.class_code[0], res.class_code])
    elif kind == "open":
        params.open = True
    else:
        params.update_cycle = rng.choice(["daily", "monthly", "realtime"])


# ---------------------------------------------------------------- timing


def time_searches(url: str, principal: Principal, queries: list[Query]) -> tuple[list[float], list[int]]:
    """Milliseconds per ``finder.search`` (a fresh session each, like a request)."""
    latencies, totals = [], []
    factory = session_factory(url)
    for q in queries:
        with factory() as session:
            started = time.perf_counter()
            result = finder.search(session, principal, q.params)
            latencies.append((time.perf_counter() - started) * 1000)
            totals.append(result.total)
    return latencies, totals


def baseline_sql(q: Query, principal: Principal) -> tuple[str, str, dict[str, Any]]:
    """The naive search: LIKE '%kw%' on name, summary, keywords and item names."""
    like = "LIKE"
    where = ["(e.status = 'published' OR e.provider_id = :dept)"]
    args: dict[str, Any] = {"dept": principal.department_id}
    for i, word in enumerate(q.text.split()):
        args[f"w{i}"] = f"%{word}%"
        where.append(
            f"(e.name {like} :w{i} OR e.summary {like} :w{i} OR e.keywords {like} :w{i} "
            f"OR EXISTS (SELECT 1 FROM catalog_item i WHERE i.entry_id = e.id "
            f"AND i.name {like} :w{i}))"
        )
    p = q.params
    for column, value in (
        ("provider_code", p.provider),
        ("share_type", p.share_type),
        ("update_cycle", p.update_cycle),
    ):
        if value:
            where.append(f"e.{column} = :{column}")
            args[column] = value
    if p.class_code:
        where.append("e.class_code LIKE :cls")
        args["cls"] = p.class_code + "%"
    if p.open is not None:
        where.append("e.is_open = :open")
        args["open"] = p.open
    cond = " AND ".join(where)
    page = f"SELECT e.id FROM catalog_entry e WHERE {cond} ORDER BY e.modified_at DESC, e.id DESC LIMIT 20"
    count = f"SELECT count(*) FROM catalog_entry e WHERE {cond}"
    return page, count, args


def time_baseline(url: str, principal: Principal, queries: list[Query]) -> list[float]:
    engine = engine_for(url)
    latencies = []
    for q in queries:
        page, count, args = baseline_sql(q, principal)
        with engine.connect() as conn:
            started = time.perf_counter()
            conn.execute(sa.text(page), args).all()
            conn.execute(sa.text(count), args).scalar()
            latencies.append((time.perf_counter() - started) * 1000)
    return latencies


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


# ---------------------------------------------------------------- run


def run(
    entries: int = 470_000,
    database_url: str | None = None,
    searches: int = 500,
    console: Console | None = None,
    *,
    regions: int = 10,
    baseline_limit: int = 50,
    seed: int = 2026,
) -> dict[str, Any]:
    """Import then search; returns the measurements (prints only to ``console``)."""
    from datatong.app import prepare_database

    console = console or Console(stderr=True)
    with fresh_database(database_url) as (url, tmp):
        database = "sqlite" if is_sqlite(url) else "postgresql"
        prepare_database(Settings(database_url=url, var_dir=tmp, secret_key="bench"))
        depts, officer = seed_regions(url, regions)
        console.print(f"[bold]目录基准[/bold] {database}：{len(depts)} 个部门，生成 {entries} 条目录 …")
        started = time.perf_counter()
        made = generate(entries, depts, seed)
        jieba.initialize()  # a one-off second a running server has already spent
        generate_seconds = time.perf_counter() - started
        import_seconds = import_entries(url, made, console)
        del made
        gc.collect()
        console.print(f"导入用时 {import_seconds:.1f} 秒；载入检索索引 …")
        report = _measure_searches(
            url, officer, make_queries(searches + WARMUP, depts, seed + 1), baseline_limit, console
        )
        return {
            "benchmark": "catalog",
            "database": database,
            "entries": entries,
            "departments": len(depts),
            "cpu_count": os.cpu_count(),
            "generate_seconds": round(generate_seconds, 2),
            "import_seconds": round(import_seconds, 2),
            "import_rate_per_s": round(entries / import_seconds) if import_seconds else None,
            **report,
            "import_target_met": import_seconds < IMPORT_TARGET_S,
        }


def _measure_searches(
    url: str, officer: Principal, queries: list[Query], baseline_limit: int, console: Console
) -> dict[str, Any]:
    with session_factory(url)() as session:
        warmup_seconds = fts.warm(session)
    time_searches(url, officer, queries[:WARMUP])
    latencies, totals = time_searches(url, officer, queries[WARMUP:])
    sample = queries[WARMUP:][:baseline_limit]
    console.print(f"检索完成；基线（LIKE 扫描）{len(sample)} 次 …")
    base = time_baseline(url, officer, sample)
    report = _report(latencies, totals, base, latencies[: len(sample)])
    report["index_warmup_seconds"] = round(warmup_seconds, 2)
    report["filtered_searches"] = sum(
        1
        for q in queries[WARMUP:]
        if any((q.params.provider, q.params.share_type, q.params.class_code, q.params.open, q.params.update_cycle))
    )
    return report


def _report(latencies: list[float], totals: list[int], base: list[float], same_queries: list[float]) -> dict[str, Any]:
    p95 = percentile(latencies, 95)
    base_p95 = percentile(base, 95) if base else 0.0
    return {
        "searches": len(latencies),
        "search_p50_ms": round(percentile(latencies, 50), 2),
        "search_p95_ms": round(p95, 2),
        "search_p99_ms": round(percentile(latencies, 99), 2),
        "search_max_ms": round(max(latencies), 2),
        "search_mean_ms": round(statistics.fmean(latencies), 2),
        "matches_p50": int(percentile([float(t) for t in totals], 50)),
        "matches_p95": int(percentile([float(t) for t in totals], 95)),
        "matches_max": max(totals),
        "baseline_queries": len(base),
        "baseline_p50_ms": round(percentile(base, 50), 2) if base else None,
        "baseline_p95_ms": round(base_p95, 2) if base else None,
        "search_p95_ms_same_queries": round(percentile(same_queries, 95), 2) if same_queries else None,
        "speedup_vs_baseline": round(base_p95 / p95, 1) if p95 and base else None,
        "search_target_met": p95 < SEARCH_TARGET_MS,
    }
