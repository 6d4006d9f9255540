"""Rules of organisations and identity: who exists, who may do what, how they prove it."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from datatong.audit.service import record
from datatong.db import get_by_id, utcnow
from datatong.errors import AppError, Forbidden, NotFound, Unauthenticated, invalid
from datatong.orgs.models import (
    LEVEL_LABELS,
    LEVEL_ORDER,
    ROLE_LABELS,
    ClientApp,
    Department,
    Level,
    Role,
    User,
)

_hasher = PasswordHasher()
# A real hash to verify against when the user does not exist, so a login for an
# unknown name costs the same time as one for a known name.
_DUMMY_HASH = _hasher.hash("datatong-dummy-password")
CODE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")
USERNAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{2,64}$")
JWT_ALG = "HS256"


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user, an application (client credentials) or nobody."""

    kind: str  # "user", "client" or "anonymous"
    id: int | None
    username: str
    display_name: str
    role: str
    department_id: int | None
    department_code: str | None = None

    @property
    def is_platform_admin(self) -> bool:
        return self.kind == "user" and self.role == Role.PLATFORM_ADMIN

    @property
    def is_authenticated(self) -> bool:
        return self.kind != "anonymous"


ANONYMOUS = Principal("anonymous", None, "anonymous", "匿名用户", "anonymous", None)


def principal_for(user: User) -> Principal:
    return Principal(
        "user",
        user.id,
        user.username,
        user.display_name,
        user.role,
        user.department_id,
        user.department.code,
    )


# ---------------------------------------------------------------- passwords


def hash_secret(secret: str) -> str:
    return _hasher.hash(secret)


def verify_secret(hashed: str, secret: str) -> bool:
    try:
        return _hasher.verify(hashed, secret)
    except (VerificationError, InvalidHashError):
        return False


# Passwords that pass the length and character-class rules but top every leaked-password
# list (compared without regard to case). Kept short on purpose: the rules do the rest.
COMMON_PASSWORDS = frozenset(
    """
    Passw0rd! Passw0rd P@ssw0rd P@ssw0rd! P@ssw0rd1 P@ssword1 P@55w0rd Password1! Password@1
    Password@123 Password123! Admin@123 Admin@1234 Admin123! Admin@888 Root@123 Root@1234
    Qwer1234! Qwer@1234 Qwer!234 Qwe123!@# 1qaz@WSX 1qaz!QAZ 1qaz2wsx! Zaq1@wsx Abc@1234
    Abc123!@# Abcd@1234 Abcd1234! 12345678Aa 12345678Aa! Aa123456! Aa123456 A123456! 123456Aa!
    Welcome1! Welcome@123 Changeme1! Test@1234 Huawei@123 Woaini1314! Iloveyou1!
    """.lower().split()
)


def check_password_policy(password: str, *, username: str | None = None, current_hash: str | None = None) -> None:
    """At least 8 characters of 3 of the 4 classes, not the username, not a notorious
    password, and (when changing one) not the current password."""
    password = password or ""
    if len(password) < 8:
        raise invalid(
            "user.password_too_short", "密码至少 8 位", "Password must have at least 8 characters", "password"
        )
    kinds = sum(bool(re.search(p, password)) for p in (r"[a-z]", r"[A-Z]", r"[0-9]", r"[^A-Za-z0-9]"))
    if kinds < 3:
        raise invalid(
            "user.password_too_weak",
            "密码须包含大写字母、小写字母、数字、符号中的至少三类",
            "Password must mix at least three of: lower case, upper case, digits, symbols",
            "password",
        )
    if username and len(username) >= 3 and username.lower() in password.lower():
        raise invalid(
            "user.password_contains_username",
            "密码不能包含用户名",
            "Password must not contain the username",
            "password",
        )
    if password.lower() in COMMON_PASSWORDS:
        raise invalid(
            "user.password_common",
            "密码过于常见，容易被猜中，请换一个",
            "Password is too common and easy to guess",
            "password",
        )
    if current_hash and verify_secret(current_hash, password):
        raise invalid(
            "user.password_reused",
            "新密码不能与当前密码相同",
            "The new password must differ from the current one",
            "password",
        )


# ---------------------------------------------------------------- permissions


