"""The subscription worker: change capture (source → bus) and webhook delivery (bus →
consumer), run by ``datatong exchange worker`` or a thread of ``datatong serve``.

Crash safety, step by step (a SIGKILL may land anywhere):

* capture reads rows after its saved point, publishes them, then saves the new point —
  on the outbox in the same transaction; on NATS a crash before the save re-publishes the
  same change ids, which JetStream drops (``Nats-Msg-Id``) and consumers drop anyway;
* delivery reads a batch after the subscription's position, writes the audit record,
  POSTs, and only on a 2xx answer moves the position (a conditional update) — a crash in
  between delivers the batch again, with the same change ids.

No transaction is held open across an HTTP call or a bus round trip to the consumer.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import lazyload

from datatong import __version__, crypto
from datatong.db import session_scope, utcnow
from datatong.exchange import netguard, readers, subscriptions
from datatong.exchange.bus import Bus, bus_for
from datatong.exchange.models import CaptureState, ChangeRecord, DataSource, DeadLetter, Subscription
from datatong.exchange.service import Refused
from datatong.exchange.service import _json_value as json_value
from datatong.sharing.jobs import sign

log = logging.getLogger("datatong.exchange.delivery")
POST_TIMEOUT = 10.0
MAX_RETRY_SECONDS = 3600
PRUNE_EVERY_SECONDS = 3600


# ---------------------------------------------------------------- capture


def _sources_to_capture(url: str) -> list[int]:
    """Sources with change tracking whose entry has a live subscription."""
    with session_scope(url) as session:
        live = select(Subscription.entry_id).where(Subscription.status.in_(("active", "paused")))
        stmt = select(DataSource.id).where(
            DataSource.enabled.is_(True), DataSource.change_column.is_not(None), DataSource.entry_id.in_(live)
        )
        return list(session.scalars(stmt))


def capture_source(url: str, settings: Any, bus: Bus, source_id: int, limit: int = 2000) -> int:
    """Publish the source's rows changed since the saved point; returns how many."""
    with session_scope(url) as session:
        # Not the entry (and its data items): capture runs every round and needs only the mapping.
        source = session.get(DataSource, source_id, options=[lazyload(DataSource.entry)])
        if source is None:
            return 0
        reader = readers.reader_for(session, settings, source)
        if not isinstance(reader, readers.SqlReader):
            return 0
        state = session.get(CaptureState, source_id)
        if state is None:  # first capture: start from the newest row, not the history
            newest = reader.newest_change()
            session.add(
                CaptureState(
                    source_id=source_id,
                    epoch=secrets.token_hex(8),
                    last_change=json.dumps(json_value(newest[0])) if newest else None,
                    last_key=json.dumps(json_value(newest[1])) if newest else None,
                    captured=0,
                )
            )
            return 0
        after = (
            None if state.last_change is None else (json.loads(state.last_change), json.loads(state.last_key or "null"))
        )
        rows = reader.changes(after, limit)
        if not rows:
            return 0
        batch = [
            (
                subscriptions.change_id(state.epoch, key, changed),
                subscriptions.change_body(key, changed, _plain(row)),
            )
            for changed, key, row in rows
        ]
        bus.publish(session, source.entry_id, batch)
        last_change, last_key, _ = rows[-1]
        state.last_change = json.dumps(json_value(last_change))
        state.last_key = json.dumps(json_value(last_key))
        state.captured += len(rows)
        state.updated_at = utcnow()
        return len(rows)


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    return {k: json_value(v) for k, v in row.items()}


def capture_all(url: str, settings: Any, bus: Bus) -> int:
    total = 0
    for source_id in _sources_to_capture(url):
        try:
            total += capture_source(url, settings, bus, source_id)
        except Exception:  # one failing source must not stop the others; next round retries
            log.exception("change capture of source %s failed", source_id)
    return total


# ---------------------------------------------------------------- webhook delivery


