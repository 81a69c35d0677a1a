"""Anthropic Message Batches provider (official `anthropic` SDK).

Bodies are what `ChatAnthropic.invoke()` sends: `ChatAnthropic._get_request_payload` builds the
keyword arguments of `client.messages.create`, and `wire_params` turns them into the JSON body
that call puts on the wire (the SDK merges `extra_body`, where langchain-anthropic moves the
sampling parameters, over the named ones). Results are parsed the way `.invoke()` parses a
response: the SDK's lenient `Message` construction, then `ChatAnthropic._format_output`.

How Anthropic differs from the file-based providers, and how this module adapts:

- **Inline requests.** There is no file upload: `create` sends every request in its body. The
  planner still builds one JSONL file per job; `upload` keeps it locally (a hard link, no copy)
  and returns its path as the "file id", and `create` streams that file as
  `{"requests": [...]}` without parsing it (constant memory up to the 256 MB body limit, and
  re-sendable on SDK retries). The kept file is also what a follow-up job rebuilds its lines
  from (`input_lines`), since Anthropic keeps no copy of the input; files older than the
  29 days Anthropic keeps results are pruned.
- **No metadata.** A batch carries nothing but its id, so the job key cannot be sent along.
  Crash safety rests on the graph's create journal (`journals_creates`): before the create call
  the store records that a create was sent, right after it the batch id. `reconcile` then:
  1. no record: no create was ever sent for this intent, so there is nothing to find (a fresh
     submit never adopts someone else's batch);
  2. a recorded batch id: that batch (the crash came after the answer, before the checkpoint);
  3. a create sent but no answer recorded (the answer was lost): list batches newest first back
     to `RECONCILE_SKEW_SECONDS` before the send, skip the thread's own batches, keep those with
     exactly the intent's request count; an ended candidate must also return exactly the
     intent's `custom_id` set in its results (else it is someone else's); a verified candidate
     wins, else the one created closest to the send. None left: the create never landed, and the
     intent is created again. For the same reason the SDK never retries the create call itself
     (a resend after a lost answer would make a second batch); the graph's node retry goes
     through this lookup first.
  A candidate that is still processing cannot be verified (results exist only once a batch
  ends), so a same-sized batch created by another thread within those minutes could be taken
  for ours; then its lines do not match our ids and every request is retried as `no_result`.
- **Results.** One JSONL stream at the absolute `results_url` (`output_file_id` holds it, so the
  graph's "terminal but no output yet" wait covers a late one), one line per request:
  `succeeded` (the message), `errored` (code = the error's type, retried when it is a rate-limit,
  server, overload or timeout error), `canceled` (code `canceled`, not retried), `expired` (code
  `expired`, retried in a follow-up job like OpenAI's `batch_expired`).
- **Status.** `in_progress`, `canceling`, then `ended` for every outcome; a batch that ended
  after a cancel request gets the `CANCELLED_NOTE` so the thread reports `cancelled`.
- **Input rules.** Anthropic requires `custom_id` to match `^[a-zA-Z0-9_-]{1,64}$`; other ids, a
  `betas` request (beta Messages API) and parameters the SDK sends as headers are refused before
  anything is sent. The completion window is fixed at 24 h.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import random
import re
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, cast

import anthropic
import httpx2
import orjson
from anthropic import Anthropic, DefaultHttpxClient
from anthropic._models import construct_type
from anthropic.resources.messages import Messages
from anthropic.types import Message
from anthropic.types.messages import MessageBatch
from langchain_anthropic import ChatAnthropic
from langchain_core.messages import AIMessage

from agent.providers.base import (
    CANCELLED_NOTE,
    SDK_MAX_RETRIES,
    BatchProvider,
    CreateAttempt,
    CreatedJob,
    JobUpdate,
    LineParser,
    ProviderLimits,
    RequestOutcome,
    finish_message,
    is_retryable,
    job_chat_model,
    jsonl_line,
    lc_messages,
    nonblank_lines,
    normalise_status,
)
from agent.providers.errors import ProviderError, provider_call
from agent.providers.settings import HEADERS, PROXY, STREAMING, build_chat_model, rules_for
from agent.requests import BatchRequest, InputError
from agent.state import Counts, Job, JobStatus, RequestError

if TYPE_CHECKING:
    from agent.structured import OutputSpec

logger = logging.getLogger("batch_agent")

STATUS_MAP: dict[str, JobStatus] = {
    "in_progress": "running",
    "canceling": "cancelling",
    "ended": "done",
}
CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
# The create body wraps the request lines; its size counts against the 256 MB limit.
_HEAD = b'{"requests":['
_TAIL = b"]}"
MAX_BODY_BYTES = 256 * 1000 * 1000  # "256 MB", read as decimal: the smaller reading is safe
# Our clock (the journal's send time) against the provider's `created_at`.
RECONCILE_SKEW_SECONDS = 300.0
# Answers to a create that say nothing was created (rate limited, overloaded): safe to resend.
REFUSED_STATUS = frozenset({429, 529})
# Anthropic keeps results for 29 days; a kept input is useless for retries after that.
KEPT_INPUT_SECONDS = 29 * 86400

# What `client.messages.create(**payload)` accepts, and what of it is not body JSON.
_CREATE_ARGS = frozenset(inspect.signature(Messages.create).parameters) - {"self"}
_CLIENT_OPTIONS = frozenset({"extra_body", "timeout"})
_NOT_IN_A_BATCH = frozenset({"user_profile_id", "workspace_id", "extra_headers", "extra_query"})


SETTING_RULES: Final = rules_for(
    ChatAnthropic,
    no_effect=frozenset(
        {"default_request_timeout", "max_retries", "anthropic_api_key", "stream_usage"}
    ),
    endpoint={"anthropic_api_url": "base_url"},
    refused={
        "streaming": STREAMING,
        "default_headers": HEADERS,
        "anthropic_proxy": PROXY,
        "betas": "requests needing Anthropic's beta Messages API are not batched yet",
    },
)


def chat_model(model: str, params: Mapping[str, Any]) -> ChatAnthropic:
    """Return the `ChatAnthropic` whose realtime calls our batch requests reproduce.

    Raises:
        InputError: A setting is not one a batch carries, or ChatAnthropic rejects it.
    """
    factory = functools.partial(ChatAnthropic, model=model, api_key="unused-for-body-building")  # type: ignore[call-arg,arg-type]
    return build_chat_model(factory, params, SETTING_RULES)


def wire_params(payload: dict[str, Any], request_id: str) -> dict[str, Any]:
    """Return the JSON body `client.messages.create(**payload)` sends, as a batch `params`.

    Raises:
        InputError: The payload needs something a batch request cannot carry (the beta API,
            HTTP headers) or that the SDK itself would refuse (an unknown parameter).
    """
    if "betas" in payload:
        raise InputError(
            "the request needs Anthropic's beta Messages API ('betas'), which batch-agent does "
            "not batch",
            source="input",
            request_id=request_id,
        )
    unknown = sorted(set(payload) - _CREATE_ARGS)
    if unknown:
        raise InputError(
            f"Anthropic's Messages API takes no parameter {', '.join(unknown)}",
            source="input",
            request_id=request_id,
        )
    headers = sorted(_NOT_IN_A_BATCH & payload.keys())
    if headers:
        raise InputError(
            f"{', '.join(headers)} travel as HTTP headers or query parameters in realtime, "
            "which a batch request cannot carry",
            source="input",
            request_id=request_id,
        )
    body = {k: v for k, v in payload.items() if k not in _CLIENT_OPTIONS}
    # The SDK merges `extra_body` over the named parameters (langchain-anthropic puts
    # temperature / top_p / top_k there, since anthropic>=1 dropped them as arguments).
    body.update(payload.get("extra_body") or {})
    return body


def request_params(
    llm: ChatAnthropic, request: BatchRequest, bound: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Return the Messages body `llm.invoke(messages, **params)` would send.

    `bound` holds what a `bind_tools` / `with_structured_output` wrapper passes to the model on
    every call (`agent.structured.bind_kwargs`); the request's own parameters win.

    Raises:
        InputError: ChatAnthropic refuses the request, or a batch cannot carry it.
    """
    # A request's own `model` is a call kwarg too: only the model sent changes, not `llm`'s rules.
    kwargs = {**(bound or {}), **request.params}
    try:
        payload = llm._get_request_payload(lc_messages(request), **kwargs)
    except (ValueError, TypeError) as exc:
        raise InputError(
            f"ChatAnthropic refuses the request: {exc}", source="input", request_id=request.id
        ) from None
    return wire_params(payload, request.id)


