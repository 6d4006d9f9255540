"""Bulk exchange (批量交换) end to end: a consumer with a grant exports 市公安局's PostgreSQL
population table and 市场监管局's MariaDB enterprise table through the SDK against a live
server, as CSV, JSON Lines and Parquet — only granted items, masked as the grant says, key
first; resumable from a key; the SDK resumes after a broken connection; refusals are JSON
errors before any byte; the audit record is written before the first byte."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from conftest import CLIENT_ID, PASSWORD, auth, create_entry
from exchange_fixtures import ProviderDb, mysql_provider, pg_provider  # noqa: F401 - fixtures
from fastapi.testclient import TestClient
from test_exchange_calls import CTX, _granted

from datatong.audit.models import AuditRecord
from datatong.catalog.models import CatalogEntry
from datatong.client import Client, DatatongError
from datatong.db import session_scope
from datatong.exchange import bulk
from datatong.exchange.api import reader_for_entry
from datatong.exchange.context import RequestContext
from datatong.exchange.readers import SqlReader
from datatong.orgs.models import ClientApp
from datatong.orgs.service import Principal
from datatong.settings import Settings
from datatong.sharing import masking
from datatong.sharing.authorize import Decision

PROVIDERS = ["pg_provider", "mysql_provider"]
HEADERS = {
    "X-Datatong-System": CLIENT_ID,
    "X-Datatong-Operator": "wang",
    "X-Datatong-Purpose": "verification",
    "X-Datatong-Case": "MZ-2026-000123",
}


def _sdk(live_server: str, transport: httpx.BaseTransport | None = None) -> Client:
    return Client(
        live_server,
        client_id=CLIENT_ID,
        client_secret=PASSWORD,
        transport=transport,
        **(CTX | {"system": CLIENT_ID}),
    )


def _plan(which: str, db: ProviderDb) -> tuple[list[str], list[str], str]:
    """Items to grant, items granted in clear, and the item that stays masked."""
    key = db.key_item
    if which == "pg_provider":
        return [key, "姓名", "婚姻状况", "出生日期"], [key, "婚姻状况"], "姓名"
    return [key, "企业名称", "法定代表人", "成立日期"], [key], "法定代表人"


def _expected(db: ProviderDb, names: list[str], masked: str) -> dict[str, list[str]]:
    kind = masking.kind_for_item(masked)
    kind = "text" if kind == "none" else kind
    out = {}
    for row in db.rows:
        vals = []
        for name in names:
            v = row[name]
            v = masking.mask(kind, v) if name == masked else (v.isoformat() if hasattr(v, "isoformat") else v)
            vals.append("" if v is None else str(v))
        out[vals[0]] = vals
    return out


def _read_csv(path: Path) -> list[list[str]]:
    raw = path.read_bytes()
    assert raw.startswith("\ufeff".encode())  # UTF-8 with BOM (Excel opens it right)
    return list(csv.reader(io.StringIO(raw.decode("utf-8-sig"), newline="")))


class CutOnce(httpx.BaseTransport):
    """A real HTTP transport whose first export response breaks after ``after_bytes``
    bytes, as a dropped connection would (httpx.ReadError)."""

    def __init__(self, after_bytes: int) -> None:
        self.inner = httpx.HTTPTransport()
        self.after_bytes = after_bytes
        self.cut = False
        self.exports: list[str] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if "/export" not in request.url.path:
            return response
        self.exports.append(str(request.url.params.get("after")))
        if self.cut:
            return response
        self.cut = True
        stream, limit = response.stream, self.after_bytes

        class Broken(httpx.SyncByteStream):
            def __iter__(self) -> Iterator[bytes]:
                sent = 0
                for chunk in stream:  # type: ignore[union-attr]
                    if sent + len(chunk) >= limit:
                        yield chunk[: limit - sent]
                        raise httpx.ReadError("connection reset (simulated)")
                    sent += len(chunk)
                    yield chunk

            def close(self) -> None:
                stream.close()  # type: ignore[union-attr]

        return httpx.Response(
            response.status_code, headers=response.headers, stream=Broken(), extensions=response.extensions
        )

    def close(self) -> None:
        self.inner.close()


@pytest.mark.parametrize("which", PROVIDERS)
def test_csv_and_jsonl_export_equal_the_provider_rows(
    which: str, request: pytest.FixtureRequest, client: TestClient, live_server: str, tmp_path: Path
) -> None:
    db: ProviderDb = request.getfixturevalue(which)
    items, clear, masked = _plan(which, db)
    code = _granted(client, db, items, clear=clear)
    with _sdk(live_server) as dt:
        started = time.perf_counter()
        n = dt.export(code, tmp_path / "out.csv")
        seconds = time.perf_counter() - started
        assert n == len(db.rows)
        print(f"\n{which}: CSV export {n} rows in {seconds:.3f}s ≈ {n / seconds:,.0f} rows/s")
        table = _read_csv(tmp_path / "out.csv")
        header, rows = table[0], table[1:]
        assert header[0] == db.key_item and sorted(header) == sorted(items)  # key first, only granted
        expected = _expected(db, header, masked)
        assert len(rows) == len(db.rows) and {r[0] for r in rows} == set(expected)
        assert all(r == expected[r[0]] for r in rows)
        assert all("*" in r[header.index(masked)] for r in rows)

        assert dt.export(code, tmp_path / "out.jsonl", format="jsonl", items=[items[1]]) == len(db.rows)
        lines = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text("utf-8").splitlines()]
        assert len(lines) == len(db.rows)
        assert all(list(x) == [db.key_item, items[1]] for x in lines)  # key first even when not asked
        by_key = {r[db.key_item]: r for r in db.rows}
        assert {x[db.key_item] for x in lines} == set(by_key)
        if items[1] == masked:
            assert all("*" in x[masked] for x in lines if x[masked])
        else:
            assert all(x[items[1]] == by_key[x[db.key_item]][items[1]] for x in lines)


@pytest.mark.parametrize("which", PROVIDERS)
def test_parquet_export_is_readable(
    which: str, request: pytest.FixtureRequest, client: TestClient, live_server: str, tmp_path: Path
) -> None:
    db: ProviderDb = request.getfixturevalue(which)
    items, clear, masked = _plan(which, db)
    code = _granted(client, db, items, clear=clear)
    with _sdk(live_server) as dt:
        assert dt.export(code, tmp_path / "out.parquet", format="parquet") is None
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.num_rows == len(db.rows)
    assert table.column_names[0] == db.key_item and sorted(table.column_names) == sorted(items)
    assert set(table.column(db.key_item).to_pylist()) == {r[db.key_item] for r in db.rows}
    assert all("*" in v for v in table.column(masked).to_pylist() if v)


def _system_auth(client: TestClient) -> dict[str, str]:
    """民政局's system (the grant names its client id) with its own credentials."""
    r = client.post("/api/v1/auth/client-token", json={"client_id": CLIENT_ID, "client_secret": PASSWORD})
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


