"""Per-request context for the audit trail: a request id (echoed as X-Request-ID, taken
from the caller when well-formed so a consumer can correlate) and the client address."""

from __future__ import annotations

import random
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from datatong.audit.service import RequestContext, request_context

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        # A correlation id, not a secret: 128 random bits without a system call (uuid4
        # reads the OS's random source and lets go of the GIL on every request).
        request_id = given if _REQUEST_ID.match(given) else f"{random.getrandbits(128):032x}"
        client = scope.get("client")
        token = request_context.set(RequestContext(request_id, client[0] if client else None))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_context.reset(token)
