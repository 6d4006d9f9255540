"""Identity hardening: secrets at rest, TOTP, lockout with back-off, password policy,
session expiry, login rate limits, security headers, audit of identity events, and no
secret in the logs."""

from __future__ import annotations

import base64
import dataclasses
import logging
import re
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyotp
import pytest
from conftest import CLIENT_ID, PASSWORD, auth
from fastapi.testclient import TestClient
from identity_helpers import code_now, set_totp
from sqlalchemy import select

from datatong.app import create_app
from datatong.audit.models import AuditRecord
from datatong.crypto import CryptoError, needs_reseal, rotate_data_key, seal, unseal
from datatong.db import session_scope
from datatong.errors import AppError
from datatong.orgs import security
from datatong.orgs.models import User
from datatong.orgs.service import import_departments
from datatong.web import deps
from datatong.web.ratelimit import SlidingWindowLimiter, limiter_for

CSRF_RE = re.compile(r'name="csrf-token" content="([^"]+)"')
TEMPLATES = Path(__file__).resolve().parent.parent / "datatong" / "web" / "templates"


# ---------------------------------------------------------------- helpers


class Clock:
    """Moves the clock of the login rules (and of page sessions) by hand."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = float(int(time.time()) // 30 * 30 + 1)  # just after a TOTP step begins
        monkeypatch.setattr(security, "clock", lambda: self.now)
        monkeypatch.setattr(deps, "clock", lambda: self.now)

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def code(self, secret: str) -> str:
        return pyotp.TOTP(secret).at(self.now)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    return Clock(monkeypatch)


def token_login(client: TestClient, username: str, password: str = PASSWORD, otp: str | None = None) -> Any:
    body: dict[str, Any] = {"username": username, "password": password}
    if otp is not None:
        body["otp"] = otp
    return client.post("/api/v1/auth/token", json=body)


def error_code(response: Any) -> str:
    return str(response.json()["error"]["code"])


def user_row(settings: Any, username: str) -> User:
    with session_scope(settings.database_url) as session:
        user = session.scalar(select(User).where(User.username == username))
        assert user is not None
        session.expunge(user)
        return user


def records(settings: Any, action: str | None = None) -> list[AuditRecord]:
    with session_scope(settings.database_url) as session:
        stmt = select(AuditRecord).order_by(AuditRecord.seq)
        if action:
            stmt = stmt.where(AuditRecord.action == action)
        found = list(session.scalars(stmt))
        session.expunge_all()
        return found


def csrf_of(client: TestClient, path: str = "/login") -> str:
    match = CSRF_RE.search(client.get(path).text)
    assert match
    return match.group(1)


def web_login(client: TestClient, username: str, password: str = PASSWORD) -> Any:
    data = {"username": username, "password": password, "next": "/catalog", "csrf_token": csrf_of(client)}
    return client.post("/login", data=data, follow_redirects=False)


def user_id(client: TestClient, username: str) -> int:
    users = client.get("/api/v1/users", headers=auth(client, "admin")).json()
    return int(next(u["id"] for u in users if u["username"] == username))


# ---------------------------------------------------------------- secrets at rest


@pytest.mark.parametrize("cipher", ["aes", "sm4"])
def test_seal_unseal_and_refusals(settings: Any, tmp_path: Path, cipher: str) -> None:
    mine = dataclasses.replace(settings, key_dir=tmp_path / "keys", cipher=cipher)
    token = seal("JBSWY3DPEHPK3PXP", aad="user:7:totp", settings=mine)
    assert token.startswith(f"v1.{cipher}.") and "JBSWY3DPEHPK3PXP" not in token
    assert seal("JBSWY3DPEHPK3PXP", aad="user:7:totp", settings=mine) != token  # a fresh nonce each time
    assert unseal(token, aad="user:7:totp", settings=mine) == "JBSWY3DPEHPK3PXP"

    key_file = tmp_path / "keys" / "data.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(base64.b64decode(key_file.read_text())) == 32

    head, nonce, body = token.rsplit(".", 2)
    flipped = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1]
    cases = {
        "another row": (token, "user:8:totp", "crypto.decrypt_failed"),
        "tampered ciphertext": (f"{head}.{nonce}.{flipped}", "user:7:totp", "crypto.decrypt_failed"),
        "altered header": (
            token.replace(f"v1.{cipher}.", "v1.sm4." if cipher == "aes" else "v1.aes."),
            "user:7:totp",
            "crypto.decrypt_failed",
        ),
        "garbage": ("not-a-sealed-value", "user:7:totp", "crypto.token_malformed"),
    }
    for name, (value, aad, code) in cases.items():
        with pytest.raises(CryptoError) as refused:
            unseal(value, aad=aad, settings=mine)
        assert refused.value.code == code, name
        assert refused.value.status_code == 500 and refused.value.message

    # Another key directory (another platform, a lost key file): the key is missing.
    other = dataclasses.replace(mine, key_dir=tmp_path / "other-keys")
    with pytest.raises(CryptoError) as refused:
        unseal(token, aad="user:7:totp", settings=other)
    assert refused.value.code == "crypto.key_missing"

    # Rotation: new values use the new key, old ones still open and ask to be re-sealed.
    new_kid = rotate_data_key(mine.keys_path)
    assert needs_reseal(token, mine) and new_kid not in token
    assert unseal(token, aad="user:7:totp", settings=mine) == "JBSWY3DPEHPK3PXP"
    fresh = seal("x", aad="a", settings=mine)
    assert f".{new_kid}." in fresh and not needs_reseal(fresh, mine)
    assert len(list((tmp_path / "keys").glob("data-*.key"))) == 1


# ---------------------------------------------------------------- TOTP


def test_totp_enrol_login_replay_and_disable_via_api(client: TestClient, settings: Any, clock: Clock) -> None:
    officer = auth(client, "ga_officer")
    assert client.get("/api/v1/me/totp", headers=officer).json() == {
        "enabled": False,
        "pending": False,
        "required": False,
    }
    r = client.post("/api/v1/me/totp", headers=officer)
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    setup = r.json()
    secret = setup["secret"]
    assert setup["otpauth_uri"].startswith("otpauth://totp/%E6%95%B0%E6%8D%AE%E9%80%9A:ga_officer?")
    assert f"secret={secret}" in setup["otpauth_uri"] and "issuer=%E6%95%B0%E6%8D%AE%E9%80%9A" in setup["otpauth_uri"]
    assert base64.b64decode(setup["qr_code"].removeprefix("data:image/svg+xml;base64,")).startswith(b"<svg")
    stored = user_row(settings, "ga_officer")
    assert stored.totp_secret and stored.totp_secret.startswith("v1.aes.") and secret not in stored.totp_secret
    assert not stored.totp_enabled

    # Not yet confirmed: logins still need no code.
    assert token_login(client, "ga_officer").status_code == 200
    r = client.post("/api/v1/me/totp/confirm", json={"code": "000000"}, headers=officer)
    assert r.status_code == 422 and error_code(r) == "totp.code_invalid"
    confirm_code = clock.code(secret)
    r = client.post("/api/v1/me/totp/confirm", json={"code": confirm_code}, headers=officer)
    assert r.status_code == 200 and r.json()["enabled"] is True
    r = client.post("/api/v1/me/totp", headers=officer)
    assert r.status_code == 409 and error_code(r) == "totp.already_enabled"

    r = token_login(client, "ga_officer")
    assert r.status_code == 401 and error_code(r) == "auth.otp_required"
    r = token_login(client, "ga_officer", otp="123456" if confirm_code != "123456" else "654321")
    assert r.status_code == 401 and error_code(r) == "auth.otp_invalid"
    r = token_login(client, "ga_officer", otp=confirm_code)  # the step used to confirm is spent
    assert r.status_code == 401 and error_code(r) == "auth.otp_invalid"
    r = token_login(client, "ga_officer", password="wrong", otp=clock.code(secret))
    assert r.status_code == 401 and error_code(r) == "auth.bad_credentials"

    clock.advance(30)
    code = clock.code(secret)
    r = token_login(client, "ga_officer", otp=code)
    assert r.status_code == 200, r.text
    assert client.get("/api/v1/me", headers={"Authorization": "Bearer " + r.json()["access_token"]}).status_code == 200
    r = token_login(client, "ga_officer", otp=code)  # replayed within its 30 seconds
    assert r.status_code == 401 and error_code(r) == "auth.otp_invalid"
    assert user_row(settings, "ga_officer").failed_logins == 1  # the success reset the earlier failures

    clock.advance(30)
    r = client.request(
        "DELETE", "/api/v1/me/totp", json={"password": "wrong", "code": clock.code(secret)}, headers=officer
    )
    assert r.status_code == 422 and error_code(r) == "auth.password_wrong"
    r = client.request("DELETE", "/api/v1/me/totp", json={"password": PASSWORD, "code": code}, headers=officer)
    assert r.status_code == 422 and error_code(r) == "auth.otp_invalid"
    r = client.request(
        "DELETE", "/api/v1/me/totp", json={"password": PASSWORD, "code": clock.code(secret)}, headers=officer
    )
    assert r.status_code == 200 and r.json()["enabled"] is False
    assert user_row(settings, "ga_officer").totp_secret is None
    assert token_login(client, "ga_officer").status_code == 200

    actions = [r.action for r in records(settings)]
    assert "auth.totp.enable" in actions and "auth.totp.disable" in actions
    logins = records(settings, "auth.login")
    assert any('"totp": true' in (r.detail or "") for r in logins)
    failed = records(settings, "auth.login_failed")
    assert {r.reason for r in failed} >= {"auth.otp_invalid", "auth.bad_credentials", "auth.password_wrong"}
    assert all(r.outcome == "refused" and r.resource == "user:ga_officer" for r in failed)


def test_role_policy_forces_enrolment_before_anything_else(client: TestClient, settings: Any, clock: Clock) -> None:
    admin = auth(client, "admin")
    officer_token = auth(client, "ga_officer")
    r = client.put("/api/v1/security/policy", json={"totp_required_roles": ["platform_admin"]}, headers=admin)
    assert r.status_code == 422 and error_code(r) == "security.enrol_first"  # would lock the admin out
    r = client.put("/api/v1/security/policy", json={"totp_required_roles": ["king"]}, headers=admin)
    assert r.status_code == 422 and error_code(r) == "security.role_invalid"
    r = client.put("/api/v1/security/policy", json={"totp_required_roles": ["data_officer"]}, headers=admin)
    assert r.status_code == 200 and r.json() == {"totp_required_roles": ["data_officer"]}
    assert client.get("/api/v1/security/policy", headers=admin).json() == {"totp_required_roles": ["data_officer"]}
    update = records(settings, "security.policy.update")
    assert update and update[-1].actor == "admin" and '"signed_out": 2' in (update[-1].detail or "")

    # Sessions of officers without TOTP end at once.
    r = client.get("/api/v1/me", headers=officer_token)
    assert r.status_code == 401 and error_code(r) == "auth.token_invalid"

    r = token_login(client, "ga_officer")
    assert r.status_code == 403 and error_code(r) == "auth.totp_enrollment_required"
    grant = r.json()["error"]["details"][0]
    assert grant["expires_in"] == 600
    enrol = {"Authorization": "Bearer " + grant["enrollment_token"]}
    # The enrolment token opens nothing else.
    for method, path in (("GET", "/api/v1/me"), ("GET", "/api/v1/catalog/entries"), ("GET", "/api/v1/departments")):
        r = client.request(method, path, headers=enrol)
        assert r.status_code == 401 and error_code(r) == "auth.totp_enrollment_required", path
    assert client.get("/api/v1/me/totp", headers=enrol).json()["required"] is True
    r = client.request("DELETE", "/api/v1/me/totp", json={"password": PASSWORD, "code": "123456"}, headers=enrol)
    assert r.status_code == 401

    secret = client.post("/api/v1/me/totp", headers=enrol).json()["secret"]
    r = client.post("/api/v1/me/totp/confirm", json={"code": clock.code(secret)}, headers=enrol)
    assert r.status_code == 200 and r.json() == {"enabled": True, "pending": False, "required": True}
    clock.advance(30)
    r = token_login(client, "ga_officer", otp=clock.code(secret))
    assert r.status_code == 200, r.text
    full = {"Authorization": "Bearer " + r.json()["access_token"]}
    assert client.get("/api/v1/me", headers=full).status_code == 200
    clock.advance(30)
    r = client.request(
        "DELETE", "/api/v1/me/totp", json={"password": PASSWORD, "code": clock.code(secret)}, headers=full
    )
    assert r.status_code == 403  # the policy requires it

    # Lost phone: the department admin resets the second factor; the officer enrols again.
    r = client.patch(
        f"/api/v1/users/{user_id(client, 'ga_officer')}", json={"totp_reset": True}, headers=auth(client, "ga_admin")
    )
    assert r.status_code == 200 and r.json()["totp_enabled"] is False
    assert client.get("/api/v1/me", headers=full).status_code == 401
    assert error_code(token_login(client, "ga_officer")) == "auth.totp_enrollment_required"
    # Other roles are not concerned.
    assert token_login(client, "ga_admin").status_code == 200


def test_enrolment_and_code_login_through_pages(client: TestClient, settings: Any, clock: Clock) -> None:
    admin = auth(client, "admin")
    client.put("/api/v1/security/policy", json={"totp_required_roles": ["auditor"]}, headers=admin)

    r = web_login(client, "auditor")
    assert r.status_code == 303 and r.headers["location"] == "/account/totp"
    assert client.get("/catalog").status_code == 200 and "登录</a>" in client.get("/catalog").text  # not logged in
    assert client.get("/login", follow_redirects=False).headers["location"] == "/account/totp"
    page = client.get("/account/totp").text
    assert "您的角色要求启用双因素认证" in page
    r = client.post(
        "/account/totp/start", data={"csrf_token": csrf_of(client, "/account/totp")}, follow_redirects=False
    )
    assert r.status_code == 303
    page = client.get("/account/totp")
    assert page.headers["cache-control"] == "no-store"
    secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', page.text)
    assert secret and 'src="data:image/svg+xml;base64,' in page.text
    token = csrf_of(client, "/account/totp")
    r = client.post("/account/totp/confirm", data={"code": "000000", "csrf_token": token}, follow_redirects=False)
    assert r.status_code == 422 and "验证码不正确" in r.text
    r = client.post(
        "/account/totp/confirm", data={"code": clock.code(secret.group(1)), "csrf_token": token}, follow_redirects=False
    )
    assert r.status_code == 303 and r.headers["location"] == "/catalog"
    assert "已启用双因素认证" in client.get("/catalog").text and "审计员" in client.get("/catalog").text
    client.post("/logout", data={"csrf_token": csrf_of(client, "/catalog")})

    # Next login: password, then the code form.
    r = web_login(client, "auditor")
    assert r.status_code == 303 and r.headers["location"] == "/login"
    page = client.get("/login").text
    assert 'name="otp"' in page and 'name="password"' not in page
    token = csrf_of(client)
    r = client.post("/login/otp", data={"otp": clock.code(secret.group(1)), "csrf_token": token})
    assert r.status_code == 400 and "已使用过" in r.text  # the confirming code is spent
    clock.advance(30)
    r = client.post(
        "/login/otp", data={"otp": clock.code(secret.group(1)), "csrf_token": token}, follow_redirects=False
    )
    assert r.status_code == 303 and r.headers["location"] == "/catalog"
    assert "审计员" in client.get("/catalog").text
    page = client.get("/account").text
    assert "已启用" in page and "不能停用" in page  # required by the policy


# ---------------------------------------------------------------- lockout


def test_lock_seconds_back_off() -> None:
    assert [security.lock_seconds(n) for n in (0, 4, 5, 6, 7, 10, 11, 30)] == [0, 0, 60, 120, 240, 1920, 3600, 3600]


def test_lockout_back_off_unlock_and_counter_persistence(client: TestClient, settings: Any, clock: Clock) -> None:
    for _ in range(4):
        r = token_login(client, "ga_officer", password="Wrong!pass1")
        assert r.status_code == 401 and error_code(r) == "auth.bad_credentials"
    # The request rolled back, yet the counter was written in a transaction of its own.
    assert user_row(settings, "ga_officer").failed_logins == 4
    r = token_login(client, "ga_officer", password="Wrong!pass1")
    assert r.status_code == 423 and error_code(r) == "auth.account_locked"
    assert r.headers["retry-after"] == "60" and r.json()["error"]["details"] == [{"retry_after": 60}]
    stored = user_row(settings, "ga_officer")
    assert stored.failed_logins == 5 and stored.locked_until is not None

    r = token_login(client, "ga_officer")  # the right password does not open a locked account
    assert r.status_code == 423 and 0 < int(r.headers["retry-after"]) <= 60
    clock.advance(61)
    r = token_login(client, "ga_officer", password="Wrong!pass1")  # 6th failure: twice as long
    assert r.status_code == 423 and r.headers["retry-after"] == "120"
    clock.advance(121)
    assert token_login(client, "ga_officer").status_code == 200
    assert user_row(settings, "ga_officer").failed_logins == 0

    # Locked again; the department admin unlocks (another department's admin cannot).
    for _ in range(5):
        token_login(client, "ga_officer", password="Wrong!pass1")
    assert token_login(client, "ga_officer").status_code == 423
    uid = user_id(client, "ga_officer")
    listed = client.get(f"/api/v1/users/{uid}", headers=auth(client, "ga_admin")).json()
    assert listed["failed_logins"] == 5 and listed["locked_until"]
    r = client.patch(f"/api/v1/users/{uid}", json={"unlock": True}, headers=auth(client, "mz_admin"))
    assert r.status_code == 404
    r = client.patch(f"/api/v1/users/{uid}", json={"unlock": True}, headers=auth(client, "ga_admin"))
    assert r.status_code == 200 and r.json()["locked_until"] is None
    assert token_login(client, "ga_officer").status_code == 200

    locks = records(settings, "auth.account_locked")
    assert len(locks) == 3 and all(r.subject_department == "GA" for r in locks)
    unlocks = [r for r in records(settings, "user.update") if '"unlock"' in (r.detail or "")]
    assert unlocks and unlocks[-1].actor == "ga_admin" and unlocks[-1].resource == "user:ga_officer"

    # Unknown names: refused the same way, never locked, and just as slow.
    def timed(name: str) -> float:
        start = time.perf_counter()
        r = token_login(client, name, password="Wrong!pass1")
        assert r.status_code == 401 and error_code(r) == "auth.bad_credentials"
        return time.perf_counter() - start

    known = min(timed("mz_officer") for _ in range(3))
    unknown = min(timed("nobody_at_all") for _ in range(6))
    assert unknown > known * 0.5, (known, unknown)
    anonymous = [r for r in records(settings, "auth.login_failed") if r.resource is None]
    assert anonymous and all(r.actor == "anonymous" and "nobody_at_all" not in (r.detail or "") for r in anonymous)


def test_web_login_lockout_message(client: TestClient) -> None:
    for _ in range(4):
        assert web_login(client, "mz_officer", "Wrong!pass1").status_code == 400
    r = web_login(client, "mz_officer", "Wrong!pass1")
    assert r.status_code == 423 and "账号已临时锁定" in r.text and r.headers["retry-after"] == "60"


# ---------------------------------------------------------------- password policy


def test_password_policy(client: TestClient, settings: Any) -> None:
    admin = auth(client, "admin")
    body = {"display_name": "新人", "role": "data_officer", "department_code": "GA"}
    cases = {
        "user.password_contains_username": ("zhangwei", "Zhangwei!2026"),
        "user.password_common": ("lisi", "P@ssw0rd"),
        "user.password_too_short": ("wangwu", "Aa1!"),
        "user.password_too_weak": ("zhaoliu", "alllowercase1"),
    }
    for code, (username, password) in cases.items():
        r = client.post("/api/v1/users", json={**body, "username": username, "password": password}, headers=admin)
        assert r.status_code == 422 and error_code(r) == code, (code, r.text)
        assert r.json()["error"]["field"] == "password"
    for common in ("Admin@123", "Qwer1234!", "12345678Aa", "PASSW0RD!"):
        r = client.post("/api/v1/users", json={**body, "username": "qianqi", "password": common}, headers=admin)
        assert error_code(r) == "user.password_common", common
    for username, fine in (("suba", PASSWORD), ("subb", "Datatong@2026")):
        r = client.post("/api/v1/users", json={**body, "username": username, "password": fine}, headers=admin)
        assert r.status_code == 201, r.text

    uid = user_id(client, "suba")
    r = client.patch(f"/api/v1/users/{uid}", json={"password": PASSWORD}, headers=admin)
    assert r.status_code == 422 and error_code(r) == "user.password_reused"

    # One's own password: the current one is asked for; the new one follows the policy.
    officer = auth(client, "mz_officer")
    r = client.post(
        "/api/v1/me/password", json={"current_password": "x", "new_password": "N3w!secret"}, headers=officer
    )
    assert r.status_code == 422 and error_code(r) == "auth.password_wrong"
    r = client.post(
        "/api/v1/me/password", json={"current_password": PASSWORD, "new_password": PASSWORD}, headers=officer
    )
    assert r.status_code == 422 and error_code(r) == "user.password_reused"
    r = client.post(
        "/api/v1/me/password", json={"current_password": PASSWORD, "new_password": "Mz_officer!1"}, headers=officer
    )
    assert error_code(r) == "user.password_contains_username"
    r = client.post(
        "/api/v1/me/password", json={"current_password": PASSWORD, "new_password": "N3w!secret"}, headers=officer
    )
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    assert client.get("/api/v1/me", headers=officer).status_code == 401  # old tokens end
    assert client.get("/api/v1/me", headers={"Authorization": "Bearer " + r.json()["access_token"]}).status_code == 200
    assert token_login(client, "mz_officer", password="N3w!secret").status_code == 200
    assert user_row(settings, "mz_officer").password_changed_at is not None
    changes = records(settings, "user.password.change")
    assert changes and changes[-1].actor == "mz_officer"


# ---------------------------------------------------------------- sessions


def test_page_session_idle_and_absolute_expiry(client: TestClient, settings: Any, clock: Clock) -> None:
    assert web_login(client, "ga_admin").status_code == 303
    assert client.get("/account").status_code == 200
    clock.advance(settings.session_idle_minutes * 60 - 5)
    assert client.get("/account").status_code == 200  # activity keeps it alive …
    clock.advance(settings.session_idle_minutes * 60 + 1)
    r = client.get("/account", follow_redirects=False)  # … idleness ends it
    assert r.status_code == 303 and r.headers["location"] == "/login?next=/account"
    assert "由于长时间未操作，您已自动退出" in client.get("/login").text

    assert web_login(client, "ga_admin").status_code == 303
    for _ in range(settings.session_hours * 3):  # active every 20 minutes …
        clock.advance(20 * 60)
        assert client.get("/account", follow_redirects=False).status_code == 200
    clock.advance(20 * 60)  # … but no longer than session_hours in all
    assert client.get("/account", follow_redirects=False).status_code == 303
    assert "登录已超过最长有效时间" in client.get("/login").text


def test_bearer_tokens_expire(client: TestClient, settings: Any) -> None:
    r = token_login(client, "ga_officer")
    assert r.json()["expires_in"] == settings.access_token_minutes * 60
    import jwt

    claims = jwt.decode(r.json()["access_token"], settings.secret_key, algorithms=["HS256"], issuer="datatong")
    assert claims["exp"] - claims["iat"] == settings.access_token_minutes * 60


# ---------------------------------------------------------------- rate limits


def test_sliding_window_limiter() -> None:
    limiter = SlidingWindowLimiter(window=60)
    assert limiter.hit(["a", "x"], 2, now=0) == 0
    assert limiter.hit(["a", "y"], 2, now=10) == 0
    assert limiter.hit(["a", "z"], 2, now=20) == 40  # key "a" is full until the first hit leaves
    assert limiter.hit(["b", "x"], 2, now=20) == 0  # "x" has one hit left
    assert limiter.hit(["c", "x"], 2, now=21) == 39
    assert limiter.hit(["a"], 2, now=60.5) == 0
    assert limiter.hit(["a"], 0, now=61) == 0  # 0: no limit


@pytest.fixture
def low_rate(app: Any, settings: Any) -> Iterator[None]:
    # (not monkeypatch.setattr: Starlette's State would lose the attribute on undo)
    app.state.settings = dataclasses.replace(settings, login_rate_per_minute=3)
    limiter_for(app).reset()
    try:
        yield
    finally:
        app.state.settings = settings
        limiter_for(app).reset()


def test_login_rate_limits(client: TestClient, low_rate: None) -> None:
    for _ in range(3):
        assert token_login(client, "nobody", password="x").status_code == 401
    r = token_login(client, "ga_officer")  # the address is used up, whatever the account
    assert r.status_code == 429 and error_code(r) == "rate_limited"
    assert 1 <= int(r.headers["retry-after"]) <= 60
    assert r.json()["error"]["details"][0]["retry_after"] == int(r.headers["retry-after"])
    r = client.post("/api/v1/auth/client-token", json={"client_id": CLIENT_ID, "client_secret": PASSWORD})
    assert r.status_code == 200  # client credentials are counted separately …
    for _ in range(2):
        client.post("/api/v1/auth/client-token", json={"client_id": CLIENT_ID, "client_secret": "bad"})
    r = client.post("/api/v1/auth/client-token", json={"client_id": CLIENT_ID, "client_secret": PASSWORD})
    assert r.status_code == 429 and "retry-after" in r.headers  # … and limited the same way
    r = web_login(client, "ga_officer")
    assert r.status_code == 429 and "尝试过于频繁" in r.text and "retry-after" in r.headers


# ---------------------------------------------------------------- headers


def test_security_headers_on_pages_and_api(client: TestClient, settings: Any) -> None:
    page = client.get("/catalog")
    api = client.get("/api/v1/catalog/entries")
    missing = client.get("/api/v1/nowhere")
    for r in (page, api, missing):
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["referrer-policy"] == "same-origin"
        assert "camera=()" in r.headers["permissions-policy"]
        assert r.headers["cross-origin-opener-policy"] == "same-origin"
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        assert "strict-transport-security" not in r.headers
    csp = page.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["default-src"] == "'self'" and directives["script-src"] == "'self'"
    assert "unsafe" not in csp and directives["object-src"] == "'none'"
    assert api.headers["content-security-policy"].startswith("default-src 'none'")
    r = client.post("/api/v1/auth/token", json={"username": "ga_officer", "password": PASSWORD})
    assert r.headers["cache-control"] == "no-store"

    https = create_app(dataclasses.replace(settings, cookie_secure=True), migrate=False)
    r = TestClient(https, base_url="https://testserver").get("/catalog")
    assert r.headers["strict-transport-security"].startswith("max-age=31536000")


def test_templates_need_no_inline_script_or_style() -> None:
    """What the Content-Security-Policy would block: inline scripts, style attributes and
    elements, event-handler attributes, javascript: links."""
    offenders = []
    for path in TEMPLATES.rglob("*.html"):
        text = path.read_text(encoding="utf-8")
        for pattern in (r"<script(?![^>]*\bsrc=)[^>]*>", r"\sstyle=", r"<style", r"\son[a-z]+=", r"javascript:"):
            if re.search(pattern, text, re.I):
                offenders.append(f"{path.relative_to(TEMPLATES)}: {pattern}")
    assert not offenders, offenders


# ---------------------------------------------------------------- audit of administrative changes


def test_administrative_changes_are_audited(client: TestClient, settings: Any) -> None:
    admin = auth(client, "admin")
    r = client.post("/api/v1/departments", json={"code": "WJW", "name": "示范市卫健委", "level": "city"}, headers=admin)
    dept_id = r.json()["id"]
    client.patch(f"/api/v1/departments/{dept_id}", json={"contact": "0000-1"}, headers=admin)
    with session_scope(settings.database_url) as session:
        rows = [
            {"code": "JY", "name": "示范市教育局", "level": "市"},
            {"code": "JY-1", "name": "一中", "level": "区县", "parent_code": "JY"},
        ]
        assert import_departments(session, None, rows) == 2
    secret_password = "Init!al-Pass9"
    r = client.post(
        "/api/v1/users",
        json={
            "username": "wjw_officer",
            "display_name": "卫健",
            "password": secret_password,
            "role": "data_officer",
            "department_code": "WJW",
        },
        headers=admin,
    )
    uid = r.json()["id"]
    client.patch(
        f"/api/v1/users/{uid}",
        json={"role": "dept_admin", "is_active": False, "password": "Reset!Pass99"},
        headers=admin,
    )
    r = client.post("/api/v1/clients", json={"name": "卫健系统", "department_code": "WJW"}, headers=admin)
    client_id, client_secret = r.json()["client_id"], r.json()["client_secret"]

    found = {(r.action, r.resource): r for r in records(settings)}
    expected = {
        ("department.create", "department:WJW"): "WJW",
        ("department.update", "department:WJW"): "WJW",
        ("department.import", "department"): None,
        ("user.create", "user:wjw_officer"): "WJW",
        ("user.update", "user:wjw_officer"): "WJW",
        ("client.create", f"client:{client_id}"): "WJW",
    }
    for key, department in expected.items():
        assert key in found, key
        assert found[key].subject_department == department and found[key].outcome == "allowed"
    assert found[("department.import", "department")].rows == 2
    assert found[("department.import", "department")].actor_kind == "system"
    update = found[("user.update", "user:wjw_officer")]
    assert update.actor == "admin" and '"password_reset": true' in (update.detail or "")
    assert '"to": "dept_admin"' in (update.detail or "") and '"to": false' in (update.detail or "")
    everything = " ".join(f"{r.detail} {r.resource} {r.items}" for r in records(settings))
    for secret in (secret_password, "Reset!Pass99", client_secret):
        assert secret not in everything


# ---------------------------------------------------------------- no secret in the logs


def test_no_secret_reaches_the_logs(
    client: TestClient, settings: Any, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # everything, SQL statements and their parameters included
    logging.getLogger("sqlalchemy.engine").setLevel(logging.INFO)
    try:
        seen: list[str] = [PASSWORD]
        r = token_login(client, "ga_admin")
        seen.append(r.json()["access_token"])
        headers = {"Authorization": "Bearer " + seen[-1]}
        r = client.post("/api/v1/clients", json={"name": "日志检查系统"}, headers=headers)
        created = r.json()
        seen.append(created["client_secret"])
        r = client.post(
            "/api/v1/auth/client-token",
            json={"client_id": created["client_id"], "client_secret": created["client_secret"]},
        )
        seen.append(r.json()["access_token"])
        client.post(
            "/api/v1/auth/client-token", json={"client_id": created["client_id"], "client_secret": "Bad!guess-123"}
        )
        seen.append("Bad!guess-123")
        setup = client.post("/api/v1/me/totp", headers=headers).json()
        seen.append(setup["secret"])
        code = clock.code(setup["secret"])
        assert client.post("/api/v1/me/totp/confirm", json={"code": code}, headers=headers).status_code == 200
        token_login(client, "ga_admin", password="Wrong!guess-456")
        seen.append("Wrong!guess-456")
        clock.advance(30)
        r = token_login(client, "ga_admin", otp=clock.code(setup["secret"]))
        assert r.status_code == 200
        seen.append(r.json()["access_token"])
        assert web_login(client, "mz_officer").status_code == 303
    finally:
        logging.getLogger("sqlalchemy.engine").setLevel(logging.WARNING)
    # Uvicorn's access log line of an OpenID Connect callback (the query holds the code).
    # Uvicorn's own logging setup (e.g. by the live_server fixture) may stop propagation and
    # raise the level, so the capture is attached to its logger directly.
    access = logging.getLogger("uvicorn.access")
    level = access.level
    access.addHandler(caplog.handler)
    access.setLevel(logging.INFO)
    try:
        access.info(
            '%s - "%s %s HTTP/%s" %d',
            "127.0.0.1:5000",
            "GET",
            "/login/oidc/callback?code=Auth-Code-789&state=S-1",
            "1.1",
            303,
        )
    finally:
        access.removeHandler(caplog.handler)
        access.setLevel(level)
    seen.append("Auth-Code-789")
    logged = caplog.text
    assert "SELECT" in logged and "/login/oidc/callback?code=[redacted]" in logged  # the capture saw both
    for secret in seen:
        assert secret not in logged
    audited = " ".join(f"{r.actor} {r.resource} {r.detail} {r.reason}" for r in records(settings))
    for secret in seen:
        assert secret not in audited
    assert "auth.client_token_failed" in [r.action for r in records(settings)]


def test_errors_are_app_errors() -> None:
    """Every refusal of the login rules is an AppError with a stable code and Chinese text."""
    for exc in (
        security.AccountLocked(90),
        security.otp_required(),
        security.otp_invalid(),
        security.bad_credentials(),
    ):
        assert isinstance(exc, AppError) and exc.code.startswith("auth.") and exc.message
    assert security.AccountLocked(90).headers == {"Retry-After": "90"}
    assert "2 分钟" in security.AccountLocked(90).message


# ---------------------------------------------------------------- in a real browser

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def browser_page() -> Iterator[tuple[Any, list[str]]]:
    """A Chromium page and the Content-Security-Policy violations it reports."""
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is not installed at /usr/bin/chromium")
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"], headless=True)
        context = browser.new_context(locale="zh-CN")
        page = context.new_page()
        page.set_default_timeout(15_000)
        violations: list[str] = []
        page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
        try:
            yield page, violations
        finally:
            context.close()
            browser.close()


@pytest.mark.browser
def test_totp_enrolment_and_login_in_a_browser(
    client: TestClient, live_server: str, browser_page: tuple[Any, list[str]], clock: Clock
) -> None:
    from playwright.sync_api import expect

    page, violations = browser_page
    page.goto(f"{live_server}/login?next=/catalog")
    page.get_by_label("用户名").fill("ga_officer")
    page.get_by_label("密码").fill(PASSWORD)
    page.get_by_role("button", name="登录").click()
    page.wait_for_url(re.compile(r"/catalog$"))
    page.locator("#q").press_sequentially("人口", delay=30)  # htmx still works under the policy
    expect(page).to_have_url(re.compile(r"[?&]q=%E4%BA%BA%E5%8F%A3"))

    page.get_by_role("link", name="我的账号").click()
    page.get_by_role("link", name="启用双因素认证").click()
    page.get_by_role("button", name="开始绑定").click()
    qr = page.locator("#totp-qr")
    expect(qr).to_be_visible()
    assert qr.evaluate("img => img.naturalWidth") > 0  # the data: image is allowed and renders
    secret = page.locator("#totp-secret").inner_text().strip()
    page.get_by_label("验证码").fill(clock.code(secret))
    page.get_by_role("button", name="完成绑定").click()
    page.wait_for_url(re.compile(r"/account$"))
    expect(page.locator(".alert-success")).to_contain_text("已启用双因素认证")

    page.get_by_role("button", name="退出").click()
    page.goto(f"{live_server}/login?next=/catalog")
    page.get_by_label("用户名").fill("ga_officer")
    page.get_by_label("密码").fill(PASSWORD)
    page.get_by_role("button", name="登录").click()
    clock.advance(30)
    page.get_by_label("动态验证码").fill(clock.code(secret))
    page.get_by_role("button", name="验证并登录").click()
    page.wait_for_url(re.compile(r"/catalog$"))
    expect(page.locator(".whoami-name")).to_have_text("公安数据管理员")
    assert not violations, violations


def test_code_on_the_password_form_and_admin_pages(client: TestClient, settings: Any, clock: Clock) -> None:
    set_totp(client, enabled=True, usernames=["mz_officer"])
    data = {
        "username": "mz_officer",
        "password": PASSWORD,
        "otp": code_now(at=clock.now),
        "csrf_token": csrf_of(client),
    }
    r = client.post("/login", data=data, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/catalog"
    client.post("/logout", data={"csrf_token": csrf_of(client, "/catalog")})

    # 安全策略 page: the platform admin's only.
    assert web_login(client, "ga_admin").status_code == 303
    assert client.get("/admin/security").status_code == 403
    assert "安全策略" not in client.get("/catalog").text
    client.post("/logout", data={"csrf_token": csrf_of(client, "/catalog")})
    assert web_login(client, "admin").status_code == 303
    page = client.get("/admin/security").text
    assert 'value="dept_admin"' in page and "checked" not in page
    token = csrf_of(client, "/admin/security")
    r = client.post(
        "/admin/security",
        data={"totp_required_roles": ["dept_admin", "auditor"], "csrf_token": token},
        follow_redirects=False,
    )
    assert r.status_code == 303
    assert security_policy(settings) == ["auditor", "dept_admin"]
    r = client.post("/admin/security", data={"totp_required_roles": ["platform_admin"], "csrf_token": token})
    assert r.status_code == 422 and "请先为自己的账号启用双因素认证" in r.text

    # 用户管理 shows a lock and lifts it.
    for _ in range(5):
        token_login(client, "ga_officer", password="Wrong!pass1")
    page = client.get("/admin/users").text
    uid = user_id(client, "ga_officer")
    assert "已锁定" in page and f"/admin/users/{uid}/unlock" in page and "重置双因素" in page  # mz_officer's
    r = client.post(
        f"/admin/users/{uid}/unlock", data={"csrf_token": csrf_of(client, "/admin/users")}, follow_redirects=False
    )
    assert r.status_code == 303
    assert user_row(settings, "ga_officer").locked_until is None
    assert token_login(client, "ga_officer").status_code == 200


def security_policy(settings: Any) -> list[str]:
    with session_scope(settings.database_url) as session:
        return list(security.get_policy(session)["totp_required_roles"])


def test_totp_secret_is_resealed_after_key_rotation(client: TestClient, settings: Any, clock: Clock) -> None:
    set_totp(client, enabled=True, usernames=["auditor"])
    before = user_row(settings, "auditor").totp_secret or ""
    rotate_data_key(settings.keys_path)
    r = token_login(client, "auditor", otp=code_now(at=clock.now))  # the old key still opens it …
    assert r.status_code == 200, r.text
    after = user_row(settings, "auditor").totp_secret or ""
    assert after.split(".")[2] != before.split(".")[2] and not needs_reseal(after, settings)  # … and it moved
