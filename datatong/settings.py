"""Settings read from the environment (DATATONG_*), with defaults for a laptop."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from functools import lru_cache
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
    )
