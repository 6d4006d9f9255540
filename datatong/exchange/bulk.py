"""Bulk exchange (批量交换): a streaming export of an entry's rows as CSV, JSON Lines or
Parquet, in constant memory, resumable after an interruption.

The order is the one of every exchange call (service.py): find the source; ``authorize``
(grant, items, purpose — deny by default; ``rows=0`` up front: a bulk export does not know
its size before it ends, and bulk grants usually carry no daily row quota); open the
ordered read and fetch the first page (a source error is still a JSON error); write the
audit record with the request context (fail closed: 503 and no byte when it cannot be
written); and only then stream. Each page (``batch`` rows) is masked column-wise — the
masked items and their rules are worked out once — and written as one chunk that ends on
a row boundary. When the stream ends (or the client goes away) a second audit record
``exchange.export_end`` notes the rows sent; it is best effort, the first one is the guard.

Resuming: the rows come ordered by the entry's key item, and for CSV and JSON Lines the
key item is always the first column. A client that stopped resumes with
``after=<key of the last complete row it stored>`` (header ``X-Datatong-Resume``). When
the grant gives the key item only masked, a masked key cannot be resumed from: the header
says ``restart`` and ``after`` is refused. Parquet is written as one file (its footer comes
last): an interrupted Parquet download restarts from the beginning.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from sqlalchemy.orm import Session

from datatong.catalog.models import CatalogEntry
from datatong.errors import invalid
from datatong.exchange import metrics, service
from datatong.exchange.readers import Page
from datatong.orgs.service import Principal
from datatong.sharing import masking, policy
from datatong.sharing.authorize import Decision

log = logging.getLogger(__name__)

BATCH = 5000
FORMATS = {
    "csv": "text/csv; charset=utf-8",
    "jsonl": "application/x-ndjson; charset=utf-8",
    "parquet": "application/vnd.apache.parquet",
}
EXTENSIONS = {"csv": "csv", "jsonl": "jsonl", "parquet": "parquet"}
BOM = "\ufeff"


@dataclass
class Export:
    """A started export: the chunks to send (the first page already read, the audit record
    already written) and what the response headers say."""

    chunks: Iterator[bytes]
    media_type: str
    filename: str
    resume: str  # the X-Datatong-Resume header
    decision: Decision
    items: list[str]  # the columns, in order (key item first)


def _text(value: Any) -> str | None:
    value = service._json_value(value)
    return None if value is None else str(value)


class _Masker:
    """Masks a page column by column: which items are masked, and by which rule, is
    decided once per export (the same rule ``masking.mask_row`` applies per row)."""

    def __init__(self, decision: Decision, names: Sequence[str], rules: dict[str, masking.MaskRule]) -> None:
        self.rules = rules
        self.kinds: dict[str, str] = {}
        for item in decision.masked_items:
            if item not in names:
                continue
            if item in decision.mask_kinds:
                kind = decision.mask_kinds[item]
            else:
                kind = masking.kind_for_item(item)
                kind = "text" if kind == "none" else kind
            if kind != "none":
                self.kinds[item] = kind

    def columns(self, page: Page, names: Sequence[str]) -> list[list[Any]]:
        cols = [[row.get(name) for row in page.rows] for name in names]
        for i, name in enumerate(names):
            kind = self.kinds.get(name)
            if kind is not None:
                rules = self.rules
                cols[i] = [masking.mask(kind, v, rules) for v in cols[i]]
        return cols


class _Sink(io.RawIOBase):
    """Where the Parquet writer writes: kept only until the next drain (constant memory).
    ``tell`` counts every byte ever written, as the writer's offsets need."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[bytes] = []
        self.pos = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        data = bytes(b)
        self.parts.append(data)
        self.pos += len(data)
        return len(data)

    def tell(self) -> int:
        return self.pos

    def drain(self) -> bytes:
        out = b"".join(self.parts)
        self.parts.clear()
        return out


def _csv_chunks(pages: Iterator[Page], names: list[str], masker: _Masker, counter: list[int]) -> Iterator[bytes]:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(names)
    head = BOM + buf.getvalue()
    first = True
    for page in pages:
        buf.seek(0)
        buf.truncate()
        cols = masker.columns(page, names)
        writer.writerows(zip(*[["" if v is None else _text(v) for v in col] for col in cols], strict=True))
        counter[0] += len(page.rows)
        data = buf.getvalue()
        if first:
            data, first = head + data, False
        yield data.encode()
    if first:
        yield head.encode()


