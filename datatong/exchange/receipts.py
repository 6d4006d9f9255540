"""Signed receipts (电子凭证) of exchange responses.

Every exchange response carries the header ``X-Datatong-Receipt``: a detached Ed25519
signature by the platform's current key (datatong/keys.py, published at
``/.well-known/datatong-keys``) over a canonical JSON of

    {"v": 1, "request_hash": …, "response_hash": …, "time": …, "grant_id": …,
     "consumer": …, "entry": …, "context": {system, operator, purpose, case}, "kid": …}

* ``request_hash`` — SHA-256 (hex) of the canonical request (``canonical_request``):
  ``METHOD \\n path \\n sorted query \\n body bytes``, binding the answer to the question
  as X-Road's request hash does;
* ``response_hash`` — SHA-256 (hex) of the exact response body bytes;
* ``time`` — UTC, ISO 8601 with milliseconds and ``Z``.

The header value is ``base64url(canonical JSON) + "." + base64url(signature)`` (no
padding); canonical JSON is UTF-8, keys sorted, no spaces, non-ASCII kept as is. Whoever
keeps the header and the body can prove later what they received, when and from whom,
with only the public JWKS: ``verify_receipt`` here, ``datatong receipt verify`` or the
recipe in docs/api.md.

Fail closed: ``audit_then_send`` writes the audit record of a call before its data leaves;
when the trail cannot be written it raises AuditUnavailable (503) and nothing is sent.
"""

from __future__ import annotations

import binascii
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

from fastapi import Response

from datatong.audit.writer import log_access
from datatong.errors import AppError
from datatong.exchange.context import RequestContext
from datatong.keys import SigningKey, VerifyKey, b64url, b64url_decode, keyring, signing_key, verify_keys_from_jwks

RECEIPT_HEADER = "X-Datatong-Receipt"
VERSION = 1
_UNRESERVED = "-_.~"


class ReceiptInvalid(AppError):
    """A receipt that does not prove what it claims; ``code`` says why."""

    status_code = 422


def _fail(code: str, message: str, message_en: str) -> ReceiptInvalid:
    return ReceiptInvalid(f"receipt.{code}", message, message_en)


# ---------------------------------------------------------------- canonical forms


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode()


QueryLike = str | Mapping[str, Any] | Sequence[tuple[str, Any]] | None


def canonical_query(query: QueryLike) -> str:
    """``k=v`` pairs sorted by key then value, each percent-encoded as UTF-8 (RFC 3986
    unreserved characters kept), joined by ``&``; a raw query string is parsed first
    (``+`` is a space, blank values kept). A mapping's list values give repeated keys."""
    if not query:
        return ""
    pairs: list[tuple[str, str]] = []
    if isinstance(query, str):
        pairs = parse_qsl(query, keep_blank_values=True)
    else:
        items = query.items() if isinstance(query, Mapping) else query
        for key, value in items:
            values = value if isinstance(value, list | tuple) else [value]
            pairs.extend((str(key), "" if v is None else str(v)) for v in values)
    return "&".join(f"{quote(k, safe=_UNRESERVED)}={quote(v, safe=_UNRESERVED)}" for k, v in sorted(pairs))


def canonical_request(method: str, path: str, query: QueryLike, body: bytes) -> bytes:
    """``METHOD`` (upper case), the path as the server routed it (percent-decoded, UTF-8),
    the canonical query and the body bytes, separated by newlines."""
    return b"\n".join((method.upper().encode(), path.encode(), canonical_query(query).encode(), body))


def hash_request(method: str, path: str, query: QueryLike, body: bytes) -> str:
    return hashlib.sha256(canonical_request(method, path, query, body)).hexdigest()


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ---------------------------------------------------------------- signing


@dataclass(frozen=True)
class ReceiptClaims:
    v: int
    request_hash: str
    response_hash: str
    time: str
    grant_id: int | None
    consumer: str
    entry: str
    context: dict[str, str] | None
    kid: str

    def as_dict(self) -> dict[str, Any]:
        # By hand: dataclasses.asdict deep-copies and costs a third of a signature.
        return {
            "v": self.v,
            "request_hash": self.request_hash,
            "response_hash": self.response_hash,
            "time": self.time,
            "grant_id": self.grant_id,
            "consumer": self.consumer,
            "entry": self.entry,
            "context": self.context,
            "kid": self.kid,
        }


