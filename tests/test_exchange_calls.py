"""Query (查询接口) and verification (查询核验) end to end: a consumer with a grant, through
the Python SDK against a live server, reading 市公安局's PostgreSQL and 市场监管局's MariaDB
through read-only accounts; every refusal reason as a clear JSON error; every call in the
audit trail with its request context; every response with a signed receipt."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa
from conftest import CLIENT_ID, PASSWORD, auth, create_entry
from exchange_fixtures import ProviderDb, mysql_provider, pg_provider  # noqa: F401 - fixtures
from fastapi.testclient import TestClient

from datatong.audit.models import AuditRecord
from datatong.client import Client, DatatongError
from datatong.db import session_scope
from datatong.settings import Settings

SH = "/api/v1/sharing"
PROVIDERS = ["pg_provider", "mysql_provider"]
CTX = {"system": "社会救助信息系统", "operator": "王小明", "purpose": "verification", "case": "MZ-2026-000123"}


def _granted(
    client: TestClient, db: ProviderDb, items: list[str], *, clear: list[str] = (), rows: int = 100_000
) -> str:
    """A published entry on ``db`` with a data source, and an approved grant of 民政局."""
    entry = create_entry(client, "ga_officer", publish=True, name=f"{db.table} 基本信息", items=db.items)
    body = {
        "entry_id": entry["id"],
        "kind": "sql",
        "url": db.url,
        "table_name": db.table,
        "key_item": db.key_item,
        "fields": db.columns,
    }
    r = client.post("/api/v1/exchange/sources", json=body, headers=auth(client, "ga_officer"))
    assert r.status_code == 201, r.text
    mz, ga = auth(client, "mz_officer"), auth(client, "ga_officer")
    today = date.today()
    app = client.post(
        f"{SH}/applications",
        headers=mz,
        json={
            "entry_id": entry["id"],
            "purpose_kind": "verification",
            "purpose": "低保资格核验",
            "legal_basis": "《社会救助暂行办法》",
            "items": items,
            "period_start": today.isoformat(),
            "period_end": (today + timedelta(days=365)).isoformat(),
            "rows_per_day": rows,
            "client_id": CLIENT_ID,
        },
    ).json()
    client.post(f"{SH}/applications/{app['id']}/submit", json={"accept_commitment": True}, headers=mz)
    r = client.post(
        f"{SH}/applications/{app['id']}/decide",
        headers=ga,
        json={"decision": "approve", "clear_items": list(clear), "rows_per_day": rows},
    )
    assert r.status_code == 200, r.text
    return str(entry["code"])


def _sdk(live_server: str, **ctx: str) -> Client:
    # A system calling with client credentials names itself by its client id.
    return Client(live_server, client_id=CLIENT_ID, client_secret=PASSWORD, **(CTX | {"system": CLIENT_ID} | ctx))


@pytest.mark.parametrize("which", PROVIDERS)
def test_query_pages_filters_masks_and_signs(
    which: str, request: pytest.FixtureRequest, client: TestClient, live_server: str
) -> None:
    db: ProviderDb = request.getfixturevalue(which)
    key, name_item = db.key_item, ("姓名" if which == "pg_provider" else "法定代表人")
    code = _granted(client, db, [key, name_item])
    with _sdk(live_server) as dt:
        rows = list(dt.query(code, limit=250))
        assert len(rows) == len(db.rows)
        assert set(rows[0]) == {key, name_item}  # only granted items, whatever the table holds
        # Personal items are masked unless granted in clear.
        assert all("*" in r[name_item] for r in rows if r[name_item])
        first = dt.query_page(code, limit=10)
        assert len(first["rows"]) == 10 and first["next"] is not None and first["masked_items"]
        claims = dt.check_receipt()
        assert claims["entry"] == code and claims["grant_id"] and claims["context"]["case"] == CTX["case"]
        # The cursor is sealed: the key it holds may be granted only masked.
        assert all(r[key] not in first["next"] for r in first["rows"])
        with pytest.raises(DatatongError) as info:
            dt.query_page(code, after=first["rows"][-1][key], limit=10)
        assert info.value.status == 422 and info.value.code == "exchange.cursor_invalid"
        with pytest.raises(DatatongError) as info:
            dt.query_page(code, filters=[(name_item, "prefix", "张")])
        assert info.value.code == "exchange.filter_masked_item"
        # Resume after the first page = the rest, no overlap.
        rest = list(dt.query(code, after=first["next"], limit=500))
        assert len(rest) == len(db.rows) - 10
        some = sorted(r[key] for r in db.rows)[:3]
        got = dt.query_page(code, filters=[(key, "in", some)], limit=10)["rows"]
        assert len(got) == 3
        with pytest.raises(DatatongError) as info:
            dt.query_page(code, filters=[("婚姻状况" if which == "pg_provider" else "登记状态", "eq", "x")])
        assert info.value.status == 422 and info.value.code == "exchange.filter_item_not_granted"


@pytest.mark.parametrize("which", PROVIDERS)
def test_verify_answers_match_mismatch_not_found_never_values(
    which: str, request: pytest.FixtureRequest, client: TestClient, live_server: str
) -> None:
    db: ProviderDb = request.getfixturevalue(which)
    key = db.key_item
    other = "姓名" if which == "pg_provider" else "企业名称"
    code = _granted(client, db, [key, other])
    person = db.rows[7]
    with _sdk(live_server) as dt:
        results = dt.verify(
            code,
            [
                (person[key], {other: person[other]}),
                (person[key], {other: person[other] + "甲"}),
                ("110101190001010000", {other: "无此人"}),
            ],
        )
        assert [r["items"][other] for r in results] == ["match", "mismatch", "not_found"]
        assert [r["found"] for r in results] == [True, True, False]
        assert person[other] not in str(results)  # never the stored value
        assert dt.check_receipt()["entry"] == code
        with pytest.raises(DatatongError) as info:
            dt.verify(code, [(person[key], {"不存在的项": "x"})])
        assert info.value.status == 403 and info.value.code == "exchange.item_not_granted"


def test_refusals_reach_the_consumer_as_clear_errors(
    client: TestClient, live_server: str, settings: Settings, request: pytest.FixtureRequest
) -> None:
    db: ProviderDb = request.getfixturevalue("pg_provider")
    code = _granted(client, db, ["身份证号", "姓名"], rows=25)
    with _sdk(live_server) as dt:
        with pytest.raises(DatatongError) as info:
            dt.query_page(code, items=["身份证号", "婚姻状况"])
        assert info.value.code == "exchange.item_not_granted" and info.value.message
        with pytest.raises(DatatongError) as info:
            dt.query_page(code, limit=10)
            dt.query_page(code, limit=10)
            dt.query_page(code, limit=10)  # 30 > 25 rows a day
        assert info.value.status == 429 and info.value.code == "exchange.over_quota"
    with _sdk(live_server, purpose="work_reference") as dt, pytest.raises(DatatongError) as info:
        dt.query_page(code, limit=1)
    assert info.value.code == "exchange.purpose_mismatch"
    # Expired: the grant's window ended yesterday.
    with session_scope(settings.database_url) as s:
        s.execute(
            sa.text("UPDATE share_grant SET valid_to = :d, updated_at = :now"),
            {"d": date.today() - timedelta(days=1), "now": datetime.now(UTC)},
        )
    from datatong.sharing import authorize

    authorize.invalidate()
    with _sdk(live_server) as dt, pytest.raises(DatatongError) as info:
        dt.verify(code, [("110101199003071234", {"姓名": "张三"})])
    assert info.value.code == "exchange.expired"
    # No grant at all: 公安局's own officer is not a consumer of it; another department has none.
    entry_none = create_entry(client, "ga_officer", publish=True, name="另一资源", items=db.items)
    with _sdk(live_server) as dt, pytest.raises(DatatongError) as info:
        dt.query_page(entry_none["code"])
    assert info.value.code in ("exchange.no_grant", "exchange.no_source")
    # Missing request context → 422 naming the header.
    r = client.post(f"/api/v1/exchange/entries/{code}/query", json={}, headers=auth(client, "mz_officer"))
    assert r.status_code == 422 and "X-Datatong" in r.json()["error"]["message"]


def test_every_call_is_audited_with_its_context(
    client: TestClient, live_server: str, settings: Settings, request: pytest.FixtureRequest
) -> None:
    db: ProviderDb = request.getfixturevalue("pg_provider")
    code = _granted(client, db, ["身份证号", "姓名"])
    with _sdk(live_server) as dt:
        dt.query_page(code, limit=5)
        dt.verify(code, [(db.rows[0]["身份证号"], {"姓名": db.rows[0]["姓名"]})])
        with pytest.raises(DatatongError):
            dt.query_page(code, items=["户籍地址"])
    with session_scope(settings.database_url) as s:
        recs = list(
            s.scalars(
                sa.select(AuditRecord)
                .where(AuditRecord.action.like("exchange.%"), AuditRecord.action.not_like("exchange.source%"))
                .order_by(AuditRecord.seq)
            )
        )
        got = [(r.action, r.outcome, r.reason, r.rows) for r in recs]
        assert got[:2] == [("exchange.query", "allowed", None, 5), ("exchange.verify", "allowed", None, 1)]
        assert got[2][:3] == ("exchange.query", "refused", "item_not_granted")
        assert all(CTX["case"] in (r.detail or "") and CTX["operator"] in (r.detail or "") for r in recs)
        assert recs[0].resource == code and recs[0].grant_id is not None and recs[0].purpose == "verification"


def _verify_headers(client: TestClient) -> dict[str, str]:
    ctx = {"System": CLIENT_ID, "Operator": "%E7%8E%8B%E5%B0%8F%E6%98%8E", "Purpose": "verification", "Case": "C-1"}
    return auth(client, "client") | {f"X-Datatong-{k}": v for k, v in ctx.items()}


def test_one_subject_calls_answer_as_many_subject_calls(client: TestClient, request: pytest.FixtureRequest) -> None:
    """One subject per call (the usual verification, looked up through the source's
    batcher on either path) answers as the general lookup does, receipt included."""
    db: ProviderDb = request.getfixturevalue("pg_provider")
    code = _granted(client, db, ["身份证号", "姓名"])
    person, url = db.rows[11], f"/api/v1/exchange/entries/{code}/verify"
    cases = [
        (person["身份证号"], person["姓名"], "match", True),
        (person["身份证号"], person["姓名"] + "乙", "mismatch", True),
        ("110101190001010000", "无此人", "not_found", False),
    ]
    for key, name, answer, found in cases:
        body = {"subjects": [{"key": key, "claims": {"姓名": name}}]}
        r = client.post(url, json=body, headers=_verify_headers(client))
        assert r.status_code == 200, r.text
        assert r.json()["results"] == [{"key": key, "found": found, "items": {"姓名": answer}}]
        assert r.headers["X-Datatong-Receipt"]


def test_changes_of_the_caller_and_the_source_apply_at_once(
    client: TestClient, settings: Settings, request: pytest.FixtureRequest
) -> None:
    """The token check and the entry's source are cached per process (context.py,
    service.target); a change made in this process is honoured by the very next call."""
    from datatong.exchange.models import DataSource
    from datatong.orgs.models import ClientApp

    db: ProviderDb = request.getfixturevalue("pg_provider")
    code = _granted(client, db, ["身份证号", "姓名"])
    url = f"/api/v1/exchange/entries/{code}/verify"
    body = {"subjects": [{"key": db.rows[0]["身份证号"], "claims": {"姓名": db.rows[0]["姓名"]}}]}
    assert client.post(url, json=body, headers=_verify_headers(client)).status_code == 200  # both cached now
    with session_scope(settings.database_url) as s:
        s.scalars(sa.select(DataSource)).one().enabled = False
    r = client.post(url, json=body, headers=_verify_headers(client))
    assert r.status_code == 409 and r.json()["error"]["code"] == "exchange.no_source"
    with session_scope(settings.database_url) as s:
        s.scalars(sa.select(DataSource)).one().enabled = True
    assert client.post(url, json=body, headers=_verify_headers(client)).status_code == 200
    with session_scope(settings.database_url) as s:
        s.scalars(sa.select(ClientApp).where(ClientApp.client_id == CLIENT_ID)).one().is_active = False
    r = client.post(url, json=body, headers=_verify_headers(client))
    assert r.status_code == 401
    with session_scope(settings.database_url) as s:
        s.scalars(sa.select(ClientApp).where(ClientApp.client_id == CLIENT_ID)).one().is_active = True
    assert client.post(url, json=body, headers=_verify_headers(client)).status_code == 200


def test_a_verification_without_its_audit_record_sends_nothing(
    client: TestClient, settings: Settings, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fail closed on the real route: the record cannot be written → 503, no result, no
    receipt — on the in-memory path (a caller and entry just seen) and on the thread path."""
    from datatong.audit import writer as audit_writer
    from datatong.exchange import context, metrics, service

    db: ProviderDb = request.getfixturevalue("pg_provider")
    code = _granted(client, db, ["身份证号", "姓名"])
    url = f"/api/v1/exchange/entries/{code}/verify"
    body = {"subjects": [{"key": db.rows[3]["身份证号"], "claims": {"姓名": db.rows[3]["姓名"]}}]}
    headers = _verify_headers(client)
    # Warm until a call is answered from memory: the first (cold) call caches the caller
    # before it reads the entry and opens the provider, which on a slow machine can take
    # longer than the caller's cache lasts (1 s).
    for _ in range(5):
        memory = metrics.PATHS.labels("memory")._value.get()
        assert client.post(url, json=body, headers=headers).status_code == 200
        if metrics.PATHS.labels("memory")._value.get() > memory:
            break

    def broken(*_: object) -> int:
        raise OSError("disk full")  # the writer's commit fails, as on a full disk

    monkeypatch.setattr(audit_writer, "append_driver", broken)
    for path in ("memory", "thread"):
        before = metrics.PATHS.labels(path)._value.get()
        r = client.post(url, json=body, headers=headers)
        assert r.status_code == 503 and r.json()["error"]["code"] == "audit.unavailable"
        assert "results" not in r.text and "X-Datatong-Receipt".lower() not in {k.lower() for k in r.headers}
        assert metrics.PATHS.labels(path)._value.get() == before + 1  # the path this round meant to take
        service.forget_targets()  # caches cold: the next round takes the thread path
        context.forget_principals()
