"""Mistral batch jobs provider (official `mistralai` SDK).

The SDK calls of a batch job's life: upload, find an upload or a job again by its identity
(Mistral filters jobs by metadata on the server), create, check, cancel, download. Mistral runs
one model per job, so the model is set at job level and also kept in each body, as realtime
sends it. Lines are built and answers parsed by `agent.providers.mistral.fast`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import httpx2
from langchain_mistralai import ChatMistralAI
from mistralai.client import Mistral
from mistralai.client.utils import BackoffStrategy, RetryConfig

from agent.endpoints import CHAT, EMBEDDINGS, Endpoint
from agent.providers.base import (
    JOB_KEY_METADATA,
    MAX_LISTED,
    RECONCILE_LOOKBACK_SECONDS,
    THREAD_METADATA,
    BatchProvider,
    CreatedJob,
    JobUpdate,
    LineParser,
    ProviderLimits,
    RequestOutcome,
    VectorParser,
    bounded_listing,
    job_counts,
    jsonl_line,
    nonblank_lines,
    normalise_status,
    shared_http_client,
)
from agent.providers.errors import ProviderError, provider_call
from agent.providers.mistral import realtime_errors
from agent.providers.mistral.fallback import send_line
from agent.providers.mistral.fast import MistralBodyBuilder, MistralMessageParser
from agent.providers.mistral.reference import chat_model
from agent.providers.params import Allowed, ParamRules
from agent.quota_budget import Budget
from agent.requests import CHAT_COMPLETIONS_URL, EMBEDDINGS_URL, BatchRequest, InputError
from agent.state import Job
from agent.statuses import JobStatus
from agent.structured import OutputSpec

# Calls that must not take effect twice (create, upload) go out once; see `send_once`.
NO_RETRIES = RetryConfig("none", BackoffStrategy(0, 0, 1.0, 0), retry_connection_errors=False)
# A file delete is retried for a moment only (one more try, about): see `DELETE_RETRIES`.
DELETE_RETRY = RetryConfig(
    "backoff", BackoffStrategy(200, 200, 1.0, 300), retry_connection_errors=True
)
FILE_PAGE_SIZE = 100
JOB_PAGE_SIZE = 100
# The job `endpoint` of each endpoint batched (`agent.endpoints`).
ENDPOINT_URLS: Final[Mapping[Endpoint, str]] = {
    CHAT: CHAT_COMPLETIONS_URL,
    EMBEDDINGS: EMBEDDINGS_URL,
}

STATUS_MAP: dict[str, JobStatus] = {
    "QUEUED": "queued",
    "RUNNING": "running",
    "CANCELLATION_REQUESTED": "cancelling",
    "SUCCESS": "done",
    "TIMEOUT_EXCEEDED": "done",
    "CANCELLED": "done",
    "FAILED": "failed",
}

# What Mistral documents for the numeric chat parameters (the `mistralai` SDK's
# `ChatCompletionRequest` types and docstrings, and `ChatMistralAI.top_p`: "Must be in the closed
# interval [0.0, 1.0]"). The SDK gives temperature only a recommendation ("between 0.0 and
# 0.7"), so only a negative one is refused; max_tokens, n and random_seed are integers, and
# n counts completions (at least 1).
PARAM_RULES: ParamRules = {
    "temperature": Allowed(minimum=0),
    "top_p": Allowed(minimum=0, maximum=1),
    "max_tokens": Allowed(integer=True, minimum=0),
    "n": Allowed(integer=True, minimum=1),
    "random_seed": Allowed(integer=True),
    "presence_penalty": Allowed(),
    "frequency_penalty": Allowed(),
}


def cap_refused(exc: BaseException) -> str | None:
    """Return 'requests' for Mistral's refusal of a job over the workspace's pending requests.

    UNCONFIRMED: Mistral documents the cap (1M pending requests per workspace), not its answer;
    the refusal is told by naming the pending requests, whatever its status (the emulator's is a
    429, `agent.emulator.caps`), since a per-minute rate limit (code 1300) does not.
    """
    return "requests" if "pending requests" in str(exc).lower() else None


def timeout_hours(completion_window: str) -> int:
    """Convert a completion window such as '24h' or '7d' to Mistral's whole hours (1..168)."""
    match = re.fullmatch(r"\s*(\d+)\s*([hd])\s*", completion_window)
    if not match:
        raise ProviderError(f"completion window {completion_window!r} is not like '24h' or '7d'")
    hours = int(match.group(1)) * (24 if match.group(2) == "d" else 1)
    if not 1 <= hours <= 168:
        raise ProviderError(
            f"Mistral accepts a completion window of 1h to 168h, got {completion_window!r}"
        )
    return hours


