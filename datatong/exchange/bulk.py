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
import hashlib
import io
import json
import logging
import secrets
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy.orm import Session

from datatong.catalog.models import CatalogEntry
from datatong.db import session_scope, utcnow
from datatong.errors import invalid
from datatong.exchange import metrics, service, sqlmask
from datatong.exchange.models import ExportRecord
from datatong.exchange.readers import Page, SourceError, SqlReader, _classify, _safe
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
EXPORT_HEADER = "X-Datatong-Export"
FAST_PATH = True  # tests switch it off to compare both paths
COPY_CHUNK = 1 << 18  # bytes per chunk of the fast path (one thread hop of the server each)


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
    export_id: str  # the X-Datatong-Export header: the manifest's id
    fast: bool  # streamed by the database's COPY


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


# ---------------------------------------------------------------- fast path (PostgreSQL COPY)


@dataclass(frozen=True)
class CopyPlan:
    """One ``COPY (SELECT …) TO STDOUT`` with its bound parameters."""

    reader: SqlReader
    sql: str
    params: dict[str, Any]


def _render(col: sa.ColumnElement[Any], sql: str, masked: bool) -> str | None:
    """SQL giving the text the Python path writes for a value of ``col`` (``_text``, or
    ``str`` before masking), or None for a type whose text it cannot reproduce exactly."""
    t = col.type
    if isinstance(t, sa.CHAR | sa.NCHAR | sa.Float):
        return None  # blank-padded CHAR and float formatting differ between the two
    if isinstance(t, sa.String | sa.Integer):
        return f"CAST({sql} AS TEXT)"
    if masked:
        return None  # masking works on str(value); only text and integers are the same
    if isinstance(t, sa.Boolean):
        return f"(CASE WHEN {sql} THEN 'True' WHEN NOT {sql} THEN 'False' END)"
    if isinstance(t, sa.DateTime):
        # datetime.isoformat(): "T", microseconds only when not zero, the offset as +HH:MM
        # (of the session's time zone, as psycopg gives the Python path). PostgreSQL's ISO
        # text (DateStyle set by copy_chunks) is the same but for the space and an offset of
        # whole hours written +HH: fix those cheaply; to_char (slow) only for the rest.
        iso = f"CAST({sql} AS TEXT)"
        plain, suffix = (22, " || ':00'") if t.timezone else (19, "")
        zone = "TZH:TZM" if t.timezone else ""
        slow = (
            f"CASE WHEN date_trunc('second', {sql}) = {sql} THEN to_char({sql}, 'YYYY-MM-DD\"T\"HH24:MI:SS{zone}') "
            f"ELSE to_char({sql}, 'YYYY-MM-DD\"T\"HH24:MI:SS.US{zone}') END"
        )
        return f"(CASE WHEN length({iso}) = {plain} THEN replace({iso}, ' ', 'T'){suffix} ELSE {slow} END)"
    if isinstance(t, sa.Date):
        return f"CAST({sql} AS TEXT)"  # ISO (DateStyle set by copy_chunks): date.isoformat()
    return None


def copy_plan(reader: Any, fmt: str, names: Sequence[str], masker: _Masker, after: Any | None) -> CopyPlan | None:
    """The COPY of this export, or None when it must take the Python path (not a
    PostgreSQL table through psycopg, JSON Lines, a type or a masking rule SQL cannot
    render exactly)."""
    if not FAST_PATH or fmt not in ("csv", "parquet") or not isinstance(reader, SqlReader):
        return None
    dialect = reader.engine.dialect
    if dialect.name != "postgresql" or dialect.driver != "psycopg":
        return None
    key = reader._key()
    columns: list[sa.Label[Any]] = []
    for i, name in enumerate(names):
        col = reader.column(name)
        compiled = str(col.compile(dialect=dialect))
        if "%" in compiled:
            return None  # our SQL text holds no "%": the driver's placeholders stay unambiguous
        kind = masker.kinds.get(name)
        text = _render(col, compiled, kind is not None)
        if text is not None and kind is not None:
            text = sqlmask.mask_sql(kind, text, masker.rules)
        if text is None or "%" in text:
            return None
        # CSV: the Python path writes None and "" alike, unquoted; COPY quotes "" unless NULL.
        columns.append(sa.literal_column(f"NULLIF({text}, '')" if fmt == "csv" else text).label(f"c{i}"))
    stmt = sa.select(*columns).select_from(key.table)
    if after is not None:
        stmt = stmt.where(key > reader._coerce(key, after))
    compiled_stmt = stmt.order_by(key).compile(dialect=dialect)
    sql = f"COPY ({compiled_stmt}) TO STDOUT WITH (FORMAT csv)"
    return CopyPlan(reader, sql, dict(compiled_stmt.params))


