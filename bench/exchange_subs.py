"""Subscription benchmark: changes per second delivered end to end, on each bus.

For each bus (the database outbox, then NATS JetStream when it answers at
``nats_url``): a provider table (a SQLite file with an increasing id) behind a
published entry, 民政局's grant, a webhook subscription of its client app to a receiver
in this process (which checks nothing but counts change ids), and ``datatong exchange
worker`` in its own process. Then ``changes`` rows are inserted in one transaction and
the clock runs until the receiver holds every change id: capture (provider → bus),
read back, ``authorize``, masking, the audit record, the HMAC-signed POST and the saved
position — everything a real delivery does. ``subscription_changes_per_s_<bus>`` =
changes ÷ that time; ``subscription_repeats_<bus>`` counts changes received twice
(none expected without a crash).

Setup reuses the verification benchmark's seeding (bench/exchange_verify.py): per-run
suffixed departments, users and client app in the platform database of ``settings``.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from rich.console import Console

from bench.exchange_verify import _ok, _seed_platform, granted_exchange
from datatong.db import session_scope
from datatong.exchange.models import CaptureState
from datatong.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = {"身份证号": "sfzh", "姓名": "xm", "婚姻状况": "hyzk"}
CONTEXT = {
    "X-Datatong-System": "",  # the client id, filled in
    "X-Datatong-Operator": "bench",
    "X-Datatong-Purpose": "verification",
    "X-Datatong-Case": "BENCH-1",
}


class _Receiver:
    def __init__(self) -> None:
        self.ids: set[str] = set()
        self.received = 0
        self.lock = threading.Lock()
        rec = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a real receiver would

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with rec.lock:
                    for change in body["changes"]:
                        rec.ids.add(change["id"])
                    rec.received += len(body["changes"])
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def count(self) -> int:
        with self.lock:
            return len(self.ids)


def _nats_up(url: str) -> bool:
    host, _, port = url.removeprefix("nats://").partition(":")
    try:
        socket.create_connection((host, int(port or 4222)), timeout=1).close()
    except OSError:
        return False
    return True


def _provider(path: Path) -> str:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE person (id INTEGER PRIMARY KEY AUTOINCREMENT, sfzh TEXT UNIQUE, xm TEXT, hyzk TEXT)")
    return f"sqlite:///{path}"


def _insert(path: Path, n: int) -> None:
    rows = [(f"{110101199001010000 + i:018d}", f"姓名{i}", "已婚") for i in range(n)]
    with sqlite3.connect(path) as db:
        db.executemany("INSERT INTO person (sfzh, xm, hyzk) VALUES (?, ?, ?)", rows)


def _setup(settings: Settings, suffix: str, provider_url: str, hook: str) -> tuple[int, int]:
    """Entry, source with change tracking, grant (bench/exchange_verify.py) and a webhook
    subscription of 民政局's client app, through the API in process; returns the source
    id and the subscription id."""
    from fastapi.testclient import TestClient

    from datatong.app import create_app

    source = {
        "kind": "sql", "url": provider_url, "table_name": "person", "key_item": "身份证号", "fields": COLUMNS,
        "change_column": "id", "change_kind": "increasing_id",
    }  # fmt: skip
    with TestClient(create_app(settings)) as http:
        entry, source_id, token, client_id = granted_exchange(
            http, suffix, source, list(COLUMNS), "婚姻状况变化跟踪", clear=["身份证号"]
        )
        headers = {"Authorization": "Bearer " + token, **CONTEXT, "X-Datatong-System": client_id}
        body = {"entry": entry["code"], "mode": "webhook", "url": hook}
        sub = _ok(http.post("/api/v1/exchange/subscriptions", headers=headers, json=body))
        return source_id, int(sub["id"])


def _worker(settings: Settings, batch: int) -> subprocess.Popen[bytes]:
    env = os.environ | {
        "DATATONG_DATABASE_URL": settings.database_url,
        "DATATONG_VAR_DIR": str(settings.var_dir),
        "DATATONG_SECRET_KEY": settings.secret_key,
        "DATATONG_BUS_URL": settings.bus_url,
        "DATATONG_SUBSCRIPTION_BATCH": str(batch),
        "DATATONG_CALENDAR_FALLBACK": "weekends",
        "DATATONG_OUTBOUND_ALLOW": "127.0.0.1",  # the receiver of this benchmark
        "PYTHONPATH": str(ROOT),
    }
    cmd = [sys.executable, "-m", "datatong.cli", "exchange", "worker", "--idle", "0.02"]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)


def _wait(check: Any, timeout: float, step: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(step)
    return False


def _captured(settings: Settings, source_id: int) -> bool:
    with session_scope(settings.database_url) as s:
        return s.get(CaptureState, source_id) is not None


def one_bus(settings: Settings, changes: int, batch: int, console: Console) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="datatong-bench-subs-"))
    suffix = uuid.uuid4().hex[:6].upper()
    _seed_platform(settings, suffix)
    receiver = _Receiver()
    provider = tmp / "provider.db"
    source_id, _sub = _setup(settings, suffix, _provider(provider), receiver.url)
    worker = _worker(settings, batch)
    try:
        if not _wait(lambda: _captured(settings, source_id), 60, 0.1):
            raise RuntimeError("the subscription worker did not start capturing within 60 s")
        console.print(f"[{settings.bus_url or 'outbox'}] {changes:,} changes …")
        started = time.perf_counter()
        _insert(provider, changes)
        if not _wait(lambda: receiver.count() >= changes, 600):
            raise RuntimeError(f"only {receiver.count()} of {changes} changes arrived within 600 s")
        seconds = time.perf_counter() - started
    finally:
        worker.terminate()
        worker.wait(10)
        receiver.server.shutdown()
    return {
        "changes_per_s": round(changes / seconds, 1),
        "seconds": round(seconds, 2),
        "repeats": receiver.received - changes,
    }


def run(
    settings: Settings, changes: int, console: Console, *, nats_url: str = "nats://127.0.0.1:4222", batch: int = 500
) -> dict[str, Any]:
    from datatong.app import prepare_database

    prepare_database(settings)
    out: dict[str, Any] = {"subscription_changes": changes, "subscription_batch": batch}
    settings = replace(settings, outbound_allow=("127.0.0.1",))  # the receiver runs here
    for name, url in (("outbox", ""), ("nats", nats_url)):
        if name == "nats" and not _nats_up(nats_url):
            out["subscription_changes_per_s_nats"] = None
            out["subscription_nats_skipped"] = f"NATS not reachable at {nats_url}"
            continue
        got = one_bus(replace(settings, bus_url=url), changes, batch, console)
        out[f"subscription_changes_per_s_{name}"] = got["changes_per_s"]
        out[f"subscription_seconds_{name}"] = got["seconds"]
        out[f"subscription_repeats_{name}"] = got["repeats"]
    return out


def main() -> None:  # python -m bench.exchange_subs [changes] [database_url]
    from bench.catalog import fresh_database

    changes = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    with fresh_database(sys.argv[2] if len(sys.argv) > 2 else None) as (url, tmp):
        settings = Settings(
            database_url=url, var_dir=tmp, secret_key="bench-" + uuid.uuid4().hex, calendar_fallback="weekends"
        )
        print(json.dumps(run(settings, changes, Console(stderr=True)), ensure_ascii=False))


if __name__ == "__main__":
    main()
