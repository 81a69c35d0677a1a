"""Persistence: SQLite or PostgreSQL for the standalone CLI, async SQLite for `langgraph dev`.

`langgraph dev` keeps checkpoints in pickle files that are lost on a hard kill; `langgraph.json`
names `server_checkpointer` instead, so a served thread's job IDs survive a crash. The graph module
itself compiles without a checkpointer (the server refuses graphs that bring their own).

The CLI opens a `Persistence` with `open_persistence`: a checkpointer, a store and a per-thread
lock that any number of worker processes can share.

- SQLite (a file path, the default `.batch-agent/checkpoints.sqlite`): `SqliteSaver` and
  `SqliteStore` on the same file (WAL); the thread lock is an exclusive `flock` on
  `<db>.locks/<sha256(thread)[:32]>.lock`. Workers must share the file system. A write waits
  `BATCH_AGENT_DB_TIMEOUT` seconds (default 30) for another process's lock before failing with
  "database is locked" (`agent.storage_errors` words it for the CLI).
- PostgreSQL (`postgresql://...` or `postgres://...`): `PostgresSaver` and `PostgresStore`; the
  thread lock is a session-level `pg_advisory_lock` on a dedicated connection.

Both locks are released when the holder exits or dies, so a killed worker never wedges a thread.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.secrets import redact_url, scrub_url
from agent.storage_errors import db_timeout

# LangGraph's savers and stores are imported where they are opened: a command that only names
# the database (`resolve_db`, `redact_db_url`) must not pay for LangGraph and numpy.
if TYPE_CHECKING:
    from langgraph.checkpoint.base import BaseCheckpointSaver
    from langgraph.checkpoint.sqlite import SqliteSaver
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
    from langgraph.graph.state import CompiledStateGraph
    from langgraph.store.base import BaseStore
    from langgraph.store.sqlite.aio import AsyncSqliteStore

logger = logging.getLogger(__name__)

DEFAULT_DB = Path(".batch-agent") / "checkpoints.sqlite"
DEFAULT_SERVER_DB = Path(".batch-agent") / "server-checkpoints.sqlite"
POSTGRES_SCHEMES = ("postgresql", "postgres")
# Two-int advisory keys live apart from the one-bigint keys used for threads.
_SETUP_LOCK_KEYS = (0x62617463, 0x73657475)  # "batc", "setu"


class PersistenceError(Exception):
    """The checkpoint database cannot be opened (the message never holds a password)."""


@dataclass(frozen=True)
class Persistence:
    """What the CLI needs from a database: checkpoints, a store and a per-thread lock.

    Attributes:
        checkpointer: Saves the graph's checkpoints.
        store: The LangGraph store on the same database.
        thread_lock: `thread_lock(thread_id)` is a context manager holding an exclusive,
            cross-process lock on the thread; it blocks until the lock is free.
        location: The database, for messages (a URL has its password redacted).
    """

    checkpointer: BaseCheckpointSaver[Any]
    store: BaseStore
    thread_lock: Callable[[str], AbstractContextManager[None]]
    location: str


# The persistence of the running command (set by `open_batch_graph`).
ACTIVE_PERSISTENCE: ContextVar[Persistence | None] = ContextVar(
    "batch_agent_persistence", default=None
)


def is_postgres_url(db: str | Path | None) -> bool:
    """Return whether `db` names a PostgreSQL database (`postgresql://` or `postgres://`)."""
    if db is None:
        return False
    scheme, sep, _ = str(db).partition(":")
    return bool(sep) and scheme.lower() in POSTGRES_SCHEMES


def resolve_db(db: str | Path | None = None) -> str | Path:
    """Return the CLI's database: `--db`, else `BATCH_AGENT_DB`, else the SQLite default.

    Returns:
        A PostgreSQL URL as a string, or the path of a SQLite file.
    """
    raw: str | Path = db or os.environ.get("BATCH_AGENT_DB") or DEFAULT_DB
    if not is_postgres_url(raw):
        return Path(raw)
    url = str(raw)
    if isinstance(raw, Path):
        # A URL that went through `Path` lost a slash ("postgresql:/user@host/db"): restore it.
        # A host-less URL ("postgresql:///db") cannot be told apart; pass it in BATCH_AGENT_DB.
        scheme, _, rest = url.partition(":")
        url = f"{scheme}://{rest.lstrip('/')}"
    return url


def redact_db_url(db: str | Path) -> str:
    """Return `db` fit for messages: a URL's password (in user info or query) becomes `***`."""
    text = str(db)
    return redact_url(text) if is_postgres_url(text) else text


