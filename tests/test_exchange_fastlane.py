"""The verification's fast lane (exchange/fastlane.py, service.verify_in_memory) and its
batched lookups (exchange/batching.py): the same answers, headers, receipts, audit
records and errors as the router's thread path, on real PostgreSQL and MariaDB providers."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import PASSWORD
from exchange_fixtures import ProviderDb, mysql_provider, pg_provider  # noqa: F401 - fixtures
from fastapi.testclient import TestClient
from test_exchange_calls import _granted, _verify_headers

from datatong.audit.models import AuditRecord
from datatong.db import session_scope
from datatong.exchange import batching, context, metrics, receipts, service
from datatong.exchange.readers import SqlReader
from datatong.settings import Settings

PROVIDERS = ["pg_provider", "mysql_provider"]


def _count(path: str) -> float:
    return float(metrics.child(metrics.PATHS, path)._value.get())


def _cold() -> None:
    """Forget the cached callers and targets: the next call takes the thread path."""
    service.forget_targets()
    context.forget_principals()


def _cases(db: ProviderDb) -> list[dict[str, Any]]:
    a, b = db.rows[5], db.rows[6]
    key, name = db.key_item, ("姓名" if "姓名" in db.columns else "企业名称")
    return [
        {"subjects": [{"key": a[key], "claims": {name: a[name]}}]},
        {"subjects": [{"key": a[key], "claims": {name: a[name] + "乙"}}]},
        {"subjects": [{"key": "NO-SUCH-KEY-000000", "claims": {name: "无"}}]},
        {"subjects": [{"key": a[key], "claims": {name: a[name]}}, {"key": b[key], "claims": {name: "错"}}]},
    ]


@pytest.mark.parametrize("which", PROVIDERS)
def test_the_fast_lane_answers_as_the_router_does(
    client: TestClient, settings: Settings, request: pytest.FixtureRequest, which: str
) -> None:
    db: ProviderDb = request.getfixturevalue(which)
    name = "姓名" if "姓名" in db.columns else "企业名称"
    code = _granted(client, db, [db.key_item, name])
    url, headers = f"/api/v1/exchange/entries/{code}/verify", _verify_headers(client)
    keys = client.get("/.well-known/datatong-keys").json()
    for _ in range(2):  # caches warm (the first call also connects to the provider, which may take a second)
        assert client.post(url, json=_cases(db)[0], headers=headers).status_code == 200
    from_memory = 0
    for body in _cases(db):
        memory, thread = _count("memory"), _count("thread")
        fast = client.post(url, json=body, headers=headers)
        from_memory += int(_count("memory") - memory)
        _cold()
        thread = _count("thread")
        slow = client.post(url, json=body, headers=headers)
        assert _count("thread") == thread + 1  # cold caches: always the thread path
        assert fast.status_code == slow.status_code == 200
        assert fast.json() == slow.json()
        for r in (fast, slow):
            receipts.verify_receipt(r.headers["X-Datatong-Receipt"], r.content, keys)
            # The middlewares outside the fast lane still apply.
            assert r.headers["X-Request-ID"] and r.headers["X-Content-Type-Options"] == "nosniff"
            assert r.headers["Content-Security-Policy"]
    # From memory unless a cache went stale meanwhile (a token checked over a second ago,
    # on a slow machine): most of them, always.
    assert from_memory >= len(_cases(db)) - 1
    with session_scope(settings.database_url) as s:
        n = s.scalar(sa.select(sa.func.count()).where(AuditRecord.action == "exchange.verify"))
    assert n == 2 + 2 * len(_cases(db))  # every answer, either path, has its record
    exposition = metrics.exposition().decode()
    assert 'route="/api/v1/exchange/entries/{entry_code}/verify",status="200"' in exposition


def test_what_the_fast_lane_cannot_answer_goes_to_the_router(
    client: TestClient, settings: Settings, request: pytest.FixtureRequest
) -> None:
    """With every cache warm: a body the model refuses, a missing context header, an item
    not granted, a cookie session — each answered by the router with its usual error."""
    db: ProviderDb = request.getfixturevalue("pg_provider")
    code = _granted(client, db, ["身份证号", "姓名"])
    url, headers = f"/api/v1/exchange/entries/{code}/verify", _verify_headers(client)
    good = _cases(db)[0]
    assert client.post(url, json=good, headers=headers).status_code == 200
    memory = _count("memory")

    r = client.post(url, json={"subjects": []}, headers=headers)
    assert r.status_code == 422 and r.json()["error"]["field"]
    r = client.post(url, content=b"{not json", headers=headers | {"Content-Type": "application/json"})
    assert r.status_code == 422
    r = client.post(url, json=good, headers={k: v for k, v in headers.items() if k != "X-Datatong-Case"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "exchange.context_missing"
    bad = {"subjects": [{"key": db.rows[1]["身份证号"], "claims": {"户籍地址": "北京"}}]}
    r = client.post(url, json=bad, headers=headers)
    assert r.status_code == 403 and r.json()["error"]["code"] == "exchange.item_not_granted"
    with session_scope(settings.database_url) as s:
        refused = s.scalars(sa.select(AuditRecord).where(AuditRecord.outcome == "refused")).all()
    assert any(a.action == "exchange.verify" and a.reason == "item_not_granted" for a in refused)
    browser = TestClient(client.app)
    browser.post("/login", data={"username": "mz_officer", "password": PASSWORD})
    r = browser.post(url, json=good, headers={k: v for k, v in headers.items() if k != "Authorization"})
    assert r.status_code in (401, 403) and r.json()["error"]["code"]
    assert _count("memory") == memory  # none of these was answered from memory


@pytest.mark.parametrize("which", PROVIDERS)
def test_batched_lookups_give_each_caller_its_own_rows(request: pytest.FixtureRequest, which: str) -> None:
    """Fifty concurrent lookups share a few queries through the driver; each caller gets
    exactly the rows of its own keys, as the reader's own lookup gives them — also for an
    item of another type (a date: through the driver where it hands dates over as
    SQLAlchemy would, else through the reader's lookup)."""
    db: ProviderDb = request.getfixturevalue(which)
    reader = SqlReader(db.url, db.table, db.key_column, db.columns)
    name = "姓名" if "姓名" in db.columns else "企业名称"
    other = "出生日期" if "出生日期" in db.columns else None
    batcher = batching.LookupBatcher(reader)
    queries = 0
    original = batcher._query

    def counted(*args: Any) -> Any:
        nonlocal queries
        queries += 1
        return original(*args)

    batcher._query = counted  # type: ignore[method-assign]
    keys = [[db.rows[i][db.key_item]] for i in range(50)]
    keys[7] = [keys[7][0], "NO-SUCH-KEY"]

    async def run(items: list[str]) -> list[Any]:
        return list(await asyncio.gather(*[batcher.submit(db.key_item, k, items) for k in keys]))

    try:
        got = asyncio.run(run([name]))
        assert got == [reader.lookup(db.key_item, k, [name]) for k in keys]
        assert all(set(found) <= set(k) for found, k in zip(got, keys, strict=True))
        assert queries < len(keys)  # batched
        assert batcher._raw is not None and batcher._raw.accepts(db.key_item, [name])
        if other is not None:
            assert asyncio.run(run([other])) == [reader.lookup(db.key_item, k, [other]) for k in keys]
        # Callers in threads (the route's thread path) wait on the same batches.
        with ThreadPoolExecutor(8) as pool:
            threaded = list(pool.map(lambda k: batcher.lookup(db.key_item, k, [name]), keys))
        assert threaded == [reader.lookup(db.key_item, k, [name]) for k in keys]
    finally:
        reader.dispose()