def check_custom_id(request_id: str) -> str:
    """Return `request_id` if Anthropic accepts it as a `custom_id`.

    Raises:
        InputError: The id has characters other than letters, digits, '_' and '-'.
    """
    if not CUSTOM_ID.match(request_id):
        raise InputError(
            "Anthropic batch ids may only hold letters, digits, '_' and '-' (1 to 64 "
            "characters); rename the request",
            source="input",
            request_id=request_id,
        )
    return request_id


def parse_message(llm: ChatAnthropic, body: dict[str, Any], message_key: str) -> AIMessage:
    """Parse a `succeeded` result's message into the AIMessage `.invoke()` returns.

    Realtime builds the SDK's `Message` leniently (no validation) from the response JSON, then
    calls `_format_output`; `finish_message` applies what `invoke()` adds after that.
    """
    message = cast(Message, construct_type(type_=Message, value=body))
    return finish_message(llm, llm._format_output(message), message_key)


class AnthropicLineParser:
    """Parse results lines (`{"custom_id", "result": {...}}`) into request outcomes."""

    def __init__(self, model: str, params: Mapping[str, Any] | None = None) -> None:
        """Build the reference `ChatAnthropic` once per job (`params`: its settings)."""
        self.llm = chat_model(model, params or {})

    def parse_line(
        self, raw: bytes | str, job_id: str
    ) -> tuple[str, AIMessage | None, RequestError | None, bool]:
        """Return `(custom_id, message, error, retryable)` for one results line."""
        try:
            line = orjson.loads(raw)
        except orjson.JSONDecodeError:
            line = None
        if not isinstance(line, dict):
            error = RequestError(code="bad_result_line", message="unreadable results line")
            return "", None, error, False
        custom_id = str(line.get("custom_id"))
        result = line.get("result")
        if not isinstance(result, dict):
            result = {}
        kind = result.get("type")
        if kind == "succeeded" and isinstance(result.get("message"), dict):
            message = parse_message(self.llm, result["message"], f"{job_id}/{custom_id}")
            return custom_id, message, None, False
        if kind == "errored":
            return (custom_id, None, *_errored(result.get("error")))
        if kind == "canceled":
            error = RequestError(
                code="canceled", message="the batch was canceled before this request was processed"
            )
            return custom_id, None, error, False
        if kind == "expired":
            error = RequestError(
                code="expired",
                message="the request was not processed within the batch's 24-hour window",
            )
            return custom_id, None, error, True
        error = RequestError(code="unknown_result", message=f"unknown result type {kind!r}")
        return custom_id, None, error, False


