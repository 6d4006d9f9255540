"""Verification (查询核验) benchmark: calls per second with one subject per call, against
a trivial endpoint of the same app on the same server in the same run.

Target (issue 5): ≥ 2,000 verification calls/s, p99 < 25 ms, and ≥ 0.4 of the trivial
endpoint's rate (a bare FastAPI endpoint does about 4,600 requests/s on 2 cores).

Setup, in the platform database of ``settings`` (made ready with ``prepare_database``;
departments, users and the client app get a per-run suffix, so an existing database is
left as it was apart from what the run adds):

* a provider table ``population`` of ``PEOPLE`` people with valid 身份证号 — a SQLite file
  beside the platform's when the platform runs on SQLite, else a PostgreSQL database
  ``datatong_bench_verify_provider`` on the platform's server (made anew, dropped at the end);
* 公安局's published entry on it with a data source, 民政局's approved grant for the
  purpose ``verification`` and 民政局's client app, whose short-lived token the calls
  carry. The grant has no quotas (``quotas=False``: the approval's limits are lifted
  afterwards, stamped, as an admin's change would be) or, with ``quotas=True``, generous
  ones (10⁹ rows a day, 10⁶ calls a minute: every call then also spends quota units
  leased by ``authorize``).

The app is served by uvicorn in a subprocess (``workers`` processes; 1 by default) and
loaded by bench/load.py in another process over loopback, keep-alive, ``connections`` at
once: the trivial endpoint (``GET /api/v1/exchange/ping``: anonymous, no database) and
the verification (``POST /api/v1/exchange/entries/{code}/verify``: one random existing
subject and its claimed 姓名 per call — 1 in 10 claims a wrong name — with the four
request-context headers; everything a real call does: token check, ``authorize``,
lookup in the provider table, the audit record committed before the answer, the signed
receipt) alternate, trivial first, ``ROUNDS`` times each for ``seconds``. Reported: the
mean rate of each, the p50/p99 latency of the verification (means over its rounds),
``verify_ratio`` = verify ÷ trivial, non-200 answers (``verify_errors``), and the audit
records of ``exchange.verify`` written during the timed runs (``audit_records_written``,
which must equal ``verify_requests``).

Standalone: ``python -m bench.exchange_verify --seconds 10 [--database-url URL]
[--workers 2] [--quotas]`` (URL default: ``DATATONG_DATABASE_URL``, else a temporary SQLite file; a
PostgreSQL URL names the server, on which a temporary platform database is made).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import sqlalchemy as sa
from rich.console import Console
from stdnum.cn import ric

from datatong.db import engine_for, is_sqlite, session_scope, utcnow
from datatong.orgs.models import ClientApp, Department, User
from datatong.orgs.service import hash_secret
from datatong.settings import Settings, get_settings

CALLS_TARGET = 2000.0
P99_TARGET_MS = 25.0
RATIO_TARGET = 0.4
PEOPLE = 100_000
SUBJECTS = 5000  # distinct request bodies the load generator sends in turn
ROUNDS = 2
PASSWORD = "Bench@2026-verify"
PROVIDER_DB = "datatong_bench_verify_provider"
ROOT = Path(__file__).resolve().parent.parent
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈"
GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超兰霞平刚桂英华建国志红玉梅鹏飞文辉春燕海波宁"
REGIONS = ["110101", "310104", "440305", "330106", "510107", "420106", "320102", "370102"]
ITEMS = [
    {"name": "身份证号", "code": "SFZH", "data_type": "C", "length": 18, "sensitivity": "personal"},
    {"name": "姓名", "code": "XM", "data_type": "C", "length": 50, "sensitivity": "personal"},
    {"name": "婚姻状况", "code": "HYZK", "data_type": "C", "length": 10, "sensitivity": "personal"},
]
COLUMNS = {"身份证号": "sfzh", "姓名": "xm", "婚姻状况": "hyzk"}


def run(
    settings: Settings, seconds: float, connections: int, console: Console, workers: int = 1, quotas: bool = False
) -> dict[str, Any]:
    from datatong.app import prepare_database

    prepare_database(settings)
    suffix = uuid.uuid4().hex[:6].upper()
    _seed_platform(settings, suffix)
    people = _people(PEOPLE)
    provider_url = _make_provider(settings, people)
    console.print(f"provider: {PEOPLE} people in {sa.make_url(provider_url).get_backend_name()}")
    proc, port = _serve(settings, workers)
    try:
        base = f"http://127.0.0.1:{port}"
        code, token, client_id = _setup_exchange(base, suffix, provider_url)
        if not quotas:
            _lift_quotas(settings, code)
        bodies = _bodies(people, SUBJECTS)
        return _measure(settings, base, port, code, token, client_id, bodies, seconds, connections, console) | {
            "workers": workers,
            "quotas": "generous" if quotas else "none",
            "database": "sqlite" if is_sqlite(settings.database_url) else "postgresql",
            "provider": sa.make_url(provider_url).get_backend_name(),
            "people": PEOPLE,
        }
    finally:
        proc.terminate()
        proc.wait(15)
        if not is_sqlite(provider_url):
            _drop_provider(settings)


# ---------------------------------------------------------------- data


def _seed_platform(settings: Settings, suffix: str) -> None:
    """公安局 (provider), 民政局 (consumer), 大数据局's platform admin, one officer each,
    and 民政局's client app; all names end with ``suffix``."""
    password = hash_secret(PASSWORD)
    with session_scope(settings.database_url) as s:
        depts = {}
        for key, name in (("DSJ", "大数据局"), ("GA", "公安局"), ("MZ", "民政局")):
            dept = Department(code=f"BV{key}{suffix}", name=f"基准{name}{suffix}", level="city")
            s.add(dept)
            s.flush()
            depts[key] = dept.id
        for user, role, key in (
            ("admin", "platform_admin", "DSJ"),
            ("ga", "data_officer", "GA"),
            ("mz", "data_officer", "MZ"),
        ):
            s.add(
                User(
                    username=f"bv_{user}_{suffix.lower()}",
                    display_name=f"基准{user}",
                    role=role,
                    department_id=depts[key],
                    password_hash=password,
                )
            )
        s.add(
            ClientApp(
                client_id=f"bv_mz_{suffix.lower()}",
                name="民政业务系统",
                department_id=depts["MZ"],
                secret_hash=password,
            )
        )