def _jsonl_chunks(pages: Iterator[Page], names: list[str], masker: _Masker, counter: list[int]) -> Iterator[bytes]:
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=service._json_value).encode
    for page in pages:
        cols = masker.columns(page, names)
        lines = [dumps(dict(zip(names, values, strict=True))) for values in zip(*cols, strict=True)]
        counter[0] += len(page.rows)
        if lines:
            yield ("\n".join(lines) + "\n").encode()


def _parquet_chunks(pages: Iterator[Page], names: list[str], masker: _Masker, counter: list[int]) -> Iterator[bytes]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    # Every column as text: the source's types vary by database; text is what CSV and
    # JSON Lines carry too (dates ISO 8601, decimals exact).
    schema = pa.schema([(name, pa.string()) for name in names])
    sink = _Sink()
    writer = pq.ParquetWriter(sink, schema, compression="zstd")
    try:
        for page in pages:
            cols = masker.columns(page, names)
            arrays = [pa.array([_text(v) for v in col], type=pa.string()) for col in cols]
            writer.write_batch(pa.record_batch(arrays, schema=schema))
            counter[0] += len(page.rows)
            data = sink.drain()
            if data:
                yield data
    finally:
        writer.close()
    yield sink.drain()


_WRITERS = {"csv": _csv_chunks, "jsonl": _jsonl_chunks, "parquet": _parquet_chunks}


def export(
    session: Session,
    settings: Any,
    principal: Principal,
    reader_for: service.ReaderFactory,
    *,
    entry: CatalogEntry,
    ctx: service.Context,
    fmt: str,
    items: Sequence[str] | None,
    after: str | None = None,
    batch: int = BATCH,
    now: datetime | None = None,
) -> Export:
    """Start an export of ``entry``: refusals, bad parameters, source errors and an audit
    failure are raised here, before any byte; the returned chunks are the body."""
    if fmt not in FORMATS:
        raise invalid(
            "exchange.format_invalid",
            f"导出格式须为 {'/'.join(FORMATS)}",
            f"format must be one of {', '.join(FORMATS)}",
            "format",
        )
    reader, key_item = reader_for(session, settings, entry)
    wanted = list(dict.fromkeys([key_item, *items])) if items else []
    decision = service._decide(session, settings, principal, entry.code, wanted, ctx, 0, "export", now)
    granted = [i for i in decision.items if i in reader.items]
    if key_item not in granted:
        raise invalid(
            "exchange.export_needs_key",
            f"批量导出须授权主键信息项“{key_item}”（用于排序和断点续传）",
            f"A bulk export needs the key data item {key_item} granted (it orders and resumes the export)",
            "items",
        )
    names = [key_item, *[i for i in granted if i != key_item]]
    key_masked = key_item in decision.masked_items
    if after is not None and key_masked:
        raise invalid(
            "exchange.resume_unavailable",
            f"主键信息项“{key_item}”以脱敏形式授权，不能按 after 续传，请重新导出",
            f"The key item {key_item} is granted masked: an export cannot resume from it; start again",
            "after",
        )
    masker = _Masker(decision, names, policy.masking_rules(session))
    pages = reader.stream(names, [], after, batch)
    # Read the first page now: an unreachable source is a JSON error, not a cut stream.
    try:
        first = next(pages, None)
    except BaseException:
        _close(pages)
        raise
    detail: dict[str, Any] = {"format": fmt, "after": after, "bulk": True}
    try:
        service._audit(settings, principal, "exchange.export", entry, decision, 0, ctx, detail)
    except BaseException:
        _close(pages)
        raise
    resume = (
        "restart"
        if fmt == "parquet" or key_masked
        else f"after=<key of the last stored row>; item={quote(key_item)}; column=1"
    )
    counter = [0]

    def source() -> Iterator[Page]:
        if first is not None:
            yield first
            yield from pages

    def body() -> Iterator[bytes]:
        started = time.perf_counter()
        complete = False
        try:
            yield from _WRITERS[fmt](source(), names, masker, counter)
            complete = True
        finally:
            _close(pages)
            metrics.observe_call("export", "allowed", time.perf_counter() - started, rows=counter[0])
            try:
                end = {**detail, "complete": complete}
                service._audit(settings, principal, "exchange.export_end", entry, decision, counter[0], ctx, end)
            except Exception:  # noqa: BLE001 - the data is out already; the start record stands
                log.warning("export of %s: the closing audit record could not be written", entry.code, exc_info=True)

    return Export(
        chunks=body(),
        media_type=FORMATS[fmt],
        filename=f"{entry.code}.{EXTENSIONS[fmt]}",
        resume=resume,
        decision=decision,
        items=names,
    )


def _close(pages: Iterator[Page]) -> None:
    close = getattr(pages, "close", None)
    if close is not None:
        close()