def _errored(envelope: Any) -> tuple[RequestError, bool]:
    """Read `{"type": "error", "error": {"type", "message"}, "request_id"}` of an errored result."""
    inner = envelope.get("error") if isinstance(envelope, dict) else None
    if not isinstance(inner, dict):
        return RequestError(code="errored", message=str(envelope)), False
    code = str(inner.get("type") or "errored")
    message = str(inner.get("message") or code)
    if isinstance(envelope, dict) and envelope.get("request_id"):
        message += f" (request_id {envelope['request_id']})"
    return RequestError(code=code, message=message), is_retryable(code)


class InlineRequests:
    """The create body `{"requests": [...]}`, streamed from a JSONL file of request lines.

    Every line is one compact JSON object ending in a newline, and a newline never occurs inside
    such a line, so turning each newline but the last into a comma (and the last into the
    closing bracket) yields the JSON array without parsing anything. The object can be iterated
    again, so an SDK retry resends the same bytes.
    """

    CHUNK = 1 << 20

    def __init__(self, path: Path) -> None:
        """Measure the body for its Content-Length."""
        self.path = path
        size = path.stat().st_size
        trailing = 0
        if size:
            with path.open("rb") as fh:
                fh.seek(size - 1)
                trailing = 1 if fh.read(1) == b"\n" else 0
        self.length = len(_HEAD) + size - trailing + len(_TAIL)

    def __iter__(self) -> Iterator[bytes]:
        """Yield the body in chunks of about 1 MiB."""
        yield _HEAD
        with self.path.open("rb") as fh:
            pending = fh.read(self.CHUNK)
            while pending:
                chunk = fh.read(self.CHUNK)
                if not chunk and pending.endswith(b"\n"):
                    pending = pending[:-1]
                yield pending.replace(b"\n", b",")
                pending = chunk
        yield _TAIL


