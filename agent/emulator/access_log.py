"""The emulator's access log: one line per HTTP request, in ``<state_dir>/access.log``.

Each line is ``<unix time> <METHOD> <path with query> <status code>``, e.g.
``1767225600.123 GET /openai/v1/batches/batch_abc 200``. The time is when the
request arrived; the line is appended once the response status is known. Lines
are appended with single ``O_APPEND`` writes, so concurrent threads and
processes sharing the directory never interleave within a line. Headers (they
carry API keys) and bodies are never logged. Whitespace, control and non-ASCII
characters of the path are percent-encoded, so a line always splits into four
fields.
"""

from __future__ import annotations

import logging
import os
import string
from pathlib import Path
from typing import Any
from urllib.parse import quote

from agent.emulator.store import default_state_dir

logger = logging.getLogger(__name__)

ACCESS_LOG_NAME = "access.log"
# Printable ASCII except space stays as is; the rest is percent-encoded.
_SAFE = string.punctuation


def access_log_path(state_dir: str | Path | None = None) -> Path:
    """Return the access log path of a state directory."""
    root = Path(state_dir) if state_dir is not None else default_state_dir()
    return root / ACCESS_LOG_NAME


def append_access_log(
    state_dir: Path, when: float, method: str, path: str, query: str, status: int
) -> None:
    """Append one request line (never raises: logging must not break a response).

    Args:
        state_dir: The state directory.
        when: Arrival time of the request.
        method: HTTP method.
        path: Request path (``PATH_INFO``).
        query: Raw query string, possibly empty.
        status: HTTP status code answered.
    """
    target = path + ("?" + query if query else "")
    line = f"{when:.3f} {quote(method, safe=_SAFE) or '-'} {quote(target, safe=_SAFE)} {status}\n"
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(state_dir / ACCESS_LOG_NAME, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode("ascii"))
        finally:
            os.close(fd)
    except OSError:
        logger.warning("could not write the emulator access log in %s", state_dir, exc_info=True)


def read_access_log(state_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Read the access log of a state directory.

    Args:
        state_dir: State directory (default: `default_state_dir()`).

    Returns:
        One ``{"time": float, "method": str, "path": str, "status": int}`` dict per
        request, in the order they were answered; empty if nothing was received.
    """
    try:
        text = access_log_path(state_dir).read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        return []
    rows = []
    for raw in text.splitlines():
        parts = raw.split(" ")
        if len(parts) != 4:
            continue  # a torn line (crash mid-write) is skipped, not fatal
        when, method, path, status = parts
        try:
            rows.append(
                {"time": float(when), "method": method, "path": path, "status": int(status)}
            )
        except ValueError:
            continue
    return rows
