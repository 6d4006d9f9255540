"""Bulk exchange benchmark (SPEC: at least 100,000 rows/s end to end, and at least half the
speed of a raw database COPY of the same table on the same machine).

A provider PostgreSQL database (``datatong_bench_provider`` on the platform's server, or
``DATATONG_BENCH_PROVIDER_URL``) holds a 5-column ``population`` table (身份证号, 姓名,
出生日期, 户籍地址, 更新时间) of ``rows`` rows, filled by ``INSERT … SELECT … FROM
generate_series`` (kept between runs when it already has that many rows). The platform
(``settings.database_url``) gets a provider and a consumer department, two published
entries on that table with a data source each and an approved grant of the consumer: one
with every item in clear, one with 姓名 and 户籍地址 masked (the admin's built-in rules).

Measured in one run, over real HTTP against ``uvicorn`` in its own process (bench.audit's
server, auditing on), with a streaming client that counts rows and discards the bytes:

* ``copy_rows_per_s`` — psycopg ``COPY (SELECT the 5 columns FROM population ORDER BY key)
  TO STDOUT WITH (FORMAT csv)`` straight from the provider database (the baseline);
* ``bulk_csv_rows_per_s`` / ``bulk_parquet_rows_per_s`` — the whole table exported through
  the platform as CSV / Parquet; ``copy_ratio`` = CSV ÷ COPY (target ≥ 0.5);
* ``bulk_masked_csv_rows_per_s`` — CSV with 姓名 and 户籍地址 masked (masking in SQL), over
  the last ``bulk_masked_rows`` (at most 2 million) rows, resumed after a key.

Each export's signed manifest is fetched: its row count must be the table's.
``python -m bench.exchange_bulk --rows 1000000`` runs it on its own (a fresh platform
database on ``--database-url``, default the local PostgreSQL).
"""

from __future__ import annotations

import argparse
import json
import os
import time
import uuid
from datetime import date, timedelta
from typing import Any

import httpx
import psycopg
import sqlalchemy as sa
from rich.console import Console

from bench.audit import _serve
from datatong.app import create_app, prepare_database
from datatong.db import session_scope
from datatong.orgs.models import Department, Role, User
from datatong.orgs.service import create_user
from datatong.settings import Settings

PASSWORD = "Bench@2026-bulk"
PROVIDER_DB = "datatong_bench_provider"
TARGET_ROWS_PER_S = 100_000
MASKED_ROWS = 2_000_000
RATIO_TARGET = 0.5
ITEMS = {"身份证号": "sfzh", "姓名": "xm", "出生日期": "csrq", "户籍地址": "hjdz", "更新时间": "updated_at"}
ENTRY_ITEMS = [
    {"name": "身份证号", "code": "SFZH", "data_type": "C", "length": 18, "sensitivity": "personal"},
    {"name": "姓名", "code": "XM", "data_type": "C", "length": 50, "sensitivity": "personal"},
    {"name": "出生日期", "code": "CSRQ", "data_type": "D"},
    {"name": "户籍地址", "code": "HJDZ", "data_type": "C", "length": 200, "sensitivity": "personal"},
    {"name": "更新时间", "code": "GXSJ", "data_type": "T"},
]
FILL = """
INSERT INTO population (sfzh, xm, csrq, hjdz, updated_at)
SELECT '11010119' || lpad(i::text, 10, '0'),
       (ARRAY['张','李','王','欧阳','赵','司马','陈','刘'])[1 + i % 8]
         || (ARRAY['伟','芳','娜','小明','建国','秀英'])[1 + (i / 8) % 6],
       date '1950-01-01' + (i % 25000),
       (ARRAY['北京市朝阳区','上海市浦东新区','广东省深圳市南山区','浙江省杭州市西湖区'])[1 + i % 4]
         || '建国路' || (i % 1000) || '号' || (i % 30) || '号楼',
       timestamptz '2026-01-01 00:00:00+00' + i * interval '1 second'
FROM generate_series(:low, :high) AS i
"""


