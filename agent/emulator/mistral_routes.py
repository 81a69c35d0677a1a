"""Mistral Files + Batch Jobs protocol, served under ``/mistral/v1``.

Shapes follow `mistralai/client/models/batchjob.py`, `createfileresponse.py`,
`getfileresponse.py`, `listbatchjobsresponse.py` of mistralai 3.7.0 and the
reference notes (`shared/reference/provider-batch-apis.md` §2 and §6):

- Lifecycle by the clock: ``QUEUED`` for the first 20 % of the job's delay,
  ``RUNNING`` (counts rising) until 100 %, then ``SUCCESS``. Cancel:
  ``CANCELLATION_REQUESTED`` for 10 % of the delay (at least until the next read),
  then ``CANCELLED`` with output lines only for requests done at cancel time.
- Jobs are created from uploaded files (``input_files``) and/or inline
  ``requests``; an unknown file is a 404 at create. There is no batch-level
  validation: a bad line becomes an error line in ``error_file`` with
  ``response.status_code`` 400 and Mistral's error object as ``response.body``.
- ``GET /batch/jobs`` filters on ``status`` (repeatable), ``model``,
  ``agent_id``, ``created_after`` and on metadata sent as bare query parameters
  (``job_key=k1``), which is how the SDK serialises ``metadata={...}``.
- Endpoints: ``/v1/chat/completions`` and ``/v1/embeddings``; an embeddings line's ``body``
  (``{"model"?, "input"}``) is answered by `agent.emulator.embedding_answers`, with the same
  faults.
- Fault knobs (`agent.emulator.faults`) stored on the job at creation add 429/500
  request failures, ``TIMEOUT_EXCEEDED`` jobs (no line for unfinished requests),
  shuffled result files, late file ids and unknown final statuses;
  ``pending_request_limit=N`` refuses (429, nothing created) a create that would put more than
  N requests in the workspace's jobs not yet ended (`agent.emulator.caps`).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from agent.emulator.answers import (
    InvalidRequest,
    Reply,
    compute_reply,
    line_digest,
    reshape_completion,
    validate_body,
)
from agent.emulator.caps import over_cap, pending_requests_refused, requests_held
from agent.emulator.clock import Clock
from agent.emulator.embedding_answers import body_texts, marker_body, mistral_answer, mistral_error
from agent.emulator.faults import ERROR_SHAPES, job_faults, longest_delay, request_fault
from agent.emulator.file_routes import FileRoutes, public
from agent.emulator.jobs import JobLifecycle, Phase, Timeline, split_counts
from agent.emulator.model_routes import add_model_routes
from agent.emulator.result_files import RequestLine, iter_requests
from agent.emulator.store import Provider, Store
from agent.emulator.web import HttpError, Request, Response, json_response

PROVIDER: Provider = "mistral"
TIMELINE = Timeline(start=0.2, finalize=1.0)
SUPPORTED_ENDPOINT = "/v1/chat/completions"
EMBEDDINGS_ENDPOINT = "/v1/embeddings"
# What the emulator answers (`agent.emulator.answers`, `agent.emulator.embedding_answers`).
SUPPORTED_ENDPOINTS = frozenset({SUPPORTED_ENDPOINT, EMBEDDINGS_ENDPOINT})
# Query parameters of GET /batch/jobs that are not metadata filters.
LIST_PARAMS = frozenset(
    {
        "page",
        "page_size",
        "model",
        "agent_id",
        "created_after",
        "created_by_me",
        "status",
        "order_by",
    }
)
_STATUS = {
    "queued": "QUEUED",
    "running": "RUNNING",
    "finalizing": "RUNNING",
    "done": "SUCCESS",
    "failed": "FAILED",
    "expired": "TIMEOUT_EXCEEDED",
    "cancelling": "CANCELLATION_REQUESTED",
    "cancelled": "CANCELLED",
}


def render_error(error: HttpError) -> Response:
    """Render an error in Mistral's flat ``{"object": "error", ...}`` shape."""
    return json_response(
        {
            "object": "error",
            "message": error.message,
            "type": error.error_type,
            "param": error.param,
            "code": error.code,
        },
        status=error.status,
    )


