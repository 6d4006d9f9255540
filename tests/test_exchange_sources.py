"""Data sources of exchange: SQL tables in real PostgreSQL and MariaDB provider databases
(read-only accounts), uploaded files in platform-managed tables, upstream HTTP APIs."""

# ruff: noqa: F811 - the provider fixtures are imported by name and requested as arguments
from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import sqlalchemy as sa
from conftest import auth, create_entry
from exchange_fixtures import ProviderDb, mysql_provider, pg_provider  # noqa: F401 - fixtures
from fastapi.testclient import TestClient
from sharing_helpers import call, who
from typer.testing import CliRunner

from datatong.audit.models import AuditRecord
from datatong.db import session_scope
from datatong.errors import ValidationFailed
from datatong.exchange import readers, sources
from datatong.exchange.models import DataSource
from datatong.exchange.readers import Filter, HttpReader, SourceError, SqlReader
from datatong.settings import Settings, get_settings

API = "/api/v1/exchange/sources"
PROVIDERS = ["pg_provider", "mysql_provider"]


def _entry(client: TestClient, db: ProviderDb, username: str = "ga_officer") -> dict[str, Any]:
    return create_entry(client, username, publish=True, name=f"{db.table} 基本信息", items=db.items)


def _create(client: TestClient, db: ProviderDb, username: str = "ga_officer", **over: Any) -> Any:
    entry = _entry(client, db)
    body = {
        "entry_id": entry["id"],
        "kind": "sql",
        "url": db.url,
        "table_name": db.table,
        "key_item": db.key_item,
        "fields": db.columns,
        "change_column": db.change_column,
        "change_kind": "updated_at",
    } | over
    return client.post(API, json=body, headers=auth(client, username))


def _audit(settings: Settings, prefix: str = "exchange.source") -> list[AuditRecord]:
    with session_scope(settings.database_url) as s:
        rows = list(
            s.scalars(sa.select(AuditRecord).where(AuditRecord.action.like(prefix + "%")).order_by(AuditRecord.seq))
        )
        s.expunge_all()
        return rows


# ---------------------------------------------------------------- SQL sources through the API


@pytest.mark.parametrize("which", PROVIDERS)
def test_sql_source_end_to_end_password_sealed(
    which: str, request: pytest.FixtureRequest, client: TestClient, settings: Settings
) -> None:
    db: ProviderDb = request.getfixturevalue(which)
    r = _create(client, db)
    assert r.status_code == 201, r.text
    src = r.json()
    assert src["has_password"] is True and src["status"] == "untested"
    assert db.password not in r.text and db.user in src["url"]
    assert src["key_item"] == db.key_item and src["key_column"] == db.key_column
    h = auth(client, "ga_officer")
    t = client.post(f"{API}/{src['id']}/test", headers=h)
    assert t.status_code == 200 and t.json()["ok"] is True, t.text
    got = client.get(f"{API}/{src['id']}", headers=h)
    assert got.json()["status"] == "ok" and got.json()["last_tested_at"]
    listed = client.get(API, headers=h)
    assert [s["id"] for s in listed.json()] == [src["id"]]
    for text in (t.text, got.text, listed.text):
        assert db.password not in text
    with session_scope(settings.database_url) as s:
        row = s.get(DataSource, src["id"])
        assert row is not None and row.secret_sealed and row.url
        assert db.password not in row.url and db.password not in row.secret_sealed
        assert row.secret_sealed.startswith("v1.")
        reader = readers.reader_for(s, settings, row)
        page = reader.page([db.key_item], [], None, 5)
        assert len(page.rows) == 5 and page.after == sorted(x[db.key_item] for x in db.rows)[4]
        assert readers.reader_for(s, settings, row) is reader  # cached per source
    actions = [a.action for a in _audit(settings)]
    assert actions == ["exchange.source.create", "exchange.source.test"]
    assert all(db.password not in (a.detail or "") for a in _audit(settings))