@dataclass(frozen=True)
class Receipt:
    claims: ReceiptClaims
    payload: bytes  # the canonical JSON that was signed
    signature: str  # base64url

    def header_value(self) -> str:
        return b64url(self.payload) + "." + self.signature


def make_receipt(
    keys_path: Path,
    request_hash: str,
    response_body: bytes,
    grant_id: int | None,
    consumer: str,
    entry: str,
    ctx: RequestContext | None,
) -> Receipt:
    """Sign a receipt for ``response_body`` (the exact bytes sent) with the current key.

    The key object comes from keys.py's cache (loaded once per process and key set), so a
    receipt costs one SHA-256 of the body, a small JSON and one Ed25519 signature."""
    claims, payload, key = unsigned_receipt(keys_path, request_hash, response_body, grant_id, consumer, entry, ctx)
    return Receipt(claims, payload, key.sign(payload))


def unsigned_receipt(
    keys_path: Path,
    request_hash: str,
    response_body: bytes,
    grant_id: int | None,
    consumer: str,
    entry: str,
    ctx: RequestContext | None,
) -> tuple[ReceiptClaims, bytes, SigningKey]:
    """A receipt's claims, the canonical payload to sign and the key to sign it with
    (``make_receipt`` signs at once; the verification's fast lane has the audit writer
    sign once the record is committed)."""
    key = signing_key(keys_path)
    claims = ReceiptClaims(
        v=VERSION,
        request_hash=request_hash,
        response_hash=hashlib.sha256(response_body).hexdigest(),
        time=utc_now_iso(),
        grant_id=grant_id,
        consumer=consumer,
        entry=entry,
        context=ctx.audit_detail() if ctx is not None else None,
        kid=key.kid,
    )
    return claims, canonical_json(claims.as_dict()), key


# ---------------------------------------------------------------- verifying

KeysLike = Mapping[str, Any] | Path | Iterable[VerifyKey]


def _key_map(keys: KeysLike) -> dict[str, VerifyKey]:
    """Verification keys from a JWKS document, a {kid: VerifyKey} map, a key directory
    or an iterable of keys."""
    if isinstance(keys, Path):
        return {k.kid: k for k in keyring(keys)}
    if isinstance(keys, Mapping):
        if "keys" in keys and isinstance(keys["keys"], list):
            return verify_keys_from_jwks(dict(keys))
        return {str(kid): k for kid, k in keys.items() if isinstance(k, VerifyKey)}
    return {k.kid: k for k in keys}


def parse_receipt(header_value: str) -> tuple[ReceiptClaims, bytes, str]:
    """The claims, signed bytes and signature of a header value — NOT verified."""
    try:
        payload_b64, signature = header_value.strip().split(".")
        payload = b64url_decode(payload_b64)
        data = json.loads(payload)
        claims = ReceiptClaims(**data)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise _fail("malformed", "电子凭证格式不正确", "The receipt is malformed") from None
    if claims.v != VERSION:
        raise _fail("malformed", f"不支持的电子凭证版本 {claims.v}", f"Unsupported receipt version {claims.v}")
    return claims, payload, signature


def verify_receipt(
    header_value: str,
    response_body: bytes,
    keys: KeysLike,
    *,
    request_hash: str | None = None,
) -> ReceiptClaims:
    """Check a receipt against the body received and the platform's public keys (a JWKS
    from ``/.well-known/datatong-keys``, a {kid: key} map or the key directory); returns
    the claims, or raises ReceiptInvalid: ``receipt.malformed``, ``receipt.unknown_kid``,
    ``receipt.bad_signature``, ``receipt.body_mismatch`` or (when ``request_hash`` is
    given) ``receipt.request_mismatch``."""
    claims, payload, signature = parse_receipt(header_value)
    key = _key_map(keys).get(claims.kid)
    if key is None:
        raise _fail(
            "unknown_kid",
            f"签名密钥 {claims.kid} 不在平台公钥集中",
            f"The signing key {claims.kid} is not among the platform's keys",
        )
    if not key.verify(signature, payload):
        raise _fail(
            "bad_signature", "电子凭证签名无效（凭证被篡改或非本平台签发）", "The receipt's signature is invalid"
        )
    if hashlib.sha256(response_body).hexdigest() != claims.response_hash:
        raise _fail(
            "body_mismatch",
            "响应内容与电子凭证不符（内容被改动）",
            "The response body does not match the receipt's response hash",
        )
    if request_hash is not None and request_hash != claims.request_hash:
        raise _fail("request_mismatch", "请求与电子凭证不符", "The request does not match the receipt's request hash")
    return claims


