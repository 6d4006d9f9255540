"""The audit trail as a hash chain: what is recorded, that appends never fork, and that
every kind of tampering is found and pinpointed by ``datatong audit verify``."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import auth, create_entry, entry_body, unprotected_audit

from datatong.audit.chain import FIELDS, record_hash
from datatong.audit.checkpoint import make_checkpoint, message
from datatong.audit.models import AuditCheckpoint, AuditRecord
from datatong.audit.service import AuditUnavailable, configure_chain, make_event, record
from datatong.audit.verify import verify
from datatong.audit.writer import AuditWriter
from datatong.db import engine_for, is_sqlite, session_scope
from datatong.keys import b64url, keyring, new_key, verify_keys_from_jwks


def _keys(settings: Any) -> dict[str, Any]:
    return {k.kid: k for k in keyring(settings.keys_path)}


def _records(settings: Any) -> list[AuditRecord]:
    with session_scope(settings.database_url) as s:
        return list(s.scalars(sa.select(AuditRecord).order_by(AuditRecord.seq)))


def _chain(settings: Any, n: int, every: int = 10) -> None:
    """``n`` records with a signed checkpoint after every ``every``."""
    engine = engine_for(settings.database_url)
    for i in range(1, n + 1):
        with session_scope(settings.database_url) as s:
            record(s, None, "test.write", resource=f"R{i}", rows=i, detail={"i": i})
        if i % every == 0:
            with engine.begin() as conn:
                make_checkpoint(conn, settings.keys_path)


def _tamper(settings: Any, *statements: str, params: dict[str, Any] | None = None) -> None:
    with engine_for(settings.database_url).begin() as conn, unprotected_audit(conn):
        for sql in statements:
            conn.execute(sa.text(sql), params or {})


def _values(row: Any) -> list[Any]:
    return [getattr(row, f) for f in FIELDS]


# ---------------------------------------------------------------- what is recorded


def test_catalog_changes_and_reads_are_recorded(client, world, settings):
    entry = create_entry(client, publish=True)
    headers = {**auth(client, "mz_officer"), "X-Request-ID": "req-visible-1"}
    r = client.get(f"/api/v1/catalog/entries/{entry['id']}", headers=headers)
    assert r.status_code == 200 and r.headers["x-request-id"] == "req-visible-1"
    rows = _records(settings)
    actions = [(x.action, x.actor) for x in rows]
    assert ("catalog.entry.create", "ga_officer") in actions
    assert ("catalog.entry.submit", "ga_officer") in actions
    assert ("catalog.entry.approve_publish", "admin") in actions
    read = rows[-1]
    assert (read.action, read.actor, read.actor_department) == ("catalog.entry.read", "mz_officer", "MZ")
    assert (read.resource, read.subject_department, read.outcome) == (entry["code"], "GA", "allowed")
    assert read.request_id == "req-visible-1" and read.client_addr
    assert verify(settings.database_url, _keys(settings)).ok


def test_anonymous_reads_of_open_entries_are_not_recorded(client, world, settings):
    entry = create_entry(client, publish=True, is_open=True)
    before = len(_records(settings))
    assert client.get(f"/api/v1/catalog/entries/{entry['id']}").status_code == 200
    assert len(_records(settings)) == before


def test_refused_requests_are_recorded(client, world, settings):
    entry = create_entry(client, publish=True)
    body = {"decision": "approve"}
    r = client.post(f"/api/v1/catalog/entries/{entry['id']}/review", json=body, headers=auth(client, "mz_officer"))
    assert r.status_code == 403
    last = _records(settings)[-1]
    assert (last.action, last.outcome, last.reason) == ("request.refused", "refused", "forbidden")
    assert last.resource == f"POST /api/v1/catalog/entries/{entry['id']}/review"


def test_a_refused_change_leaves_no_record(client, world, settings):
    """The change and its record commit together: a rule violation writes neither."""
    before = len(_records(settings))
    r = client.post("/api/v1/catalog/entries", json={"name": ""}, headers=auth(client, "ga_officer"))
    assert r.status_code == 422
    assert len(_records(settings)) == before


# ---------------------------------------------------------------- appends


def test_group_commit_gives_every_caller_its_own_place(settings, world):
    from concurrent.futures import ThreadPoolExecutor

    writer = AuditWriter(settings.database_url, settings.keys_path, checkpoint_every=50)
    try:
        with ThreadPoolExecutor(16) as pool:
            seqs = list(pool.map(lambda i: writer.write(make_event(None, "test.read", rows=i)), range(400)))
    finally:
        writer.stop()
    assert sorted(seqs) == list(range(1, 401))
    report = verify(settings.database_url, _keys(settings))
    assert report.ok and report.records == 400 and report.checkpoints >= 8


def test_the_writer_reconnects_when_its_connection_was_lost_while_idle(settings, world, monkeypatch):
    """The writer holds one driver connection; a database restart (here: the server ends
    the writer's session) while it sits idle must not fail the next caller."""
    if is_sqlite(settings.database_url):
        pytest.skip("a server database: SQLite has no connection to lose")
    from datatong.audit import writer as writer_module

    monkeypatch.setattr(writer_module, "PING_AFTER", 0.0)  # every batch counts as after idle
    writer = AuditWriter(settings.database_url, settings.keys_path)
    try:
        first = writer.write(make_event(None, "test.read"))
        pid = writer._driver.dbapi_connection.info.backend_pid
        with engine_for(settings.database_url).begin() as conn:
            assert conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()
        assert writer.write(make_event(None, "test.read")) == first + 1
        assert writer._driver.dbapi_connection.info.backend_pid != pid
    finally:
        writer.stop()
    assert verify(settings.database_url, _keys(settings)).ok


def _append_many(url: str, key_dir: str, n: int, tag: str) -> None:
    writer = AuditWriter(url, Path(key_dir), checkpoint_every=100)
    for i in range(n):
        if i % 2:
            writer.write(make_event(None, "test.process", resource=f"{tag}-{i}"))
        else:
            with session_scope(url) as s:
                record(s, None, "test.process", resource=f"{tag}-{i}")
    writer.stop()


def test_two_processes_appending_at_once_never_fork_the_chain(settings, world):
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_append_many, args=(settings.database_url, str(settings.keys_path), 150, t))
        for t in ("a", "b")
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    rows = _records(settings)
    assert [r.seq for r in rows] == list(range(1, 301))
    assert len({r.resource for r in rows}) == 300
    assert verify(settings.database_url, _keys(settings)).ok


