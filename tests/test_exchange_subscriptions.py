"""Subscriptions (订阅) end to end, on both buses (the database outbox and NATS JetStream):
a consumer with a grant subscribes to an entry's changes; rows added in the provider's
own database reach its webhook (HMAC-signed, masked, audited) or its feed (offsets,
acknowledgement by ``after``); failing webhooks retry, dead-letter and replay; refusals
are clear; and a worker killed with SIGKILL while delivering 10,000 changes, then
restarted, leaves the consumer with every change exactly once after dropping repeats."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import CLIENT_ID, auth, create_entry
from exchange_fixtures import ProviderDb, _insert, enterprise_rows, mysql_provider, pg_provider, population_rows  # noqa: F401
from fastapi.testclient import TestClient

from datatong.app import create_app
from datatong.audit.models import AuditRecord
from datatong.db import session_scope
from datatong.exchange import bus as bus_mod
from datatong.exchange import delivery
from datatong.exchange.models import Subscription
from datatong.settings import Settings
from datatong.sharing.jobs import sign

NATS_URL = os.environ.get("DATATONG_TEST_NATS_URL", "nats://127.0.0.1:4222")
SH = "/api/v1/sharing"
XS = "/api/v1/exchange/subscriptions"
CTX = {
    "X-Datatong-System": CLIENT_ID,
    "X-Datatong-Operator": "%E7%8E%8B%E5%B0%8F%E6%98%8E",  # 王小明, percent-encoded
    "X-Datatong-Purpose": "verification",
    "X-Datatong-Case": "MZ-2026-000777",
}
ITEMS = [
    {"name": "身份证号", "code": "SFZH", "data_type": "C", "length": 18, "sensitivity": "personal"},
    {"name": "姓名", "code": "XM", "data_type": "C", "length": 50, "sensitivity": "personal"},
    {"name": "婚姻状况", "code": "HYZK", "data_type": "C", "length": 10, "sensitivity": "personal"},
]
COLUMNS = {"身份证号": "sfzh", "姓名": "xm", "婚姻状况": "hyzk"}


def _nats_up() -> bool:
    host, port = NATS_URL.removeprefix("nats://").split(":")
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.fixture(params=["outbox", "nats"])
def bus_url(request: pytest.FixtureRequest) -> str:
    if request.param == "nats":
        if not _nats_up():
            pytest.skip(f"NATS JetStream is not reachable at {NATS_URL}")
        return NATS_URL
    return ""


@pytest.fixture
def xsettings(settings: Settings, bus_url: str) -> Settings:
    return replace(settings, bus_url=bus_url, subscription_batch=100, subscription_retry_seconds=0.0)


@pytest.fixture
def xclient(xsettings: Settings, world: dict[str, Any]) -> TestClient:
    return TestClient(create_app(xsettings, migrate=False))


# ---------------------------------------------------------------- the provider and the consumer


class Provider:
    """市公安局's own system: a SQLite database with a person table (increasing id)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with sqlite3.connect(path) as db:
            db.execute(
                "CREATE TABLE person (id INTEGER PRIMARY KEY AUTOINCREMENT, sfzh TEXT UNIQUE, xm TEXT, hyzk TEXT)"
            )
        self.n = 0

    @property
    def url(self) -> str:
        return f"sqlite:///{self.path}"

    def add(self, count: int) -> list[str]:
        rows = [(f"11010119900101{self.n + i:04d}", f"欧阳{self.n + i}", "已婚") for i in range(count)]
        self.n += count
        with sqlite3.connect(self.path) as db:
            db.executemany("INSERT INTO person (sfzh, xm, hyzk) VALUES (?, ?, ?)", rows)
        return [r[0] for r in rows]