@pytest.mark.parametrize("which", PROVIDERS)
def test_resume_after_a_key_returns_exactly_the_rest(
    which: str, request: pytest.FixtureRequest, client: TestClient
) -> None:
    db: ProviderDb = request.getfixturevalue(which)
    items, clear, _ = _plan(which, db)
    code = _granted(client, db, items, clear=clear)
    headers = HEADERS | _system_auth(client)
    url = f"/api/v1/exchange/entries/{code}/export"
    r = client.get(url, params={"format": "jsonl"}, headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["X-Datatong-Resume"].startswith("after=")
    assert r.headers["Content-Type"].startswith("application/x-ndjson")
    everything = [json.loads(x) for x in r.text.splitlines()]
    assert len(everything) == len(db.rows)
    for k in (0, 777, len(everything) - 2, len(everything) - 1):
        after = everything[k][db.key_item]
        rest = client.get(url, params={"format": "jsonl", "after": after}, headers=headers)
        assert rest.status_code == 200, rest.text
        assert [json.loads(x) for x in rest.text.splitlines()] == everything[k + 1 :]
    csv_rest = client.get(url, params={"format": "csv", "after": everything[9][db.key_item]}, headers=headers)
    rows = list(csv.reader(io.StringIO(csv_rest.content.decode("utf-8-sig"))))
    assert rows[0][0] == db.key_item and [r[0] for r in rows[1:]] == [x[db.key_item] for x in everything[10:]]


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_sdk_resumes_after_a_broken_connection(
    fmt: str, request: pytest.FixtureRequest, client: TestClient, live_server: str, tmp_path: Path
) -> None:
    db: ProviderDb = request.getfixturevalue("pg_provider")
    items, clear, _ = _plan("pg_provider", db)
    code = _granted(client, db, items, clear=clear)
    cut = CutOnce(after_bytes=50_003)  # somewhere in the middle of a row
    with _sdk(live_server, transport=cut) as dt:
        n = dt.export(code, tmp_path / f"out.{fmt}", format=fmt)
    assert cut.cut and len(cut.exports) == 2 and cut.exports[0] == "None" and cut.exports[1] != "None"
    assert n == len(db.rows)
    if fmt == "csv":
        table = _read_csv(tmp_path / "out.csv")
        assert table[0][0] == db.key_item and all(r[0] != db.key_item for r in table[1:])  # one header
        keys = [r[0] for r in table[1:]]
    else:
        keys = [json.loads(x)[db.key_item] for x in (tmp_path / "out.jsonl").read_text("utf-8").splitlines()]
    assert len(keys) == len(set(keys)) == len(db.rows)  # every row exactly once
    assert set(keys) == {r[db.key_item] for r in db.rows}
    # Parquet restarts from the beginning and still ends with a whole file.
    cut = CutOnce(after_bytes=20_000)
    with _sdk(live_server, transport=cut) as dt:
        dt.export(code, tmp_path / "out.parquet", format="parquet")
    assert cut.exports == ["None", "None"]
    assert pq.read_table(tmp_path / "out.parquet").num_rows == len(db.rows)


def test_refusals_are_json_errors_before_any_byte(
    client: TestClient, live_server: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    db: ProviderDb = request.getfixturevalue("pg_provider")
    code = _granted(client, db, ["身份证号", "姓名"])  # the key is granted masked
    with _sdk(live_server) as dt:
        with pytest.raises(DatatongError) as info:
            dt.export(code, tmp_path / "x.csv", items=["户籍地址"])
        assert info.value.status == 403 and info.value.code == "exchange.item_not_granted"
        with pytest.raises(DatatongError) as info:
            dt.export(code, tmp_path / "x.csv", format="xlsx")
        assert info.value.status == 422 and info.value.code == "exchange.format_invalid"
        # A masked key cannot be resumed from: the export says so, and after= is refused.
        assert dt.export(code, tmp_path / "m.csv") == len(db.rows)
        assert all("*" in r[0] for r in _read_csv(tmp_path / "m.csv")[1:])
        with pytest.raises(DatatongError) as info:
            dt.export(code, tmp_path / "x.csv", after=db.rows[0]["身份证号"])
        assert info.value.status == 422 and info.value.code == "exchange.resume_unavailable"
    # No grant: an entry with a source that 民政局 never applied for.
    entry = create_entry(client, "ga_officer", publish=True, name="未授权资源", items=db.items)
    body = {
        "entry_id": entry["id"],
        "kind": "sql",
        "url": db.url,
        "table_name": db.table,
        "key_item": db.key_item,
        "fields": db.columns,
    }
    assert client.post("/api/v1/exchange/sources", json=body, headers=auth(client, "ga_officer")).status_code == 201
    with httpx.Client(base_url=live_server) as raw:
        token = raw.post("/api/v1/auth/client-token", json={"client_id": CLIENT_ID, "client_secret": PASSWORD})
        headers = HEADERS | {"Authorization": f"Bearer {token.json()['access_token']}"}
        r = raw.get(f"/api/v1/exchange/entries/{entry['code']}/export", headers=headers)
        assert r.status_code == 403 and r.headers["content-type"].startswith("application/json")
        assert r.json()["error"]["code"] == "exchange.no_grant"
        r = raw.get(f"/api/v1/exchange/entries/{code}/export", headers={"Authorization": headers["Authorization"]})
        assert r.status_code == 422 and r.json()["error"]["code"] == "exchange.context_missing"


def test_export_is_audited_before_and_after(
    client: TestClient, live_server: str, settings: Settings, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    db: ProviderDb = request.getfixturevalue("pg_provider")
    code = _granted(client, db, ["身份证号", "姓名"], clear=["身份证号"])
    with _sdk(live_server) as dt:
        dt.export(code, tmp_path / "a.jsonl", format="jsonl")
        with pytest.raises(DatatongError):
            dt.export(code, tmp_path / "b.csv", items=["户籍地址"])
    with session_scope(settings.database_url) as s:
        recs = list(
            s.scalars(
                sa.select(AuditRecord).where(AuditRecord.action.like("exchange.export%")).order_by(AuditRecord.seq)
            )
        )
        got = [(r.action, r.outcome, r.reason, r.rows) for r in recs]
        assert got[:2] == [
            ("exchange.export", "allowed", None, 0),
            ("exchange.export_end", "allowed", None, len(db.rows)),
        ]
        assert got[2][:3] == ("exchange.export", "refused", "item_not_granted")
        assert all(CTX["case"] in (r.detail or "") and CTX["operator"] in (r.detail or "") for r in recs)
        start = json.loads(recs[0].detail or "{}")
        assert start["format"] == "jsonl" and start["bulk"] is True
        assert recs[0].resource == code and recs[0].grant_id is not None and recs[0].purpose == "verification"
        assert json.loads(recs[1].detail or "{}")["complete"] is True


def test_the_stream_is_many_row_aligned_chunks(request: pytest.FixtureRequest) -> None:
    """Constant memory: one chunk per page of the server-side cursor, each ending on a row."""
    db: ProviderDb = request.getfixturevalue("pg_provider")
    reader = SqlReader(db.url, db.table, db.key_column, db.columns)
    names = [db.key_item, "姓名", "出生日期"]
    decision = Decision(True, items=names, masked_items=["姓名"])
    masker = bulk._Masker(decision, names, dict(masking.RULES))
    try:
        for fmt, writer in bulk._WRITERS.items():
            counter = [0]
            chunks = list(writer(reader.stream(names, [], None, 100), names, masker, counter))
            assert counter[0] == len(db.rows)
            assert len(chunks) >= len(db.rows) // 100
            assert max(len(c) for c in chunks) < 64_000  # no chunk holds the whole table
            if fmt != "parquet":
                assert all(c.endswith(b"\n") for c in chunks)
            else:
                assert pq.read_table(io.BytesIO(b"".join(chunks))).num_rows == len(db.rows)
    finally:
        reader.dispose()


# ---------------------------------------------------------------- fast path (PostgreSQL COPY)

ALL_POPULATION = ["身份证号", "姓名", "性别", "出生日期", "户籍地址", "婚姻状况", "更新时间"]


def _both_paths(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, code: str, params: dict[str, str]
) -> tuple[httpx.Response, httpx.Response, int]:
    """The same export through the COPY fast path and through the Python path; how many
    COPYs the fast one ran (it must have run one)."""
    copies = [0]
    real = bulk.copy_chunks

    def counted(*args: object, **kwargs: object) -> Iterator[bytes]:
        copies[0] += 1
        return real(*args, **kwargs)  # type: ignore[arg-type]

    headers = HEADERS | _system_auth(client)
    url = f"/api/v1/exchange/entries/{code}/export"
    monkeypatch.setattr(bulk, "copy_chunks", counted)
    monkeypatch.setattr(bulk, "COPY_CHUNK", 4096)  # many chunks: quotes and rows across them
    fast = client.get(url, params=params, headers=headers)
    monkeypatch.setattr(bulk, "FAST_PATH", False)
    slow = client.get(url, params=params, headers=headers)
    monkeypatch.setattr(bulk, "FAST_PATH", True)
    assert fast.status_code == slow.status_code == 200, (fast.text, slow.text)
    return fast, slow, copies[0]


@pytest.mark.parametrize("clear", ["masked", "clear"])
def test_fast_path_csv_is_byte_for_byte_the_python_path(
    clear: str, request: pytest.FixtureRequest, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    db: ProviderDb = request.getfixturevalue("pg_provider")
    in_clear = ALL_POPULATION if clear == "clear" else ["身份证号", "出生日期"]
    code = _granted(client, db, ALL_POPULATION, clear=in_clear)
    fast, slow, copies = _both_paths(client, monkeypatch, code, {"format": "csv"})
    assert copies == 1
    assert fast.content == slow.content
    rows = list(csv.reader(io.StringIO(fast.content.decode("utf-8-sig"), newline="")))
    assert len(rows) == len(db.rows) + 1 and rows[0][0] == db.key_item
    if clear == "masked":
        assert all("*" in r[rows[0].index("姓名")] for r in rows[1:])
    # Resume after a key: exactly the rest, still the same bytes on both paths.
    after = sorted(r[db.key_item] for r in db.rows)[777]
    fast, slow, copies = _both_paths(client, monkeypatch, code, {"format": "csv", "after": after})
    assert copies == 1 and fast.content == slow.content
    rest = list(csv.reader(io.StringIO(fast.content.decode("utf-8-sig"), newline="")))[1:]
    assert [r[0] for r in rest] == sorted(r[db.key_item] for r in db.rows)[778:]


def test_fast_path_handles_quotes_newlines_and_admin_rules(
    request: pytest.FixtureRequest, client: TestClient, monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    """Values with quotes, commas, CR/LF and empty strings; the admin's masking overrides."""
    db: ProviderDb = request.getfixturevalue("pg_provider")
    admin = sa.create_engine(db.admin_url)
    odd = ['他说"你好"', "一,二", "第一行\r\n第二行", "只有\n换行", "", " ", '"', "\r"]
    keys = sorted(r[db.key_item] for r in db.rows)[:: len(db.rows) // len(odd)][: len(odd)]
    with admin.begin() as conn:
        select = sa.text("SELECT hjdz, hyzk, updated_at FROM population WHERE sfzh = :k")
        saved = {k: tuple(conn.execute(select, {"k": k}).one()) for k in keys}
        # Times with microseconds take to_char's way.
        update = sa.text(
            "UPDATE population SET hjdz = :v, hyzk = :v, updated_at = updated_at + :us * interval '1 microsecond' "
            "WHERE sfzh = :k"
        )
        for i, (k, v) in enumerate(zip(keys, odd, strict=True)):
            conn.execute(update, {"v": v, "k": k, "us": [0, 1, 500_000, 123_456][i % 4]})
    rules = {"name": {"mode": "keep", "head": 1, "tail": 1}, "address": {"mode": "full"}}
    put = client.put("/api/v1/sharing/masking-rules", json={"rules": rules}, headers=auth(client, "admin"))
    assert put.status_code == 200, put.text
    try:
        code = _granted(client, db, ALL_POPULATION, clear=["身份证号", "婚姻状况"])
        fast, slow, copies = _both_paths(client, monkeypatch, code, {"format": "csv"})
        assert copies == 1 and fast.content == slow.content
        assert "第一行\r\n第二行".encode() in fast.content
        fast, slow, copies = _both_paths(client, monkeypatch, code, {"format": "parquet"})
        assert copies == 1
        assert pq.read_table(io.BytesIO(fast.content)).equals(pq.read_table(io.BytesIO(slow.content)))
    finally:
        client.put("/api/v1/sharing/masking-rules", json={"rules": {}}, headers=auth(client, "admin"))
        with admin.begin() as conn:
            restore = sa.text("UPDATE population SET hjdz = :v, hyzk = :m, updated_at = :t WHERE sfzh = :k")
            for k, (v, m, t) in saved.items():
                conn.execute(restore, {"v": v, "m": m, "t": t, "k": k})
        admin.dispose()


@pytest.mark.parametrize("clear", ["masked", "clear"])
def test_fast_path_parquet_is_the_python_table(
    clear: str, request: pytest.FixtureRequest, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    db: ProviderDb = request.getfixturevalue("pg_provider")
    in_clear = ALL_POPULATION if clear == "clear" else ["身份证号"]
    code = _granted(client, db, ALL_POPULATION, clear=in_clear)
    fast, slow, copies = _both_paths(client, monkeypatch, code, {"format": "parquet"})
    assert copies == 1
    fast_table, slow_table = pq.read_table(io.BytesIO(fast.content)), pq.read_table(io.BytesIO(slow.content))
    assert fast_table.num_rows == len(db.rows)
    assert fast_table.schema.equals(slow_table.schema) and fast_table.equals(slow_table)


def test_json_lines_and_other_databases_keep_the_python_path(
    request: pytest.FixtureRequest, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    db: ProviderDb = request.getfixturevalue("pg_provider")
    code = _granted(client, db, ["身份证号", "姓名"], clear=["身份证号"])
    _, _, copies = _both_paths(client, monkeypatch, code, {"format": "jsonl"})
    assert copies == 0


# ---------------------------------------------------------------- signed manifest


def test_manifest_signs_exactly_the_bytes_sent(
    request: pytest.FixtureRequest, client: TestClient, live_server: str, settings: Settings, tmp_path: Path
) -> None:
    from datatong.exchange.models import ExportRecord
    from datatong.exchange.receipts import ReceiptInvalid, verify_manifest

    db: ProviderDb = request.getfixturevalue("pg_provider")
    code = _granted(client, db, ["身份证号", "姓名", "出生日期"], clear=["身份证号"])
    headers = HEADERS | _system_auth(client)
    jwks = client.get("/.well-known/datatong-keys").json()
    for fmt in ("csv", "jsonl", "parquet"):
        r = client.get(f"/api/v1/exchange/entries/{code}/export", params={"format": fmt}, headers=headers)
        assert r.status_code == 200, r.text
        export_id = r.headers["X-Datatong-Export"]
        m = client.get(f"/api/v1/exchange/exports/{export_id}/manifest", headers=_system_auth(client))
        assert m.status_code == 200, m.text
        doc = verify_manifest(m.json(), jwks, body=r.content)
        assert doc["sha256"] == hashlib.sha256(r.content).hexdigest() and doc["bytes"] == len(r.content)
        assert doc["rows"] == len(db.rows) and doc["status"] == "complete" and doc["format"] == fmt
        assert doc["entry"] == code and doc["items"] == ["身份证号", "姓名", "出生日期"] and doc["masked"] == ["姓名"]
        assert doc["export_id"] == export_id and doc["grant_id"] == int(r.headers["X-Datatong-Grant"])
        assert doc["started_at"] <= doc["finished_at"]
        with pytest.raises(ReceiptInvalid):
            verify_manifest(m.json() | {"rows": 1}, jwks)
        with pytest.raises(ReceiptInvalid):
            verify_manifest(m.json(), jwks, body=r.content + b"x")
        # The consumer department's officer may read it; the provider's may not (404); the
        # platform admin and the auditor may.
        assert client.get(m.request.url, headers=auth(client, "mz_officer")).status_code == 200
        refused = client.get(m.request.url, headers=auth(client, "ga_officer"))
        assert refused.status_code == 404 and refused.json()["error"]["code"] == "not_found"
        assert client.get(m.request.url, headers=auth(client, "auditor")).status_code == 200
    # Running or broken off: 409, no manifest.
    for status in ("running", "failed"):
        with session_scope(settings.database_url) as s:
            s.execute(sa.update(ExportRecord).where(ExportRecord.id == export_id).values(status=status))
        r = client.get(f"/api/v1/exchange/exports/{export_id}/manifest", headers=_system_auth(client))
        assert r.status_code == 409 and r.json()["error"]["code"] == "exchange.export_incomplete"
    assert client.get("/api/v1/exchange/exports/nope/manifest", headers=_system_auth(client)).status_code == 404
    # The SDK names the export and checks the file against the signed manifest.
    with _sdk(live_server) as dt:
        assert dt.export(code, tmp_path / "v.csv", verify=True) == len(db.rows)
        assert dt.last_export_id and dt.manifest(dt.last_export_id)["rows"] == len(db.rows)
        assert dt.export(code, tmp_path / "v.parquet", format="parquet", verify=True) is None
        assert (
            dt.manifest(dt.last_export_id)["sha256"]
            == hashlib.sha256((tmp_path / "v.parquet").read_bytes()).hexdigest()
        )


def test_a_broken_off_export_is_failed(request: pytest.FixtureRequest, client: TestClient, settings: Settings) -> None:
    """The stream's end decides: a body closed before its end leaves the record failed."""
    from datatong.exchange.models import ExportRecord

    db: ProviderDb = request.getfixturevalue("pg_provider")
    code = _granted(client, db, ["身份证号", "姓名"], clear=["身份证号"])
    with session_scope(settings.database_url) as s:
        entry = s.scalar(sa.select(CatalogEntry).where(CatalogEntry.code == code))
        app = s.scalar(sa.select(ClientApp).where(ClientApp.client_id == CLIENT_ID))
        assert app is not None
        principal = Principal("client", app.id, app.client_id, app.name, "client", app.department_id, "MZ")
        started = bulk.export(
            s,
            settings,
            principal,
            reader_for_entry,
            entry=entry,
            ctx=RequestContext(CLIENT_ID, "wang", "verification", "MZ-1"),
            fmt="csv",
            items=None,
        )
        next(started.chunks)
        started.chunks.close()  # type: ignore[attr-defined]
        record = s.get(ExportRecord, started.export_id)
        s.refresh(record)
        assert record is not None and record.status == "failed" and record.rows > 0 and record.finished_at


def test_row_ends_become_crlf_outside_quotes_only() -> None:
    """COPY's LF row ends turn into the csv module's CRLF; an LF inside a quoted value stays,
    wherever the chunks are cut."""
    raw = b'a,"x\ny",1\n"q""\n",,\nplain,row,3\n"\n",b,c\n'
    want = io.StringIO()
    rows = list(csv.reader(io.StringIO(raw.decode(), newline="")))
    csv.writer(want, lineterminator="\r\n").writerows(rows)
    for cut in range(len(raw) + 1):
        inside, out, count = False, b"", 0
        for part in (raw[:cut], raw[cut:]):
            data, n, inside = bulk._crlf(part, inside)
            out, count = out + data, count + n
        assert out == want.getvalue().encode() and count == len(rows) and not inside