def test_mysql_password_given_apart_and_update(
    mysql_provider: ProviderDb, client: TestClient, settings: Settings
) -> None:
    db = mysql_provider
    bare = sa.make_url(db.url)._replace(password=None).render_as_string(hide_password=False)
    r = _create(client, db, url=bare, password=db.password)
    assert r.status_code == 201, r.text
    sid, h = r.json()["id"], auth(client, "ga_officer")
    assert client.post(f"{API}/{sid}/test", headers=h).json()["ok"] is True
    # A wrong password: the database refuses the login, the message never holds it.
    p = client.patch(f"{API}/{sid}", json={"password": "Wrong-Passw0rd-xyz"}, headers=h)
    assert p.status_code == 200 and "Wrong-Passw0rd-xyz" not in p.text
    t = client.post(f"{API}/{sid}/test", headers=h).json()
    assert t["ok"] is False and t["error"]["code"] == "exchange.source_auth_failed", t
    assert "Wrong-Passw0rd-xyz" not in json.dumps(t, ensure_ascii=False)
    got = client.get(f"{API}/{sid}", headers=h).json()
    assert got["status"] == "failing" and "source_auth_failed" in got["last_error"]
    # Back to the right password (given in the URL this time).
    p = client.patch(f"{API}/{sid}", json={"url": db.url}, headers=h)
    assert p.status_code == 200 and db.password not in p.text
    assert client.post(f"{API}/{sid}/test", headers=h).json()["ok"] is True
    assert [a.action for a in _audit(settings)].count("exchange.source.update") == 2


def test_pg_unknown_role_is_auth_failed(pg_provider: ProviderDb, client: TestClient) -> None:
    # The test server trusts 127.0.0.1 (no password check), so a role that does not exist
    # stands in for bad credentials; MariaDB above checks a wrong password.
    url = sa.make_url(pg_provider.url).set(username="nobody_here").render_as_string(hide_password=False)
    sid = _create(client, pg_provider, url=url).json()["id"]
    t = client.post(f"{API}/{sid}/test", headers=auth(client, "ga_officer")).json()
    assert t["error"]["code"] == "exchange.source_auth_failed", t


@pytest.mark.parametrize("which", PROVIDERS)
def test_missing_column_table_and_unreachable(which: str, request: pytest.FixtureRequest, client: TestClient) -> None:
    db: ProviderDb = request.getfixturevalue(which)
    h = auth(client, "ga_officer")
    sid = _create(
        client, db, fields={**db.columns, "姓名" if which == "pg_provider" else "企业名称": "no_such_col"}
    ).json()["id"]
    t = client.post(f"{API}/{sid}/test", headers=h).json()
    assert t["error"]["code"] == "exchange.source_column_missing" and "no_such_col" in t["error"]["message"], t
    assert "no_such_col" in t["error"]["message_en"]
    client.patch(f"{API}/{sid}", json={"fields": db.columns, "change_column": "no_change_col"}, headers=h)
    t = client.post(f"{API}/{sid}/test", headers=h).json()
    assert t["error"]["code"] == "exchange.source_column_missing" and "no_change_col" in t["error"]["message"], t
    client.patch(f"{API}/{sid}", json={"change_column": db.change_column, "table_name": "no_such_table"}, headers=h)
    t = client.post(f"{API}/{sid}/test", headers=h).json()
    assert t["error"]["code"] == "exchange.source_table_missing", t
    closed = sa.make_url(db.url).set(port=1).render_as_string(hide_password=False)
    client.patch(f"{API}/{sid}", json={"url": closed, "table_name": db.table}, headers=h)
    t = client.post(f"{API}/{sid}/test", headers=h).json()
    assert t["error"]["code"] == "exchange.source_unreachable", t
    assert db.password not in json.dumps(t, ensure_ascii=False)


def test_table_without_select_grant(pg_provider: ProviderDb, client: TestClient) -> None:
    admin = sa.create_engine(pg_provider.admin_url)
    with admin.begin() as conn:
        conn.execute(sa.text("CREATE TABLE IF NOT EXISTS private_notes (sfzh varchar(18) PRIMARY KEY, xm text)"))
    admin.dispose()
    sid = _create(
        client,
        pg_provider,
        table_name="private_notes",
        fields={"身份证号": "sfzh", "姓名": "xm"},
        change_column=None,
        change_kind=None,
    ).json()["id"]
    t = client.post(f"{API}/{sid}/test", headers=auth(client, "ga_officer")).json()
    assert t["error"]["code"] == "exchange.source_auth_failed" and "private_notes" in t["error"]["message"], t


