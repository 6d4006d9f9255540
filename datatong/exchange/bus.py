"""The bus of captured changes: where change capture puts each change of an entry's data
and where delivery reads it back from an offset.

Two back-ends with one small interface (``Bus``), chosen by ``DATATONG_BUS_URL``:

* ``OutboxBus`` (default, no extra server): the ``exchange_change`` table of the platform
  database; an offset is the row id. Capture writes changes and its own read position in
  one transaction, so each change is on the bus exactly once.
* ``NatsBus`` (``nats://…``): a NATS JetStream stream ``DATATONG_CHANGES`` with a subject
  per entry (``datatong.changes.<entry id>``); an offset is the stream sequence. Each
  message carries ``Nats-Msg-Id`` = the change id, so JetStream drops a change published
  twice (capture crashed between publishing and saving its position) within its
  duplicate window; consumers drop any other repeat by the same id.

Offsets only grow, and are only comparable within one bus: switching the bus of a running
platform starts subscriptions again from the new bus's head (docs/exchange.md).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from datatong.exchange.models import ChangeRecord

T = TypeVar("T")
STREAM = "DATATONG_CHANGES"
SUBJECT = "datatong.changes"


@dataclass(frozen=True)
class Change:
    offset: int
    change_id: str
    body: dict[str, Any]


class Bus(Protocol):
    name: str

    def publish(self, session: Session, entry_id: int, changes: Sequence[tuple[str, dict[str, Any]]]) -> None:
        """Put ``(change id, body)`` pairs on the bus, in order. The outbox writes in
        ``session``'s transaction; NATS publishes at once and waits for the acks."""

    def read(self, session: Session, entry_id: int, after: int, limit: int, reader: str = "") -> list[Change]:
        """Up to ``limit`` changes of ``entry_id`` with offsets above ``after``, in order.
        ``reader`` names a repeated reader (a subscription) so a back-end may keep a cursor."""

    def head(self, session: Session, entry_id: int) -> int:
        """The offset of the newest change of ``entry_id`` (0 when there is none)."""

    def healthy(self) -> str | None:
        """None when the bus answers, else why not."""

    def close(self) -> None: ...


def _dumps(body: dict[str, Any]) -> str:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), default=str)


class OutboxBus:
    name = "outbox"

    def publish(self, session: Session, entry_id: int, changes: Sequence[tuple[str, dict[str, Any]]]) -> None:
        if not changes:
            return
        table = cast(sa.Table, ChangeRecord.__table__)
        insert = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
        rows = [{"entry_id": entry_id, "change_id": cid, "body": _dumps(body)} for cid, body in changes]
        # A change captured twice (two workers) is kept once: its id is unique.
        session.execute(insert(table).on_conflict_do_nothing(index_elements=["change_id"]), rows)

    def read(self, session: Session, entry_id: int, after: int, limit: int, reader: str = "") -> list[Change]:
        stmt = (
            sa.select(ChangeRecord.id, ChangeRecord.change_id, ChangeRecord.body)
            .where(ChangeRecord.entry_id == entry_id, ChangeRecord.id > after)
            .order_by(ChangeRecord.id)
            .limit(limit)
        )
        return [Change(r[0], r[1], json.loads(r[2])) for r in session.execute(stmt)]

    def head(self, session: Session, entry_id: int) -> int:
        got = session.scalar(sa.select(sa.func.max(ChangeRecord.id)).where(ChangeRecord.entry_id == entry_id))
        return int(got or 0)

    def healthy(self) -> str | None:
        return None

    def close(self) -> None:
        return None


