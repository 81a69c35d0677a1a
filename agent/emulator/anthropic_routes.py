"""Anthropic Message Batches protocol, served under ``/anthropic/v1``.

Shapes follow `anthropic/types/messages/message_batch*.py` of anthropic 2.12 and the reference
notes (`shared/reference/provider-batch-apis.md` §3 and §6):

- Requests arrive inline: ``POST /messages/batches`` with ``{"requests": [{"custom_id",
  "params"}]}``. The envelope is checked at once, like the real API's schema validation: 1 to
  100,000 requests, each ``custom_id`` unique and matching ``^[a-zA-Z0-9_-]{1,64}$``, ``params``
  an object, the body at most 256 MB (else 413 ``request_too_large``). A bad ``params`` object
  does not fail the batch: that request ends ``errored`` with an ``invalid_request_error``.
- Lifecycle by the clock: ``in_progress`` until the job's delay has passed, then ``ended``.
  ``request_counts`` say ``processing: total`` until the batch ends and only then split into
  ``succeeded`` / ``errored`` / ``canceled`` / ``expired`` (as the real API does). Cancel:
  ``canceling`` for 10 % of the delay (at least until the next read), then ``ended``, with
  ``cancel_initiated_at`` set and ``canceled`` results for the requests not done at cancel time.
- ``results_url`` is absolute (built from the request's host, so the SDK's ``results()``, which
  follows it, works in process and over loopback) and set only once the batch has ended. The
  results are one JSONL stream with one line per request, ``{"custom_id", "result": {"type":
  "succeeded", "message"} | {"type": "errored", "error"} | {"type": "canceled"} | {"type":
  "expired"}}``, in no guaranteed order.
- Answers follow `agent.emulator.answers` (the top-level ``system`` counts as a first message);
  ``stop_reason`` is ``max_tokens`` when the reply was cut, else ``end_turn``; usage carries
  ``service_tier: "batch"``.
- Fault knobs (`agent.emulator.faults`) apply as for the other protocols: ``errored`` results
  (``rate_limit_error`` / ``api_error``), ``expired`` results, shuffled results, a late
  ``results_url``, an unknown final ``processing_status``, slow creates and HTTP errors;
  ``queued_request_limit=N`` refuses (429, nothing created) a create that would put more than N
  requests in the processing queue (`agent.emulator.caps`).
- Every call needs the ``anthropic-version`` header, as the real API does.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from typing import Any

from agent.emulator.answers import Reply, compute_reply, line_digest, reshape_message
from agent.emulator.caps import over_cap, queue_refused, requests_held
from agent.emulator.clock import Clock
from agent.emulator.faults import ERROR_SHAPES, job_faults, longest_delay, request_fault
from agent.emulator.jobs import JobLifecycle, Phase, Timeline, split_counts
from agent.emulator.model_routes import add_model_routes
from agent.emulator.result_files import RequestLine, iter_requests
from agent.emulator.store import Provider, Store
from agent.emulator.web import HttpError, Request, Response, Router, json_response, rfc3339

PROVIDER: Provider = "anthropic"
PREFIX = "/anthropic/v1"
# No queued phase: a batch is `in_progress` from its creation.
TIMELINE = Timeline(start=0.0, finalize=1.0)
MAX_REQUESTS = 100_000
MAX_BODY_BYTES = 256 * 1000 * 1000
BATCH_WINDOW = 86400
CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
MESSAGE_ROLES = frozenset({"user", "assistant", "system"})

# HTTP status -> Anthropic error type (`anthropic/types/shared/*_error.py`).
ERROR_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
_STATUS = {
    "queued": "in_progress",
    "running": "in_progress",
    "finalizing": "in_progress",
    "cancelling": "canceling",
    "done": "ended",
    "failed": "ended",
    "expired": "ended",
    "cancelled": "ended",
}


def render_error(error: HttpError) -> Response:
    """Render an error in Anthropic's ``{"type": "error", "error": {type, message}}`` shape."""
    error_type = ERROR_TYPES.get(error.status)
    if error_type is None or error.status == 400:
        error_type = (
            error.error_type
            if error.error_type.endswith("_error") and error.status < 500
            else ("api_error" if error.status >= 500 else "invalid_request_error")
        )
    return json_response(
        {
            "type": "error",
            "error": {"type": error_type, "message": error.message},
            "request_id": f"req_emulator_{secrets.token_hex(12)}",
        },
        status=error.status,
    )