def _page_args(request: Request) -> tuple[int, int]:
    """Read a listing's ``page`` (default 0) and ``page_size`` (default 100), as both take them."""
    try:
        page = max(0, int(request.arg("page") or 0))
        page_size = max(1, int(request.arg("page_size") or 100))
    except ValueError as exc:
        raise HttpError(400, "'page' and 'page_size' must be integers.") from exc
    return page, page_size


class MistralRoutes(FileRoutes):
    """Handlers for the Mistral protocol.

    Args:
        store: The shared state store.
        clock: The emulator's time source.
    """

    def __init__(self, store: Store, clock: Clock) -> None:
        """Register the routes on a fresh router."""
        super().__init__(PROVIDER, store, clock)
        self.jobs = JobLifecycle(
            store, PROVIDER, TIMELINE, _STATUS, clock, self._produce, _job_not_found
        )
        self.router.add("POST", "/batch/jobs", self.create_job)
        self.router.add("GET", "/batch/jobs", self.list_jobs)
        self.router.add("GET", "/batch/jobs/{job_id}", self.get_job)
        self.router.add("POST", "/batch/jobs/{job_id}/cancel", self.cancel_job)
        add_model_routes(self.router, "mistral")

    # -- files -------------------------------------------------------------------

    def _require_file(self, file_id: str) -> dict[str, Any]:
        meta = self.store.get_file(PROVIDER, file_id)
        if meta is None or meta.get("_internal"):
            raise HttpError(
                404, f"File {file_id} not found.", error_type="not_found", code="not_found"
            )
        return meta

    def create_file(self, request: Request) -> Response:
        """``POST /files``: store a multipart upload."""
        fields, files = request.multipart()
        upload = files.get("file")
        if upload is None:
            raise HttpError(400, "Missing required field 'file'.", param="file")
        purpose = fields.get("purpose") or "fine-tune"
        meta: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "object": "file",
            "bytes": 0,
            "created_at": int(self.clock.now()),
            "filename": upload.filename,
            "purpose": purpose,
            "sample_type": "batch_request" if purpose == "batch" else "instruct",
            "source": "upload",
            "num_lines": None,
            "mimetype": upload.content_type or None,
            "signature": None,
            "expires_at": None,
            "visibility": fields.get("visibility") or "workspace",
        }
        self.store.put_file(PROVIDER, meta, [upload.data])
        # Count lines from disk, chunk by chunk, rather than copying the upload.
        meta["num_lines"] = _count_lines(self.store.iter_file_chunks(PROVIDER, meta["id"]))
        self.store.put_file_meta(PROVIDER, meta)
        return json_response(self._file_object(meta))

    def list_files(self, request: Request) -> Response:
        """``GET /files``: newest first, ``page`` / ``page_size`` (default 100) and ``purpose``."""
        page, page_size = _page_args(request)
        purpose = request.arg("purpose")
        metas = [
            m
            for m in self._file_metas()
            if not m.get("_internal") and (purpose is None or m.get("purpose") == purpose)
        ]
        window = metas[page * page_size : (page + 1) * page_size]
        return json_response(
            {"object": "list", "data": [self._file_object(m) for m in window], "total": len(metas)}
        )

    def get_file(self, request: Request) -> Response:
        """``GET /files/{id}``."""
        obj = self._file_object(self._require_file(request.params["file_id"]))
        obj["deleted"] = False
        return json_response(obj)

    # -- batch jobs ----------------------------------------------------------------

    def create_job(self, request: Request) -> Response:
        """``POST /batch/jobs``: from ``input_files`` and/or inline ``requests``."""
        body = request.json()
        endpoint = body.get("endpoint")
        input_files = body.get("input_files") or []
        inline = body.get("requests") or []
        model = body.get("model")
        metadata = body.get("metadata")
        if not isinstance(endpoint, str):
            raise HttpError(400, "Missing required field 'endpoint'.", param="endpoint")
        if endpoint not in SUPPORTED_ENDPOINTS:
            # Deliberate limit: the emulator only knows how to answer these.
            raise HttpError(
                400,
                f"The emulator only supports endpoints {', '.join(sorted(SUPPORTED_ENDPOINTS))}.",
                param="endpoint",
            )
        if not isinstance(input_files, list) or not all(isinstance(f, str) for f in input_files):
            raise HttpError(400, "'input_files' must be a list of file ids.", param="input_files")
        if not isinstance(inline, list):
            raise HttpError(400, "'requests' must be a list.", param="requests")
        if not input_files and not inline:
            raise HttpError(400, "One of 'input_files' or 'requests' is required.")
        if model is not None and not isinstance(model, str):
            raise HttpError(400, "'model' must be a string.", param="model")
        if metadata is not None and (
            not isinstance(metadata, dict)
            or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
        ):
            raise HttpError(400, "'metadata' must map strings to strings.", param="metadata")
        for file_id in input_files:
            self._require_file(file_id)
        now = self.clock.now()
        job_id = str(uuid.uuid4())
        sources = list(input_files)
        if inline:
            # Inline requests are kept as a private JSONL file so that one code
            # path streams every job's requests.
            inline_id = str(uuid.uuid4())
            self.store.put_file(
                PROVIDER,
                {"id": inline_id, "_internal": True, "created_at": int(now)},
                (json.dumps(item, separators=(",", ":")).encode() + b"\n" for item in inline),
            )
            sources.append(inline_id)
        with self.jobs.creating(request.faults.job_record()) as faults:
            total, failed, delay = _scan_requests(
                self.store, sources, model, job_id, faults or {}, endpoint
            )
            limit = request.faults.pending_request_limit
            if limit:
                pending = requests_held(self.jobs.in_flight(now))
                if over_cap(pending, total, limit):
                    if inline:
                        self.store.delete_file(PROVIDER, sources[-1])
                    raise pending_requests_refused(pending, total, limit)
            fields: dict[str, Any] = {
                "id": job_id,
                "object": "batch",
                "input_files": list(input_files),
                "endpoint": endpoint,
                "errors": [],
                "created_at": int(now),
                "metadata": metadata,
                "model": model,
                "agent_id": body.get("agent_id"),
                "timeout_hours": body.get("timeout_hours", 24),
                "output_file": None,
                "error_file": None,
            }
            job = self.jobs.record(
                fields,
                now=now,
                sources=sources,
                total=total,
                failed=failed,
                faults=faults,
                delay=delay,
            )
            self.jobs.save(job)
        self.jobs.answer_late(request.faults)
        # The create response is always QUEUED, whatever the delay.
        return json_response(self._view(job, now, force_status="QUEUED"))

    def _produce(self, job: dict[str, Any], phase: Phase, ended: float) -> None:
        """Write outputs for a job reaching a terminal phase (called under the lock)."""
        model = job.get("model")
        faults = job_faults(job)
        job_id = job["id"]

        def render(
            request: RequestLine, created: int
        ) -> tuple[bool, dict[str, Any], tuple[int, int]]:
            return _render_line(request, created, model, job_id, faults, job["endpoint"])

        # An expired job writes no line for its unfinished requests (no `unfinished`).
        outputs = self.jobs.write_outputs(job, phase, ended, render, _result_file_meta)
        job["output_file"] = outputs.output_file
        job["error_file"] = outputs.error_file

    def _view(
        self,
        job: dict[str, Any],
        now: float,
        force_status: str | None = None,
        inline: bool = False,
    ) -> dict[str, Any]:
        """Build the wire job object for `job` as of `now`."""
        phase = self.jobs.phase(job, now)
        status = force_status or self.jobs.status(job, phase)
        obj = public(job)
        obj.pop("timeout_hours", None)
        started = self.jobs.started_at(job)
        cancel_at = job.get("_cancel_at")
        reached = cancel_at if cancel_at is not None else now
        if force_status == "QUEUED":
            reached = job["_created"]
        obj["status"] = status
        obj["started_at"] = int(started) if reached >= started else None
        end = self.jobs.ended_at(job, phase)
        ended = end is not None and force_status is None
        obj["completed_at"] = int(end) if end is not None and ended else None
        lagging = False
        if end is not None and ended:
            lagging = self.jobs.results_lag(job, now, end)
            if lagging:
                # Fault: terminal status first, result file ids a little later.
                obj["output_file"] = None
                obj["error_file"] = None
        done = 0 if status == "QUEUED" else phase.done
        succeeded, failed = split_counts(job, done)
        obj.update(
            total_requests=job["_total"],
            completed_requests=done,
            succeeded_requests=succeeded,
            failed_requests=failed,
        )
        if inline and job.get("_final") is not None and not lagging:
            obj["outputs"] = list(self._inline_outputs(job))
        return obj

    def _inline_outputs(self, job: dict[str, Any]) -> Iterator[dict[str, Any]]:
        for key in ("output_file", "error_file"):
            file_id = job.get(key)
            if file_id:
                for raw in self.store.iter_file_lines(PROVIDER, file_id):
                    yield json.loads(raw)

    def get_job(self, request: Request) -> Response:
        """``GET /batch/jobs/{id}[?inline=true]``."""
        now = self.clock.now()
        job = self.jobs.read(request.params["job_id"], now)
        inline = (request.arg("inline") or "").lower() == "true"
        return json_response(self._view(job, now, inline=inline))

    def list_jobs(self, request: Request) -> Response:
        """``GET /batch/jobs``: filtered, ordered and paged like the real endpoint."""
        page, page_size = _page_args(request)
        statuses = set(request.query.get("status", []))
        model = request.arg("model")
        agent_id = request.arg("agent_id")
        created_after = _parse_time(request.arg("created_after"))
        metadata_filter = {
            key: values[-1] for key, values in request.query.items() if key not in LIST_PARAMS
        }
        newest_first = (request.arg("order_by") or "-created") != "created"
        now = self.clock.now()
        selected = []
        jobs = self.jobs.newest_first()
        for job in jobs if newest_first else reversed(jobs):
            if model and job.get("model") != model:
                continue
            if agent_id and job.get("agent_id") != agent_id:
                continue
            if created_after is not None and job["_created"] < created_after:
                continue
            job_metadata = job.get("metadata") or {}
            if any(job_metadata.get(k) != v for k, v in metadata_filter.items()):
                continue
            if statuses and self.jobs.status_now(job, now) not in statuses:
                continue
            selected.append(job)
        window = selected[page * page_size : (page + 1) * page_size]
        data = [self._view(self.jobs.refresh(job, now), now) for job in window]
        return json_response({"object": "list", "data": data, "total": len(selected)})

    def cancel_job(self, request: Request) -> Response:
        """``POST /batch/jobs/{id}/cancel``; 400 if the job is already terminal."""
        now = self.clock.now()
        job = self.jobs.cancel(request.params["job_id"], now, _not_cancellable)
        return json_response(self._view(job, now, force_status="CANCELLATION_REQUESTED"))


