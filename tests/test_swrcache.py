"""The stale-while-revalidate cache behind the exchange's cached caller and target
(datatong/swrcache.py): fresh answers reused, one re-reader per stale key, bounded
staleness, failures and in-process changes honoured at once."""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from datatong import swrcache
from datatong.db import session_scope
from datatong.orgs.models import Department
from datatong.settings import Settings
from datatong.swrcache import SwrCache

# One instance for the module: watch() registers session listeners for good.
CACHE: SwrCache[str, int] = SwrCache("test", fresh=0.5, stale=1.0, max_entries=3)
CACHE.watch((Department,))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch, world: dict[str, Any]) -> Clock:
    c = Clock()
    monkeypatch.setattr(swrcache, "time", SimpleNamespace(monotonic=c.monotonic))
    CACHE.forget()
    return c


class Loads:
    """A loader that counts its calls and answers 1, 2, 3 … (or raises when told)."""

    def __init__(self, keep: float | None = None) -> None:
        self.calls, self.keep, self.fail = 0, keep, False

    def __call__(self, _session: Session) -> tuple[int, float | None]:
        self.calls += 1
        if self.fail:
            raise LookupError("gone")
        return self.calls, self.keep


def test_fresh_reused_stale_reread_by_one_caller_never_past_the_bound(settings: Settings, clock: Clock) -> None:
    load = Loads()
    with session_scope(settings.database_url) as s:
        assert CACHE.get(s, "k", load) == 1
        clock.now += 0.4
        assert CACHE.get(s, "k", load) == 1 and load.calls == 1  # fresh
        clock.now += 0.2  # stale: this caller reads again
        assert CACHE.get(s, "k", load) == 2 and load.calls == 2
        clock.now += 0.6
        assert CACHE._claim("k")  # another caller is reading it again right now …
        assert CACHE.get(s, "k", load) == 2 and load.calls == 2  # … so the old answer serves
        clock.now += 0.5  # … but never older than `stale`
        assert CACHE.get(s, "k", load) == 3
        CACHE._release("k")


def test_an_answer_is_not_kept_past_its_own_limit(settings: Settings, clock: Clock) -> None:
    load = Loads(keep=0.2)  # e.g. a token expiring in 0.2 s
    with session_scope(settings.database_url) as s:
        assert CACHE.get(s, "k", load) == 1
        clock.now += 0.1
        assert CACHE.get(s, "k", load) == 1
        clock.now += 0.15
        assert CACHE.get(s, "k", load) == 2
    assert asyncio.run(CACHE.get_in_memory("k", load, settings.database_url)) == 2
    clock.now += 0.3
    assert asyncio.run(CACHE.get_in_memory("k", load, settings.database_url)) is None


def test_a_failed_read_drops_the_key_for_every_caller(settings: Settings, clock: Clock) -> None:
    load = Loads()
    with session_scope(settings.database_url) as s:
        CACHE.get(s, "k", load)
        clock.now += 0.7
        load.fail = True
        with pytest.raises(LookupError):
            CACHE.get(s, "k", load)
        assert "k" not in CACHE._entries and not CACHE._claimed
        with pytest.raises(LookupError):  # no stale answer hides the failure
            CACHE.get(s, "k", load)


def test_an_answer_read_while_an_invalidation_ran_is_not_kept(settings: Settings, clock: Clock) -> None:
    def load(_s: Session) -> tuple[int, None]:
        CACHE.forget()  # a change lands while this read is under way
        return 7, None

    with session_scope(settings.database_url) as s:
        assert CACHE.get(s, "k", load) == 7
    assert "k" not in CACHE._entries


def test_changes_in_this_process_apply_at_once(settings: Settings, clock: Clock) -> None:
    load = Loads()
    with session_scope(settings.database_url) as s:
        CACHE.get(s, "k", load)
    with session_scope(settings.database_url) as s:
        s.scalars(sa.select(Department).where(Department.code == "GA")).one().name = "示范市公安局（新）"
        s.flush()
        assert not CACHE._entries  # dropped at the write …
        assert CACHE.get(s, "k", load) == 2  # … and this session's own reads are not kept
        assert not CACHE._entries
    with session_scope(settings.database_url) as s:
        assert CACHE.get(s, "k", load) == 3
        s.execute(sa.update(Department).where(Department.code == "GA").values(name="示范市公安局"))
        assert not CACHE._entries  # a bulk UPDATE through the session too
    with session_scope(settings.database_url) as s:
        s.execute(sa.delete(Department).where(Department.code == "nope"))
        assert CACHE.get(s, "k", load) == 4
    assert not CACHE._entries  # dropped again when that session ended


def test_in_memory_answers_from_memory_and_rereads_stale_in_a_thread(settings: Settings, clock: Clock) -> None:
    threads: list[str] = []

    def load(_s: Session) -> tuple[str, None]:
        threads.append(threading.current_thread().name)
        return f"v{len(threads)}", None

    strings: SwrCache[str, str] = SwrCache("test-strings", fresh=0.5, stale=1.0)
    assert asyncio.run(strings.get_in_memory("k", load, settings.database_url)) is None  # nothing cached
    with session_scope(settings.database_url) as s:
        strings.get(s, "k", load)
    clock.now += 0.7

    async def burst() -> list[str | None]:
        return list(await asyncio.gather(*[strings.get_in_memory("k", load, settings.database_url) for _ in range(5)]))

    got = asyncio.run(burst())
    assert sorted(got, key=str) == ["v1", "v1", "v1", "v1", "v2"]  # one re-read, the rest the old answer
    assert len(threads) == 2 and threads[1] != threading.current_thread().name
    assert asyncio.run(strings.get_in_memory("k", load, settings.database_url)) == "v2"


def test_the_cache_is_bounded(settings: Settings, clock: Clock) -> None:
    with session_scope(settings.database_url) as s:
        for key in "abcd":
            CACHE.get(s, key, Loads())
    assert len(CACHE._entries) <= 3
