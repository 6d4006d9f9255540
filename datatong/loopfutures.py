"""Settling futures from a worker thread that serves many callers per batch (the audit
writer's group commit, the exchange's batched lookups).

Callers on an event loop wait on asyncio futures; a worker thread may not touch those
directly, and settling each through ``call_soon_threadsafe`` wakes the loop once per
future. ``settle`` wakes each loop once per batch and settles all its futures there;
``concurrent.futures.Future`` (callers in threads) are settled at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

T = TypeVar("T")

Outcome = tuple["asyncio.Future[Any] | Future[Any]", Any, BaseException | None]


def settle(outcomes: Iterable[Outcome]) -> None:
    by_loop: dict[asyncio.AbstractEventLoop, list[Outcome]] = {}
    for outcome in outcomes:
        future = outcome[0]
        if isinstance(future, asyncio.Future):
            by_loop.setdefault(future.get_loop(), []).append(outcome)
        elif outcome[2] is not None:
            future.set_exception(outcome[2])
        else:
            future.set_result(outcome[1])
    for loop, mine in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(_settle_here, mine)


def _settle_here(outcomes: list[Outcome]) -> None:
    for future, result, exc in outcomes:
        if future.done():  # cancelled: the caller went away
            continue
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)


class PerIteration(Generic[T]):
    """Items added on an event loop, handed to ``sink`` once per loop iteration.

    Handing each call's work to a worker thread through a queue wakes that thread once per
    call; on a virtual machine a cross-CPU wake-up is dear (profiled: the queue's ``put``
    was a tenth of the event loop's time in a verification). Calls that arrive together —
    one loop iteration runs every ready request — are handed over as one list instead:
    ``add`` schedules one ``sink(items)`` per loop and iteration (``call_soon``), which runs
    before any of those calls can resume, so nothing waits longer than that iteration."""

    def __init__(self, sink: Callable[[list[T]], None]) -> None:
        self._sink = sink
        self._pending: dict[asyncio.AbstractEventLoop, list[T]] = {}

    def add(self, item: T) -> None:
        loop = asyncio.get_running_loop()
        pending = self._pending.get(loop)
        if pending is None:
            pending = self._pending[loop] = []
            loop.call_soon(self._flush, loop)
        pending.append(item)

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        items = self._pending.pop(loop, None)
        if items:
            self._sink(items)