def test_read_only_role_cannot_write(pg_provider: ProviderDb, mysql_provider: ProviderDb) -> None:
    for db in (pg_provider, mysql_provider):
        engine = sa.create_engine(db.url)
        with pytest.raises(sa.exc.DBAPIError), engine.begin() as conn:
            conn.execute(sa.text(f"DELETE FROM {db.table}"))
        engine.dispose()


# ---------------------------------------------------------------- reading: pages, filters


@pytest.mark.parametrize("which", PROVIDERS)
def test_pages_keyset_and_filters(which: str, request: pytest.FixtureRequest) -> None:
    db: ProviderDb = request.getfixturevalue(which)
    reader = SqlReader(db.url, db.table, db.key_column, db.columns)
    reader.test()
    key = db.key_item
    keys = sorted(r[key] for r in db.rows)
    seen: list[str] = []
    after = None
    while True:
        page = reader.page([key], [], after, 333)
        seen += [r[key] for r in page.rows]
        if page.after is None:
            break
        after = page.after
    assert seen == keys
    streamed = [r[key] for p in reader.stream([key], [], keys[99], 250) for r in p.rows]
    assert streamed == keys[100:]
    # eq, in, range, prefix (with % and _ taken literally)
    text, day = ("户籍地址", "出生日期") if which == "pg_provider" else ("企业名称", "成立日期")
    other = next(i for i in db.columns if i not in (key, text, day, "更新时间"))
    sample = db.rows[10]
    page = reader.page([key, other], [Filter(key, "eq", sample[key])], None, 10)
    assert page.rows == [{key: sample[key], other: sample[other]}] and page.after is None
    page = reader.page([key], [Filter(key, "in", keys[:7])], None, 100)
    assert [r[key] for r in page.rows] == keys[:7]
    low, high = date(1980, 1, 1), date(1989, 12, 31)
    page = reader.page([key, day], [Filter(day, "range", [low.isoformat(), high])], None, 10_000)
    want = sorted(r[key] for r in db.rows if low <= r[day] <= high)
    assert [r[key] for r in page.rows] == want and all(low <= r[day] <= high for r in page.rows)
    page = reader.page([key], [Filter(day, "range", [None, "1950-01-01"])], None, 10_000)
    assert len(page.rows) == sum(1 for r in db.rows if r[day] <= date(1950, 1, 1))
    start = "示范市100" if which == "pg_provider" else "百分"

    page = reader.page([text], [], None, 3)
    assert set(page.rows[0]) == {key, text}  # the key item comes with every row

    def prefix(value: str) -> list[str]:
        return sorted(r[text] for r in reader.page([text], [Filter(text, "prefix", value)], None, 100).rows)

    assert prefix(start + "%_") == [r[text] for r in db.rows[:1]]
    assert len(prefix(start + "%")) == 2
    assert len(prefix(start + "_")) == 1
    assert len(prefix(start)) == 4
    # lookups: one IN query, answers by key
    got = reader.lookup(key, [keys[3], keys[4], "000000000000000000"], [other])
    assert set(got) == {keys[3], keys[4]} and set(got[keys[3]]) == {key, other}
    # refused filters
    with pytest.raises(ValidationFailed) as err:
        reader.page([key], [Filter(key, "in", ["x"] * 1001)], None, 10)
    assert err.value.code == "exchange.bad_filter"
    with pytest.raises(ValidationFailed) as err:
        reader.page([key], [Filter("不存在", "eq", "x")], None, 10)
    assert err.value.code == "exchange.unknown_item"
    reader.dispose()


# ---------------------------------------------------------------- rules and permissions


