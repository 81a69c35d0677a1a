"""Say where and what next when the local side refuses: a locked or full database, a read-only spool.

SQLite and the operating system report these as `database is locked` or `[Errno 28] No space left
on device`, often without naming the file. `storage_problem` turns such an error into a sentence
naming the path and a next step; the CLI adds the thread and the command that resumes it.
`StorageError` is what code that knows the path (the spool) raises instead of a bare `OSError`.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

# How long a SQLite connection waits for another process's write lock (seconds).
DEFAULT_DB_TIMEOUT = 30.0

_OS_REASONS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EFBIG: "the file size limit is reached",
    errno.EROFS: "it is on a read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "the operation is not permitted (a read-only or immutable file?)",
}
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
# Below this much free space, an I/O error on the database is taken for a full disk.
_NEARLY_FULL_BYTES = 1 << 20


def db_timeout() -> float:
    """Return how long to wait for a locked SQLite database (`BATCH_AGENT_DB_TIMEOUT`, seconds)."""
    raw = os.environ.get("BATCH_AGENT_DB_TIMEOUT", "").strip()
    try:
        return max(float(raw), 0.0) if raw else DEFAULT_DB_TIMEOUT
    except ValueError:
        return DEFAULT_DB_TIMEOUT


class StorageError(Exception):
    """A local file or directory the batch needs cannot be written; the message names it."""

    def __init__(self, what: str, path: str | Path, reason: str, remedy: str) -> None:
        """Build the error.

        Args:
            what: What the path is, e.g. "the spool directory".
            path: The file or directory.
            reason: Why it cannot be written, e.g. "the disk is full".
            remedy: What to do before resuming, e.g. "free some space".
        """
        super().__init__(f"cannot write {what} {path}: {reason}")
        self.path = str(path)
        self.remedy = remedy

    @classmethod
    def spool(cls, exc: OSError, directory: Path) -> StorageError:
        """Describe a failed write of a built input file in the spool directory."""
        reason, remedy = _os_reason(exc)
        if remedy != "free some space":
            remedy = "make it writable or set BATCH_AGENT_SPOOL_DIR to a writable directory"
        return cls("the spool directory (BATCH_AGENT_SPOOL_DIR)", directory, reason, remedy)


@dataclass(frozen=True)
class StorageProblem:
    """A local storage failure in words: what happened (naming the path) and what to do."""

    problem: str
    remedy: str


def storage_problem(exc: BaseException, database: str | Path) -> StorageProblem | None:
    """Describe `exc` if it is a local storage failure, else return None.

    Args:
        exc: The exception that ended the command.
        database: The checkpoint database in use, named in SQLite's errors (which do not).
    """
    if isinstance(exc, StorageError):
        return StorageProblem(str(exc), exc.remedy)
    if isinstance(exc, sqlite3.Error):
        return _sqlite_problem(exc, database)
    if isinstance(exc, OSError) and exc.errno in _OS_REASONS:
        reason, remedy = _os_reason(exc)
        where = f" {exc.filename}" if exc.filename else ""
        return StorageProblem(f"cannot write{where}: {reason}", remedy)
    return None


def _sqlite_problem(exc: sqlite3.Error, database: str | Path) -> StorageProblem | None:
    # `sqlite_errorname` (Python 3.11+) is SQLite's own code; the text is the fallback.
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc).lower()
    db = f"the checkpoint database {database}"
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "database is locked" in text:
        return StorageProblem(
            f"{db} is locked by another process (waited {db_timeout():g} s; "
            "BATCH_AGENT_DB_TIMEOUT sets how long)",
            "wait for the other process to finish",
        )
    if name.startswith("SQLITE_FULL") or "disk is full" in text:
        return StorageProblem(f"the disk holding {db} is full", "free some space")
    if name.startswith("SQLITE_READONLY") or "readonly database" in text:
        return StorageProblem(
            f"{db} is read-only", "make it writable or name another with --db / BATCH_AGENT_DB"
        )
    if name.startswith("SQLITE_CANTOPEN") or "unable to open" in text:
        return StorageProblem(
            f"cannot open {db}", "check that its directory exists and is writable"
        )
    if name.startswith("SQLITE_IOERR") or "disk i/o error" in text:
        # A full disk often shows as an I/O error (the WAL index cannot grow: IOERR_SHMSIZE).
        free = _free_bytes(Path(database).parent)
        if free is not None and free < _NEARLY_FULL_BYTES:
            return StorageProblem(
                f"the disk holding {db} is full ({free:,} bytes free; SQLite: disk I/O error)",
                "free some space",
            )
        return StorageProblem(f"cannot write {db} (disk I/O error)", "check the disk")
    return None


def _free_bytes(directory: Path) -> int | None:
    try:
        stats = os.statvfs(directory)
    except (OSError, AttributeError):  # no such directory; no statvfs on this platform
        return None
    return stats.f_bavail * stats.f_frsize


def _os_reason(exc: OSError) -> tuple[str, str]:
    reason = _OS_REASONS.get(exc.errno or 0) or exc.strerror or str(exc)
    remedy = "free some space" if exc.errno in _FULL else "make it writable"
    return reason, remedy
