"""Minimal WSGI plumbing: request wrapper, responses, routing and multipart parsing.

The emulator is stdlib-only on purpose (it must run anywhere the project runs,
in-process through `httpx2.WSGITransport` or behind `wsgiref`), so this module
provides the few pieces a web framework would otherwise give.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

from agent.emulator.faults import Faults


class HttpError(Exception):
    """An error answered to the client; each protocol renders it in its own shape.

    Args:
        status: HTTP status code.
        message: Human-readable message.
        error_type: Error type, e.g. ``invalid_request_error``.
        code: Machine-readable code, if any.
        param: The offending parameter, if any.
        details: Typed detail objects, for a protocol whose errors carry them (Google's
            ``error.details``, e.g. a ``google.rpc.QuotaFailure``); the others ignore them.
    """

    def __init__(
        self,
        status: int,
        message: str,
        error_type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        details: list[dict[str, Any]] | None = None,
    ) -> None:
        """Keep every field needed to render the error in either protocol's shape."""
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type
        self.code = code
        self.param = param
        self.details = details


@dataclass
class UploadedFile:
    """One file part of a multipart body.

    Attributes:
        filename: The client-supplied file name.
        content_type: The part's content type.
        data: The bytes, as a zero-copy view into the request body.
    """

    filename: str
    content_type: str
    data: memoryview


@dataclass
class Request:
    """The parts of a WSGI request the routes need.

    Attributes:
        method: Upper-case HTTP method.
        path: The path inside the protocol prefix, e.g. ``/batches/batch_1``.
        query: Query parameters; repeated keys keep every value.
        environ: The raw WSGI environ (headers live there).
        params: Path parameters filled in by the router.
        faults: The fault knobs in force for this request (parsed once by the app).
    """

    method: str
    path: str
    query: dict[str, list[str]]
    environ: dict[str, Any]
    params: dict[str, str] = field(default_factory=dict)
    faults: Faults = field(default_factory=Faults)
    _body: bytes | None = None

    @classmethod
    def from_environ(cls, environ: dict[str, Any], path: str) -> Request:
        """Build a request from a WSGI environ and the path relative to the prefix."""
        return cls(
            method=environ.get("REQUEST_METHOD", "GET").upper(),
            path=path,
            query=parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True),
            environ=environ,
        )

    def header(self, name: str) -> str | None:
        """Return a request header by name (case-insensitive)."""
        key = name.upper().replace("-", "_")
        if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            key = "HTTP_" + key
        value = self.environ.get(key)
        return value if isinstance(value, str) else None

    def root_url(self) -> str:
        """Return ``scheme://host`` as the client addressed it, for absolute URLs in answers.

        Built from the request's ``Host``, so a URL the emulator hands out works in process
        (``http://emulator``) and over loopback alike.
        """
        environ = self.environ
        host = environ.get("HTTP_HOST") or (
            f"{environ.get('SERVER_NAME', 'localhost')}:{environ.get('SERVER_PORT', '80')}"
        )
        scheme = environ.get("wsgi.url_scheme", "http")
        return f"{scheme}://{host}{environ.get('SCRIPT_NAME', '')}"

    def arg(self, name: str) -> str | None:
        """Return the first value of a query parameter, or None."""
        values = self.query.get(name)
        return values[0] if values else None

    def body(self) -> bytes:
        """Read the request body once (the only in-memory copy of an upload)."""
        if self._body is None:
            try:
                length = int(self.environ.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = 0
            stream = self.environ.get("wsgi.input")
            self._body = stream.read(length) if stream is not None and length > 0 else b""
        return self._body

    def json(self) -> dict[str, Any]:
        """Decode the body as a JSON object (an empty body is an empty object).

        Raises:
            HttpError: 400 if the body is not a JSON object.
        """
        raw = self.body()
        if not raw.strip():
            return {}
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise HttpError(400, f"Invalid JSON body: {exc}") from exc
        if not isinstance(data, dict):
            raise HttpError(400, "The request body must be a JSON object.")
        return data

    def multipart(self) -> tuple[dict[str, str], dict[str, UploadedFile]]:
        """Parse a ``multipart/form-data`` body into fields and files.

        Returns:
            ``(fields, files)`` keyed by form-field name.

        Raises:
            HttpError: 400 if the body is not well-formed multipart.
        """
        return parse_multipart(self.header("Content-Type") or "", self.body())


@dataclass
class Response:
    """A response to send: status, headers and a (possibly lazy) body.

    Attributes:
        status: HTTP status code.
        body: Byte chunks; a generator streams big files.
        content_type: The Content-Type header value.
        length: Content-Length, when known up front.
        headers: Extra response headers.
    """

    status: int
    body: Iterable[bytes]
    content_type: str = "application/json"
    length: int | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)

    def wsgi_headers(self) -> list[tuple[str, str]]:
        """Return the header list for `start_response`."""
        headers = [("Content-Type", self.content_type)]
        if self.length is not None:
            headers.append(("Content-Length", str(self.length)))
        headers.extend(self.headers)
        return headers

    def status_line(self) -> str:
        """Return e.g. ``"200 OK"``."""
        try:
            phrase = HTTPStatus(self.status).phrase
        except ValueError:
            phrase = "Unknown"
        return f"{self.status} {phrase}"


