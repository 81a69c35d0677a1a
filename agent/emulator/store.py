"""On-disk state of the emulator: files, jobs, atomic writes and the cross-process lock.

Every file and job lives under one state directory so that several processes
(a CLI run, a `langgraph dev` server, a test) that point at the same directory
see the same world. The layout is::

    <dir>/.lock                          fcntl lock for read-modify-write mutations
    <dir>/<provider>/files/<id>.json     file metadata (the API object plus private keys)
    <dir>/<provider>/files/<id>.data     file bytes
    <dir>/<provider>/batches/<id>.json   job record (private keys start with "_")

where `<provider>` is `openai`, `mistral`, `anthropic` or `gemini`. Every write goes to a temporary file
in the same directory first and is then moved into place with `os.replace`, so a
reader never sees a half-written JSON document.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Literal

Provider = Literal["openai", "mistral", "anthropic", "gemini"]

STATE_DIR_ENV = "BATCH_AGENT_EMULATOR_DIR"
DELAY_ENV = "BATCH_AGENT_EMULATOR_DELAY"
DEFAULT_STATE_DIR = ".batch-agent/emulator"
DEFAULT_DELAY = 2.0


def default_state_dir() -> Path:
    """Return the state directory to use when none is given.

    Returns:
        The value of `BATCH_AGENT_EMULATOR_DIR` if set and non-empty, else
        `.batch-agent/emulator` relative to the current working directory.
    """
    return Path(os.environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR)


def current_delay() -> float:
    """Return the lifecycle length in seconds for a job created now.

    The value is read from `BATCH_AGENT_EMULATOR_DELAY` at creation time and stored
    on the job, so every process that later reads the job computes the same status.

    Returns:
        The delay in seconds (never negative); 2.0 when unset or unparsable.
    """
    raw = os.environ.get(DELAY_ENV)
    if raw is None or raw.strip() == "":
        return DEFAULT_DELAY
    try:
        return max(0.0, float(raw))
    except ValueError:
        return DEFAULT_DELAY


class Store:
    """Persistent storage of files and jobs for every emulated protocol.

    Args:
        root: The state directory. It is created on first use.
    """

    def __init__(self, root: str | Path | None = None) -> None:
        """Remember the root; directories are created lazily on first write."""
        self.root = Path(root) if root is not None else default_state_dir()

    # -- paths -----------------------------------------------------------------

    def _dir(self, provider: Provider, kind: str) -> Path:
        path = self.root / provider / kind
        path.mkdir(parents=True, exist_ok=True)
        return path

    def file_meta_path(self, provider: Provider, file_id: str) -> Path:
        """Return the metadata path of a file."""
        return self._dir(provider, "files") / f"{_safe(file_id)}.json"

    def file_data_path(self, provider: Provider, file_id: str) -> Path:
        """Return the path holding a file's bytes."""
        return self._dir(provider, "files") / f"{_safe(file_id)}.data"

    def job_path(self, provider: Provider, job_id: str) -> Path:
        """Return the path of a job record."""
        return self._dir(provider, "batches") / f"{_safe(job_id)}.json"

    # -- locking ---------------------------------------------------------------

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the exclusive cross-process lock on `<dir>/.lock`.

        Each call opens its own file description, so the lock also serialises
        threads of one process (flock locks of separate descriptions conflict).

        Yields:
            Nothing; the lock is held for the duration of the `with` block.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    # -- JSON documents --------------------------------------------------------

    def write_json(self, path: Path, obj: Any) -> None:
        """Write `obj` as JSON to `path` atomically."""
        self.write_chunks(path, [json.dumps(obj, separators=(",", ":")).encode("utf-8")])

    @staticmethod
    def read_json(path: Path) -> dict[str, Any] | None:
        """Read a JSON object, or return None if the file does not exist."""
        try:
            with open(path, "rb") as handle:
                data = json.load(handle)
        except FileNotFoundError:
            return None
        return data if isinstance(data, dict) else None

    @staticmethod
    @contextmanager
    def atomic_writer(path: Path) -> Iterator[BinaryIO]:
        """Open a temporary file that replaces `path` only if the block succeeds.

        Args:
            path: Destination path.

        Yields:
            A binary file handle to write the new content to.
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
        try:
            with os.fdopen(fd, "wb") as handle:
                yield handle
            os.replace(tmp, path)
        except BaseException:
            # Never leave a stray temp file behind when the write fails midway.
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise

    def write_chunks(self, path: Path, chunks: Iterable[bytes | memoryview]) -> int:
        """Write byte chunks to `path` atomically and return the number of bytes.

        Args:
            path: Destination path.
            chunks: The content, produced lazily so big files are never held twice.

        Returns:
            The total number of bytes written.
        """
        size = 0
        with self.atomic_writer(path) as handle:
            for chunk in chunks:
                handle.write(chunk)
                size += len(chunk)
        return size

    # -- files -----------------------------------------------------------------

    def get_file(self, provider: Provider, file_id: str) -> dict[str, Any] | None:
        """Return a file's metadata, or None if unknown."""
        if not valid_id(file_id):
            return None
        return self.read_json(self.file_meta_path(provider, file_id))

    def put_file(
        self, provider: Provider, meta: dict[str, Any], chunks: Iterable[bytes | memoryview]
    ) -> dict[str, Any]:
        """Store a file's bytes then its metadata (data first, so metadata never dangles).

        Args:
            provider: Which protocol the file belongs to.
            meta: Metadata with at least `id`; the byte size is stored under `_size`.
            chunks: The file content.

        Returns:
            The stored metadata.
        """
        size = self.write_chunks(self.file_data_path(provider, meta["id"]), chunks)
        meta["_size"] = size
        self.put_file_meta(provider, meta)
        return meta

    def put_file_meta(self, provider: Provider, meta: dict[str, Any]) -> None:
        """Persist a file's metadata (its data must already be in place)."""
        self.write_json(self.file_meta_path(provider, meta["id"]), meta)

    def delete_file(self, provider: Provider, file_id: str) -> bool:
        """Delete a file; return False if it did not exist."""
        if not valid_id(file_id):
            return False
        found = False
        for path in (
            self.file_meta_path(provider, file_id),
            self.file_data_path(provider, file_id),
        ):
            try:
                path.unlink()
                found = True
            except FileNotFoundError:
                pass
        return found

    def iter_file_lines(self, provider: Provider, file_id: str) -> Iterator[bytes]:
        """Yield a file's lines (with their line endings) without loading it whole."""
        with open(self.file_data_path(provider, file_id), "rb") as handle:
            yield from handle

    def iter_file_chunks(
        self, provider: Provider, file_id: str, chunk_size: int = 64 * 1024
    ) -> Iterator[bytes]:
        """Yield a file's bytes in chunks, for streaming a download."""
        with open(self.file_data_path(provider, file_id), "rb") as handle:
            while chunk := handle.read(chunk_size):
                yield chunk

    # -- jobs ------------------------------------------------------------------

    def get_job(self, provider: Provider, job_id: str) -> dict[str, Any] | None:
        """Return a job record, or None if unknown."""
        if not valid_id(job_id):
            return None
        return self.read_json(self.job_path(provider, job_id))

    def put_job(self, provider: Provider, job: dict[str, Any]) -> None:
        """Persist a job record atomically."""
        self.write_json(self.job_path(provider, job["id"]), job)

    def list_jobs(self, provider: Provider) -> list[dict[str, Any]]:
        """Return every job record of one provider, in no particular order."""
        directory = self.root / provider / "batches"
        if not directory.is_dir():
            return []
        jobs = []
        for path in directory.glob("*.json"):
            if path.name.startswith(".tmp-"):
                continue
            job = self.read_json(path)
            if job is not None:
                jobs.append(job)
        return jobs


def valid_id(identifier: str) -> bool:
    """Tell whether an id (taken from a URL) is safe to use as a file name."""
    return bool(identifier) and identifier.replace("-", "").replace("_", "").isalnum()


def _safe(identifier: str) -> str:
    """Reject ids that could escape the state directory (they come from URLs)."""
    if not valid_id(identifier):
        raise ValueError(f"invalid id: {identifier!r}")
    return identifier
