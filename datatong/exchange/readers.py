"""Reading a data source: one interface over a SQL table or view, a platform-managed
table (uploaded files) and an upstream HTTP JSON API.

Readers speak data item names (the catalog's language); the mapping to columns or fields
stays inside. Filters and projection are pushed into the database as SQL, never applied
by looping over rows in Python (the bulk target needs that).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from datatong.errors import AppError

OPS = ("eq", "in", "range", "prefix")
MAX_IN = 1000


class SourceError(AppError):
    """The source cannot be read: unreachable, bad credentials, missing table or column."""

    status_code = 502

    def __init__(self, code: str, message: str, message_en: str) -> None:
        super().__init__(f"exchange.{code}", message, message_en)


@dataclass(frozen=True)
class Filter:
    """``item op value``: eq (value), in (list), range ([low, high], either may be None),
    prefix (string)."""

    item: str
    op: str
    value: Any


@dataclass
class Page:
    rows: list[dict[str, Any]]  # item name → value
    after: Any | None  # the key of the last row: pass back for the next page; None at the end


class SourceReader(Protocol):
    items: Sequence[str]  # the data items this source maps
    key_item: str  # the item whose column orders pages (unique)

    def test(self) -> None:
        """Raise SourceError when the source cannot be read as mapped."""

    def page(self, items: Sequence[str], filters: Sequence[Filter], after: Any | None, limit: int) -> Page:
        """Rows ordered by the key, after ``after``, with only ``items`` (plus the key)."""

    def lookup(self, key_item: str, keys: Sequence[str], items: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Rows whose ``key_item`` is one of ``keys``, by key (for 查询核验)."""

    def stream(self, items: Sequence[str], filters: Sequence[Filter], after: Any | None, batch: int) -> Iterator[Page]:
        """Pages of ``batch`` rows until the end (bulk export)."""
