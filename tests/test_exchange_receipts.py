"""Exchange request context (X-Datatong-* headers), signed receipts (电子凭证) and the
fail-closed last step of an exchange call (audit record before data)."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import socket
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import CLIENT_ID, auth
from fastapi import Depends, FastAPI, Request, Response
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from datatong.audit.models import AuditRecord
from datatong.audit.writer import writer_for
from datatong.cli import app as cli_app
from datatong.db import session_scope
from datatong.exchange.context import RequestContext, context_from_headers, exchange_context
from datatong.exchange.receipts import (
    RECEIPT_HEADER,
    ReceiptInvalid,
    audit_then_send,
    canonical_query,
    hash_request,
    make_receipt,
    verify_receipt,
)
from datatong.keys import jwks, keyring, new_key
from datatong.settings import Settings
from datatong.web import errors
from datatong.web.deps import get_principal

CTX = RequestContext(system="dt_mz_system", operator="张三", purpose="verification", case="MZ-2026-000123")
BODY = json.dumps({"results": [{"key": "110101199003071234", "items": {"XM": "match"}}]}, ensure_ascii=False).encode()


@pytest.fixture
def key_dir(tmp_path: Path) -> Path:
    keyring(tmp_path / "keys")
    return tmp_path / "keys"


def _receipt(key_dir: Path, body: bytes = BODY) -> str:
    request_hash = hash_request("POST", "/api/v1/exchange/entries/000001/verify", "", b'{"subjects":[]}')
    return make_receipt(key_dir, request_hash, body, 7, "MZ", "000001", CTX).header_value()


def _tamper_claims(header: str, **changes: Any) -> str:
    payload, signature = header.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    raw = json.dumps(claims, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode() + "." + signature


# ---------------------------------------------------------------- receipts


def test_receipt_round_trip_with_the_published_jwks(key_dir: Path) -> None:
    header = _receipt(key_dir)
    assert header.isascii() and "=" not in header
    claims = verify_receipt(header, BODY, jwks(key_dir))
    assert claims.v == 1 and claims.grant_id == 7 and claims.consumer == "MZ" and claims.entry == "000001"
    assert claims.context == CTX.audit_detail() and claims.context["operator"] == "张三"
    assert claims.kid == keyring(key_dir)[-1].kid and claims.time.endswith("Z")
    # The key directory and a {kid: key} map verify too.
    assert verify_receipt(header, BODY, key_dir) == claims
    assert verify_receipt(header, BODY, {k.kid: k for k in keyring(key_dir)}) == claims


def test_a_receipt_stays_valid_after_key_rotation(key_dir: Path) -> None:
    header = _receipt(key_dir)
    old_kid = keyring(key_dir)[-1].kid
    new_key(key_dir)
    newer = _receipt(key_dir)
    assert verify_receipt(header, BODY, jwks(key_dir)).kid == old_kid
    assert verify_receipt(newer, BODY, jwks(key_dir)).kid != old_kid


def test_a_tampered_body_is_refused(key_dir: Path) -> None:
    header = _receipt(key_dir)
    with pytest.raises(ReceiptInvalid) as err:
        verify_receipt(header, BODY.replace(b"match", b"mismatch"), jwks(key_dir))
    assert err.value.code == "receipt.body_mismatch"


@pytest.mark.parametrize("change", [{"grant_id": 8}, {"consumer": "GA"}, {"time": "2020-01-01T00:00:00.000Z"}])
def test_tampered_claims_are_refused(key_dir: Path, change: dict[str, Any]) -> None:
    header = _tamper_claims(_receipt(key_dir), **change)
    with pytest.raises(ReceiptInvalid) as err:
        verify_receipt(header, BODY, jwks(key_dir))
    assert err.value.code == "receipt.bad_signature"


def test_a_body_swapped_together_with_its_hash_is_refused(key_dir: Path) -> None:
    other = b'{"results":[]}'
    header = _tamper_claims(_receipt(key_dir), response_hash=hashlib.sha256(other).hexdigest())
    with pytest.raises(ReceiptInvalid) as err:
        verify_receipt(header, other, jwks(key_dir))
    assert err.value.code == "receipt.bad_signature"


def test_an_unknown_kid_is_refused(key_dir: Path, tmp_path: Path) -> None:
    header = _receipt(key_dir)
    stranger = tmp_path / "other-keys"
    keyring(stranger)
    with pytest.raises(ReceiptInvalid) as err:
        verify_receipt(header, BODY, jwks(stranger))
    assert err.value.code == "receipt.unknown_kid"
    # A signature by another key under our kid is a bad signature, not an unknown key.
    forged = make_receipt(stranger, "0" * 64, BODY, 7, "MZ", "000001", CTX).header_value()
    forged = _tamper_claims(forged, kid=keyring(key_dir)[-1].kid)
    with pytest.raises(ReceiptInvalid) as err:
        verify_receipt(forged, BODY, jwks(key_dir))
    assert err.value.code == "receipt.bad_signature"


@pytest.mark.parametrize("header", ["", "abc", "a.b.c", "!!!.???", base64.urlsafe_b64encode(b"[1]").decode() + ".x"])
def test_malformed_receipts_are_refused(key_dir: Path, header: str) -> None:
    with pytest.raises(ReceiptInvalid) as err:
        verify_receipt(header, BODY, jwks(key_dir))
    assert err.value.code == "receipt.malformed"


def test_request_hash_is_canonical_and_binding(key_dir: Path) -> None:
    path = "/api/v1/exchange/entries/000001/query"
    assert hash_request("post", path, "b=2&a=1&a=0", b"{}") == hash_request("POST", path, "a=0&a=1&b=2", b"{}")
    assert hash_request("GET", path, {"b": "2", "a": ["1", "0"]}, b"") == hash_request("GET", path, "a=0&a=1&b=2", b"")
    assert hash_request("POST", path, "", b"{}") != hash_request("POST", path, "", b"{ }")
    assert hash_request("POST", path, "", b"{}") != hash_request("POST", path + "x", "", b"{}")
    assert canonical_query("q=%E4%BA%BA%E5%8F%A3&x=a+b") == "q=%E4%BA%BA%E5%8F%A3&x=a%20b"
    request_hash = hash_request("POST", path, "", b"{}")
    header = make_receipt(key_dir, request_hash, BODY, 1, "MZ", "000001", CTX).header_value()
    assert verify_receipt(header, BODY, key_dir, request_hash=request_hash).request_hash == request_hash
    with pytest.raises(ReceiptInvalid) as err:
        verify_receipt(header, BODY, key_dir, request_hash=hash_request("POST", path, "", b"{ }"))
    assert err.value.code == "receipt.request_mismatch"


# ---------------------------------------------------------------- CLI


def test_cli_verifies_a_receipt_file(key_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "response.json").write_bytes(BODY)
    (tmp_path / "jwks.json").write_text(json.dumps(jwks(key_dir)))
    doc = tmp_path / "receipt.json"
    doc.write_text(json.dumps({"receipt": _receipt(key_dir), "body_file": "response.json"}))
    result = CliRunner().invoke(cli_app, ["receipt", "verify", str(doc), "--jwks", str(tmp_path / "jwks.json")])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["ok"] is True and out["claims"]["context"]["operator"] == "张三"


def test_cli_refuses_a_tampered_body_with_exit_1(key_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "jwks.json").write_text(json.dumps(jwks(key_dir)))
    (tmp_path / "response.json").write_bytes(BODY.replace(b"match", b"mismatch"))
    args = ["receipt", "verify", "--receipt", _receipt(key_dir), "--body", str(tmp_path / "response.json")]
    result = CliRunner().invoke(cli_app, [*args, "--jwks", str(tmp_path / "jwks.json")])
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {
        "ok": False,
        "code": "receipt.body_mismatch",
        "message": "The response body does not match the receipt's response hash",
    }
    (tmp_path / "response.json").write_bytes(BODY)
    result = CliRunner().invoke(cli_app, [*args, "--jwks", str(tmp_path / "jwks.json")])
    assert result.exit_code == 0, result.output


def test_cli_fetches_the_jwks_from_the_platform(
    key_dir: Path, tmp_path: Path, live_server: str, settings: Settings
) -> None:
    (tmp_path / "response.json").write_bytes(BODY)
    header = _receipt(settings.keys_path)
    args = ["receipt", "verify", "--receipt", header, "--body", str(tmp_path / "response.json")]
    result = CliRunner().invoke(cli_app, [*args, "--jwks", live_server + "/.well-known/datatong-keys"])
    assert result.exit_code == 0, result.output
    # Against another platform's keys the same receipt is refused.
    (tmp_path / "jwks.json").write_text(json.dumps(jwks(key_dir)))
    result = CliRunner().invoke(cli_app, [*args, "--jwks", str(tmp_path / "jwks.json")])
    assert result.exit_code == 1 and json.loads(result.stdout)["code"] == "receipt.unknown_kid"


# ---------------------------------------------------------------- request context


def _context_app(settings: Settings, audit_settings: Settings | None = None) -> FastAPI:
    """A tiny app with the real dependencies (principal from the test database) and the
    real audit writer; ``audit_settings`` may point the trail at a broken database."""
    app = FastAPI()
    app.state.settings = settings
    errors.install(app)

    @app.get("/ctx")
    def ctx_route(ctx: RequestContext = Depends(exchange_context)) -> dict[str, str]:
        return ctx.audit_detail()

    @app.post("/data")
    async def data_route(
        request: Request, ctx: RequestContext = Depends(exchange_context), principal: Any = Depends(get_principal)
    ) -> Response:
        raw = await request.body()
        request_hash = hash_request(request.method, request.url.path, str(request.url.query), raw)
        body = json.dumps({"rows": [{"XM": "李*"}], "marker": "SECRET-ROW"}, ensure_ascii=False).encode()
        from starlette.concurrency import run_in_threadpool

        return await run_in_threadpool(
            audit_then_send,
            audit_settings or settings,
            principal,
            "exchange.test",
            body,
            request_hash=request_hash,
            ctx=ctx,
            entry="000001",
            grant_id=3,
            rows=1,
            items=["XM"],
        )

    return app


def _headers(**extra: str) -> dict[str, str]:
    headers = {
        "X-Datatong-System": "mz-hunyin",
        "X-Datatong-Operator": "%E5%BC%A0%E4%B8%89",  # 张三
        "X-Datatong-Purpose": "verification",
        "X-Datatong-Case": "MZ-2026-000123",
    }
    headers.update(extra)
    return {k: v for k, v in headers.items() if v != "-"}


def test_context_from_headers_with_percent_encoded_chinese(client: TestClient, settings: Settings) -> None:
    test = TestClient(_context_app(settings))
    h = auth(client, "mz_officer")
    r = test.get("/ctx", headers={**h, **_headers(**{"X-Datatong-Case": "%E6%B0%91%E5%A9%9A-2026-7"})})
    assert r.status_code == 200, r.text
    assert r.json() == {"system": "mz-hunyin", "operator": "张三", "purpose": "verification", "case": "民婚-2026-7"}
    # Raw UTF-8 bytes in a header are accepted too.
    raw = {**h, **_headers()}
    raw["X-Datatong-Operator"] = "王五".encode().decode("latin-1")
    r = test.get("/ctx", headers={k: v.encode("latin-1") for k, v in raw.items()})
    assert r.status_code == 200 and r.json()["operator"] == "王五"


@pytest.mark.parametrize(
    "header", ["X-Datatong-System", "X-Datatong-Operator", "X-Datatong-Purpose", "X-Datatong-Case"]
)
def test_missing_context_is_refused_naming_the_header(client: TestClient, settings: Settings, header: str) -> None:
    test = TestClient(_context_app(settings))
    for value in ("-", "   "):
        r = test.get("/ctx", headers={**auth(client, "mz_officer"), **_headers(**{header: value})})
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["code"] == "exchange.context_missing" and error["field"] == header
        assert header in error["message"] and header in error["message_en"]


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("X-Datatong-Operator", "%E5%BC%A0%0A%E4%B8%89"),  # newline
        ("X-Datatong-Operator", "abc%00"),  # NUL
        ("X-Datatong-Case", "A%E2%80%AEB"),  # right-to-left override
        ("X-Datatong-Case", "%E5%BC%A0%FF"),  # not UTF-8
        ("X-Datatong-Case", "x" * 101),
        ("X-Datatong-Operator", "%E5%BC%A0" * 65),
        ("X-Datatong-System", "s" * 65),
        ("X-Datatong-Purpose", "curiosity"),
    ],
)
def test_invalid_context_is_refused(client: TestClient, settings: Settings, header: str, value: str) -> None:
    test = TestClient(_context_app(settings))
    r = test.get("/ctx", headers={**auth(client, "mz_officer"), **_headers(**{header: value})})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "exchange.context_invalid" and r.json()["error"]["field"] == header


def test_context_limits_are_inclusive() -> None:
    headers = {k.lower(): v for k, v in _headers(**{"X-Datatong-Case": "x" * 100}).items()}
    headers["x-datatong-operator"] = "%E5%BC%A0" * 64
    from starlette.datastructures import Headers

    ctx = context_from_headers(Headers(headers))
    assert len(ctx.case) == 100 and ctx.operator == "张" * 64 and ctx.purpose_label == "数据校核"


def test_a_system_is_its_client_id(client: TestClient, settings: Settings) -> None:
    test = TestClient(_context_app(settings))
    h = auth(client, "client")
    r = test.get("/ctx", headers={**h, **_headers(**{"X-Datatong-System": "-"})})
    assert r.status_code == 200 and r.json()["system"] == CLIENT_ID
    r = test.get("/ctx", headers={**h, **_headers(**{"X-Datatong-System": CLIENT_ID})})
    assert r.status_code == 200
    r = test.get("/ctx", headers={**h, **_headers(**{"X-Datatong-System": "someone-else"})})
    assert r.status_code == 422 and r.json()["error"]["code"] == "exchange.context_invalid"


def test_anonymous_callers_are_told_to_log_in_first(client: TestClient, settings: Settings) -> None:
    r = TestClient(_context_app(settings)).get("/ctx", headers=_headers())
    assert r.status_code == 401


# ---------------------------------------------------------------- fail closed


def test_audit_then_send_records_before_sending(client: TestClient, settings: Settings) -> None:
    test = TestClient(_context_app(settings))
    r = test.post("/data?b=2&a=1", content=b'{"q":1}', headers={**auth(client, "mz_officer"), **_headers()})
    assert r.status_code == 200, r.text
    claims = verify_receipt(r.headers[RECEIPT_HEADER], r.content, jwks(settings.keys_path))
    assert claims.request_hash == hash_request("POST", "/data", "a=1&b=2", b'{"q":1}')
    with session_scope(settings.database_url) as s:
        rec = s.scalars(select(AuditRecord).where(AuditRecord.action == "exchange.test")).one()
        detail = json.loads(rec.detail or "{}")
        assert rec.purpose == "verification" and rec.grant_id == 3 and rec.rows == 1 and rec.actor == "mz_officer"
    assert detail["context"] == {
        "system": "mz-hunyin",
        "operator": "张三",
        "purpose": "verification",
        "case": "MZ-2026-000123",
    }
    assert detail["receipt"]["response_hash"] == claims.response_hash


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("broken", ["no_schema", "server_down"])
def test_no_audit_record_no_data(client: TestClient, settings: Settings, tmp_path: Path, broken: str) -> None:
    """Fail closed with a real failure of the real writer: a database without the audit
    tables, or a PostgreSQL port where nothing listens."""
    if broken == "no_schema":
        url = f"sqlite:///{tmp_path / 'empty.db'}"
    else:
        url = f"postgresql+psycopg://postgres@127.0.0.1:{_closed_port()}/nothing_{uuid.uuid4().hex[:6]}"
    audit_settings = dataclasses.replace(settings, database_url=url)
    test = TestClient(_context_app(settings, audit_settings))
    try:
        r = test.post("/data", content=b"{}", headers={**auth(client, "mz_officer"), **_headers()})
    finally:
        writer_for(url, settings.keys_path).stop()
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "audit.unavailable"
    assert "SECRET-ROW" not in r.text and RECEIPT_HEADER.lower() not in {k.lower() for k in r.headers}
    with session_scope(settings.database_url) as s:
        assert s.scalars(select(AuditRecord).where(AuditRecord.action == "exchange.test")).first() is None
