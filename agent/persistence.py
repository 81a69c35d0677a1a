"""Checkpointers: SQLite for the standalone CLI, async SQLite for `langgraph dev`.

`langgraph dev` keeps checkpoints in pickle files that are lost on a hard kill; `langgraph.json`
names `server_checkpointer` instead, so a served thread's job IDs survive a crash. The graph module
itself compiles without a checkpointer (the server refuses graphs that bring their own).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

DEFAULT_DB = Path(".batch-agent") / "checkpoints.sqlite"
DEFAULT_SERVER_DB = Path(".batch-agent") / "server-checkpoints.sqlite"


def cli_db_path(db: str | Path | None = None) -> Path:
    """Return the CLI's checkpoint database: `--db`, else `BATCH_AGENT_DB`, else the default."""
    return Path(db or os.environ.get("BATCH_AGENT_DB") or DEFAULT_DB)


@contextmanager
def sqlite_checkpointer(path: str | Path) -> Iterator[SqliteSaver]:
    """Open (creating if needed) a SQLite checkpointer for standalone use.

    Args:
        path: Database file; its parent directory is created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # check_same_thread=False: LangGraph may run sync nodes on worker threads.
    conn = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        saver = SqliteSaver(conn)
        saver.setup()
        yield saver
    finally:
        conn.close()


@asynccontextmanager
async def server_checkpointer() -> AsyncIterator[AsyncSqliteSaver]:
    """Yield the durable checkpointer named in `langgraph.json` (`BATCH_AGENT_SERVER_DB`)."""
    path = Path(os.environ.get("BATCH_AGENT_SERVER_DB") or DEFAULT_SERVER_DB)
    path.parent.mkdir(parents=True, exist_ok=True)
    async with AsyncSqliteSaver.from_conn_string(str(path)) as saver:
        await saver.setup()
        yield saver
