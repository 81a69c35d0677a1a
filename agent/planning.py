"""Plan a request set into provider jobs, and check it, before anything is uploaded.

Planning groups requests by model (providers run one model per job), checks what would make the
provider reject or bill a bad job (an unknown model, a request larger than the model's context
window, a job over the provider's request or file-size limit), and writes each job as an *intent*
with a deterministic `job_key`. Submitting an intent later, in this process or another, always
produces the same key, which is what lets a crashed submit find its job instead of creating a
second one.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from typing import Any

from agent.context import Context
from agent.providers.base import BatchProvider, PreparedBatch, ProviderLimits
from agent.requests import BatchRequest, InputError, normalise_input
from agent.state import Counts, Job

# A conservative chars-per-token ratio: it underestimates tokens, so it never refuses a request
# the model would accept; it only catches requests that cannot fit.
CHARS_PER_TOKEN = 4


def context_params(context: Context) -> dict[str, Any]:
    """Return the model parameters the run context sets for every request."""
    return {
        "temperature": context.temperature,
        "max_tokens": context.max_tokens,
        "top_p": context.top_p,
    }


def effective_limits(provider: BatchProvider, context: Context) -> ProviderLimits:
    """Return the provider's per-job limits, lowered by the context's overrides."""
    limits = provider.limits
    return ProviderLimits(
        max_requests=min(limits.max_requests, context.max_requests_per_job or limits.max_requests),
        max_file_bytes=min(limits.max_file_bytes, context.max_file_bytes or limits.max_file_bytes),
    )


def job_key(thread_id: str, request_hash: str, attempt: int, part: int) -> str:
    """Return the deterministic key of one job of a thread."""
    return hashlib.sha256(f"{thread_id}|{request_hash}|{attempt}|{part}".encode()).hexdigest()[:32]


def plan_jobs(
    requests: list[BatchRequest],
    *,
    provider: BatchProvider,
    context: Context,
    thread_id: str,
    request_hash: str,
) -> list[Job]:
    """Check the request set and return one job intent per model.

    Raises:
        InputError: A model is unknown, a request cannot fit the model, or a job would exceed the
            provider's limits. Nothing has been uploaded.
    """
    provider.check_completion_window(context.completion_window)
    limits = effective_limits(provider, context)
    params = context_params(context)
    groups: dict[str, list[BatchRequest]] = {}
    for request in requests:
        groups.setdefault(request.model or context.model or provider.default_model, []).append(
            request
        )
    jobs = []
    for part, (model, group) in enumerate(groups.items()):
        check_model(provider, model, group, context)
        # Building the file is how we learn its exact size; it is rebuilt identically at submit.
        check_size(provider.prepare(group, model, params), limits, provider.name)
        jobs.append(
            new_intent(
                provider,
                key=job_key(thread_id, request_hash, 1, part),
                attempt=1,
                model=model,
                params=params,
                request_ids=[r.id for r in group],
            )
        )
    return jobs


def new_intent(
    provider: BatchProvider,
    *,
    key: str,
    attempt: int,
    model: str,
    params: dict[str, Any],
    request_ids: list[str],
    retry_of: str | None = None,
) -> Job:
    """Return a job record for a job that is about to be submitted."""
    count = len(request_ids)
    return Job(
        job_key=key,
        attempt=attempt,
        provider=provider.name,
        job_id=None,
        model=model,
        params=params,
        request_ids=request_ids,
        request_count=count,
        retry_of=retry_of,
        intent_at=time.time(),
        created_at=None,
        input_file_id=None,
        emulated=provider.emulated,
        base_url=provider.base_url,
        provider_status="",
        status="intent",
        counts=Counts(total=count, succeeded=0, failed=0, pending=count),
        output_file_id=None,
        error_file_id=None,
        errors=[],
        terminal_since=None,
    )


def check_model(
    provider: BatchProvider, model: str, requests: list[BatchRequest], context: Context
) -> None:
    """Refuse an unknown model, and requests that cannot fit the model's context window."""
    profile = provider.model_profile(model)
    if profile is None:
        if context.check_models and not model.startswith("ft:"):
            raise InputError(
                f"unknown model {model!r} for {provider.name} (set check_models=false for new, fine-tuned or self-hosted models)",
                source="input",
                request_id=requests[0].id,
            )
        return
    window = profile.get("max_input_tokens")
    if not window:
        return
    for request in requests:
        estimate = _text_length(request.messages) // CHARS_PER_TOKEN
        if estimate > window:
            raise InputError(
                f"request is larger than {model}'s context window (at least {estimate:,} tokens > {window:,})",
                source="input",
                request_id=request.id,
            )


def check_size(batch: PreparedBatch, limits: ProviderLimits, provider_name: str) -> None:
    """Refuse a job with more requests or bytes than the provider accepts, naming the request."""
    if len(batch.request_ids) > limits.max_requests:
        raise InputError(
            f"{len(batch.request_ids):,} requests for model {batch.model} exceed {provider_name}'s limit of "
            f"{limits.max_requests:,} per job (crossed at this request)",
            source="input",
            request_id=batch.request_ids[limits.max_requests],
        )
    if len(batch.jsonl) <= limits.max_file_bytes:
        return
    total = 0
    for request_id, line in zip(
        batch.request_ids, batch.jsonl.splitlines(keepends=True), strict=True
    ):
        total += len(line)
        if len(line) > limits.max_file_bytes:
            raise InputError(
                f"request is {len(line):,} bytes, larger than {provider_name}'s {limits.max_file_bytes:,}-byte batch file limit",
                source="input",
                request_id=request_id,
            )
        if total > limits.max_file_bytes:
            raise InputError(
                f"the batch file for model {batch.model} is {len(batch.jsonl):,} bytes, over {provider_name}'s "
                f"{limits.max_file_bytes:,}-byte limit (crossed at this request)",
                source="input",
                request_id=request_id,
            )


def first_round_batch(
    job: Job, records: list[dict[str, Any]], provider: BatchProvider
) -> PreparedBatch:
    """Rebuild the input file of a first-round intent from the thread's (normalised) requests."""
    wanted = set(job["request_ids"])
    requests = [r for r in normalise_input(records) if r.id in wanted]
    return provider.prepare(requests, job["model"], job["params"])


def retry_batch(job: Job, source: Job, provider: BatchProvider) -> PreparedBatch:
    """Build a follow-up job's input from the lines of its source job's input file."""
    wanted = set(job["request_ids"])
    lines = {
        custom_id: raw for custom_id, raw in provider.input_lines(source) if custom_id in wanted
    }
    missing = [i for i in job["request_ids"] if i not in lines]
    if missing:
        raise InputError(
            f"the input file of job {source['job_id']} lacks {len(missing)} request(s) to retry",
            source="provider",
            request_id=missing[0],
        )
    body = b"".join(
        lines[i] if lines[i].endswith(b"\n") else lines[i] + b"\n" for i in job["request_ids"]
    )
    return PreparedBatch(model=job["model"], request_ids=list(job["request_ids"]), jsonl=body)


def _text_length(messages: Iterable[dict[str, Any]]) -> int:
    total = 0
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            total += len(content)
        elif isinstance(content, list):
            total += sum(len(part.get("text", "")) for part in content if isinstance(part, dict))
    return total
