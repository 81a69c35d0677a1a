"""Anthropic Message Batches provider (official `anthropic` SDK).

The SDK calls of a Message Batch's life (create, find, check, cancel, stream the results).
Bodies are built and answers parsed as `ChatAnthropic.invoke()` has them
(`agent.providers.anthropic.reference`), by the fast paths of `agent.providers.anthropic.fast`.

How Anthropic differs from the file-based providers, and how this module adapts:

- **Inline requests.** There is no file upload: `create` sends every request in its body. The
  planner still builds one JSONL file per job; `upload` just names that file, and `create` streams
  it as `{"requests": [...]}` without parsing it (constant memory up to the 256 MB body limit).
  Anthropic keeps no copy of the input (`keeps_input` False), so the graph keeps each job's lines
  in the store, where a follow-up job rebuilds the requests it retries from (on any machine).
- **No metadata: the job's identity travels in the custom ids.** A batch carries nothing but its
  id, so the requests carry it: request `n` of a job goes out as `custom_id` `<job key>-<n>`
  (the job key hashes thread, request set, attempt and part), and results are mapped back to the
  user's ids by position (`id_matcher`); so any user id works, not only Anthropic's
  `^[a-zA-Z0-9_-]{1,64}$`. A batch is ours when its results carry our job key, which makes
  adoption exact for an ended batch whatever its content (two threads with the same ids and
  prompts never adopt each other's batches). `find_job` (a create whose answer was lost) and
  `thread_jobs` (a thread that lost its records) look through the listing: an ended batch is
  adopted only when its first results line carries the job key; a batch still processing cannot
  show its custom ids, so one with exactly the job's request count, created when ours could have
  been, is adopted *unverified*, and checked once it ends (`job_owner`): if its results carry
  another key it is released and our job is created after all. Its results could never be taken
  for ours meanwhile, since they match none of our custom ids.
- **Results.** One JSONL stream at the absolute `results_url` (`output_file_id` holds it, so the
  graph's "terminal but no output yet" wait covers a late one), one line per request:
  `succeeded` (the message), `errored` (code = the error's type, retried when it is a rate-limit,
  server, overload or timeout error), `canceled` (code `canceled`, not retried), `expired` (code
  `expired`, retried in a follow-up job like OpenAI's `batch_expired`).
- **Status.** `in_progress`, `canceling`, then `ended` for every outcome; a batch that ended
  after a cancel request gets the `CANCELLED_NOTE` so the thread reports `cancelled`.
- **Input rules.** A `betas` request (beta Messages API) and parameters the SDK sends as headers
  are refused before anything is sent. The completion window is fixed at 24 h.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx2
import orjson
from anthropic import Anthropic, DefaultHttpxClient
from anthropic.types.messages import MessageBatch
from langchain_anthropic import ChatAnthropic

from agent.endpoints import CHAT, Endpoint
from agent.providers.anthropic import realtime_errors
from agent.providers.anthropic.fallback import send_line
from agent.providers.anthropic.fast import AnthropicBodyBuilder, AnthropicMessageParser
from agent.providers.anthropic.reference import chat_model
from agent.providers.base import (
    CANCELLED_NOTE,
    JOB_KEY_METADATA,
    SDK_MAX_RETRIES,
    BatchProvider,
    CreatedJob,
    JobUpdate,
    LineParser,
    ProviderLimits,
    RequestOutcome,
    bounded_listing,
    job_chat_model,
    job_counts,
    jsonl_line,
    nonblank_lines,
    normalise_status,
    read_outcome,
)
from agent.providers.errors import ProviderError, provider_call
from agent.providers.params import Allowed, ParamRules
from agent.requests import BatchRequest
from agent.state import Job
from agent.statuses import JobStatus
from agent.structured import OutputSpec

logger = logging.getLogger("batch_agent")

STATUS_MAP: dict[str, JobStatus] = {
    "in_progress": "running",
    "canceling": "cancelling",
    "ended": "done",
}
# What Anthropic documents for the numeric Messages parameters (its API reference, as the
# `anthropic` SDK's docstrings had it while `messages.create` still named them: temperature
# "Ranges from 0.0 to 1.0", top_p a probability, top_k an integer count of options). max_tokens
# is an `int`, and the installed SDK says "Set to `0` to populate the prompt cache".
PARAM_RULES: ParamRules = {
    "temperature": Allowed(minimum=0, maximum=1),
    "top_p": Allowed(minimum=0, maximum=1),
    "top_k": Allowed(integer=True, minimum=0),
    "max_tokens": Allowed(integer=True, minimum=0),
}
# The create body wraps the request lines; its size counts against the 256 MB limit.
_HEAD = b'{"requests":['
_TAIL = b"]}"
MAX_BODY_BYTES = 256 * 1000 * 1000  # "256 MB", read as decimal: the smaller reading is safe
MAX_REQUESTS = 100_000
# Each line's custom id is rewritten to `<32-hex job key>-<position>` on the way out, which can
# make a line up to this much longer than the planned one (a one-character user id).
_TAG_GROWTH = 32 + 1 + len(str(MAX_REQUESTS))
# The planned line's prefix, as `jsonl_line({"custom_id": ..., "params": ...})` writes it.
_CUSTOM_ID_PREFIX = re.compile(rb'^\{"custom_id":"(?:[^"\\]|\\.)*",')
# Our clock (the journal's send time) against the provider's `created_at`.
RECONCILE_SKEW_SECONDS = 300.0
# A batch still processing is at most this old: Anthropic expires unfinished work after 24 hours.
PROCESSING_AT_MOST_SECONDS = 86400.0 + RECONCILE_SKEW_SECONDS
# Ended batches whose first results line a listing reads, at most, to find a thread's own.
MAX_PEEKS = 100


def cap_refused(exc: BaseException) -> str | None:
    """Return 'requests' for Anthropic's refusal of a batch over the processing-queue cap.

    UNCONFIRMED: Anthropic documents a rate limit on requests in the processing queue, not its
    answer; the refusal is a 429 that names the queue (the emulator's, `agent.emulator.caps`),
    where a per-minute rate limit does not.
    """
    return "requests" if "processing queue" in str(exc).lower() else None


def custom_id(job_key: str, position: int) -> str:
    """Return the custom id request `position` of job `job_key` is sent under."""
    return f"{job_key}-{position}"


class InlineRequests:
    """The create body `{"requests": [...]}`, streamed from a JSONL file of request lines.

    Every line is one compact JSON object that starts with its `custom_id`; each is sent with
    its custom id replaced by the job's identity and its position (`custom_id`), and the lines
    joined by commas into the JSON array, without parsing the rest of any line. The object can
    be iterated again and yields the same bytes.
    """

    CHUNK = 1 << 20

    def __init__(self, path: Path, job_key: str) -> None:
        """Measure the body for its Content-Length (one pass over the file)."""
        self.path = path
        self.job_key = job_key
        self.length = len(_HEAD) + len(_TAIL)
        for position, line in enumerate(self._lines()):
            self.length += len(line) + (1 if position else 0)

    def _lines(self) -> Iterator[bytes]:
        with self.path.open("rb") as fh:
            for position, raw in enumerate(line for line in fh if line.strip()):
                match = _CUSTOM_ID_PREFIX.match(raw)
                if match is None:
                    raise ProviderError(
                        f"anthropic: line {position + 1} of {self.path} has no custom_id"
                    )
                tag = b'{"custom_id":"' + custom_id(self.job_key, position).encode() + b'",'
                yield tag + raw[match.end() :].rstrip(b"\r\n")

    def __iter__(self) -> Iterator[bytes]:
        """Yield the body in chunks of about 1 MiB."""
        chunk = bytearray(_HEAD)
        for position, line in enumerate(self._lines()):
            if position:
                chunk += b","
            chunk += line
            if len(chunk) >= self.CHUNK:
                yield bytes(chunk)
                chunk.clear()
        chunk += _TAIL
        yield bytes(chunk)


class AnthropicProvider(BatchProvider):
    """Message Batches through the official `anthropic` SDK (inline requests, no metadata)."""

    name = "anthropic"
    http_by_code = realtime_errors.HTTP_BY_CODE
    default_model = "claude-haiku-4-5"
    limits = ProviderLimits(
        max_requests=MAX_REQUESTS,
        max_file_bytes=MAX_BODY_BYTES - len(_HEAD) - len(_TAIL) - MAX_REQUESTS * _TAG_GROWTH,
    )
    keeps_input = False
    param_rules = PARAM_RULES
    supports_output_spec = True
    # Anthropic batches always have 24 hours.
    fixed_completion_window = "24h"

    def __init__(
        self, *, emulated: bool, base_url: str, http_client: httpx2.Client | None = None
    ) -> None:
        """Build the SDK client; the API key is read from the environment and kept only there."""
        super().__init__(emulated=emulated, base_url=base_url)
        sdk_base_url, api_key, http_client = self.sdk_endpoint(
            "/anthropic", http_client, DefaultHttpxClient
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

    @classmethod
    def realtime_error(cls, status: int, code: str, text: str, model: str) -> Exception:
        """`ChatAnthropic`'s exception for this error (`agent.providers.anthropic.realtime_errors`)."""
        return realtime_errors.realtime_error(status, code, text)

    def line_builder(
        self, model: str, params: dict[str, Any], spec: OutputSpec | None = None
    ) -> Callable[[BatchRequest], bytes]:
        """Build `{custom_id, params}` lines with ChatAnthropic's realtime body.

        The fast builder produces the same bytes as `request_params` (checked at construction
        and by property tests) and falls back to it for anything it does not handle (including
        every request of a set with tools or a response schema).
        """
        builder = AnthropicBodyBuilder(model, params, spec)

        def build(request: BatchRequest) -> bytes:
            # The user's id is replaced by the job's identity when sent (`InlineRequests`).
            return jsonl_line({"custom_id": request.id, "params": builder.build(request)})

        return build

    realtime_fallback = True

    def send_realtime(
        self, job: Job, raw: bytes, parser: LineParser, *, flex: bool
    ) -> RequestOutcome:
        """Send a kept request line through the Messages API (Anthropic has no flex tier)."""
        return send_line(self._client, raw, parser, str(job["job_id"] or job["job_key"]))

    def chat_model(self, model: str, params: dict[str, Any]) -> ChatAnthropic:
        """Return the `ChatAnthropic` whose realtime calls this provider's requests reproduce."""
        return chat_model(model, params)

    def retrieve_model(self, model: str) -> None:
        """Retrieve `model` (`client.models.retrieve`): it raises for a model not served."""
        self._client.models.retrieve(model)

    # ----------------------------------------------------------------- submitting

    def upload(self, path: Path, file_name: str) -> str:
        """Return the built input's path: Anthropic takes the requests inline, in `create`."""
        return str(path)

    def find_file(self, file_name: str, size: int, since: float) -> str | None:
        """Nothing is ever uploaded to Anthropic, so there is nothing to find."""
        return None

    def create(
        self,
        input_file_id: str,
        *,
        model: str,
        completion_window: str,
        metadata: dict[str, str],
        endpoint: Endpoint = CHAT,
    ) -> CreatedJob:
        """Create the batch, streaming the built input as the inline `requests`, once.

        Batches carry no metadata; the job key from `metadata` goes into every custom id
        instead. No SDK retries: a create whose answer was lost may have made a batch, and the
        graph looks for it before any resend (`send_once`).
        """
        self.check_endpoint(endpoint)
        body = InlineRequests(Path(input_file_id), metadata[JOB_KEY_METADATA])
        client = self._client.with_options(max_retries=0)
        with provider_call(self.name, "create the message batch", cap_refused):
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
        return CreatedJob(batch.id, batch.created_at.timestamp(), input_file_id="")

    def find_job(self, job: Job, *, sent_at: float, claimed: Collection[str]) -> CreatedJob | None:
        """Find the batch a create sent at `sent_at` made, by the rule in the module docstring.

        An ended batch whose results carry the job key wins; else a batch still processing,
        of the job's size, created closest to the send, is adopted unverified.
        """
        processing, peeks = [], 0
        for batch in self._listing(sent_at - RECONCILE_SKEW_SECONDS):
            if _total(batch) != job["request_count"] or batch.id in claimed:
                continue
            if batch.processing_status != "ended":
                processing.append(batch)
            elif peeks < MAX_PEEKS:
                peeks += 1
                if self._owner(batch) == job["job_key"]:
                    return CreatedJob(batch.id, batch.created_at.timestamp(), "")
        if not processing:
            return None
        best = min(processing, key=lambda b: abs(b.created_at.timestamp() - sent_at))
        return CreatedJob(best.id, best.created_at.timestamp(), "", verified=False)

    def thread_jobs(
        self, thread_id: str, intents: list[Job], *, since: float, claimed: Collection[str]
    ) -> dict[str, CreatedJob]:
        """Find the batches an earlier life of the thread created, by the module docstring's rule.

        Ended batches of an intent's size are adopted when their results carry its key. Batches
        still processing can only have come from the earlier life if they were created before
        this plan: matched to the intents of their size, oldest batch to first part (parts are
        created in order), they are adopted unverified.
        """
        keys = {intent["job_key"] for intent in intents}
        sizes = {intent["request_count"] for intent in intents}
        planned_at = min(intent["intent_at"] for intent in intents)
        found: dict[str, CreatedJob] = {}
        processing: list[MessageBatch] = []
        peeks = 0
        for batch in self._listing(since):
            if _total(batch) not in sizes or batch.id in claimed:
                continue
            if batch.processing_status == "ended":
                if peeks < MAX_PEEKS:
                    peeks += 1
                    owner = self._owner(batch)
                    if owner in keys and owner not in found:
                        found[owner] = CreatedJob(batch.id, batch.created_at.timestamp(), "")
            elif (
                planned_at - PROCESSING_AT_MOST_SECONDS
                <= batch.created_at.timestamp()
                <= planned_at
            ):
                processing.append(batch)
        processing.sort(key=lambda b: b.created_at)
        for intent in intents:
            if intent["job_key"] in found:
                continue
            match = next((b for b in processing if _total(b) == intent["request_count"]), None)
            if match is not None:
                processing.remove(match)
                found[intent["job_key"]] = CreatedJob(
                    match.id, match.created_at.timestamp(), "", verified=False
                )
        return found

    def id_matcher(self, job: Job, ids: Sequence[str]) -> Callable[[str], str | None]:
        """Map `<job key>-<position>` custom ids back to the request ids, by position."""
        prefix = f"{job['job_key']}-"

        def match(sent: str) -> str | None:
            position = sent[len(prefix) :] if sent.startswith(prefix) else ""
            if position.isdecimal() and int(position) < len(ids):
                return ids[int(position)]
            return None

        return match

    def job_owner(self, job: Job) -> str | None:
        """Return the job key the (ended) batch's results carry."""
        with provider_call(self.name, f"check batch {job['job_id']}"):
            batch = self._client.messages.batches.retrieve(str(job["job_id"]))
        return self._owner(batch)

    def _listing(self, floor: float) -> Iterator[MessageBatch]:
        """Yield the workspace's batches newest first, back to `floor`."""
        with provider_call(self.name, "list message batches"):
            yield from bounded_listing(
                self._client.messages.batches.list(limit=100),
                ident=lambda b: b.id,
                created_at=lambda b: b.created_at.timestamp(),
                floor=floor,
            )

    def _owner(self, batch: MessageBatch) -> str | None:
        """Return the job key in an ended batch's first results line (None: none readable)."""
        if batch.processing_status != "ended" or not batch.results_url:
            return None
        for raw in self._result_lines(batch.id):
            try:
                sent = orjson.loads(raw).get("custom_id")
            except (orjson.JSONDecodeError, AttributeError):
                return None
            key, _, position = str(sent).rpartition("-")
            return key if position.isdecimal() else None
        return None

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
        cancelled = batch.cancel_initiated_at is not None and raw == "ended"
        if cancelled:
            errors.append(CANCELLED_NOTE)
        return JobUpdate(
            provider_status=raw,
            status=normalise_status(raw, STATUS_MAP, errors),
            counts=job_counts(total, counts.succeeded, failed),
            # The results stream's URL stands for the output file: set only once ended.
            output_file_id=batch.results_url,
            error_file_id=None,
            errors=errors,
            cancelled=cancelled,
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
        return AnthropicMessageParser(model, params)

    def results(self, job: Job, spec: OutputSpec | None = None) -> Iterator[RequestOutcome]:
        """Stream the outcome of every request of an ended batch, one results line at a time."""
        if not job["output_file_id"]:
            return
        parser = self.message_parser(job_chat_model(job), params=job["params"])
        job_id = str(job["job_id"])
        for raw in self._result_lines(job_id):
            yield read_outcome(parser, raw, job_id)

    def _result_lines(self, batch_id: str) -> Iterator[bytes]:
        """Stream the results JSONL through the SDK (it follows the absolute `results_url`)."""
        with provider_call(self.name, f"download the results of batch {batch_id}"):
            results = self._client.messages.batches.with_streaming_response.results(batch_id)
            with results as response:
                yield from nonblank_lines(response.iter_bytes())

    def file_lines(self, file_id: str) -> Iterator[bytes]:
        """Anthropic keeps no files: a job's input lines are in the graph's store."""
        raise ProviderError(f"anthropic: there is no provider file {file_id!r} (inputs go inline)")


def _total(batch: MessageBatch) -> int:
    counts = batch.request_counts
    return counts.processing + counts.succeeded + counts.errored + counts.canceled + counts.expired