def run(settings: Settings, rows: int, console: Console | None = None) -> dict[str, Any]:
    console = console or Console(stderr=True)
    provider_url = _provider(settings.database_url, rows, console)
    prepare_database(settings)
    tokens, codes = _seed(settings, provider_url)
    proc, port = _serve(settings, audited=True)
    base = f"http://127.0.0.1:{port}"
    try:
        result: dict[str, Any] = {"bulk_rows": rows}
        copy_s, copy_bytes = _copy(provider_url)
        result["copy_rows_per_s"] = round(rows / copy_s)
        console.print(f"  COPY … TO STDOUT: {rows:,} rows, {copy_bytes / 1e6:,.0f} MB in {copy_s:.1f}s")
        # The masked export reads only the last MASKED_ROWS rows (resumed after a key):
        # masking in SQL is several times slower and would dominate the run otherwise.
        masked_rows = min(rows, MASKED_ROWS)
        masked_after = _key(rows - masked_rows) if masked_rows < rows else None
        result["bulk_masked_rows"] = masked_rows
        for label, key, code, fmt, after, expect in (
            ("CSV", "bulk_csv_rows_per_s", codes["clear"], "csv", None, rows),
            ("Parquet", "bulk_parquet_rows_per_s", codes["clear"], "parquet", None, rows),
            (
                "CSV, 姓名+户籍地址 masked",
                "bulk_masked_csv_rows_per_s",
                codes["masked"],
                "csv",
                masked_after,
                masked_rows,
            ),
        ):
            seconds, got, nbytes = _export(base, tokens, code, fmt, after)
            if got != expect:
                raise RuntimeError(f"{label}: {got} rows exported, {expect} expected")
            result[key] = round(expect / seconds)
            speed = f"{expect / seconds:,.0f} rows/s ({expect:,} rows, {nbytes / 1e6:,.0f} MB in {seconds:.1f}s)"
            console.print(f"  platform {label}: {speed}")
        result["copy_ratio"] = round(result["bulk_csv_rows_per_s"] / result["copy_rows_per_s"], 3)
        result["targets"] = {"bulk_rows_per_s": TARGET_ROWS_PER_S, "copy_ratio": RATIO_TARGET}
        return result
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# ---------------------------------------------------------------- provider table


def _provider(platform_url: str, rows: int, console: Console) -> str:
    """The provider database's URL, its ``population`` table holding exactly ``rows`` rows."""
    url = os.environ.get("DATATONG_BENCH_PROVIDER_URL") or _same_server(platform_url, PROVIDER_DB)
    server = sa.make_url(url)
    admin = sa.create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if not conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": server.database}).first():
            conn.execute(sa.text(f'CREATE DATABASE "{server.database}"'))
    admin.dispose()
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            exists = conn.execute(sa.text("SELECT to_regclass('population')")).scalar()
            have = conn.execute(sa.text("SELECT count(*) FROM population")).scalar() if exists else -1
        if have == rows:
            console.print(f"  provider table: {rows:,} rows (kept from an earlier run)")
            return url
        started = time.perf_counter()
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE IF EXISTS population"))
            conn.execute(
                sa.text(
                    "CREATE UNLOGGED TABLE population (sfzh varchar(18) NOT NULL, xm varchar(50) NOT NULL, "
                    "csrq date, hjdz varchar(200), updated_at timestamptz NOT NULL)"
                )
            )
        step = 2_000_000
        for low in range(1, rows + 1, step):
            with engine.begin() as conn:
                conn.execute(sa.text(FILL), {"low": low, "high": min(rows, low + step - 1)})
            console.print(f"  provider table: {min(rows, low + step - 1):,} / {rows:,} rows")
        with engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE population ADD PRIMARY KEY (sfzh)"))
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("VACUUM ANALYZE population"))
        console.print(f"  provider table filled in {time.perf_counter() - started:.1f}s")
    finally:
        engine.dispose()
    return url


