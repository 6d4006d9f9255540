"""The verification call's fast lane: ``POST /api/v1/exchange/entries/{code}/verify``
answered in front of the router.

A verification is the platform's most frequent call and its smallest answer; through
the router, dependency solving and the session middleware it costs several times what
its own work does (profiled: the route's own code was a third of a call). So this
middleware — inside the request-id, security-header and HTTP-metric middlewares, so
those apply as to any route — answers the usual call itself: a bearer token checked
within the last half second, an entry whose source it has just read, a decision
``authorize`` can make from memory. It runs exactly the route's rules
(``api._verify_in_memory`` → ``service.verify_in_memory``: context headers, authorize,
lookup, audit record committed before the answer, signed receipt). Anything else — a
body the model refuses, a missing or bad context header, a refusal, a cold cache, a
cookie session — goes on to the router unchanged (the body it read is handed on), which
answers with its usual errors.
"""

from __future__ import annotations

import re
from types import SimpleNamespace

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from datatong.errors import AppError
from datatong.exchange import api
from datatong.exchange.context import CASE, OPERATOR, PURPOSE, SYSTEM
from datatong.exchange.schemas_calls import VerifyIn

TEMPLATE = "/api/v1/exchange/entries/{entry_code}/verify"
_PATH = re.compile(r"/api/v1/exchange/entries/([^/]+)/verify")
_ROUTE = SimpleNamespace(path=TEMPLATE, path_format=TEMPLATE)  # what HttpMetricsMiddleware labels by
MAX_BODY = 1 << 20  # a verification of 100 subjects is a few tens of KiB


class VerifyFastLane:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = _PATH.fullmatch(scope.get("path", "")) if scope["type"] == "http" else None
        if match is None or scope["method"] != "POST" or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        body, done = await _read(receive)
        if done:
            response = await _answer(scope, match.group(1), body)
            if response is not None:
                scope["route"] = _ROUTE
                await response(scope, receive, send)
                return
        await self.app(scope, _replay(body, done, receive), send)


async def _read(receive: Receive) -> tuple[bytes, bool]:
    """The request body, and whether it is all there (not over MAX_BODY, no disconnect)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), False
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), True
        if size > MAX_BODY:
            return b"".join(chunks), False


def _replay(body: bytes, done: bool, receive: Receive) -> Receive:
    """``receive`` for the router: what was read first, then the rest from the client."""
    sent = False

    async def again() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": not done}
        return await receive()

    return again


# The headers the call reads, by the names context.py asks for (the first of repeated ones,
# as Starlette's Headers.get gives it).
_NAMES = {name.lower().encode(): name for name in ("authorization", SYSTEM, OPERATOR, PURPOSE, CASE)}


def _headers(scope: Scope) -> dict[str, str]:
    found: dict[str, str] = {}
    for key, value in scope["headers"]:
        name = _NAMES.get(key)
        if name is not None and name not in found:
            found[name] = value.decode("latin-1")
    return found


async def _answer(scope: Scope, code: str, body: bytes) -> Response | None:
    headers = _headers(scope)
    if "authorization" not in headers:
        return None  # a browser session or an anonymous caller: the router says what is wrong
    try:
        model = VerifyIn.model_validate_json(body)
    except ValidationError:
        return None  # the router answers with its usual 422
    request = Request(scope)
    try:
        return await api.verify_in_memory(request, request.app.state.settings, code, model, headers)
    except AppError as exc:
        if exc.code in ("exchange.context_missing", "exchange.context_invalid"):
            return None  # the same 422 from the router, with its refusal record
        return JSONResponse(exc.to_dict(), status_code=exc.status_code, headers=exc.headers or None)
