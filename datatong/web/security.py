"""Security headers on every response, pages and API alike.

* Pages: a strict Content-Security-Policy — scripts, styles, fonts and connections
  only from this origin, no inline script or style (the templates have none; htmx is
  told not to inject its indicator style, see base.html), images also as ``data:`` (the
  TOTP QR code), no plug-ins, forms post only here, never framed.
* API answers are data, never documents: ``default-src 'none'``.
* /docs and /redoc (FastAPI's Swagger UI and ReDoc) load their scripts from a CDN with
  inline bootstrapping, so they get a policy allowing just that.
* Also: nosniff, frame denial, same-origin referrers, a Permissions-Policy turning off
  device APIs, Cross-Origin-Opener-Policy, and HSTS when cookies are HTTPS-only
  (``DATATONG_COOKIE_SECURE=1`` means the platform is served over HTTPS).

A header the route set itself is left as it is.

Also here: ``RedactQuery``, a logging filter on Uvicorn's access log that blanks query
parameters which can carry credentials (the OpenID Connect callback's ``code`` and
``state``, any ``token``/``password``/``secret``), so the access log holds no secret.
"""

from __future__ import annotations

import logging
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from datatong.settings import Settings

PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)
API_CSP = "default-src 'none'; frame-ancestors 'none'"
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "font-src 'self' https://fonts.gstatic.com; "
    "img-src 'self' data: https://fastapi.tiangolo.com https://cdn.redoc.ly; "
    "worker-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'self'; frame-ancestors 'none'"
)
DOCS_PATHS = ("/docs", "/redoc")
COMMON = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
    "Cross-Origin-Opener-Policy": "same-origin",
}
HSTS = "max-age=31536000; includeSubDomains"


def csp_for(path: str) -> str:
    if path.startswith(DOCS_PATHS):
        return DOCS_CSP
    if path.startswith("/api/") or path == "/openapi.json":
        return API_CSP
    return PAGE_CSP


def _encoded(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]


class SecurityHeadersMiddleware:
    """Pure ASGI (no buffering of bodies), so streamed downloads stay streamed. The
    headers are encoded once; per response it only looks which the route set itself."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        common = {**COMMON, **({"Strict-Transport-Security": HSTS} if settings.cookie_secure else {})}
        self._extra = {
            csp: [*_encoded(common), (b"content-security-policy", csp.encode("latin-1"))]
            for csp in (PAGE_CSP, API_CSP, DOCS_CSP)
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = self._extra[csp_for(scope.get("path", ""))]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers") or [])
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in extra if h[0] not in present)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


SECRET_PARAMS = re.compile(
    r"([?&](?:code|state|token|access_token|id_token|refresh_token|password|secret|client_secret|otp)=)[^&\s\"]*",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    return SECRET_PARAMS.sub(r"\1[redacted]", text)


class RedactQuery(logging.Filter):
    """Uvicorn logs ``(client, method, path with query, http version, status)``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


def install_log_redaction() -> None:
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactQuery) for f in access.filters):
        access.addFilter(RedactQuery())


install_log_redaction()
