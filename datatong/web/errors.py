"""Every error leaves as JSON with a stable code, Chinese and English messages."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException

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


def _location(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header", "form")]
    return ".".join(parts)


def _wants_html(request: Request) -> bool:
    """A browser asking for a page (not the API) gets an HTML error page."""
    path = request.url.path
    if path.startswith(("/api/", "/static/", "/openapi.json", "/docs", "/redoc")):
        return False
    return "text/html" in request.headers.get("accept", "")


def install(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def app_error(_request: Request, exc: AppError) -> JSONResponse:
        return JSONResponse(exc.to_dict(), status_code=exc.status_code)

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
        err = AppError("invalid_value", "输入中含有无法保存的字符或数值（如 NUL 字符、超出范围的数字）",
                       "The input holds a value the database cannot store (e.g. a NUL character)",
                       status_code=422)
        if _wants_html(request):
            from datatong.web.pages import error_page

            return error_page(request, err)
        return JSONResponse(err.to_dict(), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code, zh, en = HTTP_CODES.get(exc.status_code, ("http_error", "请求失败", "Request failed"))
        if _wants_html(request):
            from datatong.web.pages import error_page

            return error_page(request, AppError(code, zh, en, status_code=exc.status_code))
        return JSONResponse(
            {"error": {"code": code, "message": zh, "message_en": en}},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )
