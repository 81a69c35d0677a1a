"""OpenAI Batch API provider (also Azure/compatible endpoints through `base_url`).

Request bodies are built by `ChatOpenAI._get_request_payload`, the same method `ChatOpenAI.invoke()`
uses, and output bodies are parsed by `ChatOpenAI._create_chat_result`, so a batch request and its
result are exactly what the realtime call would send and return.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any, cast

import httpx2
from langchain_openai import ChatOpenAI
from openai import OpenAI
from openai._models import construct_type
from openai.types.chat import ChatCompletion

from agent.providers.base import (
    BatchProvider,
    JobUpdate,
    PreparedBatch,
    RequestOutcome,
    finish_message,
    lc_messages,
    model_params,
    parse_output_line,
    to_jsonl,
)
from agent.requests import CHAT_COMPLETIONS_URL, BatchRequest
from agent.state import Counts, Job, JobStatus

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
# ChatOpenAI must not pick the Responses API on its own: batches here use /v1/chat/completions.
_CHAT_MODEL_DEFAULTS: dict[str, Any] = {
    "api_key": "unused-for-body-building",
    "use_responses_api": False,
}


def chat_model(model: str, params: dict[str, Any]) -> ChatOpenAI:
    """Return the `ChatOpenAI` whose realtime calls our batch lines reproduce."""
    return ChatOpenAI(model=model, **_CHAT_MODEL_DEFAULTS, **model_params(params))


def request_body(llm: ChatOpenAI, request: BatchRequest) -> dict[str, Any]:
    """Return the chat-completions body `llm.invoke(messages, **params)` would send."""
    kwargs = {k: v for k, v in request.params.items() if k != "model"}
    body = llm._get_request_payload(lc_messages(request), **kwargs)
    # `invoke()` sends stream=False; a batch line must not carry streaming flags at all.
    body.pop("stream", None)
    return body


def parse_completion(body: dict[str, Any]) -> ChatCompletion:
    """Build the `ChatCompletion` the SDK builds from a realtime response body.

    `ChatOpenAI.invoke()` parses the HTTP body with the SDK (lenient construction, no
    validation) before `_create_chat_result`; doing the same keeps defaults such as
    `refusal: None` and the full usage details identical to realtime.
    """
    return cast(ChatCompletion, construct_type(type_=ChatCompletion, value=body))


class OpenAIProvider(BatchProvider):
    """Files + Batches through the official `openai` SDK."""

    name = "openai"
    default_model = "gpt-4o-mini"

    def __init__(
        self, *, emulated: bool, base_url: str, http_client: httpx2.Client | None = None
    ) -> None:
        """Build the SDK client; the API key is read from the environment and kept only there."""
        super().__init__(emulated=emulated, base_url=base_url)
        if emulated:
            from agent.emulator import IN_PROCESS_BASE_URL, emulator_http_client

            http_client = http_client or emulator_http_client()
            sdk_base_url: str | None = f"{IN_PROCESS_BASE_URL}/openai/v1"
            api_key = "emulator"
        else:
            sdk_base_url = base_url or None
            api_key = os.environ.get("OPENAI_API_KEY") or "no-key-set"
        self._client = OpenAI(api_key=api_key, base_url=sdk_base_url, http_client=http_client)

    def prepare(
        self, requests: list[BatchRequest], model: str, params: dict[str, Any]
    ) -> PreparedBatch:
        """Build `{custom_id, method, url, body}` lines with ChatOpenAI's realtime body."""
        llm = chat_model(model, params)
        lines = (
            {
                "custom_id": r.id,
                "method": "POST",
                "url": CHAT_COMPLETIONS_URL,
                "body": request_body(llm, r),
            }
            for r in requests
        )
        return PreparedBatch(
            model=model, request_ids=[r.id for r in requests], jsonl=to_jsonl(lines)
        )

    def submit(
        self, batch: PreparedBatch, *, completion_window: str, metadata: dict[str, str]
    ) -> Job:
        """Upload the JSONL file and create the batch."""
        uploaded = self._client.files.create(
            file=("batch-input.jsonl", batch.jsonl), purpose="batch"
        )
        created = self._client.batches.create(
            input_file_id=uploaded.id,
            endpoint=CHAT_COMPLETIONS_URL,
            completion_window=completion_window,  # type: ignore[arg-type]
            metadata=metadata,
        )
        job = self.new_job(
            job_id=created.id,
            model=batch.model,
            created_at=float(created.created_at or time.time()),
            request_count=len(batch.request_ids),
            input_file_id=uploaded.id,
        )
        job["provider_status"] = created.status
        return job

    def status(self, job: Job) -> JobUpdate:
        """Retrieve the batch once."""
        return self._update(self._client.batches.retrieve(job["job_id"]), job)

    def cancel(self, job: Job) -> JobUpdate:
        """Cancel the batch; it passes through `cancelling` before `cancelled`."""
        return self._update(self._client.batches.cancel(job["job_id"]), job)

    def results(self, job: Job) -> Iterator[RequestOutcome]:
        """Stream the output file, then the error file, line by line."""
        llm = chat_model(job["model"], {})
        for file_id in (job["output_file_id"], job["error_file_id"]):
            if not file_id:
                continue
            with self._client.files.with_streaming_response.content(file_id) as response:
                for raw in response.iter_lines():
                    if not raw.strip():
                        continue
                    custom_id, body, error = parse_output_line(raw)
                    if body is None:
                        yield RequestOutcome(custom_id, None, error)
                        continue
                    result = llm._create_chat_result(parse_completion(body))
                    message = finish_message(llm, result, f"{job['job_id']}/{custom_id}")
                    yield RequestOutcome(custom_id, message, None)

    def _update(self, batch: Any, job: Job) -> JobUpdate:
        raw = str(batch.status)
        counts = batch.request_counts
        total = counts.total if counts and counts.total else job["request_count"]
        succeeded = counts.completed if counts else 0
        failed = counts.failed if counts else 0
        errors = [
            f"{e.code}: {e.message}" + (f" (line {e.line})" if e.line else "")
            for e in ((batch.errors.data or []) if batch.errors else [])
        ]
        return JobUpdate(
            provider_status=raw,
            status=STATUS_MAP.get(raw, "done"),
            counts=Counts(
                total=total,
                succeeded=succeeded,
                failed=failed,
                pending=max(total - succeeded - failed, 0),
            ),
            output_file_id=batch.output_file_id,
            error_file_id=batch.error_file_id,
            errors=errors,
        )