class AnthropicRoutes:
    """Handlers for the Anthropic Message Batches protocol.

    Args:
        store: The shared state store.
        clock: The emulator's time source.
    """

    def __init__(self, store: Store, clock: Clock) -> None:
        """Register the routes on a fresh router."""
        self.store = store
        self.clock = clock
        self.jobs = JobLifecycle(
            store, PROVIDER, TIMELINE, _STATUS, clock, self._produce, _batch_not_found
        )
        self.router = Router()
        self.router.add("POST", "/messages/batches", self.create_batch)
        self.router.add("GET", "/messages/batches", self.list_batches)
        self.router.add("GET", "/messages/batches/{batch_id}", self.get_batch)
        self.router.add("DELETE", "/messages/batches/{batch_id}", self.delete_batch)
        self.router.add("POST", "/messages/batches/{batch_id}/cancel", self.cancel_batch)
        self.router.add("GET", "/messages/batches/{batch_id}/results", self.results)
        add_model_routes(self.router, "anthropic")

    def handle(self, request: Request) -> Response:
        """Dispatch a request whose path is relative to ``/anthropic/v1``."""
        if not request.header("anthropic-version"):
            raise HttpError(400, "anthropic-version: header is required")
        return self.router.dispatch(request)

    # -- batches -----------------------------------------------------------------

    def create_batch(self, request: Request) -> Response:
        """``POST /messages/batches``: check the envelope now, the params when processing."""
        if len(request.body()) > MAX_BODY_BYTES:
            raise HttpError(
                413, f"Request exceeds the maximum size of {MAX_BODY_BYTES} bytes for a batch."
            )
        items = request.json().get("requests")
        _check_envelope(items)
        assert isinstance(items, list)
        now = self.clock.now()
        batch_id = f"msgbatch_{secrets.token_hex(12)}"
        source = f"msgbatchreq_{secrets.token_hex(12)}"
        # The requests are kept as a private JSONL file so one code path streams every job.
        self.store.put_file(
            PROVIDER,
            {"id": source, "_internal": True, "created_at": int(now)},
            (json.dumps(item, separators=(",", ":")).encode() + b"\n" for item in items),
        )
        with self.jobs.creating(request.faults.job_record()) as faults:
            limit = request.faults.queued_request_limit
            if limit:
                queued = requests_held(self.jobs.in_flight(now))
                if over_cap(queued, len(items), limit):
                    self.store.delete_file(PROVIDER, source)
                    raise queue_refused(queued, len(items), limit)
            failed: list[int] = []
            delay: float | None = None
            for r in iter_requests(self.store, PROVIDER, [source]):
                params = _params(r)
                delay = longest_delay(delay, params)
                if (
                    request_error(params) is not None
                    or request_fault(faults or {}, batch_id, _custom_id(r), params) is not None
                ):
                    failed.append(r.index)
            fields: dict[str, Any] = {
                "id": batch_id,
                "type": "message_batch",
                "created_at": rfc3339(now),
                "expires_at": rfc3339(now + BATCH_WINDOW),
                "archived_at": None,
                "metadata": None,
            }
            job = self.jobs.record(
                fields,
                now=now,
                sources=[source],
                total=len(items),
                failed=failed,
                faults=faults,
                delay=delay,
            )
            self.jobs.save(job)
        self.jobs.answer_late(request.faults)
        return json_response(self._view(job, now, request, force_status="in_progress"))

    def _produce(self, job: dict[str, Any], phase: Phase, ended: float) -> None:
        """Write the results for a batch reaching a terminal phase (called under the lock)."""
        faults = job_faults(job)
        job_id = job["id"]

        def render(
            request: RequestLine, created: int
        ) -> tuple[bool, dict[str, Any], tuple[int, int]]:
            return _render_line(request, job_id, faults)

        left = {"cancelled": "canceled", "expired": "expired"}.get(phase.name)
        outputs = self.jobs.write_outputs(
            job,
            phase,
            ended,
            render,
            _result_file_meta,
            unfinished=(lambda r: _unfinished_line(r, left)) if left else None,
        )
        # Anthropic serves one stream: successes, then errored/canceled/expired lines.
        job["_results_ok"] = outputs.output_file
        job["_results_other"] = outputs.error_file

    def _view(
        self,
        job: dict[str, Any],
        now: float,
        request: Request,
        force_status: str | None = None,
    ) -> dict[str, Any]:
        """Build the wire batch object for `job` as of `now`."""
        phase = self.jobs.phase(job, now)
        status = force_status or self.jobs.status(job, phase)
        total = job["_total"]
        counts = {"processing": total, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        end = self.jobs.ended_at(job, phase)
        ended = end is not None and force_status is None
        results_url = None
        if ended:
            assert end is not None
            succeeded, failed = split_counts(job, phase.done)
            left = total - phase.done
            counts = {
                "processing": 0,
                "succeeded": succeeded,
                "errored": failed,
                "canceled": left if phase.name == "cancelled" else 0,
                "expired": left if phase.name == "expired" else 0,
            }
            if self._results_ready(job, now, end):
                results_url = f"{request.root_url()}{PREFIX}/messages/batches/{job['id']}/results"
        cancel_at = job.get("_cancel_at")
        return {
            "id": job["id"],
            "type": "message_batch",
            "processing_status": status,
            "request_counts": counts,
            "ended_at": rfc3339(end) if ended and end is not None else None,
            "created_at": job["created_at"],
            "expires_at": job["expires_at"],
            "archived_at": None,
            "cancel_initiated_at": rfc3339(cancel_at) if cancel_at is not None else None,
            "results_url": results_url,
        }

    def _results_ready(self, job: dict[str, Any], now: float, end: float) -> bool:
        """Results exist once finalised, and after the ``output_lag`` fault has passed."""
        return job.get("_final") is not None and not self.jobs.results_lag(job, now, end)

    def get_batch(self, request: Request) -> Response:
        """``GET /messages/batches/{id}``."""
        now = self.clock.now()
        job = self.jobs.read(request.params["batch_id"], now)
        return json_response(self._view(job, now, request))

    def list_batches(self, request: Request) -> Response:
        """``GET /messages/batches``: newest first, ``limit`` (1..1000) and id cursors."""
        try:
            limit = max(1, min(1000, int(request.arg("limit") or 20)))
        except ValueError as exc:
            raise HttpError(400, "limit: Input should be a valid integer") from exc
        jobs = self.jobs.newest_first()
        ids = [j["id"] for j in jobs]
        after, before = request.arg("after_id"), request.arg("before_id")
        if after:
            # An unknown cursor yields an empty page rather than restarting (no loops).
            start = ids.index(after) + 1 if after in ids else len(jobs)
            page, has_more = jobs[start : start + limit], start + limit < len(jobs)
        elif before:
            stop = ids.index(before) if before in ids else 0
            page, has_more = jobs[max(0, stop - limit) : stop], stop - limit > 0
        else:
            page, has_more = jobs[:limit], limit < len(jobs)
        now = self.clock.now()
        data = [self._view(self.jobs.refresh(job, now), now, request) for job in page]
        return json_response(
            {
                "data": data,
                "has_more": has_more,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            }
        )

    def cancel_batch(self, request: Request) -> Response:
        """``POST /messages/batches/{id}/cancel``: go to ``canceling``; 400 once ended."""
        # A repeated cancel while canceling is a no-op that echoes the batch.
        now = self.clock.now()
        job = self.jobs.cancel(request.params["batch_id"], now, _not_cancellable)
        return json_response(self._view(job, now, request, force_status="canceling"))

    def delete_batch(self, request: Request) -> Response:
        """``DELETE /messages/batches/{id}``: only once processing has ended."""
        batch_id = request.params["batch_id"]
        job = self.jobs.read(batch_id, self.clock.now())
        if job.get("_final") is None:
            raise HttpError(
                400, f"Message batch {batch_id} is still processing; cancel it before deleting it."
            )
        for file_id in _result_files(job) + list(job["_sources"]):
            self.store.delete_file(PROVIDER, file_id)
        self.store.job_path(PROVIDER, batch_id).unlink(missing_ok=True)
        return json_response({"id": batch_id, "type": "message_batch_deleted"})

    def results(self, request: Request) -> Response:
        """``GET /messages/batches/{id}/results``: the JSONL results, once the batch ended."""
        batch_id = request.params["batch_id"]
        now = self.clock.now()
        job = self.jobs.read(batch_id, now)
        end = self.jobs.ended_at(job, self.jobs.phase(job, now))
        if end is None or not self._results_ready(job, now, end):
            raise HttpError(
                404, f"No results for message batch {batch_id}: it has not finished processing."
            )
        files = _result_files(job)
        sizes = [int((self.store.get_file(PROVIDER, f) or {}).get("_size", 0)) for f in files]
        return Response(
            status=200,
            body=self._chunks(files),
            content_type="application/binary",
            length=sum(sizes),
        )

    def _chunks(self, files: list[str]) -> Iterator[bytes]:
        for file_id in files:
            yield from self.store.iter_file_chunks(PROVIDER, file_id)


def _batch_not_found(batch_id: str) -> HttpError:
    return HttpError(404, f"Message batch {batch_id} not found.")


def _not_cancellable(batch_id: str, status: str) -> HttpError:
    # Anthropic names no status: every ended batch answers alike.
    return HttpError(400, f"Message batch {batch_id} has already ended.")


def _result_files(job: dict[str, Any]) -> list[str]:
    """Ids of the result files written at finalisation (successes, then the rest)."""
    return [job[key] for key in ("_results_ok", "_results_other") if job.get(key)]


def _check_envelope(items: Any) -> None:
    """Refuse the whole create, as the API's schema validation does.

    Raises:
        HttpError: 400 naming the first offending request.
    """
    if not isinstance(items, list) or not items:
        raise HttpError(400, "requests: List should have at least 1 item")
    if len(items) > MAX_REQUESTS:
        raise HttpError(400, f"requests: List should have at most {MAX_REQUESTS} items")
    seen: set[str] = set()
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise HttpError(400, f"requests.{index}: Input should be an object")
        custom_id = item.get("custom_id")
        if not isinstance(custom_id, str) or not CUSTOM_ID.match(custom_id):
            raise HttpError(
                400,
                f"requests.{index}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'",
            )
        if custom_id in seen:
            raise HttpError(
                400, f"requests.{index}.custom_id: Duplicate custom_id {custom_id!r} in the batch"
            )
        seen.add(custom_id)
        if not isinstance(item.get("params"), dict):
            raise HttpError(400, f"requests.{index}.params: Input should be an object")


def _params(request: RequestLine) -> dict[str, Any]:
    obj = request.obj if isinstance(request.obj, dict) else {}
    params = obj.get("params")
    return params if isinstance(params, dict) else {}


def _custom_id(request: RequestLine) -> str:
    obj = request.obj if isinstance(request.obj, dict) else {}
    return str(obj.get("custom_id"))


def request_error(params: dict[str, Any]) -> str | None:
    """Return why Messages params are invalid (a batch request ends ``errored``, a call 400s)."""
    model = params.get("model")
    if not isinstance(model, str) or not model:
        return "model: Field required"
    max_tokens = params.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        return "max_tokens: Field required (an integer >= 1)"
    messages = params.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: List should have at least 1 item"
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in MESSAGE_ROLES:
            return f"messages.{index}.role: Input should be 'user' or 'assistant'"
        if not isinstance(message.get("content"), str | list):
            return f"messages.{index}.content: Input should be a string or a list of blocks"
    system = params.get("system")
    if system is not None and not isinstance(system, str | list):
        return "system: Input should be a string or a list of text blocks"
    return None


def _chat_body(params: dict[str, Any]) -> dict[str, Any]:
    """Return the chat-completions body the shared reply rule answers (system first)."""
    system = params.get("system")
    messages = list(params["messages"])
    if system:
        messages.insert(0, {"role": "system", "content": system})
    # Tools, tool choice and a JSON output format shape the answer (`structured_answers`).
    shaping: dict[str, Any] = {
        k: params[k] for k in ("tools", "tool_choice", "output_config") if k in params
    }
    return {"messages": messages, "max_tokens": params["max_tokens"], **shaping}


def _stop_reason(reply: Reply) -> str:
    if reply.tool_calls:
        return "tool_use"
    return "max_tokens" if reply.finish_reason == "length" else "end_turn"


def _content(reply: Reply) -> list[dict[str, Any]]:
    """Return the answer's content blocks: text, or `tool_use` blocks for tool calls."""
    if not reply.tool_calls:
        return [{"type": "text", "text": reply.content}]
    blocks: list[dict[str, Any]] = []
    for index, call in enumerate(reply.tool_calls):
        try:
            arguments = json.loads(call.arguments)
        except ValueError:
            # `input` must be an object: a broken call ([emulator:invalid_json]) stays text.
            blocks.append({"type": "text", "text": call.arguments})
            continue
        tool_id = f"toolu_emulator_{line_digest(index, reply.digest)[:20]}"
        blocks.append({"type": "tool_use", "id": tool_id, "name": call.name, "input": arguments})
    return blocks


def _errored(custom_id: str, seed: str, error_type: str, message: str) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "result": {
            "type": "errored",
            "error": {
                "type": "error",
                "error": {"type": error_type, "message": message},
                "request_id": f"req_emulator_{seed[:24]}",
            },
        },
    }