def _ric(rng: random.Random) -> str:
    born = date(1940, 1, 1) + timedelta(days=rng.randrange(365 * 65))
    body = rng.choice(REGIONS) + born.strftime("%Y%m%d") + f"{rng.randrange(1000):03d}"
    return body + ric.calc_check_digit(body + "0")  # it skips the last character


def _people(n: int, seed: int = 20261203) -> list[tuple[str, str, str]]:
    """``n`` people: (身份证号, 姓名, 婚姻状况), distinct numbers."""
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[tuple[str, str, str]] = []
    while len(out) < n:
        number = _ric(rng)
        if number in seen:
            continue
        seen.add(number)
        name = rng.choice(SURNAMES) + "".join(rng.choice(GIVEN) for _ in range(rng.choice((1, 2))))
        out.append((number, name, rng.choice(("未婚", "已婚", "离婚", "丧偶"))))
    return out


def _make_provider(settings: Settings, people: list[tuple[str, str, str]]) -> str:
    """The provider's table, filled; returns its URL."""
    if is_sqlite(settings.database_url):
        url = f"sqlite:///{Path(settings.var_dir).resolve() / 'bench-verify-provider.db'}"
        Path(sa.make_url(url).database or "").unlink(missing_ok=True)
    else:
        url = settings.database_url.rsplit("/", 1)[0] + "/" + PROVIDER_DB
        admin = sa.create_engine(settings.database_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{PROVIDER_DB}" WITH (FORCE)'))
            conn.execute(sa.text(f'CREATE DATABASE "{PROVIDER_DB}"'))
        admin.dispose()
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            sa.text("CREATE TABLE population (sfzh varchar(18) PRIMARY KEY, xm varchar(50) NOT NULL, hyzk varchar(10))")
        )
        conn.execute(
            sa.text("INSERT INTO population (sfzh, xm, hyzk) VALUES (:a, :b, :c)"),
            [{"a": a, "b": b, "c": c} for a, b, c in people],
        )
    engine.dispose()
    return url


