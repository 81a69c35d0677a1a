"""OpenAI Files + Batches protocol, served under ``/openai/v1``.

Shapes follow `openai/types/batch.py` and `file_object.py` of the openai SDK and
the reference notes (`shared/reference/provider-batch-apis.md` §1 and §6):

- Lifecycle by the clock (fractions of the job's delay): ``validating`` until
  10 %, ``in_progress`` until 80 % with ``request_counts`` rising, ``finalizing``
  until 100 %, then ``completed``. Cancel: ``cancelling`` for 10 % of the delay
  (at least until the next read), then ``cancelled`` with output lines only for
  requests already done at cancel time.
- Validation is asynchronous like the real API: create succeeds, then the batch
  goes ``validating -> failed`` with ``errors.data[{code, line, message, param}]``.
- Per-request failures (HTTP 400) go to the error file; when no request succeeds
  the batch is still ``completed`` with ``output_file_id: null``.
- Endpoints: ``/v1/chat/completions`` and ``/v1/embeddings``; an embeddings line's ``body``
  is answered by `agent.emulator.embedding_answers` (a deterministic unit vector per input,
  ``encoding_format`` float or base64, ``usage.prompt_tokens``), with the same faults.
- Fault knobs (`agent.emulator.faults`) stored on the job at creation add 429/500
  request failures, ``expired`` batches with ``batch_expired`` lines, shuffled
  result files, late file ids and unknown final statuses.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from agent.emulator import responses_answers
from agent.emulator.answers import (
    InvalidRequest,
    Reply,
    compute_reply,
    line_digest,
    prompt_token_count,
    reshape_completion,
    validate_body,
)
from agent.emulator.clock import Clock
from agent.emulator.embedding_answers import (
    body_texts,
    marker_body,
    openai_answer,
    openai_error,
)
from agent.emulator.faults import (
    BATCH_EXPIRED_ERROR,
    ERROR_SHAPES,
    job_faults,
    longest_delay,
    request_fault,
)
from agent.emulator.file_routes import FileRoutes, public
from agent.emulator.jobs import JobLifecycle, Phase, Timeline, split_counts
from agent.emulator.model_routes import add_model_routes
from agent.emulator.responses_answers import RESPONSES_ENDPOINT
from agent.emulator.result_files import RequestLine
from agent.emulator.store import Provider, Store
from agent.emulator.web import HttpError, Request, Response, json_response

PROVIDER: Provider = "openai"
TIMELINE = Timeline(start=0.1, finalize=0.8)
SUPPORTED_ENDPOINT = "/v1/chat/completions"
EMBEDDINGS_ENDPOINT = "/v1/embeddings"
# What the emulator answers: chat completions (`agent.emulator.answers`), the Responses API
# (`agent.emulator.responses_answers`) and embeddings (`agent.emulator.embedding_answers`).
SUPPORTED_ENDPOINTS = frozenset({SUPPORTED_ENDPOINT, RESPONSES_ENDPOINT, EMBEDDINGS_ENDPOINT})
KNOWN_ENDPOINTS = frozenset(
    {
        "/v1/responses",
        "/v1/chat/completions",
        "/v1/embeddings",
        "/v1/completions",
        "/v1/moderations",
        "/v1/images/generations",
        "/v1/images/edits",
        "/v1/videos",
    }
)
FILE_PURPOSES = frozenset({"assistants", "batch", "fine-tune", "vision", "user_data"})
MAX_TASKS = 50_000
# Cap on validation errors kept on a batch, so a broken 50k-line file stays small.
MAX_REPORTED_ERRORS = 100
BATCH_FILE_TTL = 30 * 86400
BATCH_WINDOW = 86400
MAX_METADATA_PAIRS = 16


def render_error(error: HttpError) -> Response:
    """Render an error in OpenAI's ``{"error": {...}}`` shape."""
    return json_response(
        {
            "error": {
                "message": error.message,
                "type": error.error_type,
                "param": error.param,
                "code": error.code,
            }
        },
        status=error.status,
    )


