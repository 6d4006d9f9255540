"""Provider databases for the exchange tests: what a department's own system holds.

* ``pg_provider`` — 市公安局's PostgreSQL database with a ``population`` table (~2,000
  people with valid 身份证号 checksums), read through a role that may only SELECT.
* ``mysql_provider`` — 市市场监督管理局's MariaDB database with an ``enterprise`` table
  (~1,000 businesses with valid 统一社会信用代码), read through a read-only user.

Both are session-scoped: a throw-away database (``dt_provider_<uuid8>``) and account are
made once per run and dropped at the end. A fixture is skipped, with the reason, only when
its server cannot be reached (CI runs both). Servers: ``DATATONG_TEST_PG_URL`` (default
``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``) and ``DATATONG_TEST_MYSQL_URL``
(default ``mysql+pymysql://root@127.0.0.1:3306/``).

Each fixture returns a :class:`ProviderDb`: the read-only URL (with its password), the
table, the key column and ``columns`` mapping data item names (the catalog's language) to
column names — ready for ``sources.create_source(..., fields=db.columns)`` — plus
``rows`` (the generated rows, by item name) to check answers against. A few rows hold
``%`` and ``_`` in a text column, to test that prefix filters escape them.
"""

from __future__ import annotations

import os
import random
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from stdnum.cn import ric, uscc

PG_SERVER = os.environ.get("DATATONG_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
MYSQL_SERVER = os.environ.get("DATATONG_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/")

POPULATION_ROWS = 2000
ENTERPRISE_ROWS = 1000

# data item → column of the population table (the 市公安局's own naming)
POPULATION_COLUMNS = {
    "身份证号": "sfzh",
    "姓名": "xm",
    "性别": "xb",
    "出生日期": "csrq",
    "户籍地址": "hjdz",
    "婚姻状况": "hyzk",
    "更新时间": "updated_at",
}
ENTERPRISE_COLUMNS = {
    "统一社会信用代码": "tyshxydm",
    "企业名称": "qymc",
    "法定代表人": "fddbr",
    "成立日期": "clrq",
    "登记状态": "djzt",
    "更新时间": "updated_at",
}
# Catalog data items matching the tables (for create_entry(items=...)).
POPULATION_ITEMS = [
    {"name": "身份证号", "code": "SFZH", "data_type": "C", "length": 18, "sensitivity": "personal"},
    {"name": "姓名", "code": "XM", "data_type": "C", "length": 50, "sensitivity": "personal"},
    {"name": "性别", "code": "XB", "data_type": "C", "length": 2},
    {"name": "出生日期", "code": "CSRQ", "data_type": "D"},
    {"name": "户籍地址", "code": "HJDZ", "data_type": "C", "length": 200, "sensitivity": "personal"},
    {"name": "婚姻状况", "code": "HYZK", "data_type": "C", "length": 10, "sensitivity": "personal"},
    {"name": "更新时间", "code": "GXSJ", "data_type": "T"},
]
ENTERPRISE_ITEMS = [
    {"name": "统一社会信用代码", "code": "TYSHXYDM", "data_type": "C", "length": 18},
    {"name": "企业名称", "code": "QYMC", "data_type": "C", "length": 200},
    {"name": "法定代表人", "code": "FDDBR", "data_type": "C", "length": 50, "sensitivity": "personal"},
    {"name": "成立日期", "code": "CLRQ", "data_type": "D"},
    {"name": "登记状态", "code": "DJZT", "data_type": "C", "length": 10},
    {"name": "更新时间", "code": "GXSJ", "data_type": "T"},
]
SPECIAL_ADDRESSES = ["示范市100%_测试路1号", "示范市100%测试路2号", "示范市100_测试路3号", "示范市100x测试路4号"]
SPECIAL_NAMES = ["百分%_科技有限公司", "百分%科技有限公司", "百分_科技有限公司", "百分x科技有限公司"]

REGIONS = ["110101", "310104", "440305", "330106", "510107", "420106", "320102", "370102"]
MARITAL = ["未婚", "已婚", "离婚", "丧偶"]
STATUSES = ["存续", "在业", "注销", "吊销"]


@dataclass
class ProviderDb:
    url: str  # the read-only account's URL, password included
    table: str
    key_column: str
    change_column: str
    columns: dict[str, str]  # data item → column
    items: list[dict[str, Any]]  # catalog data items for an entry of this table
    user: str
    password: str
    admin_url: str  # the server's superuser on this database (to alter data in tests)
    rows: list[dict[str, Any]] = field(default_factory=list)  # by item name

    @property
    def key_item(self) -> str:
        return next(item for item, col in self.columns.items() if col == self.key_column)

    def url_with_password(self, password: str) -> str:
        return sa.make_url(self.url).set(password=password).render_as_string(hide_password=False)


def make_ric(rng: random.Random, born: date) -> str:
    """A valid 身份证号 (python-stdnum also checks the region existed at birth)."""
    while True:
        body = rng.choice(REGIONS) + born.strftime("%Y%m%d") + f"{rng.randrange(1000):03d}"
        number = body + ric.calc_check_digit(body + "0")  # it skips the last character
        if ric.is_valid(number):
            return number


_ORG_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)
_ORG_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _org_code(rng: random.Random) -> str:
    """A 组织机构代码 (GB 11714): 8 characters and its check character."""
    body = "".join(rng.choice("0123456789") for _ in range(8))
    total = sum(_ORG_ALPHABET.index(c) * w for c, w in zip(body, _ORG_WEIGHTS, strict=True))
    check = 11 - total % 11
    return body + {10: "X", 11: "0"}.get(check, str(check))