@dataclass
class Receiver:
    """The consumer's webhook endpoint: checks every signature, records every change."""

    secret: str = ""
    fail: bool = False
    delay: float = 0.0
    posts: int = 0
    bad_signatures: int = 0
    changes: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def unique(self) -> dict[str, dict[str, Any]]:
        with self.lock:
            return {c["id"]: c for c in self.changes}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if rec.delay:
                time.sleep(rec.delay)
            with rec.lock:
                rec.posts += 1
                ok = (
                    sign(rec.secret, self.headers["X-Datatong-Timestamp"], body) == self.headers["X-Datatong-Signature"]
                )
                if not ok:
                    rec.bad_signatures += 1
                if ok and not rec.fail:
                    rec.changes.extend(json.loads(body)["changes"])
            self.send_response(500 if rec.fail or not ok else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    rec.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    yield rec
    server.shutdown()


def _granted_entry(client: TestClient, provider: Provider, *, clear: list[str]) -> str:
    """A published entry on the provider with change tracking, granted to 民政局's system."""
    entry = create_entry(client, "ga_officer", publish=True, name="人口变更信息", items=ITEMS)
    source = {
        "entry_id": entry["id"],
        "kind": "sql",
        "url": provider.url,
        "table_name": "person",
        "key_item": "身份证号",
        "fields": COLUMNS,
        "change_column": "id",
        "change_kind": "increasing_id",
    }
    r = client.post("/api/v1/exchange/sources", json=source, headers=auth(client, "admin"))
    assert r.status_code == 201, r.text
    mz, ga = auth(client, "mz_officer"), auth(client, "ga_officer")
    today = date.today()
    app = client.post(
        f"{SH}/applications",
        headers=mz,
        json={
            "entry_id": entry["id"],
            "purpose_kind": "verification",
            "purpose": "低保对象婚姻状况变化跟踪",
            "legal_basis": "《社会救助暂行办法》",
            "items": list(COLUMNS),
            "period_start": today.isoformat(),
            "period_end": (today + timedelta(days=365)).isoformat(),
            "rows_per_day": 1_000_000,
            "calls_per_minute": 100_000,  # a pushed batch counts as a call
            "client_id": CLIENT_ID,
        },
    ).json()
    client.post(f"{SH}/applications/{app['id']}/submit", json={"accept_commitment": True}, headers=mz)
    r = client.post(
        f"{SH}/applications/{app['id']}/decide",
        headers=ga,
        json={"decision": "approve", "clear_items": clear, "rows_per_day": 1_000_000, "calls_per_minute": 100_000},
    )
    assert r.status_code == 200, r.text
    return str(entry["code"])


def _subscribe(client: TestClient, code: str, **body: Any) -> dict[str, Any]:
    r = client.post(XS, json={"entry": code, **body}, headers=auth(client, "client") | CTX)
    assert r.status_code == 201, r.text
    return dict(r.json())


def _drain(settings: Settings, rounds: int = 20) -> None:
    """Run worker rounds until one finds nothing to do."""
    bus = bus_mod.bus_for(settings)
    for _ in range(rounds):
        if not any(delivery.run_once(settings, bus).values()):
            return


def _rounds(settings: Settings, n: int) -> None:
    bus = bus_mod.bus_for(settings)
    for _ in range(n):
        delivery.run_once(settings, bus)


def _prime(settings: Settings) -> None:
    """The first round after subscribing fixes where capture starts (now)."""
    delivery.run_once(settings, bus_mod.bus_for(settings))


# ---------------------------------------------------------------- behaviour


def test_webhook_gets_new_rows_masked_signed_and_audited(
    xclient: TestClient, xsettings: Settings, receiver: Receiver, tmp_path: Path
) -> None:
    provider = Provider(tmp_path / "ga.db")
    provider.add(3)  # history before subscribing is not sent
    code = _granted_entry(xclient, provider, clear=["身份证号", "婚姻状况"])
    sub = _subscribe(xclient, code, mode="webhook", url=receiver.url)
    receiver.secret = sub["secret"]
    assert sub["secret"].startswith("whsec_") and sub["status"] == "active"
    _prime(xsettings)
    keys = provider.add(5)
    _drain(xsettings)

    got = receiver.unique()
    assert receiver.bad_signatures == 0
    assert sorted(c["row"]["身份证号"] for c in got.values()) == keys
    assert all(c["row"]["姓名"].startswith("欧阳") and "*" in c["row"]["姓名"] for c in got.values())  # 复姓 kept
    assert all(c["row"]["婚姻状况"] == "已婚" for c in got.values())
    offsets = [c["offset"] for c in receiver.changes]
    assert offsets == sorted(offsets)
    after = xclient.get(f"{XS}/{sub['id']}", headers=auth(xclient, "mz_officer")).json()
    assert after["delivered"] == 5 and after["position"] == offsets[-1] and after["secret"] is None
    with session_scope(xsettings.database_url) as s:
        rec = s.scalars(sa.select(AuditRecord).where(AuditRecord.action == "exchange.subscription.deliver")).all()
        assert sum(r.rows or 0 for r in rec) == 5
        assert all(json.loads(r.detail or "{}")["context"]["case"] == "MZ-2026-000777" for r in rec)
        assert all(r.resource == code and r.grant_id for r in rec)

    # Stored secrets never come back; nothing more to send.
    _drain(xsettings)
    assert len(receiver.changes) == 5


def test_feed_pulls_by_offset_and_acknowledges(xclient: TestClient, xsettings: Settings, tmp_path: Path) -> None:
    provider = Provider(tmp_path / "ga.db")
    code = _granted_entry(xclient, provider, clear=["身份证号", "姓名", "婚姻状况"])
    sub = _subscribe(xclient, code, mode="feed", items=["身份证号", "婚姻状况"])
    assert sub["secret"] is None and sub["items"] == ["身份证号", "婚姻状况"]
    _prime(xsettings)
    keys = provider.add(7)
    _drain(xsettings)
    h = auth(xclient, "client") | CTX
    r = xclient.get(f"{XS}/{sub['id']}/changes", params={"limit": 4}, headers=h)
    assert r.status_code == 200, r.text
    assert r.headers["X-Datatong-Receipt"]
    first = r.json()
    assert [c["row"]["身份证号"] for c in first["changes"]] == keys[:4]
    assert all(set(c["row"]) == {"身份证号", "婚姻状况"} for c in first["changes"])  # only the items subscribed
    # Not acknowledged yet: asking without ``after`` gives the same changes again.
    again = xclient.get(f"{XS}/{sub['id']}/changes", params={"limit": 4}, headers=h).json()
    assert [c["id"] for c in again["changes"]] == [c["id"] for c in first["changes"]]
    rest = xclient.get(f"{XS}/{sub['id']}/changes", params={"after": first["next"]}, headers=h).json()
    assert [c["row"]["身份证号"] for c in rest["changes"]] == keys[4:]
    done = xclient.get(f"{XS}/{sub['id']}/changes", params={"after": rest["next"]}, headers=h).json()
    assert done["changes"] == [] and done["next"] == rest["next"]
    assert xclient.get(f"{XS}/{sub['id']}", headers=h).json()["position"] == rest["next"]


def test_refusals_are_clear(xclient: TestClient, xsettings: Settings, receiver: Receiver, tmp_path: Path) -> None:
    provider = Provider(tmp_path / "ga.db")
    code = _granted_entry(xclient, provider, clear=["身份证号"])
    h = auth(xclient, "client") | CTX
    # Another department without a grant.
    r = xclient.post(XS, json={"entry": code, "mode": "feed"}, headers=auth(xclient, "ga_admin") | CTX)
    assert r.status_code == 403 and r.json()["error"]["code"] == "exchange.no_grant", r.text
    # Missing request context, a bad mode, a bad webhook URL, an unknown entry.
    r = xclient.post(XS, json={"entry": code, "mode": "feed"}, headers=auth(xclient, "client"))
    assert r.status_code == 422 and r.json()["error"]["code"] == "exchange.context_missing"
    r = xclient.post(XS, json={"entry": code, "mode": "email"}, headers=h)
    assert r.status_code == 422 and r.json()["error"]["code"] == "exchange.mode_invalid"
    r = xclient.post(XS, json={"entry": code, "mode": "webhook", "url": "ftp://x"}, headers=h)
    assert r.status_code == 422 and r.json()["error"]["code"] == "sharing.webhook_url_invalid"
    r = xclient.post(XS, json={"entry": "NOPE", "mode": "feed"}, headers=h)
    assert r.status_code == 404
    # An item outside the grant.
    r = xclient.post(XS, json={"entry": code, "mode": "feed", "items": ["不存在"]}, headers=h)
    assert r.status_code == 403 and r.json()["error"]["code"] == "exchange.item_not_granted", r.text

    sub = _subscribe(xclient, code, mode="webhook", url=receiver.url)
    receiver.secret = sub["secret"]
    # Other departments do not even see it.
    assert xclient.get(f"{XS}/{sub['id']}", headers=auth(xclient, "ga_officer")).status_code == 404
    assert xclient.get(XS, headers=auth(xclient, "ga_officer")).json() == []
    assert [s["id"] for s in xclient.get(XS, headers=auth(xclient, "admin")).json()] == [sub["id"]]
    r = xclient.post(f"{XS}/{sub['id']}/replay", json={"offset": 10**9}, headers=h)
    assert r.status_code == 422 and r.json()["error"]["code"] == "exchange.offset_invalid"

    # Revoking the grant stops delivery and the feed.
    _prime(xsettings)
    grant_id = xclient.get(f"{SH}/grants", headers=auth(xclient, "mz_officer")).json()[0]["id"]
    r = xclient.post(f"{SH}/grants/{grant_id}/revoke", json={"reason": "停止共享"}, headers=auth(xclient, "ga_officer"))
    assert r.status_code == 200, r.text
    provider.add(2)
    _drain(xsettings)
    assert receiver.changes == []
    state = xclient.get(f"{XS}/{sub['id']}", headers=h).json()
    assert state["last_error"] == "exchange.revoked" and state["delivered"] == 0
    r = xclient.get(f"{XS}/{sub['id']}/changes", headers=h)
    assert r.status_code == 403 and r.json()["error"]["code"] == "exchange.revoked"

    # Cancelled: nothing more, and it says so.
    assert xclient.delete(f"{XS}/{sub['id']}", headers=h).json()["status"] == "cancelled"
    r = xclient.post(f"{XS}/{sub['id']}/pause", headers=h)
    assert r.status_code == 409 and r.json()["error"]["code"] == "exchange.subscription_cancelled"


def test_entry_without_change_tracking_cannot_be_subscribed(xclient: TestClient, tmp_path: Path) -> None:
    provider = Provider(tmp_path / "ga.db")
    code = _granted_entry(xclient, provider, clear=["身份证号"])
    source = xclient.get("/api/v1/exchange/sources", headers=auth(xclient, "admin")).json()[0]
    r = xclient.patch(
        f"/api/v1/exchange/sources/{source['id']}",
        json={"change_column": None, "change_kind": None},
        headers=auth(xclient, "admin"),
    )
    assert r.status_code == 200, r.text
    r = xclient.post(XS, json={"entry": code, "mode": "feed"}, headers=auth(xclient, "client") | CTX)
    assert r.status_code == 409 and r.json()["error"]["code"] == "exchange.no_change_tracking"


def test_failing_webhook_retries_then_dead_letters_and_replays(
    xclient: TestClient, xsettings: Settings, receiver: Receiver, tmp_path: Path
) -> None:
    settings = replace(xsettings, subscription_max_attempts=3)
    provider = Provider(tmp_path / "ga.db")
    code = _granted_entry(xclient, provider, clear=["身份证号", "姓名", "婚姻状况"])
    sub = _subscribe(xclient, code, mode="webhook", url=receiver.url)
    receiver.secret, receiver.fail = sub["secret"], True
    _prime(settings)
    keys = provider.add(4)
    _rounds(settings, 6)  # retries are due at once (retry delay 0 in these tests)
    h = auth(xclient, "client") | CTX
    assert receiver.posts == 3  # three tries, then set aside
    dead = xclient.get(f"{XS}/{sub['id']}/dead-letters", headers=h).json()
    assert len(dead) == 1 and dead[0]["changes"] == 4 and dead[0]["attempts"] == 3
    assert dead[0]["error"] == "HTTP 500"
    # Later changes still flow once the receiver is back …
    receiver.fail = False
    more = provider.add(2)
    _drain(settings)
    assert [c["row"]["身份证号"] for c in receiver.changes] == more
    # … and the consumer replays the dead batch from its first offset.
    r = xclient.post(f"{XS}/{sub['id']}/replay", json={"offset": dead[0]["first_offset"] - 1}, headers=h)
    assert r.status_code == 200, r.text
    _drain(settings)
    assert sorted({c["row"]["身份证号"] for c in receiver.changes}) == sorted(keys + more)


# ---------------------------------------------------------------- crash: SIGKILL the worker mid-delivery


def _worker(settings: Settings) -> subprocess.Popen[bytes]:
    env = os.environ | {
        "DATATONG_DATABASE_URL": settings.database_url,
        "DATATONG_VAR_DIR": str(settings.var_dir),
        "DATATONG_SECRET_KEY": settings.secret_key,
        "DATATONG_BUS_URL": settings.bus_url,
        "DATATONG_SUBSCRIPTION_BATCH": "100",
        "DATATONG_CALENDAR_FALLBACK": "weekends",
        "DATATONG_OUTBOUND_ALLOW": ",".join(settings.outbound_allow),
    }
    cmd = [sys.executable, "-m", "datatong.cli", "exchange", "worker", "--idle", "0.05"]
    log = open(settings.var_dir / "worker.log", "ab")  # noqa: SIM115 - the child writes it
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=log)