def _copy_error(reader: SqlReader, exc: Exception) -> SourceError:
    import psycopg

    password = reader._password()
    if isinstance(exc, psycopg.OperationalError):
        return _classify(exc, password)
    text = _safe(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, password)
    if "permission denied" in text.lower():
        return SourceError(
            "source_auth_failed",
            f"数据源账号无权读取表：{reader.table_name}",
            f"The data source account may not read {reader.table_name}",
        )
    return SourceError("source_failed", f"读取数据源出错：{text}", f"Reading the data source failed: {text}")


def copy_chunks(plan: CopyPlan, size: int | None = None) -> Iterator[bytes]:
    """The COPY's CSV bytes in chunks of about ``size`` bytes, each ending on a row
    (PostgreSQL sends one message per row). Closing the generator early ends the COPY."""
    import psycopg

    size = size or COPY_CHUNK
    try:
        with plan.reader.engine.connect() as conn:
            raw = conn.connection.driver_connection
            assert isinstance(raw, psycopg.Connection)
            with raw.cursor() as cur:
                # Dates and times as ISO text whatever the server's default; only for this
                # transaction (the pool's rollback undoes it).
                cur.execute("SET LOCAL DateStyle TO 'ISO, YMD'")
                with cur.copy(plan.sql, plan.params) as copy:
                    # Rows are copied into one buffer (not joined from a list of views: that
                    # costs half as much again as reading them).
                    buf = bytearray()
                    for data in copy:
                        buf += data
                        if len(buf) >= size:
                            yield bytes(buf)
                            buf.clear()
                    if buf:
                        yield bytes(buf)
    except psycopg.Error as exc:
        raise _copy_error(plan.reader, exc) from exc
    except sa.exc.DBAPIError as exc:  # on connect, through the pool
        raise _classify(exc, plan.reader._password()) from exc


def _crlf(chunk: bytes, inside: bool) -> tuple[bytes, int, bool]:
    """COPY ends rows with LF; the Python path's csv writer with CRLF. Turn the LFs that end
    rows (outside quotes) into CRLF; an LF inside a quoted value stays as it is. Returns the
    chunk, the rows it ends and whether it ends inside quotes. Only chunks holding a quote
    need the (C-speed, per quoted value) split."""
    if not inside and b'"' not in chunk:
        return chunk.replace(b"\n", b"\r\n"), chunk.count(b"\n"), False
    parts = chunk.split(b'"')
    rows = 0
    for i in range(0 if not inside else 1, len(parts), 2):
        rows += parts[i].count(b"\n")
        parts[i] = parts[i].replace(b"\n", b"\r\n")
    return b'"'.join(parts), rows, inside ^ (len(parts) % 2 == 0)


