"""Login through 统一身份认证 against a real OpenID Connect provider (oidc-provider-mock,
served by Werkzeug in a thread): discovery, authorization code + PKCE, ID-token
verification, mapping to existing local accounts only."""

from __future__ import annotations

import dataclasses
import re
import warnings
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from conftest import PASSWORD
from fastapi.testclient import TestClient
from identity_helpers import code_now, set_totp
from sqlalchemy import select

from datatong.app import create_app
from datatong.audit.models import AuditRecord
from datatong.db import session_scope
from datatong.orgs.models import User

with warnings.catch_warnings():  # the mock imports Authlib modules that announce their own deprecations
    warnings.simplefilter("ignore", DeprecationWarning)
    import authlib.deprecate

    warnings.simplefilter("ignore", authlib.deprecate.AuthlibDeprecationWarning)
    oidc_provider_mock = pytest.importorskip("oidc_provider_mock")

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:authlib.*")


@pytest.fixture(scope="module")
def provider() -> Iterator[str]:
    with oidc_provider_mock.run_server_in_thread() as server:
        yield f"http://localhost:{server.server_port}"


@pytest.fixture(scope="module")
def oidc_app(settings: Any, provider: str, app: Any) -> Any:
    """A second app on the same database, configured for the provider."""
    configured = dataclasses.replace(
        settings, oidc_issuer=provider, oidc_client_id="datatong-test", oidc_client_secret="not-checked-by-the-mock"
    )
    return create_app(configured, migrate=False)


@pytest.fixture
def sso(oidc_app: Any, world: dict[str, Any]) -> TestClient:
    return TestClient(oidc_app)


def set_person(provider: str, sub: str, **claims: Any) -> None:
    r = httpx.put(f"{provider}/users/{sub}", json=claims)
    assert r.status_code == 204, r.text


def login_through_provider(client: TestClient, provider: str, sub: str, target: str = "/catalog") -> httpx.Response:
    """What a browser does: our redirect, the provider's form (the person picks ``sub``),
    the provider's redirect back with a code."""
    r = client.get(f"/login/oidc?next={target}", follow_redirects=False)
    assert r.status_code == 302, r.text
    authorize = r.headers["location"]
    assert authorize.startswith(provider + "/oauth2/authorize")
    query = parse_qs(urlsplit(authorize).query)
    assert query["response_type"] == ["code"] and "openid" in query["scope"][0]
    assert query["state"][0] and query["nonce"][0] and query["code_challenge_method"] == ["S256"]
    r = httpx.post(authorize, data={"sub": sub}, follow_redirects=False)
    assert r.status_code == 302, r.text
    callback = r.headers["location"]
    assert callback.startswith("http://testserver/login/oidc/callback?")
    return client.get(callback, follow_redirects=False)


def audit(settings: Any, action: str) -> list[AuditRecord]:
    with session_scope(settings.database_url) as session:
        return list(session.scalars(select(AuditRecord).where(AuditRecord.action == action)))


def test_login_button_only_when_configured(client: TestClient, sso: TestClient) -> None:
    assert "统一身份认证登录" not in client.get("/login").text
    r = client.get("/login/oidc", follow_redirects=False)
    assert r.status_code == 404
    assert "统一身份认证登录" in sso.get("/login").text


def test_existing_user_logs_in_and_is_bound_to_the_subject(sso: TestClient, provider: str, settings: Any) -> None:
    set_person(provider, "p-1001", preferred_username="ga_officer", name="张三")
    r = login_through_provider(sso, provider, "p-1001", target="/catalog/new")
    assert r.status_code == 303 and r.headers["location"] == "/catalog/new"
    page = sso.get("/catalog").text
    assert "公安数据管理员" in page and "我的账号" in page
    with session_scope(settings.database_url) as session:
        user = session.scalar(select(User).where(User.username == "ga_officer"))
        assert user is not None and user.oidc_subject == "p-1001" and user.last_login_at is not None
    logins = audit(settings, "auth.login")
    assert logins and '"method": "oidc"' in (logins[-1].detail or "") and logins[-1].actor == "ga_officer"

    # The binding, not the (changeable) username claim, decides from now on.
    set_person(provider, "p-1001", preferred_username="renamed_in_the_directory")
    fresh = TestClient(sso.app)
    r = login_through_provider(fresh, provider, "p-1001")
    assert r.status_code == 303 and "公安数据管理员" in fresh.get("/catalog").text

    # Another person of the provider claiming the same username is refused.
    set_person(provider, "p-2002", preferred_username="ga_officer")
    other = TestClient(sso.app)
    r = login_through_provider(other, provider, "p-2002")
    assert r.status_code == 403 and "已绑定另一个统一身份认证账号" in r.text
    assert "登录</a>" in other.get("/catalog").text  # not logged in


def test_subject_is_the_username_when_the_claim_is_missing(sso: TestClient, provider: str) -> None:
    set_person(provider, "mz_officer", email="mz@example.gov.cn")
    r = login_through_provider(sso, provider, "mz_officer")
    assert r.status_code == 303
    assert "民政数据管理员" in sso.get("/catalog").text


def test_unknown_person_is_not_provisioned(sso: TestClient, provider: str, settings: Any) -> None:
    set_person(provider, "p-3003", preferred_username="stranger")
    r = login_through_provider(sso, provider, "p-3003")
    assert r.status_code == 403
    assert "账号未开通" in r.text and "text/html" in r.headers["content-type"]
    with session_scope(settings.database_url) as session:
        assert session.scalar(select(User).where(User.username == "stranger")) is None
    refused = audit(settings, "auth.login_failed")
    assert refused and refused[-1].reason == "auth.oidc_unknown_user" and refused[-1].outcome == "refused"


def test_disabled_account_is_refused(sso: TestClient, provider: str, settings: Any) -> None:
    with session_scope(settings.database_url) as session:
        user = session.scalar(select(User).where(User.username == "auditor"))
        assert user is not None
        user.is_active = False
    set_person(provider, "p-4004", preferred_username="auditor")
    r = login_through_provider(sso, provider, "p-4004")
    assert r.status_code == 403 and "账号已停用" in r.text


def test_forged_state_or_provider_error_is_refused(sso: TestClient, provider: str) -> None:
    set_person(provider, "p-5005", preferred_username="ga_admin")
    r = sso.get("/login/oidc", follow_redirects=False)
    authorize = r.headers["location"]
    r = httpx.post(authorize, data={"sub": "p-5005"}, follow_redirects=False)
    forged = re.sub(r"state=[^&]+", "state=forged", r.headers["location"])
    r = sso.get(forged, follow_redirects=False)
    assert r.status_code == 403 and "统一身份认证登录未完成" in r.text
    r = sso.get("/login/oidc/callback?error=access_denied&state=x", follow_redirects=False)
    assert r.status_code == 403
    assert "登录</a>" in sso.get("/catalog").text


def test_second_factor_still_applies(sso: TestClient, provider: str) -> None:
    set_totp(sso, enabled=True, usernames=["ga_admin"])
    set_person(provider, "p-6006", preferred_username="ga_admin")
    r = login_through_provider(sso, provider, "p-6006")
    assert r.status_code == 303 and r.headers["location"] == "/login"
    page = sso.get("/login").text
    assert "动态验证码" in page and "公安部门管理员" in page
    token = re.search(r'name="csrf-token" content="([^"]+)"', page)
    assert token
    r = sso.post("/login/otp", data={"otp": code_now(), "csrf_token": token.group(1)}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/catalog"
    assert "公安部门管理员" in sso.get("/catalog").text
    assert PASSWORD  # the password was never needed
