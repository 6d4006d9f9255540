"""Every error leaves as JSON with a stable code, Chinese and English messages."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.routing import iter_route_contexts
from pydantic import BaseModel, Field
from sqlalchemy.exc import DataError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from datatong.errors import AppError

HTTP_CODES = {
    400: ("bad_request", "请求格式错误", "Bad request"),
    401: ("unauthenticated", "请先登录", "Authentication required"),
    403: ("forbidden", "无权执行此操作", "Not allowed"),
    404: ("not_found", "请求的资源不存在", "Not found"),
    405: ("method_not_allowed", "不支持该请求方法", "Method not allowed"),
    413: ("too_large", "请求内容过大", "Request too large"),
    415: ("unsupported_media_type", "不支持的内容类型", "Unsupported media type"),
    429: ("rate_limited", "请求过于频繁，请稍后再试", "Too many requests"),
}


class ErrorBody(BaseModel):
    code: str = Field(min_length=1, description="稳定的机器可读错误代码，如 not_found、catalog.name_required")
    message: str = Field(min_length=1, description="中文说明")
    message_en: str = Field(min_length=1, description="English message")
    field: str | None = Field(default=None, description="出错的字段")
    details: list[dict[str, Any]] = Field(default_factory=list, description="逐项错误（校验、导入）")


class ErrorOut(BaseModel):
    error: ErrorBody


# Documented on every operation (install() puts it on the app's router before the
# routers are included): any 4xx answer has this shape. It also replaces FastAPI's
# default 422 schema ({"detail": [...]}), which this app never sends.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": ErrorOut, "description": "错误：{error: {code, message, message_en, field?, details?}}"},
}


def allowed_methods(request: Request) -> str:
    """Every method some route serves at this path (Starlette names only the first
    matching route's, so GET /x and POST /x would answer a PUT with ``Allow: GET``)."""
    methods: set[str] = set()
    for route in iter_route_contexts(request.app.router.routes):
        if route.methods and route.matches(request.scope)[0] != Match.NONE:
            methods |= route.methods
    return ", ".join(sorted(methods))


def _location(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header", "form")]
    return ".".join(parts)


def _wants_html(request: Request) -> bool:
    """A browser asking for a page (not the API) gets an HTML error page."""
    path = request.url.path
    if path.startswith(("/api/", "/static/", "/openapi.json", "/docs", "/redoc")):
        return False
    return "text/html" in request.headers.get("accept", "")


def audit_refusal(request: Request, exc: AppError) -> None:
    """A refused request leaves a trace (its own transaction was rolled back)."""
    from datatong.audit.writer import log_refusal
    from datatong.orgs.service import ANONYMOUS

    principal = getattr(request.state, "principal", None) or ANONYMOUS
    resource = f"{request.method} {request.url.path}"
    log_refusal(request.app.state.settings, principal, "request.refused", exc.code, resource=resource)


def install(app: FastAPI) -> None:
    app.router.responses = {**ERROR_RESPONSES, **app.router.responses}

    @app.exception_handler(AppError)
    async def app_error(request: Request, exc: AppError) -> JSONResponse:
        if exc.status_code == 403:
            await run_in_threadpool(audit_refusal, request, exc)
        return JSONResponse(exc.to_dict(), status_code=exc.status_code, headers=exc.headers or None)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"field": _location(tuple(e.get("loc", ()))), "message_en": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        first = details[0]["field"] if details else ""
        body = {
            "error": {
                "code": "validation_error",
                "message": f"请求参数不正确：{first}" if first else "请求参数不正确",
                "message_en": f"Invalid request: {first}" if first else "Invalid request",
                "field": first or None,
                "details": details,
            }
        }
        return JSONResponse(body, status_code=422)

    @app.exception_handler(DataError)
    async def data_error(request: Request, _exc: DataError) -> Response:
        # The database refused a value that passed validation (a NUL character, which
        # PostgreSQL cannot store, or a number out of its range). The request's
        # transaction has already been rolled back, so nothing was written.
        err = AppError(
            "invalid_value",
            "输入中含有无法保存的字符或数值（如 NUL 字符、超出范围的数字）",
            "The input holds a value the database cannot store (e.g. a NUL character)",
            status_code=422,
        )
        if _wants_html(request):
            from datatong.web.pages import error_page

            return error_page(request, err)
        return JSONResponse(err.to_dict(), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code, zh, en = HTTP_CODES.get(exc.status_code, ("http_error", "请求失败", "Request failed"))
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            headers["Allow"] = allowed_methods(request)
        if _wants_html(request):
            from datatong.web.pages import error_page

            page = error_page(request, AppError(code, zh, en, status_code=exc.status_code))
            page.headers.update(headers)
            return page
        return JSONResponse(
            {"error": {"code": code, "message": zh, "message_en": en}},
            status_code=exc.status_code,
            headers=headers or None,
        )