def _cursor_page(
    items: list[dict[str, Any]], after: str | None, limit: int
) -> tuple[list[dict[str, Any]], bool]:
    """Return the `limit` items after the one with id `after`, and whether more follow.

    An unknown cursor yields an empty page rather than restarting (no loops).
    """
    start = 0
    if after:
        ids = [item["id"] for item in items]
        start = ids.index(after) + 1 if after in ids else len(items)
    return items[start : start + limit], start + limit < len(items)


def _list_response(data: list[dict[str, Any]], has_more: bool) -> Response:
    """Render a page of objects in OpenAI's list envelope."""
    return json_response(
        {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": has_more,
        }
    )


class OpenAIRoutes(FileRoutes):
    """Handlers for the OpenAI protocol.

    Args:
        store: The shared state store.
        clock: The emulator's time source.
    """

    def __init__(self, store: Store, clock: Clock) -> None:
        """Register the routes on a fresh router."""
        super().__init__(PROVIDER, store, clock)
        self.jobs = JobLifecycle(
            store, PROVIDER, TIMELINE, _STATUS, clock, self._produce, _batch_not_found
        )
        self.router.add("POST", "/batches", self.create_batch)
        self.router.add("GET", "/batches", self.list_batches)
        self.router.add("GET", "/batches/{batch_id}", self.get_batch)
        self.router.add("POST", "/batches/{batch_id}/cancel", self.cancel_batch)
        add_model_routes(self.router, "openai")

    # -- files -------------------------------------------------------------------

    def _require_file(self, file_id: str) -> dict[str, Any]:
        meta = self.store.get_file(PROVIDER, file_id)
        if meta is None:
            raise HttpError(
                404, f"No such File object: {file_id}", code="file_not_found", param="id"
            )
        return meta

    def create_file(self, request: Request) -> Response:
        """``POST /files``: store a multipart upload."""
        fields, files = request.multipart()
        purpose = fields.get("purpose")
        if purpose is None:
            raise HttpError(400, "Missing required parameter: 'purpose'.", param="purpose")
        if purpose not in FILE_PURPOSES:
            raise HttpError(400, f"Invalid value for 'purpose': {purpose!r}.", param="purpose")
        upload = files.get("file")
        if upload is None:
            raise HttpError(400, "Missing required parameter: 'file'.", param="file")
        now = int(self.clock.now())
        ttl: int | None = BATCH_FILE_TTL if purpose == "batch" else None
        seconds = fields.get("expires_after[seconds]")
        if seconds is not None:
            try:
                ttl = int(seconds)
            except ValueError as exc:
                raise HttpError(400, "Invalid 'expires_after[seconds]'.") from exc
        meta: dict[str, Any] = {
            "id": f"file-{secrets.token_hex(12)}",
            "object": "file",
            "bytes": 0,
            "created_at": now,
            "filename": upload.filename,
            "purpose": purpose,
            "status": "processed",
            "expires_at": now + ttl if ttl is not None else None,
            "status_details": None,
        }
        self.store.put_file(PROVIDER, meta, [upload.data])
        return json_response(self._file_object(meta))

    def list_files(self, request: Request) -> Response:
        """``GET /files``: cursor paging with ``after``, ``limit`` (1..10000) and ``order``."""
        purpose = request.arg("purpose")
        try:
            limit = max(1, min(10_000, int(request.arg("limit") or 10_000)))
        except ValueError as exc:
            raise HttpError(400, "Invalid 'limit'.", param="limit") from exc
        order = request.arg("order") or "desc"
        if order not in ("asc", "desc"):
            raise HttpError(400, f"Invalid value for 'order': {order!r}.", param="order")
        metas = [m for m in self._file_metas() if purpose is None or m.get("purpose") == purpose]
        if order == "asc":
            metas.reverse()
        page, has_more = _cursor_page(metas, request.arg("after"), limit)
        return _list_response([self._file_object(m) for m in page], has_more)

    def get_file(self, request: Request) -> Response:
        """``GET /files/{id}``."""
        return json_response(self._file_object(self._require_file(request.params["file_id"])))

    # -- batches -----------------------------------------------------------------

    def create_batch(self, request: Request) -> Response:
        """``POST /batches``: accept the batch now, validate it "asynchronously"."""
        body = request.json()
        input_file_id = body.get("input_file_id")
        endpoint = body.get("endpoint")
        window = body.get("completion_window")
        metadata = body.get("metadata")
        if not isinstance(input_file_id, str) or not input_file_id:
            raise HttpError(
                400, "Missing required parameter: 'input_file_id'.", param="input_file_id"
            )
        if not isinstance(endpoint, str):
            raise HttpError(400, "Missing required parameter: 'endpoint'.", param="endpoint")
        if endpoint not in KNOWN_ENDPOINTS:
            raise HttpError(400, f"Invalid value for 'endpoint': {endpoint!r}.", param="endpoint")
        if endpoint not in SUPPORTED_ENDPOINTS:
            # Deliberate limit: the emulator only knows how to answer these.
            raise HttpError(
                400,
                f"The emulator only supports endpoints {', '.join(sorted(SUPPORTED_ENDPOINTS))}.",
                param="endpoint",
            )
        if window != "24h":
            raise HttpError(
                400,
                "Invalid value for 'completion_window': only '24h' is supported.",
                param="completion_window",
            )
        if metadata is not None:
            _check_metadata(metadata)
        meta = self._require_file(input_file_id)
        if meta.get("purpose") != "batch":
            raise HttpError(
                400, f"File {input_file_id} does not have purpose 'batch'.", param="input_file_id"
            )
        now = self.clock.now()
        batch_id = f"batch_{secrets.token_hex(16)}"
        with self.jobs.creating(request.faults.job_record()) as faults:
            scan = _scan_input(self.store, input_file_id, endpoint, batch_id, faults or {})
            limit = request.faults.enqueued_token_limit
            if limit and not scan["errors"]:
                over = self._over_quota(scan["model"], scan["tokens"], limit, now)
                if over is not None:
                    scan["errors"] = [over]
            fields: dict[str, Any] = {
                "id": batch_id,
                "object": "batch",
                "endpoint": endpoint,
                "input_file_id": input_file_id,
                "completion_window": "24h",
                "created_at": int(now),
                "expires_at": int(now) + BATCH_WINDOW,
                "metadata": metadata,
                "model": scan["model"],
                "errors": None,
                "output_file_id": None,
                "error_file_id": None,
                "usage": None,
                "_validation_errors": scan["errors"],
                # What the batch holds of its model's enqueued-token quota while it runs.
                "_enqueued_tokens": 0 if scan["errors"] else scan["tokens"],
            }
            job = self.jobs.record(
                fields,
                now=now,
                sources=[input_file_id],
                total=scan["total"],
                failed=scan["failed"],
                faults=faults,
                invalid=bool(scan["errors"]),
                delay=scan["delay"],
            )
            self.jobs.save(job)
        self.jobs.answer_late(request.faults)
        # The create response is always "validating", whatever the delay.
        return json_response(self._view(job, now, force_status="validating"))

    def _over_quota(
        self, model: str | None, tokens: int, limit: int, now: float
    ) -> dict[str, Any] | None:
        """Return the `token_limit_exceeded` error of a batch over its model's quota, or None.

        The quota holds the prompt tokens of the model's batches that have not ended (OpenAI
        releases a batch's tokens once it completes, fails, expires or is cancelled).
        """
        enqueued = sum(
            int(job.get("_enqueued_tokens") or 0)
            for job in self.jobs.in_flight(now)
            if job.get("model") == model
        )
        if enqueued + tokens <= limit:
            return None
        return _error(
            "token_limit_exceeded",
            None,
            f"Enqueued token limit reached for {model} in organization org-emulator. Limit: "
            f"{limit:,} enqueued tokens. Please try submitting your batch again once you have "
            "fewer enqueued tokens.",
            None,
        )

    def _produce(self, job: dict[str, Any], phase: Phase, ended: float) -> None:
        """Write outputs for a job reaching a terminal phase (called under the lock)."""
        if phase.name == "failed":
            job["errors"] = {"object": "list", "data": job["_validation_errors"]}
            return
        faults = job_faults(job)
        job_id = job["id"]

        def render(
            request: RequestLine, created: int
        ) -> tuple[bool, dict[str, Any], tuple[int, int]]:
            return _render_line(request, created, job_id, faults, job["endpoint"])

        outputs = self.jobs.write_outputs(
            job,
            phase,
            ended,
            render,
            _result_file_meta,
            unfinished=_expired_line if phase.name == "expired" else None,
        )
        job["output_file_id"] = outputs.output_file
        job["error_file_id"] = outputs.error_file
        job["usage"] = _usage(outputs.prompt_tokens, outputs.completion_tokens)

    def _view(
        self, job: dict[str, Any], now: float, force_status: str | None = None
    ) -> dict[str, Any]:
        """Build the wire batch object for `job` as of `now`."""
        phase = self.jobs.phase(job, now)
        status = force_status or self.jobs.status(job, phase)
        created, delay = job["_created"], job["_delay"]
        faults = job_faults(job)
        obj = public(job)
        started = self.jobs.started_at(job)
        finalizing = created + TIMELINE.finalize * delay
        cancel_at = job.get("_cancel_at")
        reached = cancel_at if cancel_at is not None else now
        if force_status == "validating":
            reached = created
        # An expiring batch never enters "finalizing".
        finalizes = not job["_invalid"] and faults.get("expire") is None
        obj.update(
            status=status,
            in_progress_at=int(started) if reached >= started and not job["_invalid"] else None,
            finalizing_at=int(finalizing) if reached >= finalizing and finalizes else None,
            completed_at=None,
            failed_at=None,
            expired_at=None,
            cancelling_at=int(cancel_at) if cancel_at is not None else None,
            cancelled_at=None,
        )
        end = self.jobs.ended_at(job, phase)
        if end is not None and force_status is None:
            stamp = {"done": "completed_at", "failed": "failed_at", "expired": "expired_at"}
            obj[stamp.get(phase.name, "cancelled_at")] = int(end)
            if self.jobs.results_lag(job, now, end):
                # Fault: terminal status first, result file ids a little later.
                obj["output_file_id"] = None
                obj["error_file_id"] = None
        if status in ("validating", "failed"):
            counts = {"total": 0, "completed": 0, "failed": 0}
        else:
            succeeded, failed = split_counts(job, phase.done)
            counts = {"total": job["_total"], "completed": succeeded, "failed": failed}
        obj["request_counts"] = counts
        if obj.get("usage") is None:
            obj["usage"] = _usage(0, 0)
        return obj

    def get_batch(self, request: Request) -> Response:
        """``GET /batches/{id}``."""
        now = self.clock.now()
        job = self.jobs.read(request.params["batch_id"], now)
        return json_response(self._view(job, now))

    def list_batches(self, request: Request) -> Response:
        """``GET /batches``: newest first, cursor paging with ``after`` and ``limit``."""
        try:
            limit = int(request.arg("limit") or 20)
        except ValueError as exc:
            raise HttpError(400, "Invalid 'limit'.", param="limit") from exc
        limit = max(1, min(100, limit))
        page, has_more = _cursor_page(self.jobs.newest_first(), request.arg("after"), limit)
        now = self.clock.now()
        return _list_response(
            [self._view(self.jobs.refresh(job, now), now) for job in page], has_more
        )

    def cancel_batch(self, request: Request) -> Response:
        """``POST /batches/{id}/cancel``: go to ``cancelling``; 400 if already terminal."""
        now = self.clock.now()
        job = self.jobs.cancel(request.params["batch_id"], now, _not_cancellable)
        # Reported as cancelling even with a zero delay: the next read flips it.
        return json_response(self._view(job, now, force_status="cancelling"))


