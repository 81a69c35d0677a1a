"""Gemini Developer API Batch provider (official `google-genai` SDK).

The SDK calls of a Gemini batch's life: upload the JSONL input (resumable upload), find an upload
or a batch again by its identity, create (`batches.create` from `files/...`), check, cancel and
stream the responses file. Requests are built and answers parsed as
`ChatGoogleGenerativeAI.invoke()` has them (`agent.providers.gemini.reference`), by the fast
paths of `agent.providers.gemini.fast`.

How Gemini differs from the other providers, and how this module adapts:

- **Identity.** A batch carries nothing of ours but its `displayName`, and `batches.list` has no
  filter: the display name is `batch-agent-<job key>` (the job key hashes thread, request set,
  attempt and part), and `scan_jobs` (under the base class's `find_job` / `thread_jobs`) pages
  the listing newest first and matches it.
  A thread's intents name their job keys, so the thread id need not be in the display name.
- **Lines.** Input lines are `{"key": <request id>, "request": GenerateContentRequest}` and
  result lines `{"key", "response"}` or `{"key", "error": {"code", "message"}}`, in any order:
  results are joined on `key`, never by position. A `BATCH_STATE_SUCCEEDED` batch may hold only
  failed rows; each is its request's own failure. A row that never comes is reported as that
  request's `no_result` by the graph.
- **Status.** The SDK's `BatchJob` drops `batchStats`, so `status` reads the raw operation JSON
  through the SDK's own API client (`Client._api_client.request`: same key, base URL, API version
  and retries as every other call). Its counts are int64 strings, and a zero count is left out
  (proto3 JSON): a missing count is 0.
- **Results** are streamed from `files/<id>:download?alt=media` through the shared HTTP client,
  with the request (URL, key header) the SDK builds (`_build_request`); `files.download`
  would hold the whole file in memory (googleapis/python-genai#1801).
- **Input kept in the store.** Files a user uploads cannot be downloaded again (google-genai's
  `files.download` docstring), so, as for Anthropic, a follow-up job rebuilds the requests it
  retries from the store (`keeps_input` False).
- **Retries.** The SDK retries nothing unless told to: reads get `READ_RETRIES`; the upload and
  the create go out once (`ONCE`), and the graph resends them through `send_once`, after looking
  for what they may have made. A 429 `RESOURCE_EXHAUSTED` on create (seen below the published
  limits, googleapis/python-genai#1901) is a refusal that `send_once` waits out and resends;
  one whose ``QuotaFailure`` detail names a cap on what is in flight (concurrent batch jobs, file
  storage: `cap_refused`) is a `QuotaExceededError`, for the planner to wait for jobs to end.
- **Quota failures.** A batch that failed whole with code 8 (RESOURCE_EXHAUSTED) ran none of its
  requests: its update says `quota_refused` (and `retryable`).
- **API version.** google-genai talks to `v1` unless told otherwise. A `base_url` ending in
  `/v1` or `/v1beta` selects that version (the rest of the URL is the SDK's base URL); otherwise
  `GOOGLE_GENAI_API_VERSION` decides, as it does for the SDK (`beta` meaning `v1beta`).
- **Cancel** is instantly terminal (`BATCH_STATE_CANCELLED`), and the requests done by then keep
  their rows.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Collection, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Final

import httpx2
import orjson
from google import genai
from google.genai import errors as genai_errors
from google.genai import types
from langchain_google_genai import ChatGoogleGenerativeAI

from agent.endpoints import CHAT, EMBEDDINGS, Endpoint
from agent.providers.base import (
    DELETE_RETRIES,
    JOB_KEY_METADATA,
    MAX_LISTED,
    SDK_MAX_RETRIES,
    BatchProvider,
    CreatedJob,
    JobUpdate,
    LineParser,
    ProviderLimits,
    RequestOutcome,
    VectorParser,
    bounded_listing,
    job_counts,
    nonblank_lines,
    normalise_status,
)
from agent.providers.errors import ProviderError, provider_call
from agent.providers.gemini import realtime_errors
from agent.providers.gemini.fallback import send_line
from agent.providers.gemini.fast import GeminiBodyBuilder, GeminiMessageParser
from agent.providers.gemini.reference import chat_model
from agent.providers.params import Allowed, ParamRules
from agent.quota_budget import Budget
from agent.requests import BatchRequest
from agent.state import Job
from agent.statuses import JobStatus
from agent.structured import OutputSpec

# Raw `metadata.state` -> normalised status; the SDK's `JOB_STATE_*` names too (it maps the
# REST names to them, and a proxy speaking the SDK's names is read alike).
STATUS_MAP: dict[str, JobStatus] = {
    "BATCH_STATE_UNSPECIFIED": "queued",
    "BATCH_STATE_PENDING": "queued",
    "BATCH_STATE_RUNNING": "running",
    "BATCH_STATE_SUCCEEDED": "done",
    "BATCH_STATE_CANCELLED": "done",
    "BATCH_STATE_EXPIRED": "done",
    "BATCH_STATE_FAILED": "failed",
    "JOB_STATE_PENDING": "queued",
    "JOB_STATE_QUEUED": "queued",
    "JOB_STATE_RUNNING": "running",
    "JOB_STATE_SUCCEEDED": "done",
    "JOB_STATE_CANCELLED": "done",
    "JOB_STATE_EXPIRED": "done",
    "JOB_STATE_FAILED": "failed",
}
_CANCELLED = frozenset({"BATCH_STATE_CANCELLED", "JOB_STATE_CANCELLED"})
# gRPC code of a batch that failed for a quota (RESOURCE_EXHAUSTED): its requests may be retried.
_QUOTA_CODE = 8
_QUOTA_FAILURE = "type.googleapis.com/google.rpc.QuotaFailure"
# Words of a `QuotaFailure` violation's metric or id -> the cap on what is in flight it names.
# UNCONFIRMED: Google publishes the caps (concurrent batch jobs, file storage, enqueued tokens),
# not the metric names of their refusals; a violation naming none of them (a per-minute rate
# limit) stays a passing 429 that `send_once` waits out.
_CAP_WORDS: Final = (("concurrent", "jobs"), ("storage", "bytes"), ("enqueued", "tokens"))
# What Google documents for the numeric generation parameters (the `GenerationConfig` reference
# of the Gemini API, as google-genai's `GenerateContentConfig` docstrings have them, named as
# `ChatGoogleGenerativeAI` takes them): temperature from 0 to 2, top_p a probability, top_k a
# positive integer count of tokens, max_output_tokens and candidate_count positive integers,
# presence_penalty / frequency_penalty "from -2.0 up to, but not including, 2.0" (checked as
# up to 2), logprobs an integer from 0 to 20, seed an integer.
PARAM_RULES: ParamRules = {
    "temperature": Allowed(minimum=0, maximum=2),
    "top_p": Allowed(minimum=0, maximum=1),
    "top_k": Allowed(integer=True, minimum=1),
    "max_output_tokens": Allowed(integer=True, minimum=1),
    "max_tokens": Allowed(integer=True, minimum=1),
    "n": Allowed(integer=True, minimum=1),
    "candidate_count": Allowed(integer=True, minimum=1),
    "presence_penalty": Allowed(minimum=-2, maximum=2),
    "frequency_penalty": Allowed(minimum=-2, maximum=2),
    "logprobs": Allowed(integer=True, minimum=0, maximum=20),
    "seed": Allowed(integer=True),
}
# The input file may be up to 2 GB (read as decimal, the smaller reading); requests per batch
# have no published cap, so jobs are kept Anthropic-sized.
MAX_FILE_BYTES = 2 * 1000 * 1000 * 1000
MAX_REQUESTS = 100_000
FILE_PAGE_SIZE = 100
JOB_PAGE_SIZE = 100
DISPLAY_PREFIX = "batch-agent-"
# Reads (status, listings, model lookup, cancel) retry 408/429/5xx and network errors.
READ_RETRIES: Final = types.HttpRetryOptions(
    attempts=SDK_MAX_RETRIES + 1, initial_delay=0.5, max_delay=30.0, jitter=0.25
)
# Calls that must not take effect twice (upload, create) go out once; see `send_once`.
ONCE: Final = types.HttpOptions(retry_options=types.HttpRetryOptions(attempts=1))
# A file delete gets one more try after a passing failure (`DELETE_RETRIES`).
DELETE_OPTIONS: Final = types.HttpOptions(
    retry_options=types.HttpRetryOptions(
        attempts=DELETE_RETRIES + 1, initial_delay=0.2, max_delay=1.0, jitter=0.0
    )
)
# Per-request timeout (milliseconds, as google-genai takes it): without one it sets none at all.
TIMEOUT_MS = 300_000
# A base URL naming the API version: `<root>/v1` or `<root>/v1beta` (a trailing slash allowed).
_VERSIONED_URL = re.compile(r"^(?P<root>.*?)/(?P<version>v1|v1beta)/?$")


def cap_refused(exc: BaseException) -> str | None:
    """Name the cap a Gemini 429 refused a create or an upload for, or None for another error.

    Gemini answers both a passing rate limit and a cap on what is in flight with 429
    ``RESOURCE_EXHAUSTED``; the cap is told by the ``google.rpc.QuotaFailure`` detail's violated
    quota (as the emulator's `agent.emulator.caps` answers it).
    """
    if not isinstance(exc, genai_errors.APIError) or exc.status != "RESOURCE_EXHAUSTED":
        return None
    answer = exc.details if isinstance(exc.details, dict) else {}
    error = answer.get("error", answer)
    details = error.get("details") if isinstance(error, dict) else None
    for detail in details if isinstance(details, list) else []:
        if not isinstance(detail, dict) or detail.get("@type") != _QUOTA_FAILURE:
            continue
        for violation in detail.get("violations") or []:
            if not isinstance(violation, dict):
                continue
            named = f"{violation.get('quotaMetric', '')} {violation.get('quotaId', '')}".lower()
            for word, limit in _CAP_WORDS:
                if word in named:
                    return limit
    return None


def display_name(job_key: str) -> str:
    """Return the `displayName` a job's batch is created with (its identity at Gemini)."""
    return f"{DISPLAY_PREFIX}{job_key}"


def split_version(base_url: str | None) -> tuple[str | None, str | None]:
    """Split a base URL into google-genai's `(base_url, api_version)`.

    A URL ending in `/v1` or `/v1beta` names the version; any other URL (or None) leaves it
    to the SDK (`GOOGLE_GENAI_API_VERSION`, else `v1`).
    """
    if not base_url:
        return None, None
    found = _VERSIONED_URL.match(base_url)
    if found is None:
        return base_url, None
    return found.group("root") or None, found.group("version")


def _gemini_http_client() -> httpx2.Client:
    """Build the HTTP client the google-genai SDK builds when given none (redirects followed)."""
    return httpx2.Client(follow_redirects=True)


def _count(stats: Mapping[str, Any], name: str) -> int:
    """Read one `batchStats` count: an int64 string, left out when zero."""
    value = stats.get(name)
    try:
        return max(int(value), 0) if value is not None else 0
    except (TypeError, ValueError):
        return 0


def _timestamp(value: datetime | None) -> float:
    return value.timestamp() if value is not None else 0.0


class GeminiProvider(BatchProvider):
    """Files + Batch Mode of the Gemini Developer API through the official `google-genai` SDK."""

    name = "gemini"
    http_by_code = realtime_errors.HTTP_BY_CODE
    default_model = "gemini-2.5-flash"
    default_embedding_model = "gemini-embedding-001"
    limits = ProviderLimits(max_requests=MAX_REQUESTS, max_file_bytes=MAX_FILE_BYTES)
    keeps_input = False
    # 100 concurrent batch jobs and 20 GB of stored files per project (figures UNCONFIRMED).
    quota_defaults = Budget(jobs=100, bytes=20_000_000_000)
    param_rules = PARAM_RULES
    supports_output_spec = True
    expired_statuses = frozenset({"BATCH_STATE_EXPIRED", "JOB_STATE_EXPIRED"})
    stores_files = True
    # Gemini batches target 24 hours (and expire after 48): no other window is offered.
    fixed_completion_window = "24h"
    endpoints = frozenset({CHAT, EMBEDDINGS})

    def __init__(
        self, *, emulated: bool, base_url: str, http_client: httpx2.Client | None = None
    ) -> None:
        """Build the SDK client; the API key is read from the environment and kept only there.

        The key is the first of `GOOGLE_API_KEY`, `GEMINI_API_KEY` that is set (the SDK's own
        order); the in-process emulator (no key) is reached under its `/gemini` prefix.
        """
        super().__init__(emulated=emulated, base_url=base_url)
        sdk_base_url, api_key, http_client = self.sdk_endpoint(
            "/gemini", http_client, _gemini_http_client
        )
        root, version = split_version(sdk_base_url)
        assert http_client is not None  # sdk_endpoint always returns one given a factory
        self._http = http_client
        options = types.HttpOptions(
            base_url=root,
            api_version=version,
            httpx_client=http_client,
            retry_options=READ_RETRIES,
            timeout=TIMEOUT_MS,
        )
        # Explicit options keep the SDK from reading Vertex settings or other credentials.
        self._client = genai.Client(api_key=api_key, vertexai=False, http_options=options)

    # ----------------------------------------------------------------- building

    @classmethod
    def realtime_error(cls, status: int, code: str, text: str, model: str) -> Exception:
        """`ChatGoogleGenerativeAI`'s exception for this error (`agent.providers.gemini.realtime_errors`)."""
        return realtime_errors.realtime_error(status, code, text, model)

    def line_builder(
        self, model: str, params: dict[str, Any], spec: OutputSpec | None = None
    ) -> Callable[[BatchRequest], bytes]:
        """Build `{key, request}` lines with ChatGoogleGenerativeAI's realtime request.

        The fast builder gives what `reference.request_body` gives (self-checked, and by
        property tests) and falls back to it for anything it does not handle.
        """
        return GeminiBodyBuilder(model, params, spec).line

    def embedding_line_builder(
        self, model: str, params: dict[str, Any]
    ) -> Callable[[BatchRequest], bytes]:
        """Build `{key, request: EmbedContentRequest}` lines, one text each.

        The request is what `GoogleGenerativeAIEmbeddings(model=model, **params)
        .embed_documents([text])` sends for the text (`agent.providers.gemini.embeddings`).
        """
        # Imported here: numpy and the embeddings class are only needed by embeddings runs.
        from agent.providers.gemini.embedding_fast import GeminiEmbeddingBuilder

        return GeminiEmbeddingBuilder(model, params).line

    def vector_parser(self, model: str, params: Mapping[str, Any]) -> VectorParser:
        """Return the parser of embeddings responses-file lines into one vector per text."""
        from agent.providers.gemini.embedding_fast import GeminiVectorParser

        return GeminiVectorParser(model, params)

    def line_id(self, raw: bytes) -> str:
        """Return the request id of a built input line (its `key`)."""
        return str(orjson.loads(raw)["key"])

    def chat_model(self, model: str, params: dict[str, Any]) -> ChatGoogleGenerativeAI:
        """Return the `ChatGoogleGenerativeAI` whose realtime calls our batch requests reproduce."""
        return chat_model(model, params)

    def message_parser(
        self,
        model: str,
        spec: OutputSpec | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> LineParser:
        """Return the fast, parity-exact parser of Gemini result lines."""
        return GeminiMessageParser(model, params, spec)

    realtime_fallback = True
    flex_tier = True

    def send_realtime(
        self, job: Job, raw: bytes, parser: LineParser, *, flex: bool
    ) -> RequestOutcome:
        """Send a chat line through `generateContent` (flex: `serviceTier: "flex"`)."""
        # The key is read from the environment for this call only, as at construction.
        sdk_base_url, api_key, _ = self.sdk_endpoint("/gemini", self._http)
        root, version = split_version(sdk_base_url)
        job_id = str(job["job_id"] or job["job_key"])
        return send_line(
            self._http, root, version, api_key, job["model"], raw, parser, job_id, flex=flex
        )

    def retrieve_model(self, model: str) -> None:
        """Get `model` (`client.models.get`): it raises for a model not served."""
        self._client.models.get(model=model)

    # ----------------------------------------------------------------- submitting

    def upload(self, path: Path, file_name: str) -> str:
        """Upload the JSONL input file (resumable upload, streamed from disk), once.

        Sent without the SDK's retries: the graph resends through `send_once`, after looking
        for the file by its display name (`find_file`).
        """
        config = types.UploadFileConfig(
            mime_type="jsonl", display_name=file_name, http_options=ONCE
        )
        with provider_call(self.name, "upload the batch input file", cap_refused):
            uploaded = self._client.files.upload(file=str(path), config=config)
        if not uploaded.name:
            raise ProviderError(f"{self.name}: the upload of {file_name} answered no file name")
        return uploaded.name

    def find_file(self, file_name: str, size: int, since: float) -> str | None:
        """Page through the project's files (newest first) for an upload of this name and size.

        A server without a file listing finds nothing (`find_listed_file`).
        """
        return self.find_listed_file(
            lambda: self._client.files.list(config={"page_size": FILE_PAGE_SIZE}),
            ident=lambda f: str(f.name),
            created_at=lambda f: _timestamp(f.create_time),
            matches=lambda f: (
                f.display_name == file_name
                and f.size_bytes == size
                and f.state != types.FileState.FAILED
            ),
            since=since,
        )

    def create(
        self,
        input_file_id: str,
        *,
        model: str,
        completion_window: str,
        metadata: dict[str, str],
        endpoint: Endpoint = CHAT,
    ) -> CreatedJob:
        """Create the batch from an uploaded file, once (no SDK retries: see `send_once`).

        Batches carry no metadata: the job key goes into the display name (`display_name`).
        """
        self.check_endpoint(endpoint)
        self.check_completion_window(completion_window)
        name = display_name(metadata[JOB_KEY_METADATA])
        with provider_call(self.name, "create the batch", cap_refused):
            if endpoint == EMBEDDINGS:
                created = self._create_embeddings(model, input_file_id, name)
            else:
                config = types.CreateBatchJobConfig(display_name=name, http_options=ONCE)
                created = self._client.batches.create(model=model, src=input_file_id, config=config)
        if not created.name:
            raise ProviderError(f"{self.name}: the batch create answered no batch name")
        return CreatedJob(
            job_id=created.name,
            created_at=_timestamp(created.create_time),
            input_file_id=input_file_id,
        )

    def _create_embeddings(self, model: str, input_file_id: str, name: str) -> types.BatchJob:
        """Create an embeddings batch (`models/<model>:asyncBatchEmbedContent`) from a file.

        google-genai marks `batches.create_embeddings` experimental and warns on every call;
        the warning is for the SDK's users, not ours.
        """
        config = types.CreateEmbeddingsBatchJobConfig(display_name=name, http_options=ONCE)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self._client.batches.create_embeddings(
                model=model,
                src=types.EmbeddingsBatchJobSource(file_name=input_file_id),
                config=config,
            )

    def scan_jobs(
        self, keys: set[str], since: float, claimed: Collection[str]
    ) -> dict[str, CreatedJob]:
        """Page through batches newest first back to `since`, matching display names.

        The listing has no filter, so this is a client-side scan; it stops once every key is
        found, at `since`, or at the listing bounds.
        """
        wanted = {display_name(key): key for key in keys}
        found: dict[str, CreatedJob] = {}
        with provider_call(self.name, "list batches"):
            for batch in bounded_listing(
                self._client.batches.list(config={"page_size": JOB_PAGE_SIZE}),
                ident=lambda b: str(b.name),
                created_at=lambda b: _timestamp(b.create_time),
                floor=since,
                limit=MAX_LISTED,
            ):
                key = wanted.get(batch.display_name or "")
                if key is not None and key not in found and batch.name not in claimed:
                    found[key] = CreatedJob(
                        job_id=str(batch.name),
                        created_at=_timestamp(batch.create_time),
                        input_file_id="",
                    )
                    if len(found) == len(keys):
                        break
        return found

    # ----------------------------------------------------------------- tracking

    def status(self, job: Job) -> JobUpdate:
        """Read the batch's operation once, as raw JSON (the SDK's `BatchJob` drops its counts)."""
        name = str(job["job_id"])
        with provider_call(self.name, f"check batch {name}"):
            # The SDK's API client: its key, base URL, API version and read retries.
            answer = self._client._api_client.request("get", name, {})
            operation = orjson.loads(answer.body or "{}")
        return self._update(operation if isinstance(operation, dict) else {}, job)

    def cancel(self, job: Job) -> JobUpdate:
        """Cancel the batch (instantly terminal at Gemini), then read it again."""
        name = str(job["job_id"])
        with provider_call(self.name, f"cancel batch {name}"):
            self._client.batches.cancel(name=name)
        return self.status(job)

    def _update(self, operation: dict[str, Any], job: Job) -> JobUpdate:
        metadata = operation.get("metadata")
        metadata = metadata if isinstance(metadata, dict) else {}
        raw = str(metadata.get("state") or "BATCH_STATE_UNSPECIFIED")
        stats = metadata.get("batchStats")
        stats = stats if isinstance(stats, dict) else {}
        total = _count(stats, "requestCount") or job["request_count"]
        succeeded = _count(stats, "successfulRequestCount")
        failed = _count(stats, "failedRequestCount")
        errors: list[str] = []
        retryable = quota_refused = False
        error = operation.get("error")
        if isinstance(error, dict):
            errors.append(f"{error.get('code')}: {error.get('message') or 'the batch failed'}")
            retryable = quota_refused = error.get("code") == _QUOTA_CODE
        output = metadata.get("output")
        if not isinstance(output, dict):
            response = operation.get("response")
            output = response if isinstance(response, dict) else {}
        responses_file = output.get("responsesFile")
        return JobUpdate(
            provider_status=raw,
            status=normalise_status(raw, STATUS_MAP, errors),
            counts=job_counts(total, succeeded, failed),
            output_file_id=responses_file if isinstance(responses_file, str) else None,
            error_file_id=None,
            errors=errors,
            cancelled=raw in _CANCELLED,
            retryable=retryable,
            # Created, then failed whole with RESOURCE_EXHAUSTED (a quota): none of its requests ran.
            quota_refused=quota_refused,
        )

    # ----------------------------------------------------------------- results

    def delete_file(self, file_id: str) -> None:
        """Delete an uploaded input or a responses file (`files.delete`).

        Our files count against the project's 20 GB of file storage until they expire (48 h).
        """
        config = types.DeleteFileConfig(http_options=DELETE_OPTIONS)
        with provider_call(self.name, f"delete file {file_id}"):
            self._client.files.delete(name=file_id, config=config)

    def file_lines(self, file_id: str) -> Iterator[bytes]:
        """Stream a generated file's lines (`files/<id>:download?alt=media`), never buffering it.

        The request is the one google-genai builds for `files.download` (URL, API version, key
        header), sent through the shared HTTP client with `stream=True`.
        """
        name = file_id.removeprefix("files/")
        with provider_call(self.name, f"download file {file_id}"):
            built = self._client._api_client._build_request(
                "get", f"files/{name}:download?alt=media", {}
            )
            request = self._http.build_request(
                "GET", built.url, headers=built.headers, timeout=built.timeout
            )
            response = self._http.send(request, stream=True)
            try:
                if response.status_code >= 400:
                    response.read()
                    genai_errors.APIError.raise_for_response(response)
                yield from nonblank_lines(response.iter_bytes())
            finally:
                response.close()
