"""Chinese full-text search over the catalog.

Text is segmented with jieba (search mode, so "人口基本信息" is indexed as 人口, 基本,
信息, 基本信息 …) and the tokens go to SQLite FTS5 or a PostgreSQL ``tsvector``
(``simple`` configuration: the tokens are already words). The index row is written
by the same session, in the same transaction, as the entry itself, so the two can
never drift.

Search needs only which terms an entry has and whether in its name: relevance is
"most query words in the name first, then newest first" (service.py), so an entry's
index text lists each term once (the bulk import's tsvectors carry no positions).

Counting and faceting hundreds of thousands of matches is what makes a catalog search
slow (a query for 身份证号 matches a quarter of a national catalog). So each process
also keeps ``CatalogIndex``: the same terms and the facet fields as bitsets in memory,
loaded from the database (10–15 s and ~350 MB for 470,000 entries) and brought up to
date before every search from ``catalog_change``, a log the database fills by trigger
(migration 0002). Counts and facets are then big-integer ANDs and popcounts. The
database stays the source of truth: the service falls back to plain SQL whenever the
index cannot answer exactly (uncommitted changes in the caller's session, a
``modified_since`` filter, unusual tokens, the index busy loading), and both paths give
the same results (tests/test_demo.py compares them on random searches).
"""

from __future__ import annotations

import bisect
import gc
import heapq
import logging
import queue
import re
import sys
import threading
import unicodedata
from array import array
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any

import jieba
from sqlalchemy import Date, DateTime, column, event, table, text
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from datatong.db import is_sqlite

jieba.setLogLevel(logging.WARNING)
log = logging.getLogger(__name__)
FTS_TABLE = table("catalog_fts", column("rowid"), column("title"), column("body"))
PG_TABLE = table("catalog_search", column("entry_id"), column("tsv"))
_WORD = re.compile(r"\w+", re.UNICODE)
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]+")
# Tokens that every backend keeps as exactly one term (FTS5, the PostgreSQL parser and
# the in-memory index agree on them); anything else is answered by SQL.
SAFE_TOKEN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]+|[a-z]+|[0-9]+")


# ---------------------------------------------------------------- tokens


def _norm(tok: str) -> list[str]:
    """Lower case, Latin diacritics folded, split at '_' — what FTS5's unicode61 would
    do anyway, done before it so every backend stores the same terms."""
    tok = tok.strip().lower()
    if not tok or not _WORD.fullmatch(tok):
        return []
    if not tok.isascii() and not _CJK.fullmatch(tok):
        stripped = "".join(c for c in unicodedata.normalize("NFD", tok) if not unicodedata.combining(c))
        tok = unicodedata.normalize("NFC", stripped)
    return [p for p in tok.split("_") if p]


@lru_cache(maxsize=200_000)
def _segment_phrase(phrase: str) -> tuple[str, ...]:
    return tuple(t for tok in jieba.cut_for_search(phrase) for t in _norm(tok))


def segment(text_: str | None) -> list[str]:
    """Tokens of a text for the index. Phrases are cached: catalog text repeats a lot
    (item names such as 姓名, 身份证号 occur in thousands of entries)."""
    if not text_:
        return []
    out: list[str] = []
    for phrase in _WORD.findall(text_):
        out.extend(_segment_phrase(phrase))
    return out


def query_tokens(q: str) -> list[str]:
    """Tokens of a user query (precise mode, so a query word is not split further)."""
    out: list[str] = []
    for phrase in _WORD.findall(q or ""):
        for tok in jieba.cut(phrase):
            for t in _norm(tok):
                if t not in out:
                    out.append(t)
    return out[:16]


def document_tokens(
    name: str, provider: str, summary: str, keywords: str | None, item_names: Iterable[str]
) -> tuple[list[str], list[str]]:
    """(title tokens, body tokens) of an entry, each once; the body leaves out what the
    title has. Search asks only whether a term occurs and whether in the name, so
    repeats would only make the index bigger."""
    title = list(dict.fromkeys(segment(name)))
    seen = set(title)
    body = segment(" ".join([provider, summary or "", keywords or "", *item_names]))
    return title, [t for t in dict.fromkeys(body) if t not in seen]


def documents(
    name: str, provider: str, summary: str, keywords: str | None, item_names: Iterable[str]
) -> tuple[str, str]:
    """(title tokens, body tokens) as space-separated strings."""
    title, body = document_tokens(name, provider, summary, keywords, item_names)
    return " ".join(title), " ".join(body)


def fts_query(tokens: list[str], sqlite: bool) -> str:
    """The MATCH / to_tsquery expression: every token must occur (AND)."""
    if sqlite:
        return " AND ".join('"' + t.replace('"', '""') + '"' for t in tokens)
    return " & ".join("'" + t.replace("'", "''").replace("\\", "") + "'" for t in tokens)


def title_query(token: str, sqlite: bool) -> str:
    """MATCH / to_tsquery expression for "the token occurs in the title"."""
    if sqlite:
        return 'title : "' + token.replace('"', '""') + '"'
    return "'" + token.replace("'", "''").replace("\\", "") + "':A"


# ---------------------------------------------------------------- index writes


def mark_dirty(session: Session) -> None:
    """The session changed the catalog: until it commits, its searches go to SQL (the
    in-memory index only knows committed data)."""
    session.info["catalog_dirty"] = True