def require_role(principal: Principal, *roles: str) -> None:
    if not principal.is_authenticated:
        raise Unauthenticated()
    if principal.kind != "user" or principal.role not in roles:
        raise Forbidden()


def require_platform_admin(principal: Principal) -> None:
    require_role(principal, Role.PLATFORM_ADMIN)


def can_manage_department(principal: Principal, department_id: int) -> bool:
    """Platform admins manage all; a department admin only their own department."""
    if principal.is_platform_admin:
        return True
    return principal.kind == "user" and principal.role == Role.DEPT_ADMIN and principal.department_id == department_id


# ---------------------------------------------------------------- departments


def get_department(session: Session, department_id: int) -> Department:
    dept = get_by_id(session, Department, department_id)
    if dept is None:
        raise NotFound("部门", "Department")
    return dept


def department_by_code(session: Session, code: str) -> Department:
    dept = session.scalar(select(Department).where(Department.code == code))
    if dept is None:
        raise invalid(
            "department.unknown", f"部门代码 {code} 不存在", f"Unknown department code {code}", "department_code"
        )
    return dept


def list_departments(session: Session) -> list[Department]:
    return list(session.scalars(select(Department).order_by(Department.code)))


def _check_level(level: str, parent: Department | None) -> str:
    value = level_from_text(level)
    if value is None:
        raise invalid(
            "department.level_invalid",
            "部门层级须为 国家/省/市/区县",
            "Level must be national, province, city or district",
            "level",
        )
    if parent is not None and LEVEL_ORDER.index(Level(parent.level)) > LEVEL_ORDER.index(Level(value)):
        raise invalid(
            "department.level_above_parent",
            "下级部门的层级不能高于上级部门",
            "A department cannot sit at a higher level than its parent",
            "level",
        )
    return value


def level_from_text(text: str) -> str | None:
    text = (text or "").strip()
    for lv, label in LEVEL_LABELS.items():
        if text in (lv.value, label, label + "级"):
            return lv.value
    return None


def create_department(
    session: Session,
    principal: Principal,
    code: str,
    name: str,
    level: str,
    parent_code: str | None = None,
    short_name: str | None = None,
    contact: str | None = None,
    *,
    audit: bool = True,
) -> Department:
    require_platform_admin(principal)
    code = (code or "").strip()
    if not CODE_RE.match(code):
        raise invalid(
            "department.code_invalid",
            "部门代码只能由字母、数字、-、_、. 组成（最长 32 位）",
            "Department code must be letters, digits, '-', '_' or '.' (max 32)",
            "code",
        )
    if not (name or "").strip():
        raise invalid("department.name_required", "请填写部门名称", "Department name is required", "name")
    if session.scalar(select(Department.id).where(Department.code == code)):
        raise invalid(
            "department.code_taken", f"部门代码 {code} 已存在", f"Department code {code} already exists", "code"
        )
    parent = department_by_code(session, parent_code) if parent_code else None
    dept = Department(
        code=code,
        name=name.strip(),
        level=_check_level(level, parent),
        parent_id=parent.id if parent else None,
        short_name=short_name,
        contact=contact,
    )
    session.add(dept)
    session.flush()
    if audit:
        record(
            session,
            principal,
            "department.create",
            resource=f"department:{dept.code}",
            subject_department=dept.code,
            detail={"name": dept.name, "level": dept.level, "parent": parent.code if parent else None},
        )
    return dept


def update_department(session: Session, principal: Principal, department_id: int, **changes: Any) -> Department:
    dept = get_department(session, department_id)
    if not can_manage_department(principal, dept.id):
        raise Forbidden("只能管理本部门", "You may manage only your own department")
    changed: dict[str, Any] = {}
    for key in ("name", "short_name", "contact"):
        value = changes.get(key)
        if value is not None:
            if key == "name" and not value.strip():
                raise invalid("department.name_required", "请填写部门名称", "Department name is required", "name")
            if getattr(dept, key) != value.strip():
                changed[key] = {"from": getattr(dept, key), "to": value.strip()}
            setattr(dept, key, value.strip())
    session.flush()
    if changed:
        record(
            session,
            principal,
            "department.update",
            resource=f"department:{dept.code}",
            subject_department=dept.code,
            detail={"changes": changed},
        )
    return dept


