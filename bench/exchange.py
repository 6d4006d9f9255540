"""``datatong bench exchange``: the three exchange benchmarks of issue 5 in one run,
printed as one JSON object.

* verification (bench/exchange_verify.py): one subject per call against a trivial
  endpoint of the same server — ``verify_calls_per_s``, ``verify_p50_ms``,
  ``verify_p99_ms``, ``trivial_requests_per_s``, ``verify_ratio``;
* bulk (bench/exchange_bulk.py): a PostgreSQL table exported through the platform as CSV
  and Parquet against ``COPY … TO STDOUT`` of the same table — ``bulk_rows``,
  ``bulk_csv_rows_per_s``, ``bulk_parquet_rows_per_s``, ``copy_rows_per_s``,
  ``copy_ratio``;
* subscriptions (bench/exchange_subs.py): changes delivered end to end per bus —
  ``subscription_changes_per_s_outbox``, ``subscription_changes_per_s_nats``.

Each part runs on a fresh platform database (``database_url``: a PostgreSQL server URL,
or none for a temporary SQLite file; bulk needs PostgreSQL for its provider and COPY and
uses ``DATATONG_TEST_PG_URL``'s server when the platform is SQLite).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from typing import Any

from rich.console import Console

from bench.catalog import fresh_database
from datatong.db import is_sqlite
from datatong.settings import Settings

PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
PARTS = ("verify", "bulk", "subscriptions")


def _settings(url: str, tmp: Any) -> Settings:
    return Settings(database_url=url, var_dir=tmp, secret_key="bench-" + uuid.uuid4().hex, calendar_fallback="weekends")


def run(
    database_url: str | None,
    console: Console,
    *,
    parts: Sequence[str] = PARTS,
    seconds: float = 10.0,
    connections: int = 32,
    workers: int = 1,
    rows: int = 10_000_000,
    changes: int = 20_000,
) -> dict[str, Any]:
    out: dict[str, Any] = {"database": "sqlite" if not database_url or is_sqlite(database_url) else "postgresql"}
    if "verify" in parts:
        from bench import exchange_verify

        console.rule("查询核验 verification")
        with fresh_database(database_url) as (url, tmp):
            out |= exchange_verify.run(_settings(url, tmp), seconds, connections, console, workers=workers)
    if "bulk" in parts:
        from bench import exchange_bulk

        console.rule("批量交换 bulk")
        pg = (
            database_url
            if database_url and not is_sqlite(database_url)
            else os.environ.get("DATATONG_TEST_PG_URL", PG_DEFAULT)
        )
        with fresh_database(pg) as (url, tmp):
            out |= exchange_bulk.run(_settings(url, tmp), rows, console)
    if "subscriptions" in parts:
        from bench import exchange_subs

        console.rule("订阅 subscriptions")
        with fresh_database(database_url) as (url, tmp):
            out |= exchange_subs.run(_settings(url, tmp), changes, console)
    return out