@contextmanager
def open_persistence(db: str | Path | None = None) -> Iterator[Persistence]:
    """Open the CLI's checkpointer, store and thread lock, creating tables if needed.

    Args:
        db: A SQLite file or a `postgresql://` URL; None means `BATCH_AGENT_DB` or the default.

    Raises:
        PersistenceError: PostgreSQL cannot be reached (the message has no password).
    """
    resolved = resolve_db(db)
    if isinstance(resolved, Path):
        with _open_sqlite(resolved) as persistence:
            yield persistence
    else:
        with _open_postgres(resolved) as persistence:
            yield persistence


@contextmanager
def open_batch_graph(db: str | Path | None) -> Iterator[CompiledStateGraph[Any, Any, Any, Any]]:
    """Compile the batch graph on `db` (a SQLite file or a `postgresql://` URL; None: the default).

    Inside the block the database's per-thread lock is the one `active_thread_lock` takes, so
    every worker on the same database runs a thread one at a time.
    """
    from agent.graph import build_graph

    with open_persistence(db) as persistence:
        graph = build_graph().compile(
            checkpointer=persistence.checkpointer, store=persistence.store, name="batch"
        )
        token = ACTIVE_PERSISTENCE.set(persistence)
        try:
            yield graph
        finally:
            ACTIVE_PERSISTENCE.reset(token)


@contextmanager
def active_thread_lock(thread_id: str) -> Iterator[None]:
    """Hold the active persistence's lock on `thread_id` (no lock when none is active)."""
    persistence = ACTIVE_PERSISTENCE.get()
    if persistence is None:
        yield
        return
    with persistence.thread_lock(thread_id):
        yield


# --------------------------------------------------------------------------- SQLite


@contextmanager
def sqlite_checkpointer(path: str | Path, *, replayable: bool = False) -> Iterator[SqliteSaver]:
    """Open (creating if needed) a SQLite checkpointer for standalone use.

    Args:
        path: Database file; its parent directory is created.
        replayable: The threads checkpointed here lose nothing when their latest checkpoints
            roll back (a mapped item re-runs its nodes from an earlier stop, and its calls find
            their answers in the store). Such a connection skips the disk flush of every commit
            (`synchronous=NORMAL`: still durable when the process is killed, not on power loss),
            about 4 ms per checkpoint on this machine's disk.
    """
    from langgraph.checkpoint.sqlite import SqliteSaver

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # check_same_thread=False: LangGraph may run sync nodes on worker threads.
    conn = sqlite3.connect(str(path), check_same_thread=False, timeout=db_timeout())
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        if replayable:
            conn.execute("PRAGMA synchronous=NORMAL")
        saver = SqliteSaver(conn)
        saver.setup()
        yield saver
    finally:
        conn.close()


def sqlite_lock_dir(path: str | Path) -> Path:
    """Return the directory of a SQLite database's lock files (`<db>.locks`)."""
    return Path(f"{path}.locks")


def _lock_name(thread_id: str) -> str:
    return hashlib.sha256(thread_id.encode("utf-8")).hexdigest()[:32] + ".lock"


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive `flock` on `path` (created if needed); blocks until it is free.

    The kernel drops the lock when the descriptor closes, including when the process dies.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextmanager
def _open_sqlite(path: Path) -> Iterator[Persistence]:
    from langgraph.store.sqlite import SqliteStore

    path.parent.mkdir(parents=True, exist_ok=True)
    locks = sqlite_lock_dir(path)
    locks.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        # Two processes running the store migrations at once can both insert the same version.
        with file_lock(locks / "setup.lock"):
            saver = stack.enter_context(sqlite_checkpointer(path))
            # A connection of its own: SqliteStore runs explicit BEGIN/COMMIT in autocommit mode.
            conn = sqlite3.connect(
                str(path), check_same_thread=False, isolation_level=None, timeout=db_timeout()
            )
            stack.callback(conn.close)
            store = SqliteStore(conn)
            store.setup()

        def thread_lock(thread_id: str) -> AbstractContextManager[None]:
            return file_lock(locks / _lock_name(thread_id))

        yield Persistence(saver, store, thread_lock, str(path))


