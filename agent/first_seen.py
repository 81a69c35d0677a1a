"""An exact "seen before?" map with bounded memory, for request ids and dedupe keys.

Planning asks of every request whether its id (and, with `dedupe`, its body) came earlier in the
set, and what the first one was. At 10,000,000 requests a plain dict of them would hold gigabytes,
so `FirstSeen` keeps up to `memory_keys` keys in a dict and, when that fills, spills them (sorted,
one chunk at a time) into a SQLite table in a temporary file. A Bloom filter (16 MiB by default)
in front of the table answers "certainly new" for almost every new key without touching the disk;
only the keys the filter cannot rule out are looked up in SQLite. The answer is exact either way:
the filter only decides whether the table is asked.

Memory is the dict (at most `memory_keys` entries), the filter and SQLite's 16 MiB page cache,
whatever the number of keys. The spill file goes to `directory` (default: `TMPDIR`): at
10,000,000 keys, a few hundred MB.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from pathlib import Path
from types import TracebackType

# A dict of a million short keys and values holds about 150-200 MB; two maps (ids, bodies)
# at 500,000 each keep planning's share of a 1 GiB budget modest.
DEFAULT_MEMORY_KEYS = 500_000
DEFAULT_BLOOM_BYTES = 16 * 1024 * 1024
# Four probes, from Python's own (per-process salted) 64-bit hash by double hashing: the filter
# lives and dies with the process, so that hash is enough, and it is cached on `str` keys. About
# 0.5% false positives at 10 M keys in 16 MiB (134 M bits); each costs one SQLite lookup.
_PROBES = 4


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
        self._memory: dict[bytes | str, str] = {}
        self._memory_keys = memory_keys
        self._bloom_bytes = bloom_bytes
        # A power of two of bits, so a probe is a mask, not a division.
        self._mask = (1 << (8 * bloom_bytes).bit_length() - 1) - 1
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

        A caller keeps to one key type (`str` and `bytes` keys are different keys); a value
        equal to `value` tells the caller the key is new (values must be unique per key).
        """
        found = self._memory.get(key)
        if found is not None:
            return found
        if self._db is not None and self._maybe_on_disk(key):
            self.disk_lookups += 1
            row = self._db.execute("SELECT value FROM seen WHERE key = ?", (key,)).fetchone()
            if row is not None:
                return str(row[0])
        if len(self._memory) >= self._memory_keys:
            # Only when a new key needs the room: a set of exactly `memory_keys` never spills.
            self._spill()
        self._memory[key] = value
        self._count += 1
        return value

    def _maybe_on_disk(self, key: bytes | str) -> bool:
        """Tell whether the filter holds `key`'s bits: `_PROBES` probes by double hashing."""
        bloom = self._bloom
        assert bloom is not None
        h = hash(key)
        # The same probes as `_spill` sets, one at a time: most new keys stop at the first.
        bit, step, mask = h & 0xFFFFFFFF, (h >> 32) | 1, self._mask
        for _ in range(_PROBES):
            probe = bit & mask
            if not bloom[probe >> 3] >> (probe & 7) & 1:
                return False
            bit += step
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
            # 16 MiB of page cache: the filter keeps lookups rare; inserts are sorted runs.
            self._db.execute("PRAGMA cache_size=-16384")
            self._db.execute("CREATE TABLE seen (key BLOB PRIMARY KEY, value TEXT) WITHOUT ROWID")
            self._bloom = bytearray(self._bloom_bytes)
        import numpy as np  # only a set past `memory_keys` pays for it

        bloom = self._bloom
        assert bloom is not None
        chunk = sorted(self._memory.items())
        # The filter's bits of every key at once (a Python loop over 500,000 keys takes seconds).
        hashes = np.fromiter((hash(key) for key, _ in chunk), dtype=np.int64, count=len(chunk))
        first, step = hashes & 0xFFFFFFFF, (hashes >> 32) | 1
        bits = np.concatenate([(first + n * step) & self._mask for n in range(_PROBES)])
        view = np.frombuffer(bloom, dtype=np.uint8)
        np.bitwise_or.at(view, bits >> 3, (1 << (bits & 7)).astype(np.uint8))
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