_STATUS = {
    "queued": "validating",
    "running": "in_progress",
    "finalizing": "finalizing",
    "done": "completed",
    "failed": "failed",
    "expired": "expired",
    "cancelling": "cancelling",
    "cancelled": "cancelled",
}


def _batch_not_found(batch_id: str) -> HttpError:
    return HttpError(
        404, f"No batch found with id '{batch_id}'.", code="not_found", param="batch_id"
    )


def _not_cancellable(batch_id: str, status: str) -> HttpError:
    return HttpError(
        400, f"Cannot cancel a batch with status '{status}'.", code="batch_not_cancellable"
    )


def _check_metadata(metadata: Any) -> None:
    if not isinstance(metadata, dict):
        raise HttpError(400, "'metadata' must be an object.", param="metadata")
    if len(metadata) > MAX_METADATA_PAIRS:
        raise HttpError(400, "'metadata' can hold at most 16 pairs.", param="metadata")
    for key, value in metadata.items():
        if not isinstance(value, str) or len(key) > 64 or len(value) > 512:
            raise HttpError(
                400,
                "'metadata' keys must be <= 64 chars and values strings <= 512 chars.",
                param="metadata",
            )


def _usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }


def _error(code: str, line: int | None, message: str, param: str | None) -> dict[str, Any]:
    return {"code": code, "line": line, "message": message, "param": param}


