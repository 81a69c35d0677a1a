"""The transitions of a job record (`agent.state.Job`): status checks, cancels, prices, progress.

A job record changes only by what its provider reports (`JobUpdate`, already normalised: a
status, counts, file ids, a cancelled flag and a retryable kind), by a cancel, and by pricing
once it is collected. From the records come the thread's progress: its counts, its status while
jobs run and once they are collected, and the `batch_progress` stream event.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from agent.bulk import ThreadData
from agent.context import Context
from agent.pricing import TokenTally
from agent.providers import provider_for_job
from agent.providers.base import JobUpdate
from agent.providers.errors import ProviderError, TransientProviderError
from agent.quotas import in_flight, learn, usage
from agent.state import Counts, Job, State, flagged
from agent.statuses import TERMINAL_JOB_STATUSES, WAITING_JOB_STATUSES, ThreadStatus
from agent.submission import requeue, settle_identity


def check_jobs(state: State, ctx: Context, data: ThreadData) -> dict[str, Any]:
    """Check the status of every open job once; settle whose each job adopted unverified is.

    Args:
        state: The thread's state (its jobs, counts and poll count).
        ctx: The run's settings (how long to wait for late output files).
        data: The thread's bulk data (the create journal, for `settle_identity`).

    Returns:
        The state update: the jobs, the thread's progress counts and status, the poll count.
    """
    before = list(state.get("jobs") or [])
    jobs: list[Job] = []
    refused: list[int] = []
    for job in before:
        if in_flight(job):
            update = provider_for_job(job).status(job)
            job = apply_update(job, update, ctx)
            if _refused_whole(job, update) and usage(before, before[len(jobs)])["jobs"]:
                # Refused next to jobs of the thread still in flight at the last check: it
                # fits once they end. (Refused alone, it failed as a whole as any job does.)
                refused.append(len(jobs))
        jobs.append(job)
    learned = state.get("quota_learned") or {}
    for index in refused:
        learned = learn(learned, before[index], before, "tokens")
        if not state.get("cancel_requested"):
            jobs[index] = requeue(jobs[index], data)
    for index, job in enumerate(jobs):
        if job.get("unverified") and job["status"] in TERMINAL_JOB_STATUSES:
            settle_identity(jobs, index, data, cancelled=bool(state.get("cancel_requested")))
    return {
        "jobs": jobs,
        # Written only when a refusal taught something: every poll's checkpoint stays as small.
        **({"quota_learned": learned} if refused else {}),
        "counts": progress_counts(state, jobs),
        "status": progress_status(jobs),
        "polls": state.get("polls", 0) + 1,
        "error": None,
    }


def _refused_whole(job: Job, update: JobUpdate) -> bool:
    """Tell whether a checked job was refused for a quota before any of its requests ran.

    Only such a job is sent again: one with any output or processed request is collected as
    it is (its failed requests then go the usual way of retryable failures), never paid twice.
    """
    processed = update.counts["succeeded"] + update.counts["failed"]
    return (
        update.quota_refused
        and job["status"] == "failed"
        and not update.cancelled
        and processed == 0
        and not update.output_file_id
        and not update.error_file_id
    )


def apply_update(job: Job, update: JobUpdate, ctx: Context) -> Job:
    """Return `job` as a status check (or a cancel) reported it.

    A job reported done with processed requests but no output or error file yet stays
    `running` for up to `ctx.output_wait_seconds`, then is collected as it is.
    """
    status = update.status
    errors = list(update.errors)
    terminal_since = job.get("terminal_since")
    processed = update.counts["succeeded"] + update.counts["failed"]
    if (
        status == "done"
        and not update.output_file_id
        and not update.error_file_id
        and processed > 0
    ):
        # Terminal, with processed requests, but no files yet: some providers publish them late.
        terminal_since = terminal_since or time.time()
        if time.time() - terminal_since < ctx.output_wait_seconds:
            status = "running"
            errors.append(
                f"provider reports '{update.provider_status}' but no output file yet; waiting"
            )
        else:
            errors.append(
                f"no output file {ctx.output_wait_seconds:.0f}s after '{update.provider_status}'; collected as it is"
            )
    return flagged(
        {
            **job,
            "provider_status": update.provider_status,
            "status": status,
            "counts": update.counts,
            "output_file_id": update.output_file_id,
            "error_file_id": update.error_file_id,
            "errors": errors,
            "terminal_since": terminal_since,
        },
        cancelled=update.cancelled,
        retryable=update.retryable,
    )


def cancel_job(job: Job) -> JobUpdate:
    """Cancel a job; one that ended since the last poll is simply taken as it ended."""
    provider = provider_for_job(job)
    try:
        return provider.cancel(job)
    except TransientProviderError:
        raise
    except ProviderError:
        update = provider.status(job)
        if update.status in TERMINAL_JOB_STATUSES:
            return update
        raise


def priced(job: Job, tally: TokenTally, ctx: Context) -> Job:
    """Record a collected job's tokens and their cost at the prices in force when it was created."""
    created = job["created_at"] or job["intent_at"]
    cost = tally.cost(
        job["provider"],
        job["model"],
        when=datetime.fromtimestamp(created, tz=UTC),
        price_override=ctx.price_override,
    )
    return Job(**{**job, "cost": cost})  # type: ignore[typeddict-item]


def progress_event(thread_id: str, update: dict[str, Any], ctx: Context) -> dict[str, Any]:
    """Return the custom stream event a status check emits (`stream_mode="custom"`).

    Small at any batch size: the thread's counts and one line per job.
    """
    jobs = update["jobs"]
    done = all(job["status"] in TERMINAL_JOB_STATUSES for job in jobs)
    return {
        "event": "batch_progress",
        "thread_id": thread_id,
        "status": update["status"],
        "counts": update["counts"],
        "polls": update["polls"],
        "jobs": [
            {
                "job_id": job["job_id"],
                "provider_status": job["provider_status"],
                "status": job["status"],
                "counts": job["counts"],
            }
            for job in jobs
        ],
        # A hint for progress displays; the actual pause depends on how the thread is driven.
        "next_check_seconds": None if done else ctx.next_poll_interval(update["polls"] - 1),
    }


def progress_counts(state: State, jobs: list[Job]) -> Counts:
    """Progress: job counts in the first round, then the last collect plus follow-up jobs."""
    base = state.get("collected_counts")
    if base is None:
        total = Counts(total=0, succeeded=0, failed=0, pending=0)
        for job in jobs:
            for key in total:
                total[key] += job["counts"][key]  # type: ignore[literal-required]
        return total
    counts = Counts(**base)
    for job in jobs:
        if job["attempt"] == state.get("attempt", 1) and job["attempt"] > 1:
            # A follow-up job in flight: its requests count by the job's own progress.
            counts["failed"] -= job["request_count"]
            for key in ("succeeded", "failed", "pending"):
                counts[key] += job["counts"][key]  # type: ignore[literal-required]
    return counts


def progress_status(jobs: list[Job]) -> ThreadStatus:
    """Return the thread's status while its jobs run: `submitted` until one has started."""
    if jobs and all(job["status"] in WAITING_JOB_STATUSES for job in jobs):
        return "submitted"
    return "running"


def final_status(jobs: list[Job], counts: Counts, cancelled: bool) -> ThreadStatus:
    """Return the thread's status once its last round is collected."""
    # A cancel that arrived after every job had already ended leaves a completed thread.
    if cancelled and any(job.get("cancelled") for job in jobs):
        return "cancelled"
    if jobs and all(job["status"] == "failed" for job in jobs) and counts["succeeded"] == 0:
        return "failed"
    return "completed"
