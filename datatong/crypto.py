"""Secrets at rest (TOTP secrets now, data-source passwords later): authenticated
encryption with a data key that lives outside the database.

A sealed value is one line of text::

    v1.<alg>.<kid>.<nonce>.<ciphertext+tag>        (nonce and ciphertext base64url)

* ``alg`` — ``aes`` (AES-256-GCM) or ``sm4`` (SM4-GCM, GB/T 32907, the national
  cipher); ``settings.cipher`` (``DATATONG_CIPHER``) picks it for new values, unsealing
  reads it from the value, so switching the cipher never strands old values.
* ``kid`` — which data key: the first 16 hex digits of the key's SHA-256.
* The key file ``<keys_path>/data.key`` holds 32 random bytes (base64, mode 600), made on
  first use. Retired keys stay as ``data-<kid>.key`` so old values still open;
  ``rotate_data_key`` retires the current key and makes a new one (``needs_reseal`` tells
  a caller to re-seal a value on its next write).
* Each algorithm uses its own subkey, derived with HKDF (SHA-256 for AES, SM3 for SM4).
* The associated data binds a value to where it belongs (e.g. ``user:17:totp``) and to its
  own header: a value copied to another row, or with an altered header, does not open.

Whoever reads a database dump sees only ciphertext; the key is in the key directory,
which backups of the database do not include (docs/operations.md).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from datatong.errors import AppError
from datatong.settings import Settings, get_settings

VERSION = "v1"
CIPHERS = ("aes", "sm4")
KEY_FILE = "data.key"
NONCE_BYTES = 12
TAG_BYTES = 16


class CryptoError(AppError):
    """A sealed value that cannot be opened is the platform's fault, not the caller's."""

    status_code = 500


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class DataKey:
    kid: str
    material: bytes

    def subkey(self, alg: str) -> bytes:
        if alg == "sm4":
            return HKDF(hashes.SM3(), 16, None, b"datatong/sm4-gcm").derive(self.material)
        return HKDF(hashes.SHA256(), 32, None, b"datatong/aes-256-gcm").derive(self.material)


def key_id(material: bytes) -> str:
    return hashlib.sha256(material).hexdigest()[:16]


def _read_key(path: Path) -> DataKey:
    try:
        material = base64.b64decode(path.read_text().strip(), validate=True)
    except (ValueError, OSError) as exc:
        raise CryptoError(
            "crypto.key_unreadable",
            f"数据加密密钥文件无法读取：{path.name}",
            f"The data-encryption key file cannot be read: {path.name}",
        ) from exc
    if len(material) != 32:
        raise CryptoError(
            "crypto.key_unreadable",
            f"数据加密密钥文件应为 32 字节：{path.name}",
            f"The data-encryption key file must hold 32 bytes: {path.name}",
        )
    return DataKey(key_id(material), material)


def _write_new_key(path: Path) -> None:
    """32 random bytes, base64, mode 600; never overwrites (O_EXCL)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")


class Keyring:
    """The data keys of one key directory: the current one seals, all of them open."""

    def __init__(self, key_dir: Path) -> None:
        self.key_dir = key_dir
        self._lock = threading.Lock()
        self._current: DataKey | None = None
        self._by_kid: dict[str, DataKey] = {}

    def _load(self) -> None:
        path = self.key_dir / KEY_FILE
        if not path.exists():
            with contextlib.suppress(FileExistsError):  # another process made it first
                _write_new_key(path)
        current = _read_key(path)
        found = {current.kid: current}
        for retired in sorted(self.key_dir.glob("data-*.key")):
            key = _read_key(retired)
            found[key.kid] = key
        self._current, self._by_kid = current, found

    def current(self) -> DataKey:
        with self._lock:
            if self._current is None:
                self._load()
            assert self._current is not None
            return self._current

    def get(self, kid: str) -> DataKey | None:
        with self._lock:
            if self._current is None or kid not in self._by_kid:
                self._load()  # a key rotated by another process
            return self._by_kid.get(kid)


_keyrings: dict[Path, Keyring] = {}
_keyrings_lock = threading.Lock()