def _scan_input(
    store: Store, file_id: str, endpoint: str, job_id: str, faults: dict[str, Any]
) -> dict[str, Any]:
    """Validate an input file once, at create time, in one streaming pass.

    Args:
        store: The state store.
        file_id: The input file.
        endpoint: The batch endpoint.
        job_id: The new batch's id (seeds the fault draws).
        faults: The job's fault knobs (empty for none).

    Returns:
        ``{"total", "failed", "errors", "model", "delay", "tokens"}``: request count, sorted
        indices of requests that will fail individually, batch-level validation errors
        (shown only once the batch leaves ``validating``), the file's model, the
        delay its requests ask for (``[emulator:delay=S]``; None for none) and its prompt
        tokens (what the enqueued-token quota counts).
    """
    errors: list[dict[str, Any]] = []
    delay: float | None = None
    failed: list[int] = []
    seen: set[str] = set()
    model: str | None = None
    total = 0
    tokens = 0

    def report(error: dict[str, Any]) -> None:
        if len(errors) < MAX_REPORTED_ERRORS:
            errors.append(error)

    for number, raw in enumerate(store.iter_file_lines(PROVIDER, file_id), start=1):
        if not raw.strip():
            continue
        index = total
        total += 1
        try:
            obj = json.loads(raw)
        except ValueError:
            obj = None
        if not isinstance(obj, dict):
            report(
                _error(
                    "invalid_json_line", number, f"Line {number} is not a valid JSON object.", None
                )
            )
            continue
        custom_id = obj.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            report(
                _error(
                    "missing_required_parameter",
                    number,
                    f"Line {number} is missing a string 'custom_id'.",
                    "custom_id",
                )
            )
        elif custom_id in seen:
            report(
                _error(
                    "duplicate_custom_id",
                    number,
                    f"The custom_id '{custom_id}' on line {number} is not unique.",
                    "custom_id",
                )
            )
        else:
            seen.add(custom_id)
        if obj.get("url") != endpoint:
            report(
                _error(
                    "url_mismatch",
                    number,
                    f"The url on line {number} does not match the batch endpoint '{endpoint}'.",
                    "url",
                )
            )
        body = obj.get("body")
        view = fault_body(endpoint, body)
        delay = longest_delay(delay, view)
        tokens += prompt_token_count(view.get("messages") if isinstance(view, dict) else None)
        line_model = body.get("model") if isinstance(body, dict) else None
        if isinstance(line_model, str):
            if model is None:
                model = line_model
            elif line_model != model:
                report(
                    _error(
                        "model_mismatch",
                        number,
                        f"The model on line {number} ('{line_model}') differs from the "
                        f"file's model ('{model}'); a batch file may use one model only.",
                        "body.model",
                    )
                )
        if (
            body_problem(endpoint, body) is not None
            or request_fault(faults, job_id, custom_id, fault_body(endpoint, body)) is not None
        ):
            failed.append(index)
    if faults.get("batch_fail"):
        # Fault: the batch fails as a whole, like one over the enqueued-token limit.
        report(_error(faults["batch_fail"], None, "The batch failed (emulated).", None))
    if total == 0:
        report(_error("empty_file", None, "The input file is empty.", None))
    elif total > MAX_TASKS:
        report(
            _error(
                "too_many_tasks",
                None,
                f"The input file has {total} requests; the limit is {MAX_TASKS}.",
                None,
            )
        )
    return {
        "total": total,
        "failed": failed,
        "errors": errors,
        "model": model,
        "delay": delay,
        "tokens": tokens,
    }