def _mistral_http_client() -> httpx2.Client:
    """Build the HTTP client the Mistral SDK builds when given none."""
    return httpx2.Client(follow_redirects=True)


def _mistral_async_client() -> httpx2.AsyncClient:
    """Build the async HTTP client the Mistral SDK builds when given none."""
    return httpx2.AsyncClient(follow_redirects=True)


class MistralProvider(BatchProvider):
    """Files + Batch Jobs through the official `mistralai` SDK."""

    name = "mistral"
    http_by_code = realtime_errors.HTTP_BY_CODE
    default_model = "mistral-small-latest"
    default_embedding_model = "mistral-embed"
    # At most 1M pending requests per workspace (two 600k jobs cannot be queued together).
    quota_defaults = Budget(requests=1_000_000)
    # Mistral caps pending requests per workspace (1M) rather than per job; keep jobs OpenAI-sized.
    limits = ProviderLimits(max_requests=1_000_000, max_file_bytes=512 * 1024 * 1024)
    param_rules = PARAM_RULES
    supports_output_spec = True
    expired_statuses = frozenset({"TIMEOUT_EXCEEDED"})
    stores_files = True
    endpoints = frozenset(ENDPOINT_URLS)

    def __init__(
        self, *, emulated: bool, base_url: str, http_client: httpx2.Client | None = None
    ) -> None:
        """Build the SDK client; the API key is read from the environment and kept only there."""
        super().__init__(emulated=emulated, base_url=base_url)
        server_url, api_key, http_client = self.sdk_endpoint(
            "/mistral", http_client, _mistral_http_client
        )
        # Without a retry config the SDK does not retry; this one retries 429/5xx and dropped
        # connections with exponential backoff (0.5 s doubling-ish, capped at 30 s, 2 min total).
        retry = RetryConfig(
            "backoff", BackoffStrategy(500, 30_000, 1.8, 120_000), retry_connection_errors=True
        )
        # The deadline fallback posts on the same HTTP client, as ChatMistralAI does.
        self._http_client = http_client
        self._client = Mistral(
            api_key=api_key,
            server_url=server_url,
            client=http_client,
            # Unused (all calls here are sync), but the SDK would build a fresh one per provider.
            async_client=shared_http_client("mistral-async", _mistral_async_client),
            retry_config=retry,
        )

    @classmethod
    def realtime_error(cls, status: int, code: str, text: str, model: str) -> Exception:
        """`ChatMistralAI`'s exception for this error (`agent.providers.mistral.realtime_errors`)."""
        return realtime_errors.realtime_error(status, code, text)

    def line_builder(
        self, model: str, params: dict[str, Any], spec: OutputSpec | None = None
    ) -> Callable[[BatchRequest], bytes]:
        """Build `{custom_id, body}` lines with ChatMistralAI's realtime body (fast, parity-exact)."""
        builder = MistralBodyBuilder(model, params, spec)

        def build(request: BatchRequest) -> bytes:
            return jsonl_line({"custom_id": request.id, "body": builder.build(request)})

        return build

    def embedding_line_builder(
        self, model: str, params: dict[str, Any]
    ) -> Callable[[BatchRequest], bytes]:
        """Build `{custom_id, body}` lines, one text each, as `MistralAIEmbeddings` sends it."""
        # Imported here: numpy and the embeddings class are only needed by embeddings runs.
        from agent.providers.mistral.embedding_fast import MistralEmbeddingBuilder

        return MistralEmbeddingBuilder(model, params).line

    def vector_parser(self, model: str, params: Mapping[str, Any]) -> VectorParser:
        """Return the parser of embeddings result lines into one vector per text."""
        from agent.providers.mistral.embedding_fast import MistralVectorParser

        return MistralVectorParser(model, params)

    def check_completion_window(self, completion_window: str) -> None:
        """Mistral takes whole hours from 1 to 168."""
        try:
            timeout_hours(completion_window)
        except ProviderError as exc:
            raise InputError(str(exc), source="context") from None

    def retrieve_model(self, model: str) -> None:
        """Retrieve `model` (`client.models.retrieve`): it raises for a model not served."""
        self._client.models.retrieve(model_id=model)

    def upload(self, path: Path, file_name: str) -> str:
        """Upload the JSONL input file (purpose `batch`), streamed from disk, once.

        Sent without the SDK's retries: the graph resends through `send_once`, after looking for
        the file by name (`find_file`).
        """
        with provider_call(self.name, "upload the batch input file"), path.open("rb") as fh:
            uploaded = self._client.files.upload(
                file={"file_name": file_name, "content": fh}, purpose="batch", retries=NO_RETRIES
            )
        return str(uploaded.id)

    def find_file(self, file_name: str, size: int, since: float) -> str | None:
        """Page through recent batch files (newest first) for an upload with this name and size.

        A server without a file listing finds nothing (`find_listed_file`).
        """
        return self.find_listed_file(
            self._file_pages,
            ident=lambda f: str(f.id),
            created_at=lambda f: float(f.created_at),
            matches=lambda f: f.filename == file_name and f.size_bytes == size,
            since=since,
        )

    def _file_pages(self) -> Iterator[Any]:
        """Yield batch files newest first, page by page, until a short page."""
        for page in range(MAX_LISTED // FILE_PAGE_SIZE):
            listing = self._client.files.list(page=page, page_size=FILE_PAGE_SIZE, purpose="batch")
            yield from listing.data
            if len(listing.data) < FILE_PAGE_SIZE:
                return

    def create(
        self,
        input_file_id: str,
        *,
        model: str,
        completion_window: str,
        metadata: dict[str, str],
        endpoint: Endpoint = CHAT,
    ) -> CreatedJob:
        """Create the batch job from an uploaded file, once (no SDK retries: see `send_once`)."""
        self.check_endpoint(endpoint)
        hours = timeout_hours(completion_window)
        with provider_call(self.name, "create the batch job", cap_refused):
            created = self._client.batch.jobs.create(
                input_files=[input_file_id],
                model=model,
                endpoint=ENDPOINT_URLS[endpoint],  # type: ignore[arg-type]
                metadata=metadata,
                timeout_hours=hours,
                retries=NO_RETRIES,
            )
        return CreatedJob(
            job_id=str(created.id),
            created_at=float(created.created_at),
            input_file_id=input_file_id,
        )

    def find_job(self, job: Job, *, sent_at: float, claimed: Collection[str]) -> CreatedJob | None:
        """Look the job key up with Mistral's server-side metadata filter."""
        key, since = job["job_key"], sent_at - RECONCILE_LOOKBACK_SECONDS
        return self.find_listed_job(
            job, "batch jobs", lambda: self._listed({JOB_KEY_METADATA: key}, since, claimed)
        )

    def thread_jobs(
        self, thread_id: str, intents: list[Job], *, since: float, claimed: Collection[str]
    ) -> dict[str, CreatedJob]:
        """Find every job of the thread with one metadata-filtered listing."""
        found = self.listed_thread_jobs(
            "batch jobs", lambda: self._listed({THREAD_METADATA: thread_id[:500]}, since, claimed)
        )
        return {
            intent["job_key"]: found[intent["job_key"]]
            for intent in intents
            if intent["job_key"] in found
        }

    def _listed(
        self, metadata: dict[str, str], since: float, claimed: Collection[str]
    ) -> dict[str, CreatedJob]:
        """Return `{job key: job}` of the jobs matching `metadata`, created after `since`."""
        after = datetime.fromtimestamp(since, tz=UTC)
        found: dict[str, CreatedJob] = {}
        with provider_call(self.name, "list batch jobs"):
            for listed in bounded_listing(
                self._job_pages(metadata, after),
                ident=lambda j: str(j.id),
                created_at=lambda j: float(j.created_at),
                floor=since,
            ):
                meta = listed.metadata or {}
                key = meta.get(JOB_KEY_METADATA)
                if (
                    key
                    and key not in found
                    and all(meta.get(k) == v for k, v in metadata.items())
                    and str(listed.id) not in claimed
                ):
                    found[key] = CreatedJob(
                        job_id=str(listed.id),
                        created_at=float(listed.created_at),
                        input_file_id=str((listed.input_files or [""])[0]),
                    )
        return found

    def _job_pages(self, metadata: dict[str, str], after: datetime) -> Iterator[Any]:
        """Yield the jobs the filtered listing returns, newest first, page by page."""
        for page in range(MAX_LISTED // JOB_PAGE_SIZE):
            listing = self._client.batch.jobs.list(
                metadata=metadata, created_after=after, page=page, page_size=JOB_PAGE_SIZE
            )
            data = listing.data or []
            yield from data
            if len(data) < JOB_PAGE_SIZE:
                return

    def status(self, job: Job) -> JobUpdate:
        """Get the batch job once."""
        with provider_call(self.name, f"check batch job {job['job_id']}"):
            batch = self._client.batch.jobs.get(job_id=str(job["job_id"]))
        return self._update(batch, job)

    def cancel(self, job: Job) -> JobUpdate:
        """Request cancellation (the job passes through CANCELLATION_REQUESTED)."""
        with provider_call(self.name, f"cancel batch job {job['job_id']}"):
            batch = self._client.batch.jobs.cancel(job_id=str(job["job_id"]))
        return self._update(batch, job)

    def file_lines(self, file_id: str) -> Iterator[bytes]:
        """Stream a file's content line by line."""
        with provider_call(self.name, f"download file {file_id}"):
            response = self._client.files.download(file_id=file_id)
            try:
                yield from nonblank_lines(response.iter_bytes())
            finally:
                response.close()

    def delete_file(self, file_id: str) -> None:
        """Delete a file (`files.delete`)."""
        with provider_call(self.name, f"delete file {file_id}"):
            self._client.files.delete(file_id=file_id, retries=DELETE_RETRY)

    def message_parser(
        self,
        model: str,
        spec: OutputSpec | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> LineParser:
        """Return the fast, parity-exact parser of this provider's result lines.

        A spec changes nothing here: realtime `ChatMistralAI` parses every answer the same way.
        """
        return MistralMessageParser(model, params)

    realtime_fallback = True

    def send_realtime(
        self, job: Job, raw: bytes, parser: LineParser, *, flex: bool
    ) -> RequestOutcome:
        """Send a chat line through `/v1/chat/completions` (Mistral has no flex tier)."""
        # The key is read from the environment for this call only, as at construction.
        server_url, api_key, client = self.sdk_endpoint("/mistral", self._http_client)
        assert client is not None
        return send_line(
            client, server_url, api_key, raw, parser, str(job["job_id"] or job["job_key"])
        )

    def chat_model(self, model: str, params: dict[str, Any]) -> ChatMistralAI:
        """Return the `ChatMistralAI` whose realtime calls this provider's batch lines reproduce."""
        return chat_model(model, params)

    def _update(self, batch: Any, job: Job) -> JobUpdate:
        raw = str(getattr(batch.status, "value", batch.status))
        total = batch.total_requests or job["request_count"]
        succeeded = batch.succeeded_requests or 0
        failed = batch.failed_requests or 0
        errors = [
            f"{e.message}" + (f" (x{e.count})" if (getattr(e, "count", 1) or 1) > 1 else "")
            for e in batch.errors or []
        ]
        return JobUpdate(
            provider_status=raw,
            status=normalise_status(raw, STATUS_MAP, errors),
            counts=job_counts(total, succeeded, failed),
            output_file_id=batch.output_file or None,
            error_file_id=batch.error_file or None,
            errors=errors,
            cancelled=raw == "CANCELLED",
        )