# --------------------------------------------------------------------------- PostgreSQL


def _fetch_bool(conn: Any, query: str, params: tuple[Any, ...]) -> bool:
    row = conn.execute(query, params).fetchone()
    return bool(row and row[0])


@contextmanager
def _open_postgres(url: str) -> Iterator[Persistence]:
    import psycopg
    from langgraph.checkpoint.postgres import PostgresSaver
    from langgraph.store.postgres import PostgresStore
    from psycopg.rows import dict_row

    where = redact_db_url(url)
    extra: dict[str, Any] = {} if "connect_timeout" in url else {"connect_timeout": 15}

    def connect(**kwargs: Any) -> psycopg.Connection[Any]:
        try:
            return psycopg.Connection.connect(url, autocommit=True, **extra, **kwargs)
        except psycopg.Error as exc:
            detail = " ".join(scrub_url(str(exc), url).split())
            raise PersistenceError(f"cannot open {where}: {detail}") from None

    with ExitStack() as stack:
        # The saver and the store each get a connection (each serialises its own with a lock);
        # the advisory locks get a third, so waiting for a thread never blocks a checkpoint.
        lock_conn = stack.enter_context(connect())
        saver_conn = stack.enter_context(connect(prepare_threshold=0, row_factory=dict_row))
        store_conn = stack.enter_context(connect(prepare_threshold=0, row_factory=dict_row))
        saver = PostgresSaver(saver_conn)
        store = PostgresStore(store_conn)
        # Concurrent migrations would race on `CREATE TABLE IF NOT EXISTS` and the version rows,
        # so setup runs under a lock. Not a blocking `pg_advisory_lock`: a session waiting in one
        # holds a snapshot, and the migrations' `CREATE INDEX CONCURRENTLY` waits for every such
        # session to end, while the waiter waits for the migrations: a deadlock PostgreSQL
        # cannot see (it goes through this process). A polled try-lock holds no snapshot.
        while not _fetch_bool(
            lock_conn, "SELECT pg_try_advisory_lock(%s::int4, %s::int4)", _SETUP_LOCK_KEYS
        ):
            time.sleep(0.05)
        try:
            saver.setup()
            store.setup()
        finally:
            lock_conn.execute("SELECT pg_advisory_unlock(%s::int4, %s::int4)", _SETUP_LOCK_KEYS)

        @contextmanager
        def thread_lock(thread_id: str) -> Iterator[None]:
            lock_conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (thread_id,))
            try:
                yield
            finally:
                try:
                    lock_conn.execute(
                        "SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (thread_id,)
                    )
                except psycopg.Error:
                    # The session is gone, and PostgreSQL released its locks with it.
                    logger.warning("could not unlock thread %s on %s", thread_id, where)

        yield Persistence(saver, store, thread_lock, where)


# --------------------------------------------------------------------------- langgraph dev


@asynccontextmanager
async def server_checkpointer() -> AsyncIterator[AsyncSqliteSaver]:
    """Yield the durable checkpointer named in `langgraph.json` (`BATCH_AGENT_SERVER_DB`)."""
    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

    path = Path(os.environ.get("BATCH_AGENT_SERVER_DB") or DEFAULT_SERVER_DB)
    path.parent.mkdir(parents=True, exist_ok=True)
    async with AsyncSqliteSaver.from_conn_string(str(path)) as saver:
        await saver.setup()
        yield saver


@asynccontextmanager
async def server_store() -> AsyncIterator[AsyncSqliteStore]:
    """Yield the durable store named in `langgraph.json` (bulk ids and result pages).

    The dev server's default store is a pickle file flushed every few seconds, so a hard kill
    could lose a batch's request ids; this store lives in the same SQLite file as the server's
    checkpoints (`BATCH_AGENT_SERVER_DB`).
    """
    from langgraph.store.sqlite.aio import AsyncSqliteStore

    path = Path(os.environ.get("BATCH_AGENT_SERVER_DB") or DEFAULT_SERVER_DB)
    path.parent.mkdir(parents=True, exist_ok=True)
    async with AsyncSqliteStore.from_conn_string(str(path)) as store:
        await store.setup()
        yield store
