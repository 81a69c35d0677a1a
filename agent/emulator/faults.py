"""Fault injection for the emulator: the ``BATCH_AGENT_EMULATOR_FAULTS`` knobs.

By default the emulator behaves like a healthy provider. Set
``BATCH_AGENT_EMULATOR_FAULTS`` to a comma-separated list of ``name=value`` knobs,
e.g. ``request_fail_rate=0.3,shuffle=1,seed=7``, to make it misbehave in the ways
real batch APIs do. Parsing is strict: an unknown knob, a repeated knob or a bad
value makes every API call answer HTTP 500 with a JSON error naming the knob
(``/health`` keeps answering).

Knobs that shape a job are read when the job is created and stored on the job
record, so every process sharing the state directory agrees on the job's fate
even if the variable changes later. ``http_error_rate`` is read on every request.
All random choices are deterministic, derived by hashing ``seed``, the job's
creation order in the state directory and the request's ``custom_id`` (so a
retried ``custom_id`` in a *new* job gets a fresh draw, and a seeded run of jobs
fails the same requests every time), except ``http_error_rate``, which uses a ``random.Random(seed)``
per emulator app (per process).

Knobs:

- ``seed=N`` (integer, default 0): seed of every random choice below.
- ``request_fail_rate=F`` (0..1): each request of a job fails with probability F.
  A failed request gets an error-file line with an HTTP error, half of them (by
  hash) ``429`` rate-limit errors and half ``500`` server errors. OpenAI:
  ``response.status_code`` 429/500, ``response.body = {"error": {"message",
  "type": "requests" | "server_error", "param": null, "code":
  "rate_limit_exceeded" | "server_error"}}`` and ``error: null``. Mistral:
  ``response.status_code`` 429/500 and ``response.body = {"object": "error",
  "message", "type": "rate_limited" | "server_error", "param": null, "code":
  "1300" | "server_error"}``.
- ``http_error_rate=F`` (0..1): every API call (anything but ``/health``) is
  answered, with probability F and before any state change, by a 429 (half of
  the time) or a 500 in the provider's error shape (OpenAI ``{"error": {message,
  type, param, code}}``; Mistral ``{"object": "error", message, type, param,
  code}``), with headers ``retry-after-ms: 10`` and ``retry-after: 0`` so SDK
  retries stay fast.
- ``realtime_429_rate=F`` (0..1): each realtime chat call (`agent.emulator.realtime_routes`:
  ``POST .../chat/completions``, ``/anthropic/v1/messages``, ``...:generateContent``) is
  answered, with probability F, by a 429 rate-limit error in the provider's shape, with the
  ``retry-after`` header OpenAI and Anthropic send (1 second; Mistral and Gemini send none).
  Batch routes never see it. Read on every request; draws from a ``random.Random(seed)`` per
  emulator app, apart from ``http_error_rate``'s.
- ``flex_429_rate=F`` (0..1; OpenAI and Gemini): each realtime call asking the flex tier
  (OpenAI's ``POST /openai/v1/chat/completions`` or ``/responses`` with ``service_tier:
  "flex"``, Gemini's ``...:generateContent`` with ``serviceTier: "flex"``) is answered, with
  probability F, by a flex capacity refusal (not billed): OpenAI's HTTP 429 ``{"error":
  {"message": "Resource Unavailable ...", "type": "requests", "param": null, "code":
  "resource_unavailable"}}``, Gemini's 429 ``RESOURCE_EXHAUSTED``, with the headers
  ``retry-after-ms: 10`` and ``retry-after: 0`` so SDK retries stay fast. Drawn from the same
  per-seed generator as ``realtime_429_rate``, after it. Read on every request.
- ``flex_delay_seconds=S`` (seconds >= 0; OpenAI and Gemini): a flex call answers S seconds
  late, on the emulator's clock: a `ManualClock` is advanced by S (a test's virtual time), the
  wall clock slept. An OpenAI answer says ``service_tier: "flex"``. Read on every request.
- ``create_delay=S`` (seconds >= 0): a batch/job create persists the job, then
  sleeps S seconds before answering: the job exists even if the client gives up
  (a create whose response is lost). Its clock starts at creation as usual.
- ``expire=F`` (0..1, the fraction that completes): the job ends ``expired``
  (OpenAI, with ``expired_at``) / ``TIMEOUT_EXCEEDED`` (Mistral) instead of
  completed/SUCCESS. Only the first ``floor(F * total)`` requests in input order
  get their normal outcome. The others get, on OpenAI, an error-file line
  ``{"id", "custom_id", "response": null, "error": {"code": "batch_expired",
  "message": "This request could not be executed before the completion window
  expired."}}``; on Mistral no line at all. Request counts cover only the
  requests that were processed. There is no ``finalizing`` phase.
- ``all_fail=1``: every request fails with a 500 ``server_error`` line in the
  error file. OpenAI still reports ``completed`` with ``output_file_id: null``;
  Mistral ``SUCCESS`` with ``output_file: null`` and an ``error_file``.
- ``shuffle=1``: the lines of the output and error files come in a (seeded)
  random order instead of input order.
- ``output_lag=S`` (seconds >= 0): for S seconds after the job reaches a
  terminal status, it reports that status but with ``output_file_id`` /
  ``error_file_id`` (OpenAI) or ``output_file`` / ``error_file`` and inline
  ``outputs`` (Mistral) null; afterwards they appear.
- ``unknown_status=NAME`` (letters, digits, ``_``, ``-``; not a status either
  protocol defines): a job that would end completed/SUCCESS reports the status
  NAME instead (e.g. ``paused_for_review``), with its output and error files as
  usual. The openai SDK does not validate ``Batch.status`` and the mistralai SDK
  types ``BatchJob.status`` as ``Literal[...] | UnrecognizedStr``, so both pass
  the string through unchanged.
- ``batch_fail=CODE`` (letters, digits, ``_``, ``-``; OpenAI and Gemini): the batch fails as a
  whole, ``validating -> failed`` with ``errors.data = [{"code": CODE, "message", "line": null,
  "param": null}]`` and no output or error file, as it does for an invalid input file (e.g.
  ``token_limit_exceeded``, which the real API gives when the organisation's enqueued-token
  limit is reached).
- ``enqueued_token_limit=N`` (integer >= 0; OpenAI): the organisation's enqueued-token quota
  per model, as OpenAI enforces it. A batch whose prompt tokens (the answers' own count: 3 + words
  per message), added to those of the same model's batches not yet ended, exceed N fails
  validation, ``validating -> failed`` with ``errors.data = [{"code": "token_limit_exceeded",
  ...}]`` and no output, and holds no quota. Read on every create; 0 is no limit.
- ``pending_request_limit=N`` (integer >= 0; Mistral): the workspace's cap on pending requests
  (Mistral documents 1M). A job create whose requests, added to those of the workspace's jobs not
  yet ended (any model), exceed N is refused, nothing created: HTTP 429 ``{"object": "error",
  "message": "... pending requests ...", "type": "rate_limited", "param": null, "code": null}``
  (`agent.emulator.caps`; the real answer is UNCONFIRMED). Read on every create; 0 is no limit.
- ``concurrent_job_limit=N`` (integer >= 0; Gemini): the project's cap on batch jobs
  ``BATCH_STATE_PENDING`` or ``BATCH_STATE_RUNNING`` (Google documents 100). A create while N
  are is refused, nothing created: HTTP 429 ``RESOURCE_EXHAUSTED`` with a
  ``google.rpc.QuotaFailure`` detail naming the concurrent-jobs quota (`agent.emulator.caps`).
  Read on every create; 0 is no limit.
- ``file_storage_limit=BYTES`` (integer >= 0; Gemini): the project's file storage (Google
  documents 20 GB): the bytes of the files held, uploaded and generated (responses files), until
  deleted. An upload that would exceed it is refused at its start (its declared size), nothing
  stored: HTTP 429 ``RESOURCE_EXHAUSTED`` with a ``QuotaFailure`` detail naming the storage
  quota. Deleting files frees it. Read on every upload; 0 is no limit.
- ``queued_request_limit=N`` (integer >= 0; Anthropic): the organisation's cap on requests in
  the batch processing queue (the requests of batches still ``in_progress``). A create over it
  is refused, nothing created: HTTP 429 ``rate_limit_error`` naming the queue (the real
  message is UNCONFIRMED). Read on every create; 0 is no limit.
- ``no_listing=1``: the collection listings an OpenAI-compatible server may lack
  answer HTTP 405 (method not allowed), in the protocol's error shape: ``GET
  /files`` and ``GET /batches`` (OpenAI), ``GET /files`` and ``GET /batch/jobs``
  (Mistral), ``GET /{v1,v1beta}/files`` and ``GET /{v1,v1beta}/batches`` (Gemini).
  Everything else, a single file or job by id included, works as usual.
  Read on every request.
- ``create_429=N`` (integer >= 0; Gemini only): the first N batch creates
  (``POST .../models/{model}:batchGenerateContent``) counted in the state directory answer
  HTTP 429 ``{"error": {"code": 429, "message", "status": "RESOURCE_EXHAUSTED"}}`` before
  any state change, as the real API does below its published limits
  (googleapis/python-genai#1901); the next create succeeds. Read on every request; the count
  persists in ``<state_dir>/gemini/create_429.count``.
- ``delete_fail=1``: every file delete (``DELETE .../files/{id}``, any protocol)
  answers HTTP 500 in the protocol's error shape, before any state change, with the
  ``retry-after`` headers of ``http_error_rate``: the file stays. Read on every request.
- ``webhook_duplicates=1``: the emulator's outgoing webhooks (`agent.emulator.webhooks`) send
  every event twice, with the same ``webhook-id``, and each round's events in reverse order.
  Read at every delivery round.

Anthropic Message Batches (one results file, one line per request): a failed
request is an ``errored`` result (``rate_limit_error`` / ``api_error``; markers give
``invalid_request_error``); ``expire`` ends the batch ``ended`` with ``expired``
results for the unfinished requests; ``all_fail`` ends it with every result
``errored``; ``output_lag`` holds back ``results_url``; ``unknown_status`` replaces
``ended``; cancellation gives ``canceled`` results for requests not yet done.

Gemini Batch (one responses file per job, `agent.emulator.gemini_routes`): a failed request is
a line ``{"key", "error": {"code": <gRPC code>, "message"}}`` in the responses file: 8
(RESOURCE_EXHAUSTED, the 429 kind) or 13 (INTERNAL, the 500 kind); markers give 3
(INVALID_ARGUMENT). ``http_error_rate`` answers in Google's shape ``{"error": {"code": 429 |
500, "message", "status": "RESOURCE_EXHAUSTED" | "INTERNAL"}}``. ``expire`` ends the job
``BATCH_STATE_EXPIRED`` with lines only for the requests done (the rest stay in
``pendingRequestCount``); ``all_fail`` ends it ``BATCH_STATE_SUCCEEDED`` with every line an
error (pitfall 7 of the reference notes); ``shuffle`` reorders the responses file;
``output_lag`` holds back ``output.responsesFile`` (and the file answers as a missing one, 403);
``unknown_status`` replaces ``BATCH_STATE_SUCCEEDED``; ``batch_fail=CODE`` makes the job go
``BATCH_STATE_PENDING -> BATCH_STATE_FAILED`` with the operation's ``error`` ``{"code": 8,
"message"}`` naming CODE; cancellation is instant (``BATCH_STATE_CANCELLED``) and keeps the
lines of the requests done by then.

Magic prompt markers (always on, no knob needed; non-retryable failures): when
the text of a request's last user message contains ``[emulator:reject]`` the
request fails with HTTP 400 ``invalid_request_error`` / code ``invalid_request``;
when it contains ``[emulator:content_policy]`` it fails with HTTP 400
``invalid_request_error`` / code ``content_policy_violation``. Markers that shape a 200 answer
instead (refusals, ``error`` bodies, ``choices: []``, tool arguments that are not an object) are
described in `agent.emulator.answers`.

A job-shaping marker: when the last user message of any request of a job contains
``[emulator:delay=S]`` (S seconds >= 0, e.g. ``[emulator:delay=60]``), the job's lifecycle lasts S
seconds instead of ``BATCH_AGENT_EMULATOR_DELAY`` (the largest S when several requests carry one).
Like the delay, it is read when the job is created and stored on the job. It lets one client make
one batch slow (to try a cancel or a restart mid-job) on an emulator that serves others, without
restarting it with another delay. The marker stays part of the prompt (and so of the answer).

Precedence for one request: an invalid body (the emulator's usual 400) first,
then ``all_fail``, then the markers, then ``request_fail_rate``. Cancellation
works as without faults: lines only for requests done at cancel time.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from dataclasses import asdict, dataclass, fields
from typing import Any

from agent.emulator.answers import message_text

FAULTS_ENV = "BATCH_AGENT_EMULATOR_FAULTS"

REJECT_MARKER = "[emulator:reject]"
CONTENT_POLICY_MARKER = "[emulator:content_policy]"

# Statuses either protocol defines; `unknown_status` must be none of them.
KNOWN_STATUSES = frozenset(
    {
        "validating",
        "failed",
        "in_progress",
        "finalizing",
        "completed",
        "expired",
        "cancelling",
        "cancelled",
        "QUEUED",
        "RUNNING",
        "SUCCESS",
        "FAILED",
        "TIMEOUT_EXCEEDED",
        "CANCELLATION_REQUESTED",
        "CANCELLED",
        "canceling",
        "ended",
        "BATCH_STATE_UNSPECIFIED",
        "BATCH_STATE_PENDING",
        "BATCH_STATE_RUNNING",
        "BATCH_STATE_SUCCEEDED",
        "BATCH_STATE_FAILED",
        "BATCH_STATE_CANCELLED",
        "BATCH_STATE_EXPIRED",
    }
)
_STATUS_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

# Error kinds -> (HTTP status, message, type, code) per protocol. Used for per-request
# error lines and for `http_error_rate` answers. The Mistral 429 body is the one the
# real API returns (type "rate_limited", code "1300"); its 500 body is a guess.
ERROR_SHAPES: dict[str, dict[str, tuple[int, str, str, str]]] = {
    "openai": {
        "rate_limit": (
            429,
            "Rate limit reached for requests (emulated). Please try again later.",
            "requests",
            "rate_limit_exceeded",
        ),
        "server_error": (
            500,
            "The server had an error while processing your request. Sorry about that! (emulated)",
            "server_error",
            "server_error",
        ),
        "reject": (
            400,
            "The request was rejected (emulator marker [emulator:reject]).",
            "invalid_request_error",
            "invalid_request",
        ),
        "content_policy": (
            400,
            "Your request was rejected as a result of our safety system "
            "(emulator marker [emulator:content_policy]).",
            "invalid_request_error",
            "content_policy_violation",
        ),
    },
    "mistral": {
        "rate_limit": (429, "Rate limit exceeded (emulated).", "rate_limited", "1300"),
        "server_error": (
            500,
            "The server had an error while processing your request (emulated).",
            "server_error",
            "server_error",
        ),
        "reject": (
            400,
            "The request was rejected (emulator marker [emulator:reject]).",
            "invalid_request_error",
            "invalid_request",
        ),
        "content_policy": (
            400,
            "The request was rejected by the content policy "
            "(emulator marker [emulator:content_policy]).",
            "invalid_request_error",
            "content_policy_violation",
        ),
    },
    # Anthropic errors carry only a type (`{"type": "error", "error": {"type", "message"}}`);
    # the code slot repeats it. Both markers are `invalid_request_error`s, as the API has no
    # separate content-policy code.
    "anthropic": {
        "rate_limit": (
            429,
            "Number of requests has exceeded your rate limit (emulated).",
            "rate_limit_error",
            "rate_limit_error",
        ),
        "server_error": (500, "Internal server error (emulated).", "api_error", "api_error"),
        "reject": (
            400,
            "The request was rejected (emulator marker [emulator:reject]).",
            "invalid_request_error",
            "invalid_request_error",
        ),
        "content_policy": (
            400,
            "Output blocked by content filtering policy "
            "(emulator marker [emulator:content_policy]).",
            "invalid_request_error",
            "invalid_request_error",
        ),
    },
}

# Gemini (Google's HTTP error shape `{"error": {code, message, status}}`): the type slot is the
# canonical status name, the code slot its gRPC number (what a responses-file error line carries).
ERROR_SHAPES["gemini"] = {
    "rate_limit": (
        429,
        "Resource has been exhausted (e.g. check quota). (emulated)",
        "RESOURCE_EXHAUSTED",
        "8",
    ),
    "server_error": (
        500,
        "An internal error has occurred. Please retry or report in "
        "https://developers.generativeai.google/guide/troubleshooting (emulated)",
        "INTERNAL",
        "13",
    ),
    "reject": (
        400,
        "Request contains an invalid argument (emulator marker [emulator:reject]).",
        "INVALID_ARGUMENT",
        "3",
    ),
    "content_policy": (
        400,
        "The request was blocked by the content policy (emulator marker [emulator:content_policy]).",
        "INVALID_ARGUMENT",
        "3",
    ),
}

BATCH_EXPIRED_ERROR = {
    "code": "batch_expired",
    "message": "This request could not be executed before the completion window expired.",
}


@dataclass(frozen=True)
class Faults:
    """The parsed ``BATCH_AGENT_EMULATOR_FAULTS`` knobs (see the module docstring).

    Attributes:
        seed: Seed of every random choice.
        request_fail_rate: Probability that a request fails with a 429/500 line.
        http_error_rate: Probability that an API call is answered 429/500.
        realtime_429_rate: Probability that a realtime chat call is answered 429.
        flex_429_rate: Probability that a flex call is answered 429 (no capacity).
        flex_delay_seconds: Seconds a flex call takes, on the emulator's clock.
        create_delay: Seconds a create sleeps after persisting the job.
        expire: Fraction of requests done before the job expires, or None.
        all_fail: Whether every request fails with a 500 line.
        shuffle: Whether result lines come in random order.
        output_lag: Seconds after the terminal status during which file ids are null.
        unknown_status: Status string replacing completed/SUCCESS, or None.
        batch_fail: Error code a batch (OpenAI, Gemini) fails with as a whole, or None.
        enqueued_token_limit: OpenAI's enqueued prompt tokens per model (0: no limit).
        pending_request_limit: Mistral's pending requests per workspace (0: no limit).
        concurrent_job_limit: Gemini's pending or running batch jobs (0: no limit).
        file_storage_limit: Gemini's bytes of files held (0: no limit).
        queued_request_limit: Anthropic's requests in the processing queue (0: no limit).
        no_listing: Whether the file and job listings answer 405.
        create_429: How many Gemini batch creates (in the state directory) answer 429 first.
        delete_fail: Whether every file delete answers 500.
        webhook_duplicates: Whether every webhook event is sent twice, out of order.
    """

    seed: int = 0
    request_fail_rate: float = 0.0
    http_error_rate: float = 0.0
    realtime_429_rate: float = 0.0
    flex_429_rate: float = 0.0
    flex_delay_seconds: float = 0.0
    create_delay: float = 0.0
    expire: float | None = None
    all_fail: bool = False
    shuffle: bool = False
    output_lag: float = 0.0
    unknown_status: str | None = None
    batch_fail: str | None = None
    enqueued_token_limit: int = 0
    pending_request_limit: int = 0
    concurrent_job_limit: int = 0
    file_storage_limit: int = 0
    queued_request_limit: int = 0
    no_listing: bool = False
    create_429: int = 0
    delete_fail: bool = False
    webhook_duplicates: bool = False

    def job_record(self) -> dict[str, Any] | None:
        """Return the knobs that shape a job, for its record (None if all default)."""
        record = {
            "seed": self.seed,
            "request_fail_rate": self.request_fail_rate,
            "expire": self.expire,
            "all_fail": self.all_fail,
            "shuffle": self.shuffle,
            "output_lag": self.output_lag,
            "unknown_status": self.unknown_status,
            "batch_fail": self.batch_fail,
        }
        defaults = asdict(Faults())
        if all(record[key] == defaults[key] for key in record if key != "seed"):
            return None
        return record


def _fraction(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:  # also rejects NaN
        raise ValueError(f"{FAULTS_ENV}: knob {name!r} needs a number in 0..1, got {raw!r}")
    return value


def _seconds(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (value >= 0.0 and math.isfinite(value)):
        raise ValueError(f"{FAULTS_ENV}: knob {name!r} needs seconds >= 0, got {raw!r}")
    return value


def _flag(name: str, raw: str) -> bool:
    if raw not in ("0", "1"):
        raise ValueError(f"{FAULTS_ENV}: knob {name!r} needs 0 or 1, got {raw!r}")
    return raw == "1"


def _seed(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{FAULTS_ENV}: knob {name!r} needs an integer, got {raw!r}") from None


def _count(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(f"{FAULTS_ENV}: knob {name!r} needs an integer >= 0, got {raw!r}")
    return value


def _status(name: str, raw: str) -> str:
    if not _STATUS_NAME.match(raw):
        raise ValueError(
            f"{FAULTS_ENV}: knob {name!r} needs a name of letters, digits, '_' or '-', got {raw!r}"
        )
    if raw in KNOWN_STATUSES:
        raise ValueError(
            f"{FAULTS_ENV}: knob {name!r} must not be a status the protocols define, got {raw!r}"
        )
    return raw


def _code(name: str, raw: str) -> str:
    if not _STATUS_NAME.match(raw):
        raise ValueError(
            f"{FAULTS_ENV}: knob {name!r} needs a code of letters, digits, '_' or '-', got {raw!r}"
        )
    return raw


_PARSERS = {
    "seed": _seed,
    "request_fail_rate": _fraction,
    "http_error_rate": _fraction,
    "realtime_429_rate": _fraction,
    "flex_429_rate": _fraction,
    "flex_delay_seconds": _seconds,
    "create_delay": _seconds,
    "expire": _fraction,
    "all_fail": _flag,
    "shuffle": _flag,
    "output_lag": _seconds,
    "unknown_status": _status,
    "batch_fail": _code,
    "enqueued_token_limit": _count,
    "pending_request_limit": _count,
    "concurrent_job_limit": _count,
    "file_storage_limit": _count,
    "queued_request_limit": _count,
    "no_listing": _flag,
    "create_429": _count,
    "delete_fail": _flag,
    "webhook_duplicates": _flag,
}
assert set(_PARSERS) == {f.name for f in fields(Faults)}


def parse_faults(text: str | None) -> Faults:
    """Parse ``name=value,name=value`` knob text strictly.

    Args:
        text: The knob list; None, empty or blank means no fault.

    Returns:
        The parsed knobs.

    Raises:
        ValueError: Naming the offending knob, for an unknown or repeated knob, an
            item without ``=`` or a bad value.
    """
    values: dict[str, Any] = {}
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, raw = item.partition("=")
        name, raw = name.strip(), raw.strip()
        if not sep:
            raise ValueError(f"{FAULTS_ENV}: expected name=value, got {item!r}")
        parser = _PARSERS.get(name)
        if parser is None:
            raise ValueError(
                f"{FAULTS_ENV}: unknown knob {name!r} (known: {', '.join(sorted(_PARSERS))})"
            )
        if name in values:
            raise ValueError(f"{FAULTS_ENV}: knob {name!r} is given twice")
        values[name] = parser(name, raw)
    return Faults(**values)


def current_faults() -> Faults:
    """Parse the knobs from ``BATCH_AGENT_EMULATOR_FAULTS`` now.

    Raises:
        ValueError: If the variable is malformed (see `parse_faults`).
    """
    return parse_faults(os.environ.get(FAULTS_ENV))


# -- deterministic draws -----------------------------------------------------------


def unit_draw(seed: Any, *parts: Any) -> float:
    """Return a number in [0, 1) determined by the seed and the parts."""
    text = "\x00".join(str(part) for part in (seed, *parts))
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def shuffle_key(job: dict[str, Any], index: int) -> float:
    """Sort key of a result line when the job has ``shuffle`` on."""
    seed = (job.get("_faults") or {}).get("seed", 0)
    return unit_draw(seed, job["id"], index, "shuffle")


def job_faults(job: dict[str, Any]) -> dict[str, Any]:
    """Return the fault knobs stored on a job (empty for a job created without)."""
    stored = job.get("_faults")
    return stored if isinstance(stored, dict) else {}


def expire_limit(job: dict[str, Any]) -> int | None:
    """Return how many requests an ``expire`` job processes, or None if it does not expire."""
    fraction = job_faults(job).get("expire")
    if fraction is None:
        return None
    return min(job["_total"], math.floor(job["_total"] * float(fraction)))


def last_user_text(body: Any) -> str:
    """Return the text of the last user message of a chat body ("" if none)."""
    messages = body.get("messages") if isinstance(body, dict) else None
    for message in reversed(messages if isinstance(messages, list) else []):
        if isinstance(message, dict) and message.get("role") == "user":
            return message_text(message)
    return ""


# `[emulator:delay=S]`: a plain decimal number of seconds (no sign, no exponent).
_DELAY_MARKER = re.compile(r"\[emulator:delay=(\d+(?:\.\d+)?)\]")


def marked_delay(body: Any) -> float | None:
    """Return the job delay a request asks for with ``[emulator:delay=S]``, if any.

    Args:
        body: The request body (its last user message is searched).

    Returns:
        The largest S among the markers of the last user message, or None without one.
    """
    found = _DELAY_MARKER.findall(last_user_text(body))
    return max(float(value) for value in found) if found else None


def longest_delay(current: float | None, body: Any) -> float | None:
    """Fold one request into a job's marked delay: the largest so far (None: no marker yet).

    Args:
        current: The job's marked delay from its earlier requests.
        body: The next request's body.

    Returns:
        The larger of `current` and this request's `marked_delay`, None while neither has one.
    """
    marked = marked_delay(body)
    if marked is None:
        return current
    return marked if current is None else max(current, marked)


def marker_fault(body: Any) -> str | None:
    """Return the failure a prompt marker asks for (``reject``, ``content_policy``), or None.

    Args:
        body: A chat body (its last user message is searched).
    """
    text = last_user_text(body)
    if REJECT_MARKER in text:
        return "reject"
    if CONTENT_POLICY_MARKER in text:
        return "content_policy"
    return None


def request_fault(faults: dict[str, Any], job_id: str, custom_id: Any, body: Any) -> str | None:
    """Decide whether a (valid) request fails because of a fault or a marker.

    Args:
        faults: The knobs stored on the job (`job_faults`).
        job_id: The job's id.
        custom_id: The request's custom_id (Mistral: its index when absent).
        body: The request body.

    Returns:
        An `ERROR_SHAPES` kind (``rate_limit``, ``server_error``, ``reject``,
        ``content_policy``) or None when the request gets its normal answer.
    """
    if faults.get("all_fail"):
        return "server_error"
    marked = marker_fault(body)
    if marked is not None:
        return marked
    rate = float(faults.get("request_fail_rate") or 0.0)
    if rate > 0:
        seed = faults.get("seed", 0)
        job = faults.get("_sequence", job_id)
        if unit_draw(seed, job, custom_id, "fail") < rate:
            kind = unit_draw(seed, job, custom_id, "kind") < 0.5
            return "rate_limit" if kind else "server_error"
    return None


# The listings `no_listing` removes: (protocol, path inside its prefix), for GET.
UNLISTED: frozenset[tuple[str, str]] = frozenset(
    {
        ("openai", "/files"),
        ("openai", "/batches"),
        ("mistral", "/files"),
        ("mistral", "/batch/jobs"),
        ("gemini", "/v1/files"),
        ("gemini", "/v1/batches"),
        ("gemini", "/v1beta/files"),
        ("gemini", "/v1beta/batches"),
    }
)


def delete_refused(faults: Faults, method: str, path: str) -> bool:
    """Tell whether `delete_fail` makes this call a file delete that fails (500)."""
    return faults.delete_fail and method == "DELETE" and "/files/" in path


def listing_removed(faults: Faults, provider: str, method: str, path: str) -> bool:
    """Tell whether `no_listing` makes this call a listing the server does not have (405)."""
    return faults.no_listing and method == "GET" and (provider, path.rstrip("/")) in UNLISTED