def test_audit_unreachable_fails_closed(tmp_path):
    writer = AuditWriter(f"sqlite:///{tmp_path}/missing-dir/none/audit.db", tmp_path / "keys")
    with pytest.raises(AuditUnavailable) as err:
        writer.write(make_event(None, "test.read"), timeout=5)
    writer.stop()
    assert err.value.code == "audit.unavailable" and err.value.status_code == 503


# ---------------------------------------------------------------- protection


@pytest.mark.parametrize("statement", ["UPDATE audit_record SET actor = 'x'", "DELETE FROM audit_record"])
def test_the_database_refuses_to_change_records(settings, world, statement):
    _chain(settings, 3)
    with pytest.raises(sa.exc.DBAPIError, match="append-only"), engine_for(settings.database_url).begin() as conn:
        conn.execute(sa.text(statement))
    assert len(_records(settings)) == 3


def test_postgres_refuses_truncate(settings, world):
    if is_sqlite(settings.database_url):
        pytest.skip("SQLite has no TRUNCATE")
    _chain(settings, 2)
    with pytest.raises(sa.exc.DBAPIError, match="append-only"), engine_for(settings.database_url).begin() as conn:
        conn.execute(sa.text("TRUNCATE audit_record"))


# ---------------------------------------------------------------- tampering


def _recompute_from(settings: Any, start: int, change: dict[str, Any]) -> None:
    """A clever attacker: edits record ``start`` and re-hashes every record after it."""
    rows = _records(settings)
    prev = rows[start - 2].hash if start > 1 else "0" * 64
    updates = []
    for row in rows[start - 1 :]:
        values = _values(row)
        if row.seq == start:
            for k, v in change.items():
                values[FIELDS.index(k)] = v
        digest = record_hash(row.alg, prev, values)
        updates.append({**dict(zip(FIELDS, values, strict=True)), "prev_hash": prev, "hash": digest})
        prev = digest
    sets = ", ".join(f'"{f}" = :{f}' for f in [*FIELDS[1:], "prev_hash", "hash"])
    with engine_for(settings.database_url).begin() as conn, unprotected_audit(conn):
        for u in updates:
            conn.execute(sa.text(f"UPDATE audit_record SET {sets} WHERE seq = :seq"), u)
        conn.execute(sa.text("UPDATE audit_head SET hash = :h"), {"h": prev})


