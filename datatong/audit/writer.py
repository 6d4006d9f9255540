"""Group commit for audit records that have no transaction of their own to join.

Callers (data access, refusals) hand an event to the process's writer thread and block
until the batch holding it is committed: nothing is acknowledged before it is durable,
yet many concurrent calls share one transaction and one fsync. The same thread signs a
checkpoint every ``checkpoint_every`` records and, when idle, whenever the chain moved.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from datatong.audit.checkpoint import make_checkpoint
from datatong.audit.service import AuditUnavailable, Event, append_driver, make_event
from datatong.db import make_engine
from datatong.loopfutures import Outcome, PerIteration, settle
from datatong.sqlitewal import write_turn

log = logging.getLogger("datatong.audit")
PING_AFTER = 10.0  # seconds the batches' connection may sit unused before it is checked
# (event, future, work to do once the record is committed: its result settles the future)
Item = tuple[Event, "Future[Any] | asyncio.Future[Any]", "Callable[[], Any] | None"]


class AuditWriter:
    def __init__(
        self,
        url: str,
        key_dir: Path,
        *,
        checkpoint_every: int = 1000,
        idle_seconds: float = 30.0,
        max_batch: int = 2000,
    ) -> None:
        self.url = url
        self.key_dir = key_dir
        self.checkpoint_every = max(1, checkpoint_every)
        self.idle_seconds = idle_seconds
        self.max_batch = max_batch
        # lists of items (one per call on a thread, one per event-loop iteration), or None: stop
        self._queue: queue.SimpleQueue[list[Item] | None] = queue.SimpleQueue()
        self._from_loops: PerIteration[Item] = PerIteration(self._hand_over)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._signed_block = -1
        self._own_engine: Engine | None = None
        self._driver: Any = None  # the batches' DB-API connection (see _append)
        self._driver_used = 0.0

    def write(self, event: Event, timeout: float = 15.0) -> int:
        """Append ``event``; returns its sequence number once committed.

        Raises AuditUnavailable (fail closed) when the record cannot be written."""
        future: Future[int] = Future()
        self._hand_over([(event, future, None)])
        try:
            return future.result(timeout)
        except Exception as exc:
            log.error("audit record not written: %s", type(exc).__name__)
            raise AuditUnavailable() from exc

    def submit(self, event: Event, then: Callable[[], Any] | None = None) -> asyncio.Future[Any]:
        """Append ``event`` without blocking (call on an event loop, and await): a future
        of its sequence number — or, with ``then``, of ``then()``, run on the writer's
        thread once the record is committed (e.g. signing the answer's receipt: work in
        C that then runs beside the event loop, and only after the record exists). An
        error (the commit's, or ``then``'s) settles the future instead; the caller treats
        it as AuditUnavailable and returns no data."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._from_loops.add((event, future, then))
        return future

    def _hand_over(self, items: list[Item]) -> None:
        self.start()
        self._queue.put(items)

    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            with self._lock:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._run, name="datatong-audit-writer", daemon=True)
                    self._thread.start()

    def stop(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(10)
        self._drop_driver(broken=False)
        if self._own_engine is not None:
            self._own_engine.dispose()
            self._own_engine = None

    def _run(self) -> None:
        self._checkpoint()  # whatever was appended while no writer ran (CLI, demo seeding)
        while True:
            try:
                items = self._queue.get(timeout=self.idle_seconds)
            except queue.Empty:
                self._checkpoint()
                continue
            if items is None:
                self._checkpoint()
                return
            batch = list(items)
            while len(batch) < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)  # finish this batch, then stop
                    break
                batch.extend(more)
            self._commit(batch)

    def _engine(self) -> Engine:
        """The writer's own connections, outside the shared pool: requests waiting for
        their audit record hold pooled connections, and must not starve the writer. Two:
        the batches' driver connection, held for good, and one for checkpoints."""
        if self._own_engine is None:
            self._own_engine = make_engine(self.url, pool_size=2)
        return self._own_engine

    def _commit(self, batch: list[Item]) -> None:
        try:
            with write_turn(self.url):
                last = self._append([event for event, _, _ in batch])
        except Exception as exc:  # the driver's, or the disk's: nothing of the batch is acknowledged
            self._drop_driver()
            settle((future, None, exc) for _, future, _ in batch)
            return
        first = last - len(batch) + 1
        settle(_after(first + i, then, future) for i, (_, future, then) in enumerate(batch))
        block = last // self.checkpoint_every
        if block != self._signed_block:
            self._signed_block = block
            self._checkpoint()

    def _append(self, events: list[Event]) -> int:
        """One batch in one transaction, straight through the driver (see append_driver)."""
        driver = self._connection()
        last = append_driver(driver, self._engine().dialect.paramstyle, events)
        driver.commit()
        self._driver_used = time.monotonic()
        return last

    def _connection(self) -> Any:
        """The batches' connection; after ``PING_AFTER`` idle seconds it is checked first
        (as the pool's pre-ping would: a database restarted meanwhile must not cost the
        next batch's callers a 503), never under load."""
        if self._driver is not None and time.monotonic() - self._driver_used > PING_AFTER:
            try:
                cursor = self._driver.cursor()
                cursor.execute("SELECT 1")
                cursor.close()
                self._driver.rollback()
            except Exception:
                self._drop_driver()
        if self._driver is None:
            self._driver = self._engine().raw_connection()
        return self._driver

    def _drop_driver(self, broken: bool = True) -> None:
        """Let go of the batches' connection: after a failed batch it is thrown away (the
        next batch connects afresh), else handed back to the pool."""
        if self._driver is not None:
            with contextlib.suppress(Exception):
                if broken:
                    self._driver.invalidate()
                else:
                    self._driver.close()
            self._driver = None

    def _checkpoint(self) -> None:
        try:
            with write_turn(self.url), self._engine().begin() as conn:
                make_checkpoint(conn, self.key_dir)
        except (SQLAlchemyError, OSError):
            log.exception("audit checkpoint failed; it will be retried")