class NatsBus:
    """JetStream through nats-py (asyncio) driven from synchronous code: the client lives
    on an event loop in a daemon thread; each call waits for its coroutine."""

    name = "nats"

    def __init__(self, url: str, *, max_age_days: int = 30) -> None:
        self.url = url
        self.max_age_days = max_age_days
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="datatong-nats", daemon=True)
        self._thread.start()
        self._nc: Any = None
        self._js: Any = None
        # reader name → (pull subscription, offset of the last change it handed out)
        self._cursors: dict[str, tuple[Any, int]] = {}
        self._lock = threading.Lock()

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _connect(self) -> Any:
        if self._js is None:
            import nats
            from nats.js.api import StreamConfig

            self._nc = await nats.connect(self.url, connect_timeout=3, max_reconnect_attempts=3)
            js = self._nc.jetstream()
            config = StreamConfig(
                name=STREAM,
                subjects=[f"{SUBJECT}.>"],
                max_age=self.max_age_days * 86400,
                duplicate_window=600,  # seconds in which a repeated Nats-Msg-Id is dropped
            )
            try:
                await js.add_stream(config)
            except Exception:  # exists with other settings (an operator's): keep theirs
                await js.stream_info(STREAM)
            self._js = js
        return self._js

    async def _publish(self, entry_id: int, changes: Sequence[tuple[str, dict[str, Any]]]) -> None:
        js = await self._connect()
        subject = f"{SUBJECT}.{entry_id}"
        futures = [
            await js.publish_async(subject, _dumps(body).encode(), headers={"Nats-Msg-Id": cid})
            for cid, body in changes
        ]
        await asyncio.gather(*futures)  # every ack: the stream holds them (or knew them)

    def publish(self, session: Session, entry_id: int, changes: Sequence[tuple[str, dict[str, Any]]]) -> None:
        if changes:
            self._call(self._publish(entry_id, changes), timeout=120)

    async def _subscribe(self, entry_id: int, after: int) -> Any:
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        js = await self._connect()
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=after + 1,
            ack_policy=AckPolicy.NONE,  # the reader keeps its own position (in the database)
            inactive_threshold=300,  # an abandoned cursor is removed by the server
        )
        return await js.pull_subscribe(f"{SUBJECT}.{entry_id}", stream=STREAM, config=config)

    async def _fetch(self, sub: Any, limit: int) -> list[Change]:
        from nats.errors import TimeoutError as NatsTimeout

        try:
            msgs = await sub.fetch(limit, timeout=0.2)
        except NatsTimeout:
            return []
        return [Change(m.metadata.sequence.stream, m.headers.get("Nats-Msg-Id", ""), json.loads(m.data)) for m in msgs]

    async def _read(self, key: str, entry_id: int, after: int, limit: int) -> list[Change]:
        held = self._cursors.get(key)
        if held is None or held[1] != after:  # first read, or the reader moved (replay, crash)
            if held is not None:
                await held[0].unsubscribe()
            held = (await self._subscribe(entry_id, after), after)
        got = await self._fetch(held[0], limit)
        if key:
            self._cursors[key] = (held[0], got[-1].offset if got else after)
        else:
            await held[0].unsubscribe()
        return got

    def read(self, session: Session, entry_id: int, after: int, limit: int, reader: str = "") -> list[Change]:
        key = f"{entry_id}:{reader}" if reader else ""
        with self._lock:
            return self._call(self._read(key, entry_id, after, limit))

    async def _head(self, entry_id: int) -> int:
        from nats.js.errors import NotFoundError

        js = await self._connect()
        try:
            msg = await js.get_last_msg(STREAM, f"{SUBJECT}.{entry_id}")
        except NotFoundError:
            return 0
        return int(msg.seq or 0)

    def head(self, session: Session, entry_id: int) -> int:
        return self._call(self._head(entry_id))

    def healthy(self) -> str | None:
        try:
            self._call(self._connect(), timeout=5)
        except Exception as exc:  # reported on /healthz, never raised
            return f"{type(exc).__name__}: {exc}"[:200]
        return None

    def close(self) -> None:
        async def _close() -> None:
            if self._nc is not None:
                await self._nc.close()

        try:
            self._call(_close(), timeout=5)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)


_buses: dict[str, Bus] = {}
_buses_lock = threading.Lock()


def bus_for(settings: Any) -> Bus:
    """The process's bus for ``settings.bus_url`` (one connection per process)."""
    url = getattr(settings, "bus_url", "") or ""
    with _buses_lock:
        if url not in _buses:
            _buses[url] = NatsBus(url) if url.startswith(("nats://", "tls://")) else OutboxBus()
        return _buses[url]


def close_all() -> None:
    with _buses_lock:
        for bus in _buses.values():
            bus.close()
        _buses.clear()
