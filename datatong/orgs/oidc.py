"""Login through the OpenID Connect provider of 统一身份认证 (Authlib's Starlette client).

Authorization-code flow with PKCE (S256), ``state`` and ``nonce`` kept in the signed
session cookie; the ID token's signature (the provider's JWKS), issuer, audience, expiry
and nonce are checked by Authlib, and the discovery document's issuer must be the
configured one. Mapping the person to a local account is a rule of
``orgs/security.py::oidc_user`` — no account is ever created here.
"""

from __future__ import annotations

import threading
import warnings
from typing import Any

import authlib.deprecate
import httpx
from fastapi import FastAPI, Request
from starlette.responses import Response

from datatong.errors import AppError
from datatong.settings import Settings

# Authlib announces (as an always-shown warning) that it falls back to httpx when httpx2 is
# not installed; httpx is what this project uses, so the notice is silenced here.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", authlib.deprecate.AuthlibDeprecationWarning)
    from authlib.integrations.starlette_client import OAuth, OAuthError, StarletteOAuth2App

try:  # Authlib talks through httpx2 when installed, else httpx
    import httpx2  # type: ignore[import-not-found]

    HTTP_ERRORS: tuple[type[Exception], ...] = (httpx.HTTPError, httpx2.HTTPError)
except ImportError:  # pragma: no cover - depends on the environment
    HTTP_ERRORS = (httpx.HTTPError,)

METADATA_ERRORS: tuple[type[Exception], ...] = (*HTTP_ERRORS, ValueError)  # ValueError: not JSON
NAME = "datatong_oidc"
TIMEOUT_SECONDS = 10
_lock = threading.Lock()


def unavailable() -> AppError:
    return AppError(
        "auth.oidc_unavailable",
        "统一身份认证服务暂时无法访问，请稍后再试或使用账号密码登录",
        "The identity provider cannot be reached; try later or log in with a password",
        status_code=503,
    )


def failed(reason: str) -> AppError:
    return AppError(
        "auth.oidc_failed",
        "统一身份认证登录未完成（已取消、超时或校验失败），请重新登录",
        f"Login through the identity provider did not complete: {reason}",
        status_code=403,
    )


def not_configured() -> AppError:
    return AppError(
        "auth.oidc_not_configured",
        "本平台未启用统一身份认证登录",
        "Login through an identity provider is not configured",
        status_code=404,
    )


def client_for(app: FastAPI) -> StarletteOAuth2App:
    """The app's OIDC client, made on first use from its settings."""
    settings: Settings = app.state.settings
    if not settings.oidc_enabled:
        raise not_configured()
    client: StarletteOAuth2App | None = getattr(app.state, "oidc_client", None)
    if client is None:
        with _lock:
            client = getattr(app.state, "oidc_client", None)
            if client is None:
                oauth = OAuth()
                issuer = (settings.oidc_issuer or "").rstrip("/")
                client = oauth.register(
                    name=NAME,
                    client_id=settings.oidc_client_id,
                    client_secret=settings.oidc_client_secret,
                    server_metadata_url=f"{issuer}/.well-known/openid-configuration",
                    client_kwargs={
                        "scope": "openid profile",
                        "code_challenge_method": "S256",
                        "timeout": TIMEOUT_SECONDS,
                    },
                )
                app.state.oidc_client = client
    assert client is not None
    return client


async def _metadata(client: StarletteOAuth2App, settings: Settings) -> dict[str, Any]:
    try:
        metadata: dict[str, Any] = await client.load_server_metadata()
    except METADATA_ERRORS as exc:
        raise unavailable() from exc
    if str(metadata.get("issuer", "")).rstrip("/") != (settings.oidc_issuer or "").rstrip("/"):
        # OpenID Connect Discovery §4.3: the document must name the issuer it was asked for.
        client.server_metadata.clear()
        raise failed("issuer of the discovery document differs from DATATONG_OIDC_ISSUER")
    return metadata


async def redirect_to_provider(request: Request, callback_url: str) -> Response:
    client = client_for(request.app)
    await _metadata(client, request.app.state.settings)
    try:
        response: Response = await client.authorize_redirect(request, callback_url)
    except HTTP_ERRORS as exc:
        raise unavailable() from exc
    return response


async def claims_from_callback(request: Request) -> dict[str, Any]:
    """The verified ID-token claims of the person the provider sent back."""
    client = client_for(request.app)
    await _metadata(client, request.app.state.settings)
    if request.query_params.get("error"):
        raise failed(str(request.query_params.get("error"))[:64])
    try:
        token = await client.authorize_access_token(request)
    except OAuthError as exc:
        raise failed(str(exc.error or "oauth error")[:64]) from exc
    except HTTP_ERRORS as exc:
        raise unavailable() from exc
    except Exception as exc:  # an ID token that does not verify (joserfc / authlib errors)
        raise failed(type(exc).__name__) from exc
    claims = token.get("userinfo")
    if not claims:
        raise failed("no ID token")
    return dict(claims)
