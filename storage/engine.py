from __future__ import annotations

from pathlib import Path

from sqlalchemy import event, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool, QueuePool

from storage.short_transactions import ShortTransactions

SQLITE_BUSY_TIMEOUT_MS = 30_000
# A burst of questions queues for a connection rather than failing: on SQLite writers take turns
# anyway, and an answer that waits a little beats one that is refused.
POOL_TIMEOUT_SECONDS = 120
INVALID_CATALOG_NAME = "3D000"  # PostgreSQL: the database does not exist


def create_engine(url: str, **kwargs) -> AsyncEngine:
    """An async engine that is safe for concurrent writers on SQLite as well as PostgreSQL.

    On SQLite every transaction starts with BEGIN IMMEDIATE: a deferred transaction that reads and
    then writes cannot upgrade its lock in WAL mode and fails with `database is locked` whatever the
    busy timeout. Taking the write lock up front makes concurrent writers queue instead.
    """
    kwargs.setdefault("pool_timeout", POOL_TIMEOUT_SECONDS)
    if not url.startswith("sqlite"):
        kwargs.setdefault("pool_pre_ping", True)
        kwargs.setdefault("pool_size", 10)
        kwargs.setdefault("max_overflow", 20)
        return create_async_engine(url, **kwargs)

    # One connection: SQLite has one writer at a time anyway, and waiting for the pool is a FIFO queue in
    # the event loop, where waiting for SQLite's lock is a busy-wait that sleeps up to 100 ms between tries
    # (with many answers at once the file sits idle while every connection sleeps).
    kwargs.setdefault("pool_size", 1)
    kwargs.setdefault("max_overflow", 0)
    return _sqlite_engine(
        url, kwargs, pragmas=("journal_mode=WAL", "foreign_keys=ON", "synchronous=NORMAL"), begin="BEGIN IMMEDIATE"
    )


def pool_connections(engine: AsyncEngine) -> int:
    """The connections the engine's pool keeps open (its overflow aside): 1 on SQLite, 10 elsewhere."""
    return max(1, engine.pool.size()) if isinstance(engine.pool, QueuePool) else 1


def short_transactions(engine: AsyncEngine) -> ShortTransactions:
    """Turns for a burst of short transactions: as many at once as the pool keeps connections (its overflow left
    to everything else). SQLite's only connection goes back to the pool after each: other writers need it too."""
    return ShortTransactions(engine, pool_connections(engine), hand_over=engine.dialect.name != "sqlite")


def create_reader(url: str, **kwargs) -> AsyncEngine | None:
    """On SQLite, an engine for reads that must not queue behind the writers (looking up a workspace's token
    before acknowledging Slack): a few connections of their own that begin deferred and may only read, which
    WAL lets run beside a write. Elsewhere None: the main engine's pool serves reads as well."""
    if not url.startswith("sqlite"):
        return None
    kwargs.setdefault("pool_size", 4)
    kwargs.setdefault("max_overflow", 0)
    kwargs.setdefault("pool_timeout", POOL_TIMEOUT_SECONDS)
    return _sqlite_engine(url, kwargs, pragmas=("query_only=ON",), begin="BEGIN")


def _sqlite_engine(url: str, kwargs: dict, *, pragmas: tuple[str, ...], begin: str) -> AsyncEngine:
    engine = create_async_engine(url, **kwargs)

    @event.listens_for(engine.sync_engine, "connect")
    def _configure_sqlite(dbapi_connection, _record):
        # Let SQLAlchemy, not the driver, decide when transactions begin (see the "begin" hook).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in (f"busy_timeout={SQLITE_BUSY_TIMEOUT_MS}", *pragmas):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(connection):
        connection.exec_driver_sql(begin)

    return engine


async def database_missing(url: str) -> str | None:
    """Why the database `url` names does not exist (a SQLite file that is not there, a PostgreSQL database
    never created), or None when it does: for commands that must not create it by opening it."""
    parsed = make_url(url)
    if url.startswith("sqlite"):
        path = parsed.database
        if path and path != ":memory:" and not Path(path).exists():
            return f"{path} does not exist"
        return None
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect():
            return None
    except DBAPIError as error:
        if getattr(error.orig, "sqlstate", None) == INVALID_CATALOG_NAME or "does not exist" in str(error.orig):
            return f"database {parsed.database!r} does not exist"
        raise
    finally:
        await engine.dispose()


def describe_database(url: str) -> str:
    """The database `url` names, for a log line: its kind and where it is, never the password."""
    parsed = make_url(url)
    if url.startswith("sqlite"):
        return f"sqlite {parsed.database or ':memory:'}"
    return f"postgresql {parsed.host or 'localhost'}:{parsed.port or 5432}/{parsed.database or ''}"