@event.listens_for(Session, "after_flush")
def _after_flush(session: Session, _context: Any) -> None:
    from datatong.catalog.models import CatalogEntry, DataItem

    for obj in (*session.new, *session.dirty, *session.deleted):
        if isinstance(obj, CatalogEntry | DataItem):
            mark_dirty(session)
            return


@event.listens_for(Session, "after_transaction_end")
def _after_transaction_end(session: Session, transaction: Any) -> None:
    if transaction.parent is None:
        session.info.pop("catalog_dirty", None)


def index_rows(session: Session, rows: list[dict[str, Any]]) -> None:
    """Write index rows {id, title, body}, replacing any earlier ones."""
    if not rows:
        return
    mark_dirty(session)
    if is_sqlite(session.get_bind()):
        session.execute(text("DELETE FROM catalog_fts WHERE rowid = :id"), [{"id": r["id"]} for r in rows])
        session.execute(text("INSERT INTO catalog_fts(rowid, title, body) VALUES (:id, :title, :body)"), rows)
    else:
        session.execute(
            text(
                "INSERT INTO catalog_search(entry_id, tsv) VALUES (:id, "
                "setweight(to_tsvector('simple', :title), 'A') || "
                "setweight(to_tsvector('simple', :body), 'B')) "
                "ON CONFLICT (entry_id) DO UPDATE SET tsv = EXCLUDED.tsv"
            ),
            rows,
        )


def remove(session: Session, entry_id: int) -> None:
    mark_dirty(session)
    table_name, key = ("catalog_fts", "rowid") if is_sqlite(session.get_bind()) else ("catalog_search", "entry_id")
    session.execute(text(f"DELETE FROM {table_name} WHERE {key} = :id"), {"id": entry_id})


# ---------------------------------------------------------------- bulk loading
# Used by the bulk import (bulk.bulk_create): new rows only, written with the
# drivers' fastest paths, in the caller's transaction.

_SQLITE = sqlite_dialect.dialect()
_SQLITE_DATETIME = DateTime(timezone=True).dialect_impl(_SQLITE).bind_processor(_SQLITE)
_SQLITE_DATE = Date().dialect_impl(_SQLITE).bind_processor(_SQLITE)


def sqlite_value(value: Any) -> Any:
    """A date or time as SQLAlchemy stores it in SQLite (text that sorts correctly)."""
    if isinstance(value, datetime):
        return _SQLITE_DATETIME(value)  # type: ignore[misc]
    if isinstance(value, date):
        return _SQLITE_DATE(value)  # type: ignore[misc]
    return value


def dbapi(session: Session) -> Any:
    """The driver connection under the session's current transaction."""
    return session.connection().connection.dbapi_connection


def bulk_rows(session: Session, table_name: str, columns: list[str], rows: Iterable[tuple[Any, ...]]) -> None:
    """Append rows: executemany on SQLite, COPY on PostgreSQL (values already in the
    form the column stores; see ``sqlite_value``)."""
    mark_dirty(session)
    copy_rows(dbapi(session), is_sqlite(session.get_bind()), table_name, columns, rows)


def copy_rows(raw: Any, sqlite: bool, table_name: str, columns: list[str], rows: Iterable[tuple[Any, ...]]) -> None:
    cols = ", ".join(columns)
    if sqlite:
        marks = ", ".join("?" * len(columns))
        raw.executemany(f"INSERT INTO {table_name} ({cols}) VALUES ({marks})", rows)
        return
    with raw.cursor() as cur, cur.copy(f"COPY {table_name} ({cols}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


class BulkWriter:
    """Writes batches of rows in the session's transaction. On PostgreSQL a second
    thread feeds COPY, so the server stores one chunk while Python prepares the next
    (two cores, two workers); nothing else may use the session until it is closed."""

    def __init__(self, session: Session) -> None:
        mark_dirty(session)
        self.raw = dbapi(session)
        self.sqlite = is_sqlite(session.get_bind())
        self.jobs: queue.Queue[tuple[str, list[str], list[tuple[Any, ...]]] | None] = queue.Queue(8)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="bulk-writer", daemon=True)

    def __enter__(self) -> BulkWriter:
        self.thread.start()
        return self

    def put(self, table_name: str, columns: list[str], rows: list[tuple[Any, ...]]) -> None:
        if self.error is not None:
            raise self.error
        if self.sqlite:
            # sqlite3 gives up the GIL for every row it steps, and waits up to 5 ms to get
            # it back from a busy preparing thread: on SQLite one thread is faster.
            copy_rows(self.raw, True, table_name, columns, rows)
            return
        self.jobs.put((table_name, columns, rows))

    def _run(self) -> None:
        while (job := self.jobs.get()) is not None:
            if self.error is None:
                try:
                    copy_rows(self.raw, self.sqlite, *job)
                except BaseException as exc:  # handed to the caller's thread by close()
                    self.error = exc

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        self.jobs.put(None)
        self.thread.join()
        if exc is None and self.error is not None:
            raise self.error


def new_ids(session: Session, table_name: str, count: int) -> list[int]:
    """``count`` fresh primary keys for ``table_name``.

    SQLite: the caller holds the write lock (it has written in this transaction), so
    max(id)+1… is ours. PostgreSQL: drawn from the column's sequence, safe beside
    concurrent writers.
    """
    if count <= 0:
        return []
    if is_sqlite(session.get_bind()):
        last = session.execute(text(f"SELECT coalesce(max(id), 0) FROM {table_name}")).scalar_one()
        return list(range(last + 1, last + 1 + count))
    return list(
        session.scalars(
            text(f"SELECT nextval(pg_get_serial_sequence('{table_name}', 'id')) FROM generate_series(1, :n)"),
            {"n": count},
        )
    )