def keyring(key_dir: Path) -> Keyring:
    with _keyrings_lock:
        ring = _keyrings.get(key_dir)
        if ring is None:
            ring = _keyrings[key_dir] = Keyring(key_dir)
        return ring


def _aead(alg: str, key: bytes, nonce: bytes, tag: bytes | None = None) -> Cipher:  # type: ignore[type-arg]
    algorithm = algorithms.SM4(key) if alg == "sm4" else algorithms.AES(key)
    return Cipher(algorithm, modes.GCM(nonce, tag))


def _header(alg: str, kid: str) -> str:
    return f"{VERSION}.{alg}.{kid}"


def _associated(header: str, aad: str) -> bytes:
    return f"{header}|{aad}".encode()


def seal(plaintext: str, *, aad: str, settings: Settings | None = None) -> str:
    """Encrypt ``plaintext`` for the place named by ``aad`` (e.g. ``user:17:totp``)."""
    settings = settings or get_settings()
    alg = settings.cipher
    if alg not in CIPHERS:
        raise CryptoError(
            "crypto.cipher_unknown",
            f"不支持的加密算法 {alg}（可选 aes、sm4）",
            f"Unknown cipher {alg} (aes or sm4)",
        )
    key = keyring(settings.keys_path).current()
    header = _header(alg, key.kid)
    nonce = secrets.token_bytes(NONCE_BYTES)
    enc = _aead(alg, key.subkey(alg), nonce).encryptor()
    enc.authenticate_additional_data(_associated(header, aad))
    body = enc.update(plaintext.encode()) + enc.finalize() + enc.tag
    return f"{header}.{_b64(nonce)}.{_b64(body)}"


def unseal(token: str, *, aad: str, settings: Settings | None = None) -> str:
    """Decrypt a value made by ``seal`` with the same ``aad``; refuses anything altered."""
    settings = settings or get_settings()
    parts = (token or "").split(".")
    if len(parts) != 5 or parts[0] != VERSION or parts[1] not in CIPHERS:
        raise CryptoError(
            "crypto.token_malformed",
            "加密数据格式无法识别",
            "The sealed value is not in a known format",
        )
    _, alg, kid, nonce_text, body_text = parts
    key = keyring(settings.keys_path).get(kid)
    if key is None:
        raise CryptoError(
            "crypto.key_missing",
            f"解密所需的数据密钥（{kid}）不在密钥目录中",
            f"The data key {kid} needed to decrypt is not in the key directory",
        )
    try:
        nonce, body = _unb64(nonce_text), _unb64(body_text)
        if len(nonce) != NONCE_BYTES or len(body) < TAG_BYTES:
            raise ValueError("short")
        dec = _aead(alg, key.subkey(alg), nonce, body[-TAG_BYTES:]).decryptor()
        dec.authenticate_additional_data(_associated(_header(alg, kid), aad))
        return (dec.update(body[:-TAG_BYTES]) + dec.finalize()).decode()
    except (InvalidTag, ValueError, UnicodeDecodeError) as exc:
        raise CryptoError(
            "crypto.decrypt_failed",
            "加密数据校验失败：密钥不符或数据已被篡改",
            "The sealed value does not verify: wrong key or tampered data",
        ) from exc


def needs_reseal(token: str, settings: Settings | None = None) -> bool:
    """True when ``token`` was sealed with another cipher or a retired key."""
    settings = settings or get_settings()
    parts = (token or "").split(".")
    if len(parts) != 5:
        return True
    return parts[1] != settings.cipher or parts[2] != keyring(settings.keys_path).current().kid


def rotate_data_key(key_dir: Path) -> str:
    """Retire the current data key (kept as ``data-<kid>.key`` to open old values) and
    make a new one; returns the new key's id. Other processes pick it up at restart."""
    ring = keyring(key_dir)
    with ring._lock:
        path = key_dir / KEY_FILE
        if path.exists():
            old = _read_key(path)
            path.rename(key_dir / f"data-{old.kid}.key")
        _write_new_key(path)
        ring._current = None
    return ring.current().kid