def test_permissions_and_rules(pg_provider: ProviderDb, client: TestClient, settings: Settings) -> None:
    db = pg_provider
    entry = _entry(client, db)
    body = {"entry_id": entry["id"], "kind": "sql", "url": db.url, "table_name": db.table, "key_item": db.key_item}
    body["fields"] = db.columns
    # A consumer department sees the published entry but may not connect its source.
    r = client.post(API, json=body, headers=auth(client, "mz_officer"))
    assert r.status_code == 403, r.text
    assert client.post(API, json=body).status_code == 401
    r = client.post(API, json={**body, "fields": {"不存在": "x"}}, headers=auth(client, "ga_officer"))
    assert r.status_code == 422 and r.json()["error"]["code"] == "exchange.unknown_item"
    r = client.post(API, json={**body, "fields": {"姓名": "xm"}}, headers=auth(client, "ga_officer"))
    assert r.status_code == 422 and r.json()["error"]["code"] == "exchange.key_not_mapped"
    r = client.post(API, json={**body, "url": "oracle://u:p@h/db"}, headers=auth(client, "ga_officer"))
    assert r.status_code == 422 and r.json()["error"]["code"] == "exchange.bad_url"
    r = client.post(API, json={**body, "url": "sqlite:///etc/passwd"}, headers=auth(client, "ga_officer"))
    assert r.status_code == 422 and r.json()["error"]["code"] == "exchange.bad_url"
    odd = db.url + "?read_default_file=/etc/mysql/debian.cnf"
    r = client.post(API, json={**body, "url": odd}, headers=auth(client, "ga_officer"))
    assert r.status_code == 422 and "read_default_file" in r.json()["error"]["message_en"]
    r = client.post(API, json=body, headers=auth(client, "ga_officer"))
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    r = client.post(API, json=body, headers=auth(client, "ga_admin"))
    assert r.status_code == 409 and r.json()["error"]["code"] == "exchange.source_exists"
    # Other departments (and the auditor) do not learn the source exists.
    for user in ("mz_officer", "mz_admin", "auditor"):
        assert client.get(f"{API}/{sid}", headers=auth(client, user)).status_code == 404
        assert client.post(f"{API}/{sid}/test", headers=auth(client, user)).status_code == 404
        assert client.get(API, headers=auth(client, user)).json() == []
    assert client.get(f"{API}/{sid}", headers=auth(client, "admin")).status_code == 200
    # An unpublished entry cannot have a source yet.
    draft = create_entry(client, "ga_officer", name="草稿资源", items=db.items)
    r = client.post(API, json={**body, "entry_id": draft["id"]}, headers=auth(client, "ga_officer"))
    assert r.status_code == 409 and r.json()["error"]["code"] == "exchange.entry_not_published"
    r = client.delete(f"{API}/{sid}", headers=auth(client, "mz_admin"))
    assert r.status_code == 404
    r = client.delete(f"{API}/{sid}", headers=auth(client, "ga_admin"))
    assert r.status_code == 204
    assert client.get(f"{API}/{sid}", headers=auth(client, "ga_admin")).status_code == 404
    assert call(settings, sources.source_for_entry, entry["id"]) is None
    assert _audit(settings)[-1].action == "exchange.source.delete"


# ---------------------------------------------------------------- file sources

FILE_ITEMS = [
    {"name": "身份证号", "code": "SFZH", "data_type": "C", "length": 18},
    {"name": "姓名", "code": "XM", "data_type": "C", "length": 10},
    {"name": "出生日期", "code": "CSRQ", "data_type": "D"},
    {"name": "子女数", "code": "ZNS", "data_type": "I"},
    {"name": "月收入", "code": "YSR", "data_type": "N", "length": 12},
]
GOOD = [
    ["身份证号", "姓名", "出生日期", "子女数", "月收入"],
    ["110101199003071235", "张三", "1990-03-07", "2", "8500.50"],
    ["110101198512120021", "李四", "19851212", "", "12000"],
    ["110101200001010018", "王五_%", "2000/01/01", "0", ""],
]


def _csv(rows: list[list[str]], encoding: str = "utf-8-sig") -> bytes:
    return "\n".join(",".join(r) for r in rows).encode(encoding)