TAMPERING = {
    # kind: (what the attacker does, first bad record, problem code)
    "alter": (lambda s: _tamper(s, "UPDATE audit_record SET actor = 'someone' WHERE seq = 7"), 7, "altered"),
    "alter_and_rehash_one": (
        lambda s: _rehash_one(s, 7, purpose="改过的用途"),
        7,
        "rehashed",
    ),
    "delete": (lambda s: _tamper(s, "DELETE FROM audit_record WHERE seq = 12"), 12, "missing"),
    "reorder": (
        lambda s: _tamper(
            s,
            "UPDATE audit_record SET seq = -1 WHERE seq = 15",
            "UPDATE audit_record SET seq = 15 WHERE seq = 16",
            "UPDATE audit_record SET seq = 16 WHERE seq = -1",
        ),
        15,
        "altered",
    ),
    "truncate": (lambda s: _tamper(s, "DELETE FROM audit_record WHERE seq > 24"), 25, "truncated"),
    "truncate_and_reset_head": (
        lambda s: _tamper(
            s,
            "DELETE FROM audit_record WHERE seq > 24",
            "UPDATE audit_head SET seq = 24, hash = (SELECT hash FROM audit_record WHERE seq = 24)",
        ),
        25,
        "truncated",
    ),
    "rewrite_whole_chain": (lambda s: _recompute_from(s, 3, {"actor": "nobody"}), 10, "checkpoint_mismatch"),
    "separator_smuggled": (
        lambda s: _tamper(s, "UPDATE audit_record SET actor = :a WHERE seq = 4", params={"a": "x\x1fy"}),
        4,
        "malformed",
    ),
}


def _rehash_one(settings: Any, seq: int, **change: Any) -> None:
    rows = _records(settings)
    row = rows[seq - 1]
    values = _values(row)
    for k, v in change.items():
        values[FIELDS.index(k)] = v
    digest = record_hash(row.alg, row.prev_hash, values)
    _tamper(
        settings,
        "UPDATE audit_record SET purpose = :p, hash = :h WHERE seq = :s",
        params={"p": change["purpose"], "h": digest, "s": seq},
    )


@pytest.mark.parametrize("kind", sorted(TAMPERING))
def test_verify_pinpoints_tampering(settings, world, kind):
    _chain(settings, 30)
    assert verify(settings.database_url, _keys(settings)).ok
    act, seq, code = TAMPERING[kind]
    act(settings)
    report = verify(settings.database_url, _keys(settings))
    assert report.problem is not None, kind
    assert (report.problem.seq, report.problem.code) == (seq, code)
    assert report.problem.message and report.problem.message_en


def test_verify_in_parallel_finds_the_same_record(settings, world):
    _chain(settings, 40)
    _tamper(settings, "UPDATE audit_record SET rows = 999 WHERE seq = 33")
    for workers in (1, 2):
        report = verify(settings.database_url, _keys(settings), workers=workers)
        assert report.problem is not None and (report.problem.seq, report.problem.code) == (33, "altered")
    _tamper(settings, "UPDATE audit_record SET rows = 33 WHERE seq = 33")
    assert verify(settings.database_url, _keys(settings), workers=2).ok


def test_forged_checkpoint_is_refused(settings, world):
    _chain(settings, 10)
    other = new_key(settings.keys_path.parent / "attacker-keys")
    with session_scope(settings.database_url) as s:
        cp = s.scalar(sa.select(AuditCheckpoint).order_by(AuditCheckpoint.seq.desc()))
        assert cp is not None
        forged = other.sign(message(cp.seq, "f" * 64, cp.signed_at))
    _tamper(
        settings,
        "INSERT INTO audit_checkpoint (seq, hash, signed_at, key_id, signature) VALUES (10, :h, 'x', :k, :sig)",
        params={"h": "f" * 64, "k": other.kid, "sig": forged},
    )
    report = verify(settings.database_url, _keys(settings))
    assert report.problem is not None and report.problem.code == "bad_signature"


def test_verify_from_a_record(settings, world):
    _chain(settings, 20)
    _tamper(settings, "UPDATE audit_record SET actor = 'x' WHERE seq = 3")
    assert verify(settings.database_url, _keys(settings), start=4).ok
    assert not verify(settings.database_url, _keys(settings), start=2).ok


def test_sm3_chain(settings, world):
    with session_scope(settings.database_url) as s:
        configure_chain(s, "sm3")
    _chain(settings, 5, every=5)
    rows = _records(settings)
    assert {r.alg for r in rows} == {"sm3"}
    assert verify(settings.database_url, _keys(settings)).ok
    _tamper(settings, "UPDATE audit_record SET action = 'x' WHERE seq = 2")
    report = verify(settings.database_url, _keys(settings))
    assert report.problem is not None and report.problem.seq == 2