def _drop_provider(settings: Settings) -> None:
    admin = sa.create_engine(settings.database_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{PROVIDER_DB}" WITH (FORCE)'))
    admin.dispose()


def _bodies(people: list[tuple[str, str, str]], n: int, seed: int = 7) -> list[bytes]:
    """``n`` one-subject request bodies: a random person, their name (1 in 10 a wrong one)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        number, name, _status = rng.choice(people)
        claimed = name if rng.random() >= 0.1 else name + "甲"
        body = {"subjects": [{"key": number, "claims": {"姓名": claimed}}]}
        out.append(json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode())
    return out


# ---------------------------------------------------------------- server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_app() -> Any:
    """The app under test, from the environment (uvicorn factory: works with workers)."""
    from datatong.app import create_app

    settings = replace(get_settings(), login_rate_per_minute=100_000, calendar_fallback="weekends")
    return create_app(settings, migrate=False)


def _serve(settings: Settings, workers: int) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    env = {
        **os.environ,
        "DATATONG_DATABASE_URL": settings.database_url,
        "DATATONG_VAR_DIR": str(settings.var_dir),
        "DATATONG_SECRET_KEY": settings.secret_key,
        "DATATONG_CLIENT_TOKEN_MINUTES": "600",
        "PYTHONPATH": str(ROOT),
    }
    if settings.key_dir is not None:
        env["DATATONG_KEY_DIR"] = str(settings.key_dir)
    cmd = [
        sys.executable, "-m", "uvicorn", "bench.exchange_verify:server_app", "--factory",
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
        "--log-level", "warning", "--no-access-log",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT)
    for _ in range(300):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/v1/exchange/ping", timeout=1).status_code == 200:
                return proc, port
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the benchmark server did not start")


def _ok(r: httpx.Response) -> dict[str, Any]:
    if r.status_code >= 300:
        raise RuntimeError(f"setup call {r.request.method} {r.request.url} failed: {r.status_code} {r.text[:500]}")
    return dict(r.json()) if r.content else {}


def granted_exchange(
    http: Any, suffix: str, source: dict[str, Any], items: list[str], purpose: str, clear: list[str] | None = None
) -> tuple[dict[str, Any], int, str, str]:
    """Through the API (``http``: an HTTPX client or a TestClient on the app): 公安局's
    entry, published, with ``source``; 民政局's application for its client app, approved
    with generous quotas (10⁹ rows a day, 10⁶ calls a minute). Returns the entry, the
    source id, a client token and the client id."""
    low = suffix.lower()

    def login(user: str) -> dict[str, str]:
        r = http.post("/api/v1/auth/token", json={"username": f"bv_{user}_{low}", "password": PASSWORD})
        return {"Authorization": "Bearer " + _ok(r)["access_token"]}

    admin, ga, mz = login("admin"), login("ga"), login("mz")
    entry = _ok(http.post("/api/v1/catalog/entries", headers=ga, json=_entry_body()))
    _ok(http.post(f"/api/v1/catalog/entries/{entry['id']}/submit", headers=ga))
    entry = _ok(http.post(f"/api/v1/catalog/entries/{entry['id']}/review", headers=admin, json={"decision": "approve"}))
    source_id = int(
        _ok(http.post("/api/v1/exchange/sources", headers=admin, json={"entry_id": entry["id"], **source}))["id"]
    )
    client_id, today = f"bv_mz_{low}", date.today()
    quotas = {"rows_per_day": 10**9, "calls_per_minute": 10**6}
    app = _ok(
        http.post(
            "/api/v1/sharing/applications",
            headers=mz,
            json={
                "entry_id": entry["id"], "purpose_kind": "verification", "purpose": purpose,
                "legal_basis": "《社会救助暂行办法》", "items": items,
                "period_start": today.isoformat(), "period_end": (today + timedelta(days=365)).isoformat(),
                "client_id": client_id, **quotas,
            },
        )
    )  # fmt: skip
    submitted = _ok(
        http.post(f"/api/v1/sharing/applications/{app['id']}/submit", headers=mz, json={"accept_commitment": True})
    )
    if submitted.get("status") == "draft":  # the provider would not see it (404 on decide)
        raise RuntimeError(f"the application was not submitted: {submitted}")
    decide = {"decision": "approve", "clear_items": clear or [], **quotas}
    _ok(http.post(f"/api/v1/sharing/applications/{app['id']}/decide", headers=ga, json=decide))
    r = http.post("/api/v1/auth/client-token", json={"client_id": client_id, "client_secret": PASSWORD})
    return entry, source_id, str(_ok(r)["access_token"]), client_id


def _setup_exchange(base: str, suffix: str, provider_url: str) -> tuple[str, str, str]:
    """The verification's entry on the ``population`` table; returns code, token, client id."""
    source = {"kind": "sql", "url": provider_url, "table_name": "population", "key_item": "身份证号", "fields": COLUMNS}
    with httpx.Client(base_url=base, timeout=60) as http:
        entry, _, token, client_id = granted_exchange(http, suffix, source, ["身份证号", "姓名"], "低保资格核验")
    return str(entry["code"]), token, client_id


def _lift_quotas(settings: Settings, code: str) -> None:
    """No quotas on the grant; stamped, so the server's authorize() re-reads it within a second."""
    sql = sa.text(
        "UPDATE share_grant SET rows_per_day = NULL, calls_per_minute = NULL, updated_at = :now "
        "WHERE entry_id = (SELECT id FROM catalog_entry WHERE code = :code)"
    )
    with engine_for(settings.database_url).begin() as conn:
        conn.execute(sql, {"now": utcnow(), "code": code})
    time.sleep(1.5)


def _entry_body() -> dict[str, Any]:
    return {
        "name": "户籍人口基本信息（核验基准）", "class_code": "101",
        "summary": "全市户籍人口的身份证号、姓名、婚姻状况", "keywords": "人口,户籍",
        "format_category": "database", "format_type": "table", "share_type": "conditional",
        "share_condition": "仅用于政务服务中的身份核验", "share_method": "platform", "share_subtype": "interface",
        "is_open": False, "update_cycle": "daily", "items": ITEMS,
    }  # fmt: skip


# ---------------------------------------------------------------- load


def _load(port: int, path: str, connections: int, seconds: float, extra: list[str]) -> dict[str, Any]:
    cmd = [
        sys.executable, "-m", "bench.load", "--port", str(port), "--path", path,
        "--connections", str(connections), "--seconds", str(seconds), *extra,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT, env=env)
    return dict(json.loads(out.stdout))


def _count(url: str, action: str) -> int:
    with engine_for(url).connect() as conn:
        sql = sa.text("SELECT count(*) FROM audit_record WHERE action = :a")
        return int(conn.execute(sql, {"a": action}).scalar_one())


def _measure(
    settings: Settings,
    base: str,
    port: int,
    code: str,
    token: str,
    client_id: str,
    bodies: list[bytes],
    seconds: float,
    connections: int,
    console: Console,
) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile("wb", suffix=".jsonl", delete=False) as f:
        f.write(b"\n".join(bodies) + b"\n")
        bodies_file = f.name
    ctx = {"System": client_id, "Operator": quote("王小明"), "Purpose": "verification", "Case": "MZ-2026-000123"}
    headers = [arg for k, v in ctx.items() for arg in ("--header", f"X-Datatong-{k}: {v}")]
    verify_args = ["--method", "POST", "--bodies", bodies_file, "--token", token, *headers]
    verify_path = f"/api/v1/exchange/entries/{code}/verify"
    runs: dict[str, list[dict[str, Any]]] = {"trivial": [], "verify": []}
    try:
        _check_answer(base, verify_path, token, ctx, bodies[0])
        _load(port, "/api/v1/exchange/ping", connections, 2.0, [])  # warm: imports, caches, pools
        _load(port, verify_path, connections, 2.0, verify_args)
        before = _count(settings.database_url, "exchange.verify")
        for mode in ("trivial", "verify") * ROUNDS:
            path, extra = ("/api/v1/exchange/ping", []) if mode == "trivial" else (verify_path, verify_args)
            res = _load(port, path, connections, seconds, extra)
            console.print(
                f"{mode:>8}: {res['calls_per_s']:8.1f} calls/s, p50 {res['p50_ms']} / p99 {res['p99_ms']} ms"
                + (f", {res['errors']} errors {res['error_statuses']}" if res["errors"] else "")
            )
            runs[mode].append(res)
        time.sleep(0.5)  # let the last audit batch land (every answered call already waited for its record)
        written = _count(settings.database_url, "exchange.verify") - before
    finally:
        os.unlink(bodies_file)
    return _summary(runs, written, connections, seconds) | _paths(base)


def _paths(base: str) -> dict[str, Any]:
    """How many verification calls the server answered from memory on its event loop
    and how many in a worker thread (its /metrics, readable from loopback)."""
    text = httpx.get(base + "/metrics", timeout=30).text
    counts = {"memory": 0.0, "thread": 0.0}
    for line in text.splitlines():
        for path in counts:
            if line.startswith(f'datatong_exchange_verify_path_total{{path="{path}"}}'):
                counts[path] = float(line.rsplit(" ", 1)[1])
    total = sum(counts.values())
    return {
        "verify_in_memory_calls": int(counts["memory"]),
        "verify_in_thread_calls": int(counts["thread"]),
        "verify_in_memory_share": round(counts["memory"] / total, 3) if total else None,
    }


def _check_answer(base: str, path: str, token: str, ctx: dict[str, str], body: bytes) -> None:
    """One call by hand: 200, a result for the subject and a receipt header."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    headers |= {f"X-Datatong-{k}": v for k, v in ctx.items()}
    r = httpx.post(base + path, content=body, headers=headers, timeout=30)
    if r.status_code != 200 or not r.headers.get("X-Datatong-Receipt") or not r.json()["results"][0]["found"]:
        raise RuntimeError(f"the verification call does not answer as it should: {r.status_code} {r.text[:500]}")


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _summary(runs: dict[str, list[dict[str, Any]]], written: int, connections: int, seconds: float) -> dict[str, Any]:
    verify = _mean([r["calls_per_s"] for r in runs["verify"]])
    trivial = _mean([r["calls_per_s"] for r in runs["trivial"]])
    p50 = _mean([r["p50_ms"] for r in runs["verify"] if r["p50_ms"] is not None] or [0.0])
    p99 = _mean([r["p99_ms"] for r in runs["verify"] if r["p99_ms"] is not None] or [0.0])
    return {
        "verify_calls_per_s": round(verify, 1),
        "verify_calls_per_s_best": max(r["calls_per_s"] for r in runs["verify"]),
        "verify_p50_ms": round(p50, 2),
        "verify_p99_ms": round(p99, 2),
        "trivial_requests_per_s": round(trivial, 1),
        "trivial_p50_ms": runs["trivial"][-1]["p50_ms"],
        "trivial_p99_ms": runs["trivial"][-1]["p99_ms"],
        "verify_ratio": round(verify / trivial, 3) if trivial else None,
        "verify_errors": sum(r["errors"] for r in runs["verify"]),
        "trivial_errors": sum(r["errors"] for r in runs["trivial"]),
        "verify_requests": sum(r["requests"] for r in runs["verify"]),
        "audit_records_written": written,
        "verify_calls_target": CALLS_TARGET,
        "verify_p99_target_ms": P99_TARGET_MS,
        "verify_ratio_target": RATIO_TARGET,
        "connections": connections,
        "seconds_per_run": seconds,
        "rounds": ROUNDS,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description="查询核验 benchmark")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--quotas", action="store_true", help="generous quotas on the grant (default: none)")
    ap.add_argument("--database-url", default=os.environ.get("DATATONG_DATABASE_URL"))
    a = ap.parse_args()
    from bench.catalog import fresh_database

    console = Console(stderr=True)
    with fresh_database(a.database_url) as (url, tmp):
        settings = Settings(database_url=url, var_dir=tmp, secret_key="bench-" + uuid.uuid4().hex)
        out = run(settings, a.seconds, a.connections, console, workers=a.workers, quotas=a.quotas)
    print(json.dumps(out, ensure_ascii=False))


if __name__ == "__main__":
    main()