@lru_cache(maxsize=100_000)
def _pg_safe(token: str) -> bool:
    return len(token) <= 500 and SAFE_TOKEN.fullmatch(token) is not None


def tsvector_literal(title: list[str], body: list[str]) -> str | None:
    """The tsvector of an entry in text form, built in Python, or None when a token
    might be parsed differently by PostgreSQL (the caller then lets the server do it).

    Search needs only which terms occur and whether in the name (weight A) or the rest
    (weight B), so each term keeps one position per weight: a smaller index, faster to
    build, with the same answers as ``setweight(to_tsvector(...))`` (see index_rows).
    """
    in_title, in_body = set(title), set(body)
    if not all(_pg_safe(t) for t in in_title | in_body):
        return None
    parts = [f"'{t}':1A,2B" if t in in_body else f"'{t}':1A" for t in in_title]
    parts += [f"'{t}':2B" for t in in_body - in_title]
    return " ".join(parts)


def index_batch(
    rows: list[tuple[int, list[str], list[str]]], sqlite: bool
) -> tuple[str, list[str], list[tuple[Any, ...]], list[dict[str, Any]]]:
    """Index rows (id, title tokens, body tokens) of new entries as (table, columns,
    rows) for ``bulk_rows``, plus the few rows the server must build (``index_rows``)."""
    if sqlite:
        return "catalog_fts", ["rowid", "title", "body"], [(i, " ".join(t), " ".join(b)) for i, t, b in rows], []
    built, rest = [], []
    for i, t, b in rows:
        literal = tsvector_literal(t, b)
        if literal is None:
            rest.append({"id": i, "title": " ".join(t), "body": " ".join(b)})
        else:
            built.append((i, literal))
    return "catalog_search", ["entry_id", "tsv"], built, rest


@contextmanager
def bulk_load(session: Session, count: int) -> Iterator[Callable[[int, int], None]]:
    """Around a bulk load; yields ``logged(first_id, last_id)`` to report the new ids.

    SQLite: a page cache big enough for the indexes being filled (the default 2 MB
    turns every index insert of a large load into a read), and one change-log row for
    the whole id range instead of one per entry. PostgreSQL: see ``_pg_bulk``.
    """
    mark_dirty(session)
    if is_sqlite(session.get_bind()):
        yield from _sqlite_bulk(session)
    else:
        yield from _pg_bulk(session, count)


BULK_TABLES = ["catalog_entry", "catalog_item", "catalog_entry_version", "catalog_search"]


def _pg_bulk(session: Session, count: int) -> Iterator[Callable[[int, int], None]]:
    """A load that is large next to the catalog (an initial import, a national harvest)
    is done the way pg_restore does it: the foreign keys of the loaded tables and the
    GIN index are dropped first and recreated at the end, in the same transaction.
    Checking each of 3 million rows one by one costs ten times more than validating
    every key at once. The price: the catalog tables are locked until commit, so only
    large loads do this. Smaller loads keep everything; their COPY'd id ranges are
    logged by the statement triggers.
    """
    existing = session.execute(text("SELECT reltuples FROM pg_class WHERE relname = 'catalog_entry'")).scalar()
    large = count >= 20_000 and count >= 0.3 * max(float(existing or 0), 0.0)
    if not large:
        yield lambda first, last: None
        return
    keys = session.execute(
        text(
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE contype = 'f' AND conrelid = ANY(CAST(:t AS regclass[]))"
        ),
        {"t": BULK_TABLES},
    ).all()
    for table_name, name, _ in keys:
        session.execute(text(f'ALTER TABLE {table_name} DROP CONSTRAINT "{name}"'))
    session.execute(text("DROP INDEX IF EXISTS ix_catalog_search_tsv"))
    # Capturing the transition table costs as much as the insert: log ranges instead.
    session.execute(text("ALTER TABLE catalog_entry DISABLE TRIGGER catalog_change_ins"))
    ranges: list[tuple[int, int]] = []
    with _restored_on_error(lambda: _pg_restore(session, keys, ranges, rebuild=False)):
        yield lambda first, last: ranges.append((first, last))
    _pg_restore(session, keys, ranges, rebuild=True)


def _pg_restore(session: Session, keys: Sequence[Any], ranges: list[tuple[int, int]], rebuild: bool) -> None:
    session.execute(text("ALTER TABLE catalog_entry ENABLE TRIGGER catalog_change_ins"))
    _log_ranges(session, ranges)
    session.execute(text("SET LOCAL maintenance_work_mem = '256MB'"))
    session.execute(text("CREATE INDEX ix_catalog_search_tsv ON catalog_search USING gin (tsv)"))
    for table_name, name, definition in keys:
        session.execute(text(f'ALTER TABLE {table_name} ADD CONSTRAINT "{name}" {definition}'))
    if rebuild:
        for table_name in BULK_TABLES:
            session.execute(text(f"ANALYZE {table_name}"))


def _log_ranges(session: Session, ranges: list[tuple[int, int]]) -> None:
    if ranges:
        session.execute(
            text("INSERT INTO catalog_change(entry_from, entry_to) VALUES (:a, :b)"),
            [{"a": a, "b": b} for a, b in ranges],
        )