@dataclass
class _Batch:
    subscription_id: int
    url: str
    secret: str
    body: bytes
    first: int
    last: int
    count: int
    position: int  # the position this batch was read after (for the conditional update)


def _due(url: str, now: datetime) -> list[int]:
    with session_scope(url) as session:
        stmt = select(Subscription.id).where(
            Subscription.status == "active",
            Subscription.mode == "webhook",
            or_(Subscription.next_attempt_at.is_(None), Subscription.next_attempt_at <= now),
        )
        return list(session.scalars(stmt.order_by(Subscription.id)))


def _prepare(url: str, settings: Any, bus: Bus, subscription_id: int, now: datetime) -> _Batch | None:
    """Read, authorise, mask and audit the next batch (in one short transaction)."""
    with session_scope(url) as session:
        sub = session.get(Subscription, subscription_id)
        if sub is None or sub.status != "active" or sub.url is None or sub.secret_sealed is None:
            return None
        changes = bus.read(session, sub.entry_id, sub.position, settings.subscription_batch, reader=f"s{sub.id}")
        if not changes:
            return None
        entry = subscriptions.entry_ref(session, sub.entry_id)
        caller = subscriptions.caller_of(session, sub)
        if entry is None or entry.status != "published" or caller is None:
            _later(sub, "订阅方或信息资源已停用", now, seconds=300)
            return None
        items = json.loads(sub.items)
        context = subscriptions.stored_context(sub)
        try:
            decision = subscriptions.decide(
                session,
                settings,
                caller,
                entry,
                items,
                sub.purpose,
                len(changes),
                "exchange.subscription.deliver",
                context,
            )
        except Refused as exc:  # revoked, expired, over quota …: try again later
            _later(sub, f"exchange.{exc.decision.reason}", now, seconds=60)
            return None
        payload = {
            "subscription": sub.id,
            "entry": entry.code,
            "changes": subscriptions.masked_changes(session, decision, items, changes),
            "next": changes[-1].offset,
        }
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), default=str).encode()
        subscriptions.audit_batch(
            settings, caller, sub, entry, decision, changes, "exchange.subscription.deliver", context
        )
        secret = crypto.unseal(sub.secret_sealed, aad=subscriptions.secret_aad(sub.id), settings=settings)
        return _Batch(sub.id, sub.url, secret, body, changes[0].offset, changes[-1].offset, len(changes), sub.position)


def _later(sub: Subscription, error: str, now: datetime, *, seconds: float) -> None:
    sub.last_error, sub.next_attempt_at = error, now + timedelta(seconds=seconds)


_http: httpx.Client | None = None


def _client() -> httpx.Client:
    """One client per process: connections are kept alive between batches to the same
    receiver, and the TLS context is built once (about 40 ms each time otherwise)."""
    global _http
    if _http is None:
        _http = httpx.Client(timeout=POST_TIMEOUT, follow_redirects=False)
    return _http


def _post(batch: _Batch, now: datetime, allow: tuple[str, ...] = ()) -> str | None:
    """POST the batch; None on a 2xx answer, else why not (never the secret)."""
    refused = netguard.why_not(batch.url, allow)  # checked again: a name may resolve elsewhere now
    if refused:
        return f"目标地址不允许：{refused}"
    timestamp = str(int(now.timestamp()))
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": f"Datatong-Webhook/{__version__}",
        "X-Datatong-Event": "exchange.changes",
        "X-Datatong-Subscription": str(batch.subscription_id),
        "X-Datatong-Timestamp": timestamp,
        "X-Datatong-Signature": sign(batch.secret, timestamp, batch.body.decode()),
    }
    try:
        r = _client().post(batch.url, content=batch.body, headers=headers)
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"[:500]
    return None if 200 <= r.status_code < 300 else f"HTTP {r.status_code}"