def _position(settings: Settings, subscription_id: int) -> int | None:
    with session_scope(settings.database_url) as s:
        row = s.get(Subscription, subscription_id)
        return row.position if row else None


def _wait(check: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.timeout(300)
def test_sigkill_mid_delivery_loses_nothing_and_duplicates_are_droppable(
    xclient: TestClient, xsettings: Settings, receiver: Receiver, tmp_path: Path
) -> None:
    provider = Provider(tmp_path / "ga.db")
    code = _granted_entry(xclient, provider, clear=["身份证号", "姓名", "婚姻状况"])
    sub = _subscribe(xclient, code, mode="webhook", url=receiver.url)
    receiver.secret, receiver.delay = sub["secret"], 0.01
    _prime(xsettings)
    keys = provider.add(10_000)

    proc = _worker(xsettings)
    try:
        assert _wait(lambda: len(receiver.unique()) >= 2_000, 120), "the worker delivered nothing"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        at_kill = len(receiver.unique())
        assert at_kill < 10_000, "killed too late to test anything"
        proc = _worker(xsettings)
        assert _wait(lambda: len(receiver.unique()) >= 10_000, 240), f"stuck at {len(receiver.unique())}"
        # The last batch is received before the worker saves its position: wait for that too.
        last = max(c["offset"] for c in receiver.unique().values())
        assert _wait(lambda: _position(xsettings, sub["id"]) == last, 30), "the position was not saved"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    got = receiver.unique()
    assert receiver.bad_signatures == 0
    assert sorted(c["row"]["身份证号"] for c in got.values()) == sorted(keys)  # every change exactly once
    assert len(receiver.changes) >= 10_000  # repeats are allowed (at least once) …
    assert len({c["offset"] for c in receiver.changes}) == 10_000  # … and carry the same id and offset
    with session_scope(xsettings.database_url) as s:
        row = s.get(Subscription, sub["id"])
        assert row is not None and row.position == max(c["offset"] for c in got.values())


# ---------------------------------------------------------------- the SDK, on PostgreSQL and MariaDB providers


@pytest.mark.parametrize("which", ["pg_provider", "mysql_provider"])
def test_sdk_subscribes_and_pulls_changes_of_real_provider_databases(
    which: str, request: pytest.FixtureRequest, client: TestClient, settings: Settings, live_server: str
) -> None:
    from test_exchange_calls import _granted, _sdk

    db: ProviderDb = request.getfixturevalue(which)
    names = [i["name"] for i in db.items]
    code = _granted(client, db, names, clear=names)
    source = client.get("/api/v1/exchange/sources", headers=auth(client, "ga_officer")).json()[0]
    r = client.patch(
        f"/api/v1/exchange/sources/{source['id']}",
        json={"change_column": db.change_column, "change_kind": "updated_at"},
        headers=auth(client, "ga_officer"),
    )
    assert r.status_code == 200, r.text
    with _sdk(live_server) as dt:
        sub = dt.subscribe(code, mode="feed")
        assert [s["id"] for s in dt.subscriptions()] == [sub["id"]]
        _prime(settings)
        fresh = (population_rows if which == "pg_provider" else enterprise_rows)(4, seed=424242)
        later = max(row["更新时间"] for row in db.rows) + timedelta(days=1)
        for i, row in enumerate(fresh):
            row["更新时间"] = later + timedelta(minutes=i)
        admin = sa.create_engine(db.admin_url)
        try:
            _insert(admin, db.table, db.columns, fresh)
            _drain(settings)
            got = list(dt.changes(sub["id"], limit=3))
            assert [c["row"][db.key_item] for c in got] == [row[db.key_item] for row in fresh]
            assert dt.check_receipt()["grant_id"]
            assert list(dt.changes(sub["id"])) == []  # acknowledged: nothing left
        finally:
            keys = [row[db.key_item] for row in fresh]
            with admin.begin() as conn:
                conn.execute(
                    sa.text(f"DELETE FROM {db.table} WHERE {db.key_column} IN :keys").bindparams(
                        sa.bindparam("keys", expanding=True)
                    ),
                    {"keys": keys},
                )
            admin.dispose()


def test_outbox_keeps_changes_for_the_retention_window(client: TestClient, settings: Settings, tmp_path: Path) -> None:
    from datatong.db import utcnow

    provider = Provider(tmp_path / "ga.db")
    code = _granted_entry(client, provider, clear=["身份证号"])
    _subscribe(client, code, mode="feed")
    _prime(settings)
    provider.add(3)
    _drain(settings)
    assert delivery.prune_outbox(settings.database_url, 30) == 0
    assert delivery.prune_outbox(settings.database_url, 30, now=utcnow() + timedelta(days=31)) == 3


def test_webhooks_may_not_point_at_the_platform_or_metadata(
    client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    provider = Provider(tmp_path / "ga.db")
    code = _granted_entry(client, provider, clear=["身份证号"])
    h = auth(client, "client") | CTX
    for url in ("http://169.254.169.254/latest/meta-data", "http://[::ffff:169.254.169.254]/x", "http://0.0.0.0:80/"):
        r = client.post(XS, json={"entry": code, "mode": "webhook", "url": url}, headers=h)
        assert r.status_code == 422 and r.json()["error"]["code"] == "exchange.url_forbidden", (url, r.text)
    # Loopback only where the operator allowed it (the suite allows 127.0.0.0/8).
    strict = TestClient(create_app(replace(settings, outbound_allow=()), migrate=False))
    r = strict.post(XS, json={"entry": code, "mode": "webhook", "url": "http://127.0.0.1:9/hook"}, headers=h)
    assert r.status_code == 422 and r.json()["error"]["code"] == "exchange.url_forbidden"
    assert "DATATONG_OUTBOUND_ALLOW" in r.json()["error"]["message"]
    r = client.post(XS, json={"entry": code, "mode": "webhook", "url": "http://127.0.0.1:9/hook"}, headers=h)
    assert r.status_code == 201