@contextmanager
def _restored_on_error(restore: Callable[[], None]) -> Iterator[None]:
    """If the load fails, put back what it took away, in case the caller commits
    anyway; in an aborted transaction this fails too, and the rollback restores it."""
    try:
        yield
    except BaseException:
        try:
            restore()
        except Exception:  # the original error is the one to report
            log.debug("restoring after a failed bulk load failed", exc_info=True)
        raise


def _sqlite_bulk(session: Session) -> Iterator[Callable[[int, int], None]]:
    previous = session.execute(text("PRAGMA cache_size")).scalar_one()
    session.execute(text("PRAGMA cache_size = -262144"))
    session.execute(text("UPDATE catalog_change_ctl SET bulk = 1"))
    ranges: list[tuple[int, int]] = []

    def restore() -> None:
        session.execute(text("UPDATE catalog_change_ctl SET bulk = 0"))
        _log_ranges(session, ranges)
        session.execute(text(f"PRAGMA cache_size = {int(previous)}"))

    with _restored_on_error(restore):
        yield lambda first, last: ranges.append((first, last))
    restore()


# ---------------------------------------------------------------- bitsets
# A set of documents is a Python int with bit d set for document d; AND and popcount
# run in C over 30-bit digits, ~10 µs for 470,000 documents.

_LITTLE = sys.byteorder == "little"
_BYTE_BITS = tuple(tuple(i for i in range(8) if b >> i & 1) for b in range(256))
_NONZERO = re.compile(rb"[^\x00]+")


def bits_of(docs: Iterable[int], nbytes: int) -> int:
    buf = bytearray(nbytes)
    for d in docs:
        buf[d >> 3] |= 1 << (d & 7)
    return int.from_bytes(buf, "little")


def docs_of(bits: int, nbytes: int) -> list[int]:
    """The documents of a bitset, ascending (fast when they are few)."""
    data = bits.to_bytes(nbytes, "little")
    out: list[int] = []
    for run in _NONZERO.finditer(data):
        for pos in range(run.start(), run.end()):
            base = pos << 3
            out.extend(base + i for i in _BYTE_BITS[data[pos]])
    return out


Posting = int | array  # dense: a bitset; sparse: ascending document numbers

FACETS = ("provider", "class", "share_type", "update_cycle", "format", "open")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def micros(value: datetime | str) -> int:
    """Microseconds since 1970 (naive values are UTC, as the app stores them)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - EPOCH) // timedelta(microseconds=1)


def iso(value: datetime) -> str:
    """A moment as text, in UTC whatever the database session's time zone."""
    return (value.astimezone(UTC) if value.tzinfo else value).isoformat()


def from_micros(us: int, naive: bool) -> datetime:
    """The inverse of ``micros``; naive (UTC) as SQLAlchemy reads SQLite values back."""
    value = EPOCH + timedelta(microseconds=us)
    return value.replace(tzinfo=None) if naive else value


@dataclass
class IndexQuery:
    """A search as the index understands it; ``after`` is the ascending sort key of the
    last entry already seen (see CatalogIndex.key)."""

    tokens: list[str]
    visibility: tuple[str, int | None]  # ("all"|"dept"|"published"|"open", department id)
    sort: str
    limit: int
    provider: str | None = None
    class_prefix: str | None = None
    share_type: str | None = None
    update_cycle: str | None = None
    format: str | None = None
    open: bool | None = None
    status: str | None = None
    after: tuple[Any, ...] | None = None
    offset: int = 0
    facets: bool = True


@dataclass
class IndexHits:
    total: int
    ids: list[int]  # entry ids of the page, in order
    keys: list[tuple[Any, ...]]  # their sort keys
    more: bool
    facets: dict[str, list[tuple[str, int]]] = field(default_factory=dict)


# ---------------------------------------------------------------- the in-memory index


