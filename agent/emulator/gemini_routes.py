"""Gemini Developer API Files + Batch protocol, served under ``/gemini`` (``v1`` and ``v1beta``).

Shapes follow what google-genai 3.6 sends and parses (`google/genai/batches.py`, `files.py`,
`_api_client.py`, `_transformers.py`) and the reference notes
(`shared/reference/provider-batch-apis.md` §4 and §6). The SDK's base URL is
``<root>/gemini``; it adds the API version (``v1`` by default, ``v1beta`` with
``HttpOptions(api_version="v1beta")``), and both are served the same way.

- **Auth**: ``x-goog-api-key`` (or ``?key=``). Without a key: 403 ``PERMISSION_DENIED``; with
  another key than ``BATCH_AGENT_EMULATOR_API_KEY`` (when set): 400 ``INVALID_ARGUMENT`` "API key
  not valid" with an ``ErrorInfo`` detail ``reason: API_KEY_INVALID``, as Google answers. The
  upload session URL needs no key (its ``upload_id`` is the credential, as on Google's side; the
  SDK sends none there). Errors are ``{"error": {"code": <HTTP>, "message", "status"}}``.
- **Files**: resumable upload, ``POST /upload/{ver}/files`` with ``X-Goog-Upload-Protocol:
  resumable`` and ``X-Goog-Upload-Command: start`` (body ``{"file": {displayName, mimeType,
  name?}}``, size in ``X-Goog-Upload-Header-Content-Length``) answers header
  ``x-goog-upload-url`` (absolute, on the host the client used, with an ``upload_id``); then
  ``POST <url>`` with ``X-Goog-Upload-Command: upload[, finalize]`` and ``X-Goog-Upload-Offset``
  appends bytes (``x-goog-upload-status: active``) and finalises (``final``, body ``{"file":
  File}``); a finalised session answers its final result again to any later command (a resumable
  upload's documented behaviour; Gemini's own is not published). A File is ``{name: "files/<id>", displayName, mimeType, sizeBytes (string),
  createTime, updateTime, expirationTime (+48 h), uri, state: "ACTIVE", source: "UPLOADED" |
  "GENERATED", downloadUri (generated files)}``. ``GET /{ver}/files`` pages (``pageSize``
  default 10, max 100; ``pageToken``; ``{files, nextPageToken}``), ``GET`` / ``DELETE
  /{ver}/files/{id}`` (``{}``), ``GET /{ver}/files/{id}:download?alt=media`` streams the bytes
  (the path ``files.download`` uses). An unknown file is 403 ``PERMISSION_DENIED`` "... or it
  may not exist", as Google answers.
- **Batches**: ``POST /{ver}/models/{model}:batchGenerateContent`` with ``{"batch":
  {displayName, inputConfig: {fileName: "files/..."} | {requests: {requests: [{request,
  metadata}]}}}}``; each file line is ``{"key", "request": GenerateContentRequest}``. The answer,
  and ``GET /{ver}/batches/{id}``, is an Operation: ``{name: "batches/<id>", metadata: {"@type":
  ...GenerateContentBatch, model, displayName, inputConfig (file input), createTime,
  updateTime, endTime (ended), batchStats, state, name, output (ended)}, done (ended),
  response (ended with output) | error (FAILED)}``. ``batchStats`` has ``requestCount``,
  ``successfulRequestCount``, ``failedRequestCount``, ``pendingRequestCount`` as strings
  (int64), and, as proto3 JSON does (seen in googleapis/python-genai#1323), a count that is
  zero is left out: read a missing count as 0. The SDK's ``BatchJob`` drops ``batchStats``.
  ``GET /{ver}/batches`` pages newest first (``pageSize`` default 50, max 1000; ``pageToken``;
  ``{operations, nextPageToken}``; no filter). ``POST /{ver}/batches/{id}:cancel`` (``{}``) is
  instantly terminal: ``BATCH_STATE_CANCELLED`` with the lines of the requests done by then;
  cancelling an ended batch is 400 ``FAILED_PRECONDITION``. ``DELETE /{ver}/batches/{id}``
  (``{}``) forgets the batch (its responses file stays until deleted).
- **Lifecycle** by the clock (`agent.emulator.jobs`): ``BATCH_STATE_PENDING`` for 10 % of the
  delay, ``BATCH_STATE_RUNNING`` (counts rising) until 100 %, then ``BATCH_STATE_SUCCEEDED``
  (or ``FAILED``, ``CANCELLED``, ``EXPIRED``). The SDK maps these to ``JOB_STATE_*``.
- **Output**: one responses file ``files/batch-<id>`` (``output.responsesFile``, and
  ``response.responsesFile``), one line per processed request, successes and failures together
  in input order (``shuffle`` reorders it): ``{"key", "response": GenerateContentResponse}``
  (`agent.emulator.gemini_answers`) or ``{"key", "error": {"code", "message"}}``. The error line
  is **UNCONFIRMED** upstream (the docs say "a GenerateContentResponse or a status object");
  the emulator writes a ``google.rpc.Status``: ``code`` is the gRPC code (3
  INVALID_ARGUMENT for a bad request or a marker, 8 RESOURCE_EXHAUSTED for the 429 kind of
  ``request_fail_rate``, 13 INTERNAL for the 500 kind), as in googleapis/python-genai#2693
  ("code: 3"), and ``message``. Inline input gets ``output.inlinedResponses.inlinedResponses``
  instead: ``[{response | error, metadata}]``, in the same order as that file would be.
  Whether a cancelled or expired batch keeps a responses file upstream is UNCONFIRMED; here it
  does, for the requests done.
- **Embeddings**: ``POST /{ver}/models/{model}:asyncBatchEmbedContent`` takes the same
  ``{"batch": {displayName, inputConfig}}`` (google-genai's ``batches.create_embeddings``
  sends ``file_name`` in snake case; both spellings are read), of ``{"key", "request":
  EmbedContentRequest}`` lines; the Operation's ``@type`` is ``EmbedContentBatch``, and each
  responses-file line is ``{"key", "response": {"embedding": {"values"}, "tokenCount"}}``
  (`agent.emulator.embedding_answers`; inline input: ``inlinedEmbedContentResponses``), with
  the same faults and error lines.
- **Fault knobs** (`agent.emulator.faults`, Gemini paragraph) and ``create_429=N``; the caps
  ``concurrent_job_limit=N`` (a create while N batches are pending or running) and
  ``file_storage_limit=BYTES`` (an upload over the bytes held) are refused with 429
  ``RESOURCE_EXHAUSTED`` and a ``QuotaFailure`` detail (`agent.emulator.caps`).
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
from typing import Any

from agent.emulator.answers import InvalidRequest, compute_reply, validate_body
from agent.emulator.caps import jobs_refused, over_cap, storage_refused
from agent.emulator.clock import Clock
from agent.emulator.embedding_answers import gemini_answer, gemini_error, gemini_marker_body
from agent.emulator.faults import ERROR_SHAPES, job_faults, longest_delay, request_fault
from agent.emulator.gemini_answers import (
    InvalidGeminiRequest,
    chat_body,
    field,
    render_response,
    thinking_budget,
)
from agent.emulator.jobs import JobLifecycle, Phase, Timeline, split_counts
from agent.emulator.model_routes import add_model_routes, emulator_serves
from agent.emulator.result_files import RequestLine, iter_requests
from agent.emulator.store import Provider, Store
from agent.emulator.web import HttpError, Request, Response, Router, json_response, rfc3339

PROVIDER: Provider = "gemini"
PREFIX = "/gemini"
VERSIONS = ("v1", "v1beta")
# Cancel is instantly terminal on the Developer API: no cancelling phase.
TIMELINE = Timeline(start=0.1, finalize=1.0, cancel=0.0)
BATCH_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch"
OUTPUT_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatchOutput"
EMBED_BATCH_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main.EmbedContentBatch"
EMBED_OUTPUT_TYPE = (
    "type.googleapis.com/google.ai.generativelanguage.v1main.EmbedContentBatchOutput"
)
FILE_TTL = 48 * 3600
OUTPUT_MIME = "application/jsonl"
_STATE = {
    "queued": "BATCH_STATE_PENDING",
    "running": "BATCH_STATE_RUNNING",
    "finalizing": "BATCH_STATE_RUNNING",
    "done": "BATCH_STATE_SUCCEEDED",
    "failed": "BATCH_STATE_FAILED",
    "expired": "BATCH_STATE_EXPIRED",
    "cancelling": "BATCH_STATE_CANCELLED",
    "cancelled": "BATCH_STATE_CANCELLED",
}
# HTTP status -> Google's canonical status name (google.rpc.Code).
STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "UNIMPLEMENTED",
    409: "ALREADY_EXISTS",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_CANONICAL = frozenset(STATUS_NAMES.values()) | {"FAILED_PRECONDITION", "ABORTED", "UNKNOWN"}
# Gemini-style ids: lower-case letters and digits (t_file_name reads `[a-z0-9]+`).
FILE_NAME = re.compile(r"^[a-z0-9-]{1,40}$")
_VERSIONED = re.compile(r"^(/upload)?/(v1|v1beta)(/.*)?$")
INVALID_KEY_DETAIL = {
    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
    "reason": "API_KEY_INVALID",
    "domain": "googleapis.com",
    "metadata": {"service": "generativelanguage.googleapis.com"},
}


def render_error(error: HttpError) -> Response:
    """Render an error in Google's ``{"error": {code, message, status}}`` shape.

    The status is the error's type when that is a canonical Google status name (the routes
    and `ERROR_SHAPES` set them), else the name of the HTTP status.
    """
    status = error.error_type if error.error_type in _CANONICAL else None
    body: dict[str, Any] = {
        "code": error.status,
        "message": error.message,
        "status": status or STATUS_NAMES.get(error.status, "UNKNOWN"),
    }
    if error.code == "API_KEY_INVALID":
        body["details"] = [INVALID_KEY_DETAIL]
    elif error.details:
        body["details"] = error.details
    return json_response({"error": body}, status=error.status)


def check_gemini_auth(request: Request) -> None:
    """Require a key, as Google does; the value must be ``BATCH_AGENT_EMULATOR_API_KEY`` if set.

    The upload session URL is exempt: its ``upload_id`` stands for the key (the SDK sends none).
    The message never echoes the key that was sent.

    Raises:
        HttpError: 403 ``PERMISSION_DENIED`` without a key, 400 ``INVALID_ARGUMENT``
            (``API_KEY_INVALID``) with a wrong one.
    """
    if request.path.startswith("/upload/") and request.arg("upload_id"):
        return
    key = (request.header("x-goog-api-key") or request.arg("key") or "").strip()
    if not key:
        raise HttpError(
            403,
            "Method doesn't allow unregistered callers (callers without established identity). "
            "Please use API Key or other form of API consumer identity to call this API.",
            error_type="PERMISSION_DENIED",
        )
    required = os.environ.get("BATCH_AGENT_EMULATOR_API_KEY")
    if required and key != required:
        raise HttpError(
            400,
            "API key not valid. Please pass a valid API key.",
            error_type="INVALID_ARGUMENT",
            code="API_KEY_INVALID",
        )


def _bad(message: str) -> HttpError:
    return HttpError(400, message, error_type="INVALID_ARGUMENT")


def _file_missing(file_id: str) -> HttpError:
    return HttpError(
        403,
        f"You do not have permission to access the File {file_id} or it may not exist.",
        error_type="PERMISSION_DENIED",
    )


def _batch_not_found(batch_id: str) -> HttpError:
    return HttpError(404, f"Batch batches/{batch_id} not found.", error_type="NOT_FOUND")


def _not_cancellable(batch_id: str, status: str) -> HttpError:
    return HttpError(
        400,
        f"Batch batches/{batch_id} is already in a terminal state ({status}).",
        error_type="FAILED_PRECONDITION",
    )


def _page_token(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode().rstrip("=")


def _page(
    items: list[dict[str, Any]], request: Request, default: int, cap: int
) -> tuple[list[dict[str, Any]], str | None]:
    """Cut one page (newest first) after ``pageToken``; return it and the next token."""
    try:
        size = int(request.arg("pageSize") or default)
    except ValueError as exc:
        raise _bad(
            f"Invalid value at 'page_size' (TYPE_INT32), {request.arg('pageSize')!r}"
        ) from exc
    size = default if size <= 0 else min(size, cap)
    start = 0
    token = request.arg("pageToken")
    if token:
        try:
            after = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        except ValueError as exc:
            raise _bad("Invalid page token.") from exc
        ids = [item["id"] for item in items]
        if after not in ids:
            raise _bad("Invalid page token.")
        start = ids.index(after) + 1
    page = items[start : start + size]
    more = start + size < len(items)
    return page, (_page_token(page[-1]["id"]) if more and page else None)


def require_served(request: Request, model: str, method: str) -> None:
    """Answer 404 as Google does for a model the emulator does not serve (`method` named)."""
    if not emulator_serves(model):
        raise HttpError(
            404,
            f"models/{model} is not found for API version {api_version(request)}, or is "
            f"not supported for {method}.",
            error_type="NOT_FOUND",
        )


def api_version(request: Request) -> str:
    """Return the API version the client addressed (``v1`` or ``v1beta``)."""
    found = _VERSIONED.match(str(request.environ.get("PATH_INFO", ""))[len(PREFIX) :])
    return found.group(2) if found else VERSIONS[0]


class GeminiRoutes:
    """Handlers for the Gemini Developer API's Files and Batch protocol.

    Args:
        store: The shared state store.
        clock: The emulator's time source.
    """

    def __init__(self, store: Store, clock: Clock) -> None:
        """Register the routes on a fresh router (paths without the API version)."""
        self.store = store
        self.clock = clock
        self.jobs = JobLifecycle(
            store, PROVIDER, TIMELINE, _STATE, clock, self._produce, _batch_not_found
        )
        self.router = Router()
        add = self.router.add
        add("POST", "/upload/files", self.upload)
        # `:download` before `/files/{id}`: a segment pattern would swallow the suffix.
        add("GET", "/files/{file_id}:download", self.download)
        add("GET", "/files", self.list_files)
        add("GET", "/files/{file_id}", self.get_file)
        add("DELETE", "/files/{file_id}", self.delete_file)
        add("POST", "/models/{model}:batchGenerateContent", self.create_batch)
        add("POST", "/models/{model}:asyncBatchEmbedContent", self.create_embeddings_batch)
        add("POST", "/batches/{batch_id}:cancel", self.cancel_batch)
        add("GET", "/batches", self.list_batches)
        add("GET", "/batches/{batch_id}", self.get_batch)
        add("DELETE", "/batches/{batch_id}", self.delete_batch)
        add_model_routes(self.router, "gemini")

    def handle(self, request: Request) -> Response:
        """Dispatch a request whose path is relative to ``/gemini`` (version included)."""
        found = _VERSIONED.match(request.path)
        if found is None:
            raise HttpError(404, f"Unknown path: {PREFIX}{request.path}", error_type="NOT_FOUND")
        request.path = (found.group(1) or "") + (found.group(3) or "/")
        return self.router.dispatch(request)

    # -- files -------------------------------------------------------------------

    def _uploads(self) -> Any:
        path = self.store.root / PROVIDER / "uploads"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def upload(self, request: Request) -> Response:
        """``POST /upload/{ver}/files``: start a resumable upload, or send bytes to one."""
        upload_id = request.arg("upload_id")
        if upload_id is None:
            return self._start_upload(request)
        return self._upload_bytes(request, upload_id)

    def _start_upload(self, request: Request) -> Response:
        if (request.header("X-Goog-Upload-Protocol") or "").lower() != "resumable":
            raise _bad("Only the resumable upload protocol is supported (emulated).")
        if (request.header("X-Goog-Upload-Command") or "").lower() != "start":
            raise _bad("X-Goog-Upload-Command must be 'start' to begin an upload.")
        described = request.json().get("file") or {}
        if not isinstance(described, dict):
            raise _bad("* CreateFileRequest.file: must be an object")
        name = str(described.get("name") or "").removeprefix("files/")
        if name:
            if not FILE_NAME.match(name):
                raise _bad(f"* CreateFileRequest.file.name: invalid file name files/{name}")
            if self.store.get_file(PROVIDER, name) is not None:
                raise HttpError(
                    409, f"File files/{name} already exists.", error_type="ALREADY_EXISTS"
                )
        file_id = name or secrets.token_hex(6)
        try:
            expected = int(request.header("X-Goog-Upload-Header-Content-Length") or -1)
        except ValueError:
            expected = -1
        # Refused at the start, on the declared size: nothing is stored. (The finalize checks the
        # bytes received again, for uploads started side by side or of an undeclared size.)
        self._check_storage(request, max(expected, 0))
        session = {
            "id": file_id,
            "displayName": field(described, "displayName"),
            "mimeType": request.header("X-Goog-Upload-Header-Content-Type")
            or field(described, "mimeType")
            or "application/octet-stream",
            "expected": expected,
            "received": 0,
        }
        upload_id = secrets.token_hex(16)
        self.store.write_json(self._uploads() / f"{upload_id}.json", session)
        (self._uploads() / f"{upload_id}.part").write_bytes(b"")
        version = api_version(request)
        url = f"{request.root_url()}{PREFIX}/upload/{version}/files?upload_id={upload_id}"
        url += "&upload_protocol=resumable"
        response = json_response({})
        response.headers.extend([("x-goog-upload-url", url), ("x-goog-upload-status", "active")])
        return response

    def _upload_bytes(self, request: Request, upload_id: str) -> Response:
        if not upload_id.isalnum():
            raise HttpError(404, "Unknown upload session.", error_type="NOT_FOUND")
        meta_path = self._uploads() / f"{upload_id}.json"
        part_path = self._uploads() / f"{upload_id}.part"
        command = {
            c.strip().lower() for c in (request.header("X-Goog-Upload-Command") or "").split(",")
        }
        with self.store.lock():
            session = self.store.read_json(meta_path)
            if session is None:
                raise HttpError(404, "Unknown upload session.", error_type="NOT_FOUND")
            if session.get("final"):
                # A finalised session answers its final result again, as resumable uploads do
                # (the SDK resends a chunk whose answer it did not get): one file, never two.
                final = self.store.read_json(self.store.file_meta_path(PROVIDER, session["final"]))
                if final is None:
                    raise HttpError(404, "Unknown upload session.", error_type="NOT_FOUND")
                response = json_response({"file": self._file_object(final, request)})
                response.headers.append(("x-goog-upload-status", "final"))
                return response
            offset = request.header("X-Goog-Upload-Offset")
            if offset is not None and offset.strip() != str(session["received"]):
                raise _bad(f"Upload offset {offset} does not match {session['received']} received.")
            data = request.body()
            if "upload" in command and data:
                with open(part_path, "ab") as handle:
                    handle.write(data)
                session["received"] += len(data)
            if "finalize" not in command:
                self.store.write_json(meta_path, session)
                response = json_response({})
                response.headers.append(("x-goog-upload-status", "active"))
                return response
            if session["expected"] >= 0 and session["received"] != session["expected"]:
                raise _bad(
                    f"Upload size {session['received']} does not match the declared "
                    f"{session['expected']} bytes."
                )
            try:
                self._check_storage(request, session["received"])
            except HttpError:
                part_path.unlink(missing_ok=True)
                meta_path.unlink(missing_ok=True)
                raise
            now = self.clock.now()
            meta: dict[str, Any] = {
                "id": session["id"],
                "displayName": session.get("displayName"),
                "mimeType": session["mimeType"],
                "created_at": now,
                "source": "UPLOADED",
            }
            os.replace(part_path, self.store.file_data_path(PROVIDER, meta["id"]))
            meta["_size"] = session["received"]
            self.store.put_file_meta(PROVIDER, meta)
            self.store.write_json(meta_path, {**session, "final": meta["id"]})
        response = json_response({"file": self._file_object(meta, request)})
        response.headers.append(("x-goog-upload-status", "final"))
        return response

    def _file_object(self, meta: dict[str, Any], request: Request) -> dict[str, Any]:
        file_id = meta["id"]
        base = f"{request.root_url()}{PREFIX}/{api_version(request)}/files/{file_id}"
        created = float(meta["created_at"])
        obj: dict[str, Any] = {"name": f"files/{file_id}"}
        if meta.get("displayName"):
            obj["displayName"] = meta["displayName"]
        obj.update(
            {
                "mimeType": meta.get("mimeType") or "application/octet-stream",
                "sizeBytes": str(meta.get("_size", 0)),
                "createTime": rfc3339(created),
                "updateTime": rfc3339(created),
                "expirationTime": rfc3339(created + FILE_TTL),
                "uri": base,
                "state": "ACTIVE",
                "source": meta.get("source") or "UPLOADED",
            }
        )
        if meta.get("source") == "GENERATED":
            obj["downloadUri"] = f"{base}:download?alt=media"
        return obj

    def _stored_metas(self) -> list[dict[str, Any]]:
        """Every stored file record of the protocol, internal ones included, in no order."""
        directory = self.store.root / PROVIDER / "files"
        metas = []
        for path in directory.glob("*.json") if directory.is_dir() else []:
            if not path.name.startswith(".tmp-"):
                meta = self.store.read_json(path)
                if meta is not None:
                    metas.append(meta)
        return metas

    def _stored_bytes(self) -> int:
        """Return the bytes of the project's files (uploaded and generated): the storage cap's count.

        The private files holding inline requests are not the user's files and do not count.
        """
        return sum(int(m.get("_size") or 0) for m in self._stored_metas() if not m.get("_internal"))

    def _check_storage(self, request: Request, adding: int) -> None:
        """Refuse (429) an upload of `adding` bytes over ``file_storage_limit``, if one is set."""
        limit = request.faults.file_storage_limit
        if limit:
            held = self._stored_bytes()
            if over_cap(held, adding, limit):
                raise storage_refused(held, adding, limit)

    def _visible(self, meta: dict[str, Any] | None, now: float) -> bool:
        """Tell whether a file is listed: not internal, nor a responses file ``output_lag`` hides."""
        if meta is None or meta.get("_internal"):
            return False
        job_id = meta.get("_job")
        if job_id:
            job = self.store.get_job(PROVIDER, job_id)
            if job is not None:
                end = self.jobs.ended_at(job, self.jobs.phase(job, now))
                if end is not None and self.jobs.results_lag(job, now, end):
                    return False
        return True

    def _require_file(self, file_id: str) -> dict[str, Any]:
        meta = self.store.get_file(PROVIDER, file_id)
        if meta is None or not self._visible(meta, self.clock.now()):
            raise _file_missing(f"files/{file_id}")
        return meta

    def list_files(self, request: Request) -> Response:
        """``GET /{ver}/files``: newest first, ``pageSize`` (default 10, max 100) and ``pageToken``."""
        now = self.clock.now()
        metas = [meta for meta in self._stored_metas() if self._visible(meta, now)]
        metas.sort(key=lambda m: (m.get("created_at", 0), m["id"]), reverse=True)
        page, token = _page(metas, request, default=10, cap=100)
        body: dict[str, Any] = {"files": [self._file_object(m, request) for m in page]}
        if token:
            body["nextPageToken"] = token
        return json_response(body if page else {})

    def get_file(self, request: Request) -> Response:
        """``GET /{ver}/files/{id}``."""
        return json_response(
            self._file_object(self._require_file(request.params["file_id"]), request)
        )

    def delete_file(self, request: Request) -> Response:
        """``DELETE /{ver}/files/{id}``: answers ``{}`` (google.protobuf.Empty)."""
        file_id = request.params["file_id"]
        self._require_file(file_id)
        self.store.delete_file(PROVIDER, file_id)
        return json_response({})

    def download(self, request: Request) -> Response:
        """``GET /{ver}/files/{id}:download?alt=media``: stream the bytes."""
        if request.arg("alt") != "media":
            raise _bad("Downloading a file needs alt=media.")
        meta = self._require_file(request.params["file_id"])
        return Response(
            status=200,
            body=self.store.iter_file_chunks(PROVIDER, meta["id"]),
            content_type="application/octet-stream",
            length=meta.get("_size"),
        )

    # -- batches -------------------------------------------------------------------

    def _take_create_429(self, limit: int) -> bool:
        """Count a create against ``create_429``; True while the first `limit` are refused."""
        path = self.store.root / PROVIDER / "create_429.count"
        with self.store.lock():
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                refused = int(path.read_text() or 0)
            except (FileNotFoundError, ValueError):
                refused = 0
            if refused >= limit:
                return False
            path.write_text(str(refused + 1))
            return True

    def create_batch(self, request: Request) -> Response:
        """``POST /{ver}/models/{model}:batchGenerateContent``: from a file or inline requests."""
        return self._create(request, embeddings=False)

    def create_embeddings_batch(self, request: Request) -> Response:
        """``POST /{ver}/models/{model}:asyncBatchEmbedContent``: embeddings, one text a line.

        The same batch as `create_batch`, of ``{"key", "request": EmbedContentRequest}`` lines
        answered by `agent.emulator.embedding_answers` (``{"key", "response":
        {"embedding": {"values"}, "tokenCount"}}``).
        """
        return self._create(request, embeddings=True)

    def _create(self, request: Request, *, embeddings: bool) -> Response:
        """Create a batch of generateContent (or, with `embeddings`, embedContent) requests."""
        faults = request.faults
        if faults.create_429 and self._take_create_429(faults.create_429):
            _, message, status, _ = ERROR_SHAPES[PROVIDER]["rate_limit"]
            raise HttpError(429, message, error_type=status)
        model = request.params["model"].removeprefix("models/")
        require_served(
            request, model, "asyncBatchEmbedContent" if embeddings else "batchGenerateContent"
        )
        batch = request.json().get("batch")
        if not isinstance(batch, dict):
            raise _bad("* BatchGenerateContentRequest.batch: batch is required")
        input_config = field(batch, "inputConfig")
        if not isinstance(input_config, dict):
            raise _bad("* GenerateContentBatch.input_config: input_config is required")
        file_name = field(input_config, "fileName")
        inline = field(input_config, "requests")
        if (file_name is None) == (inline is None):
            raise _bad("* InputConfig: exactly one of file_name or requests must be set")
        now = self.clock.now()
        batch_id = secrets.token_hex(12)
        if file_name is not None:
            file_id = str(file_name).removeprefix("files/")
            meta = self.store.get_file(PROVIDER, file_id) if FILE_NAME.match(file_id) else None
            if meta is None or meta.get("_internal"):
                raise _file_missing(f"files/{file_id}")
            sources = [file_id]
        else:
            items = field(inline, "requests") if isinstance(inline, dict) else None
            if not isinstance(items, list) or not items:
                raise _bad("* InlinedRequests.requests: requests must not be empty")
            source = f"batchreq-{batch_id}"
            # Inline requests are kept as a private JSONL file so one code path streams every job.
            self.store.put_file(
                PROVIDER,
                {"id": source, "_internal": True, "created_at": now},
                (json.dumps(item, separators=(",", ":")).encode() + b"\n" for item in items),
            )
            sources = [source]
        with self.jobs.creating(faults.job_record()) as knobs:
            limit = faults.concurrent_job_limit
            if limit:
                running = len(self.jobs.in_flight(now))
                if over_cap(running, 1, limit):
                    if file_name is None:
                        self.store.delete_file(PROVIDER, sources[0])
                    raise jobs_refused(running, limit)
            failed = []
            total = 0
            delay: float | None = None
            for line in iter_requests(self.store, PROVIDER, sources):
                total += 1
                body, problem = _checked(line, model if embeddings else None)
                delay = longest_delay(delay, body)
                if problem is not None or request_fault(knobs or {}, batch_id, _key(line), body):
                    failed.append(line.index)
            if total == 0:
                raise _bad(f"The input file {file_name} has no requests.")
            display_name = str(field(batch, "displayName") or "")
            fields: dict[str, Any] = {
                "id": batch_id,
                "name": f"batches/{batch_id}",
                "model": f"models/{model}",
                "displayName": display_name,
                "created_at": rfc3339(now),
                "metadata": {"displayName": display_name},
                "_input_file": f"files/{sources[0]}" if file_name is not None else None,
                "_inline": file_name is None,
                "_embeddings": embeddings,
            }
            job = self.jobs.record(
                fields,
                now=now,
                sources=sources,
                total=total,
                failed=failed,
                faults=knobs,
                invalid=bool(knobs and knobs.get("batch_fail")),
                delay=delay,
            )
            self.jobs.save(job)
        self.jobs.answer_late(faults)
        return json_response(self._operation(job, now, request, created=True))

    def _produce(self, job: dict[str, Any], phase: Phase, ended: float) -> None:
        """Write the responses file of a batch reaching a terminal phase (under the lock)."""
        if phase.name == "failed":
            return  # failed as a whole: no output
        faults = job_faults(job)
        inline = bool(job.get("_inline"))

        def render(
            request: RequestLine, created: int
        ) -> tuple[bool, dict[str, Any], tuple[int, int]]:
            return _render_line(request, job, faults, inline)

        def make_meta(
            job: dict[str, Any], kind: str, size: int, lines: int, created: int
        ) -> dict[str, Any]:
            suffix = "" if kind == "output" else "-errors"  # never written: one file
            return {
                "id": f"batch-{job['id']}{suffix}",
                "displayName": f"batch-{job['id']}",
                "mimeType": OUTPUT_MIME,
                "created_at": float(created),
                "source": "GENERATED",
                "_job": job["id"],
                "_internal": inline,
            }

        outputs = self.jobs.write_outputs(job, phase, ended, render, make_meta, one_file=True)
        job["_output"] = outputs.output_file

    def _output(self, job: dict[str, Any], now: float, end: float) -> dict[str, Any] | None:
        """Return the batch's ``output`` once written and past ``output_lag``, else None."""
        file_id = job.get("_output")
        if job.get("_final") is None or not file_id or self.jobs.results_lag(job, now, end):
            return None
        if not job.get("_inline"):
            return {"responsesFile": f"files/{file_id}"}
        rows = [json.loads(raw) for raw in self.store.iter_file_lines(PROVIDER, file_id)]
        if job.get("_embeddings"):
            return {"inlinedEmbedContentResponses": {"inlinedResponses": rows}}
        return {"inlinedResponses": {"inlinedResponses": rows}}

    def _operation(
        self, job: dict[str, Any], now: float, request: Request, created: bool = False
    ) -> dict[str, Any]:
        """Build the Operation for `job` as of `now` (``created``: the create's answer)."""
        phase = self.jobs.phase(job, now)
        total = int(job["_total"])
        if created:
            state, done, end = _STATE["queued"], 0, None
        else:
            state, done, end = (
                self.jobs.status(job, phase),
                phase.done,
                self.jobs.ended_at(job, phase),
            )
        succeeded, failed = split_counts(job, done)
        stats = {
            "requestCount": total,
            "successfulRequestCount": succeeded,
            "failedRequestCount": failed,
            "pendingRequestCount": total - succeeded - failed,
        }
        created_at = float(job["_created"])
        if end is not None:
            updated = end
        elif phase.name == "queued" or created:
            updated = created_at
        else:
            updated = max(created_at, min(now, created_at + float(job["_delay"])))
        embeddings = bool(job.get("_embeddings"))
        metadata: dict[str, Any] = {
            "@type": EMBED_BATCH_TYPE if embeddings else BATCH_TYPE,
            "model": job["model"],
            "displayName": job["displayName"],
        }
        if job.get("_input_file"):
            metadata["inputConfig"] = {"fileName": job["_input_file"]}
        metadata.update(
            {
                "createTime": job["created_at"],
                "updateTime": rfc3339(updated),
                "batchStats": {k: str(v) for k, v in stats.items() if v},
                "state": state,
                "name": job["name"],
            }
        )
        operation: dict[str, Any] = {"name": job["name"], "metadata": metadata}
        if end is None:
            return operation
        metadata["endTime"] = rfc3339(end)
        operation["done"] = True
        if phase.name == "failed":
            code = job_faults(job).get("batch_fail") or "failed"
            operation["error"] = {"code": 8, "message": f"The batch failed: {code} (emulated)."}
            return operation
        output = self._output(job, now, end)
        if output is not None:
            metadata["output"] = output
            kind = EMBED_OUTPUT_TYPE if embeddings else OUTPUT_TYPE
            operation["response"] = {"@type": kind, **output}
        return operation

    def get_batch(self, request: Request) -> Response:
        """``GET /{ver}/batches/{id}``."""
        now = self.clock.now()
        job = self.jobs.read(request.params["batch_id"], now)
        return json_response(self._operation(job, now, request))

    def list_batches(self, request: Request) -> Response:
        """``GET /{ver}/batches``: newest first, ``pageSize`` (default 50, max 1000), ``pageToken``."""
        if request.arg("filter"):
            raise _bad("Invalid argument: filter is not supported.")
        jobs = self.jobs.newest_first()
        page, token = _page(jobs, request, default=50, cap=1000)
        now = self.clock.now()
        operations = [self._operation(self.jobs.refresh(job, now), now, request) for job in page]
        body: dict[str, Any] = {"operations": operations} if operations else {}
        if token:
            body["nextPageToken"] = token
        return json_response(body)

    def cancel_batch(self, request: Request) -> Response:
        """``POST /{ver}/batches/{id}:cancel``: instantly ``BATCH_STATE_CANCELLED``; ``{}``."""
        now = self.clock.now()
        job = self.jobs.cancel(request.params["batch_id"], now, _not_cancellable)
        self.jobs.refresh(job, now)  # terminal at once: write what finished now
        return json_response({})

    def delete_batch(self, request: Request) -> Response:
        """``DELETE /{ver}/batches/{id}``: forget the batch; answers ``{}``."""
        batch_id = request.params["batch_id"]
        job = self.jobs.require(batch_id)
        for file_id in job["_sources"]:
            meta = self.store.get_file(PROVIDER, file_id)
            if meta is not None and meta.get("_internal"):
                self.store.delete_file(PROVIDER, file_id)
        self.store.job_path(PROVIDER, batch_id).unlink(missing_ok=True)
        return json_response({})


