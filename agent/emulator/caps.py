"""Caps on what an account may have in flight, and how each emulated provider refuses a create.

Apart from the per-job limits, providers cap what an account holds at once (reference notes
`provider-batch-apis.md` §1.6, §2.5, §3.4, §4.5 and `next-wave.md` §6):

- OpenAI, enqueued prompt tokens per model: the create *succeeds* and the batch then fails
  validation with ``token_limit_exceeded`` (`agent.emulator.openai_routes`), so it is not here.
- Mistral, pending requests per workspace (1M documented): `pending_requests_refused`.
- Gemini, concurrent batch jobs (100) and file storage (20 GB) per project: `jobs_refused`,
  `storage_refused`.
- Anthropic, requests in the processing queue (per-tier numbers unpublished): `queue_refused`.

Each cap is a fault knob (`agent.emulator.faults`, 0 meaning none). The route counts what the cap
holds under the creation lock (`JobLifecycle.in_flight`) and raises the refusal built here before
anything is stored, so a refused create leaves nothing behind and two racing creates cannot both
slip under the cap. Every refusal is a 429: the same call succeeds once earlier jobs end (or files
are deleted). Clients tell it from a passing rate limit by what it names (the pending requests,
the queue, Google's ``QuotaFailure`` detail), not by its status; the creates of our providers go
out without SDK retries, so none is resent blindly.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from agent.emulator.web import HttpError

# Google's typed error details (`google.rpc.QuotaFailure`, `google.rpc.Help`), as Gemini's 429s
# carry them (seen in langchain4j/langchain4j#3942 for the Help link).
QUOTA_FAILURE_TYPE = "type.googleapis.com/google.rpc.QuotaFailure"
HELP_TYPE = "type.googleapis.com/google.rpc.Help"
# The quota metrics a Gemini cap refusal names. UNCONFIRMED: Google publishes the caps, not the
# metric names of their refusals; these follow the `generativelanguage.googleapis.com/...` form of
# its rate-limit refusals.
CONCURRENT_JOBS_METRIC = "generativelanguage.googleapis.com/batch_concurrent_jobs"
FILE_STORAGE_METRIC = "generativelanguage.googleapis.com/file_storage_bytes"


def over_cap(held: int, adding: int, limit: int) -> bool:
    """Tell whether `adding` to what is `held` exceeds `limit` (0 is no cap)."""
    return limit > 0 and held + adding > limit


def requests_held(jobs: Iterable[dict[str, Any]]) -> int:
    """Return how many requests the jobs hold (each job's total, done or not, until it ends)."""
    return sum(int(job["_total"]) for job in jobs)


def pending_requests_refused(held: int, adding: int, limit: int) -> HttpError:
    """Mistral's refusal of a job create over the workspace's pending-request cap.

    UNCONFIRMED: Mistral documents the cap ("two 600k jobs cannot be queued together"), not its
    answer. A 429 in Mistral's error shape, typed as its rate limits are (``rate_limited``) but
    with no code (its per-minute limit is code ``1300``), naming the pending requests.
    """
    return HttpError(
        429,
        f"Too many pending requests in this workspace: {held:,} pending and {adding:,} in this "
        f"job exceed the limit of {limit:,} pending requests. Submit again once pending jobs "
        "have finished. (emulated)",
        error_type="rate_limited",
    )


def queue_refused(held: int, adding: int, limit: int) -> HttpError:
    """Anthropic's refusal of a batch create over the organisation's processing-queue cap.

    UNCONFIRMED: Anthropic documents a rate limit on requests in the processing queue, not its
    answer. A 429 ``rate_limit_error`` naming the queue.
    """
    return HttpError(
        429,
        f"Number of requests in the batch processing queue would exceed your organization's "
        f"limit of {limit:,} queued requests ({held:,} queued, {adding:,} in this batch). "
        "Submit again once queued batches have ended. (emulated)",
        error_type="rate_limit_error",
    )


def _quota_failure(metric: str, quota_id: str, limit: int) -> list[dict[str, Any]]:
    return [
        {
            "@type": QUOTA_FAILURE_TYPE,
            "violations": [
                {
                    "quotaMetric": metric,
                    "quotaId": quota_id,
                    "quotaDimensions": {},
                    "quotaValue": str(limit),
                }
            ],
        },
        {
            "@type": HELP_TYPE,
            "links": [
                {
                    "description": "Learn more about Gemini API quotas",
                    "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
                }
            ],
        },
    ]


def jobs_refused(held: int, limit: int) -> HttpError:
    """Gemini's refusal of a batch create while the project has `limit` batches pending or running.

    A 429 ``RESOURCE_EXHAUSTED`` with a ``QuotaFailure`` detail (its metric name UNCONFIRMED).
    """
    return HttpError(
        429,
        "Quota exceeded for quota metric 'Concurrent batch jobs' and limit 'Concurrent batch "
        f"jobs per project': {held} batch jobs are pending or running (limit {limit}). (emulated)",
        error_type="RESOURCE_EXHAUSTED",
        details=_quota_failure(CONCURRENT_JOBS_METRIC, "ConcurrentBatchJobsPerProject", limit),
    )


def storage_refused(held: int, adding: int, limit: int) -> HttpError:
    """Gemini's refusal of an upload that would take the project's files over `limit` bytes.

    A 429 ``RESOURCE_EXHAUSTED`` with a ``QuotaFailure`` detail (its metric name UNCONFIRMED).
    """
    return HttpError(
        429,
        "Quota exceeded for quota metric 'File storage bytes' and limit 'File storage bytes per "
        f"project': {held:,} bytes stored and {adding:,} more exceed {limit:,} bytes. Delete "
        "files to free storage. (emulated)",
        error_type="RESOURCE_EXHAUSTED",
        details=_quota_failure(FILE_STORAGE_METRIC, "FileStorageBytesPerProject", limit),
    )