def _after(seq: int, then: Callable[[], Any] | None, future: Any) -> Outcome:
    if then is None:
        return (future, seq, None)
    try:
        return (future, then(), None)
    except Exception as exc:
        return (future, None, exc)


_writers: dict[tuple[str, Path], AuditWriter] = {}
_writers_lock = threading.Lock()


def writer_for(url: str, key_dir: Path, checkpoint_every: int = 1000) -> AuditWriter:
    key = (url, key_dir)
    with _writers_lock:
        writer = _writers.get(key)
        if writer is None:
            writer = _writers[key] = AuditWriter(url, key_dir, checkpoint_every=checkpoint_every)
        return writer


def log_access(settings: Any, principal: Any, action: str, **kwargs: Any) -> int | None:
    """Record a read by an authenticated caller before the data leaves (fail closed:
    raises AuditUnavailable when the record cannot be written). Anonymous reads of
    public catalog data are not recorded.

    For reads only: a request whose own transaction has written (or called ``record``)
    holds the lock the writer needs, and would wait for itself until the timeout —
    such a request uses ``service.record`` in its own transaction instead."""
    if not settings.audit_reads or principal is None or not principal.is_authenticated:
        return None
    writer = writer_for(settings.database_url, settings.keys_path, settings.audit_checkpoint_every)
    return writer.write(make_event(principal, action, **kwargs))


def log_refusal(settings: Any, principal: Any, action: str, reason: str, **kwargs: Any) -> None:
    """Record a refused request; its own transaction was rolled back, so it goes through
    the writer. Best effort: the caller is refused either way."""
    writer = writer_for(settings.database_url, settings.keys_path, settings.audit_checkpoint_every)
    try:
        writer.write(make_event(principal, action, outcome="refused", reason=reason, **kwargs), timeout=5)
    except AuditUnavailable:
        log.error("refusal not audited: %s %s", action, reason)
