"""An exact "seen before?" map with bounded memory, for request ids and dedupe keys.

Planning asks of every request whether its id (and, with `dedupe`, its body) came earlier in the
set, and what the first one was. At 10,000,000 requests a plain dict of them would hold gigabytes,
so `FirstSeen` keeps up to `memory_keys` keys in a dict and, when that fills, spills them (sorted,
one chunk at a time) into a SQLite table in a temporary file. A Bloom filter (16 MiB by default)
in front of the table answers "certainly new" for almost every new key without touching the disk;
only the keys the filter cannot rule out are looked up in SQLite. The answer is exact either way:
the filter only decides whether the table is asked.

Memory is the dict (at most `memory_keys` entries) plus the filter, whatever the number of keys.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import struct
import tempfile
from pathlib import Path
from types import TracebackType

# A dict of a million short keys and values holds about 150-200 MB; two maps (ids, bodies)
# at 500,000 each keep planning's share of a 1 GiB budget modest.
DEFAULT_MEMORY_KEYS = 500_000
DEFAULT_BLOOM_BYTES = 16 * 1024 * 1024
# Seven probes: about 1% false positives at 13 M keys in 16 MiB (134 M bits), 0.1% at 7 M.
_PROBES = 7
_UNPACK = struct.Struct(f"<{_PROBES}I").unpack


class FirstSeen:
    """Map each key to the value it was first given; the first value wins, later ones are told.

    Use as a context manager (or call `close`): the spill file is deleted on close.
    """

    def __init__(
        self,
        *,
        memory_keys: int | None = None,
        bloom_bytes: int | None = None,
        directory: str | Path | None = None,
    ) -> None:
        """Keep up to `memory_keys` keys in memory; spill to a temp file in `directory` after.

        Args:
            memory_keys: Keys held in the dict before they are spilled to disk (at least 1;
                default `DEFAULT_MEMORY_KEYS`, read when the map is made).
            bloom_bytes: Size of the Bloom filter in front of the spilled keys (at least 1;
                default `DEFAULT_BLOOM_BYTES`).
            directory: Where the spill file goes (default: the system's temp directory).
        """
        memory_keys = DEFAULT_MEMORY_KEYS if memory_keys is None else memory_keys
        bloom_bytes = DEFAULT_BLOOM_BYTES if bloom_bytes is None else bloom_bytes
        if memory_keys < 1 or bloom_bytes < 1:
            raise ValueError("memory_keys and bloom_bytes must be at least 1")
        self._memory: dict[bytes, str] = {}
        self._memory_keys = memory_keys
        self._bloom_bytes = bloom_bytes
        self._bits = 8 * bloom_bytes
        self._bloom: bytearray | None = None
        self._directory = directory
        self._db: sqlite3.Connection | None = None
        self._path: str | None = None
        self._count = 0
        self.disk_lookups = 0
        """How many lookups asked the spill file (the filter could not rule the key out)."""

    def __len__(self) -> int:
        """Return how many distinct keys were seen."""
        return self._count

    @property
    def spilled(self) -> bool:
        """Tell whether keys were moved to disk (more than `memory_keys` were seen)."""
        return self._db is not None

    def setdefault(self, key: bytes | str, value: str) -> str:
        """Return the value `key` was first given; a new key is given `value` and returns it.

        `original is value` (or `==`) tells the caller the key is new.
        """
        raw = key.encode() if isinstance(key, str) else key
        found = self._memory.get(raw)
        if found is not None:
            return found
        if self._db is not None:
            probes = self._probes(raw)
            if self._maybe_on_disk(probes):
                self.disk_lookups += 1
                row = self._db.execute("SELECT value FROM seen WHERE key = ?", (raw,)).fetchone()
                if row is not None:
                    return str(row[0])
        self._memory[raw] = value
        self._count += 1
        if len(self._memory) >= self._memory_keys:
            self._spill()
        return value

    def _probes(self, raw: bytes) -> tuple[int, ...]:
        return _UNPACK(hashlib.blake2b(raw, digest_size=4 * _PROBES).digest())

    def _maybe_on_disk(self, probes: tuple[int, ...]) -> bool:
        bloom = self._bloom
        assert bloom is not None
        bits = self._bits
        for probe in probes:
            bit = probe % bits
            if not bloom[bit >> 3] & (1 << (bit & 7)):
                return False
        return True

    def _spill(self) -> None:
        """Move the in-memory keys to the SQLite table, in key order, and into the filter."""
        if self._db is None:
            handle, self._path = tempfile.mkstemp(
                prefix="batch-agent-seen-", suffix=".sqlite", dir=self._directory
            )
            os.close(handle)
            # A scratch file, deleted on close: no journal, no fsync.
            self._db = sqlite3.connect(self._path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=OFF")
            self._db.execute("PRAGMA synchronous=OFF")
            self._db.execute("PRAGMA cache_size=-65536")  # 64 MiB of page cache
            self._db.execute("CREATE TABLE seen (key BLOB PRIMARY KEY, value TEXT) WITHOUT ROWID")
            self._bloom = bytearray(self._bloom_bytes)
        bloom = self._bloom
        assert bloom is not None
        bits = self._bits
        chunk = sorted(self._memory.items())
        for raw, _ in chunk:
            for probe in self._probes(raw):
                bit = probe % bits
                bloom[bit >> 3] |= 1 << (bit & 7)
        # Sorted inserts walk the B-tree once per chunk instead of jumping around it.
        self._db.execute("BEGIN")
        self._db.executemany("INSERT INTO seen (key, value) VALUES (?, ?)", chunk)
        self._db.execute("COMMIT")
        self._memory = {}

    def close(self) -> None:
        """Forget every key and delete the spill file."""
        self._memory = {}
        self._bloom = None
        db, self._db = self._db, None
        if db is not None:
            db.close()
        if self._path is not None:
            Path(self._path).unlink(missing_ok=True)
            self._path = None

    def __enter__(self) -> FirstSeen:
        """Return the map itself."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Close the map (delete the spill file)."""
        self.close()

    def __del__(self) -> None:
        """Delete the spill file of a map nobody closed (an abandoned generator)."""
        try:
            self.close()
        except Exception:  # noqa: BLE001, S110 (interpreter shutdown: nothing left to tell)
            pass
