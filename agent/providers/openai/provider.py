"""OpenAI Batch API provider (also Azure/compatible endpoints through `base_url`).

The SDK calls of a batch's life: upload the input file, find an upload or a batch again by its
identity, create, check, cancel, download. Lines are built and answers parsed by the fast paths
(`agent.providers.openai.fast`), which equal the LangChain reference path
(`agent.providers.openai.reference`) byte for byte.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import httpx2
from langchain_openai import ChatOpenAI
from openai import DefaultHttpxClient, OpenAI

from agent.endpoints import CHAT, EMBEDDINGS, RESPONSES, Endpoint
from agent.providers.base import (
    DELETE_RETRIES,
    JOB_KEY_METADATA,
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
    jsonl_line,
    nonblank_lines,
    normalise_status,
)
from agent.providers.errors import provider_call
from agent.providers.openai import realtime_errors
from agent.providers.openai.fallback import send_line
from agent.providers.openai.fast import OpenAIBodyBuilder, OpenAIMessageParser
from agent.providers.openai.reference import chat_model
from agent.providers.openai.responses import (
    ResponsesBodyBuilder,
    ResponsesMessageParser,
    openai_endpoint,
)
from agent.providers.params import Allowed, ParamRules
from agent.requests import (
    CHAT_COMPLETIONS_URL,
    EMBEDDINGS_URL,
    RESPONSES_URL,
    BatchRequest,
)
from agent.state import Job
from agent.statuses import JobStatus
from agent.structured import OutputSpec

# The batch `endpoint` (and every line's `url`) of each endpoint (`agent.endpoints`).
ENDPOINT_URLS: Final[Mapping[Endpoint, str]] = {
    CHAT: CHAT_COMPLETIONS_URL,
    RESPONSES: RESPONSES_URL,
    EMBEDDINGS: EMBEDDINGS_URL,
}
# What `--endpoint` (`Context.endpoint`) sets in the model settings: ChatOpenAI's own switch.
_ENDPOINT_SETTINGS: Final[Mapping[str, dict[str, Any]]] = {
    CHAT: {"use_responses_api": False},
    RESPONSES: {"use_responses_api": True},
}
# Raw status -> normalised status. Anything unknown is treated as terminal ("done") and kept raw.
STATUS_MAP: dict[str, JobStatus] = {
    "validating": "queued",
    "in_progress": "running",
    "finalizing": "running",
    "cancelling": "cancelling",
    "completed": "done",
    "expired": "done",
    "cancelled": "done",
    "failed": "failed",
}
# What OpenAI documents for the numeric chat-completions parameters (the `openai` SDK's
# `chat.completions.create` type hints and docstrings): temperature "between 0 and 2", top_p a
# probability mass, presence_penalty / frequency_penalty "Number between -2.0 and 2.0",
# top_logprobs "An integer between 0 and 20"; max_tokens, max_completion_tokens, n and seed are
# `Optional[int]`, and the API answers a count below 1 with "Expected a value >= 1".
PARAM_RULES: ParamRules = {
    "temperature": Allowed(minimum=0, maximum=2),
    "top_p": Allowed(minimum=0, maximum=1),
    "presence_penalty": Allowed(minimum=-2, maximum=2),
    "frequency_penalty": Allowed(minimum=-2, maximum=2),
    "top_logprobs": Allowed(integer=True, minimum=0, maximum=20),
    "max_tokens": Allowed(integer=True, minimum=1),
    "max_completion_tokens": Allowed(integer=True, minimum=1),
    "n": Allowed(integer=True, minimum=1),
    "seed": Allowed(integer=True),
}


class OpenAIProvider(BatchProvider):
    """Files + Batches through the official `openai` SDK."""

    name = "openai"
    default_model = "gpt-4o-mini"
    default_embedding_model = "text-embedding-3-small"
    limits = ProviderLimits(max_requests=50_000, max_file_bytes=200 * 1024 * 1024)
    param_rules = PARAM_RULES
    supports_output_spec = True
    expired_statuses = frozenset({"expired"})
    stores_files = True
    endpoints = frozenset(ENDPOINT_URLS)
    realtime_fallback = True
    flex_tier = True

    def __init__(
        self,
        *,
        emulated: bool,
        base_url: str,
        http_client: httpx2.Client | None = None,
        organization: str = "",
    ) -> None:
        """Build the SDK client; the API key is read from the environment and kept only there.

        `organization` is the one a realtime `ChatOpenAI(organization=...)` sends its requests
        in ('' for the SDK's default, `OPENAI_ORG_ID`).
        """
        super().__init__(emulated=emulated, base_url=base_url)
        self.organization = organization
        sdk_base_url, api_key, http_client = self.sdk_endpoint(
            "/openai/v1", http_client, DefaultHttpxClient
        )
        # The SDK retries 408/409/429/5xx and connection errors with exponential backoff and jitter.
        self._client = OpenAI(
            api_key=api_key,
            base_url=sdk_base_url,
            http_client=http_client,
            max_retries=SDK_MAX_RETRIES,
            organization=organization or None,
        )

    @classmethod
    def realtime_error(cls, status: int, code: str, text: str, model: str) -> Exception:
        """`ChatOpenAI`'s exception for this error (`agent.providers.openai.realtime_errors`)."""
        return realtime_errors.realtime_error(status, code, text)

    def choose_endpoint(
        self,
        model: str,
        params: dict[str, Any],
        spec: OutputSpec | None,
        requested: str = "",
    ) -> tuple[Endpoint, dict[str, Any]]:
        """Pin `requested` through `use_responses_api`, then follow ChatOpenAI's own routing.

        `chat` / `responses` set `use_responses_api` False / True in the settings; '' leaves
        the decision to the model object (its settings, the spec's tools). The endpoint is
        `responses` exactly when the resulting reference `ChatOpenAI` sends a call there.
        """
        if requested and requested not in _ENDPOINT_SETTINGS:
            return super().choose_endpoint(model, params, spec, requested)
        if requested:
            params = {**params, **_ENDPOINT_SETTINGS[requested]}
        return openai_endpoint(model, params, spec), params

    def line_builder(
        self, model: str, params: dict[str, Any], spec: OutputSpec | None = None
    ) -> Callable[[BatchRequest], bytes]:
        """Build `{custom_id, method, url, body}` lines with ChatOpenAI's realtime body.

        The endpoint is the reference model's (`openai_endpoint`, as `choose_endpoint` chose it
        for the job). For chat completions, the fast builder produces the same bytes as
        `request_body` (checked at construction and by property tests) and falls back to it for
        anything it does not handle (including every request of a set with tools or a response
        schema); Responses-API bodies all take the reference path (`responses_body`).
        """
        endpoint = openai_endpoint(model, params, spec)
        builder = (
            ResponsesBodyBuilder(model, params, spec)
            if endpoint == RESPONSES
            else OpenAIBodyBuilder(model, params, spec)
        )
        url = ENDPOINT_URLS[endpoint]

        def build(request: BatchRequest) -> bytes:
            line = {
                "custom_id": request.id,
                "method": "POST",
                "url": url,
                "body": builder.build(request),
            }
            return jsonl_line(line)

        return build

    def embedding_line_builder(
        self, model: str, params: dict[str, Any]
    ) -> Callable[[BatchRequest], bytes]:
        """Build `{custom_id, method, url: /v1/embeddings, body}` lines, one text each.

        The body is what `OpenAIEmbeddings(model=model, **params).embed_documents([text])`
        sends (`agent.providers.openai.embeddings`); the fast builder equals it.
        """
        # Imported here: tiktoken and numpy are only needed by embeddings runs.
        from agent.providers.openai.embedding_fast import OpenAIEmbeddingBuilder

        return OpenAIEmbeddingBuilder(model, params).line

    def vector_parser(self, model: str, params: Mapping[str, Any]) -> VectorParser:
        """Return the parser of `/v1/embeddings` result lines into one vector per text."""
        from agent.providers.openai.embedding_fast import OpenAIVectorParser

        return OpenAIVectorParser(model, params)

    def retrieve_model(self, model: str) -> None:
        """Retrieve `model` (`client.models.retrieve`): it raises for a model not served."""
        self._client.models.retrieve(model)

    def upload(self, path: Path, file_name: str) -> str:
        """Upload the JSONL input file (purpose `batch`), streamed from disk, once.

        Sent without the SDK's retries: the graph resends through `send_once`, after looking for
        the file by name (`find_file`).
        """
        client = self._client.with_options(max_retries=0)
        with provider_call(self.name, "upload the batch input file"), path.open("rb") as fh:
            return client.files.create(file=(file_name, fh), purpose="batch").id

    def find_file(self, file_name: str, size: int, since: float) -> str | None:
        """Look through recent batch files (newest first) for an upload with this name and size.

        A server without a file listing finds nothing (`find_listed_file`).
        """
        return self.find_listed_file(
            lambda: self._client.files.list(purpose="batch", order="desc", limit=100),
            ident=lambda f: f.id,
            created_at=lambda f: float(f.created_at),
            matches=lambda f: f.filename == file_name and f.bytes == size and f.status != "error",
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
        """Create the batch from an uploaded file, once (no SDK retries: see `send_once`)."""
        self.check_endpoint(endpoint)
        client = self._client.with_options(max_retries=0)
        with provider_call(self.name, "create the batch"):
            created = client.batches.create(
                input_file_id=input_file_id,
                endpoint=ENDPOINT_URLS[endpoint],  # type: ignore[arg-type]
                completion_window=completion_window,  # type: ignore[arg-type]
                metadata=metadata,
            )
        return CreatedJob(
            job_id=created.id, created_at=float(created.created_at), input_file_id=input_file_id
        )

    def scan_jobs(
        self, keys: set[str], since: float, claimed: Collection[str]
    ) -> dict[str, CreatedJob]:
        """Page through batches newest first back to `since`, matching job keys in metadata.

        OpenAI has no server-side metadata filter, so this is a client-side scan; it stops once
        every key is found, at `since`, or at the listing bounds.
        """
        found: dict[str, CreatedJob] = {}
        with provider_call(self.name, "list batches"):
            for batch in bounded_listing(
                self._client.batches.list(limit=100),
                ident=lambda b: b.id,
                created_at=lambda b: float(b.created_at),
                floor=since,
            ):
                key = (batch.metadata or {}).get(JOB_KEY_METADATA)
                if key in keys and key not in found and batch.id not in claimed:
                    found[key] = CreatedJob(
                        job_id=batch.id,
                        created_at=float(batch.created_at),
                        input_file_id=batch.input_file_id,
                    )
                    if len(found) == len(keys):
                        break
        return found

    def status(self, job: Job) -> JobUpdate:
        """Retrieve the batch once."""
        with provider_call(self.name, f"check batch {job['job_id']}"):
            batch = self._client.batches.retrieve(str(job["job_id"]))
        return self._update(batch, job)

    def cancel(self, job: Job) -> JobUpdate:
        """Cancel the batch; it passes through `cancelling` before `cancelled`."""
        with provider_call(self.name, f"cancel batch {job['job_id']}"):
            batch = self._client.batches.cancel(str(job["job_id"]))
        return self._update(batch, job)

    def file_lines(self, file_id: str) -> Iterator[bytes]:
        """Stream a file's content line by line."""
        with provider_call(self.name, f"download file {file_id}"):
            with self._client.files.with_streaming_response.content(file_id) as response:
                yield from nonblank_lines(response.iter_bytes())

    def delete_file(self, file_id: str) -> None:
        """Delete a file (`files.delete`)."""
        with provider_call(self.name, f"delete file {file_id}"):
            self._client.with_options(max_retries=DELETE_RETRIES).files.delete(file_id)

    def message_parser(
        self,
        model: str,
        spec: OutputSpec | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> LineParser:
        """Return the parity-exact parser of this provider's result lines.

        Chat completions or Responses-API answers, by the endpoint the job's reference model
        routes to (`openai_endpoint`, the job's own).
        """
        if openai_endpoint(model, dict(params or {}), spec) == RESPONSES:
            return ResponsesMessageParser(model, spec, params)
        return OpenAIMessageParser(model, spec, params)

    def send_realtime(
        self, job: Job, raw: bytes, parser: LineParser, *, flex: bool
    ) -> RequestOutcome:
        """Send a chat or Responses line in realtime (flex: `service_tier="flex"`)."""
        return send_line(self._client, raw, parser, str(job["job_id"] or job["job_key"]), flex=flex)

    def chat_model(self, model: str, params: dict[str, Any]) -> ChatOpenAI:
        """Return the `ChatOpenAI` whose realtime calls this provider's batch lines reproduce."""
        return chat_model(model, params)

    def _update(self, batch: Any, job: Job) -> JobUpdate:
        raw = str(batch.status)
        counts = batch.request_counts
        total = counts.total if counts and counts.total else job["request_count"]
        succeeded = counts.completed if counts else 0
        failed = counts.failed if counts else 0
        error_items = (batch.errors.data or []) if batch.errors else []
        errors = [
            f"{e.code}: {e.message}" + (f" (line {e.line})" if e.line else "") for e in error_items
        ]
        over_quota = any(e.code == "token_limit_exceeded" for e in error_items)
        return JobUpdate(
            provider_status=raw,
            status=normalise_status(raw, STATUS_MAP, errors),
            counts=job_counts(total, succeeded, failed),
            output_file_id=batch.output_file_id,
            error_file_id=batch.error_file_id,
            errors=errors,
            cancelled=raw == "cancelled",
            # A batch refused for the organisation's enqueued-token limit succeeds once others end.
            retryable=over_quota,
            # Created, then refused whole for that quota: none of its requests ran.
            quota_refused=over_quota,
        )
