"""Rules of authentication strength: the login steps, lockout with back-off, the TOTP
second factor, the platform's security policy and the mapping of OpenID Connect accounts.

A login is checked in steps so the API (one request) and the pages (a password form,
then a code form) share them:

1. ``check_password`` — the account is not locked, the password is right, it is active;
2. ``second_factor`` — what the account still owes: a TOTP code, an enrolment, nothing;
3. ``check_code`` — a TOTP code of a step not used before (a code works once);
4. ``complete_login`` — reset the failure counter, note the time, audit ``auth.login``.

A refused attempt must leave a trace although the request's own transaction rolls back:
``_note_failure`` writes the failure counter, the lock and the ``auth.login_failed``
audit record in a transaction of its own.
"""

from __future__ import annotations

import base64
import hmac
import json
import math
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pyotp
import qrcode
import qrcode.image.svg
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from datatong.audit.service import record
from datatong.crypto import needs_reseal, seal, unseal
from datatong.errors import AppError, Conflict, Forbidden, Unauthenticated, ValidationFailed, invalid
from datatong.orgs.models import ROLE_LABELS, ClientApp, Role, SecurityPolicy, User
from datatong.orgs.service import (
    _DUMMY_HASH,
    USERNAME_RE,
    Principal,
    authenticate_client,
    check_password_policy,
    get_user,
    hash_secret,
    issue_token,
    principal_for,
    rehash_if_needed,
    require_platform_admin,
    verify_secret,
)
from datatong.settings import Settings

LOCK_AFTER = 5  # consecutive failures before the first lock
LOCK_FIRST_SECONDS = 60  # then 1 minute, doubling with each further failure …
LOCK_MAX_SECONDS = 3600  # … up to 1 hour
TOTP_ISSUER = "数据通"
TOTP_STEP_SECONDS = 30
TOTP_DRIFT_STEPS = 1  # codes of the step before and after are accepted (clock drift)
ENROL_TOKEN_MINUTES = 10
CODE_RE = re.compile(r"^\d{6}$")


def clock() -> float:
    """Seconds since the epoch; tests move it."""
    return time.time()


def now() -> datetime:
    return datetime.fromtimestamp(clock(), UTC)


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:  # SQLite hands back naive UTC
        return value.replace(tzinfo=UTC)
    return value


# ---------------------------------------------------------------- errors


