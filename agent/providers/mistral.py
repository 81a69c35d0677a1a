"""Mistral batch jobs provider (official `mistralai` SDK).

Bodies are built the way `ChatMistralAI` builds its realtime request (`_create_message_dicts` plus
the call's keyword arguments) and parsed by `ChatMistralAI._create_chat_result`. Mistral runs one
model per job, so the model is set at job level and also kept in each body, as realtime sends it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any

import httpx2
from langchain_mistralai import ChatMistralAI
from mistralai.client import Mistral

from agent.providers.base import (
    BatchProvider,
    JobUpdate,
    PreparedBatch,
    ProviderError,
    RequestOutcome,
    finish_message,
    lc_messages,
    model_params,
    parse_output_line,
    to_jsonl,
)
from agent.requests import CHAT_COMPLETIONS_URL, BatchRequest
from agent.state import Counts, Job, JobStatus

STATUS_MAP: dict[str, JobStatus] = {
    "QUEUED": "queued",
    "RUNNING": "running",
    "CANCELLATION_REQUESTED": "cancelling",
    "SUCCESS": "done",
    "TIMEOUT_EXCEEDED": "done",
    "CANCELLED": "done",
    "FAILED": "failed",
}


def chat_model(model: str, params: dict[str, Any]) -> ChatMistralAI:
    """Return the `ChatMistralAI` whose realtime calls our batch lines reproduce."""
    return ChatMistralAI(model=model, api_key="unused-for-body-building", **model_params(params))  # type: ignore[call-arg,arg-type]


def request_body(llm: ChatMistralAI, request: BatchRequest) -> dict[str, Any]:
    """Return the chat-completions body `llm.invoke(messages, **params)` would send."""
    kwargs = {k: v for k, v in request.params.items() if k != "model"}
    message_dicts, params = llm._create_message_dicts(lc_messages(request), None)
    # Realtime adds "stream": False; batch lines carry no streaming flag.
    return {"messages": message_dicts, **params, **kwargs}


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


class MistralProvider(BatchProvider):
    """Files + Batch Jobs through the official `mistralai` SDK."""

    name = "mistral"
    default_model = "mistral-small-latest"

    def __init__(
        self, *, emulated: bool, base_url: str, http_client: httpx2.Client | None = None
    ) -> None:
        """Build the SDK client; the API key is read from the environment and kept only there."""
        super().__init__(emulated=emulated, base_url=base_url)
        if emulated:
            from agent.emulator import IN_PROCESS_BASE_URL, emulator_http_client

            http_client = http_client or emulator_http_client()
            server_url: str | None = f"{IN_PROCESS_BASE_URL}/mistral"
            api_key = "emulator"
        else:
            server_url = base_url or None
            api_key = os.environ.get("MISTRAL_API_KEY") or "no-key-set"
        self._client = Mistral(api_key=api_key, server_url=server_url, client=http_client)

    def prepare(
        self, requests: list[BatchRequest], model: str, params: dict[str, Any]
    ) -> PreparedBatch:
        """Build `{custom_id, body}` lines with ChatMistralAI's realtime body."""
        llm = chat_model(model, params)
        lines = ({"custom_id": r.id, "body": request_body(llm, r)} for r in requests)
        return PreparedBatch(
            model=model, request_ids=[r.id for r in requests], jsonl=to_jsonl(lines)
        )

    def submit(
        self, batch: PreparedBatch, *, completion_window: str, metadata: dict[str, str]
    ) -> Job:
        """Upload the JSONL file and create the batch job."""
        hours = timeout_hours(completion_window)
        uploaded = self._client.files.upload(
            file={"file_name": "batch-input.jsonl", "content": batch.jsonl}, purpose="batch"
        )
        created = self._client.batch.jobs.create(
            input_files=[uploaded.id],
            model=batch.model,
            endpoint=CHAT_COMPLETIONS_URL,
            metadata=metadata,
            timeout_hours=hours,
        )
        job = self.new_job(
            job_id=created.id,
            model=batch.model,
            created_at=float(created.created_at),
            request_count=len(batch.request_ids),
            input_file_id=uploaded.id,
        )
        job["provider_status"] = str(created.status)
        return job

    def status(self, job: Job) -> JobUpdate:
        """Get the batch job once."""
        return self._update(self._client.batch.jobs.get(job_id=job["job_id"]), job)

    def cancel(self, job: Job) -> JobUpdate:
        """Request cancellation (the job passes through CANCELLATION_REQUESTED)."""
        return self._update(self._client.batch.jobs.cancel(job_id=job["job_id"]), job)

    def results(self, job: Job) -> Iterator[RequestOutcome]:
        """Stream the output file, then the error file, line by line."""
        llm = chat_model(job["model"], {})
        for file_id in (job["output_file_id"], job["error_file_id"]):
            if not file_id:
                continue
            response = self._client.files.download(file_id=file_id)
            try:
                for raw in response.iter_lines():
                    if not raw.strip():
                        continue
                    custom_id, body, error = parse_output_line(raw)
                    if body is None:
                        yield RequestOutcome(custom_id, None, error)
                        continue
                    result = llm._create_chat_result(body)
                    message = finish_message(llm, result, f"{job['job_id']}/{custom_id}")
                    yield RequestOutcome(custom_id, message, None)
            finally:
                response.close()

    def _update(self, batch: Any, job: Job) -> JobUpdate:
        raw = str(getattr(batch.status, "value", batch.status))
        total = batch.total_requests or job["request_count"]
        succeeded = batch.succeeded_requests or 0
        failed = batch.failed_requests or 0
        errors = [
            f"{e.message}" + (f" (x{e.count})" if getattr(e, "count", 1) and e.count > 1 else "")
            for e in batch.errors or []
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
            output_file_id=batch.output_file or None,
            error_file_id=batch.error_file or None,
            errors=errors,
        )