def request_error(body: Any) -> InvalidRequest | None:
    """Return why a chat-completions body fails on its own (a 400), or None if it is answered."""
    try:
        validate_body(body)
    except InvalidRequest as exc:
        return exc
    assert isinstance(body, dict)  # validate_body guarantees it
    if not isinstance(body.get("model"), str) or not body["model"]:
        return InvalidRequest("you must provide a model parameter", "model")
    return None


def body_problem(endpoint: str, body: Any) -> InvalidRequest | None:
    """Return why a line's body fails on its own at `endpoint` (a 400), or None."""
    if endpoint == EMBEDDINGS_ENDPOINT:
        return openai_error(body)
    if endpoint == RESPONSES_ENDPOINT:
        return responses_answers.request_error(body)
    return request_error(body)


def fault_body(endpoint: str, body: Any) -> Any:
    """Return the chat-shaped body the fault rules read markers from.

    An embeddings body's texts, or the chat body a Responses body stands for.
    """
    if endpoint == EMBEDDINGS_ENDPOINT:
        return marker_body(body_texts(body))
    if endpoint == RESPONSES_ENDPOINT:
        return responses_answers.chat_view(body)
    return body


def _error_line(
    custom_id: Any,
    body: Any,
    status: int,
    message: str,
    error_type: str,
    code: str | None,
    param: str | None,
) -> dict[str, Any]:
    """Build the error-file line of a request that failed with an HTTP error."""
    seed = line_digest(custom_id, json.dumps(body, sort_keys=True, default=str))
    return {
        "id": f"batch_req_{seed[:32]}",
        "custom_id": custom_id,
        "response": {
            "status_code": status,
            "request_id": f"req_{seed[32:64]}",
            "body": {
                "error": {"message": message, "type": error_type, "param": param, "code": code}
            },
        },
        "error": None,
    }


