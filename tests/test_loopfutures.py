"""Handing event-loop callers' work to worker threads (datatong/loopfutures.py)."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from typing import Any

from datatong.loopfutures import PerIteration, settle


def test_calls_of_one_loop_iteration_are_handed_over_together() -> None:
    handed: list[list[int]] = []
    batch: PerIteration[int] = PerIteration(handed.append)

    async def call(i: int) -> int:
        batch.add(i)
        await asyncio.sleep(0)  # the hand-over runs before this call resumes
        return len(handed)

    async def main() -> list[int]:
        first = await asyncio.gather(*[call(i) for i in range(50)])
        await call(50)  # a later iteration: a hand-over of its own
        return list(first)

    seen = asyncio.run(main())
    assert handed == [list(range(50)), [50]]
    assert seen == [1] * 50
    asyncio.run(call(51))  # another loop (the first is closed): still handed over
    assert handed[-1] == [51]


def test_a_worker_settles_every_loop_future_and_thread_future() -> None:
    async def main() -> list[Any]:
        loop_futures = [asyncio.get_running_loop().create_future() for _ in range(3)]
        thread_future: Future[str] = Future()
        outcomes: list[Any] = [(f, i, None) for i, f in enumerate(loop_futures[:2])]
        outcomes += [(loop_futures[2], None, ValueError("no")), (thread_future, "t", None)]
        worker = threading.Thread(target=settle, args=(outcomes,))
        worker.start()
        got = await asyncio.gather(*loop_futures, return_exceptions=True)
        worker.join()
        return [*got, thread_future.result(1)]

    a, b, err, t = asyncio.run(main())
    assert (a, b, t) == (0, 1, "t") and isinstance(err, ValueError)
