"""Audit benchmark (SPEC: full auditing costs under 10% of throughput; verifying a
10-million-record chain takes under a minute).

(a) Throughput. One uvicorn process serves ``GET /api/v1/catalog/entries/{id}`` for a
logged-in department officer with reads audited (each call waits until its record is
committed, group commit shared with the calls running beside it) and a second,
identical process with read auditing off. A load generator in its own process
(bench/load.py: keep-alive HTTP/1.1, ``connections`` at once) drives each for
``seconds``, alternating twice; the means are ``audited_calls_per_s`` and
``unaudited_calls_per_s``, and ``audit_ratio`` is their quotient (target ≥ 0.9).

(b) Verification. ``records`` audit records (default 10 million, realistic field
sizes) are chained with the platform's own hashing code and bulk-loaded, with a signed
checkpoint every 1,000, then ``datatong audit verify``'s function checks the whole
chain and every checkpoint: ``verify_seconds`` (target < 60 s).
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bench.catalog import fresh_database
from datatong.app import prepare_database
from datatong.audit.chain import FIELDS, record_hash
from datatong.audit.checkpoint import message
from datatong.audit.models import GENESIS
from datatong.audit.verify import verify
from datatong.catalog import bulk
from datatong.catalog.schemas import EntryIn
from datatong.db import engine_for, is_sqlite, session_scope
from datatong.keys import keyring, signing_key
from datatong.orgs.models import Department, Role
from datatong.orgs.service import create_user, principal_for
from datatong.settings import Settings

RATIO_TARGET = 0.9
VERIFY_TARGET_S = 60.0
PASSWORD = "Bench@2026-audit"
ROOT = Path(__file__).resolve().parent.parent


def run(
    records: int = 10_000_000,
    database_url: str | None = None,
    seconds: float = 10.0,
    connections: int = 32,
    console: Console | None = None,
) -> dict[str, Any]:
    console = console or Console(stderr=True)
    result: dict[str, Any] = {"database": "sqlite" if not database_url or is_sqlite(database_url) else "postgresql"}
    with fresh_database(database_url) as (url, tmp):
        settings = Settings(database_url=url, var_dir=tmp, secret_key="bench-" + uuid.uuid4().hex)
        prepare_database(settings)
        result.update(throughput(settings, seconds, connections, console))
    with fresh_database(database_url) as (url, tmp):
        settings = Settings(database_url=url, var_dir=tmp, secret_key="bench-" + uuid.uuid4().hex)
        prepare_database(settings)
        result.update(verification(settings, records, console))
    return result


# ---------------------------------------------------------------- (a) throughput


def _seed_reader(settings: Settings) -> int:
    """A department, an officer and one published entry; returns the entry id."""
    with session_scope(settings.database_url) as s:
        dept = Department(code="GA", name="示范市公安局", level="city")
        s.add(dept)
        s.flush()
        create_user(s, None, "officer", "公安数据管理员", PASSWORD, Role.DATA_OFFICER, "GA")
        user = create_user(s, None, "ga_admin", "公安部门管理员", PASSWORD, Role.DEPT_ADMIN, "GA")
        entry = EntryIn.model_validate(
            {
                "name": "户籍人口基本信息",
                "class_code": "101",
                "provider_code": "GA",
                "summary": "全市户籍人口的基本信息",
                "format_category": "数据库",
                "share_type": "unconditional",
                "share_method": "共享平台",
                "update_cycle": "每日",
                "items": [{"name": "身份证号", "data_type": "C", "length": 18}, {"name": "姓名", "data_type": "C"}],
            }
        )
        bulk.bulk_create(s, principal_for(user), [entry], status="published")
    with engine_for(settings.database_url).connect() as conn:
        return int(conn.execute(sa.text("SELECT max(id) FROM catalog_entry")).scalar_one())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(settings: Settings, audited: bool) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    env = {
        **os.environ,
        "DATATONG_DATABASE_URL": settings.database_url,
        "DATATONG_VAR_DIR": str(settings.var_dir),
        "DATATONG_SECRET_KEY": settings.secret_key,
        "PYTHONPATH": str(ROOT),
    }
    cmd = [sys.executable, "-m", "bench.audit_server", "1" if audited else "0", str(port)]
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT)
    for _ in range(200):
        try:
            httpx.get(f"http://127.0.0.1:{port}/.well-known/datatong-keys", timeout=1)
            return proc, port
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the benchmark server did not start")


def _load(port: int, path: str, token: str, connections: int, seconds: float) -> dict[str, Any]:
    cmd = [
        sys.executable, "-m", "bench.load", "--port", str(port), "--path", path, "--token", token,
        "--connections", str(connections), "--seconds", str(seconds),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT, env=env)
    return dict(json.loads(out.stdout))


def _count(url: str, action: str) -> int:
    with engine_for(url).connect() as conn:
        sql = sa.text("SELECT count(*) FROM audit_record WHERE action = :a")
        return int(conn.execute(sql, {"a": action}).scalar_one())


def throughput(settings: Settings, seconds: float, connections: int, console: Console) -> dict[str, Any]:
    entry_id = _seed_reader(settings)
    path = f"/api/v1/catalog/entries/{entry_id}"
    servers = {mode: _serve(settings, mode == "audited") for mode in ("audited", "unaudited")}
    runs: dict[str, list[dict[str, Any]]] = {"audited": [], "unaudited": []}
    try:
        port = servers["audited"][1]
        token = httpx.post(
            f"http://127.0.0.1:{port}/api/v1/auth/token", json={"username": "officer", "password": PASSWORD}
        ).json()["access_token"]
        for mode in ("audited", "unaudited"):  # warm both (imports, caches, connection pools)
            _load(servers[mode][1], path, token, connections, 2.0)
        before = _count(settings.database_url, "catalog.entry.read")
        for mode in ("unaudited", "audited", "unaudited", "audited"):
            res = _load(servers[mode][1], path, token, connections, seconds)
            console.print(f"{mode:>9}: {res['calls_per_s']:8.1f} calls/s, p50 {res['p50_ms']} / p99 {res['p99_ms']} ms")
            if res["errors"]:
                raise RuntimeError(f"{mode} run answered errors: {res}")
            runs[mode].append(res)
        recorded = _count(settings.database_url, "catalog.entry.read") - before
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(10)
    audited = sum(r["calls_per_s"] for r in runs["audited"]) / len(runs["audited"])
    unaudited = sum(r["calls_per_s"] for r in runs["unaudited"]) / len(runs["unaudited"])
    audited_requests = sum(r["requests"] for r in runs["audited"])
    return {
        "audited_calls_per_s": round(audited, 1),
        "unaudited_calls_per_s": round(unaudited, 1),
        "audit_ratio": round(audited / unaudited, 3),
        "audit_ratio_target": RATIO_TARGET,
        "audited_p50_ms": runs["audited"][-1]["p50_ms"],
        "audited_p99_ms": runs["audited"][-1]["p99_ms"],
        "unaudited_p50_ms": runs["unaudited"][-1]["p50_ms"],
        "unaudited_p99_ms": runs["unaudited"][-1]["p99_ms"],
        "audited_requests": audited_requests,
        "audit_records_written": recorded,
        "connections": connections,
        "seconds_per_run": seconds,
    }


# ---------------------------------------------------------------- (b) verification

ACTIONS = ["catalog.entry.read", "exchange.query", "exchange.verify", "catalog.entry.update", "auth.login"]
DEPTS = [f"D{i:02d}" for i in range(34)]
PURPOSES = [None, "行政依据：办理户籍迁移", "业务协同：企业开办", "数据校核：社保待遇资格认证"]


def _fake_event(rng: random.Random, seq: int, at: str) -> tuple[Any, ...]:
    dept = rng.choice(DEPTS)
    action = rng.choice(ACTIONS)
    detail = None if seq % 3 else json.dumps({"reason": "例行更新", "version": seq % 17}, ensure_ascii=False)
    return (
        seq, at, "user", f"user{rng.randrange(2000)}", dept, action,
        f"101001-{rng.choice(DEPTS)}-{rng.randrange(1_000_000):06d}", rng.choice(DEPTS),
        "身份证号,姓名,婚姻状况" if action.startswith("exchange") else None, rng.choice(PURPOSES),
        rng.randrange(1, 10_000) if action.startswith("exchange") else None, rng.randrange(0, 100),
        "allowed" if seq % 50 else "refused", None if seq % 50 else "quota_exceeded",
        uuid.UUID(int=rng.getrandbits(128)).hex, f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(256)}",
        detail, "sha256",
    )  # fmt: skip


INDEXES = [
    ("ix_audit_record_actor_department_seq", "actor_department, seq"),
    ("ix_audit_record_subject_department_seq", "subject_department, seq"),
    ("ix_audit_record_occurred_at", "occurred_at"),
    ("ix_audit_record_resource", "resource"),
]


def _load_chain(settings: Settings, records: int, console: Console) -> float:
    """Chain ``records`` events and bulk-load them; returns the seconds it took."""
    url = settings.database_url
    engine = engine_for(url)
    key = signing_key(settings.keys_path)
    rng = random.Random(20261122)
    cols = [*FIELDS, "prev_hash", "hash"]
    prev = GENESIS
    start = time.perf_counter()
    checkpoints: list[dict[str, Any]] = []
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        for name, _ in INDEXES:
            cur.execute(f"DROP INDEX {name}")
        columns = (TextColumn("生成审计链"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console) as bar:
            task = bar.add_task("chain", total=records)
            chunk = 100_000
            for lo in range(1, records + 1, chunk):
                rows = []
                at = f"2026-11-{1 + lo * 20 // records:02d}T08:00:00.000000Z"
                for seq in range(lo, min(records, lo + chunk - 1) + 1):
                    values = _fake_event(rng, seq, at)
                    digest = record_hash("sha256", prev, values)
                    rows.append((*values, prev, digest))
                    prev = digest
                    if seq % 1000 == 0:
                        signed_at = at
                        checkpoints.append(
                            {"seq": seq, "hash": digest, "signed_at": signed_at, "key_id": key.kid,
                             "signature": key.sign(message(seq, digest, signed_at))}
                        )  # fmt: skip
                _insert(cur, cols, rows, is_sqlite(url))
                bar.update(task, advance=len(rows))
        console.print("重建索引 …")
        for name, indexed in INDEXES:
            cur.execute(f"CREATE INDEX {name} ON audit_record ({indexed})")
        cur.close()
        raw.commit()
    finally:
        raw.close()
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE audit_head SET seq = :s, hash = :h WHERE id = 1"), {"s": records, "h": prev})
        if checkpoints:
            conn.execute(
                sa.text(
                    "INSERT INTO audit_checkpoint (seq, hash, signed_at, key_id, signature) "
                    "VALUES (:seq, :hash, :signed_at, :key_id, :signature)"
                ),
                checkpoints,
            )
        if not is_sqlite(url):
            conn.execute(sa.text("ANALYZE audit_record"))
    return time.perf_counter() - start


def _insert(cur: Any, cols: list[str], rows: list[tuple[Any, ...]], sqlite: bool) -> None:
    names = ", ".join(f'"{c}"' for c in cols)
    if sqlite:
        marks = ", ".join("?" * len(cols))
        cur.executemany(f"INSERT INTO audit_record ({names}) VALUES ({marks})", rows)
        return
    with cur.copy(f"COPY audit_record ({names}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def verification(settings: Settings, records: int, console: Console) -> dict[str, Any]:
    load_s = _load_chain(settings, records, console)
    keys = {k.kid: k for k in keyring(settings.keys_path)}
    bar = Progress(TextColumn("校验审计链"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console)
    with bar:
        task = bar.add_task("verify", total=records)
        start = time.perf_counter()
        report = verify(
            settings.database_url, keys, progress=lambda done, total: bar.update(task, completed=done, total=total)
        )
        seconds = time.perf_counter() - start
    if not report.ok:
        raise RuntimeError(f"the generated chain did not verify: {report.problem}")
    return {
        "chain_records": report.records,
        "chain_checkpoints": report.checkpoints,
        "chain_load_seconds": round(load_s, 1),
        "verify_seconds": round(seconds, 2),
        "verify_records_per_s": round(report.records / seconds),
        "verify_target_seconds": VERIFY_TARGET_S,
    }


def main() -> None:  # python -m bench.audit [records] [database_url]
    args = sys.argv[1:]
    out = run(records=int(args[0]) if args else 10_000_000, database_url=args[1] if len(args) > 1 else None)
    print(json.dumps(out, ensure_ascii=False))


if __name__ == "__main__":
    main()
