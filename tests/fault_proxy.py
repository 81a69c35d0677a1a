"""A loopback HTTP proxy that loses answers on purpose, between a provider SDK and the emulator.

Some faults live on the wire rather than at the provider: a load balancer that answers 502 or 504
after the provider has already accepted the request, or a connection that drops once the request is
sent. The provider then holds the job, but the SDK never hears of it, and whatever resends the call
makes a second, paid job. The emulator cannot play this (it answers every request it accepts), so
tests put this proxy in front of it:

    with running_emulator(state_dir) as upstream, FaultProxy(upstream) as proxy:
        proxy.fail("POST", "/openai/v1/batches", "502_after")
        # point the SDK at f"{proxy.url}/openai/v1"

A rule matches by method and a regular expression on the path (and, optionally, one on the query
string: a Gemini resumable upload sends its start and its bytes to one path, the bytes with
`?upload_id=`), fires a given number of times, and does one of:

- ``502_after`` / ``504_after``: forward the request, read the provider's answer, then answer the
  client 502 Bad Gateway / 504 Gateway Timeout instead (the provider acted; the client is told it
  failed);
- ``drop_after``: forward the request, then close the client's connection without a response;
- ``502_before``: answer 502 without forwarding (nothing reached the provider).

Everything else is relayed unchanged. `calls` records what passed (method, path, action).
"""

from __future__ import annotations

import http.client
import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import urlsplit

Action = Literal["502_after", "504_after", "drop_after", "502_before"]
# Hop-by-hop headers a proxy must not relay (RFC 9110 §7.6.1), plus the length it recomputes.
_HOP_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "content-length",
    }
)


@dataclass
class Rule:
    """One fault: what it matches, what it does, and how many more times."""

    method: str
    path: re.Pattern[str]
    action: Action
    times: int
    query: re.Pattern[str] | None = None
    fired: int = 0

    def matches(self, method: str, path: str, query: str) -> bool:
        """Tell whether a request is this rule's (method, path, and query if it names one)."""
        return (
            self.method == method
            and self.path.search(path) is not None
            and (self.query is None or self.query.search(query) is not None)
        )


@dataclass
class FaultProxy:
    """A threaded loopback proxy to `upstream` (``http://127.0.0.1:PORT``) with fault rules."""

    upstream: str
    rules: list[Rule] = field(default_factory=list)
    calls: list[tuple[str, str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        """Bind a free loopback port (serving starts with `start` or the `with` block)."""
        parts = urlsplit(self.upstream)
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 80
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                proxy._handle(self)

            do_POST = do_DELETE = do_PUT = do_PATCH = do_GET  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The proxy's base URL (append the provider prefix, e.g. ``/openai/v1``)."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def fail(
        self, method: str, path: str, action: Action, times: int = 1, query: str | None = None
    ) -> Rule:
        """Add a rule: the next `times` requests `method` on a path matching `path` get `action`.

        With `query`, only requests whose query string matches it too.
        """
        rule = Rule(
            method.upper(),
            re.compile(path),
            action,
            times,
            re.compile(query or "") if query else None,
        )
        with self._lock:
            self.rules.append(rule)
        return rule

    def start(self) -> FaultProxy:
        """Serve in a daemon thread."""
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FaultProxy:
        """Start serving for the block."""
        return self.start()

    def __exit__(self, *exc: object) -> None:
        """Stop serving."""
        self.close()

    def count(self, method: str, path: str) -> int:
        """How many requests `method` on a path matching `path` reached the proxy."""
        pattern = re.compile(path)
        return sum(1 for m, p, _ in self.calls if m == method.upper() and pattern.search(p))

    # ----------------------------------------------------------------- serving

    def _rule_for(self, method: str, target: str) -> Rule | None:
        parts = urlsplit(target)
        with self._lock:
            for rule in self.rules:
                if rule.fired < rule.times and rule.matches(method, parts.path, parts.query):
                    rule.fired += 1
                    return rule
        return None

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        method, path = handler.command, handler.path
        body = _read_body(handler)
        rule = self._rule_for(method, path)
        action = rule.action if rule else "relay"
        with self._lock:
            self.calls.append((method, urlsplit(path).path, action))
        if action == "502_before":
            _answer(handler, 502, b'{"error": {"message": "Bad Gateway (fault proxy)"}}')
            return
        status, headers, payload = self._forward(method, path, handler.headers, body)
        if action == "drop_after":
            # The provider acted; the client's connection dies before any answer.
            handler.close_connection = True
            try:
                handler.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if action in ("502_after", "504_after"):
            code = 502 if action == "502_after" else 504
            _answer(
                handler,
                code,
                b"<html><body>" + str(code).encode() + b" (fault proxy)</body></html>",
            )
            return
        handler.send_response(status)
        for name, value in headers:
            if name.lower() not in _HOP_HEADERS:
                handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    def _forward(
        self, method: str, path: str, headers: Any, body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        connection = http.client.HTTPConnection(self._host, self._port, timeout=120)
        try:
            relayed = {k: v for k, v in headers.items() if k.lower() not in _HOP_HEADERS}
            relayed["Content-Length"] = str(len(body))
            connection.request(method, path, body=body, headers=relayed)
            response = connection.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            connection.close()


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    """Read the request body, by Content-Length or chunked transfer coding."""
    if "chunked" in (handler.headers.get("Transfer-Encoding") or "").lower():
        chunks = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
    return handler.rfile.read(int(handler.headers.get("Content-Length") or 0))


def _answer(handler: BaseHTTPRequestHandler, status: int, body: bytes) -> None:
    handler.send_response(status)
    handler.send_header(
        "Content-Type", "text/html" if body.startswith(b"<") else "application/json"
    )
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)