def _header(names: Sequence[str]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\r\n").writerow(names)
    return (BOM + buf.getvalue()).encode()


def _fast_csv(chunks: Iterator[bytes], names: list[str], counter: list[int]) -> Iterator[bytes]:
    head: bytes | None = _header(names)
    inside = False
    for chunk in chunks:
        data, rows, inside = _crlf(chunk, inside)
        counter[0] += rows
        if head is not None:
            data, head = head + data, None
        yield data
    if head is not None:
        yield head


class _ChunkFile(io.RawIOBase):
    """A read-only file over an iterator of byte chunks (pyarrow's CSV reader pulls from it)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        super().__init__()
        self.chunks = chunks
        self.rest = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self.rest:
            nxt = next(self.chunks, None)
            if nxt is None:
                return 0
            self.rest = nxt
        n = min(len(b), len(self.rest))
        b[:n] = self.rest[:n]
        self.rest = self.rest[n:]
        return n


def _fast_parquet(chunks: Iterator[bytes], names: list[str], counter: list[int]) -> Iterator[bytes]:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    schema = pa.schema([(name, pa.string()) for name in names])
    sink = _Sink()
    writer = pq.ParquetWriter(sink, schema, compression="zstd")
    try:
        first = next(chunks, None)
        if first is not None:
            source = io.BufferedReader(_ChunkFile(_prepend(first, chunks)), buffer_size=1 << 20)
            reader = pacsv.open_csv(
                source,
                read_options=pacsv.ReadOptions(column_names=names, block_size=1 << 21, use_threads=False),
                parse_options=pacsv.ParseOptions(newlines_in_values=True),
                # NULL is an unquoted empty field, "" a quoted one: keep them apart, read
                # no other null marker ("NA", "null" are data), every column as text.
                convert_options=pacsv.ConvertOptions(
                    column_types=dict.fromkeys(names, pa.string()),
                    strings_can_be_null=True,
                    null_values=[""],
                    quoted_strings_can_be_null=False,
                ),
            )
            for batch in reader:
                writer.write_batch(batch)
                counter[0] += batch.num_rows
                data = sink.drain()
                if data:
                    yield data
    finally:
        writer.close()
    yield sink.drain()


def _prepend(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest


_FAST_WRITERS = {"csv": _fast_csv, "parquet": _fast_parquet}


# ---------------------------------------------------------------- the export record (manifest)


def _start_record(settings: Any, principal: Principal, entry: CatalogEntry, decision: Decision, **fields: Any) -> str:
    """The ``exchange_export`` row of a starting export, committed now (its own
    transaction: the manifest route says 409 while it runs)."""
    export_id = secrets.token_hex(16)
    with session_scope(settings.database_url) as s:
        s.add(
            ExportRecord(
                id=export_id,
                entry_id=entry.id,
                grant_id=decision.grant_id,
                department_id=principal.department_id,
                created_by=principal.username,
                status="running",
                started_at=utcnow(),
                **fields,
            )
        )
    return export_id


def _finish_record(settings: Any, export_id: str, status: str, rows: int, nbytes: int, sha256: str) -> None:
    try:
        with session_scope(settings.database_url) as s:
            s.execute(
                sa.update(ExportRecord)
                .where(ExportRecord.id == export_id)
                .values(status=status, rows=rows, bytes=nbytes, sha256=sha256, finished_at=utcnow())
            )
    except Exception:  # noqa: BLE001 - the data is out; the record stays "running" (no manifest)
        log.warning("export %s: its record could not be finished", export_id, exc_info=True)


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
    plan = copy_plan(reader, fmt, names, masker, after)
    pages: Iterator[Any] = copy_chunks(plan) if plan is not None else reader.stream(names, [], after, batch)
    # Read the first page now: an unreachable source is a JSON error, not a cut stream.
    try:
        first = next(pages, None)
    except BaseException:
        _close(pages)
        raise
    detail: dict[str, Any] = {"format": fmt, "after": after, "bulk": True}
    try:
        service._audit(settings, principal, "exchange.export", entry, decision, 0, ctx, detail)
        export_id = _start_record(
            settings,
            principal,
            entry,
            decision,
            format=fmt,
            items=json.dumps(names, ensure_ascii=False),
            masked=json.dumps([n for n in names if n in masker.kinds], ensure_ascii=False),
            after=after,
        )
    except BaseException:
        _close(pages)
        raise
    detail["export_id"] = export_id
    resume = (
        "restart"
        if fmt == "parquet" or key_masked
        else f"after=<key of the last stored row>; item={quote(key_item)}; column=1"
    )
    counter = [0]

    def source() -> Iterator[Any]:
        if first is not None:
            yield first
            yield from pages

    def body() -> Iterator[bytes]:
        started = time.perf_counter()
        complete = False
        digest = hashlib.sha256()
        sent = 0
        try:
            if plan is not None:
                chunks = _FAST_WRITERS[fmt](source(), names, counter)
            else:
                chunks = _WRITERS[fmt](source(), names, masker, counter)
            for chunk in chunks:
                # Counted as the chunk is handed to the server: the manifest's SHA-256 is
                # over exactly these bytes (a client gone mid-way leaves the export failed).
                digest.update(chunk)
                sent += len(chunk)
                yield chunk
            complete = True
        finally:
            _close(pages)
            status = "complete" if complete else "failed"
            _finish_record(settings, export_id, status, counter[0], sent, digest.hexdigest())
            metrics.observe_call("export", "allowed", time.perf_counter() - started, rows=counter[0])
            try:
                end = {**detail, "complete": complete, "bytes": sent, "sha256": digest.hexdigest()}
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
        export_id=export_id,
        fast=plan is not None,
    )


def _close(pages: Iterator[Any]) -> None:
    close = getattr(pages, "close", None)
    if close is not None:
        close()