# ---------------------------------------------------------------- fail closed


def audit_then_send(
    settings: Any,
    principal: Any,
    action: str,
    body: bytes,
    *,
    request_hash: str,
    ctx: RequestContext,
    entry: str,
    grant_id: int | None,
    consumer: str | None = None,
    rows: int | None = None,
    items: Sequence[str] | None = None,
    subject_department: str | None = None,
    detail: dict[str, Any] | None = None,
    media_type: str = "application/json",
    status_code: int = 200,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """The last step of an exchange call: sign the receipt, write the audit record (with
    the request context and both hashes) through the group-commit writer, and only then
    build the response. When the record cannot be written ``log_access`` raises
    AuditUnavailable (503 ``audit.unavailable``) and the data never leaves.

    For reads only (see ``log_access``): the caller's own transaction must not have
    written anything the audit writer would wait for."""
    receipt = make_receipt(
        settings.keys_path,
        request_hash,
        body,
        grant_id,
        consumer if consumer is not None else (getattr(principal, "department_code", None) or ""),
        entry,
        ctx,
    )
    log_access(
        settings,
        principal,
        action,
        resource=entry,
        subject_department=subject_department,
        items=items,
        purpose=ctx.purpose,
        grant_id=grant_id,
        rows=rows,
        detail={
            **(detail or {}),
            "context": ctx.audit_detail(),
            "receipt": {
                "request_hash": request_hash,
                "response_hash": receipt.claims.response_hash,
                "time": receipt.claims.time,
                "kid": receipt.claims.kid,
            },
        },
    )
    return Response(
        body,
        status_code=status_code,
        media_type=media_type,
        headers={**(headers or {}), RECEIPT_HEADER: receipt.header_value()},
    )


# ---------------------------------------------------------------- bulk export manifests

MANIFEST_VERSION = 1


def sign_manifest(keys_path: Path, manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest of a bulk export (rows, bytes, SHA-256 of exactly the bytes sent, …)
    signed like a receipt: ``signature`` is the platform's Ed25519 signature (base64url)
    over the canonical JSON of every other field, ``kid`` naming the key."""
    key = signing_key(keys_path)
    body = {**manifest, "v": MANIFEST_VERSION, "kid": key.kid}
    body.pop("signature", None)
    return {**body, "signature": key.sign(canonical_json(body))}


def verify_manifest(manifest: Mapping[str, Any], keys: KeysLike, *, body: bytes | None = None) -> dict[str, Any]:
    """Check a signed manifest against the platform's public keys and, when ``body`` (the
    file received) is given, its SHA-256; returns the manifest or raises ReceiptInvalid
    (``receipt.malformed``, ``receipt.unknown_kid``, ``receipt.bad_signature``,
    ``receipt.body_mismatch``)."""
    signed = dict(manifest)
    signature = signed.pop("signature", None)
    if not isinstance(signature, str) or signed.get("v") != MANIFEST_VERSION or "kid" not in signed:
        raise _fail("malformed", "导出清单格式不正确", "The export manifest is malformed")
    key = _key_map(keys).get(str(signed["kid"]))
    if key is None:
        raise _fail(
            "unknown_kid",
            f"签名密钥 {signed['kid']} 不在平台公钥集中",
            f"The signing key {signed['kid']} is not among the platform's keys",
        )
    if not key.verify(signature, canonical_json(signed)):
        raise _fail("bad_signature", "导出清单签名无效（被篡改或非本平台签发）", "The manifest's signature is invalid")
    if body is not None and hashlib.sha256(body).hexdigest() != signed.get("sha256"):
        raise _fail(
            "body_mismatch",
            "文件内容与导出清单不符（内容被改动或不完整）",
            "The file does not match the manifest's SHA-256",
        )
    return dict(manifest)