def _file_source(client: TestClient) -> int:
    entry = create_entry(client, "ga_officer", publish=True, name="家庭情况", items=FILE_ITEMS)
    body = {"entry_id": entry["id"], "kind": "file", "key_item": "身份证号"}
    r = client.post(API, json=body, headers=auth(client, "ga_officer"))
    assert r.status_code == 201, r.text
    assert r.json()["table_name"] == f"exchange_file_{r.json()['id']}"
    return int(r.json()["id"])


def _upload(client: TestClient, sid: int, name: str, data: bytes) -> Any:
    return client.post(f"{API}/{sid}/file", files={"file": (name, data)}, headers=auth(client, "ga_officer"))


def _file_rows(settings: Settings, sid: int) -> list[dict[str, Any]]:
    with session_scope(settings.database_url) as s:
        source = s.get(DataSource, sid)
        assert source is not None
        reader = readers.reader_for(s, settings, source)
        return reader.page(list(reader.items), [], None, 1000).rows


def test_file_source_csv_gbk_xlsx_and_errors(client: TestClient, settings: Settings) -> None:
    sid = _file_source(client)
    h = auth(client, "ga_officer")
    t = client.post(f"{API}/{sid}/test", headers=h).json()
    assert t["ok"] is False and t["error"]["code"] == "exchange.source_table_missing"
    r = _upload(client, sid, "people.csv", _csv(GOOD))
    assert r.status_code == 200, r.text
    assert r.json()["rows"] == 3 and r.json()["status"] == "ok"
    rows = _file_rows(settings, sid)
    assert [r["身份证号"] for r in rows] == sorted(g[0] for g in GOOD[1:])
    by_key = {r["身份证号"]: r for r in rows}
    assert by_key["110101199003071235"]["子女数"] == 2 and by_key["110101199003071235"]["月收入"] == Decimal("8500.50")
    assert (
        by_key["110101198512120021"]["出生日期"] == date(1985, 12, 12)
        and by_key["110101198512120021"]["子女数"] is None
    )
    assert client.post(f"{API}/{sid}/test", headers=h).json()["ok"] is True
    # GBK (from older office software), header by item codes, without BOM
    gbk = [["SFZH", "XM", "CSRQ", "ZNS", "YSR"], ["110101199003071235", "赵六", "1990-03-07", "1", "1"]]
    r = _upload(client, sid, "gbk.csv", _csv(gbk, "gbk"))
    assert r.status_code == 200, r.text
    assert [x["姓名"] for x in _file_rows(settings, sid)] == ["赵六"]
    # Bad rows: every problem listed, nothing loaded (the previous content stays)
    bad = [
        GOOD[0],
        ["110101199003071235", "张三", "1990-13-40", "two", "8500"],
        ["", "无名", "1990-01-01", "1", "1"],
        ["110101199003071235", "很长很长很长很长很长很长的名字", "1990-01-01", "1", "x"],
    ]
    r = _upload(client, sid, "bad.csv", _csv(bad))
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "exchange.file_invalid"
    problems = {(d["row"], d["column"]) for d in err["details"]}
    assert problems == {(2, "出生日期"), (2, "子女数"), (3, "身份证号"), (4, "姓名"), (4, "月收入"), (4, "身份证号")}
    assert [x["姓名"] for x in _file_rows(settings, sid)] == ["赵六"]
    r = _upload(client, sid, "cols.csv", _csv([["身份证号", "姓名"], ["1", "2"]]))
    assert r.status_code == 422 and r.json()["error"]["code"] == "exchange.file_columns_missing"
    r = _upload(client, sid, "x.pdf", b"%PDF")
    assert r.status_code == 422 and r.json()["error"]["code"] == "exchange.bad_file_type"
    # Excel
    import openpyxl

    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(GOOD[0])
    sheet.append(["110101199003071235", "钱七", date(1990, 3, 7), 3, 100.25])
    sheet.append(["110101198512120021", "孙八", "1985-12-12", None, None])
    buf = io.BytesIO()
    book.save(buf)
    r = _upload(client, sid, "people.xlsx", buf.getvalue())
    assert r.status_code == 200, r.text
    rows = _file_rows(settings, sid)
    assert [x["姓名"] for x in rows] == ["孙八", "钱七"] and rows[1]["子女数"] == 3
    loads = [a for a in _audit(settings) if a.action == "exchange.source.load"]
    assert [a.rows for a in loads] == [3, 1, 2]
    # A file source's reader filters in SQL like any other.
    with session_scope(settings.database_url) as s:
        source = s.get(DataSource, sid)
        assert source is not None
        reader = readers.reader_for(s, settings, source)
        page = reader.page(["姓名"], [Filter("姓名", "prefix", "钱")], None, 10)
        assert page.rows == [{"身份证号": "110101199003071235", "姓名": "钱七"}]
        pages = list(reader.stream(["姓名"], [], None, 1))
        assert [p.rows for p in pages] == [
            [{"身份证号": "110101198512120021", "姓名": "孙八"}],
            [{"身份证号": "110101199003071235", "姓名": "钱七"}],
        ]
    # Deleting the source drops its table.
    assert client.delete(f"{API}/{sid}", headers=h).status_code == 204
    with session_scope(settings.database_url) as s:
        assert not sa.inspect(s.connection()).has_table(f"exchange_file_{sid}")