class AccountLocked(AppError):
    status_code = 423

    def __init__(self, retry_after: int) -> None:
        minutes = max(1, (retry_after + 59) // 60)
        super().__init__(
            "auth.account_locked",
            f"连续登录失败次数过多，账号已临时锁定，请 {minutes} 分钟后再试或联系管理员解锁",
            f"Too many failed logins: the account is locked for {retry_after} s or until an admin unlocks it",
            details=[{"retry_after": retry_after}],
            headers={"Retry-After": str(retry_after)},
        )
        self.retry_after = retry_after


def bad_credentials() -> Unauthenticated:
    return Unauthenticated("用户名或密码错误", "Wrong username or password", "auth.bad_credentials")


def otp_required() -> Unauthenticated:
    return Unauthenticated(
        "请输入动态验证码（身份验证器应用中的 6 位数字）",
        "A one-time code from the authenticator app is required",
        "auth.otp_required",
    )


def otp_invalid() -> Unauthenticated:
    return Unauthenticated(
        "动态验证码错误或已使用过，请输入身份验证器中最新的验证码",
        "Wrong or already used one-time code",
        "auth.otp_invalid",
    )


class EnrollmentRequired(AppError):
    """The account's role requires TOTP and it has none yet: only enrolment is possible.

    ``details`` carries a short-lived token good only for the enrolment endpoints."""

    status_code = 403

    def __init__(self, user: User, token: str | None = None, expires_in: int = 0) -> None:
        super().__init__(
            "auth.totp_enrollment_required",
            "您的角色要求启用双因素认证（动态验证码），请先完成绑定",
            "Your role requires a second factor (TOTP): enrol before you continue",
            details=[{"enrollment_token": token, "token_type": "bearer", "expires_in": expires_in}] if token else None,
        )
        self.user_id = user.id
        self.token_version = user.token_version


# ---------------------------------------------------------------- lockout


def lock_seconds(failures: int) -> int:
    """How long the account is locked after ``failures`` consecutive failures (0: not)."""
    if failures < LOCK_AFTER:
        return 0
    return int(min(LOCK_FIRST_SECONDS * 2 ** (failures - LOCK_AFTER), LOCK_MAX_SECONDS))


def locked_for(user: User) -> int:
    """Seconds the account stays locked (0 when it is not)."""
    until = _aware(user.locked_until)
    if until is None:
        return 0
    left = (until - now()).total_seconds()
    return math.ceil(left) if left > 0 else 0


def _attempt_principal(user: User | None, username: str) -> Principal:
    """Who tried: a claimed identity, not a proven one (audited as ``anonymous``). Names
    of unknown accounts are not kept — a password typed into the name field would be."""
    if user is None:
        return Principal("anonymous", None, "anonymous", "匿名用户", "anonymous", None)
    return Principal("anonymous", None, user.username, user.display_name, "anonymous", None, user.department.code)


def _note_failure(session: Session, user: User | None, username: str, reason: str, count: bool = True) -> int:
    """Record a refused login in a transaction of its own (the request's rolls back):
    the failure counter and lock of a known account, and the audit records. Returns the
    seconds the account is now locked for (0: not locked).

    The request is refused anyway, so its transaction is rolled back first: whatever it
    holds (on SQLite, the database's write lock) must not block the write here."""
    attempt = _attempt_principal(user, username)
    user_id = user.id if user is not None else None
    resource = f"user:{user.username}" if user is not None else None
    department = user.department.code if user is not None else None
    session.rollback()
    failures = lock = 0
    with Session(session.get_bind()) as own, own.begin():
        if user_id is not None and count:
            failures = own.execute(
                update(User)
                .where(User.id == user_id)
                .values(failed_logins=User.failed_logins + 1)
                .returning(User.failed_logins)
            ).scalar_one()
            lock = lock_seconds(failures)
            if lock:
                own.execute(update(User).where(User.id == user_id).values(locked_until=now() + timedelta(seconds=lock)))
        detail: dict[str, Any] = {"failed_logins": failures} if user_id is not None else {"unknown_user": True}
        record(
            own,
            attempt,
            "auth.login_failed",
            resource=resource,
            subject_department=department,
            outcome="refused",
            reason=reason,
            detail=detail,
        )
        if lock:
            record(
                own,
                attempt,
                "auth.account_locked",
                resource=resource,
                subject_department=department,
                outcome="refused",
                reason="auth.account_locked",
                detail={"failed_logins": failures, "seconds": lock},
            )
    return lock


def client_login(session: Session, client_id: str, client_secret: str) -> ClientApp:
    """Client credentials → the application; both outcomes are audited (a refusal in a
    transaction of its own). Clients are not locked out: they are rate-limited, and
    their secret is 256 random bits, not a guessable password."""
    try:
        app = authenticate_client(session, client_id, client_secret)
    except AppError as exc:
        known = session.scalar(select(ClientApp).where(ClientApp.client_id == client_id))
        name, department = (known.client_id, known.department.code) if known else (None, None)
        attempt = Principal("anonymous", None, name or "anonymous", "", "anonymous", None)
        session.rollback()  # see _note_failure
        with Session(session.get_bind()) as own, own.begin():
            record(
                own,
                attempt,
                "auth.client_token_failed",
                resource=f"client:{name}" if name else None,
                subject_department=department,
                outcome="refused",
                reason=exc.code,
                detail=None if name else {"unknown_client": True},
            )
        raise
    principal = Principal("client", app.id, app.client_id, app.name, "client", app.department_id, app.department.code)
    record(
        session,
        principal,
        "auth.client_token",
        resource=f"client:{app.client_id}",
        subject_department=app.department.code,
    )
    return app


def _refuse_if_locked(session: Session, user: User) -> None:
    left = locked_for(user)
    if left:
        _note_failure(session, user, user.username, "auth.account_locked", count=False)
        raise AccountLocked(left)


# ---------------------------------------------------------------- login steps


def check_password(session: Session, username: str, password: str) -> User:
    """Step 1. Every path costs one argon2 verification, so timing tells nothing."""
    name = (username or "").strip()
    user = session.scalar(select(User).where(User.username == name))
    if user is None:
        verify_secret(_DUMMY_HASH, password or "")
        _note_failure(session, None, name, "auth.bad_credentials")
        raise bad_credentials()
    if locked_for(user):
        verify_secret(_DUMMY_HASH, password or "")
        _refuse_if_locked(session, user)
    if not verify_secret(user.password_hash, password or ""):
        lock = _note_failure(session, user, name, "auth.bad_credentials")
        if lock:
            raise AccountLocked(lock)
        raise bad_credentials()
    if not user.is_active:
        raise Unauthenticated("账号已停用", "Account disabled", "auth.account_disabled")
    return user


def second_factor(session: Session, user: User) -> str | None:
    """Step 2: ``"otp"`` (enrolled: a code is due), ``"enrol"`` (the role requires TOTP and
    the account has none) or None."""
    if user.totp_enabled:
        return "otp"
    if totp_required(session, user.role):
        return "enrol"
    return None


def check_code(session: Session, settings: Settings, user: User, code: str | None) -> None:
    """Step 3: a valid code of a step later than the last one used; a wrong code counts
    as a failed login."""
    if locked_for(user):
        _refuse_if_locked(session, user)
    if not _use_code(session, settings, user, code):
        lock = _note_failure(session, user, user.username, "auth.otp_invalid")
        if lock:
            raise AccountLocked(lock)
        raise otp_invalid()


def complete_login(session: Session, user: User, method: str, second_factor_used: bool = False) -> Principal:
    """Step 4: the login succeeded."""
    user.failed_logins = 0
    user.locked_until = None
    user.last_login_at = now()
    session.flush()
    principal = principal_for(user)
    record(
        session,
        principal,
        "auth.login",
        resource=f"user:{user.username}",
        subject_department=user.department.code,
        detail={"method": method, "totp": second_factor_used},
    )
    return principal


def password_login(session: Session, settings: Settings, username: str, password: str, otp: str | None) -> User:
    """The whole login of the API: password, then the code when the account has TOTP."""
    user = check_password(session, username, password)
    due = second_factor(session, user)
    if due == "enrol":
        token, ttl = issue_token(settings.secret_key, str(user.id), "enrol", user.token_version, ENROL_TOKEN_MINUTES)
        raise EnrollmentRequired(user, token, ttl)
    if due == "otp":
        if not (otp or "").strip():
            raise otp_required()
        check_code(session, settings, user, otp)
    rehash_if_needed(user, password)
    complete_login(session, user, "password", due == "otp")
    return user


# ---------------------------------------------------------------- TOTP


def _aad(user: User) -> str:
    return f"user:{user.id}:totp"


def _totp(settings: Settings, user: User) -> pyotp.TOTP | None:
    if not user.totp_secret:
        return None
    return pyotp.TOTP(unseal(user.totp_secret, aad=_aad(user), settings=settings), interval=TOTP_STEP_SECONDS)


def _matching_step(totp: pyotp.TOTP, code: str) -> int | None:
    current = int(clock()) // TOTP_STEP_SECONDS
    matched = None
    for step in range(current - TOTP_DRIFT_STEPS, current + TOTP_DRIFT_STEPS + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            matched = step  # no early exit: the same work whatever the code
    return matched


def _use_code(session: Session, settings: Settings, user: User, code: str | None) -> bool:
    """True when ``code`` is valid now and its step is later than the last one used; the
    step is claimed by a conditional UPDATE, so two requests cannot both use one code."""
    code = re.sub(r"\s", "", code or "")
    totp = _totp(settings, user)
    if totp is None or not CODE_RE.match(code):
        return False
    step = _matching_step(totp, code)
    if step is None or (user.totp_last_step is not None and step <= user.totp_last_step):
        return False
    claimed = session.execute(
        update(User)
        .where(User.id == user.id, or_(User.totp_last_step.is_(None), User.totp_last_step < step))
        .values(totp_last_step=step)
        .execution_options(synchronize_session=False)
    )
    if getattr(claimed, "rowcount", 0) != 1:
        return False
    set_committed_value(user, "totp_last_step", step)  # already written by the UPDATE
    if user.totp_secret and needs_reseal(user.totp_secret, settings):  # after a key rotation
        user.totp_secret = seal(totp.secret, aad=_aad(user), settings=settings)
    return True


@dataclass(frozen=True)
class TotpSetup:
    secret: str
    uri: str
    qr_data_uri: str


def _qr_data_uri(text: str) -> str:
    image = qrcode.make(text, image_factory=qrcode.image.svg.SvgPathFillImage, box_size=10, border=2)
    svg = image.to_string(encoding="unicode")
    return "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()


def totp_status(session: Session, principal: Principal) -> dict[str, bool]:
    user = _own_user(session, principal)
    return {
        "enabled": user.totp_enabled,
        "pending": bool(user.totp_secret) and not user.totp_enabled,
        "required": totp_required(session, user.role),
    }


def _own_user(session: Session, principal: Principal) -> User:
    if not principal.is_authenticated:
        raise Unauthenticated()
    if principal.kind != "user" or principal.id is None:
        raise Forbidden("只有用户账号可以设置双因素认证", "Only user accounts have a second factor")
    return get_user(session, principal.id)


def start_totp(session: Session, settings: Settings, principal: Principal) -> TotpSetup:
    """Make a new secret (sealed at rest) to be confirmed with a code; replaces one not
    yet confirmed. The secret is shown once, to its owner, for the authenticator app."""
    user = _own_user(session, principal)
    if user.totp_enabled:
        raise Conflict(
            "totp.already_enabled",
            "双因素认证已启用；如需更换设备，请先停用再重新绑定",
            "TOTP is already enabled; disable it first to enrol a new device",
        )
    secret = pyotp.random_base32()  # 160 bits
    user.totp_secret = seal(secret, aad=_aad(user), settings=settings)
    user.totp_last_step = None
    session.flush()
    uri = pyotp.TOTP(secret, interval=TOTP_STEP_SECONDS).provisioning_uri(name=user.username, issuer_name=TOTP_ISSUER)
    return TotpSetup(secret, uri, _qr_data_uri(uri))


def pending_setup(session: Session, settings: Settings, principal: Principal) -> TotpSetup | None:
    """The enrolment started but not confirmed, shown again to its owner (e.g. after a
    mistyped code)."""
    user = _own_user(session, principal)
    if user.totp_enabled or not user.totp_secret:
        return None
    secret = unseal(user.totp_secret, aad=_aad(user), settings=settings)
    uri = pyotp.TOTP(secret, interval=TOTP_STEP_SECONDS).provisioning_uri(name=user.username, issuer_name=TOTP_ISSUER)
    return TotpSetup(secret, uri, _qr_data_uri(uri))


def confirm_totp(session: Session, settings: Settings, principal: Principal, code: str) -> User:
    user = _own_user(session, principal)
    if user.totp_enabled:
        raise Conflict("totp.already_enabled", "双因素认证已启用", "TOTP is already enabled")
    if not user.totp_secret:
        raise Conflict("totp.not_started", "请先开始绑定身份验证器", "Start the enrolment first")
    if not _use_code(session, settings, user, code):
        raise invalid(
            "totp.code_invalid",
            "验证码不正确，请核对手机时间并输入身份验证器中最新的 6 位数字",
            "Wrong code: check the phone's clock and enter the latest 6 digits",
            "code",
        )
    user.totp_enabled = True
    session.flush()
    record(
        session,
        principal,
        "auth.totp.enable",
        resource=f"user:{user.username}",
        subject_department=user.department.code,
    )
    return user


def disable_totp(session: Session, settings: Settings, principal: Principal, password: str, code: str) -> User:
    """Needs the password and a fresh code (a stolen session alone cannot remove the
    second factor); wrong ones count as failed logins. Refused where the policy requires
    TOTP for the account's role."""
    user = _own_user(session, principal)
    if not user.totp_enabled:
        raise Conflict("totp.not_enabled", "尚未启用双因素认证", "TOTP is not enabled")
    if totp_required(session, user.role):
        raise Forbidden(
            f"安全策略要求{ROLE_LABELS.get(Role(user.role), user.role)}启用双因素认证，不能停用",
            "The security policy requires TOTP for your role",
        )
    reauthenticate(session, user, password)
    if not _use_code(session, settings, user, code):
        lock = _note_failure(session, user, user.username, "auth.otp_invalid")
        if lock:
            raise AccountLocked(lock)
        raise invalid("auth.otp_invalid", "动态验证码错误或已使用过", "Wrong or already used one-time code", "code")
    user.totp_enabled = False
    user.totp_secret = None
    user.totp_last_step = None
    session.flush()
    record(
        session,
        principal,
        "auth.totp.disable",
        resource=f"user:{user.username}",
        subject_department=user.department.code,
    )
    return user


def reauthenticate(session: Session, user: User, password: str) -> None:
    """The current password, asked again before a sensitive change of one's own account."""
    if locked_for(user):
        _refuse_if_locked(session, user)
    if not verify_secret(user.password_hash, password or ""):
        lock = _note_failure(session, user, user.username, "auth.password_wrong")
        if lock:
            raise AccountLocked(lock)
        raise ValidationFailed(
            "auth.password_wrong", "当前密码不正确", "The current password is wrong", field="password"
        )


def change_own_password(session: Session, principal: Principal, current_password: str, new_password: str) -> User:
    user = _own_user(session, principal)
    reauthenticate(session, user, current_password)
    check_password_policy(new_password, username=user.username, current_hash=user.password_hash)
    user.password_hash = hash_secret(new_password)
    user.password_changed_at = now()
    user.token_version += 1  # other sessions and tokens end
    session.flush()
    record(
        session,
        principal,
        "user.password.change",
        resource=f"user:{user.username}",
        subject_department=user.department.code,
    )
    return user


# ---------------------------------------------------------------- security policy

POLICY_DEFAULTS: dict[str, Any] = {"totp_required_roles": []}


def get_policy(session: Session) -> dict[str, Any]:
    policy = dict(POLICY_DEFAULTS)
    for row in session.scalars(select(SecurityPolicy)):
        if row.key in POLICY_DEFAULTS:
            policy[row.key] = json.loads(row.value)
    return policy


def totp_required(session: Session, role: str) -> bool:
    row = session.get(SecurityPolicy, "totp_required_roles")
    return row is not None and role in json.loads(row.value)


def update_policy(session: Session, principal: Principal, totp_required_roles: list[str]) -> dict[str, Any]:
    """Change the policy. Accounts of a role that now requires TOTP and have none lose
    their sessions and tokens at once: their next login goes through enrolment."""
    require_platform_admin(principal)
    roles = sorted(set(totp_required_roles))
    known = {r.value for r in Role}
    unknown = [r for r in roles if r not in known]
    if unknown:
        raise invalid(
            "security.role_invalid",
            f"未知角色：{'、'.join(unknown)}",
            f"Unknown roles: {', '.join(unknown)}",
            "totp_required_roles",
        )
    me = get_user(session, principal.id or 0)
    if me.role in roles and not me.totp_enabled:
        raise invalid(
            "security.enrol_first",
            "请先为自己的账号启用双因素认证，再要求本角色启用，以免把自己锁在门外",
            "Enable TOTP on your own account before requiring it for your role",
            "totp_required_roles",
        )
    before = get_policy(session)
    row = session.get(SecurityPolicy, "totp_required_roles")
    if row is None:
        row = SecurityPolicy(key="totp_required_roles", value="[]")
        session.add(row)
    row.value = json.dumps(roles)
    row.updated_by = principal.username
    row.updated_at = now()
    newly = set(roles) - set(before["totp_required_roles"])
    signed_out = 0
    if newly:
        result = session.execute(
            update(User)
            .where(User.role.in_(newly), User.totp_enabled.is_(False))
            .values(token_version=User.token_version + 1)
            .execution_options(synchronize_session=False)
        )
        signed_out = int(getattr(result, "rowcount", 0) or 0)
    session.flush()
    after = get_policy(session)
    record(
        session,
        principal,
        "security.policy.update",
        resource="security_policy",
        detail={"before": before, "after": after, "signed_out": signed_out},
    )
    return after


# ---------------------------------------------------------------- OpenID Connect


def oidc_user(session: Session, settings: Settings, claims: dict[str, Any]) -> User:
    """The local account of a person the provider vouched for: by the subject bound
    before, else (first login) by the username claim, then bound to the subject. No
    account is created: who may use the platform is decided by its administrators."""
    subject = str(claims.get("sub") or "")
    if not subject:
        raise AppError(
            "auth.oidc_failed", "统一身份认证未返回用户标识", "The provider returned no subject", status_code=403
        )
    user = session.scalar(select(User).where(User.oidc_subject == subject))
    if user is None:
        name = str(claims.get(settings.oidc_username_claim) or subject).strip()
        user = session.scalar(select(User).where(User.username == name)) if USERNAME_RE.match(name) else None
        if user is None:
            _note_failure(session, None, name, "auth.oidc_unknown_user")
            raise AppError(
                "auth.oidc_unknown_user",
                "账号未开通：您的统一身份认证账号在数据通没有对应的用户，请联系本部门管理员开通",
                "No account: your identity has no user on this platform; ask your department admin",
                status_code=403,
            )
        if user.oidc_subject and user.oidc_subject != subject:
            _note_failure(session, user, name, "auth.oidc_subject_mismatch", count=False)
            raise AppError(
                "auth.oidc_subject_mismatch",
                "该账号已绑定另一个统一身份认证账号，请联系管理员",
                "This account is bound to another identity of the provider",
                status_code=403,
            )
    if not user.is_active:
        _note_failure(session, user, user.username, "auth.account_disabled", count=False)
        raise AppError("auth.account_disabled", "账号已停用", "Account disabled", status_code=403)
    if user.oidc_subject is None:
        user.oidc_subject = subject
        session.flush()
    return user
