"""Shared fixtures. The suite runs against SQLite (default) or PostgreSQL when
DATATONG_TEST_DATABASE_URL names a server, e.g. postgresql+psycopg://postgres@127.0.0.1:5432/postgres
(a fresh database is created for the run and dropped afterwards)."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from datatong.app import create_app
from datatong.catalog.service import seed_classes
from datatong.db import Base, all_models, engine_for, is_sqlite, session_scope
from datatong.orgs.models import ClientApp, Department, User
from datatong.orgs.service import hash_secret
from datatong.settings import Settings
from datatong.sharing import authorize, workdays

PASSWORD = "Passw0rd!23"
CLIENT_ID = "dt_mz_system"
USERS = {
    # username: (role, department code, display name)
    "admin": ("platform_admin", "DSJ", "平台管理员"),
    "ga_admin": ("dept_admin", "GA", "公安部门管理员"),
    "ga_officer": ("data_officer", "GA", "公安数据管理员"),
    "mz_officer": ("data_officer", "MZ", "民政数据管理员"),
    "mz_admin": ("dept_admin", "MZ", "民政部门管理员"),
    "auditor": ("auditor", "SJ", "审计员"),
}
DEPARTMENTS = [
    ("SHI", "示范市人民政府", "city", None),
    ("DSJ", "示范市大数据局", "city", "SHI"),
    ("GA", "示范市公安局", "city", "SHI"),
    ("MZ", "示范市民政局", "city", "SHI"),
    ("SJ", "示范市审计局", "city", "SHI"),
]


def _test_url(tmp: Path) -> tuple[str, str | None]:
    """The database URL for this run and, for PostgreSQL, the admin URL to drop it."""
    server = os.environ.get("DATATONG_TEST_DATABASE_URL", "")
    if not server or server.startswith("sqlite"):
        return f"sqlite:///{tmp / 'test.db'}", None
    name = f"datatong_test_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        # A throw-away database need not wait for fsync at every commit.
        conn.execute(sa.text(f'ALTER DATABASE "{name}" SET synchronous_commit = off'))
    admin.dispose()
    return server.rsplit("/", 1)[0] + "/" + name, server


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    tmp = tmp_path_factory.mktemp("datatong")
    url, server = _test_url(tmp)
    # The suite logs in far more often than 10 times a minute from one address;
    # tests/test_identity.py lowers the login rate limit where it tests it.
    # Deadlines the suite computes from today's date may reach a year the installed
    # chinesecalendar does not know yet (from mid-December on); they count weekends only
    # and are marked provisional. tests/test_sharing_workdays.py tests the strict default.
    yield Settings(
        database_url=url,
        var_dir=tmp,
        secret_key="test-secret-" + uuid.uuid4().hex,
        login_rate_per_minute=100_000,
        calendar_fallback="weekends",
        # The tests' upstream APIs and webhook receivers listen on loopback.
        outbound_allow=("127.0.0.0/8",),
    )
    if server:
        engine_for(url).dispose()
        admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def app(settings: Settings) -> Any:
    return create_app(settings)


@pytest.fixture(scope="session")
def password_hash() -> str:
    return hash_secret(PASSWORD)


AUDIT_TABLES = ("audit_record", "audit_checkpoint", "audit_head")


def sqlite_audit_triggers(conn: sa.Connection, install: bool) -> None:
    """Drop or re-create the append-only triggers (as migration 0003 makes them)."""
    for table in ("audit_record", "audit_checkpoint"):
        for verb in ("UPDATE", "DELETE"):
            name = f"{table}_no_{verb.lower()}"
            if install:
                conn.exec_driver_sql(
                    f"CREATE TRIGGER {name} BEFORE {verb} ON {table} "
                    "BEGIN SELECT RAISE(ABORT, 'audit trail is append-only (审计日志只能追加)'); END"
                )
            else:
                conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name}")


def unprotected_audit(conn: sa.Connection) -> Any:
    """Context in which the append-only triggers are off: what only a database superuser
    (or someone with the SQLite file) could do, used to reset and to tamper in tests."""
    from contextlib import contextmanager

    @contextmanager
    def _off() -> Iterator[None]:
        if conn.dialect.name == "sqlite":
            sqlite_audit_triggers(conn, install=False)
            yield
            sqlite_audit_triggers(conn, install=True)
        else:
            conn.exec_driver_sql("SET LOCAL session_replication_role = replica")
            yield
            conn.exec_driver_sql("SET LOCAL session_replication_role = origin")

    return _off()


def reset_audit(conn: sa.Connection) -> None:
    with unprotected_audit(conn):
        conn.exec_driver_sql("DELETE FROM audit_record")
        conn.exec_driver_sql("DELETE FROM audit_checkpoint")
        conn.exec_driver_sql("UPDATE audit_head SET seq = 0, hash = '" + "0" * 64 + "', alg = 'sha256' WHERE id = 1")


def reset_database(url: str) -> None:
    all_models()
    engine = engine_for(url)
    tables = [t.name for t in reversed(Base.metadata.sorted_tables) if t.name not in AUDIT_TABLES]
    with engine.begin() as conn:
        reset_audit(conn)
        if is_sqlite(url):
            for name in [*tables, "catalog_fts"]:
                conn.execute(sa.text(f'DELETE FROM "{name}"'))
        else:
            # DELETE is much faster than TRUNCATE on tables this small; the sequences are
            # reset so ids (and cached tokens, see ``auth``) are the same in every test.
            for name in ["catalog_search", *tables]:
                conn.execute(sa.text(f'DELETE FROM "{name}"'))
            conn.execute(
                sa.text(
                    "SELECT setval(s.seq, 1, false) FROM (SELECT pg_get_serial_sequence(quote_ident(table_name), "
                    "column_name) AS seq FROM information_schema.columns WHERE table_schema = 'public' "
                    "AND column_default LIKE 'nextval%') s"
                )
            )


@pytest.fixture
def world(app: Any, settings: Settings, password_hash: str) -> dict[str, Any]:
    """A fresh database holding a small city: five departments and a user per role."""
    reset_database(settings.database_url)
    workdays.set_supplement({})  # no admin-entered years survive a reset
    workdays.set_fallback(settings.calendar_fallback)  # CLI tests start apps with other settings
    authorize.invalidate(forget_leases=True)  # ids restart: no cached grant may survive
    with session_scope(settings.database_url) as session:
        seed_classes(session)
        ids: dict[str, int] = {}
        for code, name, level, parent in DEPARTMENTS:
            dept = Department(code=code, name=name, level=level, parent_id=ids.get(parent or ""))
            session.add(dept)
            session.flush()
            ids[code] = dept.id
        for username, (role, dept_code, display) in USERS.items():
            session.add(
                User(
                    username=username,
                    display_name=display,
                    role=role,
                    department_id=ids[dept_code],
                    password_hash=password_hash,
                )
            )
        # A system of 民政局 calling with client credentials (secret = PASSWORD).
        session.add(
            ClientApp(client_id=CLIENT_ID, name="民政业务系统", department_id=ids["MZ"], secret_hash=password_hash)
        )
    return {"departments": ids}


@pytest.fixture
def client(app: Any, world: dict[str, Any]) -> TestClient:
    return TestClient(app)


_token_cache: dict[tuple[str, str], str] = {}


def auth(client: TestClient, username: str) -> dict[str, str]:
    """Bearer headers for a user of the ``world`` fixture.

    Tokens are cached: every ``world`` recreates the users with the same ids and
    token versions, so a token stays valid, and argon2 checks (deliberately slow)
    would otherwise dominate the suite's run time.
    """
    key = (str(client.app.state.settings.database_url), username)
    if key not in _token_cache:
        if username == "client":
            r = client.post("/api/v1/auth/client-token", json={"client_id": CLIENT_ID, "client_secret": PASSWORD})
        else:
            r = client.post("/api/v1/auth/token", json={"username": username, "password": PASSWORD})
        assert r.status_code == 200, r.text
        _token_cache[key] = r.json()["access_token"]
    return {"Authorization": "Bearer " + _token_cache[key]}


def entry_body(**overrides: Any) -> dict[str, Any]:
    """A valid catalog entry (人口基本信息) that tests alter one field at a time."""
    body: dict[str, Any] = {
        "name": "户籍人口基本信息",
        "class_code": "101",
        "summary": "全市户籍人口的姓名、身份证号、出生日期、户籍地址等基本信息",
        "keywords": "人口,户籍",
        "format_category": "database",
        "format_type": "PostgreSQL table",
        "share_type": "conditional",
        "share_condition": "仅用于政务服务中的身份核验",
        "share_method": "platform",
        "share_subtype": "interface",
        "is_open": False,
        "update_cycle": "daily",
        "items": [
            {
                "name": "身份证号",
                "code": "SFZH",
                "data_type": "C",
                "length": 18,
                "sensitivity": "personal",
                "is_authoritative": True,
            },
            {"name": "姓名", "code": "XM", "data_type": "C", "length": 50, "sensitivity": "personal"},
            {"name": "出生日期", "code": "CSRQ", "data_type": "D"},
        ],
    }
    body.update(overrides)
    return body


def create_entry(
    client: TestClient, username: str = "ga_officer", publish: bool = False, **overrides: Any
) -> dict[str, Any]:
    r = client.post("/api/v1/catalog/entries", json=entry_body(**overrides), headers=auth(client, username))
    assert r.status_code == 201, r.text
    entry = r.json()
    if publish:
        r = client.post(f"/api/v1/catalog/entries/{entry['id']}/submit", headers=auth(client, username))
        assert r.status_code == 200, r.text
        r = client.post(
            f"/api/v1/catalog/entries/{entry['id']}/review", json={"decision": "approve"}, headers=auth(client, "admin")
        )
        assert r.status_code == 200, r.text
        entry = r.json()
    return entry


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def live_server(app: Any) -> Iterator[str]:
    """The app served by a real Uvicorn on a free port, for real HTTP clients and the browser."""
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