class CatalogIndex:
    """Bitsets of one database's catalog, for one process.

    A document number is the entry id for what the last full load read; an entry added
    or changed afterwards gets the next free number (``moved``) and its older number is
    dropped from ``live``, so nothing ever has to be taken out of a posting.
    """

    SMALL = 600  # match sets up to this size are handled as lists of documents

    def __init__(self, sqlite: bool) -> None:
        self.sqlite = sqlite
        self.lock = threading.Lock()
        self.instance: str | None = None
        self.seq = 0  # SQLite: last change-log row applied
        self.watermark = 0  # PostgreSQL: every transaction below this xid is applied
        self.applied: dict[int, int] = {}  # PostgreSQL: seq -> txid of rows applied early
        self._clear(0)

    def _clear(self, cap: int) -> None:
        # Per document, in parallel arrays (an object per entry would cost 3x the memory).
        self.base = cap
        self.ids = array("q", range(cap))
        self.modified = array("q", bytes(8 * cap))
        self.names: list[str] = [""] * cap
        self.codes: list[str] = [""] * cap
        self.values: list[tuple[str, ...]] = [()] * cap  # facet values, shared tuples
        self.moved: dict[int, int] = {}
        self.shared: dict[tuple[Any, ...], tuple[str, ...]] = {}
        self.live = 0
        self.dead = 0
        self.facet_bits: dict[str, dict[str, int]] = {f: {} for f in FACETS}
        self.status_bits: dict[str, int] = {}
        self.dept_bits: dict[int, int] = {}
        self.class_bits: dict[str, int] = {}
        self.post: dict[str, Posting] = {}
        self.title_post: dict[str, Posting] = {}
        self.orders: dict[str, list[int]] = {}
        self.dense_at = max(256, cap // 32)

    @property
    def nbytes(self) -> int:
        return len(self.ids) // 8 + 1

    def doc_of(self, entry_id: int) -> int | None:
        moved = self.moved.get(entry_id)
        if moved is not None:
            return moved
        return entry_id if entry_id < self.base else None

    # ------------------------------------------------------------ keeping up to date

    def refresh(self, session: Session) -> None:
        """Apply what was committed since the last search (or load everything). After a
        failure half-way the next search loads everything again."""
        try:
            self._refresh(session)
        except BaseException:
            self.instance = None
            raise

    def _refresh(self, session: Session) -> None:
        instance, changes, full = self._poll(session)
        if full or instance != self.instance:
            self.load(_engine(session), instance)
            return
        ids: set[int] = set()
        for first, last in changes:
            if first is None or last - first > 20_000:
                self.load(_engine(session), instance)
                return
            ids.update(range(first, last + 1))
        if len(ids) > 20_000 or self.dead > max(50_000, self.base // 4):
            self.load(_engine(session), instance)
        elif ids:
            self._apply(session, sorted(ids))

    def _poll(self, session: Session) -> tuple[str | None, list[tuple[Any, Any]], bool]:
        conn = session.connection()
        instance = conn.execute(text("SELECT instance FROM catalog_change_ctl")).scalar()
        if self.sqlite:
            last = conn.execute(text("SELECT max(seq) FROM catalog_change")).scalar() or 0
            if last < self.seq:  # the log went back: another database at the same path
                return instance, [], True
            rows = conn.execute(
                text("SELECT seq, entry_from, entry_to FROM catalog_change WHERE seq > :s ORDER BY seq"),
                {"s": self.seq},
            ).all()
            if rows:
                self.seq = rows[-1][0]
            return instance, [(r[1], r[2]) for r in rows], False
        return instance, self._poll_pg(conn), False

    def _poll_pg(self, conn: Any) -> list[tuple[Any, Any]]:
        # One statement, one snapshot: the rows visible in it, and its xmin (every
        # transaction below has finished, so its rows are all among them).
        rows = conn.execute(
            text(
                "SELECT pg_snapshot_xmin(pg_current_snapshot())::text, c.seq, c.entry_from, "
                "c.entry_to, c.txid::text FROM (SELECT 1) AS one LEFT JOIN catalog_change c "
                "ON c.txid >= CAST(:w AS xid8) ORDER BY c.seq"
            ),
            {"w": str(self.watermark)},
        ).all()
        changes = []
        for _, seq, first, last, txid in rows:
            if seq is not None and seq not in self.applied:
                self.applied[seq] = int(txid)
                changes.append((first, last))
        self.watermark = int(rows[0][0])
        self.applied = {s: t for s, t in self.applied.items() if t >= self.watermark}
        return changes

    def load(self, engine: Engine, instance: str | None) -> None:
        """Read the whole catalog in one consistent snapshot (a few seconds for 470,000
        entries: the postings come from the full-text index, a term at a time)."""
        self.instance = None
        with engine.connect() as conn:
            if self.sqlite:
                conn.exec_driver_sql("BEGIN")
                seq = conn.execute(text("SELECT max(seq) FROM catalog_change")).scalar() or 0
            else:
                conn = conn.execution_options(isolation_level="REPEATABLE READ")
                self.applied, self.watermark = {}, 0
                self._poll_pg(conn)
                conn.execute(text("SET LOCAL work_mem = '256MB'"))
            top = conn.execute(text("SELECT coalesce(max(id), 0) FROM catalog_entry")).scalar() or 0
            self._clear(top + 1)
            raw = conn.connection.dbapi_connection
            self._load_entries(raw)
            self._load_postings(raw)
            conn.rollback()
        if self.sqlite:
            self.seq = seq
        self.instance = instance
        if self.base > 50_000:
            # A large index is a million long-lived objects that every full garbage
            # collection would walk (100 ms, every ~150 searches); frozen ones are not.
            gc.collect()
            gc.freeze()

    def _entry_sql(self, where: str) -> str:
        modified = (
            ("CAST(strftime('%s', modified_at) AS INTEGER) * 1000000 + CAST(substr(modified_at, 21, 6) AS INTEGER)")
            if self.sqlite
            else "(extract(epoch FROM modified_at) * 1000000)::bigint"
        )
        return (
            "SELECT id, status, provider_id, provider_code, class_code, share_type, "
            f"update_cycle, format_category, is_open, {modified}, name, code "
            f"FROM catalog_entry WHERE {where}"
        )

    def _load_entries(self, raw: Any) -> None:
        cur = raw.cursor()
        cur.execute(self._entry_sql("1 = 1"))
        groups: dict[tuple[Any, ...], list[int]] = defaultdict(list)
        present = []
        while batch := cur.fetchmany(20_000):  # not all at once: half the peak memory
            for e in batch:
                self._set_doc(e[0], e, groups)
                present.append(e[0])
        cur.close()
        self._grow(groups)
        self.live = bits_of(present, self.nbytes)
        self.orders["modified"] = self._sorted("modified")

    def _set_doc(self, d: int, e: Any, groups: dict[tuple[Any, ...], list[int]]) -> None:
        """Fill document ``d`` from an entry row (see _entry_sql); documents are grouped
        by their facet values, turned into bitsets by ``_grow``."""
        key = (e[3], e[4][:3], e[5], e[6], e[7], "true" if e[8] else "false", e[1], e[2], e[4])
        docs = groups[key]
        if not docs:  # first document with these values: share one tuple between all
            self.shared[key] = key[:6]
        docs.append(d)
        self.ids[d] = e[0]
        self.modified[d] = e[9]
        self.names[d] = e[10]
        self.codes[d] = e[11]
        self.values[d] = self.shared[key]

    def _grow(self, groups: dict[tuple[Any, ...], list[int]]) -> None:
        per_key: dict[tuple[str, Any], list[int]] = defaultdict(list)
        for key, docs in groups.items():
            for name, value in zip((*FACETS, "status", "dept", "class_code"), key, strict=True):
                per_key[(name, value)].extend(docs)
        nbytes = self.nbytes
        targets: dict[str, dict[Any, int]] = {
            "status": self.status_bits,
            "dept": self.dept_bits,
            "class_code": self.class_bits,
            **self.facet_bits,
        }
        for (kind, value), docs in per_key.items():
            target = targets[kind]
            target[value] = target.get(value, 0) | bits_of(docs, nbytes)

    def _load_postings(self, raw: Any) -> None:
        """Every term's documents, in all fields and in the title."""
        for term, docs in self._term_docs(raw):
            self.post[term] = self._posting(docs)
        for term, docs in self._term_docs(raw, title=True):
            self.title_post[term] = self._posting(docs)

    def _posting(self, packed: bytes) -> Posting:
        """A posting from document numbers packed as big-endian 32-bit integers."""
        docs = array("I")
        docs.frombytes(packed)
        if _LITTLE:
            docs.byteswap()
        return bits_of(docs, self.nbytes) if len(docs) > self.dense_at else docs

    def _term_docs(self, raw: Any, title: bool = False) -> Iterator[tuple[str, bytes]]:
        """(term, packed document numbers) for every term, of all fields or the title."""
        cur = raw.cursor()
        if self.sqlite:
            cur.execute(
                "CREATE VIRTUAL TABLE IF NOT EXISTS temp.catalog_fts_terms USING fts5vocab(main, catalog_fts, 'col')"
            )
            col = "AND col = 'title'" if title else ""
            terms = [
                r[0]
                for r in cur.execute(f"SELECT DISTINCT term FROM temp.catalog_fts_terms WHERE 1 = 1 {col}").fetchall()
            ]
            sql = "SELECT group_concat(printf('%08x', rowid), '') FROM catalog_fts WHERE catalog_fts MATCH ?"
            for term in terms:
                quoted = '"' + term.replace('"', '""') + '"'
                packed = cur.execute(sql, (("title : " if title else "") + quoted,)).fetchone()[0]
                yield term, bytes.fromhex(packed or "")
        else:
            tsv = "ts_filter(s.tsv, '{a}')" if title else "s.tsv"
            cur.execute(
                f"SELECT w, string_agg(int4send(s.entry_id), ''::bytea) FROM catalog_search s, "
                f"unnest(tsvector_to_array({tsv})) w GROUP BY w"
            )
            yield from ((term, bytes(packed)) for term, packed in cur)
        cur.close()

    def _apply(self, session: Session, ids: list[int]) -> None:
        """Bring the given entries up to date (new, changed or deleted)."""
        raw = dbapi(session)
        rows: list[Any] = []
        tokens: dict[int, tuple[list[str], list[str]]] = {}
        for i in range(0, len(ids), 500):
            where = "IN (" + ",".join(str(int(x)) for x in ids[i : i + 500]) + ")"
            cur = raw.cursor()
            cur.execute(self._entry_sql("id " + where))
            rows += cur.fetchall()
            tokens.update(self._entry_tokens(cur, where))
            cur.close()
        present = {r[0] for r in rows}
        for eid in ids:
            if eid not in present:
                self._kill(eid)
                self.moved.pop(eid, None)
        self._add(rows, tokens)

    def _entry_tokens(self, cur: Any, where: str) -> dict[int, tuple[list[str], list[str]]]:
        """(title terms, all terms) of some entries, as the full-text index holds them."""
        if self.sqlite:
            cur.execute("SELECT rowid, title, body FROM catalog_fts WHERE rowid " + where)
            return {r[0]: (r[1].split(), r[1].split() + r[2].split()) for r in cur.fetchall()}
        cur.execute(
            "SELECT entry_id, tsvector_to_array(ts_filter(tsv, '{a}')), "
            "tsvector_to_array(tsv) FROM catalog_search WHERE entry_id " + where
        )
        return {r[0]: (r[1], r[2]) for r in cur.fetchall()}

    def _kill(self, entry_id: int) -> None:
        doc = self.doc_of(entry_id)
        if doc is not None and self.live >> doc & 1:
            self.live &= ~(1 << doc)
            self.dead += 1

    def _add(self, rows: list[Any], tokens: dict[int, tuple[list[str], list[str]]]) -> None:
        """New versions of entries get new numbers; older versions are dropped."""
        if not rows:
            return
        first = len(self.ids)
        groups: dict[tuple[Any, ...], list[int]] = defaultdict(list)
        posts: dict[str, list[int]] = defaultdict(list)
        titles: dict[str, list[int]] = defaultdict(list)
        for doc, e in enumerate(rows, start=first):
            self._kill(e[0])
            self.moved[e[0]] = doc
            self.ids.append(0)
            self.modified.append(0)
            self.names.append("")
            self.codes.append("")
            self.values.append(())
            self._set_doc(doc, e, groups)
            title, terms = tokens.get(e[0], ([], []))
            for term in set(terms):
                posts[term].append(doc)
            for term in set(title):
                titles[term].append(doc)
        self._grow(groups)
        self._merge(self.post, posts)
        self._merge(self.title_post, titles)
        self.live |= ((1 << len(rows)) - 1) << first
        self._extend_orders(first, len(rows))

    def _merge(self, target: dict[str, Posting], adds: dict[str, list[int]]) -> None:
        nbytes = self.nbytes
        for term, docs in adds.items():
            current = target.get(term)
            if isinstance(current, int):
                target[term] = current | bits_of(docs, nbytes)
                continue
            merged = current if current is not None else array("I")
            merged.extend(docs)
            target[term] = bits_of(merged, nbytes) if len(merged) > self.dense_at else merged

    def _extend_orders(self, first: int, count: int) -> None:
        if count > 1000:  # many new documents: sorting again is cheaper than inserting
            self.orders.clear()
            return
        for sort, order in self.orders.items():
            key = self.key_fn(sort)
            for doc in range(first, first + count):
                bisect.insort(order, doc, key=key)

    # ------------------------------------------------------------ answering

    def key_fn(self, sort: str) -> Callable[[int], tuple[Any, ...]]:
        """Ascending sort key of a document (relevance adds the title hits in front)."""
        ids, modified = self.ids, self.modified
        if sort in ("name", "code"):
            texts = self.names if sort == "name" else self.codes
            return lambda d: (texts[d], ids[d])
        return lambda d: (-modified[d], -ids[d])

    def _sorted(self, sort: str) -> list[int]:
        return sorted(docs_of(self.live, self.nbytes), key=self.key_fn(sort))

    def _order(self, sort: str) -> list[int]:
        if sort not in self.orders:
            self.orders[sort] = self._sorted(sort)
        return self.orders[sort]

    def search(self, q: IndexQuery) -> IndexHits:
        mask = self._mask(q)
        docs, bits = self._match(q.tokens, mask)
        if docs is not None and len(docs) > self.SMALL:
            bits = bits_of(docs, self.nbytes)
            docs = None
        total = len(docs) if docs is not None else bits.bit_count()
        if docs is None and total <= self.SMALL:
            docs = docs_of(bits, self.nbytes)
        facets = self._facets(docs, bits) if q.facets else {}
        need = q.offset + q.limit + 1
        if docs is not None:
            ranked = self._rank_list(docs, q, need)
        elif q.sort == "relevance":
            ranked = self._rank_classes(bits, q, need)
        else:
            ranked = self._scan(bits, q.sort, q.after, need)
        page = ranked[q.offset : q.offset + q.limit]
        return IndexHits(
            total, [self.ids[d] for _, d in page], [k for k, _ in page], len(ranked) > q.offset + q.limit, facets
        )

    def _mask(self, q: IndexQuery) -> int:
        """Live documents the caller may see that pass the filters."""
        m = self.live
        kind, dept = q.visibility
        published = self.status_bits.get("published", 0)
        if kind == "dept":
            m &= published | self.dept_bits.get(dept or 0, 0)
        elif kind == "published":
            m &= published
        elif kind == "open":
            m &= published & self.facet_bits["open"].get("true", 0)
        for name, value in (
            ("provider", q.provider),
            ("share_type", q.share_type),
            ("update_cycle", q.update_cycle),
            ("format", q.format),
        ):
            if value is not None:
                m &= self.facet_bits[name].get(value, 0)
        if q.open is not None:
            m &= self.facet_bits["open"].get("true" if q.open else "false", 0)
        if q.status is not None:
            m &= self.status_bits.get(q.status, 0)
        if q.class_prefix is not None:
            classes = 0
            for code, b in self.class_bits.items():
                if code.startswith(q.class_prefix):
                    classes |= b
            m &= classes
        return m

    def _match(self, tokens: list[str], mask: int) -> tuple[list[int] | None, int]:
        """(documents, None) when the rarest token is sparse, else (None, bitset)."""
        posts = [self.post.get(t) for t in tokens]
        sparse: list[array[int]] = []
        for p in posts:
            if p is None:
                return [], 0
            if isinstance(p, int):
                mask &= p
            else:
                sparse.append(p)
        sparse.sort(key=len)
        if not sparse:
            return None, mask
        data = mask.to_bytes(self.nbytes, "little")
        docs = [d for d in sparse[0] if data[d >> 3] >> (d & 7) & 1]
        for p in sparse[1:]:
            members = set(p)
            docs = [d for d in docs if d in members]
        return docs, 0

    def _facets(self, docs: list[int] | None, bits: int) -> dict[str, list[tuple[str, int]]]:
        counts: list[Counter[str]] = [Counter() for _ in FACETS]
        if docs is not None:
            values = self.values
            for d in docs:
                for i, value in enumerate(values[d]):
                    counts[i][value] += 1
        else:
            for i, name in enumerate(FACETS):
                for value, vb in self.facet_bits[name].items():
                    n = (bits & vb).bit_count()
                    if n:
                        counts[i][value] = n
        return {
            name: sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[:50] for name, c in zip(FACETS, counts, strict=True)
        }

    def _hits_fn(self, tokens: list[str]) -> Callable[[int], int]:
        """Number of query tokens in a document's title (relevance, first key)."""
        tests: list[Callable[[int], bool]] = []
        for tok in tokens:
            p = self.title_post.get(tok)
            if isinstance(p, int):
                tests.append(_bit_test(p.to_bytes(self.nbytes, "little")))
            elif p is not None:
                members = set(p)
                tests.append(members.__contains__)
        return lambda d: sum(t(d) for t in tests)

    def _rank_list(self, docs: list[int], q: IndexQuery, need: int) -> list[tuple[Any, int]]:
        key = self.key_fn(q.sort)
        if q.sort == "relevance":
            hits, base = self._hits_fn(q.tokens), key

            def key(d: int) -> tuple[Any, ...]:
                return (-hits(d), *base(d))

        keyed = ((key(d), d) for d in docs)
        if q.after is not None:
            after = q.after
            keyed = (kd for kd in keyed if kd[0] > after)
        return heapq.nsmallest(need, keyed)

    def _scan(self, bits: int, sort: str, after: tuple[Any, ...] | None, need: int) -> list[tuple[Any, int]]:
        """The first ``need`` documents of ``bits`` in sort order, after ``after``."""
        key = self.key_fn(sort)
        if bits.bit_count() <= self.SMALL:
            keyed = [(key(d), d) for d in docs_of(bits, self.nbytes)]
            return heapq.nsmallest(need, (kd for kd in keyed if after is None or kd[0] > after))
        order = self._order(sort)
        start = bisect.bisect_right(order, after, key=key) if after is not None else 0
        data = bits.to_bytes(self.nbytes, "little")
        out = []
        for i in range(start, len(order)):
            d = order[i]
            if data[d >> 3] >> (d & 7) & 1:
                out.append((key(d), d))
                if len(out) >= need:
                    break
        return out

    def _rank_classes(self, bits: int, q: IndexQuery, need: int) -> list[tuple[Any, int]]:
        """Relevance over a large match: documents grouped by title hits (k … 0), each
        group newest first."""
        out: list[tuple[Any, int]] = []
        for hits, group in self._hit_groups(bits, q.tokens):
            if q.after is not None and -hits < q.after[0]:
                continue
            within = q.after[1:] if q.after is not None and -hits == q.after[0] else None
            for k, d in self._scan(group, "modified", within, need - len(out)):
                out.append(((-hits, *k), d))
            if len(out) >= need:
                break
        return out

    def _hit_groups(self, bits: int, tokens: list[str]) -> Iterator[tuple[int, int]]:
        """(hits, documents with exactly that many tokens in the title), most first.

        The per-document count is kept bit-sliced: counters[j] holds bit j of it."""
        counters: list[int] = []
        for tok in tokens:
            p = self.title_post.get(tok)
            carry = bits & (p if isinstance(p, int) else bits_of(p if p is not None else (), self.nbytes))
            for j in range(len(counters)):
                counters[j], carry = counters[j] ^ carry, counters[j] & carry
                if not carry:
                    break
            if carry:
                counters.append(carry)
        for hits in range(len(tokens), -1, -1):
            if hits >> len(counters):
                continue
            group = bits
            for j, c in enumerate(counters):
                group = group & c if hits >> j & 1 else group & ~c
            if group:
                yield hits, group


def _bit_test(data: bytes) -> Callable[[int], bool]:
    return lambda d: bool(data[d >> 3] >> (d & 7) & 1)


# ---------------------------------------------------------------- one index per database

_INDEXES: dict[str, CatalogIndex] = {}
_INDEXES_LOCK = threading.Lock()


def index_for(session: Session) -> CatalogIndex | None:
    """The process's index of the session's database, or None when this session must
    be answered by SQL (it has uncommitted catalog changes, or the database has no
    change log yet)."""
    if session.info.get("catalog_dirty"):
        return None
    engine = _engine(session)
    url = str(engine.url)
    with _INDEXES_LOCK:
        index = _INDEXES.get(url)
        if index is None:
            if not _has_change_log(session):
                return None
            index = _INDEXES[url] = CatalogIndex(is_sqlite(engine))
    return index


def _engine(session: Session) -> Engine:
    bind = session.get_bind()
    return bind if isinstance(bind, Engine) else bind.engine


def _has_change_log(session: Session) -> bool:
    if is_sqlite(session.get_bind()):
        sql = "SELECT count(*) FROM sqlite_master WHERE name = 'catalog_change_ctl'"
    else:
        sql = "SELECT count(*) FROM pg_class WHERE relname = 'catalog_change_ctl'"
    return bool(session.execute(text(sql)).scalar())


def search_index(session: Session, query: IndexQuery, wait: float = 5.0) -> IndexHits | None:
    """Answer from the in-memory index, or None (then the caller asks SQL): when the
    index cannot be used, or another thread holds it longer than ``wait`` seconds
    (e.g. while it loads a large catalog)."""
    index = index_for(session)
    if index is None or not index.lock.acquire(timeout=wait):
        return None
    try:
        index.refresh(session)
        return index.search(query)
    finally:
        index.lock.release()


def forget(url: str) -> None:
    """Drop the index of a database that is gone (benchmarks, tests)."""
    with _INDEXES_LOCK:
        _INDEXES.pop(url, None)


def warm(session: Session) -> float:
    """Load the index now (e.g. at start-up); returns the seconds it took."""
    import time

    started = time.perf_counter()
    index = index_for(session)
    if index is not None:
        with index.lock:
            index.refresh(session)
    return time.perf_counter() - started
