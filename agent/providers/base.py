"""The small interface every batch provider implements, and what they share.

A provider turns validated requests into its batch input (`prepare`), creates the job (`submit`),
reports its status (`status`), streams per-request outcomes (`results`) and cancels (`cancel`).
OpenAI and Mistral share the output-line shape `{custom_id, response: {status_code, body}, error}`,
so the line parsing lives here; building bodies and parsing bodies into `AIMessage`s is delegated
to the matching LangChain chat model, which is what keeps batch requests and results identical to
realtime `.invoke()` calls.
"""

from __future__ import annotations

import json
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, convert_to_messages
from langchain_core.outputs import ChatResult
from langchain_core.utils.utils import LC_ID_PREFIX

from agent.requests import BatchRequest
from agent.state import Counts, Job, JobStatus, RequestError


class ProviderError(RuntimeError):
    """A provider call failed in a way the user must act on (the message never holds a key)."""


@dataclass(frozen=True)
class PreparedBatch:
    """A provider-ready batch input for one job (one model)."""

    model: str
    request_ids: list[str]
    jsonl: bytes
    """The JSONL file content, one request per line, in input order."""


@dataclass(frozen=True)
class JobUpdate:
    """What one status check learned about a job."""

    provider_status: str
    status: JobStatus
    counts: Counts
    output_file_id: str | None
    error_file_id: str | None
    errors: list[str]


@dataclass(frozen=True)
class RequestOutcome:
    """One request's result as read from the provider's output or error file."""

    custom_id: str
    message: AIMessage | None
    error: RequestError | None


class BatchProvider(ABC):
    """Interface of a batch provider: prepare, submit, status, results, cancel."""

    name: str
    """Protocol name stored in `Job.provider` ('openai', 'mistral')."""
    default_model: str

    def __init__(self, *, emulated: bool, base_url: str) -> None:
        """Remember where jobs go; subclasses build their SDK client from these."""
        self.emulated = emulated
        self.base_url = base_url

    @abstractmethod
    def prepare(
        self, requests: list[BatchRequest], model: str, params: dict[str, Any]
    ) -> PreparedBatch:
        """Build the batch input for `requests`, all sent to `model`.

        Args:
            requests: Validated requests for one job.
            model: The model every request in this job uses.
            params: Model parameters from the run context (per-request params win).
        """

    @abstractmethod
    def submit(
        self, batch: PreparedBatch, *, completion_window: str, metadata: dict[str, str]
    ) -> Job:
        """Upload the input and create the job; return its checkpointable record."""

    @abstractmethod
    def status(self, job: Job) -> JobUpdate:
        """Check the job's status once."""

    @abstractmethod
    def results(self, job: Job) -> Iterator[RequestOutcome]:
        """Stream the outcome of every request the provider returned for `job`."""

    @abstractmethod
    def cancel(self, job: Job) -> JobUpdate:
        """Ask the provider to cancel the job."""

    def new_job(
        self, *, job_id: str, model: str, created_at: float, request_count: int, input_file_id: str
    ) -> Job:
        """Return a fresh job record for a job the provider just accepted."""
        return Job(
            provider=self.name,
            job_id=job_id,
            model=model,
            created_at=created_at,
            request_count=request_count,
            input_file_id=input_file_id,
            emulated=self.emulated,
            base_url=self.base_url,
            provider_status="",
            status="queued",
            counts=Counts(total=request_count, succeeded=0, failed=0, pending=request_count),
            output_file_id=None,
            error_file_id=None,
            errors=[],
        )


def to_jsonl(lines: Iterable[dict[str, Any]]) -> bytes:
    """Serialise batch lines as compact JSONL."""
    return b"".join(
        json.dumps(line, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
        for line in lines
    )


def lc_messages(request: BatchRequest) -> list[Any]:
    """Convert a request's message dicts into LangChain messages."""
    return convert_to_messages(request.messages)


def finish_message(model: BaseChatModel, result: ChatResult, message_key: str) -> AIMessage:
    """Apply the post-processing `BaseChatModel.invoke()` does to a freshly parsed result.

    `invoke()` merges `llm_output` and `generation_info` into `response_metadata` and gives the
    message an `lc_run-` id derived from its run id. We derive that id from the job and request
    instead, so results are stable across re-reads.
    """
    generation = result.generations[0]
    message = generation.message
    if not isinstance(message, AIMessage):
        raise ProviderError(f"provider returned a {type(message).__name__}, expected an AIMessage")
    if model.output_version == "v1":
        from langchain_core.language_models.chat_models import _update_message_content_to_blocks

        message = _update_message_content_to_blocks(message, "v1")
    if message.id is None:
        message.id = f"{LC_ID_PREFIX}-{uuid.uuid5(uuid.NAMESPACE_URL, message_key)}-0"
    metadata = {**(generation.generation_info or {}), **message.response_metadata}
    if len(result.generations) == 1 and result.llm_output is not None:
        metadata = {**result.llm_output, **metadata}
    message.response_metadata = metadata
    return message


def parse_output_line(raw: bytes | str) -> tuple[str, dict[str, Any] | None, RequestError | None]:
    """Split one OpenAI/Mistral output or error line into (custom_id, body, error).

    A line fails when `error` is set *or* `response.status_code >= 400` (per-request HTTP errors
    carry `error: null` and the error inside the body, a known pitfall).
    """
    line = json.loads(raw)
    custom_id = str(line.get("custom_id"))
    response = line.get("response") or {}
    error = line.get("error")
    status_code = response.get("status_code") or 0
    body = response.get("body")
    if error:
        if isinstance(error, dict):
            return (
                custom_id,
                None,
                RequestError(
                    code=str(error.get("code") or "error"),
                    message=str(error.get("message") or error),
                ),
            )
        return custom_id, None, RequestError(code="error", message=str(error))
    if status_code >= 400 or not isinstance(body, dict):
        inner = (body or {}).get("error") if isinstance(body, dict) else None
        if isinstance(inner, dict):
            code = inner.get("code") or inner.get("type") or f"http_{status_code}"
            message = inner.get("message") or json.dumps(inner)
        else:
            code, message = f"http_{status_code}", json.dumps(body)
        return custom_id, None, RequestError(code=str(code), message=str(message))
    return custom_id, body, None


def model_params(params: dict[str, Any]) -> dict[str, Any]:
    """Drop unset (None) parameters so the chat model's own defaults apply, as in realtime."""
    return {k: v for k, v in params.items() if v is not None}