def _expired_line(request: RequestLine) -> dict[str, Any]:
    """Build the error-file line of a request unprocessed when the batch expired."""
    obj = request.obj if isinstance(request.obj, dict) else {}
    custom_id = obj.get("custom_id")
    seed = line_digest(custom_id, json.dumps(obj.get("body"), sort_keys=True, default=str))
    return {
        "id": f"batch_req_{seed[:32]}",
        "custom_id": custom_id,
        "response": None,
        "error": dict(BATCH_EXPIRED_ERROR),
    }


def _render_line(
    request: RequestLine,
    created: int,
    job_id: str,
    faults: dict[str, Any],
    endpoint: str = SUPPORTED_ENDPOINT,
) -> tuple[bool, dict[str, Any], tuple[int, int]]:
    """Build the output or error line of one request (see `agent.emulator.answers`)."""
    obj = request.obj if isinstance(request.obj, dict) else {}
    custom_id = obj.get("custom_id")
    body = obj.get("body")
    problem = body_problem(endpoint, body)
    if problem is not None:
        line = _error_line(
            custom_id, body, 400, problem.message, "invalid_request_error", None, problem.param
        )
        return False, line, (0, 0)
    fault = request_fault(faults, job_id, custom_id, fault_body(endpoint, body))
    if fault is not None:
        status, message, error_type, code = ERROR_SHAPES[PROVIDER][fault]
        return False, _error_line(custom_id, body, status, message, error_type, code, None), (0, 0)
    assert isinstance(body, dict)
    if endpoint == EMBEDDINGS_ENDPOINT:
        line, tokens = _embedding_line(custom_id, body)
        return True, line, (tokens, 0)
    completion, reply = (
        responses_answers.response_body(body, created)
        if endpoint == RESPONSES_ENDPOINT
        else completion_body(body, created)
    )
    seed = line_digest(custom_id, reply.digest)
    line = {
        "id": f"batch_req_{seed[:32]}",
        "custom_id": custom_id,
        "response": {
            "status_code": 200,
            "request_id": f"req_{reply.digest[32:64]}",
            "body": completion,
        },
        "error": None,
    }
    return True, line, (reply.prompt_tokens, reply.completion_tokens)


