"""Demo exchange data: 公安局's own system (a SQLite file beside the demo database) behind
the entry 民政局 holds an approved grant for, connected as a data source with change
tracking; 民政局 subscribed to its changes (a feed), and a few changes already captured —
so 数据交换 → 数据源 / 订阅 show live objects on the first visit, and the worker thread of
``datatong serve`` keeps capturing whatever is added to that file.

Everything goes through the service functions, as the API would."""

from __future__ import annotations

import random
import sqlite3
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from datatong.catalog.models import CatalogEntry
from datatong.exchange import delivery, sources, subscriptions
from datatong.exchange.bus import bus_for
from datatong.exchange.context import RequestContext
from datatong.orgs.models import User
from datatong.orgs.service import principal_for
from datatong.sharing.models import Grant

ROWS = 300


def _value(data_type: str, length: int | None, name: str, i: int, rng: random.Random) -> Any:
    if data_type in ("N", "I"):
        return rng.randrange(1, 10_000)
    if data_type in ("Y", "F", "B"):
        return round(rng.uniform(100, 10_000), 2)
    if data_type == "D":
        return (date(1950, 1, 1) + timedelta(days=rng.randrange(365 * 70))).isoformat()
    if data_type == "T":
        return (datetime(2026, 1, 1) + timedelta(minutes=rng.randrange(500_000))).isoformat(sep=" ")
    if data_type == "L":
        return rng.choice([0, 1])
    text = f"{name}{i:05d}"
    return text[: length or 50]


def _provider_file(path: Path, entry: CatalogEntry, rng: random.Random) -> dict[str, str]:
    """A table ``records`` (``seq`` increasing, one column per data item); returns item → column."""
    columns = {item.name: f"c{n}" for n, item in enumerate(entry.items)}
    path.unlink(missing_ok=True)
    with sqlite3.connect(path) as db:
        cols = ", ".join(f"{c} TEXT" for c in columns.values())
        db.execute(f"CREATE TABLE records (seq INTEGER PRIMARY KEY AUTOINCREMENT, {cols})")
        _add_rows(db, entry, columns, 0, ROWS, rng)
    return columns


def _add_rows(
    db: sqlite3.Connection, entry: CatalogEntry, columns: dict[str, str], start: int, n: int, rng: random.Random
) -> None:
    names = ", ".join(columns.values())
    marks = ", ".join("?" for _ in columns)
    rows = [
        tuple(_value(item.data_type, item.length, item.name, start + i, rng) for item in entry.items) for i in range(n)
    ]
    db.executemany(f"INSERT INTO records ({names}) VALUES ({marks})", rows)


def seed_exchange(session: Session, settings: Any) -> str | None:
    """Connect the demo's granted 公安局 entry and subscribe 民政局; returns the entry code."""
    grant = session.scalar(
        select(Grant)
        .where(Grant.status == "active", Grant.client_app_id.is_(None), Grant.source == "application")
        .order_by(Grant.id)
        .limit(1)
    )
    if grant is None:
        return None
    entry = session.get(CatalogEntry, grant.entry_id)
    admin = session.scalar(select(User).where(User.username == "admin"))
    consumer = session.scalar(select(User).where(User.department_id == grant.consumer_id, User.role == "data_officer"))
    if entry is None or admin is None or consumer is None or not entry.items:
        return None
    rng = random.Random(2026)
    path = Path(settings.var_dir) / "demo-provider.db"
    columns = _provider_file(path, entry, rng)
    key_item = entry.items[0].name
    # A SQLite file on the platform's own server: only the platform admin may connect it.
    sources.create_source(
        session, settings, principal_for(admin), entry.id, "sql", f"sqlite:///{path}", None, "records",
        key_item, columns, "seq", "increasing_id", None,
    )  # fmt: skip
    ctx = RequestContext(
        system="社会救助信息系统", operator=consumer.display_name, purpose=grant.purpose_kind, case="DEMO-2026-0001"
    )
    subscriptions.create(
        session, settings, bus_for(settings), principal_for(consumer),
        entry_code=entry.code, mode="feed", url=None, items=None, ctx=ctx,
    )  # fmt: skip
    return entry.code


def capture_some(settings: Any, entry_code: str) -> int:
    """After the seeding transaction: start capture, add a few rows, capture them."""
    from datatong.db import session_scope

    delivery.run_once(settings)
    with session_scope(settings.database_url) as session:
        entry = session.scalar(select(CatalogEntry).where(CatalogEntry.code == entry_code))
        assert entry is not None
        columns = {item.name: f"c{n}" for n, item in enumerate(entry.items)}
        with sqlite3.connect(Path(settings.var_dir) / "demo-provider.db") as db:
            _add_rows(db, entry, columns, ROWS, 5, random.Random(2027))
    return delivery.run_once(settings)["captured"]
