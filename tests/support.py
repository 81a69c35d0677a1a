"""Test helpers shared by unit and integration tests: a webhook receiver and a run-to-the-end loop."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from agent.context import Context


class WebhookReceiver:
    """A loopback webhook receiver on a free port that records what it is sent."""

    def __init__(self, status: int = 204) -> None:
        """Serve in a daemon thread, answering every POST with `status`."""
        received: list[tuple[dict[str, str], bytes]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append((dict(self.headers), body))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.received = received
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # The token stands for the secret many webhook URLs carry: it must never be stored.
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/batch?token=s3cret-tok"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def bodies(self) -> list[bytes]:
        """The POST bodies received so far."""
        return [body for _, body in self.received]

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()


def run_to_end(
    graph: Any,
    config: dict[str, Any],
    context: Context,
    records: list[dict[str, Any]] | None,
    timeout: float = 20.0,
) -> dict[str, Any]:
    """Submit `records` (None: resume the thread), then re-invoke it until it is finished."""
    graph.invoke({"requests": records} if records else {}, config, context=context)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        values = dict(graph.get_state(config).values)
        if values["status"] in {"completed", "failed", "cancelled"}:
            return values
        time.sleep(0.1)
        graph.invoke({}, config, context=context)
    raise AssertionError("the batch did not finish")