def test_unknown_hash_algorithm_is_a_clear_error(settings, world):
    from datatong.errors import AppError

    with pytest.raises(AppError) as err, session_scope(settings.database_url) as s:
        configure_chain(s, "md5")
    assert err.value.code == "audit.unknown_hash"


# ---------------------------------------------------------------- keys and command line


def test_keys_are_published_and_verify_checkpoints(client, world, settings):
    _chain(settings, 10)
    doc = client.get("/.well-known/datatong-keys").json()
    assert doc["keys"] and doc["keys"][0]["kty"] == "OKP" and doc["keys"][0]["crv"] == "Ed25519"
    assert "d" not in doc["keys"][0]  # never the private part
    keys = verify_keys_from_jwks(doc)
    assert verify(settings.database_url, keys).ok
    assert not verify(settings.database_url, {}).ok  # no key, no trust
    pem = next(settings.keys_path.glob("ed25519-*.pem"))
    assert oct(pem.stat().st_mode & 0o777) == "0o600"
    assert b64url(b"") == ""


def _cli(settings: Any, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DATATONG_DATABASE_URL": settings.database_url,
        "DATATONG_VAR_DIR": str(settings.var_dir),
        "DATATONG_KEY_DIR": str(settings.keys_path),
    }
    cmd = [sys.executable, "-m", "datatong.cli", "audit", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)


def test_cli_verify_reports_ok_then_the_tampered_record(settings, world):
    _chain(settings, 20)
    ok = _cli(settings, "verify")
    assert ok.returncode == 0, ok.stderr
    assert "OK" in ok.stderr and "20" in ok.stderr
    _tamper(settings, "DELETE FROM audit_record WHERE seq = 9")
    bad = _cli(settings, "verify")
    assert bad.returncode == 1
    assert "#9" in bad.stderr and "missing" in bad.stderr


def test_cli_checkpoint_signs_the_tip(settings, world):
    _chain(settings, 3, every=100)
    out = _cli(settings, "checkpoint")
    assert out.returncode == 0 and "#3" in out.stderr
    assert verify(settings.database_url, _keys(settings)).last_checkpoint == 3


def test_settings_choose_the_algorithm(settings, world):
    from datatong.app import prepare_database

    prepare_database(replace(settings, audit_hash="sm3"))
    _chain(settings, 1)
    prepare_database(settings)
    _chain(settings, 1)
    assert [r.alg for r in _records(settings)] == ["sm3", "sha256"]
    assert verify(settings.database_url, _keys(settings)).ok


def test_class_edits_imports_and_updates_are_recorded(client, world, settings):
    admin = auth(client, "admin")
    r = client.post("/api/v1/catalog/classes", json={"code": "101009", "name": "流动人口"}, headers=admin)
    assert r.status_code == 201, r.text
    client.patch(f"/api/v1/catalog/classes/{r.json()['id']}", json={"description": "说明"}, headers=admin)
    csv = (
        "信息资源名称,信息资源分类代码,摘要,信息资源格式分类,共享类型,共享方式,更新周期,信息项名称,数据类型,长度\n"
        "户籍人口基本信息,101,全市户籍人口基本信息,数据库,无条件共享,共享平台,每日,身份证号,C,18\n"
    ).encode()
    r = client.post("/api/v1/catalog/import", files={"file": ("目录.csv", csv)}, headers=auth(client, "ga_officer"))
    assert r.status_code < 300, r.text
    entry = create_entry(client)
    put = client.put(
        f"/api/v1/catalog/entries/{entry['id']}",
        json={**entry_body(), "summary": "改过的摘要", "reason": "数据项调整"},
        headers=auth(client, "ga_officer"),
    )
    assert put.status_code == 200, put.text
    rows = {(x.action, x.resource): x for x in _records(settings)}
    assert ("catalog.class.create", "class:101009") in rows
    assert ("catalog.class.update", "class:101009") in rows
    imported = next(x for x in rows.values() if x.action == "catalog.entry.import")
    assert (imported.rows, imported.actor, imported.subject_department) == (1, "ga_officer", "GA")
    update = rows[("catalog.entry.update", entry["code"])]
    assert '"summary"' in (update.detail or "") and "数据项调整" in (update.detail or "")
    assert verify(settings.database_url, _keys(settings)).ok


def test_refused_pages_are_recorded(client, world, settings):
    from test_pages import login

    login(client, "ga_officer")
    r = client.get("/audit", headers={"accept": "text/html"})
    assert r.status_code == 403 and "<html" in r.text.lower()
    last = _records(settings)[-1]
    assert (last.action, last.actor, last.outcome) == ("request.refused", "ga_officer", "refused")
    assert last.resource == "GET /audit"