def _render_line(
    request: RequestLine, job_id: str, faults: dict[str, Any]
) -> tuple[bool, dict[str, Any], tuple[int, int]]:
    """Build the result line of one processed request (see `agent.emulator.answers`)."""
    custom_id = _custom_id(request)
    params = _params(request)
    seed = line_digest(custom_id, json.dumps(params, sort_keys=True, default=str))
    problem = request_error(params)
    if problem is not None:
        return False, _errored(custom_id, seed, "invalid_request_error", problem), (0, 0)
    fault = request_fault(faults, job_id, custom_id, params)
    if fault is not None:
        _, message, error_type, _ = ERROR_SHAPES[PROVIDER][fault]
        return False, _errored(custom_id, seed, error_type, message), (0, 0)
    answer, reply = answer_message(params, custom_id, "batch")
    line: dict[str, Any] = {
        "custom_id": custom_id,
        "result": {"type": "succeeded", "message": answer},
    }
    return True, line, (reply.prompt_tokens, reply.completion_tokens)


def answer_message(
    params: dict[str, Any], id_seed: Any, service_tier: str
) -> tuple[dict[str, Any], Reply]:
    """Answer valid Messages params: the `Message` a batch result or a realtime call carries.

    Args:
        params: Messages params `request_error` accepts.
        id_seed: What the message id hashes with the body digest (a batch line's custom_id;
            realtime has none, so its id comes from the digest alone).
        service_tier: The usage's ``service_tier`` (``batch`` for a batch, ``standard`` realtime).

    Returns:
        The message (odd shapes applied) and the computed `Reply`.
    """
    reply = compute_reply(_chat_body(params))
    message_id = line_digest(id_seed, reply.digest)
    message: dict[str, Any] = {
        "id": f"msg_emulator_{message_id[:24]}",
        "type": "message",
        "role": "assistant",
        "model": params["model"],
        "content": _content(reply),
        "stop_reason": _stop_reason(reply),
        "stop_sequence": None,
        "usage": {
            "input_tokens": reply.prompt_tokens,
            "output_tokens": reply.completion_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "service_tier": service_tier,
        },
    }
    return reshape_message(message, reply), reply  # odd shapes asked for by markers


def _unfinished_line(request: RequestLine, kind: str) -> dict[str, Any]:
    """Return the line of a request the batch never processed (``canceled``/``expired``)."""
    return {"custom_id": _custom_id(request), "result": {"type": kind}}


def _result_file_meta(
    job: dict[str, Any], kind: str, size: int, lines: int, now: int
) -> dict[str, Any]:
    """Metadata of a private results file (never listed: the protocol has no files)."""
    return {
        "id": f"msgbatchres_{secrets.token_hex(12)}",
        "_internal": True,
        "created_at": now,
        "lines": lines,
    }
