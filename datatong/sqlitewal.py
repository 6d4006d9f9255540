"""SQLite's write path, kept short for the writers that answer calls.

In WAL mode a commit appends to the ``-wal`` file without an fsync (synchronous=NORMAL);
the fsyncs come with the *checkpoint* that copies the WAL back into the database. By
default the connection whose commit pushes the WAL past 1,000 pages runs that
checkpoint itself, inside its commit: measured here, one commit in a thousand took 15
ms instead of 0.2 — and when that connection is the audit writer's, every call waiting
for its record waits too (p99 of a verification). So the platform's connections do not
checkpoint (``wal_autocheckpoint=0``, set in db.py); one daemon thread per process does,
every ``INTERVAL`` seconds, for every SQLite file an engine of this process has open:
a PASSIVE checkpoint, which never waits for or blocks writers or readers. SQLite still
checkpoints and removes the WAL when the last connection closes.

``write_turn`` is the other half: see its docstring.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any

try:
    import fcntl
except ImportError:  # not on Windows: SQLite's own busy handler only
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger("datatong.db")
INTERVAL = 1.0
_files: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()  # engine → database file
_lock = threading.Lock()
_thread: threading.Thread | None = None


def file_of(url: str) -> str | None:
    """The database file of a SQLite URL (None for a server database or ``:memory:``)."""
    if not url.startswith("sqlite"):
        return None
    path = url.split("///", 1)[-1].split("?", 1)[0]
    return path if path and path != ":memory:" else None


def watch(engine: Any, path: str) -> None:
    """Checkpoint ``path`` in the background for as long as ``engine`` exists."""
    global _thread
    with _lock:
        _files[engine] = path
        if _thread is None or not _thread.is_alive():
            _thread = threading.Thread(target=_run, name="datatong-wal-checkpoint", daemon=True)
            _thread.start()


def checkpoint(path: str) -> tuple[int, int, int] | None:
    """One PASSIVE checkpoint of ``path``: (busy, WAL frames, frames checkpointed), or None
    when the file is gone. Never waits: another process's checkpoint makes it skip."""
    if not os.path.exists(path):
        return None
    conn = sqlite3.connect(path, timeout=0, isolation_level=None, check_same_thread=False)
    try:
        row = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    finally:
        conn.close()
    return (int(row[0]), int(row[1]), int(row[2])) if row else None


def _run() -> None:
    while True:
        time.sleep(INTERVAL)
        with _lock:
            paths = set(_files.values())
        for path in paths:
            try:
                checkpoint(path)
            except sqlite3.Error as exc:  # busy or locked: the next round tries again
                log.debug("WAL checkpoint of %s skipped: %s", path, exc)


@contextlib.contextmanager
def write_turn(url: str) -> Iterator[None]:
    """Around a write transaction of a busy writer on a SQLite file: wait for the turn on
    a lock file beside the database (``<db>.write-lock``) instead of SQLite's busy handler.

    SQLite's busy handler polls: a writer that finds the database locked sleeps 1, 2, 5,
    10 … 100 ms and looks again, so two processes' group-commit threads (one per uvicorn
    worker) that meet at every commit sleep far longer than the other's transaction
    lasts. A blocking ``flock`` wakes the waiter the moment the holder lets go. Other
    writers still meet SQLite's own lock and its busy timeout, as before. Elsewhere (a
    server database, ``:memory:``, no ``fcntl``) this does nothing."""
    path = file_of(url)
    if path is None or fcntl is None:
        yield
        return
    fd = os.open(path + ".write-lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
