"""A per-process stale-while-revalidate cache for answers read from the platform database
that every exchange call needs and that rarely change (who a bearer token is; which
reader serves an entry).

The rules, the same for every use:

* an answer younger than ``fresh`` seconds is used as is;
* past that, ONE caller reads it again (it *claims* the key) while the others go on with
  the old answer — a burst of concurrent calls would otherwise all read at once — but
  never with an answer older than ``stale`` seconds (the bound ``authorize`` keeps for
  changes made by other processes) nor past the answer's own expiry (a token's ``exp``);
* a read that fails drops the key, so every caller asks again and meets the error;
* a change made in this process (an ORM insert/update/delete of a watched model, or a
  bulk update/delete through the session) drops the whole cache at once, and again when
  that session commits or rolls back; an answer read by a session with such changes of
  its own, or while an invalidation ran, is not kept.

``get`` is for a caller holding a session (in a thread); ``get_in_memory`` is for a
caller on the event loop that must not block: it answers from memory, or re-reads a
stale key in a thread, or says None when there is nothing usable (ask ``get`` then).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Iterable
from typing import Any, Generic, TypeVar

from sqlalchemy import event
from sqlalchemy.orm import ORMExecuteState, Session, object_session
from starlette.concurrency import run_in_threadpool

from datatong.db import session_scope, writes_to

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

# load(session) → (answer, seconds it may be kept at most, or None for no own limit)
Loader = Callable[[Session], tuple[V, float | None]]
_ROW_EVENTS = ("after_insert", "after_update", "after_delete")


class SwrCache(Generic[K, V]):
    def __init__(self, name: str, *, fresh: float, stale: float, max_entries: int = 1000) -> None:
        self.fresh, self.stale, self.max_entries = fresh, stale, max_entries
        self._dirty = f"datatong.swrcache.{name}.dirty"
        # key → (read at, usable until), both time.monotonic(), and the answer
        self._entries: dict[K, tuple[float, float, V]] = {}
        self._claimed: set[K] = set()
        self._generation = 0
        self._lock = threading.Lock()

    # ------------------------------------------------------------ reading

    def get(self, session: Session, key: K, load: Loader[V]) -> V:
        """The answer for ``key``: from the cache while usable, else ``load(session)``."""
        hit = self._entries.get(key) if self._dirty not in session.info else None
        claimed = False
        if hit is not None:
            now = time.monotonic()
            if now < hit[1]:
                age = now - hit[0]
                if age < self.fresh:
                    return hit[2]
                claimed = self._claim(key)
                if not claimed:
                    return hit[2]  # another caller is reading it again right now
        try:
            return self._load(session, key, load)
        finally:
            if claimed:
                self._release(key)

    async def get_in_memory(self, key: K, load: Loader[V], database_url: Any) -> V | None:
        """``get`` without blocking the event loop: the cached answer while fresh (or
        while stale if another call is reading it again); a stale one is read again by
        this call in a thread with a session of ``database_url``. None when nothing
        usable is cached."""
        hit = self._entries.get(key)
        if hit is None:
            return None
        now = time.monotonic()
        if now >= hit[1]:
            return None
        if now - hit[0] < self.fresh or not self._claim(key):
            return hit[2]
        try:
            return await run_in_threadpool(self._load_in_session, database_url, key, load)
        finally:
            self._release(key)

    def _load_in_session(self, database_url: Any, key: K, load: Loader[V]) -> V:
        with session_scope(database_url) as session:
            return self._load(session, key, load)

    def _load(self, session: Session, key: K, load: Loader[V]) -> V:
        generation = self._generation
        try:
            value, keep = load(session)
        except BaseException:
            with self._lock:
                self._entries.pop(key, None)  # gone or broken: every caller asks again
            raise
        now = time.monotonic()
        until = now + (self.stale if keep is None else max(0.0, min(self.stale, keep)))
        with self._lock:
            if generation == self._generation and self._dirty not in session.info:
                if len(self._entries) >= self.max_entries:
                    self._entries.clear()
                self._entries[key] = (now, until, value)
        return value

    def _claim(self, key: K) -> bool:
        if key in self._claimed:
            return False  # the usual answer while a re-read runs: no lock (a set lookup is atomic)
        with self._lock:
            if key in self._claimed:
                return False
            self._claimed.add(key)
            return True

    def _release(self, key: K) -> None:
        with self._lock:
            self._claimed.discard(key)

    # ------------------------------------------------------------ invalidation

    def forget(self) -> None:
        """Drop every answer (and keep none being read right now)."""
        with self._lock:
            self._generation += 1
            self._entries.clear()

    def watch(self, models: Iterable[type]) -> None:
        """Forget on every ORM change of ``models`` made in this process."""
        classes = tuple(models)

        def on_row(_mapper: Any, _connection: Any, row: Any) -> None:
            session = object_session(row)
            if session is not None:
                session.info[self._dirty] = True
            self.forget()

        def on_statement(state: ORMExecuteState) -> None:
            # An UPDATE/DELETE/INSERT statement through the session (``update(User)…``,
            # also the legacy ``Query.update``) changes rows no ORM object stands for.
            if writes_to(state, classes):
                state.session.info[self._dirty] = True
                self.forget()

        def on_done(session: Session, *_: Any) -> None:
            if session.info.pop(self._dirty, None):
                self.forget()

        for model in classes:
            for name in _ROW_EVENTS:
                event.listen(model, name, on_row)
        event.listen(Session, "do_orm_execute", on_statement)
        event.listen(Session, "after_commit", on_done)
        event.listen(Session, "after_rollback", on_done)
