"""SQLite's write path (datatong/sqlitewal.py): no checkpoint inside a caller's commit,
one background checkpointer per process, and a blocking turn for busy writers."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from datatong import sqlitewal
from datatong.db import make_engine


def test_commits_leave_checkpoints_to_the_background_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "p.db"
    seen: list[tuple[int, int, int] | None] = []
    real = sqlitewal.checkpoint

    def recorded(p: str) -> tuple[int, int, int] | None:
        got = real(p)
        if p == str(path):
            seen.append(got)
        return got

    monkeypatch.setattr(sqlitewal, "checkpoint", recorded)  # the real checkpoint, recorded
    monkeypatch.setattr(sqlitewal, "INTERVAL", 0.05)
    engine = make_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        conn.exec_driver_sql("CREATE TABLE t (x TEXT)")
    with engine.begin() as conn:  # far past the default autocheckpoint of 1,000 pages
        conn.execute(sa.text("INSERT INTO t VALUES (:x)"), [{"x": "数" * 2000}] * 2000)
    # The commit left its pages in the WAL; the background thread copied them back.
    for _ in range(200):
        if any(r is not None and r[0] == 0 and r[1] > 1000 and r[2] == r[1] for r in seen):
            break
        time.sleep(0.05)
    assert any(r is not None and r[0] == 0 and r[1] > 1000 and r[2] == r[1] for r in seen), seen
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM t")).scalar() == 2000
    engine.dispose()


def test_no_checkpointer_for_server_or_memory_databases() -> None:
    assert sqlitewal.file_of("postgresql+psycopg://postgres@127.0.0.1/x") is None
    assert sqlitewal.file_of("sqlite:///:memory:") is None
    assert sqlitewal.file_of("sqlite:////var/lib/datatong/d.db") == "/var/lib/datatong/d.db"
    assert sqlitewal.checkpoint("/nonexistent/dir/x.db") is None


def test_writers_take_turns_and_the_waiter_goes_as_soon_as_the_holder_is_done(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    order: list[str] = []
    holding = threading.Event()

    def first() -> None:
        with sqlitewal.write_turn(url):
            order.append("first in")
            holding.set()
            time.sleep(0.3)
            order.append("first out")

    def second() -> None:
        holding.wait(5)
        with sqlitewal.write_turn(url):
            order.append("second in")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert order == ["first in", "first out", "second in"]
    with sqlitewal.write_turn("postgresql+psycopg://postgres@127.0.0.1/x"):
        pass  # nothing to wait for on a server database
