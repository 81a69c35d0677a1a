"""Read threads straight from the CLI's SQLite file, without importing LangGraph or LangChain.

`batch-agent status`, `threads` and `results` only read: a thread's last checkpoint and its
result pages. Compiling the graph for that imports LangGraph, LangChain, the provider SDKs and
numpy (through the SQLite store's vector extension), ~2 s before a word is printed. The tables
`SqliteSaver` and `SqliteStore` (langgraph-checkpoint-sqlite) write are plain SQLite, and a
checkpoint is msgpack: read here with `sqlite3` and `ormsgpack`, it takes a few milliseconds.

What this reader does not know, it leaves to LangGraph: every function returns None (the caller
then opens the graph) for a PostgreSQL URL, a file without those tables, a checkpoint that is
not msgpack, or one with pending writes (a run stopped mid-step: `get_state` applies them). A
msgpack extension type (a LangChain message, a datetime in state) is decoded by LangGraph's own
serializer, imported only when a wanted key holds one (`keys`: `status` never wants a small
batch's `results`, which are LangChain messages). A SQLite error (a busy or unreadable file)
also falls back, so the caller reports it as it always has. The values are those of
`graph.get_state(...).values`: the checkpoint's channel values without LangGraph's internal
channels (`__start__`, `branch:...`).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import ormsgpack

# The LangGraph store's namespace separator (SqliteStore joins a namespace's labels with it).
_NS_SEP = "."


@dataclass(frozen=True)
class StoredThread:
    """A thread's state as its last checkpoint holds it.

    Attributes:
        thread_id: The thread.
        values: The state values, as `graph.get_state(config).values` returns them.
        created_at: When that checkpoint was written (ISO 8601, as `StateSnapshot.created_at`).
    """

    thread_id: str
    values: dict[str, Any]
    created_at: str


def _connect(db: str | Path) -> sqlite3.Connection | None:
    """Open `db` read-only, or return None when this reader cannot serve it."""
    if not isinstance(db, Path) or not db.is_file():
        return None
    try:
        conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    except sqlite3.Error:
        return None
    if not {"checkpoints", "writes", "store"} <= tables:
        conn.close()
        return None
    return conn


def read_thread(
    db: str | Path, thread_id: str, keys: frozenset[str] | None = None
) -> dict[str, Any] | None:
    """Return a thread's state values as last checkpointed (`{}`: no such thread); None: fall back.

    Args:
        db: The resolved database (`agent.persistence.resolve_db`).
        thread_id: The thread.
        keys: Only these state keys (None: all).
    """
    conn = _connect(db)
    if conn is None:
        return None
    try:
        found = _thread(conn, thread_id, keys)
    except sqlite3.Error:
        return None
    finally:
        conn.close()
    if found is _NO_CHECKPOINT:
        return {}  # as `get_state` has it for a thread never run
    return found.values if isinstance(found, StoredThread) else None


def read_threads(db: str | Path, keys: frozenset[str] | None = None) -> list[StoredThread] | None:
    """Return every thread the store has data for, each with its last checkpointed state.

    Like `agent.bulk.stored_thread_ids`, the threads are found in the store (one query), not by
    scanning the checkpoints. Threads without a checkpoint are left out. None: fall back.
    `keys`: only these state keys (None: all).
    """
    conn = _connect(db)
    if conn is None:
        return None
    try:
        from agent.bulk import ROOT

        prefix = ROOT + _NS_SEP
        ids = {
            str(row[0]).split(_NS_SEP)[1]
            for row in conn.execute(
                "SELECT DISTINCT prefix FROM store WHERE substr(prefix, 1, ?) = ?",
                (len(prefix), prefix),
            )
        }
        found = []
        for thread_id in sorted(ids):
            thread = _thread(conn, thread_id, keys)
            if thread is None:
                return None
            if isinstance(thread, StoredThread):
                found.append(thread)
        return found
    except sqlite3.Error:
        return None
    finally:
        conn.close()


# `_thread`: the thread has no checkpoint at all.
_NO_CHECKPOINT = object()


def _thread(
    conn: sqlite3.Connection, thread_id: str, keys: frozenset[str] | None
) -> StoredThread | object | None:
    """Read the thread's last checkpoint: a `StoredThread`, `_NO_CHECKPOINT`, or None to fall back."""
    row = conn.execute(
        "SELECT checkpoint_id, type, checkpoint FROM checkpoints "
        "WHERE thread_id = ? AND checkpoint_ns = '' ORDER BY checkpoint_id DESC LIMIT 1",
        (thread_id,),
    ).fetchone()
    if row is None:
        return _NO_CHECKPOINT
    checkpoint_id, kind, blob = row
    pending = conn.execute(
        "SELECT 1 FROM writes WHERE thread_id = ? AND checkpoint_ns = '' AND checkpoint_id = ? "
        "LIMIT 1",
        (thread_id, checkpoint_id),
    ).fetchone()
    if pending is not None or kind != "msgpack":
        return None
    values, created_at = _channel_values(blob, keys)
    return StoredThread(thread_id, values, created_at)


class _Deferred:
    """A msgpack extension value (a LangChain message, a datetime) left undecoded for now."""


_DEFERRED = _Deferred()


def _channel_values(blob: bytes, keys: frozenset[str] | None) -> tuple[dict[str, Any], str]:
    """Decode a msgpack checkpoint's channel values (only `keys`, if given) and its time.

    Extension types need LangGraph's serializer (and the classes they name, e.g. LangChain's
    messages: a small batch keeps its results in state). They are decoded only if a wanted
    value holds one; `status` never wants the results.
    """
    checkpoint = ormsgpack.unpackb(
        blob, ext_hook=lambda code, data: _DEFERRED, option=ormsgpack.OPT_NON_STR_KEYS
    )
    values = _state_values(checkpoint, keys)
    if _holds_deferred(values):
        from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

        checkpoint = JsonPlusSerializer().loads_typed(("msgpack", blob))
        values = _state_values(checkpoint, keys)
    return values, str(checkpoint.get("ts"))


def _state_values(checkpoint: dict[str, Any], keys: frozenset[str] | None) -> dict[str, Any]:
    return {
        name: value
        for name, value in (checkpoint.get("channel_values") or {}).items()
        # LangGraph's own channels (`__start__`, `branch:to:submit`, ...) are not state keys.
        if not name.startswith("__") and ":" not in name and (keys is None or name in keys)
    }


def _holds_deferred(value: Any) -> bool:
    if value is _DEFERRED:
        return True
    if isinstance(value, dict):
        return any(_holds_deferred(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_holds_deferred(v) for v in value)
    return False


class StoreReader:
    """Items of the LangGraph store in a SQLite file, read-only (what `ThreadData` reads)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        """Read through `conn` (read-only)."""
        self.conn = conn

    @classmethod
    def open(cls, db: str | Path) -> StoreReader | None:
        """Open the store of `db`, or return None when this reader cannot serve it."""
        conn = _connect(db)
        return None if conn is None else cls(conn)

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    def get(self, namespace: tuple[str, ...], key: str) -> _Item | None:
        """Return the item at `namespace` / `key` (None if absent), as `BaseStore.get` does."""
        row = self.conn.execute(
            "SELECT value FROM store WHERE prefix = ? AND key = ?",
            (_NS_SEP.join(namespace), key),
        ).fetchone()
        return None if row is None else _Item(orjson.loads(row[0]))


@dataclass(frozen=True)
class _Item:
    value: dict[str, Any]