def _settle(url: str, settings: Any, batch: _Batch, error: str | None, now: datetime) -> bool:
    """Move the position after a success; count the failure otherwise (dead-letter after
    N tries). Conditional on the position being unchanged (a replay meanwhile wins)."""
    with session_scope(url) as session:
        sub = session.get(Subscription, batch.subscription_id)
        if sub is None or sub.position != batch.position:
            return False
        if error is None:
            values: dict[str, Any] = {
                "position": batch.last,
                "delivered": sub.delivered + batch.count,
                "attempts": 0,
                "last_error": None,
                "next_attempt_at": None,
            }
        elif sub.attempts + 1 >= settings.subscription_max_attempts:
            session.add(
                DeadLetter(
                    subscription_id=sub.id,
                    first_offset=batch.first,
                    last_offset=batch.last,
                    changes=batch.count,
                    attempts=sub.attempts + 1,
                    error=error,
                )
            )
            values = {"position": batch.last, "attempts": 0, "last_error": error, "next_attempt_at": None}
        else:
            delay = min(MAX_RETRY_SECONDS, settings.subscription_retry_seconds * 2**sub.attempts)
            values = {
                "attempts": sub.attempts + 1,
                "last_error": error,
                "next_attempt_at": now + timedelta(seconds=delay),
            }
        stmt = (
            update(Subscription)
            .where(Subscription.id == sub.id, Subscription.position == batch.position)
            .values(updated_at=now, **values)
        )
        session.execute(stmt)
        return error is None


def deliver_subscription(url: str, settings: Any, bus: Bus, subscription_id: int) -> int:
    """One batch of one subscription; returns the changes delivered."""
    now = utcnow()
    batch = _prepare(url, settings, bus, subscription_id, now)
    if batch is None:
        return 0
    error = _post(batch, now, settings.outbound_allow)
    return batch.count if _settle(url, settings, batch, error, utcnow()) else 0


def deliver_all(url: str, settings: Any, bus: Bus) -> int:
    total = 0
    for sid in _due(url, utcnow()):
        try:
            total += deliver_subscription(url, settings, bus, sid)
        except Exception:
            log.exception("delivery of subscription %s failed", sid)
    return total


# ---------------------------------------------------------------- outbox retention


def prune_outbox(url: str, days: int, now: datetime | None = None) -> int:
    """Drop outbox changes older than ``days`` (the replay window promised to consumers;
    NATS keeps its own, ``max_age``)."""
    cutoff = (now or utcnow()) - timedelta(days=days)
    with session_scope(url) as session:
        result = session.execute(delete(ChangeRecord).where(ChangeRecord.created_at < cutoff))
        return int(getattr(result, "rowcount", 0) or 0)


# ---------------------------------------------------------------- running


def run_once(settings: Any, bus: Bus | None = None) -> dict[str, int]:
    bus = bus or bus_for(settings)
    url = settings.database_url
    return {"captured": capture_all(url, settings, bus), "delivered": deliver_all(url, settings, bus)}


def run_forever(settings: Any, stop: threading.Event, idle: float = 0.5) -> None:
    """Capture and deliver until ``stop`` is set; sleeps ``idle`` seconds only when a
    round found nothing to do (so a backlog drains at full speed)."""
    bus = bus_for(settings)
    pruned_at = 0.0
    while not stop.is_set():
        if bus.name == "outbox" and time.monotonic() - pruned_at > PRUNE_EVERY_SECONDS:
            pruned_at = time.monotonic()
            try:
                prune_outbox(settings.database_url, settings.change_retention_days)
            except Exception:
                log.exception("pruning the change outbox failed")
        try:
            done = run_once(settings, bus)
        except Exception:
            log.exception("subscription worker round failed")
            done = {}
        if not any(done.values()):
            stop.wait(idle)


def start_thread(settings: Any) -> threading.Event:
    stop = threading.Event()
    threading.Thread(target=run_forever, args=(settings, stop), name="datatong-subscriptions", daemon=True).start()
    return stop