def make_uscc(rng: random.Random) -> str:
    body = "91" + rng.choice(REGIONS) + _org_code(rng)
    number = body + uscc.calc_check_digit(body)
    assert uscc.is_valid(number), number
    return number


def population_rows(n: int = POPULATION_ROWS, seed: int = 20260101) -> list[dict[str, Any]]:
    from faker import Faker

    fake = Faker("zh_CN")
    fake.seed_instance(seed)
    rng = random.Random(seed)
    base = datetime(2026, 1, 1, tzinfo=UTC)
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    while len(rows) < n:
        born = date(1940, 1, 1) + timedelta(days=rng.randrange(365 * 65))
        number = make_ric(rng, born)
        if number in seen:
            continue
        seen.add(number)
        i = len(rows)
        address = SPECIAL_ADDRESSES[i] if i < len(SPECIAL_ADDRESSES) else fake.address()[:200]
        rows.append(
            {
                "身份证号": number,
                "姓名": fake.name(),
                "性别": "男" if int(number[16]) % 2 else "女",
                "出生日期": born,
                "户籍地址": address,
                "婚姻状况": rng.choice(MARITAL),
                "更新时间": base + timedelta(minutes=i),
            }
        )
    return rows


def enterprise_rows(n: int = ENTERPRISE_ROWS, seed: int = 20260102) -> list[dict[str, Any]]:
    from faker import Faker

    fake = Faker("zh_CN")
    fake.seed_instance(seed)
    rng = random.Random(seed)
    base = datetime(2026, 1, 1)
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    while len(rows) < n:
        code = make_uscc(rng)
        if code in seen:
            continue
        seen.add(code)
        i = len(rows)
        rows.append(
            {
                "统一社会信用代码": code,
                "企业名称": SPECIAL_NAMES[i] if i < len(SPECIAL_NAMES) else fake.company()[:200],
                "法定代表人": fake.name(),
                "成立日期": date(1990, 1, 1) + timedelta(days=rng.randrange(365 * 35)),
                "登记状态": rng.choice(STATUSES),
                "更新时间": base + timedelta(minutes=i),
            }
        )
    return rows


def _reachable(url: str) -> str | None:
    try:
        engine = sa.create_engine(url, connect_args={"connect_timeout": 3})
        with engine.connect():
            pass
        engine.dispose()
    except Exception as exc:  # noqa: BLE001 - any failure means: skip with the reason
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    return None


def _insert(engine: sa.Engine, table: str, columns: dict[str, str], rows: list[dict[str, Any]]) -> None:
    meta = sa.MetaData()
    t = sa.Table(table, meta, autoload_with=engine)
    with engine.begin() as conn:
        conn.execute(t.insert(), [{columns[k]: v for k, v in row.items()} for row in rows])