def rfc3339(seconds: float) -> str:
    """Return an RFC 3339 UTC timestamp with microseconds (``...T12:00:00.000000Z``)."""
    stamp = datetime.fromtimestamp(seconds, tz=UTC).isoformat(timespec="microseconds")
    return stamp.replace("+00:00", "Z")


def json_response(obj: Any, status: int = 200) -> Response:
    """Serialise `obj` as a JSON response."""
    data = json.dumps(obj, separators=(",", ":")).encode("utf-8")
    return Response(status=status, body=[data], length=len(data))


Handler = Callable[[Request], Response]


class Router:
    """Map ``(method, path pattern)`` to handlers; ``{name}`` matches one path segment."""

    def __init__(self) -> None:
        """Start with no routes."""
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        """Register a handler for a method and a path pattern like ``/files/{file_id}``."""
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", pattern)
        self._routes.append((method.upper(), re.compile(f"^{regex}$"), handler))

    def dispatch(self, request: Request) -> Response:
        """Call the matching handler.

        Raises:
            HttpError: 404 for an unknown path, 405 for a known path with another method.
        """
        path_known = False
        for method, regex, handler in self._routes:
            match = regex.match(request.path)
            if match is None:
                continue
            path_known = True
            if method == request.method:
                request.params = match.groupdict()
                return handler(request)
        if path_known:
            raise HttpError(405, f"Method {request.method} not allowed for {request.path}.")
        raise HttpError(404, f"Unknown path: {request.path}", code="unknown_url")


_BOUNDARY = re.compile(r'boundary=(?:"([^"]+)"|([^;\s]+))', re.IGNORECASE)


def parse_multipart(
    content_type: str, body: bytes
) -> tuple[dict[str, str], dict[str, UploadedFile]]:
    """Split a ``multipart/form-data`` body without copying file contents.

    Only the small header block of each part goes through `email.parser`; the
    part payloads are returned as `memoryview` slices of `body`, so a large
    upload exists once in memory.

    Args:
        content_type: The request's Content-Type header (carries the boundary).
        body: The raw request body.

    Returns:
        ``(fields, files)``: text fields and file parts keyed by form-field name.

    Raises:
        HttpError: 400 if the content type or body is not valid multipart.
    """
    if not content_type.lower().startswith("multipart/form-data"):
        raise HttpError(400, "Expected a multipart/form-data body.")
    found = _BOUNDARY.search(content_type)
    if found is None:
        raise HttpError(400, "Multipart body without boundary.")
    delimiter = b"--" + (found.group(1) or found.group(2)).encode("latin-1")
    view = memoryview(body)
    fields: dict[str, str] = {}
    files: dict[str, UploadedFile] = {}
    position = body.find(delimiter)
    if position < 0:
        raise HttpError(400, "Malformed multipart body.")
    header_parser = BytesHeaderParser()
    while True:
        position += len(delimiter)
        if body[position : position + 2] == b"--":
            break  # closing delimiter
        # Skip the line break after the delimiter.
        if body[position : position + 2] == b"\r\n":
            position += 2
        elif body[position : position + 1] == b"\n":
            position += 1
        header_end = body.find(b"\r\n\r\n", position)
        separator = 4
        if header_end < 0:
            header_end = body.find(b"\n\n", position)
            separator = 2
        if header_end < 0:
            raise HttpError(400, "Malformed multipart part headers.")
        headers = header_parser.parsebytes(body[position:header_end])
        data_start = header_end + separator
        next_delimiter = body.find(b"\r\n" + delimiter, data_start)
        skip = 2
        if next_delimiter < 0:
            next_delimiter = body.find(b"\n" + delimiter, data_start)
            skip = 1
        if next_delimiter < 0:
            raise HttpError(400, "Unterminated multipart body.")
        disposition = headers.get("Content-Disposition", "")
        params = _disposition_params(disposition)
        name = params.get("name")
        if name is not None:
            if "filename" in params:
                files[name] = UploadedFile(
                    filename=params["filename"],
                    content_type=headers.get("Content-Type", "application/octet-stream"),
                    data=view[data_start:next_delimiter],
                )
            else:
                fields[name] = body[data_start:next_delimiter].decode("utf-8", "replace")
        position = next_delimiter + skip
    return fields, files


def _disposition_params(disposition: str) -> dict[str, str]:
    """Parse ``form-data; name="file"; filename="a.jsonl"`` into a dict."""
    params: dict[str, str] = {}
    for match in re.finditer(r';\s*([\w*]+)=(?:"((?:[^"\\]|\\.)*)"|([^;]*))', disposition):
        value = match.group(2) if match.group(2) is not None else (match.group(3) or "")
        params[match.group(1).lower()] = value.replace('\\"', '"').strip()
    return params
