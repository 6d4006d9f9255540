"""The platform's Ed25519 signing keys (audit checkpoints now, receipts later).

Keys live in files under ``settings.keys_path`` — never in the database, so whoever can
rewrite the database still cannot sign. Every ``ed25519-*.pem`` there is published in
the JWKS at ``/.well-known/datatong-keys``; the newest one signs. A key is made on
first start; ``datatong keys rotate`` adds a new one and keeps the old for verifying.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class VerifyKey:
    kid: str
    public: Ed25519PublicKey

    def jwk(self) -> dict[str, str]:
        raw = self.public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw), "kid": self.kid, "use": "sig", "alg": "EdDSA"}

    def verify(self, signature: str, message: bytes) -> bool:
        try:
            self.public.verify(b64url_decode(signature), message)
        except (InvalidSignature, ValueError):
            return False
        return True


@dataclass(frozen=True)
class SigningKey(VerifyKey):
    private: Ed25519PrivateKey

    def sign(self, message: bytes) -> str:
        return b64url(self.private.sign(message))


def thumbprint(public: Ed25519PublicKey) -> str:
    """RFC 7638 JWK thumbprint: a key id anyone can recompute from the public key."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    canonical = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": b64url(raw)}, separators=(",", ":"))
    return b64url(hashlib.sha256(canonical.encode()).digest())


def _load(path: Path) -> SigningKey:
    private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(private, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 key")
    public = private.public_key()
    return SigningKey(thumbprint(public), public, private)


def new_key(key_dir: Path) -> SigningKey:
    """Write a new key file (mode 600) and return it; it becomes the signing key."""
    key_dir.mkdir(parents=True, exist_ok=True)
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    path = key_dir / f"ed25519-{stamp}.pem"
    # O_EXCL + 0600: never readable by others, never overwriting a key.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    _keyring.cache_clear()
    return _load(path)


@lru_cache
def _keyring(key_dir: Path) -> tuple[SigningKey, ...]:
    return tuple(_load(p) for p in sorted(key_dir.glob("ed25519-*.pem")))


def keyring(key_dir: Path) -> tuple[SigningKey, ...]:
    """All keys, oldest first; makes the first key when there is none."""
    keys = _keyring(key_dir)
    if not keys:
        new_key(key_dir)
        keys = _keyring(key_dir)
    return keys


def signing_key(key_dir: Path) -> SigningKey:
    return keyring(key_dir)[-1]


def jwks(key_dir: Path) -> dict[str, Any]:
    return {"keys": [k.jwk() for k in reversed(keyring(key_dir))]}


def verify_keys_from_jwks(document: dict[str, Any]) -> dict[str, VerifyKey]:
    """Keys from a published JWKS, for verifying where the key files are not at hand."""
    found = {}
    for jwk in document.get("keys", []):
        if jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519":
            public = Ed25519PublicKey.from_public_bytes(b64url_decode(jwk["x"]))
            found[thumbprint(public)] = VerifyKey(thumbprint(public), public)
    return found
