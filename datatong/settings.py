"""Settings read from the environment (DATATONG_*), with defaults for a laptop."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path


def _var_dir() -> Path:
    return Path(os.environ.get("DATATONG_VAR_DIR", "./var")).resolve()


def _default_db_url() -> str:
    return f"sqlite:///{_var_dir() / 'datatong.db'}"


def _secret_key(var_dir: Path) -> str:
    """The signing key for sessions and tokens: from the environment, else a key file.

    Kept outside the database so a database dump does not carry it.
    """
    env = os.environ.get("DATATONG_SECRET_KEY")
    if env:
        return env
    path = var_dir / "secret.key"
    if path.exists():
        return path.read_text().strip()
    var_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    path.write_text(key)
    path.chmod(0o600)
    return key


@dataclass(frozen=True)
class Settings:
    database_url: str
    var_dir: Path
    secret_key: str
    # Who may read the catalog without logging in: "open" (entries open to the public),
    # "published" (every published entry) or "none".
    anonymous_catalog: str = "open"
    access_token_minutes: int = 60
    client_token_minutes: int = 15
    session_hours: int = 8
    cookie_secure: bool = False
    # Audit trail: hash algorithm of new records ("sha256" or the national "sm3"), how
    # many records between signed checkpoints, and whether reads of single resources
    # are recorded too (turned off only by the benchmark's baseline).
    audit_hash: str = "sha256"
    audit_checkpoint_every: int = 1000
    audit_reads: bool = True
    # Where the platform's signing keys live (outside the database); default var/keys.
    key_dir: Path | None = None
    # Identity (docs/deployment.md): cipher of secrets at rest ("aes" = AES-256-GCM or the
    # national "sm4" = SM4-GCM), idle timeout of page sessions, login attempts per minute
    # per client address and per account (an in-process limiter), and the OpenID Connect
    # provider of 统一身份认证 (offered on the login page only when issuer and client are set).
    cipher: str = "aes"
    session_idle_minutes: int = 30
    login_rate_per_minute: int = 10
    oidc_issuer: str | None = None
    oidc_client_id: str | None = None
    oidc_client_secret: str | None = None
    oidc_username_claim: str = "preferred_username"
    # Sharing deadlines in working days (datatong/sharing/workdays.py; local rules differ,
    # some cities give providers 5) and the reminders sent at N working days left.
    provider_answer_days: int = 10
    compliance_review_days: int = 2
    catalog_update_days: int = 15
    need_answer_days: int = 10
    reminder_days: tuple[int, ...] = (3, 1)
    # A year whose holidays nobody entered: "error" refuses to count (sharing.calendar_unknown_year),
    # "weekends" counts Monday–Friday and marks the deadline 暂估 (provisional).
    calendar_fallback: str = "error"
    # Subscriptions (exchange/subscriptions.py): the bus of captured changes ("" = the
    # database outbox; "nats://host:4222" = NATS JetStream), changes per webhook POST,
    # tries before a batch is dead-lettered and the first retry delay (doubling, ≤ 1 h).
    bus_url: str = ""
    subscription_batch: int = 500
    subscription_max_attempts: int = 8
    subscription_retry_seconds: float = 5.0
    # Loopback addresses (networks) the platform may connect to for HTTP sources and
    # webhooks (exchange/netguard.py); link-local and metadata addresses never.
    outbound_allow: tuple[str, ...] = ()
    upload_max_mb: int = 200  # a file source's upload (CSV/Excel) at most
    change_retention_days: int = 30  # outbox changes older than this are pruned (replay window)

    @cached_property  # read on every signed answer; the settings never change
    def keys_path(self) -> Path:
        return self.key_dir or self.var_dir / "keys"

    @property
    def oidc_enabled(self) -> bool:
        return bool(self.oidc_issuer and self.oidc_client_id)


@lru_cache
def get_settings() -> Settings:
    var_dir = _var_dir()
    return Settings(
        database_url=os.environ.get("DATATONG_DATABASE_URL") or _default_db_url(),
        var_dir=var_dir,
        secret_key=_secret_key(var_dir),
        anonymous_catalog=os.environ.get("DATATONG_ANONYMOUS_CATALOG", "open"),
        access_token_minutes=int(os.environ.get("DATATONG_ACCESS_TOKEN_MINUTES", "60")),
        client_token_minutes=int(os.environ.get("DATATONG_CLIENT_TOKEN_MINUTES", "15")),
        session_hours=int(os.environ.get("DATATONG_SESSION_HOURS", "8")),
        cookie_secure=os.environ.get("DATATONG_COOKIE_SECURE", "0") == "1",
        audit_hash=os.environ.get("DATATONG_AUDIT_HASH", "sha256").lower(),
        audit_checkpoint_every=int(os.environ.get("DATATONG_AUDIT_CHECKPOINT_EVERY", "1000")),
        key_dir=Path(os.environ["DATATONG_KEY_DIR"]).resolve() if os.environ.get("DATATONG_KEY_DIR") else None,
        cipher=os.environ.get("DATATONG_CIPHER", "aes").lower(),
        session_idle_minutes=int(os.environ.get("DATATONG_SESSION_IDLE_MINUTES", "30")),
        login_rate_per_minute=int(os.environ.get("DATATONG_LOGIN_RATE_PER_MINUTE", "10")),
        oidc_issuer=os.environ.get("DATATONG_OIDC_ISSUER") or None,
        oidc_client_id=os.environ.get("DATATONG_OIDC_CLIENT_ID") or None,
        oidc_client_secret=os.environ.get("DATATONG_OIDC_CLIENT_SECRET") or None,
        oidc_username_claim=os.environ.get("DATATONG_OIDC_USERNAME_CLAIM") or "preferred_username",
        provider_answer_days=int(os.environ.get("DATATONG_PROVIDER_ANSWER_DAYS", "10")),
        compliance_review_days=int(os.environ.get("DATATONG_COMPLIANCE_REVIEW_DAYS", "2")),
        catalog_update_days=int(os.environ.get("DATATONG_CATALOG_UPDATE_DAYS", "15")),
        need_answer_days=int(os.environ.get("DATATONG_NEED_ANSWER_DAYS", "10")),
        reminder_days=tuple(int(x) for x in os.environ.get("DATATONG_REMINDER_DAYS", "3,1").split(",") if x.strip()),
        calendar_fallback=os.environ.get("DATATONG_CALENDAR_FALLBACK", "error").lower(),
        bus_url=os.environ.get("DATATONG_BUS_URL", "").strip(),
        subscription_batch=int(os.environ.get("DATATONG_SUBSCRIPTION_BATCH", "500")),
        subscription_max_attempts=int(os.environ.get("DATATONG_SUBSCRIPTION_MAX_ATTEMPTS", "8")),
        subscription_retry_seconds=float(os.environ.get("DATATONG_SUBSCRIPTION_RETRY_SECONDS", "5")),
        outbound_allow=tuple(x.strip() for x in os.environ.get("DATATONG_OUTBOUND_ALLOW", "").split(",") if x.strip()),
        upload_max_mb=int(os.environ.get("DATATONG_UPLOAD_MAX_MB", "200")),
        change_retention_days=int(os.environ.get("DATATONG_CHANGE_RETENTION_DAYS", "30")),
    )
