"""Pydantic field types shared by the API shapes of every package.

Times are stored in UTC. PostgreSQL hands them back with their offset, SQLite without
one; the API always answers RFC 3339 with an explicit offset (what the OpenAPI
``date-time`` format means) and reads an input time as UTC when it names no offset.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator

_NUMBER = re.compile(r"\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*")


def as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _iso_only(value: Any) -> Any:
    """Pydantic would read "0.5" as a Unix time (1970-01-01T00:00:00.5Z); the API
    documents ISO 8601, so a bare number is refused rather than silently reinterpreted."""
    if isinstance(value, (int, float)) or (isinstance(value, str) and _NUMBER.fullmatch(value)):
        raise ValueError("expected an ISO 8601 date-time, e.g. 2026-01-31T08:00:00+08:00")
    return value


# A moment in UTC with an explicit offset, for answers and for inputs alike.
UtcDateTime = Annotated[datetime, BeforeValidator(_iso_only), AfterValidator(as_utc)]