def test_file_upload_in_batches(client: TestClient, settings: Settings) -> None:
    sid = _file_source(client)
    lines = [GOOD[0]] + [[f"{i:018d}", f"人{i}", "2000-01-01", str(i % 5), "1.5"] for i in range(12_001)]
    r = _upload(client, sid, "big.csv", _csv(lines, "utf-8"))
    assert r.status_code == 200 and r.json()["rows"] == 12_001, r.text


def test_a_leftover_table_of_another_shape_is_replaced_on_load(client: TestClient, settings: Settings) -> None:
    """Ids come back (a restored database, the suite's resets): a managed table of the
    same name with other column types must not be reused."""
    sid = _file_source(client)
    with session_scope(settings.database_url) as s:
        s.execute(sa.text(f'DROP TABLE IF EXISTS "exchange_file_{sid}"'))
        s.execute(sa.text(f'CREATE TABLE "exchange_file_{sid}" (_row INTEGER, c0 DATE, c1 DATE, c2 DATE)'))
    r = _upload(client, sid, "people.csv", _csv(GOOD))
    assert r.status_code == 200 and r.json()["rows"] == 3, r.text
    assert len(_file_rows(settings, sid)) == 3


def test_file_over_the_size_limit_is_refused_and_keeps_the_old_rows(client: TestClient, settings: Settings) -> None:
    from dataclasses import replace

    from datatong.app import create_app

    sid = _file_source(client)
    assert _upload(client, sid, "people.csv", _csv(GOOD)).status_code == 200
    small = TestClient(create_app(replace(settings, upload_max_mb=1), migrate=False))
    lines = [GOOD[0]] + [[f"{i:018d}", f"人{i}", "2000-01-01", "1", "1.5"] for i in range(40_000)]
    r = _upload(small, sid, "big.csv", _csv(lines, "utf-8"))
    assert r.status_code == 413 and r.json()["error"]["code"] == "exchange.file_too_large", r.text[:300]
    assert "1 MB" in r.json()["error"]["message"]
    assert len(_file_rows(settings, sid)) == 3  # nothing lost


def test_cli_source_test_and_load_file(
    client: TestClient, settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from datatong.cli import app

    sid = _file_source(client)
    with session_scope(settings.database_url) as s:
        source = s.get(DataSource, sid)
        assert source is not None
        code = source.entry.code
    monkeypatch.setenv("DATATONG_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("DATATONG_SECRET_KEY", settings.secret_key)
    monkeypatch.setenv("DATATONG_VAR_DIR", str(settings.var_dir))
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        res = runner.invoke(app, ["exchange", "source-test", code])
        assert res.exit_code == 1, res.output
        path = tmp_path / "p.csv"
        path.write_bytes(_csv(GOOD))
        res = runner.invoke(app, ["exchange", "load-file", code, str(path), "--by", "ga_officer"])
        assert res.exit_code == 0, res.output
        res = runner.invoke(app, ["exchange", "source-test", code])
        assert res.exit_code == 0, res.output
        path.write_bytes(_csv([GOOD[0], ["", "x", "x", "x", "x"]]))
        res = runner.invoke(app, ["exchange", "load-file", code, str(path)])
        assert res.exit_code == 2 and "exchange.file_invalid" in res.output
        assert runner.invoke(app, ["exchange", "source-test", "NO-SUCH"]).exit_code == 2
    finally:
        get_settings.cache_clear()


# ---------------------------------------------------------------- HTTP sources

PEOPLE = [
    {"id": f"1101011990030712{i:02d}", "name": f"人{i}", "detail": {"marital": "已婚" if i % 2 else "未婚"}}
    for i in range(25)
]


class _Upstream(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        q = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
        if self.headers.get("Authorization") != "Bearer up-token":
            self.send_response(401)
            self.end_headers()
            return
        rows = sorted(PEOPLE, key=lambda p: p["id"])
        if "sfzh" in q:
            rows = [p for p in rows if p["id"] == q["sfzh"]]
        if "after" in q:
            rows = [p for p in rows if p["id"] > q["after"]]
        rows = rows[: int(q.get("limit", 100))]
        body = json.dumps({"data": {"items": rows}}, ensure_ascii=False).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/people"
    server.shutdown()
    server.server_close()


HTTP_FIELDS = {"身份证号": "id", "姓名": "name", "婚姻状况": "detail.marital"}
HTTP_OPTIONS = {"records": "data.items", "params": {"身份证号": "sfzh"}, "key_param": "sfzh"}


def test_http_reader(upstream: str) -> None:
    reader = HttpReader(upstream, "id", HTTP_FIELDS, HTTP_OPTIONS, token="up-token", outbound_allow=("127.0.0.1",))
    reader.test()
    page = reader.page(["姓名"], [], None, 10)
    assert len(page.rows) == 10 and page.after == PEOPLE[9]["id"] and set(page.rows[0]) == {"身份证号", "姓名"}
    everything = [r["身份证号"] for p in reader.stream(["婚姻状况"], [], None, 10) for r in p.rows]
    assert everything == [p["id"] for p in PEOPLE]
    page = reader.page(["婚姻状况"], [Filter("身份证号", "eq", PEOPLE[3]["id"])], None, 10)
    assert page.rows == [{"身份证号": PEOPLE[3]["id"], "婚姻状况": "已婚"}]
    got = reader.lookup("身份证号", [PEOPLE[1]["id"], "nope"], ["姓名"])
    assert got == {PEOPLE[1]["id"]: {"身份证号": PEOPLE[1]["id"], "姓名": "人1"}}
    with pytest.raises(ValidationFailed) as err:
        reader.page(["姓名"], [Filter("姓名", "prefix", "人")], None, 10)
    assert err.value.code == "exchange.filter_unsupported"
    reader.dispose()
    local = {"outbound_allow": ("127.0.0.1",)}  # the upstream of these tests listens on loopback
    cases = [
        (HttpReader(upstream, "id", HTTP_FIELDS, HTTP_OPTIONS, "wrong", **local), "exchange.source_auth_failed"),
        (
            HttpReader(upstream, "id", {**HTTP_FIELDS, "姓名": "nom"}, HTTP_OPTIONS, "up-token", **local),
            "source_column_missing",
        ),
        (
            HttpReader(upstream, "id", HTTP_FIELDS, {"records": "rows"}, "up-token", **local),
            "exchange.source_bad_response",
        ),
        (
            HttpReader("http://127.0.0.1:1/x", "id", HTTP_FIELDS, HTTP_OPTIONS, "t", **local),
            "exchange.source_unreachable",
        ),
        (HttpReader(upstream, "id", HTTP_FIELDS, HTTP_OPTIONS, "up-token"), "exchange.source_forbidden_address"),
    ]
    for bad, code in cases:
        with pytest.raises(SourceError) as failed:
            bad.test()
        assert failed.value.code.endswith(code), (code, failed.value.code)
        bad.dispose()


def test_http_source_through_api(upstream: str, client: TestClient, settings: Settings) -> None:
    items = [
        {"name": "身份证号", "code": "SFZH", "data_type": "C", "length": 18},
        {"name": "姓名", "code": "XM", "data_type": "C", "length": 50},
        {"name": "婚姻状况", "code": "HYZK", "data_type": "C", "length": 10},
    ]
    entry = create_entry(client, "ga_officer", publish=True, name="婚姻登记", items=items)
    body = {
        "entry_id": entry["id"],
        "kind": "http",
        "url": upstream,
        "password": "up-token",
        "key_item": "身份证号",
        "fields": HTTP_FIELDS,
        "options": HTTP_OPTIONS,
    }
    r = client.post(API, json=body, headers=auth(client, "ga_officer"))
    assert r.status_code == 201, r.text
    assert r.json()["has_password"] and "up-token" not in r.text and r.json()["options"] == HTTP_OPTIONS
    t = client.post(f"{API}/{r.json()['id']}/test", headers=auth(client, "ga_officer"))
    assert t.json()["ok"] is True, t.text
    with session_scope(settings.database_url) as s:
        source = sources.source_for_entry(s, entry["id"])
        assert source is not None and "up-token" not in (source.secret_sealed or "")
        got = readers.reader_for(s, settings, source).lookup("身份证号", [PEOPLE[2]["id"]], ["婚姻状况"])
        assert got[PEOPLE[2]["id"]]["婚姻状况"] == "未婚"


def test_http_source_may_not_point_at_the_platform_or_metadata(
    upstream: str, client: TestClient, settings: Settings
) -> None:
    """An HTTP source is fetched by the platform's server: link-local and metadata
    addresses are refused always, loopback unless the operator allowed it."""
    from dataclasses import replace

    from datatong.app import create_app

    entry = create_entry(client, "ga_officer", publish=True, name="婚姻登记")
    body = {"entry_id": entry["id"], "kind": "http", "key_item": "身份证号", "fields": {"身份证号": "id"}}
    for url in ("http://169.254.169.254/latest/meta-data/", "http://100.100.100.200/latest/", "http://0.0.0.0/"):
        r = client.post(API, json=body | {"url": url}, headers=auth(client, "ga_officer"))
        assert r.status_code == 422 and r.json()["error"]["code"] == "exchange.url_forbidden", (url, r.text)
    strict = TestClient(create_app(replace(settings, outbound_allow=()), migrate=False))
    r = strict.post(API, json=body | {"url": upstream}, headers=auth(client, "ga_officer"))
    assert r.status_code == 422 and r.json()["error"]["code"] == "exchange.url_forbidden"
    # Saved while allowed, then the operator withdraws loopback: the next fetch is refused.
    r = client.post(API, json=body | {"url": upstream}, headers=auth(client, "ga_officer"))
    assert r.status_code == 201, r.text
    t = strict.post(f"{API}/{r.json()['id']}/test", headers=auth(client, "ga_officer")).json()
    assert t["ok"] is False and t["error"]["code"] == "exchange.source_forbidden_address", t


def test_service_layer(pg_provider: ProviderDb, client: TestClient, settings: Settings) -> None:
    """The service functions the query helper calls, with principals."""
    db = pg_provider
    entry = _entry(client, db)
    officer = who(settings, "ga_officer")
    with session_scope(settings.database_url) as s:
        source = sources.create_source(
            s, settings, officer, entry["id"], "sql", db.url, None, db.table, db.key_item, db.columns, None, None, None
        )
        sid = source.id
    result = call(settings, sources.test_source, settings, officer, sid)
    assert result.ok and result.error is None
    with session_scope(settings.database_url) as s:
        source = sources.source_for_entry(s, entry["id"])
        assert source is not None and source.id == sid and source.status == "ok"
        assert [x.id for x in sources.list_sources(s, who(settings, "admin"))] == [sid]
        assert sources.list_sources(s, who(settings, "mz_officer")) == []