def _same_server(platform_url: str, database: str) -> str:
    url = sa.make_url(platform_url)
    if url.get_backend_name() != "postgresql":
        url = sa.make_url("postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    return url.set(drivername="postgresql+psycopg", database=database).render_as_string(hide_password=False)


def _copy(provider_url: str) -> tuple[float, int]:
    """The baseline: the provider database's own COPY of the same columns, same order."""
    dsn = sa.make_url(provider_url).set(drivername="postgresql").render_as_string(hide_password=False)
    columns = ", ".join(ITEMS.values())
    nbytes = 0
    with psycopg.connect(dsn) as conn:
        started = time.perf_counter()
        with conn.cursor().copy(
            f"COPY (SELECT {columns} FROM population ORDER BY sfzh) TO STDOUT WITH (FORMAT csv)"
        ) as cp:
            for data in cp:
                nbytes += len(data)
        return time.perf_counter() - started, nbytes


# ---------------------------------------------------------------- platform


def _seed(settings: Settings, provider_url: str) -> tuple[dict[str, str], dict[str, str]]:
    """Departments, users, two entries with sources and grants; returns the tokens and the
    entry codes ("clear", "masked")."""
    from fastapi.testclient import TestClient

    tag = uuid.uuid4().hex[:6].upper()
    with session_scope(settings.database_url) as s:
        for code, name in (("BGA", "基准市公安局"), ("BMZ", "基准市民政局"), ("BDSJ", "基准市大数据局")):
            if s.scalar(sa.select(Department).where(Department.code == code)) is None:
                s.add(Department(code=code, name=name, level="city"))
        s.flush()
        for username, role, dept in (
            (f"bga_{tag}", Role.DATA_OFFICER, "BGA"),
            (f"bmz_{tag}", Role.DATA_OFFICER, "BMZ"),
            (f"badmin_{tag}", Role.PLATFORM_ADMIN, "BDSJ"),
        ):
            if s.scalar(sa.select(User).where(User.username == username)) is None:
                create_user(s, None, username, username, PASSWORD, role, dept)
    app = create_app(settings, migrate=False)
    with TestClient(app) as client:
        tokens = {
            who: _login(client, f"{who}_{tag}") for who in ("bga", "bmz", "badmin")
        }  # fmt: skip
        codes = {
            "clear": _granted(client, tokens, provider_url, list(ITEMS)),
            "masked": _granted(client, tokens, provider_url, ["身份证号", "出生日期", "更新时间"]),
        }
    return tokens, codes


def _login(client: Any, username: str) -> str:
    r = client.post("/api/v1/auth/token", json={"username": username, "password": PASSWORD})
    r.raise_for_status()
    return str(r.json()["access_token"])


def _ok(r: Any) -> Any:
    if r.status_code >= 400:
        raise RuntimeError(f"{r.request.method} {r.request.url.path}: {r.status_code} {r.text[:300]}")
    return r.json()


def _granted(client: Any, tokens: dict[str, str], provider_url: str, clear: list[str]) -> str:
    ga, mz, admin = ({"Authorization": f"Bearer {tokens[k]}"} for k in ("bga", "bmz", "badmin"))
    body = {
        "name": f"基准人口信息{uuid.uuid4().hex[:4]}",
        "class_code": "101",
        "summary": "批量交换基准测试用的人口基本信息",
        "keywords": "人口",
        "format_category": "database",
        "format_type": "PostgreSQL table",
        "share_type": "conditional",
        "share_condition": "仅用于基准测试",
        "share_method": "platform",
        "share_subtype": "interface",
        "is_open": False,
        "update_cycle": "daily",
        "items": ENTRY_ITEMS,
    }
    entry = _ok(client.post("/api/v1/catalog/entries", json=body, headers=ga))
    _ok(client.post(f"/api/v1/catalog/entries/{entry['id']}/submit", headers=ga))
    entry = _ok(
        client.post(f"/api/v1/catalog/entries/{entry['id']}/review", json={"decision": "approve"}, headers=admin)
    )
    source = {
        "entry_id": entry["id"],
        "kind": "sql",
        "url": provider_url,
        "table_name": "population",
        "key_item": "身份证号",
        "fields": ITEMS,
    }
    _ok(client.post("/api/v1/exchange/sources", json=source, headers=ga))
    today = date.today()
    application = _ok(
        client.post(
            "/api/v1/sharing/applications",
            headers=mz,
            json={
                "entry_id": entry["id"],
                "purpose_kind": "verification",
                "purpose": "批量交换基准",
                "legal_basis": "《政务信息资源共享管理暂行办法》",
                "items": list(ITEMS),
                "period_start": today.isoformat(),
                "period_end": (today + timedelta(days=30)).isoformat(),
                "rows_per_day": 1_000_000_000,
                "system_name": "基准测试系统",
            },
        )
    )
    app_id = application["id"]
    _ok(client.post(f"/api/v1/sharing/applications/{app_id}/submit", json={"accept_commitment": True}, headers=mz))
    decision = {"decision": "approve", "clear_items": clear, "rows_per_day": 1_000_000_000}
    _ok(client.post(f"/api/v1/sharing/applications/{app_id}/decide", json=decision, headers=ga))
    return str(entry["code"])


def _key(i: int) -> str:
    """The 身份证号 of row ``i`` of the provider table (as FILL makes it)."""
    return "11010119" + str(i).rjust(10, "0")


def _export(base: str, tokens: dict[str, str], code: str, fmt: str, after: str | None = None) -> tuple[float, int, int]:
    """One export over HTTP, bytes discarded; (seconds, rows per the manifest, bytes)."""
    headers = {
        "Authorization": f"Bearer {tokens['bmz']}",
        "X-Datatong-System": "bench",
        "X-Datatong-Operator": "bench",
        "X-Datatong-Purpose": "verification",
        "X-Datatong-Case": "BENCH-1",
    }
    nbytes = lines = 0
    with httpx.Client(base_url=base, timeout=httpx.Timeout(600.0)) as http:
        started = time.perf_counter()
        with http.stream(
            "GET",
            f"/api/v1/exchange/entries/{code}/export",
            params={"format": fmt, **({"after": after} if after else {})},
            headers=headers,
        ) as r:
            if r.status_code >= 400:
                r.read()
                raise RuntimeError(f"export {fmt}: {r.status_code} {r.text[:300]}")
            export_id = r.headers["X-Datatong-Export"]
            for chunk in r.iter_raw():
                nbytes += len(chunk)
                lines += chunk.count(b"\n")
        seconds = time.perf_counter() - started
        manifest = _ok(http.get(f"/api/v1/exchange/exports/{export_id}/manifest", headers=headers))
    if manifest["bytes"] != nbytes:
        raise RuntimeError(f"export {fmt}: {nbytes} bytes received, the manifest says {manifest['bytes']}")
    if fmt == "csv" and lines - 1 != manifest["rows"]:
        raise RuntimeError(f"export {fmt}: {lines - 1} rows received, the manifest says {manifest['rows']}")
    return seconds, int(manifest["rows"]), nbytes


def main() -> None:
    from bench.catalog import fresh_database

    parser = argparse.ArgumentParser(description="bulk exchange benchmark")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--database-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    console = Console(stderr=True)
    with fresh_database(args.database_url) as (url, tmp):
        settings = Settings(database_url=url, var_dir=tmp, secret_key="bench-" + uuid.uuid4().hex)
        result = run(settings, args.rows, console)
    print(json.dumps(result, ensure_ascii=False, indent=2))


if __name__ == "__main__":
    main()