def _embedding_line(custom_id: Any, body: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """Build the output line of an embeddings request and its prompt tokens.

    The answer follows `agent.emulator.embedding_answers`.
    """
    answer, tokens = openai_answer(body)
    seed = line_digest(custom_id, json.dumps(body, sort_keys=True))
    line = {
        "id": f"batch_req_{seed[:32]}",
        "custom_id": custom_id,
        "response": {"status_code": 200, "request_id": f"req_{seed[32:64]}", "body": answer},
        "error": None,
    }
    return line, tokens


def completion_body(body: dict[str, Any], created: int) -> tuple[dict[str, Any], Reply]:
    """Answer a valid chat-completions body: the body of a 200 line, and the reply behind it.

    The batch output line and the realtime ``POST /chat/completions`` carry this same body.

    Args:
        body: A request body `request_error` accepts.
        created: The ``created`` timestamp of the completion.

    Returns:
        The ``chat.completion`` object (odd shapes applied) and the computed `Reply`.
    """
    reply = compute_reply(body)
    completion: dict[str, Any] = {
        "id": f"chatcmpl-{reply.digest[:32]}",
        "object": "chat.completion",
        "created": created,
        "model": body["model"],
        "choices": [
            {
                "index": 0,
                "message": _message(reply),
                "logprobs": None,
                "finish_reason": reply.finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.total_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        "service_tier": "default",
        "system_fingerprint": "fp_emulator",
    }
    return reshape_completion(completion, reply), reply


def _message(reply: Reply) -> dict[str, Any]:
    """Return the assistant message of a completion: text, or tool calls and null content."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": reply.content if not reply.tool_calls else None,
        "refusal": None,
        "annotations": [],
    }
    if reply.tool_calls:
        message["tool_calls"] = [
            {
                "id": f"call_{line_digest(index, reply.digest)[:24]}",
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for index, call in enumerate(reply.tool_calls)
        ]
    return message


def _result_file_meta(
    job: dict[str, Any], kind: str, size: int, lines: int, now: int
) -> dict[str, Any]:
    """Metadata of a batch's output or error file (purpose ``batch_output``), written at `now`."""
    return {
        "id": f"file-{secrets.token_hex(12)}",
        "object": "file",
        "bytes": size,
        "created_at": now,
        "filename": f"{job['id']}_{kind}.jsonl",
        "purpose": "batch_output",
        "status": "processed",
        "expires_at": now + BATCH_FILE_TTL,
        "status_details": None,
    }