def _key(line: RequestLine) -> Any:
    obj = line.obj if isinstance(line.obj, dict) else {}
    return obj.get("key")


def _checked(
    line: RequestLine, embed_model: str | None = None
) -> tuple[dict[str, Any], str | None]:
    """Return the chat body of a line and why it is invalid (None when valid).

    An embeddings line (`embed_model` given) has no chat body: a chat-shaped body holding its
    text stands in, for the fault rules' markers.
    """
    obj = line.obj
    if not isinstance(obj, dict):
        return {}, f"Line {line.line}: not a JSON object."
    if embed_model is not None:
        embed = obj.get("request")
        return gemini_marker_body(embed), gemini_error(embed, embed_model)
    return check_request(obj.get("request"))


def check_request(request: Any) -> tuple[dict[str, Any], str | None]:
    """Read a ``GenerateContentRequest`` as the chat body the reply rule answers.

    Args:
        request: A batch line's ``request``, or the body of a realtime ``generateContent``.

    Returns:
        The chat body and None, or an empty body and why the request is invalid (a 400
        ``INVALID_ARGUMENT`` realtime, an error line with code 3 in a batch).
    """
    try:
        body = chat_body(request)
        validate_body(body)
    except (InvalidGeminiRequest, InvalidRequest) as exc:
        return {}, str(exc)
    return body, None


