"""One error type for every rule the platform enforces.

Every API error leaves as JSON: a stable machine ``code``, a Chinese ``message``,
an English ``message_en`` and, where it applies, the ``field`` at fault.
"""

from __future__ import annotations

from typing import Any


class AppError(Exception):
    status_code = 400

    def __init__(
        self,
        code: str,
        message: str,
        message_en: str,
        *,
        field: str | None = None,
        status_code: int | None = None,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message_en)
        self.code = code
        self.message = message
        self.message_en = message_en
        self.field = field
        self.details = details or []
        # HTTP headers the answer carries (e.g. Retry-After of a refused login).
        self.headers = headers or {}
        if status_code is not None:
            self.status_code = status_code

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "code": self.code,
            "message": self.message,
            "message_en": self.message_en,
        }
        if self.field:
            body["field"] = self.field
        if self.details:
            body["details"] = self.details
        return {"error": body}


class ValidationFailed(AppError):
    status_code = 422


class NotFound(AppError):
    status_code = 404

    def __init__(self, what_zh: str, what_en: str) -> None:
        super().__init__("not_found", f"{what_zh}不存在", f"{what_en} not found")


class Forbidden(AppError):
    status_code = 403

    def __init__(self, message: str = "无权执行此操作", message_en: str = "Not allowed") -> None:
        super().__init__("forbidden", message, message_en)


class Unauthenticated(AppError):
    status_code = 401

    def __init__(
        self,
        message: str = "请先登录",
        message_en: str = "Authentication required",
        code: str = "unauthenticated",
    ) -> None:
        super().__init__(code, message, message_en)


class Conflict(AppError):
    status_code = 409


def invalid(code: str, message: str, message_en: str, field: str | None = None) -> ValidationFailed:
    return ValidationFailed(code, message, message_en, field=field)