# ---------------------------------------------------------------- users


def get_user(session: Session, user_id: int) -> User:
    user = get_by_id(session, User, user_id)
    if user is None:
        raise NotFound("用户", "User")
    return user


def managed_user(session: Session, principal: Principal, user_id: int) -> User:
    """A user the caller administers; others are reported missing, as their existence
    is another department's business."""
    require_role(principal, Role.PLATFORM_ADMIN, Role.DEPT_ADMIN)
    user = get_user(session, user_id)
    if not can_manage_department(principal, user.department_id):
        raise NotFound("用户", "User")
    return user


def _check_role(role: str) -> str:
    if role not in {r.value for r in Role}:
        for value, label in ROLE_LABELS.items():
            if role == label:
                return value.value
        raise invalid(
            "user.role_invalid",
            "角色须为 平台管理员/部门管理员/数据管理员/审计员",
            "Role must be platform_admin, dept_admin, data_officer or auditor",
            "role",
        )
    return role


def _check_assignable(principal: Principal, role: str, department_id: int) -> None:
    """A department admin may give only department roles, only in their department."""
    if principal.is_platform_admin:
        return
    if not can_manage_department(principal, department_id):
        raise Forbidden("只能管理本部门的用户", "You may manage only users of your own department")
    if role not in (Role.DEPT_ADMIN, Role.DATA_OFFICER):
        raise Forbidden(
            "部门管理员只能分配部门管理员或数据管理员角色",
            "A department admin may assign only dept_admin or data_officer",
        )


def create_user(
    session: Session,
    principal: Principal | None,
    username: str,
    display_name: str,
    password: str,
    role: str,
    department_code: str | None = None,
) -> User:
    """Create a user. ``principal`` None means the operator at the CLI (trusted)."""
    if principal is not None:
        require_role(principal, Role.PLATFORM_ADMIN, Role.DEPT_ADMIN)
    username = (username or "").strip()
    if not USERNAME_RE.match(username):
        raise invalid(
            "user.username_invalid",
            "用户名为 2–64 位字母、数字或 _.@-",
            "Username must be 2-64 letters, digits or _.@-",
            "username",
        )
    if not (display_name or "").strip():
        raise invalid("user.display_name_required", "请填写姓名", "Display name is required", "display_name")
    role = _check_role(role)
    if department_code:
        dept = department_by_code(session, department_code)
    elif principal is not None and principal.department_id is not None:
        dept = get_department(session, principal.department_id)
    else:
        raise invalid("department.required", "请指定所属部门", "A department is required", "department_code")
    if principal is not None:
        _check_assignable(principal, role, dept.id)
    check_password_policy(password, username=username)
    if session.scalar(select(User.id).where(User.username == username)):
        raise invalid("user.username_taken", f"用户名 {username} 已被使用", f"Username {username} is taken", "username")
    user = User(
        username=username,
        display_name=display_name.strip(),
        role=role,
        department_id=dept.id,
        password_hash=hash_secret(password),
        password_changed_at=utcnow(),
    )
    session.add(user)
    session.flush()
    record(
        session,
        principal,
        "user.create",
        resource=f"user:{user.username}",
        subject_department=dept.code,
        detail={"role": role, "display_name": user.display_name},
    )
    return user


def list_users(session: Session, principal: Principal) -> list[User]:
    stmt = select(User).order_by(User.username)
    if not principal.is_platform_admin:
        require_role(principal, Role.DEPT_ADMIN)
        stmt = stmt.where(User.department_id == principal.department_id)
    return list(session.scalars(stmt))