def _not_cancellable(job_id: str, status: str) -> HttpError:
    return HttpError(
        400, f"Batch job {job_id} is {status} and cannot be cancelled.", code="job_not_cancellable"
    )


def _job_not_found(job_id: str) -> HttpError:
    return HttpError(
        404, f"Batch job {job_id} not found.", error_type="not_found", code="not_found"
    )


def _count_lines(chunks: Iterator[bytes]) -> int:
    count = 0
    last = b""
    for chunk in chunks:
        count += chunk.count(b"\n")
        last = chunk
    # A final line without a trailing newline still counts.
    return count + (1 if last and not last.endswith(b"\n") else 0)


def _parse_time(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError as exc:
        raise HttpError(
            400, "'created_after' must be an ISO 8601 datetime.", param="created_after"
        ) from exc


def _request_error(
    obj: Any, model: str | None, endpoint: str = SUPPORTED_ENDPOINT
) -> InvalidRequest | None:
    """Return why a request line fails on its own, or None if it is answered."""
    if not isinstance(obj, dict):
        return InvalidRequest("The line is not a valid JSON object.", None)
    if endpoint == EMBEDDINGS_ENDPOINT:
        return mistral_error(obj.get("body"), model)
    return body_error(obj.get("body"), model)


def _fault_body(endpoint: str, body: Any) -> Any:
    """Return the chat-shaped body the fault rules read markers from (an embeddings' texts)."""
    return marker_body(body_texts(body)) if endpoint == EMBEDDINGS_ENDPOINT else body


def body_error(body: Any, model: str | None = None) -> InvalidRequest | None:
    """Return why a chat body fails on its own (a 400), or None if it is answered.

    Args:
        body: The request body (a batch line's ``body``, or a realtime request's).
        model: The batch job's model, standing in for a body without one (None in realtime).
    """
    try:
        validate_body(body)
    except InvalidRequest as exc:
        return exc
    assert isinstance(body, dict)  # validate_body guarantees it
    if not model and not (isinstance(body.get("model"), str) and body["model"]):
        return InvalidRequest("A model is required: set it on the job or in the body.", "model")
    return None


def _scan_requests(
    store: Store,
    sources: list[str],
    model: str | None,
    job_id: str,
    faults: dict[str, Any],
    endpoint: str = SUPPORTED_ENDPOINT,
) -> tuple[int, list[int], float | None]:
    """Count the requests, find the ones that will fail and the delay they ask for, in one pass.

    Returns:
        The request count, the sorted indices of the requests that will fail and the job
        delay the requests ask for with ``[emulator:delay=S]`` (None for none).
    """
    total = 0
    failed: list[int] = []
    delay: float | None = None
    for request in iter_requests(store, PROVIDER, sources):
        total += 1
        obj = request.obj if isinstance(request.obj, dict) else {}
        delay = longest_delay(delay, _fault_body(endpoint, obj.get("body")))
        if _request_error(request.obj, model, endpoint) is not None or _fault(
            request, job_id, faults, endpoint
        ):
            failed.append(request.index)
    return total, failed, delay


def _custom_id(request: RequestLine) -> Any:
    """Return a line's custom_id (optional on Mistral: its position stands in)."""
    obj = request.obj if isinstance(request.obj, dict) else {}
    custom_id = obj.get("custom_id")
    return str(request.index) if custom_id is None else custom_id


def _fault(
    request: RequestLine, job_id: str, faults: dict[str, Any], endpoint: str = SUPPORTED_ENDPOINT
) -> str | None:
    """Return the injected failure kind of a (valid) request line, if any."""
    obj = request.obj if isinstance(request.obj, dict) else {}
    body = _fault_body(endpoint, obj.get("body"))
    return request_fault(faults, job_id, _custom_id(request), body)


def _error_line(
    custom_id: Any,
    body: Any,
    status: int,
    message: str,
    error_type: str,
    code: str | None,
    param: str | None,
) -> dict[str, Any]:
    """Build an error-file line: HTTP status and Mistral's error object as body."""
    seed = line_digest(custom_id, json.dumps(body, sort_keys=True, default=str))
    return {
        "id": f"batch-{seed[:32]}",
        "custom_id": custom_id,
        "response": {
            "status_code": status,
            "body": {
                "object": "error",
                "message": message,
                "type": error_type,
                "param": param,
                "code": code,
            },
        },
        "error": None,
    }


def _render_line(
    request: RequestLine,
    created: int,
    job_model: str | None,
    job_id: str,
    faults: dict[str, Any],
    endpoint: str = SUPPORTED_ENDPOINT,
) -> tuple[bool, dict[str, Any], tuple[int, int]]:
    """Build the output or error line of one request (see `agent.emulator.answers`)."""
    obj = request.obj if isinstance(request.obj, dict) else {}
    # Mistral makes custom_id optional; the line position keeps results joinable.
    custom_id = _custom_id(request)
    body = obj.get("body")
    problem = _request_error(request.obj, job_model, endpoint)
    if problem is not None:
        line = _error_line(
            custom_id, body, 400, problem.message, "invalid_request_error", None, problem.param
        )
        return False, line, (0, 0)
    fault = _fault(request, job_id, faults, endpoint)
    if fault is not None:
        status, message, error_type, code = ERROR_SHAPES[PROVIDER][fault]
        return False, _error_line(custom_id, body, status, message, error_type, code, None), (0, 0)
    assert isinstance(body, dict)
    if endpoint == EMBEDDINGS_ENDPOINT:
        answer, tokens = mistral_answer(body, job_model)
        seed = line_digest(custom_id, answer["id"])
        line = {
            "id": f"batch-{seed[:32]}",
            "custom_id": custom_id,
            "response": {"status_code": 200, "body": answer},
            "error": None,
        }
        return True, line, (tokens, 0)
    completion, reply = completion_body(body, created, job_model)
    seed = line_digest(custom_id, reply.digest)
    line = {
        "id": f"batch-{seed[:32]}",
        "custom_id": custom_id,
        "response": {"status_code": 200, "body": completion},
        "error": None,
    }
    return True, line, (reply.prompt_tokens, reply.completion_tokens)


def completion_body(
    body: dict[str, Any], created: int, job_model: str | None = None
) -> tuple[dict[str, Any], Reply]:
    """Answer a valid chat body: the body of a 200 line, and the reply behind it.

    The batch output line and the realtime ``POST /chat/completions`` carry this same body.

    Args:
        body: A request body `body_error` accepts.
        created: The ``created`` timestamp of the completion.
        job_model: The batch job's model, which wins over the body's (None in realtime).

    Returns:
        The ``chat.completion`` object (odd shapes applied) and the computed `Reply`.
    """
    reply = compute_reply(body)
    completion: dict[str, Any] = {
        "id": reply.digest[:32],
        "object": "chat.completion",
        "created": created,
        "model": job_model or body.get("model"),
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": reply.content,
                    "tool_calls": _tool_calls(reply),
                    "prefix": False,
                },
                "finish_reason": reply.finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "total_tokens": reply.total_tokens,
        },
    }
    return reshape_completion(completion, reply), reply  # odd shapes asked for by markers


def _tool_calls(reply: Reply) -> list[dict[str, Any]] | None:
    """Return Mistral's tool calls (9-character ids, JSON string arguments), None for none."""
    if not reply.tool_calls:
        return None
    return [
        {
            "id": line_digest(index, reply.digest)[:9],
            "type": "function",
            "function": {"name": call.name, "arguments": call.arguments},
            "index": index,
        }
        for index, call in enumerate(reply.tool_calls)
    ]


def _result_file_meta(
    job: dict[str, Any], kind: str, size: int, lines: int, now: int
) -> dict[str, Any]:
    """Metadata of a job's output or error file, written at `now`."""
    return {
        "id": str(uuid.uuid4()),
        "object": "file",
        "bytes": size,
        "created_at": now,
        "filename": f"{job['id']}_{kind}.jsonl",
        "purpose": "batch",
        "sample_type": "batch_result" if kind == "output" else "batch_error",
        "source": "mistral",
        "num_lines": lines,
        "mimetype": "application/jsonl",
        "signature": None,
        "expires_at": None,
        "visibility": "workspace",
    }