@pytest.fixture(scope="session")
def pg_provider() -> Iterator[ProviderDb]:
    """市公安局's PostgreSQL database: ``population``, read by a SELECT-only role."""
    why = _reachable(PG_SERVER)
    if why:
        pytest.skip(f"PostgreSQL provider server {PG_SERVER} unreachable: {why}")
    suffix = uuid.uuid4().hex[:8]
    name, role, password = f"dt_provider_{suffix}", f"dt_reader_{suffix}", "Rd-" + secrets.token_hex(8)
    server = sa.make_url(PG_SERVER)
    admin = sa.create_engine(PG_SERVER, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        conn.execute(sa.text(f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}'"))
    try:
        yield from _pg_fill(server, name, role, password)
    finally:
        _forget_readers()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(sa.text(f'DROP ROLE IF EXISTS "{role}"'))
        admin.dispose()


def _forget_readers() -> None:
    from datatong.exchange import readers

    for source_id in list(readers._CACHE):  # close pools still connected to the database
        readers.forget(source_id)


def _pg_fill(server: sa.URL, name: str, role: str, password: str) -> Iterator[ProviderDb]:
    admin_url = server.set(database=name)
    db = sa.create_engine(admin_url)
    with db.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TABLE population (sfzh varchar(18) PRIMARY KEY, xm varchar(50) NOT NULL, xb varchar(2), "
                "csrq date, hjdz varchar(200), hyzk varchar(10), updated_at timestamptz NOT NULL)"
            )
        )
        conn.execute(sa.text("CREATE INDEX population_updated ON population (updated_at, sfzh)"))
        conn.execute(sa.text(f'GRANT CONNECT ON DATABASE "{name}" TO "{role}"'))
        conn.execute(sa.text(f'GRANT USAGE ON SCHEMA public TO "{role}"'))
        conn.execute(sa.text(f'GRANT SELECT ON population TO "{role}"'))
    rows = population_rows()
    _insert(db, "population", POPULATION_COLUMNS, rows)
    with db.begin() as conn:
        conn.execute(sa.text("ANALYZE population"))
    db.dispose()
    url = server.set(database=name, username=role, password=password).render_as_string(hide_password=False)
    yield ProviderDb(
        url=url,
        table="population",
        key_column="sfzh",
        change_column="updated_at",
        columns=dict(POPULATION_COLUMNS),
        items=[dict(i) for i in POPULATION_ITEMS],
        user=role,
        password=password,
        admin_url=admin_url.render_as_string(hide_password=False),
        rows=rows,
    )


@pytest.fixture(scope="session")
def mysql_provider() -> Iterator[ProviderDb]:
    """市市场监督管理局's MariaDB database: ``enterprise``, read by a read-only user."""
    why = _reachable(MYSQL_SERVER)
    if why:
        pytest.skip(f"MariaDB provider server {MYSQL_SERVER} unreachable: {why}")
    suffix = uuid.uuid4().hex[:8]
    name, user, password = f"dt_provider_{suffix}", f"dt_reader_{suffix}", "Rd-" + secrets.token_hex(8)
    server = sa.make_url(MYSQL_SERVER)
    admin = sa.create_engine(MYSQL_SERVER, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"))
        conn.execute(sa.text(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{password}'"))
    try:
        yield from _mysql_fill(admin, server, name, user, password)
    finally:
        _forget_readers()
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
            conn.execute(sa.text(f"DROP USER IF EXISTS '{user}'@'%'"))
        admin.dispose()


def _mysql_fill(admin: sa.Engine, server: sa.URL, name: str, user: str, password: str) -> Iterator[ProviderDb]:
    admin_url = server.set(database=name, query={"charset": "utf8mb4"})
    db = sa.create_engine(admin_url)
    with db.begin() as conn:
        conn.execute(
            sa.text(
                "CREATE TABLE enterprise (tyshxydm varchar(18) PRIMARY KEY, qymc varchar(200) NOT NULL, "
                "fddbr varchar(50), clrq date, djzt varchar(10), updated_at datetime(6) NOT NULL, "
                "KEY enterprise_updated (updated_at, tyshxydm))"
            )
        )
    with admin.connect() as conn:
        conn.execute(sa.text(f"GRANT SELECT ON `{name}`.* TO '{user}'@'%'"))
    rows = enterprise_rows()
    _insert(db, "enterprise", ENTERPRISE_COLUMNS, rows)
    db.dispose()
    url = server.set(database=name, username=user, password=password, query={"charset": "utf8mb4"})
    yield ProviderDb(
        url=url.render_as_string(hide_password=False),
        table="enterprise",
        key_column="tyshxydm",
        change_column="updated_at",
        columns=dict(ENTERPRISE_COLUMNS),
        items=[dict(i) for i in ENTERPRISE_ITEMS],
        user=user,
        password=password,
        admin_url=admin_url.render_as_string(hide_password=False),
        rows=rows,
    )
