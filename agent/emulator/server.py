"""Run the emulator over loopback HTTP with the standard library's `wsgiref`.

`serve` blocks (for a CLI command); `running_emulator` runs the same server on a
free port in a daemon thread for the duration of a `with` block (for tests and
for anything that needs a real URL rather than an in-process transport).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from agent.emulator.app import EmulatorApp
from agent.emulator.clock import Clock


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    """One thread per request, so a slow download never blocks polling clients."""

    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    """Request handler that does not print an access-log line per request."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - base signature
        """Drop access logs (polling would flood the terminal)."""


def _make_server(
    host: str, port: int, state_dir: str | Path | None, clock: Clock | None = None
) -> WSGIServer:
    return make_server(
        host,
        port,
        EmulatorApp(state_dir, clock),
        server_class=_ThreadingWSGIServer,
        handler_class=_QuietHandler,
    )


def serve(
    host: str = "127.0.0.1",
    port: int = 0,
    state_dir: str | Path | None = None,
    ready: Callable[[int], None] | None = None,
) -> None:
    """Serve the emulator until interrupted.

    Args:
        host: Interface to bind.
        port: Port to bind; 0 picks a free one.
        state_dir: State directory (default: `default_state_dir()`).
        ready: Called with the actual port once the socket is listening.
    """
    server = _make_server(host, port, state_dir)
    try:
        if ready is not None:
            ready(server.server_port)
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@contextmanager
def running_emulator(
    state_dir: str | Path | None = None, clock: Clock | None = None
) -> Iterator[str]:
    """Run the emulator on a free loopback port for the duration of the block.

    Args:
        state_dir: State directory (default: `default_state_dir()`).
        clock: The emulator's time source (default: the wall clock).

    Yields:
        The base URL, e.g. ``http://127.0.0.1:43123`` (append ``/openai/v1``,
        ``/mistral``, ``/anthropic`` or ``/gemini`` for the SDKs).
    """
    server = _make_server("127.0.0.1", 0, state_dir, clock)
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.05},
        daemon=True,
        name="batch-emulator",
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
