"""Departments, users and application credentials (统一身份)."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ForeignKey, Integer, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column, relationship

from datatong.db import Base, utcnow


class Level(enum.StrEnum):
    NATIONAL = "national"
    PROVINCE = "province"
    CITY = "city"
    DISTRICT = "district"


LEVEL_LABELS = {
    Level.NATIONAL: "国家",
    Level.PROVINCE: "省",
    Level.CITY: "市",
    Level.DISTRICT: "区县",
}
LEVEL_ORDER = [Level.NATIONAL, Level.PROVINCE, Level.CITY, Level.DISTRICT]


class Role(enum.StrEnum):
    PLATFORM_ADMIN = "platform_admin"
    DEPT_ADMIN = "dept_admin"
    DATA_OFFICER = "data_officer"
    AUDITOR = "auditor"


ROLE_LABELS = {
    Role.PLATFORM_ADMIN: "平台管理员",
    Role.DEPT_ADMIN: "部门管理员",
    Role.DATA_OFFICER: "数据管理员",
    Role.AUDITOR: "审计员",
}


class Department(Base):
    __tablename__ = "department"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    short_name: Mapped[str | None] = mapped_column(String(100))
    level: Mapped[str] = mapped_column(String(16))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("department.id"), index=True)
    contact: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    parent: Mapped[Department | None] = relationship(remote_side=[id])


class User(Base):
    __tablename__ = "user_account"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(100))
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(32))
    department_id: Mapped[int] = mapped_column(ForeignKey("department.id"), index=True)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    # Bumped when the password changes or the account is disabled: tokens and
    # sessions issued before carry the old value and stop working at once.
    token_version: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_login_at: Mapped[datetime | None]
    password_changed_at: Mapped[datetime | None]
    # Second factor (TOTP, RFC 6238): the secret sealed with datatong.crypto (never in
    # clear), whether it is confirmed, and the last time step used — a code is accepted
    # only for a later step, so a code seen once cannot be replayed.
    totp_secret: Mapped[str | None] = mapped_column(Text)
    totp_enabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger)
    # Lockout: consecutive failed logins and until when the account refuses logins.
    failed_logins: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    locked_until: Mapped[datetime | None]
    # The subject ("sub") of the OpenID Connect provider this account is bound to.
    oidc_subject: Mapped[str | None] = mapped_column(String(255), unique=True, index=True)

    department: Mapped[Department] = relationship(lazy="joined")


class SecurityPolicy(Base):
    """Platform-wide security settings changed at run time by the platform admin (one row
    per key, value as JSON), e.g. ``totp_required_roles``."""

    __tablename__ = "security_policy"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    updated_by: Mapped[str | None] = mapped_column(String(64))


class ClientApp(Base):
    """An information system calling the API with client credentials."""

    __tablename__ = "client_app"

    id: Mapped[int] = mapped_column(primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(200))
    name: Mapped[str] = mapped_column(String(200))
    department_id: Mapped[int] = mapped_column(ForeignKey("department.id"), index=True)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    department: Mapped[Department] = relationship(lazy="joined")