def update_user(
    session: Session,
    principal: Principal,
    user_id: int,
    *,
    display_name: str | None = None,
    password: str | None = None,
    role: str | None = None,
    is_active: bool | None = None,
    unlock: bool | None = None,
    totp_reset: bool | None = None,
) -> User:
    """An administrator's change to a user: name, password reset, role, enabled,
    ``unlock`` (clear a lockout) and ``totp_reset`` (remove the second factor, e.g. a
    lost phone: the user enrols again). Audited without any secret."""
    user = get_user(session, user_id)
    new_role = _check_role(role) if role else user.role
    _check_assignable(principal, new_role, user.department_id)
    if not principal.is_platform_admin and user.role not in (Role.DEPT_ADMIN, Role.DATA_OFFICER):
        raise Forbidden("只能管理本部门的用户", "You may manage only users of your own department")
    if user.id == principal.id and (is_active is False or (role and role != user.role)):
        raise invalid(
            "user.self_lockout",
            "不能停用自己或修改自己的角色",
            "You cannot disable yourself or change your own role",
            "role",
        )
    changes: dict[str, Any] = {}
    if display_name is not None:
        if not display_name.strip():
            raise invalid("user.display_name_required", "请填写姓名", "Display name is required", "display_name")
        if display_name.strip() != user.display_name:
            changes["display_name"] = {"from": user.display_name, "to": display_name.strip()}
        user.display_name = display_name.strip()
    if password is not None:
        check_password_policy(password, username=user.username, current_hash=user.password_hash)
        user.password_hash = hash_secret(password)
        user.password_changed_at = utcnow()
        user.token_version += 1
        changes["password_reset"] = True
    if role and new_role != user.role:
        changes["role"] = {"from": user.role, "to": new_role}
        user.role = new_role
        user.token_version += 1
    if is_active is not None and is_active != user.is_active:
        changes["is_active"] = {"from": user.is_active, "to": is_active}
        user.is_active = is_active
        user.token_version += 1
    if unlock and (user.failed_logins or user.locked_until is not None):
        changes["unlock"] = {"failed_logins": user.failed_logins}
        user.failed_logins = 0
        user.locked_until = None
    if totp_reset and (user.totp_enabled or user.totp_secret):
        changes["totp_reset"] = True
        user.totp_enabled = False
        user.totp_secret = None
        user.totp_last_step = None
        user.token_version += 1
    session.flush()
    if changes:
        record(
            session,
            principal,
            "user.update",
            resource=f"user:{user.username}",
            subject_department=user.department.code,
            detail={"changes": changes},
        )
    return user


def rehash_if_needed(user: User, password: str) -> None:
    """After a successful login: re-hash with today's argon2 parameters if they changed.
    (The login steps themselves live in orgs/security.py.)"""
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hash_secret(password)


# ---------------------------------------------------------------- tokens


def issue_token(secret_key: str, subject: str, kind: str, version: int, minutes: int) -> tuple[str, int]:
    now = utcnow()
    claims = {
        "sub": subject,
        "kind": kind,
        "ver": version,
        "iat": int(now.timestamp()),
        "exp": int((now + timedelta(minutes=minutes)).timestamp()),
        "iss": "datatong",
    }
    return jwt.encode(claims, secret_key, algorithm=JWT_ALG), minutes * 60


def principal_from_token(session: Session, secret_key: str, token: str) -> Principal:
    try:
        claims = jwt.decode(token, secret_key, algorithms=[JWT_ALG], issuer="datatong")
    except jwt.ExpiredSignatureError:
        raise Unauthenticated("令牌已过期，请重新获取", "Token expired", "auth.token_expired") from None
    except jwt.PyJWTError:
        raise Unauthenticated("令牌无效", "Invalid token", "auth.token_invalid") from None
    if claims.get("kind") == "enrol":
        raise Unauthenticated(
            "该令牌仅可用于绑定双因素认证，请先完成绑定后重新登录",
            "This token is good only for TOTP enrolment; enrol, then log in again",
            "auth.totp_enrollment_required",
        )
    if claims.get("kind") == "client":
        app = session.scalar(select(ClientApp).where(ClientApp.client_id == claims.get("sub")))
        if app is None or not app.is_active:
            raise Unauthenticated("应用已停用", "Client disabled", "auth.token_invalid")
        return Principal("client", app.id, app.client_id, app.name, "client", app.department_id, app.department.code)
    if claims.get("kind") != "user":
        raise Unauthenticated("令牌无效", "Invalid token", "auth.token_invalid")
    user = get_by_id(session, User, _int_or_none(claims.get("sub")))
    if user is None or not user.is_active or user.token_version != claims.get("ver"):
        raise Unauthenticated("令牌已失效，请重新登录", "Token revoked", "auth.token_invalid")
    return principal_for(user)


def enrolment_principal_from_token(session: Session, secret_key: str, token: str) -> Principal:
    """Like ``principal_from_token`` but also accepts the enrolment-only token given at a
    login that requires TOTP enrolment (used only by the /me/totp endpoints)."""
    try:
        claims = jwt.decode(token, secret_key, algorithms=[JWT_ALG], issuer="datatong")
    except jwt.ExpiredSignatureError:
        raise Unauthenticated("令牌已过期，请重新获取", "Token expired", "auth.token_expired") from None
    except jwt.PyJWTError:
        raise Unauthenticated("令牌无效", "Invalid token", "auth.token_invalid") from None
    if claims.get("kind") != "enrol":
        return principal_from_token(session, secret_key, token)
    user = get_by_id(session, User, _int_or_none(claims.get("sub")))
    if user is None or not user.is_active or user.token_version != claims.get("ver"):
        raise Unauthenticated("令牌已失效，请重新登录", "Token revoked", "auth.token_invalid")
    return principal_for(user)


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def create_client(
    session: Session, principal: Principal, name: str, department_code: str | None = None
) -> tuple[ClientApp, str]:
    """Register a system; returns the secret once (only its hash is kept)."""
    require_role(principal, Role.PLATFORM_ADMIN, Role.DEPT_ADMIN)
    dept = (
        department_by_code(session, department_code)
        if department_code
        else get_department(session, principal.department_id or 0)
    )
    if not can_manage_department(principal, dept.id):
        raise Forbidden("只能为本部门注册应用", "You may register systems only for your own department")
    if not (name or "").strip():
        raise invalid("client.name_required", "请填写业务系统名称", "System name is required", "name")
    secret = secrets.token_urlsafe(32)
    app = ClientApp(
        client_id="dt_" + secrets.token_hex(8),
        secret_hash=hash_secret(secret),
        name=name.strip(),
        department_id=dept.id,
        created_by_id=principal.id,
    )
    session.add(app)
    session.flush()
    record(
        session,
        principal,
        "client.create",
        resource=f"client:{app.client_id}",
        subject_department=dept.code,
        detail={"name": app.name},
    )
    return app, secret


def list_clients(session: Session, principal: Principal) -> list[ClientApp]:
    require_role(principal, Role.PLATFORM_ADMIN, Role.DEPT_ADMIN)
    stmt = select(ClientApp).order_by(ClientApp.id)
    if not principal.is_platform_admin:
        stmt = stmt.where(ClientApp.department_id == principal.department_id)
    return list(session.scalars(stmt))


def authenticate_client(session: Session, client_id: str, client_secret: str) -> ClientApp:
    app = session.scalar(select(ClientApp).where(ClientApp.client_id == client_id))
    ok = verify_secret(app.secret_hash if app else _DUMMY_HASH, client_secret or "")
    if app is None or not ok:
        raise Unauthenticated("应用凭据错误", "Wrong client credentials", "auth.bad_client_credentials")
    if not app.is_active:
        raise Unauthenticated("应用已停用", "Client disabled", "auth.client_disabled")
    return app


def import_departments(session: Session, principal: Principal | None, rows: list[dict[str, str]]) -> int:
    """Create departments from rows (code, name, level, parent_code), parents first.

    All or nothing: the caller's transaction rolls back on the first error, which
    names the row.
    """
    actor = principal or Principal("user", None, "cli", "命令行", Role.PLATFORM_ADMIN, None)
    created: list[str] = []
    for number, row in enumerate(rows, start=2):
        try:
            dept = create_department(
                session,
                actor,
                row.get("code", ""),
                row.get("name", ""),
                row.get("level", ""),
                row.get("parent_code") or None,
                row.get("short_name") or None,
                row.get("contact") or None,
                audit=False,
            )
        except AppError as exc:
            exc.message = f"第 {number} 行：{exc.message}"
            exc.message_en = f"Row {number}: {exc.message_en}"
            raise
        created.append(dept.code)
    record(
        session,
        principal,
        "department.import",
        resource="department",
        rows=len(created),
        detail={"codes": created[:200]},
    )
    return len(created)
