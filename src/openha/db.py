"""Database engine, sessions and schema upgrades (SQLite by default, PostgreSQL in production)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, Select, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from openha.settings import Settings

MIGRATIONS_DIR = Path(__file__).parent / "models" / "migrations"


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # Room for the controller's workers and loops, as on PostgreSQL below.
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=10,
            max_overflow=20,
        )
        _make_sqlite_serializable(engine)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def _make_sqlite_serializable(engine: Engine) -> None:
    # pysqlite's deferred BEGIN lets two writers both read, then one fails with
    # "database is locked" when upgrading to a write lock. BEGIN IMMEDIATE takes
    # the write lock up front so concurrent API and controller writes queue
    # instead of failing; WAL keeps readers outside transactions unblocked.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # type: ignore[no-untyped-def]
        # Reads (`reading`) take no write lock: they neither wait for writers nor block them.
        read_only = conn.get_execution_options().get(READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


READ_ONLY = "openha_read_only"


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False, autoflush=True)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


@contextmanager
def reading(factory: sessionmaker[Session]) -> Iterator[Connection]:
    """A read-only unit of work on a bare connection: what a loop that polls often uses.

    No ORM session (a fraction of the cost per query) and, on SQLite, no write lock.
    Nothing written through it is kept: it always rolls back.
    """
    engine: Engine = factory.kw["bind"]
    with engine.connect() as conn:
        conn.execution_options(**{READ_ONLY: True})
        try:
            yield conn
        finally:
            conn.rollback()


class ChangeWatch:
    """Whether anything was committed since the last look, as cheaply as the database tells.

    A loop that polls often asks it first and skips its queries when nothing changed.
    SQLite answers with `PRAGMA data_version` on a connection kept for it (a few
    microseconds, no transaction, no lock): the value moves whenever another
    connection commits. Other databases cannot tell this cheaply: the answer is
    always yes there, and the loop queries as before.

    Commits come every second on an idle fleet (heartbeats, liveness beats), so a loop
    told "changed" may first ask whether its queue holds anything at all
    (`finds_nothing`), on the same connection: a few microseconds again, against a few
    hundred for its full query through SQLAlchemy (what an idle controller did most).
    """

    def __init__(self, factory: sessionmaker[Session]) -> None:
        engine: Engine = factory.kw["bind"]
        self._conn = engine.raw_connection() if engine.dialect.name == "sqlite" else None
        self._dialect = engine.dialect
        self._version: object = None
        self._lock = threading.Lock()
        self._sql: dict[int, tuple[Select[Any], str]] = {}  # id -> (query, its SQL)

    def changed(self) -> bool:
        if self._conn is None:
            return True
        with self._lock:
            cursor = self._conn.cursor()
            try:
                cursor.execute("PRAGMA data_version")
                version = cursor.fetchone()[0]  # type: ignore[index]
            finally:
                cursor.close()
            changed, self._version = version != self._version, version
        return bool(changed)

    def finds_nothing(self, query: Select[Any]) -> bool:
        """True when `query` (no parameters: a queue's predicate, LIMIT 1) finds no row;
        False when it finds one or this database cannot be asked so cheaply."""
        if self._conn is None:
            return False
        known = self._sql.get(id(query))
        if known is None:
            compiled = query.compile(dialect=self._dialect, compile_kwargs={"literal_binds": True})
            known = self._sql[id(query)] = (query, str(compiled))
        sql = known[1]
        with self._lock:
            cursor = self._conn.cursor()
            try:
                cursor.execute(sql)
                return cursor.fetchone() is None
            finally:
                cursor.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str) -> None:
    """Bring the schema to the newest migration; safe to call on every start."""
    command.upgrade(alembic_config(url), "head")


def upgrade_schema(settings: Settings) -> None:
    """Create the state directory (a fresh install has none) and migrate the database."""
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    if settings.database_url.startswith("sqlite:///"):
        Path(settings.database_url.removeprefix("sqlite:///")).parent.mkdir(
            parents=True, exist_ok=True
        )
    upgrade(settings.database_url)
