"""Verification lookups of one data source, many callers per query.

A verification call looks up one subject, usually; at a few hundred calls a second a
query (and a thread hop) per call costs more than the call's own work. So calls hand
their keys to the reader's batcher (``submit`` on the event loop, ``lookup`` in a
thread): one thread per SQL source that takes everything queued since its last query
(up to ``MAX_KEYS`` keys) and looks it up with one ``IN`` query per item list — the
same ``reader.lookup`` a single call uses, so the same coercion, the same errors. Under
light load a batch is one call (no added wait: the thread queries as soon as something
is queued); under heavy load batches grow and queries per call fall. The thread ends
after ``IDLE_SECONDS`` without work and starts again on the next call.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

import sqlalchemy as sa

from datatong.exchange.readers import MAX_IN, SourceReader, SqlReader
from datatong.loopfutures import PerIteration, settle

MAX_KEYS = min(MAX_IN, 500)
IDLE_SECONDS = 30.0

Found = dict[str, dict[str, Any]]
_Request = tuple[str, tuple[str, ...], list[str], "asyncio.Future[Found] | Future[Found]"]


class LookupBatcher:
    def __init__(self, reader: SourceReader) -> None:
        self.reader = reader
        # lists of requests: one per call in a thread, one per event-loop iteration
        self._queue: queue.SimpleQueue[list[_Request]] = queue.SimpleQueue()
        self._from_loops: PerIteration[_Request] = PerIteration(self._hand_over)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._raw: _DriverLookup | None = _DriverLookup(reader) if isinstance(reader, SqlReader) else None

    def submit(self, key_item: str, keys: Sequence[str], items: Sequence[str]) -> asyncio.Future[Found]:
        """The rows of ``keys`` by key (as ``reader.lookup``), once the batch ran (call on
        an event loop, and await)."""
        future: asyncio.Future[Found] = asyncio.get_running_loop().create_future()
        self._from_loops.add((key_item, tuple(items), list(keys), future))
        return future

    def lookup(self, key_item: str, keys: Sequence[str], items: Sequence[str], timeout: float = 60.0) -> Found:
        """``submit`` for a caller in a worker thread: waits for the batch and returns its
        rows (or raises the source's error)."""
        future: Future[Found] = Future()
        self._hand_over([(key_item, tuple(items), list(keys), future)])
        return future.result(timeout)

    def _hand_over(self, requests: list[_Request]) -> None:
        self._queue.put(requests)
        self._ensure_thread()

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="datatong-lookup", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():  # a submit after this sees a dead thread and starts one
                        self._thread = None
                        if self._raw is not None:
                            self._raw.close()
                        return
                continue
            batch = list(first)
            keys = sum(len(r[2]) for r in first)
            while keys < MAX_KEYS:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                batch.extend(more)
                keys += sum(len(r[2]) for r in more)
            self._lookup(batch)

    def _query(self, key_item: str, keys: list[str], items: list[str]) -> Found:
        """One query for ``keys``: through the driver when the reader allows it (a
        SQL source, a text key, columns the driver returns as SQLAlchemy would), else
        through ``reader.lookup``, which also turns a database error into the source's
        error codes (so does a failed driver query: it is asked again that way)."""
        raw = self._raw
        if raw is not None and raw.accepts(key_item, items):
            try:
                return raw.lookup(key_item, keys, items)
            except Exception:
                raw.close()
                self._raw = None
        found: Found = self.reader.lookup(key_item, keys, items)
        return found

    def _lookup(self, batch: list[_Request]) -> None:
        groups: dict[tuple[str, tuple[str, ...]], list[_Request]] = {}
        for request in batch:
            groups.setdefault((request[0], request[1]), []).append(request)
        for (key_item, items), requests in groups.items():
            wanted = list(dict.fromkeys(k for r in requests for k in r[2]))
            try:
                found = self._query(key_item, wanted, list(items))
            except Exception as exc:  # the source's error (AppError) reaches every caller of the batch
                settle((future, None, exc) for *_, future in requests)
                continue
            # Each caller sees only its own subjects' rows.
            settle(
                (future, {k: found[k] for key in keys for k in (key, key.upper()) if k in found}, None)
                for _, _, keys, future in requests
            )


_batchers: dict[int, tuple[SourceReader, LookupBatcher]] = {}
_batchers_lock = threading.Lock()


def batcher_for(reader: SourceReader) -> LookupBatcher:
    """The batcher of ``reader`` (readers are cached per source until it changes)."""
    hit = _batchers.get(id(reader))
    if hit is not None and hit[0] is reader:
        return hit[1]
    with _batchers_lock:
        hit = _batchers.get(id(reader))
        if hit is None or hit[0] is not reader:
            if len(_batchers) >= 1000:
                _batchers.clear()
            hit = _batchers[id(reader)] = (reader, LookupBatcher(reader))
        return hit[1]


class _DriverLookup:
    """A SQL source's lookup straight through its driver, on a connection the batch
    thread keeps: the statement is compiled once per item list and key count (the
    reader's own lookup builds and compiles it per call, and its result layer passes
    the GIL back and forth per row). Only for text keys and columns the driver hands
    over as SQLAlchemy would (no result processor: text, on every backend)."""

    def __init__(self, reader: SqlReader) -> None:
        self.reader = reader
        self._plans: dict[tuple[str, tuple[str, ...], int], tuple[str, list[str] | None, list[str]]] = {}
        self._fit: dict[tuple[str, tuple[str, ...]], bool] = {}
        self._conn: Any = None

    def accepts(self, key_item: str, items: Sequence[str]) -> bool:
        wanted = (key_item, tuple(items))
        fit = self._fit.get(wanted)
        if fit is None:
            dialect = self.reader.engine.dialect
            try:
                cols = [self.reader.column(i) for i in (key_item, *items)]
                fit = cols[0].type.python_type is str and all(
                    c.type.result_processor(dialect, None) is None for c in cols
                )
            except Exception:
                fit = False  # the reader's lookup names what is wrong
            if len(self._fit) < 256:
                self._fit[wanted] = fit
        return fit

    def _plan(self, key_item: str, items: tuple[str, ...], n: int) -> tuple[str, list[str] | None, list[str]]:
        plan = self._plans.get((key_item, items, n))
        if plan is None:
            col = self.reader.column(key_item)
            names = list(dict.fromkeys([key_item, *items]))
            cols = [self.reader.column(item).label(f"c{i}") for i, item in enumerate(names)]
            keys: Any = sa.bindparam("k", value=[""] * n, expanding=True)
            stmt = sa.select(col.label("_key"), *cols).where(col.in_(keys))
            compiled = stmt.compile(dialect=self.reader.engine.dialect, compile_kwargs={"render_postcompile": True})
            order = list(compiled.positiontup) if compiled.positional and compiled.positiontup else None
            plan = (compiled.string, order, names)
            if len(self._plans) >= 512:
                self._plans.clear()
            self._plans[(key_item, items, n)] = plan
        return plan

    def lookup(self, key_item: str, keys: list[str], items: list[str]) -> Found:
        sql, order, names = self._plan(key_item, tuple(items), len(keys))
        named = {f"k_{i + 1}": key for i, key in enumerate(keys)}
        params: Any = [named[name] for name in order] if order is not None else named
        if self._conn is None:
            self._conn = self.reader.engine.raw_connection()
        cursor = self._conn.cursor()
        try:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        finally:
            cursor.close()
        self._conn.rollback()  # no transaction (or snapshot) left open between batches
        return {str(row[0]): {name: row[i + 1] for i, name in enumerate(names)} for row in rows}

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):  # a broken connection: the pool drops it
                self._conn.close()
            self._conn = None
