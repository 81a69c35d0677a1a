"""An append-only spool of small JSON values (request ids, duplicate pairs) in a local file.

A plan of 10,000,000 requests would hold its ids, each job's ids and the duplicates in lists of
gigabytes; the plan writes them here instead, a JSON array of up to `CHUNK` values per line (one
encode per chunk, not per id: a 1,000,000-request plan spools 2,000,000 values), and the store
reads them back once (`agent.bulk.ThreadData.put_ids`). A spool made without a path only counts
(`batch-agent plan`, dry runs: nothing is kept).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import orjson

# Values per line of the file: memory holds at most one chunk.
CHUNK = 1000


class IdSpool:
    """Values appended to a file (or only counted), read back in the order they were added."""

    def __init__(self, path: Path | None) -> None:
        """Spool to `path` (created now, truncated), or only count when it is None."""
        self.path = path
        self.count = 0
        self._handle: IO[bytes] | None = path.open("wb") if path is not None else None
        self._chunk: list[Any] = []

    def add(self, value: Any) -> None:
        """Append one value (a string, or a list of strings)."""
        self.count += 1
        if self._handle is not None:
            self._chunk.append(value)
            if len(self._chunk) >= CHUNK:
                self._write_chunk(self._handle)

    def _write_chunk(self, handle: IO[bytes]) -> None:
        handle.write(orjson.dumps(self._chunk) + b"\n")
        self._chunk = []

    def close(self) -> None:
        """Flush and close the file (a full disk may fail the last write here)."""
        handle, self._handle = self._handle, None
        if handle is not None:
            try:
                if self._chunk:
                    self._write_chunk(handle)
            finally:
                handle.close()

    def __iter__(self) -> Iterator[Any]:
        """Yield the values in the order they were added.

        Raises:
            ValueError: The spool only counted (made without a path), or was discarded.
        """
        if self.path is None:
            raise ValueError("this plan kept no ids (planned with spool=False): only counts")
        self.close()
        with self.path.open("rb") as fh:
            for raw in fh:
                yield from orjson.loads(raw)

    def discard(self) -> None:
        """Close and delete the file; the count stays."""
        close_and_delete(self.close, self.path)
        self.path = None


def close_and_delete(close: Callable[[], None], path: Path | None) -> None:
    """Close a spool file's handle and delete the file, even when the last flush fails."""
    try:
        close()
    except OSError:  # a full disk fails the last flush; the file goes all the same
        pass
    if path is not None:
        path.unlink(missing_ok=True)