def _wrap(line: RequestLine, payload: dict[str, Any], inline: bool) -> dict[str, Any]:
    """Attach the line's identity: ``key`` first (file input) or ``metadata`` (inline)."""
    obj = line.obj if isinstance(line.obj, dict) else {}
    if not inline:
        return {"key": obj.get("key"), **payload}
    metadata = obj.get("metadata")
    return {**payload, "metadata": metadata} if metadata is not None else payload


def _render_line(
    line: RequestLine, job: dict[str, Any], faults: dict[str, Any], inline: bool
) -> tuple[bool, dict[str, Any], tuple[int, int]]:
    """Build the responses-file line of one processed request."""
    embed_model = str(job["model"]).removeprefix("models/") if job.get("_embeddings") else None
    body, problem = _checked(line, embed_model)
    if problem is not None:
        return False, _wrap(line, {"error": {"code": 3, "message": problem}}, inline), (0, 0)
    fault = request_fault(faults, job["id"], _key(line), body)
    if fault is not None:
        _, message, _, code = ERROR_SHAPES[PROVIDER][fault]
        return (
            False,
            _wrap(line, {"error": {"code": int(code), "message": message}}, inline),
            (0, 0),
        )
    request = line.obj.get("request") if isinstance(line.obj, dict) else None
    if embed_model is not None:
        answer, tokens = gemini_answer(request, embed_model)
        return True, _wrap(line, {"response": answer}, inline), (tokens, 0)
    reply = compute_reply(body)
    response = render_response(reply, str(job["model"]), _key(line), thinking_budget(request))
    return (
        True,
        _wrap(line, {"response": response}, inline),
        (
            reply.prompt_tokens,
            reply.completion_tokens,
        ),
    )