class AnthropicProvider(BatchProvider):
    """Message Batches through the official `anthropic` SDK (inline requests, no metadata)."""

    name = "anthropic"
    default_model = "claude-haiku-4-5"
    limits = ProviderLimits(
        max_requests=100_000, max_file_bytes=MAX_BODY_BYTES - len(_HEAD) - len(_TAIL)
    )
    journals_creates = True
    supports_output_spec = True

    def __init__(
        self, *, emulated: bool, base_url: str, http_client: httpx2.Client | None = None
    ) -> None:
        """Build the SDK client; the API key is read from the environment and kept only there."""
        super().__init__(emulated=emulated, base_url=base_url)
        sdk_base_url, api_key, http_client = self.sdk_endpoint(
            "/anthropic", "ANTHROPIC_API_KEY", http_client, DefaultHttpxClient
        )
        # An explicit key keeps the SDK from looking for other credentials (profiles, files).
        # It retries 408/409/429/5xx and connection errors with exponential backoff and jitter.
        self._client = Anthropic(
            api_key=api_key,
            base_url=sdk_base_url,
            http_client=http_client,
            max_retries=SDK_MAX_RETRIES,
        )

    # ----------------------------------------------------------------- building

    def line_builder(
        self, model: str, params: dict[str, Any], spec: OutputSpec | None = None
    ) -> Callable[[BatchRequest], bytes]:
        """Build `{custom_id, params}` lines with ChatAnthropic's realtime body.

        The fast builder produces the same bytes as `request_params` (checked at construction
        and by property tests) and falls back to it for anything it does not handle (including
        every request of a set with tools or a response schema).
        """
        from agent.providers.anthropic_fastpath import AnthropicBodyBuilder

        builder = AnthropicBodyBuilder(model, params, spec)

        def build(request: BatchRequest) -> bytes:
            custom_id = check_custom_id(request.id)
            return jsonl_line({"custom_id": custom_id, "params": builder.build(request)})

        return build

    def chat_model(self, model: str, params: dict[str, Any]) -> ChatAnthropic:
        """Return the `ChatAnthropic` whose realtime calls this provider's requests reproduce."""
        return chat_model(model, params)

    def model_profile(self, model: str) -> dict[str, Any] | None:
        """Return LangChain's model profile (None for a model it does not know)."""
        profile = chat_model(model, {}).profile
        return dict(profile) if profile else None

    def check_completion_window(self, completion_window: str) -> None:
        """Anthropic batches always have 24 hours."""
        if completion_window.strip() != "24h":
            raise InputError(
                f"Anthropic batches have a fixed 24h window; completion_window {completion_window!r} "
                "cannot be honoured (use '24h')",
                source="context",
            )

    # ----------------------------------------------------------------- submitting

    def upload(self, path: Path, file_name: str) -> str:
        """Keep the built input locally (Anthropic takes requests inline); return its path."""
        kept = _kept_path(file_name)
        tmp = kept.with_name(f".{kept.name}.{uuid.uuid4().hex[:8]}")
        try:
            os.link(path, tmp)  # the graph deletes the spool name after create
        except OSError:
            tmp.write_bytes(path.read_bytes())
        tmp.replace(kept)
        _prune_kept(kept.parent)
        return str(kept)

    def find_file(self, file_name: str, size: int, since: float) -> str | None:
        """Return the kept input named `file_name` if it has `size` bytes."""
        kept = _kept_path(file_name)
        return str(kept) if kept.is_file() and kept.stat().st_size == size else None

    def create(
        self, input_file_id: str, *, model: str, completion_window: str, metadata: dict[str, str]
    ) -> CreatedJob:
        """Create the batch, streaming the kept input as the inline `requests` (no metadata)."""
        body = InlineRequests(Path(input_file_id))
        # No blind SDK retry here: a create whose answer was lost may have made a batch, and a
        # resend would make a second one. Only a refusal (429, 529: nothing was created) is
        # retried on the spot; anything else goes to the node's retry, through `reconcile`.
        client = self._client.with_options(max_retries=0)
        with provider_call(self.name, "create the message batch"):
            for retry in range(SDK_MAX_RETRIES + 1):
                try:
                    batch = client.post(
                        "/v1/messages/batches",
                        cast_to=MessageBatch,
                        content=body,
                        options={
                            "headers": {
                                "Content-Type": "application/json",
                                "Content-Length": str(body.length),
                            }
                        },
                    )
                    break
                except anthropic.APIStatusError as exc:
                    if exc.status_code not in REFUSED_STATUS or retry == SDK_MAX_RETRIES:
                        raise
                    time.sleep(_retry_delay(exc.response, retry))
        return CreatedJob(
            job_id=batch.id, created_at=batch.created_at.timestamp(), input_file_id=input_file_id
        )

    def find_job(self, job_key: str, since: float) -> CreatedJob | None:
        """Anthropic batches carry no metadata to look a job key up by: see `reconcile`."""
        return None

    def reconcile(
        self,
        job: Job,
        *,
        claimed: Collection[str],
        attempt: CreateAttempt | None,
        request_ids: Callable[[], list[str]],
    ) -> CreatedJob | None:
        """Find the batch an interrupted create made, by the rule in the module docstring."""
        if attempt is None:
            return None
        kept = str(_kept_path(f"batch-agent-{job['job_key']}.jsonl"))
        if attempt.job_id:
            with provider_call(self.name, f"check batch {attempt.job_id}"):
                try:
                    batch = self._client.messages.batches.retrieve(attempt.job_id)
                except anthropic.NotFoundError:
                    batch = None
            if batch is not None:
                return CreatedJob(batch.id, batch.created_at.timestamp(), kept)
        found = self._find_by_listing(job, attempt.sent_at, claimed, request_ids)
        return CreatedJob(found.id, found.created_at.timestamp(), kept) if found else None

    def _find_by_listing(
        self,
        job: Job,
        sent_at: float,
        claimed: Collection[str],
        request_ids: Callable[[], list[str]],
    ) -> MessageBatch | None:
        floor = sent_at - RECONCILE_SKEW_SECONDS
        candidates = []
        with provider_call(self.name, "list message batches"):
            for batch in self._client.messages.batches.list(limit=100):
                if batch.created_at.timestamp() < floor:
                    break  # newest first: everything further is older
                if batch.id not in claimed and _total(batch) == job["request_count"]:
                    candidates.append(batch)
        verified, unverifiable = [], []
        wanted: set[str] | None = None
        for batch in candidates:
            if batch.processing_status == "ended" and batch.results_url:
                wanted = wanted if wanted is not None else set(request_ids())
                if self._result_ids(batch.id) == wanted:
                    verified.append(batch)
            else:
                unverifiable.append(batch)
        pool = verified or unverifiable
        if not pool:
            return None
        best = min(pool, key=lambda b: abs(b.created_at.timestamp() - sent_at))
        if len(pool) > 1:
            logger.warning(
                "%d Anthropic batches could be the one job %s created; adopting %s, the closest "
                "in time",
                len(pool),
                job["job_key"],
                best.id,
            )
        return best

    def _result_ids(self, batch_id: str) -> set[str]:
        ids = set()
        for raw in self._result_lines(batch_id):
            line = orjson.loads(raw)
            ids.add(str(line.get("custom_id")) if isinstance(line, dict) else "")
        return ids

    # ----------------------------------------------------------------- tracking

    def status(self, job: Job) -> JobUpdate:
        """Retrieve the batch once."""
        with provider_call(self.name, f"check batch {job['job_id']}"):
            batch = self._client.messages.batches.retrieve(str(job["job_id"]))
        return self._update(batch, job)

    def cancel(self, job: Job) -> JobUpdate:
        """Cancel the batch; it passes through `canceling` before `ended`."""
        with provider_call(self.name, f"cancel batch {job['job_id']}"):
            batch = self._client.messages.batches.cancel(str(job["job_id"]))
        return self._update(batch, job)

    def _update(self, batch: MessageBatch, job: Job) -> JobUpdate:
        raw = str(batch.processing_status)
        counts = batch.request_counts
        total = _total(batch) or job["request_count"]
        failed = counts.errored + counts.canceled + counts.expired
        errors: list[str] = []
        if batch.cancel_initiated_at is not None and raw == "ended":
            errors.append(CANCELLED_NOTE)
        return JobUpdate(
            provider_status=raw,
            status=normalise_status(raw, STATUS_MAP, errors),
            counts=Counts(
                total=total,
                succeeded=counts.succeeded,
                failed=failed,
                pending=max(total - counts.succeeded - failed, 0),
            ),
            # The results stream's URL stands for the output file: set only once ended.
            output_file_id=batch.results_url,
            error_file_id=None,
            errors=errors,
        )

    # ----------------------------------------------------------------- results

    def message_parser(
        self,
        model: str,
        spec: OutputSpec | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> LineParser:
        """Return the fast, parity-exact parser of this provider's results lines for `model`.

        Any spec parses alike (tool-use answers take the reference path of the parser).
        """
        from agent.providers.anthropic_fastpath import AnthropicMessageParser

        return AnthropicMessageParser(model, params)

    def results(self, job: Job, spec: OutputSpec | None = None) -> Iterator[RequestOutcome]:
        """Stream the outcome of every request of an ended batch, one results line at a time."""
        if not job["output_file_id"]:
            return
        parser = self.message_parser(job_chat_model(job), params=job["params"])
        job_id = str(job["job_id"])
        for raw in self._result_lines(job_id):
            yield RequestOutcome(*parser.parse_line(raw, job_id))

    def _result_lines(self, batch_id: str) -> Iterator[bytes]:
        """Stream the results JSONL through the SDK (it follows the absolute `results_url`)."""
        with provider_call(self.name, f"download the results of batch {batch_id}"):
            results = self._client.messages.batches.with_streaming_response.results(batch_id)
            with results as response:
                yield from nonblank_lines(response.iter_bytes())

    def file_lines(self, file_id: str) -> Iterator[bytes]:
        """Stream a kept input file (the only files this provider has; see `upload`)."""
        path = Path(file_id)
        if not path.is_file():
            raise ProviderError(
                f"anthropic: the input of this job was kept at {path} on the machine that "
                "submitted it, and is not here (Anthropic keeps no copy of batch input); retry "
                "its requests from that machine or send them on a new thread"
            )
        with path.open("rb") as fh:
            for raw in fh:
                if raw.strip():
                    yield raw


def _retry_delay(response: httpx2.Response, retry: int) -> float:
    """Seconds to wait before resending a refused create: the server's hint, else backoff."""
    for header, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        try:
            hinted = float(response.headers.get(header, "")) * scale
        except ValueError:
            continue
        if 0 <= hinted <= 60:
            return hinted
    return float(min(0.5 * 2**retry, 8.0) * random.uniform(0.75, 1.0))


def _total(batch: MessageBatch) -> int:
    counts = batch.request_counts
    return counts.processing + counts.succeeded + counts.errored + counts.canceled + counts.expired


def _kept_path(file_name: str) -> Path:
    """Where the input of a job is kept for retries (under the spool directory)."""
    from agent.planning import spool_dir

    directory = spool_dir() / "anthropic"
    directory.mkdir(parents=True, exist_ok=True)
    return directory / file_name


def _prune_kept(directory: Path) -> None:
    """Delete kept inputs older than Anthropic's result retention (nothing can retry them)."""
    cutoff = time.time() - KEPT_INPUT_SECONDS
    for path in directory.iterdir():
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
        except FileNotFoundError:
            pass
