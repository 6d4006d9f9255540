"""Engine, sessions and schema upgrades (Alembic) for SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import DateTime, Engine, MetaData, create_engine, event
from sqlalchemy.orm import DeclarativeBase, ORMExecuteState, Session, sessionmaker

from datatong import sqlitewal

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


T = TypeVar("T")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: DateTime(timezone=True)}


def utcnow() -> datetime:
    return datetime.now(UTC)


MAX_ID = 2**63 - 1


def get_by_id(session: Session, model: type[T], ident: Any) -> T | None:
    """``session.get`` that answers None for ids no table can hold (SQLite and
    PostgreSQL both reject integers beyond 64 bits with an error, not a miss)."""
    if not isinstance(ident, int) or not 0 < ident <= MAX_ID:
        return None
    return session.get(model, ident)


def is_sqlite(url_or_engine: Any) -> bool:
    url = str(getattr(url_or_engine, "url", url_or_engine))
    return url.startswith("sqlite")


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets readers run beside the single writer; NORMAL is durable in WAL mode
    # except for the last transactions on power loss, the usual trade-off.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    # Checkpoints run on their own thread, not inside some caller's commit (sqlitewal.py).
    cur.execute("PRAGMA wal_autocheckpoint=0")
    cur.close()


def make_engine(url: str, pool_size: int | None = None) -> Engine:
    """An engine with the platform's settings; ``pool_size`` for a dedicated engine."""
    # Pools as large as the server's worker threads (anyio's 40): a connection made per
    # request and closed after it costs more than the request (a new SQLite connection
    # re-reads the schema; a PostgreSQL one forks a backend).
    pool: dict[str, Any] = {"pool_size": 40, "max_overflow": 20}
    if pool_size is not None:
        pool = {"pool_size": pool_size, "max_overflow": 0}
    if is_sqlite(url):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False}, **pool)
        event.listen(engine, "connect", _sqlite_pragmas)
        if path and path != ":memory:":
            sqlitewal.watch(engine, path)
        return engine
    return create_engine(url, pool_pre_ping=True, **pool)


def writes_to(state: ORMExecuteState, classes: tuple[type, ...]) -> bool:
    """Whether a statement run through a session (``do_orm_execute``) inserts, updates or
    deletes rows of ``classes`` — changes no ORM object stands for, which caches keyed
    by row events would not see."""
    return (state.is_update or state.is_delete or state.is_insert) and any(
        m.class_ in classes for m in state.all_mappers
    )


@lru_cache
def engine_for(url: str) -> Engine:
    return make_engine(url)


@lru_cache
def session_factory(url: str) -> sessionmaker[Session]:
    return sessionmaker(bind=engine_for(url), expire_on_commit=False)


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A unit of work: commit on success, roll back on any error (nothing half-written)."""
    session = session_factory(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def upgrade(url: str) -> None:
    """Bring the schema to the newest migration (Alembic ``upgrade head``)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["engine"] = engine_for(url)
    command.upgrade(cfg, "head")


def all_models() -> None:
    """Import every model module so Base.metadata knows all tables."""
    from datatong.audit import models as _a  # noqa: F401
    from datatong.catalog import models as _c  # noqa: F401
    from datatong.exchange import models as _x  # noqa: F401
    from datatong.orgs import models as _o  # noqa: F401
    from datatong.sharing import models as _s  # noqa: F401
